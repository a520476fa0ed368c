// Persistent session: a QoS 1 message published by another client while ours is
// disconnected is queued by the broker and delivered when ours comes back with the same id.
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct SessionTests {
    @Test(arguments: [MQTTProtocolVersion.v5, .v311])
    func qos1MessageSentWhileAwayArrivesAfterReconnect(version: MQTTProtocolVersion) throws {
        let broker = try MosquittoBroker()
        var config = try configuration(broker, "gw", version: version)
        config.session = .persistent(expiry: 300)
        let pub = try connected(configuration(broker, "pub", version: version))

        let first = try connected(config, subscribing: [("cmd/#", .atLeastOnce)])
        #expect(publishUntilReceived(pub, first, topic: "cmd/sync", payload: "sync", qos: .atLeastOnce) != nil)
        first.stop()

        try pub.publish("cmd/mode", "while-away", qos: .atLeastOnce)
        // Make sure the broker has it before we come back: a round trip on pub's own connection.
        try pub.subscribe("echo/pub", qos: .atLeastOnce)
        #expect(publishUntilReceived(pub, pub, topic: "echo/pub", payload: "flushed", qos: .atLeastOnce) != nil)

        let again = try makeClient(config)
        try again.subscribe("cmd/#", qos: .atLeastOnce)
        again.start()
        let m = receive(again, topic: "cmd/mode", timeout: 10)
        #expect(m?.text == "while-away")
        #expect(m?.qos == .atLeastOnce)
    }

    @Test func persistentSessionNeedsAClientID() throws {
        var config = try MQTTConfiguration(url: "mqtt://127.0.0.1:1")
        config.session = .persistent(expiry: 60)
        #expect(throws: MQTTError.self) { _ = try makeClient(config) }
    }
}
