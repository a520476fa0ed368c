import EdgeQCore
@testable import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQRetrain
import EdgeQTestSupport
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
