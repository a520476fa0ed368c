import EdgeQLog
import EdgeQModel
import EdgeQNet
import EdgeQTopicMap
import Foundation

/// What distillation did in a retraining (`learning.distill`, docs/learning.md "Distillation in
/// retraining"): the teacher, the student's training, its agreement with the teacher, its
/// checks and pre-trial estimate, and which candidate the retraining offers and why. In
/// report.json as `distill` (snake_case keys).
public struct DistillReport: Codable, Sendable {
    /// Agreement of the served network with the teacher (`Distillation.agreement`), rounded
    /// for reading.
    public typealias Agreement = Distillation.Agreement

    /// The candidate the retraining offers: `dqn` (the Q-learning candidate) or `distilled`.
    public var chosen = "dqn"
    /// Why that one (or why no distilled candidate was made).
    public var why = ""
    /// Why no distilled candidate was made (plant model refused, teacher not applicable, too
    /// few states valued in time); nil when one was made.
    public var skipped: String?
    /// Set when the time limit (`seconds` of the retraining) ended the teacher or the training
    /// early: what was cut.
    public var stoppedEarly: String?
    /// The plant model the teacher planned on.
    public var model: String?
    /// The teacher's horizon (ticks) and whether its blocks were relaxed to average levels.
    public var horizon = 0
    /// See `horizon`.
    public var relaxed = false
    /// Logged states the teacher valued (training + held out), the most it was allowed, and the
    /// stride over the training rows.
    public var statesValued = 0
    /// See `statesValued`.
    public var statesLimit = 0
    /// See `statesValued`.
    public var every = 1
    /// Of the valued states: the newest fifth, held out from the student's training, where the
    /// agreement is measured.
    public var heldOutStates = 0
    /// States left out because the teacher's values were not finite (the model reward could not
    /// be evaluated on a prediction).
    public var nonFiniteStates = 0
    /// Seconds the teacher took.
    public var teacherSeconds = 0.0
    /// The student's updates made and asked for, its seconds and its loss (teacher's units²).
    public var updates = 0
    /// See `updates`.
    public var updatesLimit = 0
    /// See `updates`.
    public var trainSeconds = 0.0
    /// See `updates`.
    public var trainLoss: Double?
    /// Agreement of the served (int8/mixed) distilled network with its teacher on the held-out
    /// states, and on the training states.
    public var agreementHeldOut: Agreement?
    /// See `agreementHeldOut`.
    public var agreementTrain: Agreement?
    /// The distilled candidate's checks (the retraining's own checks) and their verdict.
    public var verdict: String?
    /// See `verdict`.
    public var reasons: [String] = []
    /// See `verdict`.
    public var checks: [RetrainReport.Check] = []
    /// The Q-learning candidate's verdict (the report's own when it is chosen).
    public var dqnVerdict: String?
    /// The pre-trial estimates of both candidates against the current controller (made when both
    /// passed their checks; the choice reads them).
    public var pretrial: PretrialEstimate.Report?
    /// See `pretrial`.
    public var dqnPretrial: PretrialEstimate.Report?

    /// An empty report.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case chosen, why, skipped, stoppedEarly = "stopped_early", model, horizon, relaxed, statesValued = "states_valued",
             statesLimit = "states_limit", every, heldOutStates = "held_out_states", nonFiniteStates = "non_finite_states",
             teacherSeconds = "teacher_seconds", updates, updatesLimit = "updates_limit", trainSeconds = "train_seconds",
             trainLoss = "train_loss", agreementHeldOut = "agreement_held_out", agreementTrain = "agreement_train",
             verdict, reasons, checks, dqnVerdict = "dqn_verdict", pretrial, dqnPretrial = "dqn_pretrial"
    }
}

extension Distillation.Agreement {
    /// The figures rounded for reading (as report.json keeps them).
    public func roundedForReading() -> Distillation.Agreement {
        Distillation.Agreement(states: states, strict: EdgeQRetrain.roundedForReading(strict), tolerant: EdgeQRetrain.roundedForReading(tolerant),
                               tolerance: EdgeQRetrain.roundedForReading(tolerance), meanRegret: EdgeQRetrain.roundedForReading(meanRegret),
                               maxRegret: EdgeQRetrain.roundedForReading(maxRegret), teacherNearTies: EdgeQRetrain.roundedForReading(teacherNearTies))
    }
}

extension Retrainer {
    /// The distilled candidate of a retraining and its report (checks judged, not yet chosen).
    struct Distilled {
        var model: QModel
        var report: RetrainReport
    }

    /// Distils a second candidate (docs/learning.md, "Distillation in retraining"): the planner
    /// on `model` values the training rows' states (`PlanTeacher` with the mapping's model
    /// reward), a network of the mapping's hidden layers is regressed on the values and quantized
    /// (`Distillation.train`), its agreement with the teacher is measured on the newest fifth of
    /// the valued states, and it gets the retraining's checks on the same held-out rows as the
    /// Q-learning candidate. The teacher gets 60 % of the time left before `deadline`, the
    /// training the rest; either stops early when its share is spent.
    ///
    /// Returns nil (with `info.skipped` set) when no candidate could be made.
    func distil(rows rowsAll: [LoggedTransition], heldStart: Int, trainCount: Int, model: any PlantModel,
                base: RetrainReport, train: [EdgeQLog.Transition], held: [EdgeQLog.Transition], deadline: Date?,
                info: inout DistillReport, progress: (Progress) -> Void, shouldStop: () -> Bool) throws -> Distilled? {
        let d = map.learning.distill
        info.model = model.description
        info.horizon = d.horizon
        info.statesLimit = d.states
        info.updatesLimit = d.updates
        let teacher: PlanTeacher
        do {
            teacher = try PlanTeacher(map: map, model: model, horizon: d.horizon)
        } catch {
            info.skipped = "no teacher for this mapping: \(error)"
            return nil
        }
        info.relaxed = teacher.configuration.relaxed
        info.every = max(trainCount / max(d.states, 1), 1)
        progress(Progress(phase: "distill_teacher", updates: 0, of: d.states, tdLoss: nil))
        let t0 = Date()
        let teacherDeadline = deadline.map { t0.addingTimeInterval(max($0.timeIntervalSince(t0), 0) * 0.6) }
        var teacherCut = false
        let samples: [PlanTeacher.Sample]
        do {
            samples = try teacher.samples(rows: rowsAll, every: info.every, limit: d.states, include: { $0 < heldStart }, shouldStop: {
                if shouldStop() { return true }
                if let teacherDeadline, Date() >= teacherDeadline { teacherCut = true; return true }
                return false
            })
        } catch {
            info.skipped = "the teacher could not value the log's states: \(error)"
            return nil
        }
        if shouldStop() { throw RetrainError("retraining abandoned: the gateway is stopping", kind: .stopped) }
        info.teacherSeconds = roundedForReading(Date().timeIntervalSince(t0), significant: 4)
        let examples = samples.map(\.example).filter { $0.values.allSatisfy(\.isFinite) }
        info.nonFiniteStates = samples.count - examples.count
        info.statesValued = samples.count
        if teacherCut {
            info.stoppedEarly = "the teacher valued \(samples.count) of up to \(d.states) states before its share (60 %) of the time limit ran out"
        }
        guard examples.count >= 10 else {
            info.skipped = "the teacher valued \(examples.count) states with finite values (need 10)"
                + (teacherCut ? " before its share of the time limit ran out: give the retraining more seconds or lower learning.distill.horizon" : ": the log has too few usable rows, or the model reward is not finite on the predictions")
            return nil
        }
        // Held out by time: the newest fifth of the valued states.
        let heldCount = max(examples.count / 5, 1)
        let trainExamples = Array(examples.dropLast(heldCount))
        let heldExamples = Array(examples.suffix(heldCount))
        info.heldOutStates = heldExamples.count

        progress(Progress(phase: "distill_training", updates: 0, of: d.updates, tdLoss: nil))
        let t1 = Date()
        var trainCut = false
        let config = Distillation.Configuration(hidden: map.learning.hidden, updates: d.updates, seed: seed)
        let result: Distillation.Result
        do {
            result = try Distillation.train(trainExamples, actionNames: map.actions.map(\.name), configuration: config,
                                            training: ["teacher": "planner (horizon \(d.horizon)) on \(model.description)", "gateway": map.gateway.id,
                                                       "gamma": String(map.learning.gamma), "rows": String(base.rows)],
                                            shouldStop: {
                                                if shouldStop() { return true }
                                                if let deadline, Date() >= deadline { trainCut = true; return true }
                                                return false
                                            })
        } catch {
            info.skipped = "the student could not be trained: \(error)"
            return nil
        }
        if shouldStop() { throw RetrainError("retraining abandoned: the gateway is stopping", kind: .stopped) }
        info.trainSeconds = roundedForReading(Date().timeIntervalSince(t1), significant: 4)
        info.updates = result.updates
        info.trainLoss = result.trainLoss.isFinite ? roundedForReading(result.trainLoss) : nil
        if trainCut {
            info.stoppedEarly = (info.stoppedEarly.map { $0 + "; " } ?? "")
                + "the student made \(result.updates) of \(d.updates) updates before the time limit ran out"
        }
        // Near-ties: 1 % of the spread of the teacher's state values (0.039 on the heater,
        // where the lab reads agreement within 0.03).
        let tolerance = 0.01 * result.valueSpread
        info.agreementHeldOut = Distillation.agreement(result.model, precision: policy.servedPrecision, on: heldExamples, tolerance: tolerance).roundedForReading()
        info.agreementTrain = Distillation.agreement(result.model, precision: policy.servedPrecision, on: trainExamples, tolerance: tolerance).roundedForReading()

        progress(Progress(phase: "distill_checking", updates: result.updates, of: d.updates, tdLoss: nil))
        var report = base
        check(result.model, held: held, train: train, normalization: result.model.normalization, into: &report)
        Self.judge(&report)
        info.verdict = report.verdict
        info.reasons = report.reasons
        info.checks = report.checks
        return Distilled(model: result.model, report: report)
    }

    /// Chooses between the Q-learning candidate (`report`, `candidate`) and the distilled one:
    /// the one that passed its checks when only one did; when both did, the one the plant model
    /// predicts the higher return for against the current controller (`PretrialEstimate`, the
    /// same starts for both), the Q-learning one when the estimate cannot tell them apart (not
    /// applicable, or equal). The chosen candidate's checks, verdict and figures become the
    /// report's; `info` says which and why.
    func choose(report: inout RetrainReport, candidate: inout QModel, distilled: Distilled, info: inout DistillReport,
                model: any PlantModel, data: PlantData?, warmStart: QModel?) {
        info.dqnVerdict = report.verdict
        let dqnPassed = report.passed, distPassed = distilled.report.passed
        var pickDistilled = false
        switch (dqnPassed, distPassed) {
        case (false, false):
            info.why = "neither candidate passed its checks: the Q-learning candidate's report stands"
        case (false, true):
            pickDistilled = true
            info.why = "only the distilled candidate passed its checks"
        case (true, false):
            info.why = "the distilled candidate failed its checks (\(distilled.report.reasons.joined(separator: "; ")))"
        case (true, true):
            guard let data else {
                info.why = "both passed their checks; no plant data to estimate them on: the Q-learning candidate is kept"
                break
            }
            let estimate = PretrialEstimate(map: map, model: model, data: data, settings: .init(map: map))
            let current: PretrialEstimate.Current = warmStart.map { .network($0) } ?? .logged
            let q = estimate.estimate(candidate: candidate, current: current)
            let p = estimate.estimate(candidate: distilled.model, current: current)
            info.dqnPretrial = q
            info.pretrial = p
            if q.verdict == .notApplicable || p.verdict == .notApplicable {
                info.why = "both passed their checks; the pre-trial estimate cannot compare them (\(p.reason ?? q.reason ?? "not applicable")): the Q-learning candidate is kept"
            } else {
                pickDistilled = p.meanDifference > q.meanDifference
                let which = p.meanDifference == q.meanDifference ? "the same return for both (the Q-learning candidate is kept)"
                    : "the \(pickDistilled ? "distilled" : "Q-learning") candidate better"
                let numbers = "predicted return against the \(warmStart == nil ? "logged actions" : "served model"): distilled \(String(format: "%+.4g", p.meanDifference)), Q-learning \(String(format: "%+.4g", q.meanDifference)) (mean paired difference over \(p.runs) runs of \(p.horizon) ticks)"
                info.why = "both passed their checks; the plant model predicts \(which): " + numbers
            }
            report.pretrial = pickDistilled ? p : q
        }
        report.figures["distilled_candidate"] = pickDistilled ? 1 : 0
        guard pickDistilled else { return }
        info.chosen = "distilled"
        candidate = distilled.model
        report.checks = distilled.report.checks
        report.reasons = distilled.report.reasons
        report.notJudged = distilled.report.notJudged
        report.verdict = distilled.report.verdict
        // The checks' figures are the distilled candidate's; the Q-learning training's own
        // (train_td_loss, …) stay under their names.
        for (k, v) in distilled.report.figures { report.figures[k] = v }
        report.figures["distilled_candidate"] = 1
    }
}
