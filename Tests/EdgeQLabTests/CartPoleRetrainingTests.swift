import EdgeQGateway
import EdgeQLab
import EdgeQLog
import EdgeQTopicMap
import Foundation
import Testing
import EdgeQRetrain

@Suite struct CartPoleRetrainingTests {
    /// Issue 6: cart-pole with periodic retraining in control mode (no exploration, as shipped) reaches
    /// a mean return ≥ 400 within 40,000 steps — with the shipped `topics/cartpole.yaml`
    /// (its `learning:` section sets the retraining period, updates and hyper-parameters),
    /// every retraining through the `Retrainer` and the mapping file's checks, one fixed seed.
    /// `edgeq bench retrain` runs the same loop on 5 seeds.
    @Test func periodicRetrainingInControlReaches400Within40000Steps() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let map = try TopicMap.load(path: root.appendingPathComponent("topics/cartpole.yaml").path)
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let loop = CartPoleRetraining()
        let curve = try loop.run(map: map, seed: 1, directory: dir)
        let summary = curve.map { "\($0.steps): \(Int($0.meanReturn))\($0.passed ? "" : " (failed: \($0.reasons.joined(separator: "; ")))")" }
        let hit = try #require(curve.first { $0.meanReturn >= 400 && $0.controlDecisions > 0 }, "curve: \(summary)")
        #expect(hit.steps <= 40_000)
        // The loop ran as the mapping says: a retraining every `retrain.every_transitions` steps.
        let every = try #require(map.learning.retrainEveryTransitions)
        let expected = (1...curve.count).map { $0 * every }
        #expect(curve.map(\.steps) == expected, "curve: \(summary)")
        // What reached 400 was served, i.e. some retraining passed every check.
        #expect(curve.contains { $0.passed })
        let last = curve.last?.meanReturn ?? 0
        #expect(last >= 400)
        // Control mode as the mapping says (no exploration): the log holds the shadow chunk,
        // then the served models' own decisions, which take both actions (the first model
        // departs from the rule: that is what the next rounds learn from), and no explorative one.
        #expect(map.learning.explorationBudget == 0)
        let rows = try ExperienceLog.open(path: dir.appendingPathComponent("cartpole-1.sqlite").path, create: false)
            .transitions(window: .all).map(\.transition)
        #expect(rows.contains { $0.actor == .incumbent && $0.mode == .shadow })
        let served = rows.filter { $0.actor == .model && $0.mode == .control }
        #expect(Set(served.compactMap(\.action)) == [0, 1])
        #expect(!rows.contains { $0.actor == .exploration })
    }

    /// `.exploring` follows the gateway's schedule: ε decays over control decisions counted
    /// from `after`, explorative actions are logged `actor: exploration` beside the model's pick.
    @Test func explorationDecaysOverControlDecisions() throws {
        // The model acts on every tick here, also outside its short shadow log's support.
        let map = try TopicMap.parse(yaml: try String(contentsOf: LabTests.thermalURL(), encoding: .utf8)
            .replacingOccurrences(of: "safety:\n", with: "safety:\n  on_unsupported: none\n"), file: "thermal.yaml")
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let shadow = dir.appendingPathComponent("shadow.sqlite").path
        var plant = ThermalLabPlant(seed: 3)
        _ = try Lab(map: map).run(&plant, steps: 600, policy: .incumbent(dither: 0.1), seed: 3, logPath: shadow)
        var policy = CheckPolicy()
        policy.fqeUpdates = 0
        let (_, model) = try Retrainer(map: map, policy: policy).train(logPath: shadow, limits: RetrainLimits(steps: 100), warmStart: nil)
        let control = dir.appendingPathComponent("control.sqlite").path
        // ε from 1 to 0 over 400 decisions, 200 of them already made: ε = 0.5 … 0 here.
        let r = try Lab(map: map).run(&plant, steps: 400, policy: .exploring(model, start: 1, end: 0, decaySteps: 400, after: 200),
                                      seed: 4, logPath: control)
        #expect(r.modelDecisions == 400)
        let rows = try ExperienceLog.open(path: control, create: false).transitions(window: .all).map(\.transition)
        #expect(rows.count == 400)
        let explored = rows.indices.filter { rows[$0].actor == .exploration }
        // About Σ ε = 50 of the first 200 explore (ε = 0.5 → 0), none after.
        #expect(explored.count >= 25 && explored.count <= 80, "\(explored.count) explorative decisions")
        #expect(explored.allSatisfy { $0 < 200 })
        #expect(rows.allSatisfy { $0.modelAction != nil && $0.mode == .control })
        #expect(rows.allSatisfy { $0.actor == .exploration || $0.action == $0.modelAction })
    }
}
