// The inline handler (`start(handler:)`): messages are handed to it on the network thread
// in arrival order; what it declines goes to the hand-off for `receive`; it can publish
// from inside the callback (the gateway's decision path); counters stay consistent.
import EdgeQMQTT
import EdgeQTestSupport
import Synchronization
import Testing

@Suite struct InlineHandlerTests {
    @Test func inlineHandlerSeesMessagesInOrderAndCanPublishAnswers() throws {
        let broker = try MosquittoBroker()
        let seen = Mutex<[String]>([])
        let client = try makeClient(configuration(broker, "inline"))
        try client.subscribe("in/#", qos: .atLeastOnce)
        try client.subscribe("out/echo", qos: .atLeastOnce)
        client.start { [client] m in
            guard m.topic.hasPrefix("in/") else { return false }  // the echoes go to the hand-off
            if m.topic == "in/keep" { return false }
            seen.withLock { $0.append(m.text) }
            // Publishing from inside libmosquitto's callback, as the gateway does.
            _ = try? client.publish("out/echo", m.payload, qos: .atMostOnce)
            return true
        }
        try client.waitUntilConnected(timeout: 10)
        let pub = try connected(configuration(broker, "pub"))
        // The SUBACK may trail the CONNACK: retry until the first echo comes back.
        #expect(publishUntilReceived(pub, client, topic: "out/echo", payload: "sync") != nil)
        for i in 0..<200 { try pub.publish("in/x", "m\(i)", qos: .atLeastOnce) }
        try pub.publish("in/keep", "kept", qos: .atLeastOnce)

        var echoes: [String] = []
        var kept: MQTTMessage?
        while kept == nil || echoes.count < 200, let m = receive(client, timeout: 5) {
            if m.topic == "in/keep" { kept = m } else if m.text != "sync" { echoes.append(m.text) }
        }
        let expected = (0..<200).map { "m\($0)" }
        #expect(echoes == expected)
        #expect(kept?.text == "kept")
        let handled = seen.withLock { $0.filter { $0 != "sync" } }
        #expect(handled == expected)
        let c = client.counters
        #expect(c.received == c.delivered + c.dropped + UInt64(c.queued))
        #expect(c.delivered >= 402)  // 200 inline, 200 echoes and the kept one via receive, the syncs
        client.stop()
        pub.stop()
    }
}
