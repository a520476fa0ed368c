// Two clients with the same client id against a real mosquitto. The broker hands the session
// to the newer connection and drops the older one (mosquitto 2.0 closes the socket, with MQTT 5
// too: no DISCONNECT reason 0x8E reaches the client). With reconnects after 0.1 s both clients
// used to knock each other off several times a second forever, with nothing reported. Each
// client now counts the takeover (`counters.sessionTakeovers`), reports it in its state
// (`sessionTakenOver`, naming the id) and waits longer after each one (1 s, 2 s, 4 s … 60 s).
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct SessionTakeoverTests {
    @Test(arguments: [MQTTProtocolVersion.v5, .v311])
    func twoClientsWithOneIdDetectTheTakeoverAndBackOff(version: MQTTProtocolVersion) throws {
        let broker = try MosquittoBroker()
        var config = try configuration(broker, "twin", version: version)
        config.session = .persistent(expiry: 60)
        let first = try connected(config)
        defer { first.stop() }
        let second = try makeClient(config)
        defer { second.stop() }
        second.start()

        // Watch for 8 s. Before: reconnects after 0.1 s, about 5 connects a second per client
        // (some 80 in all). Now the loop is recognised after 3 short connections in a row, and
        // the delays after takeovers grow (1, 2, 4 s …).
        let watch = 8.0
        let deadline = Date().addingTimeInterval(watch)
        var sawTakeoverState = false
        var message = ""
        while Date() < deadline {
            for c in [first, second] {
                if case .reconnecting(let f) = c.state, f.code == .sessionTakenOver {
                    sawTakeoverState = true
                    message = f.message
                }
            }
            usleep(20_000)
        }
        let a = first.counters, b = second.counters
        let takeovers = a.sessionTakeovers + b.sessionTakeovers
        let connects = a.connects + b.connects
        #expect(takeovers >= 2, "takeovers: \(a.sessionTakeovers) + \(b.sessionTakeovers)")
        #expect(sawTakeoverState, "no client reported sessionTakenOver")
        #expect(message.contains(config.clientID) && message.contains("client id"), "\(message)")
        #expect(max(a.takeoverStreak, b.takeoverStreak) >= 2, "streaks \(a.takeoverStreak), \(b.takeoverStreak)")
        // Backed off: at most ~one connect per second of watching for both clients together.
        #expect(connects <= 20, "\(connects) connects in \(watch) s (\(a.connects) + \(b.connects)): no backoff")
    }

    @Test func ordinaryLossesAreNotTakeovers() throws {
        // A broker stopped (SIGTERM: MQTT 5 clients get a DISCONNECT with another reason) or
        // killed is a lost connection, not a takeover.
        let broker = try MosquittoBroker()
        let client = try connected(try configuration(broker, "alone"))
        defer { client.stop() }
        usleep(2_100_000)   // connections held longer than the 2 s of a "short" one
        broker.stop()
        try broker.start()
        try client.waitUntilConnected(timeout: 10)
        usleep(2_100_000)
        broker.kill9()
        try broker.start()
        usleep(300_000)
        try client.waitUntilConnected(timeout: 10)
        #expect(client.counters.connects >= 3)
        #expect(client.counters.sessionTakeovers == 0)
        #expect(client.counters.takeoverStreak == 0)
    }

    @Test func takeoverBackoffGrowsToItsCap() {
        let b = ReconnectBackoff()
        #expect((1...8).map { b.delay(afterTakeovers: $0) } == [1, 2, 4, 8, 16, 32, 60, 60])
        #expect(b.delay(afterTakeovers: 0) == 0)
    }
}
