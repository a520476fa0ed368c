// Publish → subscribe through a real mosquitto: QoS 0 and 1, MQTT 5 and 3.1.1,
// retained message on subscribe, + and # filters.
import EdgeQMQTT
import EdgeQTestSupport
import Testing

@Suite struct RoundTripTests {
    @Test(arguments: [MQTTProtocolVersion.v5, .v311])
    func qos0AndQos1RoundTrip(version: MQTTProtocolVersion) throws {
        let broker = try MosquittoBroker()
        let sub = try connected(configuration(broker, "sub", version: version), subscribing: [("rt/#", .atLeastOnce)])
        let pub = try connected(configuration(broker, "pub", version: version))
        // The SUBACK may trail the CONNACK: QoS 0 is retried until it arrives once.
        let first = publishUntilReceived(pub, sub, topic: "rt/zero", payload: "hello-0")
        #expect(first?.qos == .atMostOnce)
        #expect(try pub.publish("rt/one", "hello-1", qos: .atLeastOnce) == .accepted)
        let m = receive(sub, topic: "rt/one")
        #expect(m?.text == "hello-1")
        #expect(m?.qos == .atLeastOnce)
        #expect(m?.retain == false)
        sub.stop()
        pub.stop()
        #expect(sub.state == .stopped)
    }

    @Test func retainedMessageArrivesOnSubscribe() throws {
        let broker = try MosquittoBroker()
        // The publisher also subscribes: getting its own message back proves the broker
        // has stored the retained value before the late subscriber arrives.
        let pub = try connected(configuration(broker, "pub"), subscribing: [("plant/setpoint", .atLeastOnce)])
        let own = eventually(timeout: 5) {
            _ = try? pub.publish("plant/setpoint", "21.5", qos: .atLeastOnce, retain: true)
            return receive(pub, topic: "plant/setpoint", timeout: 0.2) != nil
        }
        #expect(own)

        let late = try connected(configuration(broker, "late"))
        try late.subscribe("plant/+", qos: .atLeastOnce)
        let m = receive(late, topic: "plant/setpoint")
        #expect(m?.text == "21.5")
        #expect(m?.retain == true)
    }

    @Test func wildcardFiltersMatchWhatMQTTSays() throws {
        let broker = try MosquittoBroker()
        let sub = try connected(configuration(broker, "sub"), subscribing: [
            ("site/+/temp", .atLeastOnce), ("alarm/#", .atLeastOnce), ("end", .atLeastOnce),
        ])
        let pub = try connected(configuration(broker, "pub"))
        _ = publishUntilReceived(pub, sub, topic: "end", payload: "sync")
        for t in ["site/1/temp", "site/1/hum", "site/1/2/temp", "alarm", "alarm/a/b", "other/temp"] {
            try pub.publish(t, t, qos: .atLeastOnce)
        }
        try pub.publish("end", "done", qos: .atLeastOnce)
        var got: [String] = []
        while let m = receive(sub), !(m.topic == "end" && m.text == "done") { got.append(m.topic) }
        #expect(got == ["site/1/temp", "alarm", "alarm/a/b"])
    }

    @Test func unsubscribeStopsDelivery() throws {
        let broker = try MosquittoBroker()
        let sub = try connected(configuration(broker, "sub"), subscribing: [("u/a", .atLeastOnce), ("u/sync", .atLeastOnce)])
        let pub = try connected(configuration(broker, "pub"))
        #expect(publishUntilReceived(pub, sub, topic: "u/a", payload: "before") != nil)
        try sub.unsubscribe("u/a")
        // The subscriber's own message on u/sync, sent after the UNSUBSCRIBE on the same
        // connection, comes back only after the broker handled it; then nothing more on u/a.
        #expect(publishUntilReceived(sub, sub, topic: "u/sync", payload: "s1") != nil)
        try pub.publish("u/a", "after", qos: .atLeastOnce)
        try pub.publish("u/sync", "s2", qos: .atLeastOnce)
        var topics: [String] = []
        while let m = receive(sub, timeout: 5) {
            topics.append(m.topic)
            if m.topic == "u/sync", m.text == "s2" { break }
        }
        #expect(!topics.contains("u/a"), "\(topics)")
    }

    @Test func invalidTopicsAreRefusedWithTypedErrors() throws {
        let broker = try MosquittoBroker()
        let c = try connected(configuration(broker))
        #expect(throws: MQTTError.self) { try c.subscribe("a/#/b") }
        do {
            try c.publish("a/+/b", "x")
            Issue.record("publishing on a wildcard topic did not throw")
        } catch let e as MQTTError {
            #expect(e.code == .invalidTopic)
        }
    }
}
