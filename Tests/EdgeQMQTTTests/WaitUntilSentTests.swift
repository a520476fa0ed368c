// A burst of QoS 1 messages published and then stopped at once: libmosquitto keeps 20 in
// flight, and what is still queued at stop() is dropped. `waitUntilSent` waits for the
// broker's acknowledgements, so a subscriber gets every message of the burst.
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct WaitUntilSentTests {
    @Test func aBurstIsAcknowledgedBeforeStop() throws {
        let broker = try MosquittoBroker()
        var config = try configuration(broker, "sink")
        config.inboundCapacity = 10_000
        let sink = try connected(config, subscribing: [("burst/#", .atLeastOnce)])
        defer { sink.stop() }
        let pub = try connected(configuration(broker, "burst-pub"))
        try pub.subscribe("burst/probe", qos: .atLeastOnce)
        #expect(publishUntilReceived(pub, sink, topic: "burst/probe", payload: "probe", qos: .atLeastOnce) != nil)
        usleep(300_000)
        while sink.receive(timeout: 0) != nil {}
        let total = 3_000
        for i in 0..<total { try pub.publish("burst/n", Array("\(i)".utf8), qos: .atLeastOnce) }
        try pub.publish("burst/n", Array("x".utf8), qos: .atMostOnce)
        #expect(pub.waitUntilSent(timeout: 30), "not every message was acknowledged")
        pub.stop()
        var got = 0
        while got < total + 1, sink.receive(timeout: 5) != nil { got += 1 }
        #expect(got == total + 1, "the subscriber got \(got) of \(total + 1)")
        // Nothing published: nothing to wait for.
        let idle = try connected(configuration(broker, "idle"))
        defer { idle.stop() }
        #expect(idle.waitUntilSent(timeout: 0))
    }
}
