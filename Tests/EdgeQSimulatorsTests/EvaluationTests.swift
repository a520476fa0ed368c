import EdgeQMQTT
import EdgeQPlants
import EdgeQSimulators
import EdgeQTestSupport
import Foundation
import Testing

/// The evaluation twin (`edgeq sim --eval`): per window, the real plant's return beside its
/// incumbent's on the same weather, setpoints and episode starts, on a real broker.
@Suite struct EvaluationTests {
    struct Run {
        var result: SimulatorResult
        /// The windows published on plant/<name>/eval, in order.
        var published: [EvaluationWindow]
        /// Every state message.
        var states: [[String: Any]]
        /// The lines of the evaluation file.
        var fileLines: [EvaluationWindow]
    }

    /// A number read back from JSON: equal to `b` up to the text's rounding.
    static func near(_ a: Any?, _ b: Double) -> Bool {
        guard let x = (a as? NSNumber)?.doubleValue else { return false }
        return abs(x - b) <= 1e-12 * max(1, abs(b))
    }

    /// Windows read back from JSON against the run's own: every field equal, the returns up
    /// to the text's rounding.
    static func same(_ a: [EvaluationWindow], _ b: [EvaluationWindow]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { x, y in
            var x2 = x
            x2.realReturn = y.realReturn
            x2.incumbentReturn = y.incumbentReturn
            return x2 == y && near(x.realReturn, y.realReturn) && near(x.incumbentReturn, y.incumbentReturn)
        }
    }

    func run(_ plant: PlantKind, seed: UInt64, steps: Int, dither: Double, window: Int? = nil) throws -> Run {
        let broker = try MosquittoBroker()
        let dir = try TempDir()
        var cfg = try MQTTConfiguration(url: broker.url, clientID: "observer")
        cfg.inboundCapacity = 50_000
        let observer = try MQTTClient(cfg)
        defer { observer.stop() }
        try observer.subscribe("plant/\(plant.rawValue)/#", qos: .atLeastOnce)
        observer.start()
        try observer.waitUntilConnected(timeout: 5)
        var o = SimulatorOptions(plant: plant, broker: broker.url)
        o.seed = seed
        o.steps = steps
        o.rate = 0
        o.dither = dither
        var e = EvaluationOptions()
        e.windowSteps = window
        e.file = dir.url.appendingPathComponent("eval.jsonl").path
        o.evaluation = e
        let result = try Simulator(o).run()
        var published: [EvaluationWindow] = []
        var states: [[String: Any]] = []
        var scored = false
        let until = Date().addingTimeInterval(20)
        while Date() < until, !scored {
            guard let m = observer.receive(timeout: 0.2) else { continue }
            if m.topic.hasSuffix("/score") { scored = true }
            if m.topic.hasSuffix("/eval"), let w = EvaluationWindow(json: m.payload) { published.append(w) }
            if m.topic.hasSuffix("/state"),
               let s = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any] { states.append(s) }
        }
        let text = try String(contentsOfFile: e.file ?? "", encoding: .utf8)
        let lines = text.split(separator: "\n").compactMap { EvaluationWindow(json: Array($0.utf8)) }
        return Run(result: result, published: published, states: states, fileLines: lines)
    }

    @Test(arguments: [PlantKind.thermal, .tank, .heater])
    func aContinuingPlantUnderItsIncumbentScoresExactlyAsItsTwin(_ plant: PlantKind) throws {
        let r = try run(plant, seed: 5, steps: 230, dither: 0, window: 50)
        // 4 whole windows; the last 30 steps are cut by the end of the run and not reported.
        #expect(r.result.evaluations.count == 4)
        #expect(r.result.evaluations.map(\.firstStep) == [0, 50, 100, 150])
        for w in r.result.evaluations {
            #expect(w.kind == .steps && w.steps == 50 && w.incumbentSteps == 50)
            #expect(w.controller == "incumbent" && w.stepsBy == ["incumbent": 50])
            #expect(w.realReturn == w.incumbentReturn, "window \(w.index): \(w.realReturn) vs \(w.incumbentReturn)")
            #expect(w.realReturn != 0)
        }
        #expect(Self.same(r.published, r.result.evaluations))
        #expect(Self.same(r.fileLines, r.result.evaluations))
    }

    @Test(arguments: [PlantKind.thermal, .tank, .heater])
    func aDitheredIncumbentDiffersFromItsTwin(_ plant: PlantKind) throws {
        let r = try run(plant, seed: 5, steps: 200, dither: 0.5, window: 100)
        #expect(r.result.evaluations.count == 2)
        // Same exogenous draws, other actions: the returns differ (the comparison can fail).
        #expect(r.result.evaluations.contains { $0.realReturn != $0.incumbentReturn })
    }

    @Test(arguments: [PlantKind.cartpole, .mountaincar])
    func episodicPlantsStartEpisodeKFromSeedAndK(_ plant: PlantKind) throws {
        let dithered = try run(plant, seed: 9, steps: 1500, dither: 0.3)
        let episodes = dithered.result.evaluations
        #expect(episodes.count >= 3)
        #expect(episodes.map(\.index) == Array(0..<episodes.count))
        #expect(episodes.allSatisfy { $0.kind == .episode && $0.controller == "incumbent" })
        #expect(Self.same(dithered.published, episodes))
        // Every episode's first state is the start drawn from (seed, episode).
        let firsts = dithered.states.filter { ($0["step"] as? Int) == 0 }
        #expect(firsts.count >= episodes.count)
        for s in firsts {
            let k = s["episode"] as? Int ?? -1
            if plant == .cartpole {
                let env = CartPole(seed: episodeSeed(seed: 9, episode: k))
                #expect(Self.near(s["x"], env.observation[0]) && Self.near(s["theta"], env.observation[2]))
            } else {
                let env = MountainCar(seed: episodeSeed(seed: 9, episode: k))
                #expect(Self.near(s["position"], env.position))
            }
        }
        // Without dither the plant is its incumbent on the same starts: equal, episode by episode.
        let plain = try run(plant, seed: 9, steps: 1500, dither: 0)
        #expect(plain.result.evaluations.count >= 3)
        for w in plain.result.evaluations {
            #expect(w.realReturn == w.incumbentReturn && w.steps == w.incumbentSteps, "episode \(w.index)")
        }
        // The dithered run's episodes are the same episodes: their lengths under the twin agree.
        for (a, b) in zip(episodes, plain.result.evaluations) {
            #expect(a.incumbentReturn == b.incumbentReturn)
        }
    }

    /// The evaluated episodic plants keep the plain plants' contract: the same state message
    /// and score keys, the same step and episode counting (only the starts differ).
    @Test(arguments: [PlantKind.cartpole, .mountaincar])
    func evaluatedEpisodicPlantsSpeakTheSameContract(_ plant: PlantKind) throws {
        let evaluated = try run(plant, seed: 4, steps: 600, dither: 0)
        let broker = try MosquittoBroker()
        var cfg = try MQTTConfiguration(url: broker.url, clientID: "observer-plain")
        cfg.inboundCapacity = 50_000
        let observer = try MQTTClient(cfg)
        defer { observer.stop() }
        try observer.subscribe("plant/\(plant.rawValue)/state", qos: .atLeastOnce)
        observer.start()
        try observer.waitUntilConnected(timeout: 5)
        var o = SimulatorOptions(plant: plant, broker: broker.url)
        o.seed = 4
        o.steps = 600
        o.rate = 0
        let plain = try Simulator(o).run()
        let first = observer.receive(timeout: 5)
        let plainKeys = Set(((first.flatMap { try? JSONSerialization.jsonObject(with: Data($0.payload)) }) as? [String: Any] ?? [:]).keys)
        #expect(!plainKeys.isEmpty)
        // 600 steps, the first state and one more per episode start.
        #expect(evaluated.states.count == 601 + evaluated.result.evaluations.count)
        #expect(evaluated.states.allSatisfy { Set($0.keys) == plainKeys })
        func keys(_ bytes: [UInt8]) -> Set<String> {
            Set(((try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] ?? [:]).keys)
        }
        #expect(keys(evaluated.result.scoreJSON) == keys(plain.scoreJSON))
        // Steps count from 0 in each episode and episodes from 0, as on the plain plant.
        var expectedStep = 0
        var expectedEpisode = 0
        for s in evaluated.states {
            let step = s["step"] as? Int ?? -1
            let episode = s["episode"] as? Int ?? -1
            if step == 0 && expectedStep != 0 {
                expectedEpisode += 1
                expectedStep = 0
            }
            #expect(step == expectedStep && episode == expectedEpisode)
            expectedStep += 1
        }
    }

    @Test func edgeqSimWritesTheWindowsToTheFileItIsGiven() throws {
        let broker = try MosquittoBroker()
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("eval.jsonl").path
        let r = try EdgeQBinary.run(["sim", "thermal", "--broker", broker.url, "--seed", "2", "--steps", "300", "--rate", "0",
                                     "--eval-window", "100", "--eval-file", file])
        #expect(r.code == 0, "stderr: \(r.stderr.suffix(1000))")
        let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 3)
        for (i, line) in lines.enumerated() {
            let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? [:]
            #expect(Set(o.keys) == ["controller", "first_step", "incumbent_return", "incumbent_steps", "kind", "plant",
                                    "return", "seed", "steps", "steps_by", "vs_incumbent_pct", "window"])
            #expect(o["window"] as? Int == i && o["first_step"] as? Int == 100 * i && o["controller"] as? String == "incumbent")
        }
        // A window length on an episodic plant is a usage error.
        let bad = try EdgeQBinary.run(["sim", "cartpole", "--broker", broker.url, "--eval-window", "50"])
        #expect(bad.code == 64)
        #expect(bad.stderr.contains("per episode"))
    }

    /// 40 tank steps in windows of 20 against a peer playing a gateway in control whose status
    /// names v7 served; it answers every state with the command `command(step)` returns.
    func runAgainstAGatewayServingV7(command: @escaping @Sendable (Int) -> String) throws -> SimulatorResult {
        let broker = try MosquittoBroker()
        let gw = try MQTTClient(try MQTTConfiguration(url: broker.url, clientID: "gateway-peer"))
        defer { gw.stop() }
        try gw.subscribe("plant/tank/state", qos: .atLeastOnce)
        gw.start()
        try gw.waitUntilConnected(timeout: 5)
        _ = try gw.publish("edgeq/t2/status", #"{"state":"online","mode":"control","model":{"version":7}}"#,
                           qos: .atLeastOnce, retain: true)
        let stop = ManagedAtomicFlag()
        let answering = Thread {
            while !stop.isSet {
                guard let m = gw.receive(timeout: 0.1),
                      let o = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any],
                      let step = o["step"] as? Int else { continue }
                _ = try? gw.publish("plant/tank/cmd", command(step), qos: .atLeastOnce)
            }
        }
        answering.start()
        defer { stop.set() }
        var o = SimulatorOptions(plant: .tank, broker: broker.url)
        o.seed = 3
        o.steps = 40
        o.rate = 0
        o.gatewayPrefix = "edgeq/t2"
        o.commandTimeout = 5
        var e = EvaluationOptions()
        e.windowSteps = 20
        o.evaluation = e
        let r = try Simulator(o).run()
        #expect(r.gatewayChanges.first == GatewayChange(step: 0, mode: "control", servedVersion: 7))
        #expect(r.evaluations.count == 2)
        return r
    }

    @Test func windowsInControlNameTheServedModelVersion() throws {
        let r = try runAgainstAGatewayServingV7 { step in "{\"valve\":4,\"step\":\(step)}" }
        #expect(r.evaluations.allSatisfy { $0.controller == "v7" })
        // Valve wide open all the time is not the PI: the returns differ.
        #expect(r.evaluations.allSatisfy { $0.realReturn != $0.incumbentReturn })
    }

    /// A command that says which model chose it (`"model"`: the mapping's `{{model}}`) is
    /// attributed to that model, not to the version the status names as served: here the first
    /// window's commands were chosen by v9 (a trial's candidate, say), the second's are a
    /// fallback (null).
    @Test func windowsNameTheModelTheCommandsSay() throws {
        let r = try runAgainstAGatewayServingV7 { step in "{\"valve\":4,\"step\":\(step),\"model\":\(step < 20 ? "9" : "null")}" }
        #expect(r.evaluations.map(\.controller) == ["v9", "gateway"], "\(r.evaluations.map(\.stepsBy))")
    }

    /// `edgeq bench generalize`'s trial cost counts every trial at its last event: a decided
    /// trial at its verdict (not its earlier progress), an abandoned one at its abandonment, one
    /// the run's end cut off at its last progress; a trial with no pair yet (no cost share) and
    /// events of other kinds are not counted.
    @Test func theTrialCostCountsEveryTrialAtItsLastEvent() {
        let events: [[String: Any]] = [
            ["event": "started", "version": 3],
            ["event": "progress", "version": 3, "cost_share": NSNull()],
            ["event": "progress", "version": 3, "cost_share": 0.02],
            ["event": "verdict", "version": 3, "cost_share": 0.01],
            ["event": "progress", "version": 4, "cost_share": 0.5],
            ["event": "abandoned", "version": 4, "cost_share": 0.25],
            ["event": "queued", "version": 6],
            ["event": "progress", "version": 5, "cost_share": 0],
            ["event": "progress", "version": 5, "cost_share": 2.6],
            ["event": "progress", "version": 6, "cost_share": NSNull()],
        ]
        let shares = trialCostShares(events)
        #expect(shares.count == 3 && zip(shares, [1.0, 25, 260]).allSatisfy { abs($0 - $1) < 1e-9 }, "\(shares)")
        #expect(trialCostShares([]).isEmpty)
    }

    /// Pooled, the trials weigh by what they ran: a one-pair trial of a wrecking candidate (cost
    /// 10 of a base of 20: 50 %) beside a long one of a candidate a little worse (cost 2 of 400:
    /// 0.5 %) is 12 / 420 ≈ 2.9 %, where the mean of the shares says 25 %; each trial at its last
    /// event with both figures; none without `cost_base`.
    @Test func thePooledTrialCostWeighsTrialsByWhatTheyRan() throws {
        let events: [[String: Any]] = [
            ["event": "progress", "version": 3, "cost": 1, "cost_base": 100, "cost_share": 0.01],
            ["event": "verdict", "version": 3, "cost": 2, "cost_base": 400, "cost_share": 0.005],
            ["event": "verdict", "version": 4, "cost": 10, "cost_base": 20, "cost_share": 0.5],
            ["event": "progress", "version": 5, "cost": 0, "cost_base": NSNull(), "cost_share": NSNull()],
        ]
        let pooled = try #require(trialCostPooled(events))
        #expect(abs(pooled - 100.0 * 12 / 420) < 1e-9, "\(pooled)")
        let shares = trialCostShares(events)
        #expect(abs(shares.reduce(0, +) / Double(shares.count) - 25.25) < 1e-9)
        #expect(trialCostPooled(events.map { e in e.filter { $0.key != "cost_base" } }) == nil)
    }

    /// The switching cost pools the same way: Σ switching_cost / Σ cost_base, each trial at its
    /// last event with both (6 + 4 of 400 + 20); none from events without the figure.
    @Test func thePooledSwitchingCostWeighsTrialsByWhatTheyRan() throws {
        let events: [[String: Any]] = [
            ["event": "progress", "version": 3, "switching_cost": 1, "cost_base": 100],
            ["event": "verdict", "version": 3, "switching_cost": 6, "cost_base": 400],
            ["event": "verdict", "version": 4, "switching_cost": 4, "cost_base": 20],
            ["event": "progress", "version": 5, "switching_cost": 0, "cost_base": NSNull()],
        ]
        let pooled = try #require(trialSwitchingCostPooled(events))
        #expect(abs(pooled - 100.0 * 10 / 420) < 1e-9, "\(pooled)")
        #expect(trialSwitchingCostPooled(events.map { e in e.filter { $0.key != "switching_cost" } }) == nil)
    }
}
