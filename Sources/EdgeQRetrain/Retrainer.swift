import EdgeQCore
import EdgeQLearner
import EdgeQLog
import EdgeQModel
import EdgeQNet
import EdgeQTopicMap
import Foundation

/// Limits of one retraining (from `cmd/retrain` or the schedule).
public struct RetrainLimits: Sendable, Equatable {
    /// Gradient updates (default: the mapping file's `updates_per_retrain`).
    public var steps: Int?
    /// Wall-clock budget in seconds (training stops early when it is spent).
    public var seconds: Double?
    /// Use only the last N rows of the log.
    public var window: Int?

    public init(steps: Int? = nil, seconds: Double? = nil, window: Int? = nil) {
        self.steps = steps
        self.seconds = seconds
        self.window = window
    }
}

/// The thresholds of the candidate's checks. Defaults follow docs/operations.md; the
/// support limit comes from the mapping file (`promotion.min_agreement`).
public struct CheckPolicy: Sendable, Equatable {
    /// The precision the gateway will serve the candidate with (`edgeq run --precision`):
    /// the agreement check measures that path against fp32.
    public var servedPrecision: Precision = .mixed
    /// The served path and fp32 must pick the same action on at least this share of
    /// held-out states …
    public var minQuantizationAgreement = 0.99
    /// … where, when the pure int8 path is served (`Precision.int8`), int8's pick also counts
    /// when fp32 values it within this share of the largest one-step |reward| of its own best
    /// (a near-tie: by fp32's own estimate the int8 choice loses less discounted return than
    /// this share of one bad step). 0: strict argmax agreement. `Precision.mixed` (the
    /// default) is held to strict agreement: it asks fp32 on int8's near-ties.
    public var quantizationTieTolerance = 0.05
    /// |Q| may exceed the bound the reward range and discount imply, max|r| / (1 − γ), by at
    /// most this factor.
    public var qBoundSlack = 1.5
    /// The candidate must pick the incumbent's logged action on at least this share of
    /// held-out incumbent rows (support: how far it departs from the logged behaviour) …
    public var minAgreement = 0.5
    /// … where a row also counts when the candidate (by its fp32 values) values the logged action
    /// within τ of its own pick, τ being this share of the 99.9th percentile of one-step |reward|
    /// over the incumbent's training rows (all training rows when none is the incumbent's;
    /// `Retrainer.agreementTieScale`): a departure the candidate itself rates at less than that
    /// is not a departure from the logged behaviour
    /// (`checks.agreement_tie`; 0, the default: strict). The strict share is the figure
    /// `incumbent_agreement_strict`, τ is `incumbent_agreement_tie`, its scale
    /// `incumbent_agreement_tie_scale`.
    public var agreementTie = 0.0
    /// At most this share of held-out states may get an action the log never shows among
    /// the 10 nearest logged states.
    public var maxUnsupported = 0.25
    /// A candidate distilled from the plant model's planner (`learning.distill`) must pick the
    /// teacher's best action, or one the teacher values within the near-tie tolerance of its
    /// best, on at least this share of the held-out valued states (`teacher_agreement`).
    public var minTeacherAgreement = 0.9
    /// Rows needed to train at all.
    public var minRows = 200
    /// Gradient updates of each fitted Q evaluation (the off-policy estimate reported beside
    /// the direct method; 0 skips it). Reported, not a check. The mapping's
    /// `checks.fqe_updates`.
    public var fqeUpdates = 4000
    /// The plant model (docs/learning.md, "The plant model"): fitted on at most this many of
    /// the newest logged samples when the mapping marks a signal `role: controlled`; 0 skips
    /// it. Reported (`plantModel`), not a check: a refused model only skips the model steps.
    public var plantModelSamples = 20_000
    /// A plant model fit kept from an earlier retraining (`PlantModelFit`) is reused until the
    /// usable samples logged since it reach this share of the samples it was fitted on: with
    /// 0.5, fits happen at about ×1.5 growth of the log, and every `plantModelSamples` / 2 new
    /// samples once the cap is reached. 0 refits every time.
    public var plantModelRefitShare = 0.5

    public init() {}

    /// The limits a mapping file's `learning.checks` and `promotion.min_agreement` set.
    public init(_ l: LearningConfig) {
        minQuantizationAgreement = l.minQuantizationAgreement
        qBoundSlack = l.qBoundSlack
        minAgreement = l.minAgreement
        maxUnsupported = l.maxUnsupported
        agreementTie = l.agreementTie
        minTeacherAgreement = l.minTeacherAgreement
        minRows = l.minRows
        fqeUpdates = l.fqeUpdates
    }
}

/// One retraining's report: every figure, every check and the verdict; stored beside the
/// model as report.json and published on `<prefix>/retrain`.
///
/// Check values, limits and figures are rounded to 6 significant digits for reading (the
/// comparison with the limit is made before rounding). A check that has nothing to be judged
/// on (e.g. `incumbent_agreement` with no incumbent row held out) is `not_applicable`: it
/// neither passes nor fails, and the report names it in `notJudged`. A check that was measured
/// and reported but is not used for this candidate (`incumbent_agreement` and
/// `unsupported_actions` of a candidate distilled from the plant model) is `advisory`: its
/// figure and limit are there, `withinLimit` says which side of the limit it is on, `advisory`
/// says why it is not used, and the report names it in `advisory`. The verdict is `passed`
/// when no judged check failed and at least one check was judged.
public struct RetrainReport: Codable, Sendable {
    /// One check: its figure, its limit, and how it was judged.
    public struct Check: Codable, Sendable {
        /// How a check was judged.
        public enum Status: String, Codable, Sendable {
            /// The figure is within its limit.
            case passed
            /// The figure is beyond its limit: the candidate is not served.
            case failed
            /// Nothing to judge it on (no rows of the kind it measures): skipped, not failed.
            case notApplicable = "not_applicable"
            /// Measured and reported, not used for the verdict (`Check.advisory` says why).
            case advisory
        }
        /// The check's name (`quantization_agreement`, `q_finite`, …, docs/operations.md).
        public var name: String
        /// The figure (rounded); nil when not applicable or not a finite number.
        public var value: Double?
        /// The limit (rounded).
        public var limit: Double
        /// How it was judged.
        public var status: Status
        /// What was measured, on how many rows, in words.
        public var note: String
        /// For an advisory check: whether the figure is within its limit (what it would have
        /// been judged). Nil for the other statuses (`status` says it).
        public var withinLimit: Bool?
        /// For an advisory check: why it was reported and not used. Nil otherwise.
        public var advisory: String?

        /// true passed, false failed, nil not applicable or advisory (not used).
        public var passed: Bool? {
            switch status {
            case .passed: return true
            case .failed: return false
            case .notApplicable, .advisory: return nil
            }
        }

        /// A judged check; `value` and `limit` are rounded for reading, `passed` was decided
        /// on the exact figures.
        public static func judged(_ name: String, value: Double, limit: Double, passed: Bool, note: String) -> Check {
            Check(name: name, value: value.isFinite ? roundedForReading(value) : nil, limit: roundedForReading(limit),
                  status: passed ? .passed : .failed, note: note)
        }

        /// A check with nothing to judge it on.
        public static func notApplicable(_ name: String, limit: Double, note: String) -> Check {
            Check(name: name, value: nil, limit: roundedForReading(limit), status: .notApplicable, note: note)
        }

        /// This check reported and not used, for `reason`: a judged check becomes `advisory`
        /// (its figure and limit kept, `withinLimit` its judgement); a not-applicable one stays
        /// as it is (it has nothing to report).
        public func madeAdvisory(_ reason: String) -> Check {
            guard status == .passed || status == .failed else { return self }
            var c = self
            c.withinLimit = status == .passed
            c.status = .advisory
            c.advisory = reason
            return c
        }

        init(name: String, value: Double?, limit: Double, status: Status, note: String) {
            self.name = name
            self.value = value
            self.limit = limit
            self.status = status
            self.note = note
        }

        enum CodingKeys: String, CodingKey {
            case name, value, limit, status, passed, note, advisory
            case withinLimit = "within_limit"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            value = try c.decodeIfPresent(Double.self, forKey: .value)
            limit = try c.decode(Double.self, forKey: .limit)
            note = try c.decodeIfPresent(String.self, forKey: .note) ?? ""
            withinLimit = try c.decodeIfPresent(Bool.self, forKey: .withinLimit)
            advisory = try c.decodeIfPresent(String.self, forKey: .advisory)
            if let s = try c.decodeIfPresent(Status.self, forKey: .status) {
                status = s
            } else {
                // Reports written before `status` existed: `passed` alone.
                status = try c.decode(Bool.self, forKey: .passed) ? .passed : .failed
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(value, forKey: .value)   // null when not applicable
            try c.encode(limit, forKey: .limit)
            try c.encode(status, forKey: .status)
            try c.encode(passed, forKey: .passed)   // null when not applicable or advisory
            try c.encode(note, forKey: .note)
            if status == .advisory {
                try c.encode(withinLimit, forKey: .withinLimit)
                try c.encode(advisory, forKey: .advisory)
            }
        }
    }

    public var verdict: String = "failed"
    public var reasons: [String] = []
    public var checks: [Check] = []
    /// Checks that could not be judged (status `not_applicable`), with why.
    public var notJudged: [String] = []
    /// Checks reported and not used for the verdict (status `advisory`): "name: why not used".
    public var advisory: [String] = []
    public var figures: [String: Double] = [:]
    public var rows: Int = 0
    public var incumbentRows: Int = 0
    /// Rows flagged `gap` (ticks were missed between their two states) left out: not one step.
    public var gapRowsExcluded: Int = 0
    public var trainRows: Int = 0
    public var heldOutRows: Int = 0
    public var updates: Int = 0
    public var seconds: Double = 0
    public var warmStart: Bool = false
    /// The learner's hyperparameters as trained (from the mapping's `learning` section).
    public var learner: DQNConfig?
    public var version: Int?
    public var started: Double = Date().timeIntervalSince1970
    /// The plant model fitted beside the candidate: each class's held-out free-run error
    /// against persistence, which class was chosen, or why it was refused. Nil when no fit ran
    /// (`plantModelSkipped` says why).
    public var plantModel: PlantFitReport?
    /// Why no plant model was fitted (no `role: controlled` signal, too few samples, …);
    /// nil when one was fitted or the mapping asks for none.
    public var plantModelSkipped: String?
    /// The candidate judged on the plant model before its switchback trial (promotion
    /// `trial`): its predicted return against the controller in charge. A candidate predicted
    /// worse (`predicted_worse`) gets no trial. Nil when no estimate was made.
    public var pretrial: PretrialEstimate.Report?
    /// Model rollouts (`learning.rollouts`): what the plant model added to the replay, or why
    /// nothing (`rolloutsSkipped`); nil when rollouts are off.
    public var rollouts: ModelRollouts.Summary?
    /// Why `learning.rollouts` added nothing (the plant model was not accepted, the mapping
    /// cannot be judged on a model); nil when rollouts ran or are off.
    public var rolloutsSkipped: String?
    /// Distillation (`learning.distill`): the teacher, the distilled candidate's agreement,
    /// checks and estimate, and which candidate was chosen and why; nil when distillation is off.
    public var distill: DistillReport?

    /// The verdict is `passed`.
    public var passed: Bool { verdict == "passed" }

    /// An empty report (verdict `failed` until `Retrainer.judge` sets it).
    public init() {}

    enum CodingKeys: String, CodingKey {
        case verdict, reasons, checks, notJudged, advisory, figures, rows, incumbentRows, trainRows, heldOutRows, updates, seconds, warmStart,
             learner, version, started, plantModel, plantModelSkipped, pretrial, distill, rollouts, rolloutsSkipped
    }

    /// Decodes a report; keys added after a report was written take their defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        verdict = try c.decodeIfPresent(String.self, forKey: .verdict) ?? "failed"
        reasons = try c.decodeIfPresent([String].self, forKey: .reasons) ?? []
        checks = try c.decodeIfPresent([Check].self, forKey: .checks) ?? []
        notJudged = try c.decodeIfPresent([String].self, forKey: .notJudged) ?? []
        advisory = try c.decodeIfPresent([String].self, forKey: .advisory) ?? []
        figures = try c.decodeIfPresent([String: Double].self, forKey: .figures) ?? [:]
        rows = try c.decodeIfPresent(Int.self, forKey: .rows) ?? 0
        incumbentRows = try c.decodeIfPresent(Int.self, forKey: .incumbentRows) ?? 0
        trainRows = try c.decodeIfPresent(Int.self, forKey: .trainRows) ?? 0
        heldOutRows = try c.decodeIfPresent(Int.self, forKey: .heldOutRows) ?? 0
        updates = try c.decodeIfPresent(Int.self, forKey: .updates) ?? 0
        seconds = try c.decodeIfPresent(Double.self, forKey: .seconds) ?? 0
        warmStart = try c.decodeIfPresent(Bool.self, forKey: .warmStart) ?? false
        learner = try c.decodeIfPresent(DQNConfig.self, forKey: .learner)
        version = try c.decodeIfPresent(Int.self, forKey: .version)
        started = try c.decodeIfPresent(Double.self, forKey: .started) ?? 0
        plantModel = try c.decodeIfPresent(PlantFitReport.self, forKey: .plantModel)
        plantModelSkipped = try c.decodeIfPresent(String.self, forKey: .plantModelSkipped)
        pretrial = try c.decodeIfPresent(PretrialEstimate.Report.self, forKey: .pretrial)
        distill = try c.decodeIfPresent(DistillReport.self, forKey: .distill)
        rollouts = try c.decodeIfPresent(ModelRollouts.Summary.self, forKey: .rollouts)
        rolloutsSkipped = try c.decodeIfPresent(String.self, forKey: .rolloutsSkipped)
    }

    /// JSON text (sorted keys). Figures that are not finite numbers (a figure that could not
    /// be computed) are left out: JSON has no NaN.
    public func json() -> Data {
        var copy = self
        copy.figures = figures.filter { $0.value.isFinite }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        if let data = try? e.encode(copy) { return data }
        // A non-finite number in the plant model's or the estimate's report: keep the rest.
        copy.plantModel = nil
        copy.pretrial = nil
        copy.distill?.pretrial = nil
        copy.distill?.dqnPretrial = nil
        if let data = try? e.encode(copy) { return data }
        copy.distill = nil
        return (try? e.encode(copy)) ?? Data("{}".utf8)
    }
}

/// `x` rounded to `significant` digits, so that it prints short (150, not
/// 149.99999999999986); non-finite values are returned as they are.
public func roundedForReading(_ x: Double, significant: Int = 6) -> Double {
    guard x.isFinite, x != 0 else { return x }
    return Double(String(format: "%.\(significant)g", x)) ?? x
}

/// Errors that stop a retraining before a candidate exists.
public struct RetrainError: Error, Sendable, CustomStringConvertible {
    /// What stopped it.
    public enum Kind: Sendable, Equatable {
        /// Too few usable transitions in the log: let the gateway log longer.
        case notEnoughData
        /// The experience log could not be opened or read.
        case logUnreadable
        /// The candidate model could not be written.
        case writeFailed
        /// The learner or the quantization could not be set up (a mapping the network cannot take).
        case setup
        /// Abandoned because the gateway is stopping.
        case stopped
    }

    /// What stopped it.
    public let kind: Kind
    /// What went wrong and what to do.
    public let description: String

    public init(_ description: String, kind: Kind = .setup) {
        self.kind = kind
        self.description = description
    }
}

/// The retraining pipeline (docs/operations.md, "Retraining"): read the log, build the
/// replay, train Double DQN (with the conservative term on the incumbent's rows), quantize,
/// check, store.
///
/// Runs wherever it is called (the gateway calls it on a low-priority background thread;
/// `edgeq train` in the foreground). It reads the log through its own connection and never
/// blocks the decision path.
public struct Retrainer: Sendable {
    public let map: TopicMap
    public let policy: CheckPolicy
    public var seed: UInt64 = 1
    /// Whose log rows the trial's exogenous baseline is fitted on (ExogenousBaseline.swift); nil
    /// (the default): none is fitted — only the gateway, whose candidates go to its own trial,
    /// stores and uses one (`edgeq train` and the fleet learner would throw it away; the gateway
    /// fits a fleet model's with `fitBaseline(logPath:limits:)`).
    public var baselineReference: ExogenousBaseline.Reference?
    /// Why this retraining fits no plant model although the mapping marks controlled signals;
    /// nil (the default): it fits one as `CheckPolicy.plantModelSamples` says. Set by a caller
    /// that would not use the model (the fleet learner without `learning.distill`: the pre-trial
    /// estimate is each gateway's own): the report's `plantModelSkipped` says this instead of a
    /// fit that costs most of the retraining (on cart-pole, 48 s of 49.5 s at 20,000 samples).
    public var plantModelOff: String?
    /// Which log rows the candidate's support (the states it acts in, `safety.support_margin`)
    /// is fitted on; nil (the default): every usable row. The gateway leaves out the rows of
    /// models that never passed a trial or were removed by the guard (`SupportRows`).
    public var supportRows: SupportRows?

    public init(map: TopicMap, policy: CheckPolicy? = nil) {
        self.map = map
        self.policy = policy ?? CheckPolicy(map.learning)
    }

    /// Progress of a running retraining.
    public struct Progress: Sendable {
        public var phase: String
        public var updates: Int
        public var of: Int
        public var tdLoss: Double?
    }

    /// Trains a candidate from the log at `logPath` and checks it. On success, the model
    /// file is written to `output` (with its checksum file beside it).
    ///
    /// - Parameters:
    ///   - warmStart: the served model, whose weights and normalisation are the starting point.
    ///   - shouldStop: polled between updates; true abandons the run (`RetrainError`).
    /// - Returns: the report (verdict passed or failed with reasons).
    /// - Throws: `RetrainError` when there is too little data or the log cannot be read.
    public func run(logPath: String, limits: RetrainLimits, warmStart: QModel?, output: URL,
                    progress: (Progress) -> Void = { _ in }, shouldStop: () -> Bool = { false }) throws -> RetrainReport {
        try runWithPlantModel(logPath: logPath, limits: limits, warmStart: warmStart, output: output,
                              progress: progress, shouldStop: shouldStop).report
    }

    /// `run`, also returning the plant model fitted beside the candidate (nil when none was
    /// accepted) and the log's plant data it was fitted on: what judging the candidate on the
    /// model needs.
    ///
    /// - Parameter plantFit: the accepted fit of an earlier retraining on this log
    ///   (`Outcome.plantFit`): reused instead of refitting while the log has grown by less than
    ///   `CheckPolicy.plantModelRefitShare` since it (`plantFitReuse`).
    public func runWithPlantModel(logPath: String, limits: RetrainLimits, warmStart: QModel?, output: URL, plantFit: PlantModelFit? = nil,
                                  progress: (Progress) -> Void = { _ in }, shouldStop: () -> Bool = { false }) throws -> Outcome {
        var outcome = try trainWithPlantModel(logPath: logPath, limits: limits, warmStart: warmStart, plantFit: plantFit,
                                              progress: progress, shouldStop: shouldStop)
        var report = outcome.report
        let candidate = outcome.candidate
        if report.passed {
            FaultInjection.point("retrain-before-save")
            do {
                try candidate.save(to: output)
            } catch {
                report.verdict = "failed"
                throw RetrainError("cannot write the candidate model to \(output.path): \(error)", kind: .writeFailed)
            }
        }
        outcome.report = report
        return outcome
    }

    /// A retraining's result with the plant model beside it.
    public struct Outcome: Sendable {
        /// The report (verdict, checks, figures, the plant model's fit report).
        public var report: RetrainReport
        /// The int8 candidate (whatever the verdict): with `learning.distill`, the one the
        /// retraining chose (`RetrainReport.distill` says which).
        public var candidate: QModel
        /// The distilled candidate (`learning.distill`) whatever was chosen; nil when none was made.
        public var distilledCandidate: QModel?
        /// The plant model the selection accepted; nil when none was fitted or it was refused.
        public var plantModel: (any PlantModel)?
        /// The plant data the model was fitted on (the newest `plantModelSamples` samples); for
        /// a reused fit, the newest data read now.
        public var plantData: PlantData?
        /// The accepted fit, new or reused, to hand to the next retraining on this log
        /// (`runWithPlantModel(…, plantFit:)`); nil when none was accepted.
        public var plantFit: PlantModelFit?
        /// The trial's exogenous baseline and its report (accepted or not, and why).
        public var baseline: ExogenousBaseline?
    }

    /// Trains a candidate from the log at `logPath` and checks it, without writing anything:
    /// the candidate is returned whatever the verdict (the lab and benchmarks evaluate failed
    /// candidates too; only `run` decides what may be served).
    ///
    /// - Returns: the report and the int8 candidate.
    /// - Throws: `RetrainError` when there is too little data, the log cannot be read, or
    ///   `shouldStop` said stop.
    public func train(logPath: String, limits: RetrainLimits, warmStart: QModel?,
                      progress: (Progress) -> Void = { _ in }, shouldStop: () -> Bool = { false }) throws -> (report: RetrainReport, candidate: QModel) {
        let o = try trainWithPlantModel(logPath: logPath, limits: limits, warmStart: warmStart, progress: progress, shouldStop: shouldStop)
        return (o.report, o.candidate)
    }

    /// `train`, also returning the plant model and its data (`Outcome`); `plantFit` as in
    /// `runWithPlantModel`.
    public func trainWithPlantModel(logPath: String, limits: RetrainLimits, warmStart: QModel?, plantFit: PlantModelFit? = nil,
                                    progress: (Progress) -> Void = { _ in }, shouldStop: () -> Bool = { false }) throws -> Outcome {
        let clock = Date()
        let rowsAll = try Self.readRows(logPath: logPath, window: limits.window)
        return try trainWithPlantModel(rows: rowsAll, limits: limits, warmStart: warmStart, started: clock, plantFit: plantFit,
                                       progress: progress, shouldStop: shouldStop)
    }

    /// The rows a retraining reads: the log at `logPath`, its last `window` rows when given.
    static func readRows(logPath: String, window: Int?) throws(RetrainError) -> [LoggedTransition] {
        do {
            let log = try ExperienceLog.open(path: logPath, create: false)
            return try log.transitions(window: window.map { .lastRows($0) } ?? .all)
        } catch {
            throw RetrainError("cannot read the experience log \(logPath): \(error)", kind: .logUnreadable)
        }
    }

    /// The trial's exogenous baseline alone, without training: fitted as a retraining fits it
    /// beside its candidate (the rows `limits.window` selects, against `baselineReference`), for
    /// a model trained elsewhere that this log's trial is to judge (the gateway's fleet models).
    /// Nil when `baselineReference` is nil. When the mapping rules a baseline out
    /// (`ExogenousBaseline.ruledOut(by:)`), that baseline is returned and the log is not read.
    /// Reads the whole log (or the window) into memory, as a retraining does.
    ///
    /// - Throws: `RetrainError` (`.logUnreadable`) when the log cannot be read.
    public func fitBaseline(logPath: String, limits: RetrainLimits = RetrainLimits()) throws(RetrainError) -> ExogenousBaseline? {
        guard let reference = baselineReference else { return nil }
        if let none = ExogenousBaseline.ruledOut(by: map) { return none }
        return ExogenousBaseline.fit(map: map, rows: try Self.readRows(logPath: logPath, window: limits.window), reference: reference)
    }

    /// `runWithPlantModel` on rows read elsewhere (the fleet learner's log of every gateway):
    /// the same training, checks and verdict as on a device log; `rows` in the order a log
    /// gives them (the newest tenth, by position, is held out for the checks).
    public func runWithPlantModel(rows: [LoggedTransition], limits: RetrainLimits, warmStart: QModel?, output: URL,
                                  progress: (Progress) -> Void = { _ in }, shouldStop: () -> Bool = { false }) throws -> Outcome {
        var outcome = try trainWithPlantModel(rows: limits.window.map { Array(rows.suffix($0)) } ?? rows, limits: limits,
                                              warmStart: warmStart, started: Date(), progress: progress, shouldStop: shouldStop)
        if outcome.report.passed {
            do {
                try outcome.candidate.save(to: output)
            } catch {
                outcome.report.verdict = "failed"
                throw RetrainError("cannot write the candidate model to \(output.path): \(error)", kind: .writeFailed)
            }
        }
        return outcome
    }

    func trainWithPlantModel(rows rowsAll: [LoggedTransition], limits: RetrainLimits, warmStart: QModel?, started clock: Date,
                             plantFit previousFit: PlantModelFit? = nil,
                             progress: (Progress) -> Void, shouldStop: () -> Bool) throws -> Outcome {
        var report = RetrainReport()
        let width = map.stateWidth
        let A = map.actions.count
        // Rows that span missed ticks (flag gap) are not one step: not learned from as one.
        let gapRows = rowsAll.filter { $0.transition.flags.contains(.gap) }.count
        report.gapRowsExcluded = gapRows
        report.figures["gap_rows_excluded"] = Double(gapRows)
        // Rows whose action is unknown (incumbent not observed) are not learned from.
        let usable: [Int] = rowsAll.indices.filter {
            let t = rowsAll[$0].transition
            return !t.flags.contains(.gap) && t.action != nil && t.state.count == width && t.nextState.count == width && (t.action ?? -1) < A && t.reward.isFinite
        }
        let rows: [EdgeQLog.Transition] = usable.map { rowsAll[$0].transition }
        report.rows = rows.count
        report.incumbentRows = rows.filter { $0.actor == .incumbent }.count
        guard rows.count >= policy.minRows else {
            throw RetrainError("only \(rows.count) usable transitions in the log (need \(policy.minRows)); let the gateway log longer",
                               kind: .notEnoughData)
        }
        // Time-ordered split: the newest 10 % are held out for the checks.
        let heldCount = max(rows.count / 10, 1)
        let train = Array(rows.dropLast(heldCount))
        let held = Array(rows.suffix(heldCount))
        report.trainRows = train.count
        report.heldOutRows = held.count

        func toLearner(_ t: EdgeQLog.Transition) -> EdgeQLearner.Transition {
            EdgeQLearner.Transition(
                state: t.state, action: t.action ?? 0, reward: Float(t.reward), nextState: t.nextState,
                terminal: t.terminal, truncated: t.truncated, nextMask: Self.bootstrapMask(t.nextMask, actionCount: A),
                fromIncumbent: t.actor == .incumbent)
        }
        let learnerRows = train.map(toLearner)

        let l = map.learning
        var config = Self.learnerConfig(l, rows: learnerRows.count)
        // Room for the model rollouts' synthetic rows beside the log's (`learning.rollouts`).
        if l.rollouts.enabled { config.bufferSize += l.rollouts.starts * l.rollouts.horizon }
        // EASY TO MISS: bootstrap values are clipped to the range every return of these rewards
        // lies in. Without it, overestimation (the max in the target picks up the net's errors)
        // fed itself across warm-started rounds: cart-pole candidates valued states at Q ≈ 120
        // from which they collected a discounted return of 40–48, beyond the 100 any return of
        // +1 per step can reach, and were refused by `q_within_bound` round after round.
        config.bootstrapRange = Self.bootstrapRange(rewards: train.map(\.reward), gamma: l.gamma)   // γ as written (config.gamma is its Float)
        report.learner = config
        let arch = Architecture(inputCount: width, hidden: l.hidden, actionCount: A, dueling: l.dueling)

        // Warm start only when the served model has this shape (its normalisation is kept, so
        // its weights still mean what they meant).
        let warm = warmStart.flatMap { $0.architecture == arch ? $0 : nil }
        let normalization = warm?.normalization ?? EdgeQNet.Normalization.fit(learnerRows.flatMap(\.state), inputCount: width)
        report.warmStart = warm != nil
        setBLASThreads(1)
        let learner: DQNLearner
        do {
            learner = try DQNLearner(config: config, architecture: arch, seed: seed, normalization: normalization)
            if let warm {
                try learner.online.load(warm.parameters)
                learner.target.copyParameters(from: learner.online)
            }
        } catch {
            throw RetrainError("cannot set up the learner for \(arch.label): \(error)")
        }
        for t in learnerRows { learner.observe(t) }
        learner.flushPending()

        // Distillation (`learning.distill`) needs the plant model: fitted first, and when it is
        // accepted the Q-learning gets half the time limit, the distillation the rest.
        var plantModel: (any PlantModel)?
        var plantData: PlantData?
        var plantFit: PlantModelFit?
        var plantModelFitted = false
        let mappingHasPlantModel = policy.plantModelSamples > 0 && !map.modelSignals.controlled.isEmpty
        let wantsPlantModel = mappingHasPlantModel && plantModelOff == nil
        if mappingHasPlantModel, let off = plantModelOff { report.plantModelSkipped = off }
        if l.distill.enabled || l.rollouts.enabled, wantsPlantModel, !shouldStop() {
            progress(Progress(phase: "plant_model", updates: 0, of: 0, tdLoss: nil))
            (plantModel, plantData, plantFit) = fitPlantModel(rowsAll, reusing: previousFit, window: limits.window, into: &report)
            plantModelFitted = true
        }
        if l.rollouts.enabled {
            report.rollouts = addRollouts(to: learner, model: plantModel, data: plantData, heldOutRows: heldCount, warmStart: warm,
                                          wantsPlantModel: wantsPlantModel, into: &report, progress: progress, shouldStop: shouldStop)
        }
        let total = limits.steps ?? l.updatesPerRetrain
        let deadline = limits.seconds.map { clock.addingTimeInterval($0) }
        let trainingDeadline = limits.seconds.map { clock.addingTimeInterval(plantModel != nil && l.distill.enabled ? $0 / 2 : $0) }
        var tdTail = 0.0
        var tdCount = 0
        var u = 0
        progress(Progress(phase: "training", updates: 0, of: total, tdLoss: nil))
        while u < total {
            if shouldStop() { throw RetrainError("retraining abandoned: the gateway is stopping", kind: .stopped) }
            if let trainingDeadline, Date() >= trainingDeadline { break }
            let m = learner.update()
            u += 1
            if let m, u > total - max(total / 10, 1) {
                tdTail += Double(m.tdLoss)
                tdCount += 1
            }
            if u % 1000 == 0 {
                progress(Progress(phase: "training", updates: u, of: total, tdLoss: m.map { Double($0.tdLoss) }))
            }
        }
        report.updates = u
        report.figures["train_td_loss"] = tdCount > 0 ? tdTail / Double(tdCount) : .nan
        progress(Progress(phase: "checking", updates: u, of: total, tdLoss: nil))

        // Quantize (calibration: up to 4,096 training states, so that the activation ranges
        // cover what the plant shows; a range too narrow clips and flips argmaxes).
        let calibration = stride(from: 0, to: learnerRows.count, by: max(learnerRows.count / 4096, 1)).flatMap { learnerRows[$0].state }
        let candidate: QModel
        do {
            candidate = try QModel(network: learner.online, actionNames: map.actions.map(\.name), normalization: normalization,
                                   calibrationStates: calibration,
                                   training: ["rows": String(rows.count), "updates": String(u), "cql_weight": String(l.cqlWeight),
                                              "gamma": String(l.gamma), "gateway": map.gateway.id])
        } catch {
            throw RetrainError("cannot quantize the candidate: \(error)")
        }

        let base = report   // before the checks: what the distilled candidate's checks start from
        check(candidate, network: learner.online, held: held, train: train, normalization: normalization, into: &report)
        if !plantModelFitted, wantsPlantModel, !shouldStop() {
            progress(Progress(phase: "plant_model", updates: u, of: total, tdLoss: nil))
            (plantModel, plantData, plantFit) = fitPlantModel(rowsAll, reusing: previousFit, window: limits.window, into: &report)
        }
        var chosen = candidate
        var distilledModel: QModel?
        var taughtStates: StateSupport?
        if l.distill.enabled {
            var info = DistillReport()
            if let model = plantModel {
                let heldStart = usable[usable.count - heldCount]
                if let distilled = try distil(rows: rowsAll, heldStart: heldStart, trainCount: train.count, model: model, data: plantData,
                                              warmStart: warmStart, base: base,
                                              train: train, held: held, deadline: deadline, info: &info, progress: progress, shouldStop: shouldStop) {
                    distilledModel = distilled.model
                    taughtStates = distilled.taughtStates
                    Self.judge(&report)
                    choose(report: &report, candidate: &chosen, distilled: distilled, info: &info, model: model, data: plantData, warmStart: warmStart)
                } else {
                    info.why = "no distilled candidate: " + (info.skipped ?? "")
                }
            } else {
                info.skipped = "the plant model was not accepted: "
                    + (report.plantModel?.refused ?? report.plantModelSkipped ?? (wantsPlantModel ? "none was fitted" : "the mapping marks no signal 'role: controlled' (or the plant model is off)"))
                info.why = "no distilled candidate: " + (info.skipped ?? "")
            }
            report.distill = info
        }
        // The region of states the candidate was trained on (the usable rows' states and next
        // states): the gateway hands a state outside it to the safety policy
        // (`safety.support_margin`), since what the network does there was never learned.
        let (support, supportExcluded) = Self.support(of: rows, width: width, rule: supportRows)
        if supportRows != nil { report.figures["support_rows_excluded"] = Double(supportExcluded) }
        // A distilled student was also taught on the states it visited on the plant model: with
        // `distill.support: taught` its box holds them (else the safety policy takes the plant
        // back wherever the student does what the teacher taught it and the log never shows);
        // the report says on how many inputs they reach beyond the log's box either way.
        let distilledSupport = Self.distilledSupport(log: support, taught: taughtStates, rule: l.distill.support)
        if let support, let taughtStates, taughtStates.min.count == support.min.count {
            report.figures["support_taught_wider_inputs"] = Double(support.min.indices.filter {
                taughtStates.min[$0] < support.min[$0] || taughtStates.max[$0] > support.max[$0]
            }.count)
        }
        chosen.support = report.distill?.chosen == "distilled" ? distilledSupport : support
        distilledModel?.support = distilledSupport
        report.seconds = Date().timeIntervalSince(clock)
        Self.judge(&report)
        for (k, v) in report.figures { report.figures[k] = roundedForReading(v) }
        var outcome = Outcome(report: report, candidate: chosen, distilledCandidate: distilledModel, plantModel: plantModel, plantData: plantData,
                              plantFit: plantFit)
        if let reference = baselineReference, !shouldStop() {
            outcome.baseline = ExogenousBaseline.fit(map: map, rows: rowsAll, reference: reference)
        }
        return outcome
    }

    /// A distilled candidate's support box: the log's (`.log`), or the smallest box holding it
    /// and `taught`, the states the student was taught on (`.taught`). Nil without a log box (the
    /// candidate is then not checked, as any candidate without one).
    public static func distilledSupport(log: StateSupport?, taught: StateSupport?, rule: DistillConfig.Support) -> StateSupport? {
        switch rule {
        case .log: return log
        case .taught: return log.map { $0.merged(with: taught) }
        }
    }

    /// The box around the raw states and next states of `rows` (`StateSupport.fit`), without
    /// copying them into one array; with `rule`, of the rows it keeps (`SupportRows.kept`), and
    /// how many it left out.
    static func support(of rows: [EdgeQLog.Transition], width: Int, rule: SupportRows? = nil) -> (StateSupport?, excluded: Int) {
        guard let rule else {
            return (StateSupport.fit(rows: rows.lazy.flatMap { [$0.state, $0.nextState] }, inputCount: width), 0)
        }
        let kept = rule.kept(rows)
        let box = StateSupport.fit(rows: kept.lazy.flatMap { [rows[$0].state, rows[$0].nextState] }, inputCount: width)
        return (box, rows.count - kept.count)
    }

    /// Fits the plant model on the newest `policy.plantModelSamples` samples of the log
    /// (flagged rows excluded, `PlantDataReader`) and puts the selection's report in `report`;
    /// when it cannot run, `plantModelSkipped` says why. It never fails the retraining.
    ///
    /// With `previous` (an accepted fit of an earlier retraining) it reads the newest data and,
    /// when `plantFitReuse` says so, keeps that fit instead of refitting: the report is the
    /// earlier one with `reused` true. `plant_model_seconds` is the time spent either way.
    func fitPlantModel(_ rows: [LoggedTransition], reusing previous: PlantModelFit? = nil, window: Int? = nil,
                       into report: inout RetrainReport) -> (model: (any PlantModel)?, data: PlantData?, fit: PlantModelFit?) {
        let started = Date()
        var data: PlantData?
        var summary: PlantDataReader.Summary?
        do {
            let reader = try PlantDataReader(map: map, minimumSamples: 30)
            let newest = Array(rows.suffix(policy.plantModelSamples))
            let result = try reader.read(rows: newest)
            let read = result.data
            data = read
            summary = result.summary
            let key = PlantModelFit.Key(map: map, policy: policy, window: window, seed: seed)
            let reuse = plantFitReuse(previous: previous, key: key, rows: rows, reader: reader)
            if case .reuse(let newSamples, _) = reuse, let previous {
                var kept = previous.report
                kept.reused = true
                kept.fittedOnSamples = previous.fittedOnSamples
                report.plantModel = kept
                report.figures["plant_model_new_samples"] = Double(newSamples)
                report.figures["plant_model_seconds"] = Date().timeIntervalSince(started)
                Self.recordRatio(kept, into: &report)
                return (previous.model, data, previous)
            }
            let choice = try PlantModelSelection(fitters: PlantModelClasses.standard(named: map.modelClasses?.map(\.rawValue)), horizons: PlantModelSelection.horizons(for: read), seed: seed).evaluate(read)
            report.plantModel = choice.report
            report.figures["plant_model_seconds"] = Date().timeIntervalSince(started)
            Self.recordRatio(choice.report, into: &report)
            let fit = choice.model.map {
                PlantModelFit(model: $0, report: choice.report, fittedOnSamples: read.sampleCount,
                              lastRowID: newest.last?.id ?? 0, rowsRead: newest.count, key: key)
            }
            return (choice.model, data, fit)
        } catch let error as PlantDataError {
            report.plantModelSkipped = error.message
        } catch {
            // Say where the log's rows went, so that "too few samples" can be told apart:
            // rows flagged as gaps, rows without an action, rows without signal values.
            report.plantModelSkipped = "\(error)" + (summary.map { " (" + Self.describe($0) + ")" } ?? "")
        }
        return (nil, data, nil)
    }

    /// `plant_model_ratio`: the chosen class's error at the longest horizon against persistence.
    static func recordRatio(_ fit: PlantFitReport, into report: inout RetrainReport) {
        if let chosen = fit.classes.first(where: { $0.name == fit.chosen }), let longest = chosen.longest {
            report.figures["plant_model_ratio"] = longest.ratio ?? .nan
        }
    }

    /// Where the rows of one plant-data read went, for a reason a person reads.
    static func describe(_ s: PlantDataReader.Summary) -> String {
        "of \(s.rowsRead) rows read: \(s.rowsUsed) used, \(s.rowsFlagged) flagged (gap or applied mismatch), "
            + "\(s.rowsWithoutAction) without a known action, \(s.rowsWithoutSignals) without the role signals' values, "
            + "\(s.segmentsDropped) stretches too short (\(s.samplesDropped) samples)"
    }

    /// Sets the verdict from the checks: passed when no judged check failed and at least one
    /// was judged; a not-applicable check is skipped (named in `notJudged`), not failed; an
    /// advisory one is reported, not used (named in `advisory`).
    public static func judge(_ report: inout RetrainReport) {
        let judged = report.checks.filter { $0.status == .passed || $0.status == .failed }
        let failed = judged.filter { $0.status == .failed }
        report.notJudged = report.checks.filter { $0.status == .notApplicable }.map { "\($0.name): \($0.note)" }
        report.advisory = report.checks.filter { $0.status == .advisory }.map { "\($0.name): \($0.advisory ?? "not used")" }
        report.reasons = failed.map { "\($0.name): \($0.note)" }
        if judged.isEmpty { report.reasons.append("no check could be judged") }
        report.verdict = failed.isEmpty && !judged.isEmpty ? "passed" : "failed"
    }

    /// The learner's hyperparameters for a retraining on `rows` logged transitions: every
    /// field the pipeline uses comes from the mapping's `learning` section (docs/mapping.md);
    /// the rest are fixed by offline training (no exploration, updates from the first row).
    public static func learnerConfig(_ l: LearningConfig, rows: Int) -> DQNConfig {
        var config = DQNConfig()
        config.gamma = Float(l.gamma)
        config.learningRate = Float(l.learningRate)
        config.batchSize = max(min(l.batchSize, rows), 1)
        config.bufferSize = max(rows, 1)
        config.nStep = l.nStep
        config.doubleDQN = l.doubleDQN
        config.targetUpdateInterval = l.targetUpdate
        config.polyakTau = l.polyakTau.map { Float($0) }
        config.huberDelta = Float(l.huberDelta)
        config.maxGradNorm = Float(l.maxGradNorm)
        config.prioritizedAlpha = l.prioritizedAlpha
        config.prioritizedBeta = l.prioritizedBeta
        config.betaAnnealUpdates = l.betaAnnealUpdates
        config.cqlWeight = Float(l.cqlWeight)
        config.cqlOnAllTransitions = l.cqlOnAllTransitions
        // Offline: the log is the data; nothing is explored and updates start at once.
        config.learningStarts = 0
        config.epsilonStart = 0
        config.epsilonEnd = 0
        config.epsilonDecaySteps = 0
        config.trainFrequency = 1
        config.gradientSteps = 1
        return config
    }

    /// The largest |Q| any fixed point of the training can have when every logged reward
    /// satisfies |r| ≤ `maxAbsReward`: max|r| / (1 − γ), for one-step and n-step targets alike
    /// (the n-step target Σ_{k<n} γ^k r + γ^n Q stays within ±B whenever |Q| ≤ B). A log whose
    /// rewards are all 0 gives a bound of 0 (kept just above it, so that a ratio stays finite).
    ///
    /// - Parameters:
    ///   - maxAbsReward: the largest one-tick |reward| among the training rows.
    ///   - gamma: the discount the learner was trained with (`DQNConfig.gamma`).
    public static func valueBound(maxAbsReward: Double, gamma: Double) -> Double {
        max(maxAbsReward, 1e-9) / max(1 - gamma, 1e-6)
    }

    /// The range of every discounted return of rewards within [min, max] of `rewards`:
    /// [min(r_min, 0), max(r_max, 0)] / (1 − γ) (a return that ends early adds 0). One-step and
    /// n-step targets alike stay in it when the bootstrap value does, so the retraining clips
    /// its bootstrap values to it (`DQNConfig.bootstrapRange`); nil for no rewards.
    public static func bootstrapRange(rewards: [Double], gamma: Double) -> ClosedRange<Float>? {
        guard let lo = rewards.min(), let hi = rewards.max(), lo.isFinite, hi.isFinite else { return nil }
        let scale = 1 / max(1 - gamma, 1e-6)
        return Float(min(lo, 0) * scale)...Float(max(hi, 0) * scale)
    }

    /// The learner's next-action mask for a logged `next_mask` (bit i = action i allowed; nil =
    /// all allowed). A mask that allows no action is not an end of the episode (only
    /// `terminal` is): the gateway then applies its fallback and the plant goes on, so the
    /// bootstrap is taken over all actions, as the learner does (docs/learning.md).
    public static func bootstrapMask(_ bits: UInt64?, actionCount: Int) -> [Bool]? {
        guard let bits else { return nil }
        let mask = (0..<actionCount).map { a in a < 64 && bits & (1 << UInt64(a)) != 0 }
        return mask.contains(true) ? mask : nil
    }

    /// The scale of `incumbent_agreement`'s near-tie τ (`CheckPolicy.agreementTie` × this): the
    /// 99.9th percentile of one-step |reward| over the incumbent's training rows, or over every
    /// training row when none is the incumbent's (then `fromIncumbent` is false); 0 with no row.
    ///
    /// Neither the candidates' rows nor the maximum: a candidate whose trial block wrecked the
    /// plant logs steps far costlier than the incumbent's (thermal: |r| 16.7 against 2.65), and
    /// even the incumbent logs one or two such steps when it takes over a wrecked plant; with the
    /// maximum over the training rows τ grew sixfold within one run and nearly every later
    /// departure counted as a near-tie (docs/learning.md, "Agreement up to near-ties").
    static func agreementTieScale(_ train: [EdgeQLog.Transition]) -> (scale: Double, fromIncumbent: Bool) {
        var rewards = train.compactMap { $0.actor == .incumbent ? abs($0.reward) : nil }
        let fromIncumbent = !rewards.isEmpty
        if !fromIncumbent { rewards = train.map { abs($0.reward) } }
        guard !rewards.isEmpty else { return (0, false) }
        rewards.sort()
        return (rewards[min(rewards.count - 1, Int((Double(rewards.count) * 0.999).rounded(.down)))], fromIncumbent)
    }

    /// The checks of docs/operations.md ("Retraining"), each with its figure and limit, or
    /// marked not applicable when it has nothing to be judged on.
    func check(_ candidate: QModel, network: MLP? = nil, held: [EdgeQLog.Transition], train: [EdgeQLog.Transition],
               normalization: EdgeQNet.Normalization, into report: inout RetrainReport) {
        let A = map.actions.count
        let width = map.stateWidth
        let heldStates = held.flatMap(\.state)
        let fp32 = candidate.makeFloatEngine()
        let served = candidate.makeEngine(policy.servedPrecision)

        // 1. Served-path / fp32 agreement on held-out states. Mixed (default): strict argmax
        //    agreement — int8's near-ties go to fp32. Pure int8: up to near-ties, int8's pick
        //    counts as fp32's when fp32 values it within τ of its own best (the int8 choice
        //    then loses less than τ of discounted return by fp32's own estimate); τ is a share
        //    of the largest one-step |reward| in the log.
        //    The value bound (check 2) uses the discount and n the learner was trained with
        //    (the report's `learner`, the `DQNConfig` the updates ran with), never a second
        //    reading of the mapping: bound and training cannot disagree.
        let trained = report.learner ?? Self.learnerConfig(map.learning, rows: train.count)
        // The learner's γ is a Float; the mapping's Double when it is the same number (0.99, not
        // 0.99000000953…), so that limits read as written.
        let gamma = Float(map.learning.gamma) == trained.gamma ? map.learning.gamma : Double(trained.gamma)
        let nStep = max(trained.nStep, 1)
        let maxAbsReward = train.map { abs($0.reward) }.max() ?? 0
        let bound = Self.valueBound(maxAbsReward: maxAbsReward, gamma: gamma)
        let q = candidate.quantizationReport(heldOut: heldStates)
        let tieTolerance = policy.servedPrecision == .int8 ? policy.quantizationTieTolerance * maxAbsReward : 0
        var tolerant = 0, strict = 0, compared = 0, regretSum = 0.0, regretMax = 0.0
        for t in held {
            let qf = fp32.qValues(t.state)
            let pf = t.state.withUnsafeBufferPointer { fp32.bestAction(state: $0) } ?? -1
            let p8 = t.state.withUnsafeBufferPointer { served.bestAction(state: $0) } ?? -1
            guard pf >= 0, p8 >= 0 else { continue }
            compared += 1
            let regret = Double(qf[pf] - qf[p8])
            regretSum += regret
            regretMax = max(regretMax, regret)
            if p8 == pf { strict += 1 }
            if p8 == pf || regret <= tieTolerance { tolerant += 1 }
        }
        // No state compared: the figures are not numbers (left out of the JSON), not 0 %.
        let nq = compared > 0 ? Double(compared) : .nan
        let agreementTol = Double(tolerant) / nq
        report.figures["quantization_agreement_strict"] = Double(strict) / nq
        report.figures["quantization_agreement_within_tie"] = agreementTol
        report.figures["quantization_tie_tolerance"] = tieTolerance
        report.figures["quantization_mean_regret"] = regretSum / nq
        report.figures["quantization_max_regret"] = compared > 0 ? regretMax : .nan
        report.figures["quantization_max_abs_error"] = compared > 0 ? Double(q.maxAbsError) : .nan
        report.figures["int8_agreement_strict"] = compared > 0 ? q.agreement : .nan
        report.figures["mixed_fp32_share"] = compared > 0 ? q.mixedFP32Share : .nan
        report.figures["int8_tie_margin"] = Double(candidate.int8.tieMargin)
        let what = policy.servedPrecision == .int8
            ? String(format: "int8 picks fp32's action, or one fp32 values within τ = %.3g of it", tieTolerance)
            : "the \(policy.servedPrecision.rawValue) path picks fp32's action"
        if compared == 0 {
            report.checks.append(.notApplicable("quantization_agreement", limit: policy.minQuantizationAgreement,
                                                note: "no held-out state to compare the \(policy.servedPrecision.rawValue) path with fp32 on"))
        } else {
            report.checks.append(.judged("quantization_agreement", value: agreementTol, limit: policy.minQuantizationAgreement,
                                         passed: agreementTol >= policy.minQuantizationAgreement,
                                         note: what + String(format: " on %.2f%% of %d held-out states (strict %.2f%%, max regret %.3g; pure int8 %.2f%%, mixed asked fp32 on %.1f%%)",
                                                             agreementTol * 100, compared, Double(strict) / nq * 100, regretMax,
                                                             q.agreement * 100, q.mixedFP32Share * 100)))
        }

        // 2. Finite Q, and the values the policy acts on (the greedy one and the logged one)
        //    within the bound that the rewards and discount imply. Q of actions the log never
        //    shows are left out of the bound: the conservative term pushes them down on
        //    purpose, without limit.
        //    Derivation (docs/learning.md, "Checks"): with |r| ≤ R per tick, the learner's
        //    n-step target Σ_{k<n} γ^k r_{t+k+1} + γ^n Q(s_{t+n}, a*) (no bootstrap after a
        //    terminal step, fewer steps at an episode's end) lies within ±R(1 − γ^n)/(1 − γ)
        //    + γ^n · B whenever |Q| ≤ B; with B = R/(1 − γ) that is ±B again. So every fixed
        //    point of the training, whatever n, has |Q| ≤ R/(1 − γ): n changes how fast values
        //    get there, not where they may go. Values beyond it are overestimation (measured
        //    on cart-pole before bootstrap values were clipped to that range: Q 103–122 where
        //    the discounted return collected was 40–48); with the clip only the fit's own
        //    error can exceed it, which the slack allows for.
        var maxAbsQ = 0.0
        var finite = true
        var finiteRows = 0
        var qAll = [[Float]]()
        qAll.reserveCapacity(held.count)
        for t in held {
            let qs = fp32.qValues(t.state)
            qAll.append(qs)
            if !qs.allSatisfy(\.isFinite) {
                finite = false
                continue
            }
            finiteRows += 1
            let greedy = qs.max() ?? 0
            maxAbsQ = max(maxAbsQ, Double(abs(greedy)))
            if let a = t.action { maxAbsQ = max(maxAbsQ, Double(abs(qs[a]))) }
        }
        report.figures["max_abs_q"] = finiteRows > 0 ? maxAbsQ : .nan
        report.figures["q_bound"] = train.isEmpty ? .nan : bound   // no training row: no reward to scale it
        if held.isEmpty {
            report.checks.append(.notApplicable("q_finite", limit: 1, note: "no held-out state"))
        } else {
            report.checks.append(.judged("q_finite", value: finite ? 1 : 0, limit: 1, passed: finite,
                                         note: finite ? "all Q-values finite on \(held.count) held-out states" : "non-finite Q-values on \(held.count - finiteRows) of \(held.count) held-out states"))
        }
        if finiteRows == 0 {
            report.checks.append(.notApplicable("q_within_bound", limit: bound * policy.qBoundSlack,
                                                note: "no held-out state with finite Q-values to measure"))
        } else {
            report.checks.append(.judged("q_within_bound", value: maxAbsQ, limit: bound * policy.qBoundSlack,
                                         passed: maxAbsQ <= bound * policy.qBoundSlack,
                                         note: String(format: "max |Q| of greedy and logged actions %.4g against max|r|/(1−γ) = %.4g/(1−%.4g) = %.4g × slack %.2g (γ and %d-step returns as trained; an n-step target stays within ±max|r|/(1−γ) whenever Q does, so n does not move the bound)",
                                                      maxAbsQ, maxAbsReward, gamma, bound, policy.qBoundSlack, nStep)))
        }

        // 3. Held-out TD error (one-step, Double DQN target with the candidate as both nets).
        var tdSum = 0.0
        var tdN = 0
        for (i, t) in held.enumerated() {
            guard let a = t.action else { continue }
            let qs = qAll[i]
            var target = t.reward
            if !t.terminal {
                let next = fp32.qValues(t.nextState)
                var best = -Double.infinity
                let allowed = Self.bootstrapMask(t.nextMask, actionCount: A)
                for b in 0..<A where allowed?[b] ?? true {
                    best = max(best, Double(next[b]))
                }
                if best.isFinite { target += gamma * best }
            }
            tdSum += abs(Double(qs[a]) - target)
            tdN += 1
        }
        let heldTD = tdN > 0 ? tdSum / Double(tdN) : .nan
        report.figures["held_out_td_error"] = heldTD
        if tdN == 0 {
            report.checks.append(.notApplicable("held_out_td_error", limit: bound, note: "no held-out row with a known action"))
        } else {
            report.checks.append(.judged("held_out_td_error", value: heldTD, limit: bound,
                                         passed: heldTD.isFinite && heldTD <= bound,
                                         note: String(format: "mean |TD| %.4g on %d held-out rows", heldTD, tdN)))
        }

        // 4. Off-policy estimate (direct method with the candidate's own Q: biased upward,
        //    conservative Q shifts it; reported, not trusted — the live guard is the real test).
        var vCand = 0.0, vBehaviour = 0.0, nEst = 0
        for (i, t) in held.enumerated() {
            guard let a = t.action else { continue }
            let qs = qAll[i]
            let mask = (0..<A).map { _ in true }
            guard let pick = qs.withUnsafeBufferPointer({ maskedArgmax($0.baseAddress!, count: A, mask: mask) }) else { continue }
            vCand += Double(qs[pick])
            vBehaviour += Double(qs[a])
            nEst += 1
        }
        fittedQEvaluation(candidate, held: held, train: train, normalization: normalization, into: &report)
        report.figures["estimate_candidate_value"] = nEst > 0 ? vCand / Double(nEst) : .nan
        report.figures["estimate_behaviour_value"] = nEst > 0 ? vBehaviour / Double(nEst) : .nan
        let returns = held.map(\.reward)
        report.figures["held_out_mean_reward"] = returns.isEmpty ? .nan : returns.reduce(0, +) / Double(returns.count)

        // 5. Support: agreement with the incumbent, and actions never logged near this state.
        //    A row agrees when the served path picks the logged action, or when the candidate
        //    (fp32) values the logged action within τ of its pick — a departure it rates at
        //    less than τ is not one (on the thermal plant about half of good candidates'
        //    departures from the PI are such near-ties; τ is 0 by default: docs/learning.md,
        //    "Agreement up to near-ties", says why).
        //    τ's scale is `agreementTieScale`: the incumbent's rewards, not the maximum.
        let incumbentHeld = held.enumerated().filter { $0.element.actor == .incumbent }
        let (tieScale, tieScaleFromIncumbent) = Self.agreementTieScale(train)
        let agreementTie = policy.agreementTie * tieScale
        var agree = 0, agreeStrict = 0
        var picks = [Int](repeating: 0, count: held.count)
        for (i, t) in held.enumerated() {
            picks[i] = t.state.withUnsafeBufferPointer { served.bestAction(state: $0) } ?? -1
        }
        for (i, t) in incumbentHeld {
            guard let a = t.action, picks[i] >= 0 else { continue }
            if picks[i] == a {
                agreeStrict += 1
                agree += 1
            } else if policy.agreementTie > 0, a < qAll[i].count, Double(qAll[i][picks[i]]) - Double(qAll[i][a]) <= agreementTie {
                agree += 1
            }
        }
        if incumbentHeld.isEmpty {
            report.checks.append(.notApplicable("incumbent_agreement", limit: policy.minAgreement,
                                                note: "no held-out row from the incumbent (0 of \(held.count)): agreement cannot be measured"))
        } else {
            let agreement = Double(agree) / Double(incumbentHeld.count)
            let strict = Double(agreeStrict) / Double(incumbentHeld.count)
            report.figures["incumbent_agreement"] = agreement
            report.figures["incumbent_agreement_strict"] = strict
            report.figures["incumbent_agreement_tie"] = agreementTie
            report.figures["incumbent_agreement_tie_scale"] = tieScale
            let rows = tieScaleFromIncumbent ? "incumbent's training rows" : "training rows: none is the incumbent's"
            let note = policy.agreementTie > 0
                ? String(format: "picks the incumbent's logged action, or values it within τ = %.3g (%.3g × %.3g, the 99.9th percentile of |reward| over the \(rows)) of its pick, on %.1f%% of %d held-out rows (the logged action itself on %.1f%%)",
                         agreementTie, policy.agreementTie, tieScale, agreement * 100, incumbentHeld.count, strict * 100)
                : String(format: "picks the incumbent's logged action on %.1f%% of %d held-out rows", agreement * 100, incumbentHeld.count)
            report.checks.append(.judged("incumbent_agreement", value: agreement, limit: policy.minAgreement,
                                         passed: agreement >= policy.minAgreement, note: note))
        }

        // Nearest logged states (normalised space) from a sample of the training rows.
        let sample = stride(from: 0, to: train.count, by: max(train.count / 3000, 1)).map { train[$0] }
        func norm(_ s: [Float]) -> [Float] { (0..<width).map { (s[$0] - normalization.mean[$0]) / normalization.std[$0] } }
        let sampleStates = sample.map { norm($0.state) }
        var unsupported = 0
        let probe = stride(from: 0, to: held.count, by: max(held.count / 500, 1)).map { $0 }
        for i in probe {
            let s = norm(held[i].state)
            var nearest: [(Float, Int)] = []
            for (j, x) in sampleStates.enumerated() {
                var d: Float = 0
                for k in 0..<width { let e = s[k] - x[k]; d += e * e }
                if nearest.count < 10 {
                    nearest.append((d, sample[j].action ?? -1))
                    nearest.sort { $0.0 < $1.0 }
                } else if let last = nearest.last, d < last.0 {
                    nearest[9] = (d, sample[j].action ?? -1)
                    nearest.sort { $0.0 < $1.0 }
                }
            }
            if !nearest.contains(where: { $0.1 == picks[i] }) { unsupported += 1 }
        }
        // How much the incumbent's own training rows show of other actions (a figure; it names
        // the cause when unsupported_actions fails on a deterministic incumbent's log).
        let diversity = ActionDiversity.measure(train, width: width, actionCount: A)
        report.figures["incumbent_single_action_share"] = diversity?.singleActionShare ?? .nan
        if probe.isEmpty || sample.isEmpty {
            report.checks.append(.notApplicable("unsupported_actions", limit: policy.maxUnsupported,
                                                note: "no \(probe.isEmpty ? "held-out state to probe" : "training row to compare with")"))
        } else {
            let unsupportedShare = Double(unsupported) / Double(probe.count)
            report.figures["unsupported_action_share"] = unsupportedShare
            var note = String(format: "%.1f%% of %d probed states get an action not among the 10 nearest logged ones", unsupportedShare * 100, probe.count)
            let passed = unsupportedShare <= policy.maxUnsupported
            // Why, when the incumbent's own rows show one action per state region (`edgeq check --log`).
            if !passed, let d = diversity, d.singleActionShare > policy.maxUnsupported {
                note += String(format: "; near %.1f%% of its training states the incumbent shows one action only (a deterministic incumbent): "
                               + "dither it in shadow or set learning.cql_weight > 0", d.singleActionShare * 100)
            }
            report.checks.append(.judged("unsupported_actions", value: unsupportedShare, limit: policy.maxUnsupported, passed: passed, note: note))
        }

        var actionShare = [Double](repeating: picks.isEmpty ? .nan : 0, count: A)
        for p in picks where p >= 0 { actionShare[p] += 1 / Double(max(picks.count, 1)) }
        for (i, share) in actionShare.enumerated() { report.figures["candidate_action_share_\(map.actions[i].name)"] = share }
    }

    /// Fitted Q evaluation (off-policy estimate): a fresh network learns Q^π of the served
    /// (int8) candidate from the logged rows alone, with targets r + γ Q(s', π(s')) (the
    /// bootstrap action is forced through the next-action mask, no conservative term). The same
    /// is done for the logged behaviour (SARSA: the next row's logged action) so both values
    /// come from the same estimator and their difference is what to read. Reported as mean
    /// reward per step, (1 − γ) · mean over held-out states of Q(s, π(s)), comparable with
    /// `held_out_mean_reward`. Like every offline estimate it cannot see what the log never
    /// shows; it is a figure, not a check.
    func fittedQEvaluation(_ candidate: QModel, held: [EdgeQLog.Transition], train: [EdgeQLog.Transition],
                           normalization: EdgeQNet.Normalization, into report: inout RetrainReport) {
        guard policy.fqeUpdates > 0, train.count > 1 else { return }
        let A = map.actions.count
        let l = map.learning
        let int8 = candidate.makeEngine(policy.servedPrecision)   // the policy as it will be served
        func bits(_ m: UInt64?) -> [Bool] { Self.bootstrapMask(m, actionCount: A) ?? [Bool](repeating: true, count: A) }
        func oneHot(_ a: Int?) -> [Bool]? { a.map { x in (0..<A).map { $0 == x } } }
        // The retraining's settings (Huber δ, gradient clip, learning rate …), except what makes
        // it fitted Q evaluation: one-step targets, uniform replay, no conservative term, and
        // many short iterations (a hard copy every 20 updates: γ^(updates/20) is the error left).
        var config = Self.learnerConfig(l, rows: train.count)
        config.nStep = 1
        config.doubleDQN = true   // the next action is forced by the mask: both choices agree
        config.polyakTau = nil
        config.targetUpdateInterval = 20
        config.prioritizedAlpha = nil
        config.cqlWeight = 0
        config.cqlOnAllTransitions = false
        let arch = Architecture(inputCount: map.stateWidth, hidden: l.hidden, actionCount: A, dueling: false)
        func estimate(nextAction: (Int) -> Int?, heldAction: (Int) -> Int?) -> Double? {
            guard let learner = try? DQNLearner(config: config, architecture: arch, seed: seed &+ 0xF9E, normalization: normalization) else { return nil }
            for (i, t) in train.enumerated() {
                guard let a = t.action else { continue }
                // No usable next action (the last row, a gap): bootstrap only through a terminal step.
                let mask = oneHot(nextAction(i))
                if mask == nil && !t.terminal { continue }
                learner.observe(EdgeQLearner.Transition(state: t.state, action: a, reward: Float(t.reward), nextState: t.nextState,
                                                        terminal: t.terminal, truncated: t.truncated, nextMask: mask))
            }
            learner.flushPending()
            for _ in 0..<policy.fqeUpdates { learner.update() }
            var sum = 0.0, n = 0
            var x = [Float](repeating: 0, count: map.stateWidth)
            for (i, t) in held.enumerated() {
                guard let a = heldAction(i) else { continue }
                for k in 0..<x.count { x[k] = (t.state[k] - normalization.mean[k]) / normalization.std[k] }
                let q = x.withUnsafeBufferPointer { learner.online.forward($0.baseAddress!, batch: 1) }
                sum += Double(q[a])
                n += 1
            }
            return n > 0 ? (1 - l.gamma) * sum / Double(n) : nil
        }
        let candidateNext: (Int) -> Int? = { i in
            let t = train[i]
            return t.nextState.withUnsafeBufferPointer { int8.bestAction(state: $0, mask: bits(t.nextMask)) }
        }
        let behaviourNext: (Int) -> Int? = { i in
            guard i + 1 < train.count else { return nil }
            let t = train[i], u = train[i + 1]
            guard u.episode == t.episode, u.tick == t.tick + 1, u.state == t.nextState else { return nil }
            return u.action
        }
        let vCandidate = estimate(nextAction: candidateNext, heldAction: { i in
            held[i].state.withUnsafeBufferPointer { int8.bestAction(state: $0) } })
        let vBehaviour = estimate(nextAction: behaviourNext, heldAction: { held[$0].action })
        report.figures["fqe_candidate_reward_per_step"] = vCandidate ?? .nan
        report.figures["fqe_behaviour_reward_per_step"] = vBehaviour ?? .nan
        if let c = vCandidate, let b = vBehaviour, b != 0 {
            report.figures["fqe_improvement"] = (c - b) / abs(b)
        }
    }
}

/// Which log rows widen a candidate's support: the region of states it acts in, its training
/// rows' box widened by `safety.support_margin` (docs/learning.md, "The support widens from
/// candidate to candidate").
///
/// A candidate in its trial takes the plant up to its support's edge plus the margin; were its
/// rows counted, the next candidate's support would start from there and its margin reach
/// further — a ratchet, one candidate at a time, into states no trusted controller ever chose
/// (on the thermal zone, 3.8 K below the comfort band in the incumbent's log grew to 8.7 K
/// over three stopped candidates). So only the controllers the gateway trusts widen it: the
/// incumbent, and models that passed a trial or were served (not the ones the guard removed).
/// The rows of a model outside `trusted` in charge are left out — from its first control row
/// on, and its shadow rows after it too (the hand-backs of its block: outside its support the
/// incumbent holds the plant, where the model took it) — and so are the `settleRows` rows
/// after its last one, where the plant is still where it left it (the trial's burn-in: the
/// next controller's first ticks start from the candidate's excursion). Shadow rows that name
/// an untrusted model without following its control rows (a model only shadowed) are kept.
/// The rows are still learned from; only the box leaves them out.
public struct SupportRows: Sendable, Equatable {
    /// The model versions, as the log names them (`model_version`), whose control rows count.
    public var trusted: Set<String>
    /// Rows after an untrusted model's control rows that are left out too, ≥ 0.
    public var settleRows: Int

    /// A rule counting the control rows of `trusted` only, and `settleRows` rows after others'.
    public init(trusted: Set<String>, settleRows: Int) {
        self.trusted = trusted
        self.settleRows = max(0, settleRows)
    }

    /// The indices of `rows` (oldest first) the support is fitted on: every row but an
    /// untrusted model's stretches in charge (its control rows and the shadow rows naming it
    /// that follow them) and the `settleRows` after each; all of them when that would leave
    /// none (a support from nothing would check nothing).
    public func kept(_ rows: [EdgeQLog.Transition]) -> [Int] {
        var kept: [Int] = []
        kept.reserveCapacity(rows.count)
        var inCharge: String?   // the untrusted model whose stretch is going on
        var leftOutThrough = -1
        for (i, t) in rows.enumerated() {
            if let v = t.modelVersion, !trusted.contains(v), t.mode == .control || v == inCharge {
                inCharge = v
                leftOutThrough = i + settleRows
                continue
            }
            inCharge = nil
            if i > leftOutThrough { kept.append(i) }
        }
        return kept.isEmpty ? Array(rows.indices) : kept
    }
}
