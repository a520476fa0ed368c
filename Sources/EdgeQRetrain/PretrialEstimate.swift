import EdgeQCore
import EdgeQModel
import EdgeQNet
import EdgeQTopicMap
import Foundation

/// The pre-trial estimate (docs/learning.md, "Judging a candidate on the plant model"): a
/// candidate Q-network and the current controller each run in closed loop on the plant model
/// (`ModelWorld`) from the same starts in the log, and the paired differences of their
/// discounted returns say whether the candidate is predicted better or worse.
///
/// Starts: `runs` sample indices drawn (seeded) in strata over every start that leaves the
/// model its memory and the run `horizon` steps before its segment ends, so they spread over
/// the segments in proportion to their length. Pass the log's held-out part
/// (`PlantData.splitByTime`), the one the model was not fitted on, when there is one.
///
/// Verdict, at the one-sided `confidence` (Student's t on the paired differences, their standard
/// error taken over blocks of `horizon` ticks — overlapping runs are not independent):
/// `predicted_worse` when the upper bound of the mean difference (candidate − current) is below
/// 0, `predicted_better` when the lower bound is above 0, `inconclusive` otherwise, and
/// `not_applicable` (with the reason) when the mapping cannot be judged on a model or the data
/// leave no room for a run.
///
/// Calibration: from the same starts the model also replays the logged actions open loop, and
/// the log itself says what they returned (`ModelWorld.Policy.observed`). The mean of those
/// errors is the model's bias on the returns it can be checked against; against a served
/// network also its closed-loop bias, over the stretches of the log that network ran itself
/// (the larger counts). A model whose bias is
/// at least as large as the difference it predicts cannot tell the sign of that difference: a
/// `predicted_worse` or `predicted_better` becomes `uncalibrated` (on cart-pole the served
/// network returned 29–31 on the linear model where the log shows 61.9 from the same starts,
/// and the estimate called candidates worse that balanced 500 steps of 500).
public struct PretrialEstimate: Sendable {
    /// The controller the candidate is compared with.
    public enum Current: Sendable {
        /// The incumbent (or whoever acted in the log): its logged actions, open loop.
        case logged
        /// A served Q-network.
        case network(QModel)
    }

    /// How the estimate is drawn.
    public struct Settings: Sendable, Equatable {
        /// Paired runs (starts). Default 48.
        public var runs = 48
        /// Steps per run. Default 96.
        public var horizon = 96
        /// One-sided confidence of the verdict, in (0.5, 1). Default 0.95 (the trial's default).
        public var confidence = 0.95
        /// Seeds the starts.
        public var seed: UInt64 = 1
        /// Engine precision of the networks. Default `.int8`.
        public var precision: Precision = .int8
        /// Discount factor of the returns; nil: the mapping's `learning.gamma`. Default nil.
        public var gamma: Double?

        /// The defaults.
        public init() {}

        /// The defaults with the mapping's trial confidence and, for a tick-block trial, its
        /// block length as the horizon.
        public init(map: TopicMap) {
            confidence = map.learning.trial.confidence
            if case .ticks(let n) = map.learning.trial.block { horizon = n }
        }
    }

    /// The verdict.
    public enum Verdict: String, Sendable, Codable, Equatable {
        /// The lower confidence bound of the mean paired difference is above 0.
        case predictedBetter = "predicted_better"
        /// The upper confidence bound is below 0: keep the candidate out of the trial.
        case predictedWorse = "predicted_worse"
        /// The bounds straddle 0: the model cannot tell.
        case inconclusive
        /// The estimate could not be made (`Report.reason` says why and what to do).
        case notApplicable = "not_applicable"
        /// The bounds were on one side of 0, but the model's bias on the logged actions' returns
        /// (`Report.calibrationBias`) is at least as large as the difference it predicts: it
        /// cannot tell the sign (`Report.reason` gives the figures). The trial decides.
        case uncalibrated
    }

    /// The report (JSON with snake_case keys).
    public struct Report: Sendable, Codable, Equatable {
        /// The verdict.
        public var verdict: Verdict
        /// Why the estimate is not applicable (nil otherwise).
        public var reason: String?
        /// The current controller: `logged` or `network`.
        public var current: String
        /// The plant model's description.
        public var model: String
        /// Paired runs made.
        public var runs = 0
        /// Independent blocks the standard error is computed over: the runs starting in the same
        /// horizon-long block of a segment share most of their ticks and count as one (batch means).
        public var blocks = 0
        /// Steps per run (at most; a run ends earlier at the model's end condition).
        public var horizon = 0
        /// Discount factor of the returns.
        public var gamma = 0.0
        /// One-sided confidence of the bounds.
        public var confidence = 0.0
        /// Mean discounted return of the candidate and of the current controller.
        public var candidateMeanReturn = 0.0
        /// See `candidateMeanReturn`.
        public var currentMeanReturn = 0.0
        /// Mean of the paired differences (candidate − current).
        public var meanDifference = 0.0
        /// Its standard error, from the blocks' mean differences (batch means).
        public var standardError = 0.0
        /// One-sided lower and upper bounds of the mean difference at `confidence`.
        public var lowerBound = 0.0
        /// See `lowerBound`.
        public var upperBound = 0.0
        /// The predicted relative change of the return, % of |current mean return| (positive:
        /// better); nil when the current mean return is 0.
        public var relativeChangePct: Double?
        /// The candidate's decisions where the safety policy acted instead (all runs).
        public var candidateFallbacks = 0
        /// The current network's (0 for the logged actions).
        public var currentFallbacks = 0
        /// The model's uncertainty along the candidate's runs (the ensemble's spread; 0 for a
        /// model without a measure of it): mean over the steps and largest.
        public var meanUncertainty = 0.0
        /// See `meanUncertainty`.
        public var maxUncertainty = 0.0
        /// Mean discounted return the log itself shows from the runs' starts (the logged actions
        /// and what followed them), over the same horizon; nil when not measured.
        public var observedMeanReturn: Double?
        /// Mean discounted return the model predicts for the same logged actions, open loop.
        public var replayMeanReturn: Double?
        /// The model's bias on the returns it can be checked against: the larger in magnitude of
        /// the open-loop one (mean of replayed − observed over the runs) and `closedLoopBias`.
        /// `uncalibrated` when |bias| ≥ |mean difference|.
        public var calibrationBias: Double?
        /// Against a served network: over the runs whose logged stretch was that network's own
        /// (its greedy choice was the logged action on at least `ownStretchAgreement` of the
        /// steps), the mean of its return on the model minus the logged return; nil when no run's
        /// stretch was its own.
        public var closedLoopBias: Double?
        /// Runs `closedLoopBias` is the mean over.
        public var closedLoopRuns = 0

        /// A report with nothing measured yet.
        public init(verdict: Verdict, reason: String? = nil, current: String, model: String) {
            self.verdict = verdict
            self.reason = reason
            self.current = current
            self.model = model
        }

        enum CodingKeys: String, CodingKey {
            case verdict, reason, current, model, runs, blocks, horizon, gamma, confidence
            case candidateMeanReturn = "candidate_mean_return", currentMeanReturn = "current_mean_return"
            case meanDifference = "mean_difference", standardError = "standard_error"
            case lowerBound = "lower_bound", upperBound = "upper_bound", relativeChangePct = "relative_change_pct"
            case candidateFallbacks = "candidate_fallbacks", currentFallbacks = "current_fallbacks"
            case meanUncertainty = "mean_uncertainty", maxUncertainty = "max_uncertainty"
            case observedMeanReturn = "observed_mean_return", replayMeanReturn = "replay_mean_return"
            case calibrationBias = "calibration_bias", closedLoopBias = "closed_loop_bias", closedLoopRuns = "closed_loop_runs"
        }
    }

    /// The share of a logged stretch's steps on which a served network's greedy choice must be
    /// the logged action for the stretch to count as that network's own in the closed-loop
    /// calibration (the rest: exploration, a trial's other arm, the incumbent's blocks).
    public static let ownStretchAgreement = 0.9

    /// The mapping.
    public let map: TopicMap
    /// The plant model.
    public let model: any PlantModel
    /// The data the runs start from (the held-out part preferred).
    public let data: PlantData
    /// How the estimate is drawn.
    public var settings: Settings

    /// An estimator for `map`, `model`, `data`.
    public init(map: TopicMap, model: any PlantModel, data: PlantData, settings: Settings) {
        self.map = map
        self.model = model
        self.data = data
        self.settings = settings
    }

    /// The starts (segment, sample) the runs use: seeded, one per stratum of the valid starts.
    public func starts(earliest: Int) -> [(segment: Int, start: Int)] {
        let h = max(1, settings.horizon)
        // Valid starts of segment i: earliest ... count − 1 − h.
        let counts = data.segments.map { max(0, $0.count - 1 - h - earliest + 1) }
        let total = counts.reduce(0, +)
        guard total > 0, settings.runs > 0 else { return [] }
        var rng = SeededGenerator(seed: settings.seed)
        let n = min(settings.runs, total)
        var out: [(Int, Int)] = []
        for k in 0..<n {
            let lo = Double(total) * Double(k) / Double(n), hi = Double(total) * Double(k + 1) / Double(n)
            var pick = min(total - 1, Int(lo + (hi - lo) * rng.nextUnit()))
            for (i, c) in counts.enumerated() {
                if pick < c { out.append((i, earliest + pick)); break }
                pick -= c
            }
        }
        return out
    }

    /// Runs the candidate and the current controller from the same starts and compares them.
    /// Never throws: what keeps the estimate from being made is its `not_applicable` reason.
    public func estimate(candidate: QModel, current: Current) -> Report {
        let currentName: String
        switch current {
        case .logged: currentName = "logged"
        case .network: currentName = "network"
        }
        var report = Report(verdict: .notApplicable, current: currentName, model: model.description)
        report.horizon = settings.horizon
        report.confidence = settings.confidence
        var world: ModelWorld
        do {
            world = try ModelWorld(map: map, model: model, data: data)
            if let g = settings.gamma { world.gamma = g }
        } catch {
            report.reason = error.message
            return report
        }
        report.gamma = world.gamma
        let starts = starts(earliest: world.earliestStart)
        guard starts.count >= 2 else {
            report.reason = "the data leave room for \(starts.count) run\(starts.count == 1 ? "" : "s") of \(settings.horizon) steps (a segment needs \(world.earliestStart + settings.horizon + 1) samples): log longer, or shorten the horizon"
            return report
        }
        let currentPolicy: ModelWorld.Policy
        switch current {
        case .logged: currentPolicy = .logged
        case .network(let m): currentPolicy = .network(m, precision: settings.precision)
        }
        var differences: [Double] = []
        var clusterOf: [[Int]: Int] = [:]
        var clusterSums: [Double] = [], clusterCounts: [Int] = []
        var sumCandidate = 0.0, sumCurrent = 0.0, uncertainty = 0.0, steps = 0
        var sumObserved = 0.0, sumReplay = 0.0, sumOwn = 0.0, ownRuns = 0
        do {
            for (si, start) in starts {
                let a = try world.run(segment: si, start: start, horizon: settings.horizon,
                                      policy: .network(candidate, precision: settings.precision))
                let b = try world.run(segment: si, start: start, horizon: settings.horizon, policy: currentPolicy)
                // Calibration: what the logged actions returned on the plant, and on the model;
                // and where the served network itself ran the logged stretch, its own return.
                let replay: ModelWorld.Run, observed: ModelWorld.Run
                switch current {
                case .logged:
                    replay = b
                    observed = try world.run(segment: si, start: start, horizon: settings.horizon, policy: .observed)
                case .network(let m):
                    replay = try world.run(segment: si, start: start, horizon: settings.horizon, policy: .logged)
                    observed = try world.run(segment: si, start: start, horizon: settings.horizon,
                                             policy: .observed(comparedWith: m, precision: settings.precision))
                    if let agreement = observed.agreement, agreement >= Self.ownStretchAgreement {
                        ownRuns += 1
                        sumOwn += b.discountedReturn - observed.discountedReturn
                    }
                }
                sumObserved += observed.discountedReturn
                sumReplay += replay.discountedReturn
                differences.append(a.discountedReturn - b.discountedReturn)
                // Batch means: runs starting in the same horizon-long block of a segment overlap,
                // so they count as one observation for the standard error.
                let key = [si, (start - world.earliestStart) / max(1, settings.horizon)]
                let c = clusterOf[key] ?? clusterSums.count
                if c == clusterSums.count {
                    clusterOf[key] = c
                    clusterSums.append(0)
                    clusterCounts.append(0)
                }
                clusterSums[c] += a.discountedReturn - b.discountedReturn
                clusterCounts[c] += 1
                sumCandidate += a.discountedReturn
                sumCurrent += b.discountedReturn
                report.candidateFallbacks += a.fallbacks
                report.currentFallbacks += b.fallbacks
                uncertainty += a.meanUncertainty * Double(a.rewards.count)
                steps += a.rewards.count
                report.maxUncertainty = max(report.maxUncertainty, a.maxUncertainty)
            }
        } catch {
            report.reason = error.message
            return report
        }
        let n = Double(differences.count)
        report.runs = differences.count
        report.candidateMeanReturn = sumCandidate / n
        report.currentMeanReturn = sumCurrent / n
        report.meanUncertainty = steps > 0 ? uncertainty / Double(steps) : 0
        let observedMean = sumObserved / n, replayMean = sumReplay / n
        if observedMean.isFinite, replayMean.isFinite {
            report.observedMeanReturn = observedMean
            report.replayMeanReturn = replayMean
            report.calibrationBias = replayMean - observedMean
        }
        report.closedLoopRuns = ownRuns
        if ownRuns > 0, (sumOwn / Double(ownRuns)).isFinite {
            let own = sumOwn / Double(ownRuns)
            report.closedLoopBias = own
            // The larger of the two errors is the one the model's verdict must clear.
            if abs(own) > abs(report.calibrationBias ?? 0) { report.calibrationBias = own }
        }
        let mean = differences.reduce(0, +) / n
        let means = zip(clusterSums, clusterCounts).map { $0 / Double($1) }
        let k = Double(means.count)
        report.blocks = means.count
        guard means.count >= 2 else {
            report.reason = "the runs' starts fall in \(means.count) block of \(settings.horizon) ticks: a standard error needs at least 2 (log longer, hold out more, or shorten the horizon)"
            return report
        }
        let blockMean = means.reduce(0, +) / k
        let variance = means.reduce(0) { $0 + ($1 - blockMean) * ($1 - blockMean) } / (k - 1)
        let se = (variance / k).squareRoot()
        let t = StudentT.quantile(settings.confidence, degreesOfFreedom: k - 1)
        guard mean.isFinite, se.isFinite, t.isFinite, report.candidateMeanReturn.isFinite, report.currentMeanReturn.isFinite else {
            // A model that diverges along a run (an unstable fit driven far outside its data)
            // predicts nothing: say so instead of judging on infinities.
            report.candidateMeanReturn = report.candidateMeanReturn.isFinite ? report.candidateMeanReturn : 0
            report.currentMeanReturn = report.currentMeanReturn.isFinite ? report.currentMeanReturn : 0
            report.reason = "the plant model's runs diverged (a return is not a finite number): no estimate; the trial decides"
            return report
        }
        report.meanDifference = mean
        report.standardError = se
        report.lowerBound = mean - t * se
        report.upperBound = mean + t * se
        report.relativeChangePct = report.currentMeanReturn != 0 ? 100 * mean / abs(report.currentMeanReturn) : nil
        if report.upperBound < 0 {
            report.verdict = .predictedWorse
        } else if report.lowerBound > 0 {
            report.verdict = .predictedBetter
        } else {
            report.verdict = .inconclusive
        }
        if report.verdict != .inconclusive, let bias = report.calibrationBias, let observed = report.observedMeanReturn,
           abs(bias) >= abs(mean) {
            let closedLoop = report.closedLoopBias.map { abs($0) >= abs(report.replayMeanReturn.map { $0 - observed } ?? 0) } ?? false
            let what = closedLoop ? "the served model's own return on the \(report.closedLoopRuns) stretches of the log it ran itself"
                : "the return of the logged actions (the log: \(roundedForReading(observed, significant: 4)), the model: \(roundedForReading(observed + bias, significant: 4)))"
            report.reason = "the plant model is off by \(roundedForReading(bias, significant: 3)) on \(what) (mean over \(report.runs) runs of \(settings.horizon) ticks), at least the difference it predicts (\(roundedForReading(mean, significant: 3))): it cannot tell the sign; the trial decides"
            report.verdict = .uncalibrated
        }
        return report
    }
}
