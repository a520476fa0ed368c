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
    /// The rounds of the student on the plant model asked for (`learning.distill.rounds`) and
    /// made, and the visited states the teacher valued in them (training states beside the
    /// logged ones). Nil in a report written before the rounds existed.
    public var rounds: Int?
    /// See `rounds`.
    public var roundsMade: Int?
    /// See `rounds`.
    public var studentStates: Int?
    /// Why no round ran although rounds were asked for (the plant data or the model world
    /// missing); nil otherwise.
    public var roundsSkipped: String?
    /// Seconds the teacher took (the logged states and the rounds).
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
    /// The distilled candidate's checks and their verdict: the retraining's checks of the network
    /// itself, `incumbent_agreement` and `unsupported_actions` advisory (reported, not used),
    /// `teacher_agreement` and `pretrial_estimate`.
    public var verdict: String?
    /// See `verdict`.
    public var reasons: [String] = []
    /// See `verdict`.
    public var checks: [RetrainReport.Check] = []
    /// The Q-learning candidate's verdict (the report's own when it is chosen).
    public var dqnVerdict: String?
    /// The pre-trial estimate of the distilled candidate against the current controller (its
    /// `pretrial_estimate` check), and of the Q-learning candidate when both passed their checks
    /// (the choice reads both).
    public var pretrial: PretrialEstimate.Report?
    /// See `pretrial`.
    public var dqnPretrial: PretrialEstimate.Report?

    /// An empty report.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case chosen, why, skipped, stoppedEarly = "stopped_early", model, horizon, relaxed, statesValued = "states_valued",
             statesLimit = "states_limit", every, heldOutStates = "held_out_states", nonFiniteStates = "non_finite_states",
             rounds, roundsMade = "rounds_made", studentStates = "student_states", roundsSkipped = "rounds_skipped", teacherSeconds = "teacher_seconds", updates, updatesLimit = "updates_limit", trainSeconds = "train_seconds",
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
        /// The box of the states the student was trained on: the logged states the teacher
        /// valued and the states it visited on the plant model (docs/learning.md, "The teacher
        /// in control"); nil when none.
        var taughtStates: StateSupport?
    }

    /// The checks that keep a model-free candidate near the incumbent's logged behaviour. A
    /// candidate distilled from the plant model's planner departs from it by design (the
    /// planner chooses what the log never shows, because the model predicts what it does), so
    /// for it they are reported and not used (`advisory`).
    public static let supportChecks: Set<String> = ["incumbent_agreement", "unsupported_actions"]

    /// Why a distilled candidate's support checks are advisory (`RetrainReport.Check.advisory`).
    public static let modelBasedAdvisory = "model-based candidate: judged by teacher agreement, the pre-trial estimate and the trial"

    /// Distils a second candidate (docs/learning.md, "Distillation in retraining"): the planner
    /// on `model` values the training rows' states (`PlanTeacher` with the mapping's model
    /// reward), a network of the mapping's hidden layers is regressed on the values and quantized
    /// (`Distillation.train`), its agreement with the teacher is measured on the newest fifth of
    /// the valued states, and it gets the checks that fit a model-based candidate
    /// (`judgeModelBased`) on the same held-out rows as the Q-learning candidate. The teacher
    /// gets 60 % of the time left before `deadline`, the training the rest; either stops early
    /// when its share is spent.
    ///
    /// - Parameters:
    ///   - data: the plant data the model was fitted on (the pre-trial estimate's starts).
    ///   - warmStart: the served model (the controller the estimate compares with; nil: the
    ///     logged actions).
    /// - Returns: nil (with `info.skipped` set) when no candidate could be made.
    func distil(rows rowsAll: [LoggedTransition], heldStart: Int, trainCount: Int, model: any PlantModel, data: PlantData?,
                warmStart: QModel?, base: RetrainReport, train: [EdgeQLog.Transition], held: [EdgeQLog.Transition], deadline: Date?,
                info: inout DistillReport, progress: (Progress) -> Void, shouldStop: () -> Bool) throws -> Distilled? {
        let d = map.learning.distill
        info.model = model.description
        info.horizon = d.horizon
        info.statesLimit = d.states
        info.updatesLimit = d.updates
        info.rounds = d.rounds
        info.roundsMade = 0
        info.studentStates = 0
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
        // The rounds on the model (DAgger): each values up to half of `states` visited states.
        let roundStates = d.rounds > 0 ? max(d.states / 2, 1) : 0
        var clock = DistillClock(deadline: deadline, teacherSeconds: d.teacherSeconds, loggedStates: d.states, rounds: d.rounds,
                                 roundStates: roundStates)
        let t0 = Date()
        let loggedLimit = clock.teacherPass(states: d.states)
        var teacherCut = false
        let samples: [PlanTeacher.Sample]
        do {
            // Newest first: a teacher stopped by a time limit has valued the newest states.
            samples = try teacher.samples(rows: rowsAll, every: info.every, limit: d.states, include: { $0 < heldStart }, newestFirst: true,
                                          shouldStop: {
                if shouldStop() { return true }
                if let loggedLimit, Date() >= loggedLimit { teacherCut = true; return true }
                return false
            })
        } catch {
            info.skipped = "the teacher could not value the log's states: \(error)"
            return nil
        }
        if shouldStop() { throw RetrainError("retraining abandoned: the gateway is stopping", kind: .stopped) }
        clock.teacherSpent(Date().timeIntervalSince(t0))
        info.teacherSeconds = roundedForReading(Date().timeIntervalSince(t0), significant: 4)
        let examples = samples.map(\.example).filter { $0.values.allSatisfy(\.isFinite) }
        info.nonFiniteStates = samples.count - examples.count
        info.statesValued = samples.count
        if teacherCut {
            info.stoppedEarly = "the teacher valued \(samples.count) of up to \(d.states) states before \(clock.limitSaid) ran out"
        }
        guard examples.count >= 10 else {
            info.skipped = "the teacher valued \(examples.count) states with finite values (need 10)"
                + (teacherCut ? " before \(clock.limitSaid) ran out: "
                    + (clock.byOwnLimit ? "raise learning.distill.teacher_seconds or lower learning.distill.horizon" : "give the retraining more seconds or lower learning.distill.horizon")
                   : ": the log has too few usable rows, or the model reward is not finite on the predictions")
            return nil
        }
        // Held out by time: the newest fifth of the valued states.
        let heldCount = max(examples.count / 5, 1)
        let trainExamples = Array(examples.dropLast(heldCount))
        let heldExamples = Array(examples.suffix(heldCount))
        info.heldOutStates = heldExamples.count

        let config = Distillation.Configuration(hidden: map.learning.hidden, updates: d.updates, seed: seed)
        let trainingMeta = ["teacher": "planner (horizon \(d.horizon)) on \(model.description)", "gateway": map.gateway.id,
                            "gamma": String(map.learning.gamma), "rows": String(base.rows)]
        /// One training of the student on `examples` (its share of the retraining's time).
        func trainStudent(_ examples: [Distillation.Example]) throws -> (result: Distillation.Result, cut: Bool) {
            let limit = clock.training()
            var cut = false
            let result = try Distillation.train(examples, actionNames: map.actions.map(\.name), configuration: config, training: trainingMeta,
                                                shouldStop: {
                                                    if shouldStop() { return true }
                                                    if let limit, Date() >= limit { cut = true; return true }
                                                    return false
                                                })
            return (result, cut)
        }
        progress(Progress(phase: "distill_training", updates: 0, of: d.updates, tdLoss: nil))
        let t1 = Date()
        var result: Distillation.Result
        var trainCut: Bool
        do {
            (result, trainCut) = try trainStudent(trainExamples)
        } catch {
            info.skipped = "the student could not be trained: \(error)"
            return nil
        }
        if shouldStop() { throw RetrainError("retraining abandoned: the gateway is stopping", kind: .stopped) }
        var trainSeconds = Date().timeIntervalSince(t1)

        // DAgger on the model: the student's own states, valued by the teacher, and the student
        // trained again on everything valued so far.
        var visited: [Distillation.Example] = []
        var world: ModelWorld?
        if d.rounds > 0 {
            if let data {
                do { world = try ModelWorld(map: map, model: model, data: data) } catch { info.roundsSkipped = "the model world cannot run: \(error)" }
            } else {
                info.roundsSkipped = "no plant data to start the student's runs from"
            }
        }
        if let world {
            let visits = StudentVisits(world: world)
            let every = 4
            let runs = max((roundStates + (d.horizon / every) - 1) / max(d.horizon / every, 1), 1)
            for round in 1...d.rounds {
                progress(Progress(phase: "distill_round", updates: round, of: d.rounds, tdLoss: nil))
                let tr = Date()
                let limit = clock.teacherPass(states: roundStates)
                var cut = false
                let stop = {
                    if shouldStop() { return true }
                    if let limit, Date() >= limit { cut = true; return true }
                    return false
                }
                let seen = visits.visits(student: result.model, precision: policy.servedPrecision, runs: runs, horizon: d.horizon, every: every,
                                         limit: roundStates, heldOutSamples: held.count, seed: seed &+ UInt64(round), shouldStop: stop)
                let valued = (try? teacher.values(of: seen, exogenousNames: world.data.exogenousNames, shouldStop: stop)) ?? []
                clock.teacherSpent(Date().timeIntervalSince(tr))
                info.teacherSeconds = roundedForReading(info.teacherSeconds + Date().timeIntervalSince(tr), significant: 4)
                let fresh = valued.filter { $0.values.allSatisfy(\.isFinite) }
                info.nonFiniteStates += valued.count - fresh.count
                visited += fresh
                info.studentStates = visited.count
                info.roundsMade = round
                if shouldStop() { throw RetrainError("retraining abandoned: the gateway is stopping", kind: .stopped) }
                if cut {
                    info.stoppedEarly = (info.stoppedEarly.map { $0 + "; " } ?? "")
                        + "round \(round) of the student on the model valued \(fresh.count) of up to \(roundStates) visited states before \(clock.limitSaid) ran out"
                }
                guard !fresh.isEmpty else { break }
                let tt = Date()
                let again: (result: Distillation.Result, cut: Bool)
                do {
                    again = try trainStudent(trainExamples + visited)
                } catch {
                    break   // the student of the round before stands
                }
                if shouldStop() { throw RetrainError("retraining abandoned: the gateway is stopping", kind: .stopped) }
                trainSeconds += Date().timeIntervalSince(tt)
                // A training cut short by the time limit does not replace a whole one.
                if again.cut && !trainCut { break }
                (result, trainCut) = again
                if cut { break }
            }
        }
        info.trainSeconds = roundedForReading(trainSeconds, significant: 4)
        info.updates = result.updates
        info.trainLoss = result.trainLoss.isFinite ? roundedForReading(result.trainLoss) : nil
        if trainCut {
            info.stoppedEarly = (info.stoppedEarly.map { $0 + "; " } ?? "")
                + "the student made \(result.updates) of \(d.updates) updates before the time limit ran out"
        }
        // Near-ties: 1 % of the spread of the teacher's state values (0.039 on the heater,
        // where the lab reads agreement within 0.03).
        let tolerance = 0.01 * result.valueSpread
        let heldAgreement = Distillation.agreement(result.model, precision: policy.servedPrecision, on: heldExamples, tolerance: tolerance)
        info.agreementHeldOut = heldAgreement.roundedForReading()
        info.agreementTrain = Distillation.agreement(result.model, precision: policy.servedPrecision, on: trainExamples, tolerance: tolerance).roundedForReading()

        progress(Progress(phase: "distill_checking", updates: result.updates, of: d.updates, tdLoss: nil))
        var report = base
        check(result.model, held: held, train: train, normalization: result.model.normalization, into: &report)
        judgeModelBased(result.model, teacherAgreement: heldAgreement, model: model, data: data, warmStart: warmStart, into: &report)
        Self.judge(&report)
        info.verdict = report.verdict
        info.reasons = report.reasons
        info.checks = report.checks
        info.pretrial = report.pretrial
        let taught = StateSupport.fit(rows: (trainExamples + visited).lazy.map(\.state), inputCount: map.stateWidth)
        return Distilled(model: result.model, report: report, taughtStates: taught)
    }

    /// The checks that fit a candidate distilled from an accepted plant model, after the
    /// retraining's own (`check`): the checks of the network itself stay as they are; the
    /// support checks (`supportChecks`) become advisory; and it must pass
    /// - `teacher_agreement`: on the held-out valued states the student picks the teacher's best
    ///   action or one the teacher values within the near-tie tolerance of its best, on at least
    ///   `policy.minTeacherAgreement` of them (`checks.teacher_agreement`);
    /// - `pretrial_estimate`: the plant model does not predict it worse than the controller in
    ///   charge (`PretrialEstimate`, verdict not `predicted_worse`: the upper confidence bound of
    ///   the mean paired return difference is not below 0). The estimate is kept in
    ///   `report.pretrial`, so the gateway does not make it again before the trial. Not
    ///   applicable (skipped, with the estimate's reason) when it cannot be made.
    func judgeModelBased(_ candidate: QModel, teacherAgreement a: Distillation.Agreement, model: any PlantModel, data: PlantData?,
                         warmStart: QModel?, into report: inout RetrainReport) {
        report.checks = report.checks.map { Self.supportChecks.contains($0.name) ? $0.madeAdvisory(Self.modelBasedAdvisory) : $0 }

        let limit = policy.minTeacherAgreement
        if a.states == 0 {
            report.checks.append(.notApplicable("teacher_agreement", limit: limit, note: "no held-out valued state to compare the student with its teacher on"))
        } else {
            report.figures["teacher_agreement"] = a.tolerant
            report.figures["teacher_agreement_strict"] = a.strict
            report.checks.append(.judged("teacher_agreement", value: a.tolerant, limit: limit, passed: a.tolerant >= limit,
                                         note: String(format: "picks the teacher's best action, or one the teacher values within %.3g of its best, on %.1f%% of %d held-out valued states (the teacher's best %.1f%%, mean regret %.3g)",
                                                      a.tolerance, a.tolerant * 100, a.states, a.strict * 100, a.meanRegret)))
        }

        guard let data else {
            report.checks.append(.notApplicable("pretrial_estimate", limit: 0, note: "no plant data to start the estimate's runs from"))
            return
        }
        let estimate = PretrialEstimate(map: map, model: model, data: data, settings: .init(map: map))
        let p = estimate.estimate(candidate: candidate, current: warmStart.map { .network($0) } ?? .logged)
        report.pretrial = p
        let against = warmStart == nil ? "the logged actions" : "the served model"
        if p.verdict == .notApplicable {
            report.checks.append(.notApplicable("pretrial_estimate", limit: 0, note: "the pre-trial estimate cannot be made: \(p.reason ?? "not applicable")"))
        } else {
            report.checks.append(.judged("pretrial_estimate", value: p.upperBound, limit: 0, passed: p.verdict != .predictedWorse,
                                         note: String(format: "the plant model's upper %.3g bound of the mean return difference against %@ (must not be below 0: not predicted worse); mean %+.4g over %d runs of %d ticks, %@",
                                                      p.confidence, against, p.meanDifference, p.runs, p.horizon, p.verdict.rawValue)))
        }
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
            report.pretrial = distilled.report.pretrial
        case (true, false):
            info.why = "the distilled candidate failed its checks (\(distilled.report.reasons.joined(separator: "; ")))"
        case (true, true):
            guard let data, let p = distilled.report.pretrial else {
                info.why = "both passed their checks; no plant data to estimate them on: the Q-learning candidate is kept"
                break
            }
            // The distilled candidate's estimate was made for its `pretrial_estimate` check; the
            // Q-learning one's is made here, on the same starts.
            let estimate = PretrialEstimate(map: map, model: model, data: data, settings: .init(map: map))
            let current: PretrialEstimate.Current = warmStart.map { .network($0) } ?? .logged
            let q = estimate.estimate(candidate: candidate, current: current)
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
        report.advisory = distilled.report.advisory
        report.pretrial = distilled.report.pretrial
        report.verdict = distilled.report.verdict
        // The checks' figures are the distilled candidate's; the Q-learning training's own
        // (train_td_loss, …) stay under their names.
        for (k, v) in distilled.report.figures { report.figures[k] = v }
        report.figures["distilled_candidate"] = 1
    }
}

/// The time limits of one distillation (`Retrainer.distil`): the teacher's own limit
/// (`learning.distill.teacher_seconds`) shared over its passes (the logged states, then each
/// round on the model) in proportion to the states each may value, and the retraining's limit
/// (`seconds`) shared over every pass: 60 % to the teacher's passes (by their states), 40 % to
/// the student's trainings (one per pass). Each share is taken of what is left when the pass
/// begins, so time a pass did not use goes to the later ones.
struct DistillClock {
    let deadline: Date?
    let teacherSeconds: Double?
    let totalStates: Int
    let totalTrainings: Int
    /// The teacher's states still to be asked for, the trainings still to come.
    var statesLeft: Int
    var trainingsLeft: Int
    var teacherUsed = 0.0
    /// Which limit the last teacher pass ran to.
    var byOwnLimit = false

    init(deadline: Date?, teacherSeconds: Double?, loggedStates: Int, rounds: Int, roundStates: Int) {
        self.deadline = deadline
        self.teacherSeconds = teacherSeconds
        totalStates = max(loggedStates + rounds * roundStates, 1)
        totalTrainings = rounds + 1
        statesLeft = totalStates
        trainingsLeft = totalTrainings
    }

    /// The weight of a teacher pass of `states` and of one training under the retraining's
    /// limit, and of everything still to come.
    private func weight(states: Int) -> Double { 0.6 * Double(states) / Double(totalStates) }
    private var trainingWeight: Double { 0.4 / Double(totalTrainings) }
    private var weightLeft: Double { weight(states: statesLeft) + trainingWeight * Double(trainingsLeft) }

    /// The end of the retraining's share for a pass of `weight` (nil: no retraining limit).
    private func sharedEnd(_ w: Double, now: Date) -> Date? {
        deadline.map { now.addingTimeInterval(max($0.timeIntervalSince(now), 0) * min(w / max(weightLeft, w, 1e-9), 1)) }
    }

    /// The end of a teacher pass that may value `states` (nil: no limit).
    mutating func teacherPass(states: Int) -> Date? {
        let now = Date()
        let own = teacherSeconds.map { now.addingTimeInterval(max($0 - teacherUsed, 0) * Double(states) / Double(max(statesLeft, states, 1))) }
        let shared = sharedEnd(weight(states: states), now: now)
        statesLeft = max(statesLeft - states, 0)
        switch (shared, own) {
        case let (s?, o?): byOwnLimit = o < s; return min(s, o)
        case let (nil, o?): byOwnLimit = true; return o
        case let (s, nil): byOwnLimit = false; return s
        }
    }

    /// Records seconds a teacher pass took.
    mutating func teacherSpent(_ seconds: Double) { teacherUsed += seconds }

    /// The end of the next training of the student (nil: no limit).
    mutating func training() -> Date? {
        let end = sharedEnd(trainingWeight, now: Date())
        trainingsLeft = max(trainingsLeft - 1, 0)
        return end
    }

    /// The limit the last teacher pass ran to, for people.
    var limitSaid: String {
        byOwnLimit ? "its own time limit (learning.distill.teacher_seconds, \(teacherSeconds.map { String(format: "%g", $0) } ?? "none") s)"
                   : "its share of the retraining's time limit"
    }
}
