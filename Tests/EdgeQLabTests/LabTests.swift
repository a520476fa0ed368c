import EdgeQGateway
import EdgeQLab
import EdgeQNet
import EdgeQLog
import EdgeQTopicMap
import Foundation
import Testing
import EdgeQRetrain

@Suite struct LabTests {
    static func thermalURL() -> URL {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent("topics/thermal.yaml")
    }

    static func thermalMap() throws -> TopicMap {
        try TopicMap.load(path: thermalURL().path)
    }

    static func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-lab-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    @Test func shadowLogHasTheIncumbentsActions() throws {
        let map = try Self.thermalMap()
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("log.sqlite").path
        var plant = ThermalLabPlant(seed: 7)
        let r = try Lab(map: map).run(&plant, steps: 2016 + 100, policy: .incumbent(dither: 0.1), seed: 7, logPath: path)
        let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all).map(\.transition)
        // One week and 100 steps: the week's last state closes a transition and opens none.
        #expect(rows.count == 2016 + 100)
        #expect(r.rowsLogged == rows.count)
        #expect(rows.allSatisfy { $0.actor == .incumbent && $0.action != nil && $0.mode == .shadow })
        #expect(rows.filter(\.truncated).count == 1)
        // No transition links two episodes.
        #expect(Set(rows.map(\.episode)) == [0, 1])
    }
}

@Suite struct LearningTests {
    /// The criterion on one fixed seed: six weeks of shadow logging with the dithered
    /// PI, one retraining with the shipped mapping file, then the candidate in control for two
    /// fresh weeks on each of three other weather seeds beside the plain PI on the same weather.
    @Test func thermalCandidateBeatsThePIFromShadowDataAlone() throws {
        let map = try LabTests.thermalMap()
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var e = ThermalExperiment()
        e.evaluationSeeds = [1001, 1002, 1003]
        let o = try e.run(map: map, seed: 1, directory: dir)
        #expect(o.report.passed, "checks: \(o.report.reasons)")
        // At least 3 % cheaper over the evaluation horizon, never more than 2 % dearer in any period.
        #expect(o.costImprovement >= 0.03, "improvement \(o.costImprovement)")
        #expect(o.worstImprovement >= -0.02, "worst period \(o.worstImprovement)")
        for p in o.periods {
            // No comfort loss: at most 0.5 K·h per week more than the PI — 0.1 K below the
            // band for 5 of the 50 occupied hours, within a room sensor's accuracy (the PI
            // itself has 0–0.01; an unguarded learner 1–9).
            #expect(p.extraComfortViolationPerWeek <= 0.5, "seed \(p.seed): \(p.extraComfortViolationPerWeek) K·h/week")
            #expect(p.fallbacks == 0)
        }
        // The report carries the off-policy estimates beside the direct method.
        #expect(o.report.figures["fqe_candidate_reward_per_step"]?.isFinite == true)
        #expect(o.report.figures["fqe_behaviour_reward_per_step"]?.isFinite == true)
        #expect(o.report.figures["estimate_candidate_value"]?.isFinite == true)
    }

    /// The fleet's thermal experiment (`edgeq bench fleet --parts thermal`): each gateway's plant
    /// logged into its own SQLite log, the rows pooled as the learner pools them (each gateway's
    /// newest tenth held out at the end), one training with the learner's retraining, the
    /// candidate in control beside the PI on fresh weather. Small: 2 gateways × 1 week.
    @Test func theFleetExperimentPoolsEveryGatewaysLogAsTheLearnerDoes() throws {
        let map = try LabTests.thermalMap()
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var e = ThermalExperiment()
        e.evaluationSeeds = [1001]
        e.evaluationWeeks = 1
        e.limits = RetrainLimits(steps: 300)
        let o = try e.runFleet(map: map, gatewaySeeds: [101, 102], weeksEach: 1, seed: 1, directory: dir)
        // Both gateways' rows were trained on: 2 × 2,016 logged, none flagged.
        #expect(o.report.rows > 2 * 2000 && o.report.rows <= 2 * 2016, "\(o.report.rows) rows")
        #expect(o.report.heldOutRows == o.report.rows / 10)
        #expect(o.logging.rowsLogged == 2016)
        // The learner's retraining: no plant model (no distillation), no fitted Q evaluation.
        #expect(o.report.plantModel == nil && o.report.plantModelSkipped?.contains("fleet learner") == true)
        #expect(o.report.figures["fqe_improvement"] == nil && !o.report.checks.isEmpty)
        #expect(o.periods.count == 1 && o.periods[0].candidate.steps == 2016 && o.periods[0].incumbent.steps == 2016)
        // The pooling: every gateway's oldest 90 % first, then every gateway's newest 10 %.
        let logs = try [101, 102].map { g in
            try ExperienceLog.open(path: dir.appendingPathComponent("lab-fleet-1-g\(g).sqlite").path, create: false).transitions(window: .all)
        }
        let pooled = FleetTrainer.pooled([("a", logs[0]), ("b", logs[1])])
        #expect(pooled.perGateway == ["a": logs[0].count, "b": logs[1].count])
        let h0 = logs[0].count / 10, h1 = logs[1].count / 10
        let expected = logs[0].dropLast(h0) + logs[1].dropLast(h1) + logs[0].suffix(h0) + logs[1].suffix(h1)
        #expect(pooled.rows.map(\.transition.state) == expected.map(\.transition.state))
        #expect(pooled.rows.count == logs[0].count + logs[1].count)
    }

    /// A candidate that cannot meet its checks is not written (so it cannot be served), and
    /// the report says why.
    @Test func failingCandidateIsNotStoredAndSaysWhy() throws {
        let map = try LabTests.thermalMap()
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("log.sqlite").path
        var plant = ThermalLabPlant(seed: 3)
        _ = try Lab(map: map).run(&plant, steps: 2016, policy: .incumbent(dither: 0.1), seed: 3, logPath: path)
        var policy = CheckPolicy()
        policy.minAgreement = 1.01            // impossible: more than all rows
        policy.qBoundSlack = 0                // impossible: |Q| ≤ 0
        policy.fqeUpdates = 0
        let out = dir.appendingPathComponent("candidate.qmodel")
        let report = try Retrainer(map: map, policy: policy).run(logPath: path, limits: RetrainLimits(steps: 300), warmStart: nil, output: out)
        #expect(!report.passed)
        #expect(report.verdict == "failed")
        #expect(report.reasons.contains { $0.hasPrefix("incumbent_agreement:") })
        #expect(report.reasons.contains { $0.hasPrefix("q_within_bound:") })
        #expect(!FileManager.default.fileExists(atPath: out.path))
        #expect(!FileManager.default.fileExists(atPath: QModel.checksumURL(for: out).path))
    }

    /// Control mode: the model's int8 greedy action among the allowed ones is applied and
    /// logged as `actor: model` with the model's action.
    @Test func controlRunLogsTheModelsActions() throws {
        let map = try LabTests.thermalMap()
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let shadow = dir.appendingPathComponent("shadow.sqlite").path
        var plant = ThermalLabPlant(seed: 5)
        _ = try Lab(map: map).run(&plant, steps: 1000, policy: .incumbent(dither: 0.1), seed: 5, logPath: shadow)
        var policy = CheckPolicy()
        policy.fqeUpdates = 0
        let (_, model) = try Retrainer(map: map, policy: policy).train(logPath: shadow, limits: RetrainLimits(steps: 200), warmStart: nil)
        let control = dir.appendingPathComponent("control.sqlite").path
        var plant2 = ThermalLabPlant(seed: 6)
        // The candidate carries the box of the states it was trained on, and every logged state is in it.
        let box = try #require(model.support)
        let trained = try ExperienceLog.open(path: shadow, create: false).transitions(window: .all).map(\.transition)
        #expect(trained.allSatisfy { t in t.state.withUnsafeBufferPointer { box.firstOutside($0, margin: 0) } == nil })
        #expect(zip(box.min, box.max).contains { $0 < $1 })
        let r = try Lab(map: map).run(&plant2, steps: 500, policy: .model(model), seed: 6, logPath: control)
        let rows = try ExperienceLog.open(path: control, create: false).transitions(window: .all).map(\.transition)
        #expect(rows.count == 500)
        // Outside the support (another weather seed) the incumbent acts (thermal.yaml has a
        // handover): those rows are the incumbent's, in shadow; every other row is the model's.
        let held = rows.filter { $0.mode == .shadow }
        #expect(r.modelDecisions + held.count == 500 && r.supportHeldTicks == held.count)
        #expect(held.allSatisfy { $0.actor == .incumbent && $0.action != nil })
        #expect(rows.filter { $0.mode == .control }.allSatisfy { $0.actor == .model && $0.action != nil && $0.action == $0.modelAction })
        // Only allowed actions are applied: the mask logged with each row is the next state's,
        // so the row after holds the mask the action was chosen under.
        for (t, u) in zip(rows, rows.dropFirst()) {
            guard let a = u.action, let m = t.nextMask else { continue }
            #expect(m & (1 << UInt64(a)) != 0, "action \(a) applied while masked out (mask \(m))")
        }
    }
}
