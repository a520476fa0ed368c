// Broker crash: kill -9 and restart on the same port, 5 times. Each time the client
// reconnects within 2 s of the broker accepting connections again, and its old
// subscription delivers (the broker has no persistence: the client resubscribes).
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct ReconnectTests {
    @Test func reconnectsAndResubscribesAfterFiveBrokerKills() throws {
        let broker = try MosquittoBroker()
        let client = try connected(configuration(broker, "gw"), subscribing: [("plant/#", .atLeastOnce)])
        for round in 1...5 {
            broker.kill9()
            #expect(eventually(timeout: 5) { client.state != .connected }, "round \(round): loss not noticed")
            if case .reconnecting(let failure) = client.state {
                #expect([.connectionLost, .connectFailed].contains(failure.code))
            }
            usleep(300_000)  // the broker stays down a little while; the client keeps retrying
            try broker.start()
            let back = Date()
            #expect(eventually(timeout: 5) { client.state == .connected }, "round \(round): no reconnect\n\(broker.log())")
            let took = Date().timeIntervalSince(back)
            #expect(took < 2.0, "round \(round): reconnected \(took) s after the broker was back")
            // A fresh publisher each round (the broker lost everything).
            let pub = try connected(configuration(broker, "pub"))
            let m = publishUntilReceived(pub, client, topic: "plant/r\(round)", payload: "after-restart-\(round)")
            #expect(m != nil, "round \(round): nothing received on the old subscription")
            pub.stop()
        }
        #expect(client.counters.reconnects == 5)
        #expect(client.counters.failures >= 5)
    }

    @Test func publishWhileDisconnectedIsQueuedForQoS1AndRefusedForQoS0() throws {
        let broker = try MosquittoBroker()
        let client = try connected(configuration(broker, "gw"))
        broker.kill9()
        #expect(eventually(timeout: 5) { client.state != .connected })
        #expect(try client.publish("x/1", "kept", qos: .atLeastOnce) == .queuedUntilReconnect)
        do {
            try client.publish("x/0", "lost", qos: .atMostOnce)
            Issue.record("QoS 0 publish while disconnected did not throw")
        } catch let e as MQTTError {
            #expect(e.code == .connectionLost)
        }
    }

    @Test func stopJoinsTheThreadAndWakesTheConsumer() throws {
        let broker = try MosquittoBroker()
        let client = try connected(configuration(broker, "gw"))
        client.stop()
        #expect(client.state == .stopped)
        #expect(client.receive(timeout: nil) == nil)
        #expect(throws: MQTTError.self) { try client.publish("a", "b") }
        client.stop()  // idempotent
    }

    @Test func backoffDoublesUpToItsCap() {
        let b = ReconnectBackoff(initial: 0.1, maximum: 1.5)
        #expect((1...6).map { b.delay(afterFailures: $0) } == [0.1, 0.2, 0.4, 0.8, 1.5, 1.5])
    }
}

/// Repeated connect/disconnect: every cycle makes a client, connects, exchanges a message,
/// stops and releases it (thread joined, handle destroyed). Run once under LeakSanitizer
/// (docs/mqtt.md) to check that nothing leaks per cycle.
@Suite struct LifecycleTests {
    @Test func repeatedConnectDisconnectCycles() throws {
        let broker = try MosquittoBroker()
        let pub = try connected(configuration(broker, "pub"))
        for i in 0..<20 {
            let c = try connected(configuration(broker, "cycle"), subscribing: [("cycle/t", .atMostOnce)])
            #expect(publishUntilReceived(pub, c, topic: "cycle/t", payload: "\(i)") != nil)
            c.stop()
            #expect(c.state == .stopped)
        }
    }
}
