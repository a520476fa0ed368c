import EdgeQCore
@testable import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQRetrain
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Testing

/// The exogenous baseline in a running gateway, against a real broker, the gateway's own SQLite
/// log and real model files: a baseline fitted on the gateway's shadow log is stored beside a
/// candidate (`baseline.json`), read with the model when its trial starts, run on the decision
/// thread, and the trial's events and `trial.json` say whether the trial was adjusted, with the
/// raw and the adjusted figures; `adjust: none` turns it off and says so.
@Suite struct TrialAdjustmentGatewayTests {
    /// testMapping with `y` exogenous (the "weather") and a reward it drives: 5·y − |x|.
    static func mapping(adjust: String, block: Int = 8) -> String {
        testMapping(extraLearning: """
              promotion: {policy: trial, min_agreement: 0, trial: {block: \(block), burn_in: 0, min_pairs: 2, max_pairs: 30, adjust: \(adjust)}, control_share: 0}
            """)
            .replacingOccurrences(of: "{name: y, topic: plant/t/state, json: y, range: [-10, 10]}",
                                  with: "{name: y, topic: plant/t/state, json: y, range: [-10, 10], role: exogenous}")
            .replacingOccurrences(of: "reward: -abs(x)", with: "reward: 5 * y - abs(x)")
    }

    /// After a0 the next x is 0.5, after a1 it is 4 (± 0.25); y is a level that jumps (seeded)
    /// about every 10 steps, whoever acts.
    static func weatherPlant(seed: UInt64) -> (ClosedLoop, Int) -> Void {
        var rng = SeededGenerator(seed: seed)
        var level = 0.0
        return { p, action in
            p.x = (action == 0 ? 0.5 : 4) + (rng.nextUnit() - 0.5) * 0.5
            if rng.nextUnit() < 0.1 { level = 3 * (2 * rng.nextUnit() - 1) }
            p.y = level
        }
    }

    static func randomIncumbent(seed: UInt64) -> (ClosedLoop) -> Int { TrialGatewayTests.randomIncumbent(seed: seed) }

    func trialEvents(_ h: GatewayHarness, _ event: String) -> [[String: Any]] { TrialGatewayTests().trialEvents(h, event) }

    @Test(arguments: ["exogenous", "none"])
    func theTrialAdjustsWithTheCandidatesStoredBaseline(adjust: String) throws {
        let h = try GatewayHarness(yaml: Self.mapping(adjust: adjust))
        defer { h.stop() }
        // The incumbent's shadow log: 400 ticks.
        let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 5), dynamics: Self.weatherPlant(seed: 6))
        try plant.run(400)
        try h.gateway.writer.flush(timeout: 10)
        let rows = try ExperienceLog.open(path: h.gateway.log.path, create: false).transitions(window: .all)
        // Fitted as a retraining fits it (on the map as loaded, whatever `adjust` says: here the
        // exogenous setting's fit, so that both runs store the same file).
        let fitted = ExogenousBaseline.fit(signals: ["y"], rows: rows, reference: .incumbent,
                                           settings: .init(block: 8, burnIn: 0))
        #expect(fitted.report.accepted, "\(fitted.report)")
        let candidate = try storeModel(favouring: 0, for: h.map, in: h.dir.url)
        let store = try ModelStore(dataDirectory: h.dir.url)
        try DurableFile.write(fitted.json(), to: store.baselineURL(candidate))

        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        try h.gateway.control.sync { try h.gateway.startTrial(candidate) }
        try plant.run(until: { trialEvents(h, "progress").contains { ($0["pairs"] as? Int ?? 0) >= 2 } || !trialEvents(h, "verdict").isEmpty })
        let event = try #require((trialEvents(h, "progress") + trialEvents(h, "verdict")).last { ($0["pairs"] as? Int ?? 0) >= 1 })
        let adjustment = try #require(event["adjustment"] as? [String: Any], "\(event)")
        #expect(adjustment["accepted"] as? Bool == true && adjustment["held_out_variance_ratio"] is Double, "\(adjustment)")
        let note = try #require(adjustment["note"] as? String)
        let raw = try #require(event["raw_mean_difference"] as? Double, "\(event)")
        let decided = try #require(event["mean_difference"] as? Double, "\(event)")
        if adjust == "exogenous" {
            #expect(event["adjusted"] as? Bool == true, "\(event)")
            #expect(note.hasPrefix("adjusted by the exogenous baseline of y"), "\(note)")
            // The weather differs between the blocks of a pair: the adjustment moves the figure.
            #expect(decided != raw, "\(event)")
        } else {
            #expect(event["adjusted"] as? Bool == false, "\(event)")
            #expect(note.contains("learning.promotion.trial.adjust: none"), "\(note)")
            #expect(decided == raw, "\(event)")
        }

        // The verdict file says the same (a trial cut short by the test is abandoned at stop).
        try plant.run(until: { !trialEvents(h, "verdict").isEmpty }, atMost: 60)
        if let verdict = trialEvents(h, "verdict").first {
            let file = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: store.trialURL(candidate))) as? [String: Any])
            #expect(file["adjusted"] as? Bool == (adjust == "exogenous") && verdict["adjusted"] as? Bool == (adjust == "exogenous"), "\(file)")
            #expect(file["raw_ci_low"] != nil && file["cost"] is Double, "\(file)")
        }
    }

    /// The trial's baseline goes on from the end of the gateway's log (the control queue runs it
    /// over the log's last rows when the trial starts), not from rest: the first block's baseline
    /// sum in the trial's record is what an evaluator fed every logged row in order predicts for
    /// that block's rows — which one started at the trial's first tick does not.
    @Test func theTrialsBaselineGoesOnFromTheLogNotFromRest() throws {
        let yaml = Self.mapping(adjust: "exogenous", block: 20).replacingOccurrences(of: "min_pairs: 2,", with: "min_pairs: 4,")
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 45), dynamics: Self.weatherPlant(seed: 46))
        try plant.run(400)
        try h.gateway.writer.flush(timeout: 10)
        let before = try ExperienceLog.open(path: h.gateway.log.path, create: false).transitions(window: .all)
        let fitted = ExogenousBaseline.fit(signals: ["y"], rows: before, reference: .incumbent, settings: .init(block: 20, burnIn: 0))
        try #require(fitted.report.accepted, "\(fitted.report)")
        let model = try #require(fitted.usable)
        let candidate = try storeModel(favouring: 0, for: h.map, in: h.dir.url)
        let store = try ModelStore(dataDirectory: h.dir.url)
        try DurableFile.write(fitted.json(), to: store.baselineURL(candidate))
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        try h.gateway.writer.flush(timeout: 10)
        let n = try ExperienceLog.open(path: h.gateway.log.path, create: false).transitions(window: .all).count
        try h.gateway.control.sync { try h.gateway.startTrial(candidate) }
        try plant.run(until: { FileManager.default.fileExists(atPath: store.runningTrialURL(candidate).path) || !trialEvents(h, "verdict").isEmpty })
        let record = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: store.runningTrialURL(candidate))) as? [String: Any])
        let first = try #require((record["blocks"] as? [[String: Any]])?.first, "\(record)")
        let recorded = try #require(first["baseline"] as? Double)
        #expect(first["ticks"] as? Int == 20 && first["skipped"] as? Int == 0, "\(first)")
        try h.gateway.writer.flush(timeout: 10)
        let rows = try ExperienceLog.open(path: h.gateway.log.path, create: false).transitions(window: .all)
        try #require(rows.count >= n + 21)
        // Row n closed at the trial's first tick (opened before it: not the trial's); rows
        // n+1 … n+20 are its first block.
        var warm = try BaselineEvaluator(model: model, loggedSignalNames: h.map.loggedSignalNames)
        var rest = try BaselineEvaluator(model: model, loggedSignalNames: h.map.loggedSignalNames)
        var warmSum = 0.0, restSum = 0.0
        for (j, row) in rows.prefix(n + 21).enumerated() {
            let next = try #require(row.transition.nextSignals)
            let w = warm.advance(next)
            if j >= n {
                let r = rest.advance(next)
                if j > n { warmSum += w; restSum += r }
            }
        }
        #expect(abs(recorded - warmSum) < 1e-6, "the trial's first block baseline \(recorded), warm \(warmSum), at rest \(restSum)")
        #expect(abs(restSum - warmSum) > 1e-3, "at rest and warm agree: the test cannot tell them apart (\(restSum))")
    }

    /// The stop-loss in an adjusted trial whose candidate's block comes first: the yardstick is
    /// the incumbent's rate over its last block in the gateway's log less the candidate's
    /// baseline (the control queue replays the log through it when the trial starts), at the
    /// share — so a candidate that loses 3.5 a tick below its baseline is stopped inside its first
    /// block, and the verdict says the deficit was adjusted and measured before the trial.
    @Test func anAdjustedTrialsFirstCandidateBlockIsMeasuredAgainstTheLogLessTheBaseline() throws {
        let yaml = Self.mapping(adjust: "exogenous", block: 20)
            .replacingOccurrences(of: "min_pairs: 2, max_pairs: 30,", with: "min_pairs: 2, max_pairs: 30, early_stop: false,")
        let config = try TopicMap.parse(yaml: yaml, file: "test.yaml").learning.trial
        #expect(config.stopLoss == 0.5 && config.earlyStop == false)
        // Model 1 of a fresh store against the incumbent: a gateway seed that draws its block first.
        let seed = try #require(try (UInt64(1)...64).first {
            try SwitchbackTrial(config: config, seed: GatewaySeeds.trial($0, candidate: 1, reference: nil)).arm == .candidate
        })
        let h = try GatewayHarness(yaml: yaml) { $0.seed = seed }
        defer { h.stop() }
        // The incumbent always a0 (x ≈ 0.5); mild weather (y within ±0.2, a block's raw return
        // −30 … +10): the baseline explains the reward's moves.
        var rng = SeededGenerator(seed: 26)
        var level = 0.0
        let plant = ClosedLoop(h, incumbent: { _ in 0 }) { p, action in
            p.x = (action == 0 ? 0.5 : 4) + (rng.nextUnit() - 0.5) * 0.5
            if rng.nextUnit() < 0.1 { level = 0.2 * (2 * rng.nextUnit() - 1) }
            p.y = level
        }
        try plant.run(400)
        try h.gateway.writer.flush(timeout: 10)
        let rows = try ExperienceLog.open(path: h.gateway.log.path, create: false).transitions(window: .all)
        let fitted = ExogenousBaseline.fit(signals: ["y"], rows: rows, reference: .incumbent, settings: .init(block: 20, burnIn: 0))
        try #require(fitted.report.accepted, "\(fitted.report)")
        let candidate = try storeModel(favouring: 1, for: h.map, in: h.dir.url)
        #expect(candidate == 1)
        let store = try ModelStore(dataDirectory: h.dir.url)
        try DurableFile.write(fitted.json(), to: store.baselineURL(candidate))

        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        let before = plant.acted.count
        try h.gateway.control.sync { try h.gateway.startTrial(candidate) }
        try plant.run(until: { !trialEvents(h, "verdict").isEmpty })
        let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(plant.acted.count) ticks")
        #expect(verdict["verdict"] as? String == "reject" && verdict["adjusted"] as? Bool == true && verdict["pairs"] as? Int == 0, "\(verdict)")
        let hit = try #require(verdict["stop_loss_hit"] as? [String: Any], "\(verdict)")
        #expect(hit["before_trial"] as? Bool == true && hit["adjusted"] as? Bool == true && hit["spread_known"] as? Bool == false, "\(hit)")
        let deficit = try #require(hit["deficit"] as? Double), limit = try #require(hit["limit"] as? Double)
        let scored = try #require(hit["scored_ticks"] as? Int)
        // 3.5 a tick against a limit of one block's raw return (0.5 × 2, no pairs' spread yet).
        #expect(deficit > limit && scored < 20 && abs(deficit - 3.5 * Double(scored)) < 0.25 * deficit, "\(hit)")
        let reason = verdict["reason"] as? String ?? ""
        #expect(reason.contains("the controller in charge's rate before the trial") && reason.contains("rewards less their exogenous baseline"), "\(reason)")
        let candidateTicks = plant.acted.dropFirst(before).filter { $0 == .gateway(1) }.count
        #expect(candidateTicks <= scored + 2, "the candidate acted \(candidateTicks) ticks, stopped after \(scored)")
    }

    /// A retraining on a log too short for the baseline's held-out check (300 ticks make 2
    /// placebo pairs of two 60-tick blocks; 8 are needed): with `adjust: exogenous` its candidate
    /// is stored but kept out of the trial, and the event says why; with `adjust: none` the same
    /// candidate goes to an unadjusted trial.
    @Test(arguments: ["exogenous", "none"])
    func aCandidateWhoseBaselineNeedsALongerLogWaitsForALaterRetraining(adjust: String) throws {
        let h = try GatewayHarness(yaml: Self.mapping(adjust: adjust, block: 60))
        defer { h.stop() }
        let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 15), dynamics: Self.weatherPlant(seed: 16))
        try plant.run(300)
        usleep(400_000)  // the writer's group commit
        try h.command("retrain", #"{"steps":500}"#)
        let done = try h.retrainResult(timeout: 120)
        try #require(done["verdict"] as? String == "passed", "the candidate must pass its checks for this test: \(done)")
        let baseline = try #require(done["baseline"] as? [String: Any], "\(done)")
        #expect(baseline["accepted"] as? Bool == false, "\(baseline)")
        if adjust == "exogenous" {
            #expect((baseline["reason"] as? String ?? "").hasPrefix("too few rows:") && baseline["needs_longer_log"] as? Bool == true, "\(baseline)")
            let skipped = try #require(trialEvents(h, "skipped").first, "\(h.received.map(\.topic))")
            #expect(skipped["version"] as? Int == done["version"] as? Int)
            #expect((skipped["reason"] as? String ?? "").contains("too short to check the trial's exogenous baseline"), "\(skipped)")
            #expect(trialEvents(h, "started").isEmpty && trialEvents(h, "queued").isEmpty)
        } else {
            let started = try #require(trialEvents(h, "started").first, "\(h.received.map(\.topic))")
            #expect(started["version"] as? Int == done["version"] as? Int)
            #expect(trialEvents(h, "skipped").isEmpty)
        }
    }
}
