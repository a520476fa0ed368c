// The bounded hand-off: 20,000 QoS 1 messages into a client whose hand-off holds 1,000
// while nobody consumes. Memory stays bounded (the queue never holds more than 1,000)
// and the drop counter equals exactly what was not delivered.
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct BackpressureTests {
    @Test(arguments: [OverflowPolicy.dropOldest, .dropNewest])
    func fullHandOffDropsAndCountsExactly(policy: OverflowPolicy) throws {
        let broker = try MosquittoBroker()
        var config = try configuration(broker, "slow")
        config.inboundCapacity = 1000
        config.overflow = policy
        let slow = try connected(config, subscribing: [("flood", .atLeastOnce)])
        let pub = try connected(configuration(broker, "pub"))
        // Wait for the SUBACK: a message that arrives proves the subscription is active.
        try pub.subscribe("flood", qos: .atLeastOnce)
        #expect(publishUntilReceived(pub, slow, topic: "flood", payload: "probe", qos: .atLeastOnce) != nil)
        // A retried probe may still be in flight: let it land, then empty the hand-off.
        usleep(300_000)
        while slow.receive(timeout: 0) != nil {}
        let before = slow.counters

        let total = 20_000
        let pad = [UInt8](repeating: 0x20, count: 200)
        for i in 0..<total {
            try pub.publish("flood", Array("\(i)".utf8) + pad, qos: .atLeastOnce)
        }
        // The consumer is paused: nothing calls receive() until all have arrived.
        let arrived = eventually(timeout: 90) { slow.counters.received - before.received >= UInt64(total) }
        #expect(arrived, "received \(slow.counters.received - before.received) of \(total)")
        let full = slow.counters
        #expect(full.queued == 1000)
        #expect(full.queueHighWater <= 1000)

        var delivered: [Int] = []
        while let m = slow.receive(timeout: 0) {
            let digits = m.payload.prefix { $0 != 0x20 }
            if let n = Int(String(decoding: digits, as: UTF8.self)) { delivered.append(n) }
        }
        let after = slow.counters
        #expect(delivered.count == 1000)
        #expect(after.dropped - before.dropped == UInt64(total) - UInt64(delivered.count))
        #expect(after.received == after.delivered + after.dropped)
        switch policy {
        case .dropOldest: #expect(delivered == Array((total - 1000)..<total))
        case .dropNewest: #expect(delivered == Array(0..<1000))
        }
    }
}
