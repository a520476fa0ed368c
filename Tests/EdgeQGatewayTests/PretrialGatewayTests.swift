import EdgeQCore
@testable import EdgeQGateway
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

/// Judging a retrained candidate on the plant model before its switchback trial, in a running
/// gateway on a real broker with a closed-loop plant (`ClosedLoop`): the next x is 0.5 after
/// `a0` and 4 after `a1` (± noise), the incumbent picks at random, the mapping marks x
/// controlled and y exogenous, so every retraining fits a plant model and, under `promotion:
/// trial`, estimates the candidate against the incumbent's log on it.
@Suite struct PretrialGatewayTests {
    /// `testMapping` with roles, lenient checks, trials of 4-tick blocks; `modelReward`: the
    /// reward as the plant model sees it (the mapping's own, −|x|, when nil). The tick names the
    /// plant's `step` as its sequence, so a missed tick is told by the step numbers, not by the
    /// clock: on a loaded machine the intervals of this lock-step plant swing past 3 × their
    /// median and every such row was flagged `gap` (seen: "0 usable samples, need at least 40").
    static func mapping(modelReward: String?, distill: String? = nil) -> String {
        var yaml = testMapping(tick: "{trigger: plant/t/state, sequence: step}", extraLearning: (distill.map { "  distill: \($0)\n" } ?? "") + """
              checks: {quantization_agreement: 0, max_unsupported: 1, min_rows: 100}
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, min_pairs: 2, max_pairs: 20}, control_share: 0}
            """)
        yaml = yaml.replacingOccurrences(of: "json: x, range: [-10, 10]}", with: "json: x, range: [-10, 10], role: controlled}")
            .replacingOccurrences(of: "json: y, range: [-10, 10]}", with: "json: y, range: [-10, 10], role: exogenous}")
        if let modelReward { yaml += "\nmodel:\n  reward: \(modelReward)\n" }
        return yaml
    }

    func events(_ h: GatewayHarness, phase: String) -> [[String: Any]] {
        h.received.filter { $0.topic == "edgeq/t1/retrain" }.map(GatewayHarness.json).filter { $0["phase"] as? String == phase }
    }

    /// Logs `ticks` shadow ticks of the closed-loop plant, retrains, and returns the result event.
    func shadowThenRetrain(_ h: GatewayHarness, ticks: Int) throws -> [String: Any] {
        let plant = ClosedLoop(h, incumbent: TrialGatewayTests.randomIncumbent(seed: 5), dynamics: TrialGatewayTests.noisyPlant(seed: 6))
        try plant.run(ticks)
        usleep(400_000)  // the writer's group commit
        try h.command("retrain", #"{"steps":2000}"#)
        return try h.retrainResult(timeout: 120)
    }

    /// The gateway keeps the accepted plant model fit for the next retraining: a second one on a
    /// log grown by less than half the samples of the fit reuses it, and its result says so with
    /// the samples it was fitted on (promotion manual: no trial in between).
    @Test func aSecondRetrainingOnALittleMoreLogReusesThePlantModelFit() throws {
        let h = try GatewayHarness(yaml: Self.mapping(modelReward: nil).replacingOccurrences(of: "{policy: trial,", with: "{policy: manual,"))
        defer { h.stop() }
        let plant = ClosedLoop(h, incumbent: TrialGatewayTests.randomIncumbent(seed: 7), dynamics: TrialGatewayTests.noisyPlant(seed: 8))
        func retrain() throws -> [String: Any] {
            usleep(400_000)  // the writer's group commit
            try h.command("retrain", #"{"steps":500}"#)
            return try h.retrainResult(timeout: 120)
        }
        try plant.run(600)
        let first = try retrain()
        let firstModel = try #require(first["plant_model"] as? [String: Any], "\(first)")
        #expect(firstModel["chosen"] as? String != nil, "\(firstModel)")
        #expect(firstModel["reused"] as? Bool == false, "\(firstModel)")
        let fittedOn = try #require(firstModel["fitted_on_samples"] as? Int, "\(firstModel)")
        try plant.run(100)
        let second = try retrain()
        let secondModel = try #require(second["plant_model"] as? [String: Any], "\(second)")
        #expect(secondModel["reused"] as? Bool == true, "\(secondModel)")
        #expect(secondModel["fitted_on_samples"] as? Int == fittedOn, "\(secondModel)")
        #expect(secondModel["chosen"] as? String == firstModel["chosen"] as? String)
    }

    @Test func aCandidateTheModelPredictsBetterGoesToItsTrial() throws {
        let h = try GatewayHarness(yaml: Self.mapping(modelReward: nil))
        defer { h.stop() }
        let r = try shadowThenRetrain(h, ticks: 600)
        #expect(r["verdict"] as? String == "passed", "\(r)")
        let plantModel = try #require(r["plant_model"] as? [String: Any], "\(r)")
        #expect(plantModel["chosen"] as? String != nil, "\(plantModel)")
        let pretrial = try #require(r["pretrial"] as? [String: Any], "no pre-trial estimate: \(r)")
        #expect(pretrial["current"] as? String == "logged")
        // The learner's candidate picks a0 (x → 0.5) where the incumbent picks at random.
        #expect(pretrial["verdict"] as? String == "predicted_better", "\(pretrial)")
        #expect((pretrial["lower_bound"] as? Double ?? -1) > 0, "\(pretrial)")
        let version = try #require(r["version"] as? Int)
        let started = events(h, phase: "trial").filter { $0["event"] as? String == "started" }
        #expect(started.first?["version"] as? Int == version, "\(events(h, phase: "trial"))")
        #expect(events(h, phase: "trial").allSatisfy { $0["event"] as? String != "skipped" })
        // report.json beside the model keeps the estimate.
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: ModelStore(dataDirectory: h.dir.url).reportURL(version))) as? [String: Any]
        #expect((report?["pretrial"] as? [String: Any])?["verdict"] as? String == "predicted_better")
    }

    /// With `learning.distill` on, the retraining also distils a candidate from the planner on
    /// the plant model and offers the better of the two by the pre-trial estimate (on this plant
    /// both pick a0 everywhere: the same prediction, and the Q-learning one is kept): the result
    /// event and report.json say which was chosen and why, with the teacher agreement; the
    /// estimate in the result is the chosen candidate's (made once, not again before the trial).
    @Test func retrainingWithDistillationSaysWhichCandidateAndWhy() throws {
        let h = try GatewayHarness(yaml: Self.mapping(modelReward: nil, distill: "{enabled: true, horizon: 4, states: 300, updates: 3000}"))
        defer { h.stop() }
        let r = try shadowThenRetrain(h, ticks: 600)
        #expect(r["verdict"] as? String == "passed", "\(r)")
        let d = try #require(r["distill"] as? [String: Any], "no distill in the result: \(r)")
        #expect(d["skipped"] is NSNull, "\(d)")
        #expect(d["verdict"] as? String == "passed" && d["dqn_verdict"] as? String == "passed", "\(d)")
        let chosen = try #require(d["chosen"] as? String)
        #expect(["dqn", "distilled"].contains(chosen))
        #expect((d["why"] as? String ?? "").contains("the plant model predicts"), "\(d)")
        let agreement = try #require(d["agreement_held_out"] as? [String: Any], "\(d)")
        // a0 keeps x at 0.5, a1 drives it to 4: the teacher's best is a0 wherever it looks.
        #expect((agreement["strict"] as? Double ?? 0) >= 0.9, "\(agreement)")
        let estimate = try #require(d[chosen == "distilled" ? "pretrial" : "dqn_pretrial"] as? [String: Any])
        let pretrial = try #require(r["pretrial"] as? [String: Any], "\(r)")
        #expect(pretrial["mean_difference"] as? Double == estimate["mean_difference"] as? Double, "\(pretrial) vs \(estimate)")
        #expect(events(h, phase: "pretrial").isEmpty, "the estimate was made again: \(events(h, phase: "pretrial"))")
        let version = try #require(r["version"] as? Int)
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: ModelStore(dataDirectory: h.dir.url).reportURL(version))) as? [String: Any]
        let stored = try #require(report?["distill"] as? [String: Any])
        #expect(stored["chosen"] as? String == chosen)
        #expect(stored["agreement_held_out"] != nil && stored["checks"] != nil)
    }

    /// The plant model's reward is the opposite of the log's (+|x|): the candidate the learner
    /// builds to be better by the log (a0) is worse by the model, which keeps it out of the trial.
    @Test func aCandidateTheModelPredictsWorseGetsNoTrial() throws {
        let h = try GatewayHarness(yaml: Self.mapping(modelReward: "abs(x)"))
        defer { h.stop() }
        let r = try shadowThenRetrain(h, ticks: 600)
        #expect(r["verdict"] as? String == "passed", "\(r)")
        let pretrial = try #require(r["pretrial"] as? [String: Any], "no pre-trial estimate: \(r)")
        #expect(pretrial["verdict"] as? String == "predicted_worse", "\(pretrial)")
        #expect((pretrial["upper_bound"] as? Double ?? 1) < 0, "\(pretrial)")
        let version = try #require(r["version"] as? Int)
        let trial = events(h, phase: "trial")
        let skipped = try #require(trial.first { $0["event"] as? String == "skipped" }, "\(trial)")
        #expect(skipped["version"] as? Int == version)
        #expect((skipped["reason"] as? String ?? "").contains("predicts it worse than the incumbent"), "\(skipped)")
        #expect(!trial.contains { $0["event"] as? String == "started" }, "\(trial)")
        #expect(r["promoted"] as? Bool == false)
        #expect(h.gateway.servedVersion == nil)
        #expect(h.metric("edgeq_trial_active") == 0)
        // The candidate is kept (an operator may still promote it by name), not trialled.
        #expect(try ModelStore(dataDirectory: h.dir.url).versions().contains(version))
    }

    /// `promotion.pretrial_audit: 2`: of two candidates in a row the plant model predicts worse,
    /// the first is kept out and the second gets its trial anyway (event `audit`, then `started`),
    /// so a plant model that misjudges the plant cannot keep every later candidate from the trial.
    @Test func everyNthCandidatePredictedWorseGetsItsTrialAnyway() throws {
        let yaml = Self.mapping(modelReward: "abs(x)").replacingOccurrences(of: "control_share: 0}", with: "control_share: 0, pretrial_audit: 2}")
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        #expect(h.map.learning.pretrialAuditEvery == 2)
        let plant = ClosedLoop(h, incumbent: TrialGatewayTests.randomIncumbent(seed: 5), dynamics: TrialGatewayTests.noisyPlant(seed: 6))
        var versions: [Int] = []
        for ticks in [600, 200] {
            try plant.run(ticks)
            usleep(400_000)  // the writer's group commit
            try h.command("retrain", #"{"steps":2000}"#)
            let r = try h.retrainResult(timeout: 120)
            #expect((r["pretrial"] as? [String: Any])?["verdict"] as? String == "predicted_worse", "\(r)")
            versions.append(try #require(r["version"] as? Int, "\(r)"))
        }
        let trial = events(h, phase: "trial")
        #expect(trial.contains { $0["event"] as? String == "skipped" && $0["version"] as? Int == versions[0] }, "\(trial)")
        let audit = try #require(trial.first { $0["event"] as? String == "audit" }, "\(trial)")
        #expect(audit["version"] as? Int == versions[1])
        #expect((audit["reason"] as? String ?? "").contains("1 candidate was kept out in a row"), "\(audit)")
        #expect(trial.contains { $0["event"] as? String == "started" && $0["version"] as? Int == versions[1] }, "\(trial)")
    }
}
