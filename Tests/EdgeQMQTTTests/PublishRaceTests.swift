// Publishing from other threads while the broker goes away. `publish` writes the packet on the
// caller's thread; when that write fails, libmosquitto closes the socket there — while the
// network thread may be about to use it. In CI a fleet learner acknowledging batches aborted
// at a broker restart ("bit out of range 0 - FD_SETSIZE on fd_set": `mosquitto_loop` put the
// socket, closed by the acknowledging thread a moment before, into its select set as -1).
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Synchronization
import Testing

@Suite struct PublishRaceTests {
    /// Two threads publish as fast as they can (QoS 1 and QoS 0) through six broker stops and
    /// kills; the client survives every one, reconnects, and delivers after the last. Each
    /// connection is held past the 2 s under which three losses in a row count as a session
    /// takeover (and back off longer). A QoS 0 publish while disconnected is refused, never
    /// queued: queued, it went out before the next connection's CONNECT, and the broker
    /// closed every new connection as a protocol error while the thread kept publishing.
    @Test func publishersOnOtherThreadsSurviveBrokerRestarts() throws {
        let broker = try MosquittoBroker()
        let client = try connected(configuration(broker, "racer"))
        defer { client.stop() }
        let running = Atomic<Bool>(true)
        let published = Atomic<Int>(0)
        let finished = Atomic<Int>(0)
        let threads = (0..<2).map { n in
            Thread {
                let topic = "race/\(n)"
                while running.load(ordering: .relaxed) {
                    if (try? client.publish(topic, "x", qos: n == 0 ? .atLeastOnce : .atMostOnce)) != nil {
                        published.add(1, ordering: .relaxed)
                    }
                }
                finished.add(1, ordering: .relaxed)
            }
        }
        threads.forEach { $0.start() }
        for round in 1...6 {
            usleep(2_100_000)
            if round % 2 == 0 { broker.kill9() } else { broker.stop() }
            #expect(eventually(timeout: 5) { client.state != .connected }, "round \(round): loss not noticed")
            usleep(50_000)
            try broker.start()
            #expect(eventually(timeout: 10) { client.state == .connected }, "round \(round): no reconnect: \(client.state), published \(published.load(ordering: .relaxed))\n\(broker.log().suffix(1500))")
        }
        running.store(false, ordering: .relaxed)
        #expect(eventually(timeout: 10) { finished.load(ordering: .relaxed) == 2 })
        #expect(published.load(ordering: .relaxed) > 1_000)
        let reader = try connected(configuration(broker, "reader"), subscribing: [("race/after", .atLeastOnce)])
        defer { reader.stop() }
        #expect(publishUntilReceived(client, reader, topic: "race/after", payload: "alive") != nil)
    }
}
