import EdgeQLab
import EdgeQLog
import EdgeQNet
@testable import EdgeQRetrain
import EdgeQTopicMap
import Foundation
import Testing

/// The candidate's checks fit the plant (issue 13, item 5): the value bound uses the discount
/// and n-step setting the learner trained with, and a check with nothing to judge says
/// `not_applicable`, never `passed`. Real logs written by the lab, real candidates from the
/// `Retrainer`.
@Suite struct RetrainChecksTests {
    static var root: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// The shipped cart-pole mapping (3-step returns, γ 0.99, +1 per step), or its text changed by `edit`.
    static func cartPoleMap(_ edit: (String) -> String = { $0 }) throws -> TopicMap {
        let path = root.appendingPathComponent("topics/cartpole.yaml").path
        let yaml = try String(contentsOfFile: path, encoding: .utf8)
        return try TopicMap.parse(yaml: edit(yaml), file: path)
    }

    /// A shadow log of the cart-pole's rule, dithered half the time.
    static func shadowLog(_ map: TopicMap, in dir: URL, name: String = "shadow.sqlite", steps: Int = 2000, seed: UInt64 = 1) throws -> String {
        let path = dir.appendingPathComponent(name).path
        var plant = CartPoleLabPlant(seed: seed)
        _ = try Lab(map: map).run(&plant, steps: steps, policy: .incumbent(dither: 0.5), seed: seed, logPath: path)
        return path
    }

    static func retrainer(_ map: TopicMap) -> Retrainer {
        var policy = CheckPolicy(map.learning)
        policy.fqeUpdates = 0
        return Retrainer(map: map, policy: policy)
    }

    static func check(_ report: RetrainReport, _ name: String) throws -> RetrainReport.Check {
        try #require(report.checks.first { $0.name == name }, "no check \(name) in \(report.checks.map(\.name))")
    }

    // MARK: the fitted Q evaluation

    /// `checks.fqe_updates` sizes the report's fitted Q evaluation through the mapping
    /// (`CheckPolicy(map.learning)`, as the gateway builds it): 0 leaves its figures out, a
    /// number runs it; the checks and the verdict do not depend on it.
    @Test func theMappingSizesOrSkipsTheFittedQEvaluation() throws {
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = try Self.shadowLog(try Self.cartPoleMap(), in: dir)
        var verdicts: [String] = []
        for (setting, expected) in [("0", false), ("none", false), ("300", true)] {
            let map = try Self.cartPoleMap { $0.replacingOccurrences(of: "learning:\n", with: "learning:\n  checks: {fqe_updates: \(setting)}\n") }
            #expect(CheckPolicy(map.learning).fqeUpdates == (expected ? 300 : 0))
            let (report, _) = try Retrainer(map: map, policy: CheckPolicy(map.learning)).train(logPath: log, limits: RetrainLimits(steps: 300), warmStart: nil)
            for name in ["fqe_candidate_reward_per_step", "fqe_behaviour_reward_per_step"] {
                #expect((report.figures[name] != nil) == expected, "fqe_updates \(setting): \(name) = \(String(describing: report.figures[name]))")
            }
            verdicts.append("\(report.verdict) \(report.checks.map { "\($0.name)=\($0.status.rawValue)" })")
        }
        #expect(Set(verdicts).count == 1, "\(verdicts)")
    }

    // MARK: q_within_bound

    /// A candidate trained with 3-step returns, whose values stay within max|r|/(1 − γ) = 100,
    /// passes; the limit is that bound × the slack, computed with the γ the learner used, and
    /// the note says which γ and n.
    @Test func aThreeStepCandidateWithinTheTrueBoundPasses() throws {
        let map = try Self.cartPoleMap()
        #expect(map.learning.nStep == 3)
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = try Self.shadowLog(map, in: dir)
        let (report, _) = try Self.retrainer(map).train(logPath: log, limits: RetrainLimits(steps: 1000), warmStart: nil)
        #expect(report.learner?.nStep == 3)
        #expect(report.learner?.gamma == 0.99)
        // Bootstrap values were clipped to the range of every return of +1 per step.
        let range = try #require(report.learner?.bootstrapRange)
        #expect(range.lowerBound == 0 && abs(range.upperBound - 100) < 1e-3, "\(range)")
        let c = try Self.check(report, "q_within_bound")
        #expect(c.status == .passed, "\(c.note)")
        let maxQ = try #require(c.value)
        #expect(maxQ > 0 && maxQ <= 100, "max |Q| \(maxQ) is not within the true bound 100")
        #expect(c.limit == 150)
        #expect(report.figures["q_bound"] == 100)
        #expect(c.note.contains("3-step"), "\(c.note)")
    }

    /// A model whose values are built to be out of bound (trained on the same plant with every
    /// reward × 100, so |Q| is far above 100) fails the bound of the real rewards, although
    /// the learner that carries it uses 3-step returns: n does not widen the bound.
    @Test func aCandidateWhoseValuesAreOutOfBoundFails() throws {
        let map = try Self.cartPoleMap()
        let scaled = try Self.cartPoleMap { $0.replacingOccurrences(of: "reward: step_reward ", with: "reward: step_reward * 100 ") }
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let scaledLog = try Self.shadowLog(scaled, in: dir, name: "scaled.sqlite")
        let (scaledReport, inflated) = try Self.retrainer(scaled).train(logPath: scaledLog, limits: RetrainLimits(steps: 1000), warmStart: nil)
        let scaledMax = try #require(try Self.check(scaledReport, "q_within_bound").value)
        #expect(scaledMax > 150, "the model built to be out of bound has max |Q| \(scaledMax)")
        // The same model, judged on the plant's real rewards (0 updates: the candidate is it).
        let log = try Self.shadowLog(map, in: dir)
        let (report, candidate) = try Self.retrainer(map).train(logPath: log, limits: RetrainLimits(steps: 0), warmStart: inflated)
        #expect(report.warmStart && report.updates == 0)
        #expect(candidate.parameters == inflated.parameters)
        let c = try Self.check(report, "q_within_bound")
        #expect(c.status == .failed, "\(c.note)")
        #expect(c.limit == 150)
        #expect((c.value ?? 0) > 150)
        #expect(report.verdict == "failed")
        #expect(report.reasons.contains { $0.hasPrefix("q_within_bound:") }, "\(report.reasons)")
    }

    /// The bound follows the discount the learner trains with: a mapping with γ 0.9 gives 10.
    @Test func theBoundUsesTheLearnersDiscount() throws {
        let map = try Self.cartPoleMap { $0.replacingOccurrences(of: "gamma: 0.99", with: "gamma: 0.9") }
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = try Self.shadowLog(map, in: dir)
        let (report, _) = try Self.retrainer(map).train(logPath: log, limits: RetrainLimits(steps: 200), warmStart: nil)
        #expect(report.learner?.gamma == 0.9)
        #expect(report.figures["q_bound"] == 10)
        #expect(try Self.check(report, "q_within_bound").limit == 15)
        #expect(Retrainer.valueBound(maxAbsReward: 2, gamma: 0.75) == 8)
        #expect(abs((report.learner?.bootstrapRange?.upperBound ?? 0) - 10) < 1e-4)
        // Costs (rewards ≤ 0) give [r_min/(1 − γ), 0]; mixed signs both ends; no rewards, no range.
        #expect(Retrainer.bootstrapRange(rewards: [-4, -1, 0], gamma: 0.75) == -16...0)
        #expect(Retrainer.bootstrapRange(rewards: [-1, 2], gamma: 0.5) == -2...4)
        #expect(Retrainer.bootstrapRange(rewards: [], gamma: 0.5) == nil)
    }

    // MARK: a deterministic incumbent

    /// The shipped cart-pole rule without dither logs one action per state region; dithered
    /// half the time, every region shows both actions. `ActionDiversity` (what `edgeq check
    /// --log` prints) tells them apart on real lab logs.
    @Test func aDeterministicIncumbentShowsNoActionDiversity() throws {
        let map = try Self.cartPoleMap()
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        func measure(dither: Double) throws -> ActionDiversity? {
            let path = dir.appendingPathComponent("d\(dither).sqlite").path
            var plant = CartPoleLabPlant(seed: 1)
            _ = try Lab(map: map).run(&plant, steps: 2000, policy: .incumbent(dither: dither), seed: 1, logPath: path)
            let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all).map(\.transition)
            return ActionDiversity.measure(rows, width: map.stateWidth, actionCount: map.actions.count)
        }
        let deterministic = try #require(try measure(dither: 0))
        let dithered = try #require(try measure(dither: 0.5))
        #expect(deterministic.probed == 500 && dithered.probed == 500)
        #expect(deterministic.singleActionShare > map.learning.maxUnsupported, "\(deterministic)")
        #expect(dithered.singleActionShare < 0.05, "\(dithered)")
        #expect(abs(deterministic.actionShare.reduce(0, +) - 1) < 1e-9)
        // No incumbent row: nothing to measure.
        #expect(ActionDiversity.measure([], width: map.stateWidth, actionCount: 2) == nil)
    }

    /// Why the shipped recipe has a conservative term: from the rule's undithered shadow log,
    /// a candidate without it fails `unsupported_actions` (values of the action the rule never
    /// takes there were never trained); with the shipped `cql_weight: 0.1` it passes and can be
    /// served, and exploration in control then shows the other action.
    @Test func fromADeterministicRulesLogOnlyTheConservativeCandidateIsServed() throws {
        let shipped = try Self.cartPoleMap()
        #expect(shipped.learning.cqlWeight == 0.1)
        let plain = try Self.cartPoleMap { $0.replacingOccurrences(of: "cql_weight: 0.1 ", with: "cql_weight: 0 ") }
        #expect(plain.learning.cqlWeight == 0)
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = dir.appendingPathComponent("rule.sqlite").path
        var plant = CartPoleLabPlant(seed: 1)
        _ = try Lab(map: shipped).run(&plant, steps: 2000, policy: .incumbent(dither: 0), seed: 1, logPath: log)
        let (without, _) = try Self.retrainer(plain).train(logPath: log, limits: RetrainLimits(steps: 1000), warmStart: nil)
        let unsupported = try Self.check(without, "unsupported_actions")
        #expect(unsupported.status == .failed, "\(without.checks.map { "\($0.name): \($0.note)" })")
        // The note names the cause, measured on the log's incumbent rows.
        #expect(unsupported.note.contains("the incumbent shows one action only (a deterministic incumbent)"), "\(unsupported.note)")
        #expect((without.figures["incumbent_single_action_share"] ?? 0) > 0.5, "\(without.figures)")
        #expect(without.verdict == "failed")
        let (with, _) = try Self.retrainer(shipped).train(logPath: log, limits: RetrainLimits(steps: 1000), warmStart: nil)
        #expect(with.verdict == "passed", "\(with.reasons)")
        // A dithered log: no such remark.
        let dithered = try Self.shadowLog(plain, in: dir, name: "dithered.sqlite")
        let (mixed, _) = try Self.retrainer(plain).train(logPath: dithered, limits: RetrainLimits(steps: 1000), warmStart: nil)
        #expect((mixed.figures["incumbent_single_action_share"] ?? 1) < 0.05, "\(mixed.figures)")
        #expect(!(try Self.check(mixed, "unsupported_actions").note.contains("deterministic")))
    }

    // MARK: incumbent agreement

    /// With `checks.agreement_tie` > 0, `incumbent_agreement` counts a held-out incumbent row as
    /// agreeing when the candidate picks the logged action or values it within τ =
    /// `agreement_tie` × the incumbent's 99.9th-percentile |r| of its pick (cart-pole, 0.05: 0.05 × 1). Every held-out row here
    /// is given the action the candidate does not pick: the strict share is 0, the tolerant share
    /// is exactly the rows whose value gap the candidate's own fp32 network puts within τ; with
    /// `agreement_tie: 0` (the default) the check is strict. τ's scale is the 99.9th percentile
    /// of the incumbent's |reward|: training rows a model decided (a trial block that wrecked the
    /// plant: |r| 40 here) and one such step of the incumbent's leave it at 0.05 × 1 — with the
    /// maximum over every row it was 0.05 × 40, and nearly every departure counted as a near-tie.
    @Test func aDepartureTheCandidateRatesBelowTheTieCountsAsAgreement() throws {
        let map = try Self.cartPoleMap()
        #expect(map.learning.agreementTie == 0 && CheckPolicy(map.learning).agreementTie == 0)
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = try Self.shadowLog(map, in: dir, steps: 3000)
        let (_, model) = try Self.retrainer(map).train(logPath: log, limits: RetrainLimits(steps: 300), warmStart: nil)
        let rows = try ExperienceLog.open(path: log, create: false).transitions(window: .all).map(\.transition)
        let train = Array(rows.prefix(2000)), candidates = Array(rows.dropFirst(2000))
        let fp32 = model.makeFloatEngine(), served = model.makeEngine(.mixed)
        // The action the candidate does not pick, and how much less it values it.
        let departures: [(row: EdgeQLog.Transition, gap: Double)] = candidates.compactMap { t in
            guard let pick = t.state.withUnsafeBufferPointer({ served.bestAction(state: $0) }) else { return nil }
            var row = t
            row.action = 1 - pick
            row.actor = .incumbent
            let q = fp32.qValues(t.state)
            return (row, Double(q[pick]) - Double(q[1 - pick]))
        }
        let tau = 0.05 * (train.map { abs($0.reward) }.max() ?? 0)
        #expect(tau == 0.05)
        let near = departures.filter { $0.gap <= tau }, clear = departures.filter { $0.gap > tau }
        try #require(near.count >= 20 && clear.count >= 20, "near-ties \(near.count), clear departures \(clear.count)")
        let held = Array(near.prefix(20).map(\.row) + clear.prefix(60).map(\.row))
        let network = try MLP(model.architecture, parameters: model.parameters)
        // The same training rows with a model's wrecked trial block among them.
        let wrecked: [EdgeQLog.Transition] = train.prefix(50).map { t in
            var row = t
            row.actor = .model
            row.reward = -40
            return row
        }
        var takeover = train[0]   // the incumbent taking over the wrecked plant: one costly step
        takeover.reward = -40
        takeover.actor = .incumbent
        for (training, withTrial) in [(train, false), (train + wrecked + [takeover], true)] {
            for (tie, expected) in [(0.05, 0.25), (0, 0.0)] {
                var policy = CheckPolicy(map.learning)
                policy.fqeUpdates = 0
                policy.agreementTie = tie
                var report = RetrainReport()
                Retrainer(map: map, policy: policy).check(model, network: network, held: held, train: training, normalization: model.normalization, into: &report)
                let c = try Self.check(report, "incumbent_agreement")
                #expect(c.value == expected, "agreement_tie \(tie), trial rows \(withTrial): \(c.note)")
                #expect(c.passed == false, "below 0.5 either way: \(c.note)")
                #expect(report.figures["incumbent_agreement_strict"] == 0)
                #expect(report.figures["incumbent_agreement_tie"] == tie)
                #expect(report.figures["incumbent_agreement_tie_scale"] == 1)
                #expect(c.note.contains(tie > 0 ? "(0.05 × 1, the 99.9th percentile of |reward| over the incumbent's training rows) of its pick, on 25.0% of 80 held-out rows (the logged action itself on 0.0%)"
                                        : "picks the incumbent's logged action on 0.0% of 80 held-out rows"), "\(c.note)")
            }
        }
        // No training row from the incumbent: the scale is every training row's.
        var policy = CheckPolicy(map.learning)
        policy.fqeUpdates = 0
        policy.agreementTie = 0.05
        var report = RetrainReport()
        Retrainer(map: map, policy: policy).check(model, network: network, held: held, train: wrecked, normalization: model.normalization, into: &report)
        #expect(report.figures["incumbent_agreement_tie_scale"] == 40)
        #expect(try Self.check(report, "incumbent_agreement").note.contains("(0.05 × 40, the 99.9th percentile of |reward| over the training rows: none is the incumbent's)"))
    }

    // MARK: nothing to judge

    /// A round logged entirely in control has no incumbent row: `incumbent_agreement` is not
    /// applicable (no value, `passed` null, named in `notJudged`), and the verdict comes from
    /// the checks that could be judged.
    @Test func aRoundLoggedEntirelyInControlLeavesIncumbentAgreementNotApplicable() throws {
        let map = try Self.cartPoleMap()
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let shadow = try Self.shadowLog(map, in: dir)
        let (_, model) = try Self.retrainer(map).train(logPath: shadow, limits: RetrainLimits(steps: 500), warmStart: nil)
        let control = dir.appendingPathComponent("control.sqlite").path
        var plant = CartPoleLabPlant(seed: 2)
        let run = try Lab(map: map).run(&plant, steps: 1500, policy: .model(model), seed: 2, logPath: control)
        #expect(run.modelDecisions == run.decisions)
        let (report, _) = try Self.retrainer(map).train(logPath: control, limits: RetrainLimits(steps: 200), warmStart: model)
        #expect(report.incumbentRows == 0)
        let c = try Self.check(report, "incumbent_agreement")
        #expect(c.status == .notApplicable)
        #expect(c.value == nil && c.passed == nil)
        #expect(c.note.contains("no held-out row from the incumbent"), "\(c.note)")
        #expect(report.figures["incumbent_agreement"] == nil)
        #expect(report.notJudged.contains { $0.hasPrefix("incumbent_agreement:") })
        #expect(!report.reasons.contains { $0.hasPrefix("incumbent_agreement") })
        // Every other check was judged on the control rows.
        let judged = report.checks.filter { $0.status != .notApplicable }.map(\.name)
        #expect(Set(judged) == ["quantization_agreement", "q_finite", "q_within_bound", "held_out_td_error", "unsupported_actions"])
    }

    /// With no held-out row and no training row, every check has nothing to judge: each is
    /// not applicable (none passes), and a candidate with no judged check fails.
    @Test func everyCheckWithNoRowsIsNotApplicable() throws {
        let map = try Self.cartPoleMap()
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = try Self.shadowLog(map, in: dir)
        let (_, model) = try Self.retrainer(map).train(logPath: log, limits: RetrainLimits(steps: 10), warmStart: nil)
        let network = try MLP(model.architecture, parameters: model.parameters)
        var report = RetrainReport()
        report.checks = []
        Self.retrainer(map).check(model, network: network, held: [], train: [], normalization: model.normalization, into: &report)
        let names = report.checks.map(\.name)
        #expect(names == ["quantization_agreement", "q_finite", "q_within_bound", "held_out_td_error", "incumbent_agreement", "unsupported_actions"])
        for c in report.checks {
            #expect(c.status == .notApplicable, "\(c.name): \(c.status) (\(c.note))")
            #expect(c.value == nil, "\(c.name) has a value with nothing to judge")
            #expect(!c.note.isEmpty)
        }
        Retrainer.judge(&report)
        #expect(report.verdict == "failed")
        #expect(report.reasons == ["no check could be judged"])
        #expect(report.notJudged.count == 6)
        // Nor does a figure measured on nothing read as 0 %: it is not a number, left out of the JSON.
        let json = try #require(JSONSerialization.jsonObject(with: report.json()) as? [String: Any])
        let figures = try #require(json["figures"] as? [String: Double])
        for name in ["incumbent_single_action_share", "quantization_agreement_strict", "quantization_agreement_within_tie", "quantization_max_regret", "int8_agreement_strict",
                     "mixed_fp32_share", "max_abs_q", "q_bound", "held_out_td_error", "incumbent_agreement", "unsupported_action_share",
                     "candidate_action_share_push_left", "candidate_action_share_push_right"] {
            #expect(figures[name] == nil, "\(name) = \(figures[name] ?? .nan) measured on no row")
        }
    }
}
