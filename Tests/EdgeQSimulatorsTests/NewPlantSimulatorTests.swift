import EdgeQMQTT
import EdgeQPlants
import EdgeQSimulators
import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq sim heater` and `edgeq sim mountaincar` on a real broker: what they publish is the
/// plant module's run with its incumbent, message for message.
@Suite struct NewPlantSimulatorTests {
    /// Runs `plant` for `steps` unpaced steps and returns every message on `plant/<name>/#`
    /// (in order) and the run's result.
    func observe(_ plant: PlantKind, seed: UInt64, steps: Int) throws -> ([MQTTMessage], SimulatorResult) {
        let broker = try MosquittoBroker()
        var cfg = try MQTTConfiguration(url: broker.url, clientID: "observer")
        cfg.inboundCapacity = 20_000
        let observer = try MQTTClient(cfg)
        defer { observer.stop() }
        try observer.subscribe("plant/\(plant.rawValue)/#", qos: .atLeastOnce)
        observer.start()
        try observer.waitUntilConnected(timeout: 5)
        var o = SimulatorOptions(plant: plant, broker: broker.url)
        o.seed = seed
        o.steps = steps
        o.rate = 0
        let result = try Simulator(o).run()
        var messages: [MQTTMessage] = []
        let until = Date().addingTimeInterval(10)
        while Date() < until, !messages.contains(where: { $0.topic.hasSuffix("/score") }) {
            if let m = observer.receive(timeout: 0.2) { messages.append(m) }
        }
        return (messages, result)
    }

    static func object(_ m: MQTTMessage) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any]) ?? [:]
    }

    @Test func heaterPublishesThePlantsStatesAndThePIsStagesThroughAShiftEnd() throws {
        let (messages, result) = try observe(.heater, seed: 4, steps: 1000)
        #expect(result.steps == 1000 && result.incumbentSteps == 1000)
        let states = try messages.filter { $0.topic == "plant/heater/state" }
            .map { try JSONDecoder().decode(HeaterStep.self, from: Data($0.payload)) }
        let commands = messages.filter { $0.topic == "plant/heater/cmd" }.map(Self.object)
        // 1000 steps, the initial state and the next shift's first state.
        #expect(states.count == 1002)
        #expect(commands.count == 1000)

        // The same run in process: same states, same stages, the shift end at step 960.
        var heater = Heater(seed: 4)
        var pi = HeaterPI(heater: heater)
        var expected = [heater.observation]
        var stages: [Int] = []
        for _ in 0..<1000 {
            let level = pi.decide(heater.observation)
            stages.append(level)
            expected.append(heater.step(level: level))
            if let next = heater.startNextShiftIfEnded() { expected.append(next) }
        }
        #expect(states == expected)
        #expect(commands.map { $0["level"] as? Int } == stages)
        // Every command names the step it answers.
        let stepsOfStatesDecided = expected.filter { !$0.truncated }.prefix(1000).map(\.step)
        #expect(commands.map { $0["step"] as? Int } == Array(stepsOfStatesDecided))
        let end = try #require(states.firstIndex { $0.truncated })
        #expect(states[end].step == 960 && states[end + 1].step == 0 && states[end + 1].episode == 1)
        #expect(Set(stages).count >= 3)     // the PI uses several stages, not just one

        let score = try #require(messages.last { $0.topic == "plant/heater/score" }).payload
        let o = try #require(try JSONSerialization.jsonObject(with: Data(score)) as? [String: Any])
        #expect(o["plant"] as? String == "heater" && o["steps"] as? Int == 1000 && o["episodes"] as? Int == 1)
        #expect(abs((o["total_reward"] as? Double ?? 0) - heater.score.totalReward) < 1e-9)
    }

    @Test func mountainCarPublishesEpisodesThatEndAtTheGoal() throws {
        let (messages, result) = try observe(.mountaincar, seed: 9, steps: 600)
        #expect(result.steps == 600)
        let states = try messages.filter { $0.topic == "plant/mountaincar/state" }
            .map { try JSONDecoder().decode(MountainCarState.self, from: Data($0.payload)) }
        let commands = messages.filter { $0.topic == "plant/mountaincar/cmd" }.map(Self.object)
        #expect(commands.count == 600)
        var plant = MountainCarEpisodes(seed: 9)
        var expected = [plant.message]
        var actions: [Int] = []
        for _ in 0..<600 {
            let a = plant.incumbentAction()
            actions.append(a)
            plant.step(a)
            expected.append(plant.message)
            if plant.startNextEpisodeIfEnded() { expected.append(plant.message) }
        }
        #expect(states == expected)
        #expect(commands.map { $0["action"] as? Int } == actions)
        // Episodes end terminal at the goal (position ≥ 0.5), reward −1 per step, and the next
        // state is a new start with velocity 0 and reward 0.
        let ends = states.indices.filter { states[$0].terminal }
        #expect(ends.count >= 4)
        for i in ends where i + 1 < states.count {
            #expect(states[i].position >= 0.5 && states[i].velocity >= 0 && states[i].reward == -1)
            let next = states[i + 1]
            #expect(next.step == 0 && next.episode == states[i].episode + 1 && next.velocity == 0 && next.reward == 0)
            #expect(next.position >= -0.6 && next.position < -0.4)
        }
        let score = try #require(messages.last { $0.topic == "plant/mountaincar/score" }).payload
        let o = try #require(try JSONSerialization.jsonObject(with: Data(score)) as? [String: Any])
        #expect(o["episodes"] as? Int == plant.returns.returns.count)
        #expect(o["mean_return"] as? Double == plant.returns.mean)
    }
}
