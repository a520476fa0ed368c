// MQTT 5 no-local through a real mosquitto: a client subscribed with `noLocal` does not get
// its own publications back (its own echo), and still gets everyone else's; without the option
// (and with MQTT 3.1.1, which has none) the echo comes back.
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct NoLocalTests {
    /// Publishes its own messages, then another client's marker, and returns what `me`
    /// received before the marker (the broker delivers one connection's messages in order, so
    /// an echo, if any, is there before the marker from the other client is).
    func ownMessagesReceived(version: MQTTProtocolVersion, noLocal: Bool) throws -> (own: Int, marker: Bool) {
        let broker = try MosquittoBroker()
        let me = try makeClient(configuration(broker, "me", version: version))
        try me.subscribe("plant/cmd", qos: .atLeastOnce, noLocal: noLocal)
        me.start()
        try me.waitUntilConnected(timeout: 10)
        let other = try connected(configuration(broker, "other", version: version))
        // The subscription is in place once another client's message gets through.
        #expect(publishUntilReceived(other, me, topic: "plant/cmd", payload: "ready", qos: .atLeastOnce) != nil)
        for i in 0..<5 { _ = try me.publish("plant/cmd", "own-\(i)", qos: .atLeastOnce) }
        Thread.sleep(forTimeInterval: 0.3)
        _ = try other.publish("plant/cmd", "marker", qos: .atLeastOnce)
        var own = 0
        var marker = false
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, !marker, let m = receive(me, topic: "plant/cmd", timeout: 1) {
            if m.text.hasPrefix("own-") { own += 1 }
            if m.text == "marker" { marker = true }
        }
        me.stop()
        other.stop()
        return (own, marker)
    }

    @Test func aNoLocalSubscriptionDoesNotEchoTheClientsOwnPublications() throws {
        let r = try ownMessagesReceived(version: .v5, noLocal: true)
        #expect(r.marker, "the other client's message did not arrive")
        #expect(r.own == 0, "\(r.own) of the client's own messages came back despite no-local")
    }

    @Test(arguments: [MQTTProtocolVersion.v5, .v311])
    func withoutNoLocalTheEchoComesBack(version: MQTTProtocolVersion) throws {
        // The control: the same exchange without the option (or with 3.1.1, where the client
        // cannot ask for it) returns every own message, so the test above can fail.
        let r = try ownMessagesReceived(version: version, noLocal: version == .v311)
        #expect(r.marker)
        #expect(r.own == 5)
    }
}
