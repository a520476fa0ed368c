import EdgeQTestSupport
import Testing

/// The broker fixture itself: a real mosquitto on a free port, killed and restarted.
@Suite struct BrokerFixtureTests {
    @Test func startsKillsAndRestartsOnTheSamePort() throws {
        let broker = try MosquittoBroker()
        #expect(FreePort.accepts(broker.port))
        broker.kill9()
        #expect(!FreePort.accepts(broker.port))
        try broker.start()
        #expect(FreePort.accepts(broker.port))
        broker.stop()
        #expect(!FreePort.accepts(broker.port))
    }

    @Test func passwordBrokerStarts() throws {
        let broker = try MosquittoBroker(auth: .passwords(["plant": "s3cret"]))
        #expect(FreePort.accepts(broker.port))
    }
}
