import EdgeQCore
import EdgeQLab
import EdgeQLearner
import EdgeQLog
import EdgeQModel
import EdgeQNet
import EdgeQPlants
@testable import EdgeQRetrain
import EdgeQTopicMap
import Foundation
import Testing

/// Model rollouts in retraining (`learning.rollouts`, docs/learning.md "Model rollouts"): short
/// runs of a network on the plant model, from logged states, as synthetic transitions for the
/// Q-learning. Real lab logs, real fitted models, the real `Retrainer`.
@Suite struct ModelRolloutsTests {
    /// On an exact model (the noise-free heater, its linear structure fitted) with ε 0 and no
    /// penalty, a rollout is the model world's closed-loop run of the same network from the same
    /// start: the same actions and rewards. Its first state is the state the gateway logged at
    /// that tick, and each transition's next state is the following one's state.
    @Test func aGreedyRolloutIsTheModelWorldsClosedLoopRun() throws {
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (map, rows, full) = try PretrialTests.heaterLog(parameters: PretrialTests.noiseFreeHeater(), seed: 22, steps: 2 * 960,
                                                            dither: 0.2, dir: dir)
        let data = PretrialTests.withoutPipelineStart(full)   // segment 0 now starts 10 samples into the log
        let model = try LinearPlantFitter(fixedStructure: LinearStructure(na: 2, nb: 2, delay: 6)).fitLinear(data)
        let (clone, _) = try PretrialTests.behaviourClone(states: rows.flatMap(\.transition.state), actions: rows.map { $0.transition.action ?? 0 },
                                                          map: map, steps: 1500, seed: 3)
        let world = try ModelWorld(map: map, model: model, data: data)
        var config = RolloutConfig()
        config.enabled = true
        config.horizon = 40
        config.epsilon = 0
        config.uncertaintyPenalty = 0
        let rollouts = ModelRollouts(world: world, config: config)
        let engine = clone.makeEngine(.int8)
        var rng = SeededGenerator(seed: 1)
        var actions = Set<Int>()
        // Segment 0 starts 10 samples into the log (trimmed above); segment 1 is the second shift.
        for (segment, start, firstRow) in [(0, 100, 110), (0, 500, 510), (1, 300, 960 + 300)] {
            let r = rollouts.rollout(segment: segment, start: start, engine: engine, rng: &rng)
            let run = try world.run(segment: segment, start: start, horizon: 40, policy: .network(clone, precision: .int8))
            #expect(r.end == .horizon && r.rows.count == 40 && run.fallbacks == 0)
            #expect(r.rows.map(\.action) == run.actions, "segment \(segment) start \(start)")
            for (t, reward) in zip(r.rows, run.rewards) { #expect(abs(Double(t.reward) - reward) < 1e-5) }
            #expect(r.rows.first?.state == rows[firstRow].transition.state, "the rollout's first state is the logged one")
            for i in 1..<r.rows.count { #expect(r.rows[i].state == r.rows[i - 1].nextState) }
            #expect(r.rows.dropLast().allSatisfy { !$0.truncated && !$0.terminal && !$0.fromIncumbent })
            #expect(r.rows.last?.truncated == true, "the cut rollout's last step bootstraps and ends the n-step window")
            actions.formUnion(r.rows.map(\.action))
        }
        #expect(actions.count >= 2, "the clone's actions: \(actions)")
    }

    /// Random rollouts on cart-pole's MLP ensemble: a rollout ends in the mapping's `model`
    /// end condition (cart beyond ±2.4 m or pole beyond 12°, read on the normalised state) and
    /// only there; every reward is the model's +1 less λ·u; no rollout starts among the held-out
    /// samples; the same seed makes the same transitions.
    @Test func randomRolloutsOnCartPoleEndWhereTheModelSaysAndPayForUncertainty() throws {
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let map = try RetrainChecksTests.cartPoleMap()
        let log = try RetrainChecksTests.shadowLog(map, in: dir, steps: 3000)
        let (data, _) = try PlantDataReader(map: map).read(logPath: log)
        let model = try EnsemblePlantFitter().fitEnsemble(data, seed: 1)
        let world = try ModelWorld(map: map, model: model, data: data)
        var config = RolloutConfig()
        config.enabled = true
        config.starts = 300
        config.horizon = 30
        config.uncertaintyPenalty = 10
        let rollouts = ModelRollouts(world: world, config: config)

        let held = 300
        let eligible = rollouts.eligibleStarts(heldOutSamples: held)
        var offsets: [Int] = []
        var before = 0
        for seg in data.segments { offsets.append(before); before += seg.count }
        #expect(!eligible.isEmpty && eligible.allSatisfy { offsets[$0.segment] + $0.start < data.sampleCount - held })
        #expect(eligible.count < rollouts.eligibleStarts(heldOutSamples: 0).count)

        let made = rollouts.make(network: nil, precision: .int8, heldOutSamples: held, seed: 7)
        let s = made.summary
        #expect(s.policy == "random" && s.starts == 300 && s.startsLimit == 300 && s.horizon == 30)
        #expect(s.transitions == made.rollouts.reduce(0) { $0 + $1.count } && s.transitions > 300)
        #expect(s.terminal > 30, "random pushes drop the pole within 30 steps from many of the rule's states: \(s)")
        #expect(s.terminal + s.unusable + s.uncertain <= s.starts)
        // θ is normalised by 0.21 rad, x by 2.4 m: the model's end condition on the state vector.
        func ended(_ state: [Float]) -> Bool { abs(state[0]) > 1 || abs(Double(state[2]) * 0.21) > 0.20943951023931953 }
        for rollout in made.rollouts {
            #expect(rollout.count <= 30)
            for (i, t) in rollout.enumerated() {
                let last = i == rollout.count - 1
                #expect(t.terminal == (last && ended(t.nextState)) || (!t.terminal && !ended(t.nextState)), "\(t)")
                #expect(t.terminal || t.truncated == last)
                #expect(!t.terminal || last)
                #expect(t.reward < 1 && Double(t.reward) >= 1 - 10 * s.maxUncertainty - 1e-5, "reward \(t.reward)")
                #expect(t.nextMask == nil || t.nextMask == [true, true])
            }
        }
        #expect(abs(s.meanReward - (1 - s.meanPenalty)) < 1e-4, "\(s)")
        #expect(s.meanPenalty > 0 && abs(s.meanPenalty - 10 * s.meanUncertainty) < 1e-9)
        let again = rollouts.make(network: nil, precision: .int8, heldOutSamples: held, seed: 7)
        #expect(again.rollouts == made.rollouts)
        #expect(rollouts.make(network: nil, precision: .int8, heldOutSamples: held, seed: 8).rollouts != made.rollouts)

        // A limit on the uncertainty cuts rollouts, and no step beyond it is kept.
        var tight = config
        tight.maxUncertainty = s.meanUncertainty
        let cut = ModelRollouts(world: world, config: tight).make(network: nil, precision: .int8, heldOutSamples: held, seed: 7)
        #expect(cut.summary.uncertain > 0 && cut.summary.maxUncertainty <= s.meanUncertainty && cut.summary.transitions < s.transitions)
    }

    /// Through the `Retrainer`: with `learning.rollouts` on, the accepted plant model's
    /// rollouts join the replay (the report says how many, the replay has room for them, the
    /// warm start is the rollout policy); on a mapping without roles nothing is fitted and the
    /// report says why; off, the report has no `rollouts`.
    @Test func aRetrainingAddsTheRolloutsOrSaysWhyNot() throws {
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let section = "learning:\n  rollouts: {enabled: true, starts: 200, horizon: 5}\n"
        let map = try RetrainChecksTests.cartPoleMap { $0.replacingOccurrences(of: "learning:\n", with: section) }
        #expect(map.learning.rollouts.enabled && map.learning.rollouts.starts == 200)
        let log = try RetrainChecksTests.shadowLog(map, in: dir, steps: 2000)
        let retrainer = RetrainChecksTests.retrainer(map)
        let (report, first) = try retrainer.train(logPath: log, limits: RetrainLimits(steps: 300), warmStart: nil)
        #expect(report.plantModel?.chosen != nil, "\(String(describing: report.plantModel)) \(report.plantModelSkipped ?? "")")
        let r = try #require(report.rollouts, "no rollouts: \(report.rolloutsSkipped ?? "")")
        #expect(report.rolloutsSkipped == nil)
        #expect(r.policy == "random" && r.starts == 200 && r.transitions > 200 && r.transitions <= 1000)
        #expect(report.figures["rollout_transitions"] == Double(r.transitions))
        #expect((report.learner?.bufferSize ?? 0) == report.trainRows + 1000)
        // report.json keeps them.
        let decoded = try JSONDecoder().decode(RetrainReport.self, from: report.json())
        #expect(decoded.rollouts?.transitions == r.transitions)
        // The next retraining's rollouts follow its warm start.
        let (warmReport, _) = try retrainer.train(logPath: log, limits: RetrainLimits(steps: 300), warmStart: first)
        #expect(warmReport.rollouts?.policy == "network" && warmReport.warmStart)
        print("rollouts on cart-pole (200 starts × 5 steps): random \(r.transitions) transitions, \(r.terminal) terminal, \(r.seconds) s; "
              + "warm-start network \(warmReport.rollouts?.transitions ?? 0) transitions, \(warmReport.rollouts?.terminal ?? 0) terminal, \(warmReport.rollouts?.seconds ?? 0) s")

        let noRoles = try RetrainChecksTests.cartPoleMap {
            $0.replacingOccurrences(of: "learning:\n", with: section).replacingOccurrences(of: ", role: controlled", with: "")
                .replacingOccurrences(of: "\nmodel:\n  reward: 1\n", with: "\n").replacingOccurrences(of: "  terminal: abs(x) > 2.4 or abs(theta) > 0.20943951023931953\n", with: "")
        }
        let (plain, _) = try RetrainChecksTests.retrainer(noRoles).train(logPath: log, limits: RetrainLimits(steps: 300), warmStart: nil)
        #expect(plain.rollouts == nil)
        #expect((plain.rolloutsSkipped ?? "").contains("role: controlled"), "\(plain.rolloutsSkipped ?? "nil")")

        let (off, _) = try RetrainChecksTests.retrainer(try RetrainChecksTests.cartPoleMap()).train(logPath: log, limits: RetrainLimits(steps: 300), warmStart: nil)
        #expect(off.rollouts == nil && off.rolloutsSkipped == nil && off.figures["rollout_transitions"] == nil)
    }
}
