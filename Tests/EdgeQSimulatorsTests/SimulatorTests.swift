import EdgeQMQTT
import EdgeQSimulators
import EdgeQTestSupport
import Foundation
import Testing

/// Each simulator runs with its incumbent against a real broker and produces a
/// deterministic score for a given seed; in control mode it applies the gateway's commands.
@Suite struct SimulatorTests {
    func run(_ plant: PlantKind, seed: UInt64, steps: Int, broker: MosquittoBroker, prefix: String? = nil) throws -> SimulatorResult {
        var o = SimulatorOptions(plant: plant, broker: broker.url)
        o.seed = seed
        o.steps = steps
        o.rate = 0
        o.gatewayPrefix = prefix
        return try Simulator(o).run()
    }

    @Test(arguments: PlantKind.allCases)
    func deterministicScoreForASeed(_ plant: PlantKind) throws {
        let broker = try MosquittoBroker()
        let a = try run(plant, seed: 11, steps: 300, broker: broker)
        let b = try run(plant, seed: 11, steps: 300, broker: broker)
        let c = try run(plant, seed: 12, steps: 300, broker: broker)
        #expect(a.steps == 300)
        #expect(a.incumbentSteps == 300)
        #expect(a.scoreJSON == b.scoreJSON, "same seed, different score: \(a.scoreText) vs \(b.scoreText)")
        #expect(a.scoreJSON != c.scoreJSON)
    }

    @Test func publishesStateAndTheIncumbentsCommandsInOrder() throws {
        let broker = try MosquittoBroker()
        var cfg = try MQTTConfiguration(url: broker.url, clientID: "observer")
        cfg.inboundCapacity = 10_000
        let observer = try MQTTClient(cfg)
        defer { observer.stop() }
        try observer.subscribe("plant/thermal/#", qos: .atLeastOnce)
        observer.start()
        try observer.waitUntilConnected(timeout: 5)
        let result = try run(.thermal, seed: 1, steps: 20, broker: broker)
        var topics: [String] = []
        let until = Date().addingTimeInterval(3)
        while Date() < until, topics.filter({ $0 == "plant/thermal/score" }).isEmpty {
            if let m = observer.receive(timeout: 0.2) { topics.append(m.topic) }
        }
        // state, cmd, state, cmd, … state, score: the command of step t comes before state t+1.
        let body = topics.filter { $0 != "plant/thermal/score" }
        #expect(body.count == 41)
        for (i, t) in body.enumerated() {
            #expect(t == (i % 2 == 0 ? "plant/thermal/state" : "plant/thermal/cmd"))
        }
        #expect(result.scoreText.contains("thermal: 20 steps"))
    }

    @Test func appliesTheGatewaysCommandsInControl() throws {
        let broker = try MosquittoBroker()
        let gw = try MQTTClient(try MQTTConfiguration(url: broker.url, clientID: "fake-gateway-peer"))
        defer { gw.stop() }
        try gw.subscribe("plant/tank/state", qos: .atLeastOnce)
        gw.start()
        try gw.waitUntilConnected(timeout: 5)
        _ = try gw.publish("edgeq/t1/status", #"{"state":"online","mode":"control"}"#, qos: .atLeastOnce, retain: true)
        // A peer that answers every state with "valve 4" for that step.
        let stop = ManagedAtomicFlag()
        let answering = Thread {
            while !stop.isSet {
                guard let m = gw.receive(timeout: 0.1),
                      let o = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any],
                      let step = o["step"] as? Int else { continue }
                _ = try? gw.publish("plant/tank/cmd", "{\"valve\":4,\"step\":\(step)}", qos: .atLeastOnce)
            }
        }
        answering.start()
        let r = try run(.tank, seed: 3, steps: 40, broker: broker, prefix: "edgeq/t1")
        stop.set()
        #expect(r.gatewaySteps >= 39, "gateway steps \(r.gatewaySteps), timeouts \(r.commandTimeouts)")
        #expect(r.commandTimeouts <= 1)
    }
}

/// The plant's mode topic (`plant/<name>/mode`, the gateway's handover) decides who is in
/// charge, over the gateway's status.
@Suite struct SimulatorModeTopicTests {
    @Test(arguments: [#"{"controller":"incumbent"}"#, "incumbent", #" "incumbent" "#])
    func aRetainedGiveOutranksAControlStatus(give: String) throws {
        let broker = try MosquittoBroker()
        let gw = try MQTTClient(try MQTTConfiguration(url: broker.url, clientID: "fake-gateway"))
        defer { gw.stop() }
        gw.start()
        try gw.waitUntilConnected(timeout: 5)
        _ = try gw.publish("edgeq/t1/status", #"{"state":"online","mode":"control"}"#, qos: .atLeastOnce, retain: true)
        _ = try gw.publish("plant/tank/mode", give, qos: .atLeastOnce, retain: true)
        var o = SimulatorOptions(plant: .tank, broker: broker.url)
        o.steps = 30
        o.rate = 0
        o.gatewayPrefix = "edgeq/t1"
        o.commandTimeout = 600   // a step that waited for the gateway would never end
        let r = try Simulator(o).run()
        #expect(r.incumbentSteps == 30)
        #expect(r.gatewaySteps == 0 && r.commandTimeouts == 0)
    }

    @Test func aTakeOnTheModeTopicAloneHandsTheStepsToTheGateway() throws {
        let broker = try MosquittoBroker()
        let gw = try MQTTClient(try MQTTConfiguration(url: broker.url, clientID: "fake-gateway"))
        defer { gw.stop() }
        try gw.subscribe("plant/tank/state", qos: .atLeastOnce)
        gw.start()
        try gw.waitUntilConnected(timeout: 5)
        _ = try gw.publish("plant/tank/mode", #"{"controller":"gateway"}"#, qos: .atLeastOnce, retain: true)
        let stop = ManagedAtomicFlag()
        let answering = Thread {
            while !stop.isSet {
                guard let m = gw.receive(timeout: 0.1),
                      let o = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any],
                      let step = o["step"] as? Int else { continue }
                _ = try? gw.publish("plant/tank/cmd", "{\"valve\":4,\"step\":\(step)}", qos: .atLeastOnce)
            }
        }
        answering.start()
        var o = SimulatorOptions(plant: .tank, broker: broker.url)
        o.steps = 30
        o.rate = 0
        o.commandTimeout = 600
        let r = try Simulator(o).run()
        stop.set()
        // The first step may be taken before the retained take arrives (the plant waits for
        // retained messages until the broker is quiet for 50 ms): then the incumbent takes it.
        #expect(r.gatewaySteps >= 29 && r.commandTimeouts == 0, "gateway \(r.gatewaySteps), timeouts \(r.commandTimeouts)")
    }
}

/// A flag set by one thread and read by another.
final class ManagedAtomicFlag: @unchecked Sendable {
    // @unchecked Sendable: `value` is only accessed under `lock`.
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
