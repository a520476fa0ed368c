import EdgeQCore
import EdgeQLog
import EdgeQNet
import EdgeQRetrain
import EdgeQTopicMap
import Foundation
import Logging

// The switchback trial and the control-group guard in the gateway (docs/operations.md, "The
// trial and the guard"; the statistics are `SwitchbackTrial` and `ControlGroupGuard`).
//
// Both run on the decision thread, inside the decision state: before each tick the gateway asks
// who is in charge (the candidate or the reference during a trial; the served model or the
// previous controller under the guard), runs the tick through the decision core with that
// controller, and feeds the transition the tick closed to the trial or guard of the controller
// that opened it. Verdicts, trips and progress go to the control queue, which promotes, rolls
// back, writes the trial's file and publishes.

/// Who acted on a tick, as the trial or the guard sees it.
enum ControllerRole: Sendable, Equatable {
    case trial(TrialArm)
    case guarded(GuardArm)
}

/// The controller a tick runs with.
struct TickController {
    /// The core's mode: `.control` when the gateway acts, `.shadow` when the incumbent does.
    var mode: ControlMode
    var engine: QEngine?
    var version: String?
    var role: ControllerRole?

    /// The same tick with the incumbent in charge (the state left the model's support).
    var asIncumbent: TickController { TickController(mode: .shadow, engine: engine, version: version, role: role) }
}

extension Gateway {
    // MARK: - Decision thread

    /// Who is in charge on this tick. In shadow mode the incumbent, always (a trial waits for
    /// control mode). In control mode with a model served, the guard's compared pair (the
    /// previous controller's control block and the served block paired with it) comes first,
    /// then the trial's arm while a trial runs, else the served model; so the guard keeps
    /// watching the served model through a trial, whose blocks are the guard's uncompared ones
    /// (aligned when the trial starts). With no model served (`promotion: trial` allows control
    /// mode without one) the trial's arm, or else the incumbent.
    func controller(_ d: inout DecisionState) -> TickController {
        let served = d.engineModel.map { String($0.version) }
        guard mode == .control else { return TickController(mode: .shadow, engine: d.engine, version: served, role: nil) }
        if d.engine != nil && d.guardTripped {
            // The guard found the served model worse than its control group: the control group's
            // controller runs the plant until the control queue has rolled back or fallen back
            // (a trial against the served model is then abandoned).
            if let p = d.previousModel, let e = d.previousEngine {
                return TickController(mode: .control, engine: e, version: String(p.version), role: nil)
            }
            return TickController(mode: .shadow, engine: nil, version: nil, role: nil)
        }
        // (A guard exists only while a model is served: `servedModelChanged`.)
        if let trial = d.trial, let candidate = d.trialCandidate, d.controlGroup?.inComparedPair != true {
            let arm = trial.arm
            switch arm {
            case .candidate:
                return TickController(mode: .control, engine: d.trialEngine, version: String(candidate.version), role: .trial(arm))
            case .reference:
                if d.trialReference == nil { return TickController(mode: .shadow, engine: nil, version: nil, role: .trial(arm)) }
                return TickController(mode: .control, engine: d.engine, version: served, role: .trial(arm))
            }
        }
        if d.engine != nil, let g = d.controlGroup, g.isActive {
            let arm = g.arm
            if arm == .control {
                if let p = d.previousModel, let e = d.previousEngine {
                    return TickController(mode: .control, engine: e, version: String(p.version), role: .guarded(arm))
                }
                return TickController(mode: .shadow, engine: nil, version: nil, role: .guarded(arm))
            }
            return TickController(mode: .control, engine: d.engine, version: served, role: .guarded(arm))
        }
        if d.engine == nil && map.learning.promotion == .trial {
            // Control allowed, nothing proven yet: the incumbent stays in charge.
            return TickController(mode: .shadow, engine: nil, version: nil, role: nil)
        }
        return TickController(mode: .control, engine: d.engine, version: served, role: nil)
    }

    /// Feeds the transition a tick closed (or could not close) to the trial or guard of the
    /// controller that opened it, and acts on what they say.
    func feedTrialAndGuard(_ d: inout DecisionState, _ out: DecisionCore.Outcome, closedRole: ControllerRole?) {
        // The exogenous baselines run on every tick (their change filters need each one); the
        // prediction is for the transition this tick closed (its reward is observed now).
        let trialBase = d.trialBaseline?.advance(d.core.signals) ?? 0
        let guardBase = d.guardBaseline?.advance(d.core.signals) ?? 0
        defer { beginNoveltyProbation(&d) }
        watchConditions(&d, closedRole: closedRole)
        guard let role = closedRole else { return }
        let ended = out.closed.map { $0.terminal || $0.truncated } ?? out.episodeEnded
        let reward = out.closed?.reward
        switch role {
        case .trial(let arm):
            guard d.trial != nil else { return }
            // The trial's blocks are the guard's uncompared ones: its clock counts them too, so
            // its compared pairs keep their place between the trial's blocks.
            if let event = d.controlGroup?.skip(episodeEnded: ended) { handleGuardEvent(&d, event) }
            recordGuardIfPaired(&d)
            let event = reward.map { d.trial?.record(reward: $0, baseline: trialBase, arm: arm, episodeEnded: ended) } ?? d.trial?.skip(episodeEnded: ended)
            guard let event = event ?? nil, let trial = d.trial, let candidate = d.trialCandidate else { return }
            let summary = trial.summary
            let reference = d.trialReference?.version
            let noise = d.trialNoise
            switch event {
            case .switched, .continued:
                let record = TrialRecord(trial, candidate: candidate.version, reference: reference, conditions: trialConditions(d), noise: noise)
                trialRecordSlot.withLock { $0 = record }
                control.async {
                    self.trialProgress(candidate: candidate, reference: reference, arm: trial.arm, summary, noise: noise)
                    self.writeTrialRecord()
                }
            case .verdict(let v):
                let conditions = trialConditions(d)
                endTrial(&d)
                control.async {
                    let early = v == .reject && summary.pairs < self.map.learning.trial.minPairs
                    let reason = summary.stopLoss.map(Self.stopLossReason) ?? (early ? Self.earlyStopReason(summary, noise: noise) : nil)
                    self.finishTrial(candidate: candidate, reference: reference, verdict: v.rawValue, summary: summary, reason: reason,
                                     conditions: conditions, noise: noise)
                }
            }
        case .guarded(let arm):
            guard d.controlGroup != nil else { return }
            let event = reward.map { d.controlGroup?.record(reward: $0, baseline: guardBase, arm: arm, episodeEnded: ended) } ?? d.controlGroup?.skip(episodeEnded: ended)
            recordGuardIfPaired(&d)
            handleGuardEvent(&d, event ?? nil)
        }
    }

    /// After a guard's tick: when it compared a new pair (once a cycle), its record goes to the
    /// control queue to be written beside the served model (`models/vN/guard.json`), so that a
    /// restart resumes the evidence. Allocates only then; never touches the disk here.
    private func recordGuardIfPaired(_ d: inout DecisionState) {
        guard let g = d.controlGroup, g.comparedPairs != d.guardRecordedPairs, !g.hasTripped,
              let served = d.engineModel?.version else { return }
        d.guardRecordedPairs = g.comparedPairs
        var taken = GuardRecord(g, served: served, controlGroup: ModelStore.ControlGroupRecord(d.previousModel?.version).description)
        taken.conditions = provenConditionsRecord(d)
        guardRecordSlot.withLock { $0 = (taken, d.engineGeneration) }
        control.async { self.writeGuardRecord() }
    }

    /// Decision thread, every tick: this tick's conditions (`conditionNames`: each exogenous
    /// signal's value, then — with blocks of ticks — its exponential mean over about one block,
    /// so that a cold spell is new even when each of its hours was seen before). A tick the
    /// trial scores widens the trial's ranges; in control mode, with the guard watching a model
    /// that has proven conditions, a value beyond them (by more than their margin) is a novel
    /// condition: the range grows to it and the guard is asked for a probation
    /// (`promotion.novelty_pairs`). Allocates nothing unless a condition is novel.
    private func watchConditions(_ d: inout DecisionState, closedRole: ControllerRole?) {
        let n = exogenous.count, count = conditionNames.count
        guard count > 0 else { return }
        if d.conditionValues.count != count {
            d.conditionValues = [Double](repeating: .nan, count: count)   // once
        }
        for k in 0..<n { d.conditionValues[k] = d.core.signals[exogenous[k].position] }
        if let tau = conditionSmoothing {
            for (j, k) in conditionSmoothed.enumerated() {
                let v = d.conditionValues[k], m = d.conditionValues[n + j]
                guard v.isFinite else { continue }
                d.conditionValues[n + j] = m.isFinite ? m + (v - m) / tau : v
            }
        }
        if case .trial = closedRole, d.trial != nil, d.trialConditionLow.count == count {
            for k in 0..<count {
                let v = d.conditionValues[k]
                guard v.isFinite else { continue }
                if v < d.trialConditionLow[k] { d.trialConditionLow[k] = v }
                if v > d.trialConditionHigh[k] { d.trialConditionHigh[k] = v }
            }
        }
        guard map.learning.noveltyPairs > 0, mode == .control, !d.guardTripped, d.provenLow.count == count,
              d.controlGroup?.isActive == true else { return }
        for k in 0..<count {
            let v = d.conditionValues[k]
            let low = d.provenLow[k], high = d.provenHigh[k], margin = d.provenMargin[k]
            guard v.isFinite, low.isFinite, high.isFinite, v < low - margin || v > high + margin else { continue }
            d.provenLow[k] = min(low, v)
            d.provenHigh[k] = max(high, v)
            // While a probation runs or waits, going further extends it without an event of its
            // own (a mean that climbs would otherwise say so every few ticks); the status's
            // ranges catch up at the guard's next pair.
            let quiet = d.noveltyPending || (d.controlGroup?.probationPairsLeft ?? 0) > 0 || (d.controlGroup?.probationPairsPending ?? 0) > 0
            d.noveltyPending = true
            guard !quiet else { continue }
            let name = conditionNames[k], range = [min(low, v), max(high, v)], version = d.engineModel?.version
            control.async { self.novelCondition(signal: name, value: v, before: [low, high], after: range, served: version) }
        }
    }

    /// Decision thread, after the tick's trial and guard were fed: a novel condition's probation
    /// is asked for when no trial pair is under way (a pair of the trial is not split by it).
    private func beginNoveltyProbation(_ d: inout DecisionState) {
        guard d.noveltyPending, d.trial?.betweenPairs ?? true else { return }
        d.noveltyPending = false
        d.controlGroup?.requestProbation(pairs: map.learning.noveltyPairs)
        if let s = d.controlGroup?.summary { guardSummary.withLock { $0 = s } }
    }

    /// The running trial's conditions, {name: [low, high]} over the exogenous signals it saw
    /// (allocates: once, at its verdict).
    private func trialConditions(_ d: DecisionState) -> [String: [Double]] {
        var out: [String: [Double]] = [:]
        guard d.trialConditionLow.count == conditionNames.count else { return out }
        for k in conditionNames.indices where d.trialConditionLow[k] <= d.trialConditionHigh[k] {
            out[conditionNames[k]] = [d.trialConditionLow[k], d.trialConditionHigh[k]]
        }
        return out
    }

    /// Decision thread, when a model is served: its proven conditions, from its promoting
    /// trial (none without one: nothing is then novel), widened by a tenth of each range.
    private func setProvenConditions(_ d: inout DecisionState) {
        let ranges = d.engineModel?.promotingTrial?.conditions ?? [:]
        d.provenLow = conditionNames.map { ranges[$0]?.first ?? .nan }
        d.provenHigh = conditionNames.map { ranges[$0]?.last ?? .nan }
        d.provenMargin = conditionNames.indices.map { k in
            d.provenHigh[k].isFinite && d.provenLow[k].isFinite ? Self.noveltyMargin * (d.provenHigh[k] - d.provenLow[k]) : 0
        }
        d.noveltyPending = false
        provenConditions.withLock { $0 = (ranges, 0) }
    }

    /// Beyond the proven range by more than this share of its width, a value is novel.
    static let noveltyMargin = 0.1

    /// The served model's proven conditions as the guard's record keeps them ({name: [low, high]}).
    func provenConditionsRecord(_ d: DecisionState) -> [String: [Double]] {
        var out: [String: [Double]] = [:]
        guard d.provenLow.count == conditionNames.count else { return out }
        for k in conditionNames.indices where d.provenLow[k].isFinite && d.provenHigh[k].isFinite {
            out[conditionNames[k]] = [d.provenLow[k], d.provenHigh[k]]
        }
        return out
    }

    /// Control queue: a novel condition was seen — counted, logged, published on
    /// `<prefix>/retrain` (`{"phase":"guard_watch", …}`) and in the status.
    func novelCondition(signal: String, value: Double, before: [Double], after: [Double], served: Int?) {
        metrics.novelConditions.increment()
        provenConditions.withLock {
            $0.ranges[signal] = after
            $0.novel += 1
        }
        let pairs = map.learning.noveltyPairs
        let text = String(format: "%@ = %.4g is beyond the range the served model's trial saw (%.4g … %.4g): the control-group guard compares a control block beside every served block for the next %d pairs",
                          signal, value, before[0], before[1], pairs)
        logger.warning("\(text)", metadata: ["model.version": "\(served.map(String.init) ?? "none")"])
        publishRetrain(["phase": .string("guard_watch"), "event": .string("novel_condition"), "signal": .string(signal), "value": .number(value),
                        "proven": .array(before.map { .number($0) }), "range": .array(after.map { .number($0) }),
                        "probation_pairs": .number(Double(pairs)), "version": served.map { .number(Double($0)) } ?? .null, "reason": .string(text)])
        publishStatus()
    }

    /// Control queue: writes the newest guard record handed over (none when an earlier call
    /// wrote it already), unless another model was served since it was taken (a record of an
    /// earlier guard must not outlive the switch). A failed write is logged: a restart then
    /// resumes from the last record written, or starts afresh.
    func writeGuardRecord() {
        guard let (record, generation) = guardRecordSlot.withLock({ s in defer { s = nil }; return s }),
              servedGeneration.load(ordering: .acquiring) == generation else { return }
        if let grown = record.conditions { provenConditions.withLock { $0.ranges = grown } }
        do {
            try record.write(to: store.guardURL(record.served))
        } catch {
            logger.warning("the guard's record cannot be written; a restart would not resume its pairs",
                           metadata: ["model.version": "\(record.served)", "guard.pairs": "\(record.pairs)", "error": "\(error)"])
        }
    }

    /// After a block of the guard ended: its figures for the status, and on a trip the served
    /// model taken out (the control queue rolls back or falls back to shadow).
    private func handleGuardEvent(_ d: inout DecisionState, _ event: GuardEvent?) {
        guard let event, let g = d.controlGroup else { return }
        let summary = g.summary
        guardSummary.withLock { $0 = summary }
        if event == .tripped {
            let from = d.engineModel?.version
            let previous = d.previousModel?.version
            d.controlGroup = nil
            d.guardBaseline = nil
            d.guardTripped = true
            control.async { self.guardTripped(from: from, control: previous, summary) }
        }
    }

    /// The ticks the stop-loss's yardstick before a trial is measured over (`trialStart`): a
    /// block's scored ticks (1 for episode blocks, where it is not used).
    var inChargeSpan: Int {
        let c = map.learning.trial
        if case .ticks(let b) = c.block { return max(1, b - c.burnIn) }
        return 1
    }

    /// Ends the running trial on the decision thread (the candidate's engine is let go).
    func endTrial(_ d: inout DecisionState) {
        d.trial = nil
        d.trialCandidate = nil
        d.trialEngine = nil
        d.trialReference = nil
        d.trialBaseline = nil
        d.trialNoise = nil
        metrics.trialActive.set(0)
    }

    /// Whether a trial or guard for `m` adjusts by its exogenous baseline: the evaluator (nil:
    /// not adjusted) and a line saying why or why not (reports). Allocates: call it when a trial
    /// or guard starts, or on the control queue.
    func baselineUse(_ m: ServedModel?) -> (evaluator: BaselineEvaluator?, note: String) {
        guard let m else { return (nil, "no model") }
        guard map.learning.trial.adjust == .exogenous else {
            return (nil, "not adjusted: the mapping turns it off (learning.promotion.trial.adjust: none)")
        }
        guard let b = m.baseline else {
            // A mapping that rules a baseline out gives none to any model (a fleet model's is not
            // even fitted): say why, as a retraining's report says it.
            if let none = ExogenousBaseline.ruledOut(by: map), let why = none.report.reason {
                return (nil, "not adjusted: \(why)")
            }
            return (nil, "not adjusted: version \(m.version) came without an exogenous baseline (baseline.json; a model imported by hand or stored by an older gateway has none, and a fleet model has none when this gateway could not read its log to fit one)")
        }
        guard let model = b.usable else {
            return (nil, "not adjusted: the exogenous baseline was not accepted: \(b.report.reason ?? "no reason recorded")")
        }
        do {
            let e = try BaselineEvaluator(model: model, loggedSignalNames: map.loggedSignalNames)
            let ratio = b.report.heldOutVarianceRatio.map { String(format: "%.2f", $0) } ?? "?"
            return (e, "adjusted by the exogenous baseline of \(model.signals.joined(separator: ", ")) (held-out placebo variance ratio \(ratio))")
        } catch {
            return (nil, "not adjusted: \(error.message)")
        }
    }

    /// Decision thread, when the control queue put a new candidate in the slot: starts its
    /// trial against the controller in charge now (a trial under way is abandoned: the newer
    /// candidate replaces it).
    func pickUpCandidate(_ d: inout DecisionState) {
        let cg = candidateGeneration.load(ordering: .acquiring)
        guard cg != d.candidateEngineGeneration else { return }
        d.candidateEngineGeneration = cg
        if let running = d.trialCandidate, let trial = d.trial {
            let summary = trial.summary
            let reference = d.trialReference?.version
            let noise = d.trialNoise
            control.async { self.finishTrial(candidate: running, reference: reference, verdict: "abandoned", summary: summary,
                                             reason: "a newer candidate replaced it", noise: noise) }
        }
        endTrial(&d)
        guard let candidate = candidateSlot.withLock({ $0 }) else { return }
        // What the control queue read from the log for this candidate (taken, so the decision
        // thread holds the only copy of the baseline): the baseline warmed there, else at rest.
        let start = candidateStart.withLock { w -> (version: Int, evaluator: BaselineEvaluator?, rate: RecentResidualRate?)? in
            defer { w = nil }
            return w
        }.flatMap { $0.version == candidate.version ? $0 : nil }
        let baseline = start?.evaluator ?? baselineUse(candidate).evaluator
        let resuming = resumingTrial.withLock { r -> TrialRecord? in defer { r = nil }; return r }
        // The earlier trial's noise, measured with the blocks and adjustment this trial runs
        // with (`beginTrial` found it with the same `baselineUse` of the same candidate).
        var noise = candidateNoise.withLock { $0 }
        var resumedPairs: Int?
        do {
            d.trial = try SwitchbackTrial(config: map.learning.trial,
                                          seed: GatewaySeeds.trial(seed, candidate: candidate.version, reference: d.engineModel?.version),
                                          adjusted: baseline != nil, noise: noise?.noise)
            // After a restart: the trial that ran goes on from its blocks, with its own seed (the
            // order it drew), when it fits; else it starts afresh and the log says why.
            if let r = resuming {
                if let why = r.mismatch(candidate: candidate.version, reference: d.engineModel?.version, config: map.learning.trial, adjusted: baseline != nil) {
                    logger.warning("the switchback trial starts afresh: its record from before the restart does not fit (\(why))",
                                   metadata: ["model.version": "\(candidate.version)"])
                } else if let s = UInt64(r.seed), let blocks = r.trialBlocks {
                    // It pools the noise it pooled before the restart (none in an older record).
                    var t = try SwitchbackTrial(config: map.learning.trial, seed: s, adjusted: baseline != nil, noise: r.noise?.noise)
                    if let n = t.resume(blocks: blocks) {
                        d.trial = t
                        noise = r.noise
                        resumedPairs = n
                    } else {
                        logger.warning("the switchback trial starts afresh: its blocks from before the restart do not replay",
                                       metadata: ["model.version": "\(candidate.version)"])
                    }
                }
            }
        } catch {
            logger.error("the switchback trial cannot start: \(error)")
            return
        }
        d.trialCandidate = candidate
        d.trialConditionLow = [Double](repeating: .infinity, count: conditionNames.count)
        d.trialConditionHigh = [Double](repeating: -.infinity, count: conditionNames.count)
        if resumedPairs != nil, let ranges = resuming?.conditions {
            for (k, name) in conditionNames.enumerated() {
                guard let r = ranges[name], r.count == 2, r[0].isFinite, r[1].isFinite else { continue }
                d.trialConditionLow[k] = r[0]
                d.trialConditionHigh[k] = r[1]
            }
        }
        if let n = resumedPairs, let t = d.trial {
            let summary = t.summary, reference = d.engineModel?.version, resumedNoise = noise
            control.async { self.trialResumed(candidate: candidate, reference: reference, pairs: n, summary, noise: resumedNoise) }
        }
        // The stop-loss's yardstick until the trial's first reference block: the controller in
        // charge's rate over its last block of scored ticks in the log — raw in an unadjusted
        // trial, less the candidate's baseline in an adjusted one (where the exogenous signals
        // move the reward, raw rewards of another stretch of time are no yardstick: on the heater
        // a candidate was stopped at two blocks "lost" whose pairs spread by three blocks raw).
        if let p = start?.rate {
            d.trial?.setPriorReference(rate: p.rate, tickSD: p.tickSD, ticks: p.ticks,
                                       adjusted: baseline != nil ? (p.adjustedRate, p.adjustedTickSD) : nil)
        }
        d.trialEngine = candidate.model.makeEngine(options.precision)
        d.trialReference = d.engineModel
        d.trialBaseline = baseline
        d.trialNoise = noise
        // The guard's blocks and the trial's line up from here (its compared pair, if one is
        // running, finishes first, and the trial's first block starts where it ends).
        d.controlGroup?.restartUncomparedBlock()
        d.openRole = nil
        metrics.trialActive.set(1)
    }

    /// Decision thread, once after start: the guard of the model served before the restart
    /// goes on from its record when it watched the same model against the same control group
    /// with the same blocks and adjustment; else it starts afresh and the log says why.
    private func resumeGuard(_ d: inout DecisionState) {
        defer { d.guardRecordedPairs = d.controlGroup?.comparedPairs ?? 0 }
        guard let record = restoredGuard.withLock({ r -> GuardRecord? in defer { r = nil }; return r }),
              var g = d.controlGroup, g.isActive, let served = d.engineModel?.version else { return }
        let group = ModelStore.ControlGroupRecord(d.previousModel?.version).description
        if let why = record.mismatch(g, served: served, controlGroup: group) {
            logger.warning("the guard starts afresh: its record from before the restart does not fit (\(why))",
                           metadata: ["model.version": "\(served)", "guard.control_group": "\(group)"])
            return
        }
        guard g.resume(window: record.pairsForResume ?? [], scoredPairs: record.pairs, voidPairs: record.voidPairs,
                       probationPairsLeft: record.probationPairsLeft, switching: record.switching) else { return }
        d.controlGroup = g
        // The proven conditions as the guard had grown them.
        if let ranges = record.conditions, d.provenLow.count == conditionNames.count {
            for k in conditionNames.indices {
                guard let r = ranges[conditionNames[k]], r.count == 2, r[0].isFinite, r[1].isFinite, d.provenLow[k].isFinite else { continue }
                d.provenLow[k] = min(d.provenLow[k], r[0])
                d.provenHigh[k] = max(d.provenHigh[k], r[1])
            }
            let grown = provenConditionsRecord(d)
            provenConditions.withLock { $0.ranges = grown }
        }
        logger.info("the guard goes on from its record: pairs compared before the restart are kept",
                    metadata: ["model.version": "\(served)", "guard.control_group": "\(group)", "guard.pairs": "\(g.comparedPairs)",
                               "guard.window_pairs": "\(g.window.count)"])
    }

    /// Decision thread, after a new model was picked up: the guard starts afresh for it, with the
    /// previous controller (the model served before it, or the incumbent) as its control group
    /// (after a restart it goes on from its record, `resumeGuard`); a trial whose reference was
    /// the model served until now is abandoned.
    func servedModelChanged(_ d: inout DecisionState) {
        d.previousModel = previousController.withLock { $0 }
        d.previousEngine = d.previousModel.map { $0.model.makeEngine(options.precision) }
        d.controlGroup = nil
        d.guardBaseline = nil
        d.guardTripped = false
        guardSummary.withLock { $0 = nil }
        setProvenConditions(&d)
        if d.engine != nil {
            do {
                // The served model's baseline was fitted on the log of the controller before it:
                // the guard's control group. Warmed on the log by the control queue when it
                // handed the model over (taken: the only copy), else at rest.
                let version = d.engineModel?.version
                let warmed = servedBaseline.withLock { w -> (version: Int, evaluator: BaselineEvaluator)? in
                    defer { w = nil }
                    return w
                }.flatMap { $0.version == version ? $0.evaluator : nil }
                let baseline = warmed ?? baselineUse(d.engineModel).evaluator
                // The trial that promoted it measured the guard's own contrast when its reference
                // is the control group and it adjusted as the guard will: borrow its noise.
                let trial = d.engineModel?.promotingTrial
                let noise = trial.flatMap { $0.reference == d.previousModel?.version && $0.adjusted == (baseline != nil) ? $0.noise : nil }
                d.controlGroup = try ControlGroupGuard(settings: .init(learning: map.learning),
                                                       seed: GatewaySeeds.controlGroup(seed, served: d.engineModel?.version),
                                                       adjusted: baseline != nil, noise: noise)
                resumeGuard(&d)
                if let g = d.controlGroup, g.isActive {
                    d.guardBaseline = baseline
                    guardSummary.withLock { $0 = g.summary }
                }
            } catch {
                logger.error("the control-group guard cannot start: \(error)")
            }
        }
        if let running = d.trialCandidate, let trial = d.trial, d.trialReference?.version != d.engineModel?.version {
            let summary = trial.summary
            let reference = d.trialReference?.version
            let noise = d.trialNoise
            endTrial(&d)
            control.async { self.finishTrial(candidate: running, reference: reference, verdict: "abandoned", summary: summary,
                                             reason: "the served model changed during the trial", noise: noise) }
        }
        d.openRole = nil
    }

    // MARK: - Control queue

    /// Starts a switchback trial for a stored, checked version (it runs while the gateway is in
    /// control mode; in shadow mode it waits).
    ///
    /// While another trial runs, the candidate waits (a newer one replaces an older one that
    /// waits): a trial is never cut short by the next retraining; it starts when the running one
    /// is decided, against the controller in charge then. The waiting candidate is marked on disk
    /// (`models/vN/trial-pending.json`), so a restart queues it again (`resumeTrialAtStart`).
    func startTrial(_ version: Int) throws {
        let m = try loadVerified(version)
        if trialRunning.load(ordering: .relaxed) {
            queueCandidate(m, note: "a trial is under way: this candidate's trial starts when it is decided")
            return
        }
        beginTrial(m)
    }

    /// Control queue: `m` waits for the running trial — replacing the candidate that waited,
    /// whose mark goes —, marked on disk (`markPending`), and says so (`queued` event, `note`).
    private func queueCandidate(_ m: ServedModel, note: String) {
        let replaced = waitingCandidate.withLock { w -> Int? in
            defer { w = m }
            return w?.version
        }
        if let replaced, replaced != m.version { try? FileManager.default.removeItem(at: store.pendingTrialURL(replaced)) }
        markPending(m.version, began: false, replaces: replaced)
        publishRetrain(["phase": .string("trial"), "event": .string("queued"), "version": .number(Double(m.version)),
                        "replaces": replaced.map { .number(Double($0)) } ?? .null, "note": .string(note)])
        logger.notice("candidate waits for the running trial", metadata: ["model.version": "\(m.version)",
                                                                          "trial.replaces_waiting": "\(replaced.map(String.init) ?? "none")"])
    }

    /// Control queue: marks `version` as owed a trial with no block on record
    /// (`ModelStore.pendingTrialURL`): `began` false while it waits for the running trial, true
    /// once its own began. A failed write is logged: the trial goes on, but a restart before its
    /// first block is recorded would forget the candidate.
    func markPending(_ version: Int, began: Bool, replaces: Int? = nil) {
        let o: [String: JSONValue] = ["version": .number(Double(version)), "began": .bool(began),
                                      "since": .number((Date().timeIntervalSince1970 * 1000).rounded() / 1000),
                                      "replaces": replaces.map { .number(Double($0)) } ?? .null]
        do {
            try DurableFile.write(Data(JSONValue.object(o).jsonText.utf8), to: store.pendingTrialURL(version))
        } catch {
            logger.warning("the candidate owed a trial cannot be marked; a restart before its trial records a block would forget it",
                           metadata: ["model.version": "\(version)", "trial.began": "\(began)", "error": "\(error)"])
        }
    }

    /// Hands `m` to the decision thread for its trial, and says so. `onRecord`: a trial resumed
    /// from its record (`trial-running.json`), which a restart resumes again.
    func beginTrial(_ m: ServedModel, onRecord: Bool = false) {
        let version = m.version
        // Until its first block is on record, a restart begins it again.
        if !onRecord { markPending(version, began: true) }
        trialRunning.store(true, ordering: .relaxed)
        let adjusted = baselineUse(m).evaluator != nil
        let found = map.learning.trial.earlyStop ? earlierTrialNoise(candidate: version, adjusted: adjusted) : nil
        candidateNoise.withLock { $0 = found }
        let start = trialStart(m, adjusted: adjusted)
        candidateStart.withLock { $0 = (version: version, evaluator: start.evaluator, rate: start.rate) }
        if map.learning.trial.stopLoss != nil, case .ticks = map.learning.trial.block {
            if let p = start.rate {
                let how = adjusted ? ", less the candidate's exogenous baseline" : " (raw rewards, twice the share)"
                logger.info("until the trial's first reference block is scored, the stop-loss measures the candidate against the controller in charge's last block in the log\(how)",
                            metadata: ["model.version": "\(version)", "trial.prior_ticks": "\(p.ticks)", "trial.prior_rate": "\(p.rate)",
                                       "trial.prior_adjusted_rate": "\(adjusted ? "\(p.adjustedRate)" : "-")"])
            } else {
                logger.info("the stop-loss has no yardstick until the trial's first reference block is scored: the end of the log holds less than half a block of the controller in charge's ticks, or could not be read",
                            metadata: ["model.version": "\(version)"])
            }
        }
        candidateSlot.withLock { $0 = m }
        candidateGeneration.add(1, ordering: .releasing)
        let reference = servedVersion
        fleet?.trialBegan(version: version, reference: reference, waitingForControl: mode != .control)
        publishRetrain(["phase": .string("trial"), "event": .string("started"), "version": .number(Double(version)),
                        "reference": reference.map { .string("v\($0)") } ?? .string("incumbent"),
                        "waiting_for_control": .bool(mode != .control)])
        logger.notice("switchback trial started", metadata: ["model.version": "\(version)", "trial.reference": "\(reference.map { "v\($0)" } ?? "incumbent")",
                                                             "trial.waiting_for_control": "\(mode != .control)"])
        // The status shows the trial at once (`trial_running`), not at the next periodic one.
        publishStatus()
    }

    /// Control queue, when `m`'s trial starts: its exogenous baseline warmed on the end of the
    /// log (`warmedBaseline`; nil unless `adjusted`) and the controller in charge's rate there —
    /// less that baseline too when adjusted; raw, from the log's last two blocks of rows, when
    /// not (and only for tick blocks with a stop-loss: the rate is its yardstick).
    func trialStart(_ m: ServedModel, adjusted: Bool) -> (evaluator: BaselineEvaluator?, rate: RecentResidualRate?) {
        let inCharge: ExogenousBaseline.Reference = servedVersion.map { .model(String($0)) } ?? .incumbent
        if adjusted { return warmedBaseline(m, rateOf: inCharge).map { ($0.evaluator, $0.rate) } ?? (nil, nil) }
        let c = map.learning.trial
        guard c.stopLoss != nil, case .ticks = c.block,
              let rows = logEnd(2 * inChargeSpan, version: m.version, without: "the stop-loss has no yardstick before the trial's first reference block") else { return (nil, nil) }
        return (nil, RecentResidualRate.of(rows, baseline: nil, reference: inCharge, ticks: inChargeSpan, minimumTicks: max(2, inChargeSpan / 2)))
    }

    /// Control queue: `m`'s exogenous baseline run over the end of the log (`BaselineEvaluator.replay`:
    /// its change filters settled, where the decision thread goes on from), and — for the
    /// stop-loss's yardstick before an adjusted trial's first reference block — the rate of the
    /// controller `rateOf` over its last block of scored ticks there, raw and less the baseline
    /// (at least half a block of them, else none). Nil without a usable baseline or when the log
    /// cannot be read (said in the log: the baseline then starts at rest).
    func warmedBaseline(_ m: ServedModel?, rateOf: ExogenousBaseline.Reference?) -> (evaluator: BaselineEvaluator, rate: RecentResidualRate?)? {
        guard var evaluator = baselineUse(m).evaluator else { return nil }
        let span = inChargeSpan
        let warmUp = evaluator.warmUpRows
        guard let rows = logEnd(warmUp + (rateOf == nil ? 0 : 2 * span), version: m?.version,
                                without: "the exogenous baseline starts at rest") else { return nil }
        let rate = evaluator.replay(rows, reference: rateOf, ticks: span, warmUp: warmUp, minimumTicks: max(2, span / 2))
        return (evaluator, rate)
    }

    /// Control queue: the log's last `n` rows, the writer's queue committed first (so the log
    /// ends near the tick a trial or guard starts at); nil when the log cannot be read, with a
    /// warning that says what goes `without` them.
    func logEnd(_ n: Int, version: Int?, without: String) -> [LoggedTransition]? {
        do {
            try? writer.flush(timeout: 2)
            return try log.transitions(window: .lastRows(n))
        } catch {
            logger.warning("\(without): the log cannot be read", metadata: ["model.version": "\(version.map(String.init) ?? "none")", "error": "\(error)"])
            return nil
        }
    }

    /// Control queue: among the earlier trials on this device (the stored versions' `trial.json`,
    /// the candidate's own left out) that ran with the blocks and burn-in the mapping gives now,
    /// with the adjustment `adjusted`, over at least `min_pairs` scored pairs with a positive
    /// spread, the one with the **widest** spread (the newest of equals): its estimate of the
    /// pairs' noise, for the new trial's early stop. Any verdict counts. The widest, not the
    /// newest: a pair's spread is the plant's and the two controllers' — two models that both
    /// balance the cart-pole to the end differ by almost nothing, and a new candidate's pairs
    /// may spread far wider —, so the early stop takes the most it has seen and stays rare.
    /// Nil when there is none (a first trial, files written before the fields existed).
    func earlierTrialNoise(candidate: Int, adjusted: Bool) -> EarlierTrialNoise? {
        let c = map.learning.trial
        var widest: EarlierTrialNoise?
        for v in store.versions().sorted(by: >) where v != candidate {
            guard let data = try? Data(contentsOf: store.trialURL(v)),
                  let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                  Self.recordedBlocks(o, are: c),
                  o["adjusted"] as? Bool == adjusted,
                  let pairs = o["pairs"] as? Int, pairs >= c.minPairs,
                  let sd = o["sd"] as? Double, PairNoise(standardDeviation: sd, pairs: pairs) != nil else { continue }
            if sd > widest?.sd ?? 0 { widest = EarlierTrialNoise(version: v, sd: sd, pairs: pairs) }
        }
        return widest
    }

    /// The blocks a `trial.json` records (`block`: its ticks, or "episode"; `burn_in`, 0 for
    /// episodes) are the mapping's `c` (false for a file written before the fields existed).
    static func recordedBlocks(_ o: [String: Any], are c: TrialConfig) -> Bool {
        guard o["burn_in"] as? Int == scoredBurnIn(c) else { return false }
        switch c.block {
        case .ticks(let n): return o["block"] as? Int == n
        case .episode: return o["block"] as? String == "episode"
        }
    }

    /// The burn-in a trial with `c` scores by (an episode block has none).
    static func scoredBurnIn(_ c: TrialConfig) -> Int {
        if case .ticks = c.block { return c.burnIn }
        return 0
    }

    /// Control queue, after a block of the trial ended: the newest record handed over (none when
    /// an earlier call wrote it already) beside the candidate (`models/vN/trial-running.json`),
    /// unless that trial is over (its verdict removed the file, or another candidate took the
    /// slot). A failed write is logged: a restart then resumes from
    /// the last record written, or starts the trial afresh.
    func writeTrialRecord() {
        guard let record = trialRecordSlot.withLock({ s in defer { s = nil }; return s }),
              candidateSlot.withLock({ $0?.version == record.candidate }) else { return }
        do {
            try record.write(to: store.runningTrialURL(record.candidate))
            // On record now: a restart resumes it from there.
            try? FileManager.default.removeItem(at: store.pendingTrialURL(record.candidate))
        } catch {
            logger.warning("the switchback trial's record cannot be written; a restart would not resume its pairs",
                           metadata: ["model.version": "\(record.candidate)", "error": "\(error)"])
        }
    }

    /// Control queue, at start: the trial that ran when the gateway stopped (the newest version
    /// with a `trial-running.json` and no verdict) starts again and goes on from its record when
    /// it fits (same reference, settings and adjustment; the decision thread checks and says);
    /// with none to resume, the candidate whose trial had begun and recorded no block begins it
    /// again; then the candidate that waited (`trial-pending.json`) waits again, or begins its
    /// trial when none runs. A candidate that is served, quarantined, refused or already decided
    /// is not trialled.
    func resumeTrialAtStart() {
        guard map.learning.promotion == .trial else { return }
        let resumed = resumeRunningTrial()
        restorePendingCandidates(resumed: resumed)
    }

    /// Whether `v` may (still) have a trial: not served, not quarantined, not decided.
    private func mayBeTrialled(_ v: Int) -> Bool {
        v != servedVersion && !store.isQuarantined(v) && !FileManager.default.fileExists(atPath: store.trialURL(v).path)
    }

    /// The running trial of `resumeTrialAtStart`; returns its candidate (nil: none resumed).
    private func resumeRunningTrial() -> Int? {
        for v in store.versions().reversed() {
            let url = store.runningTrialURL(v)
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            guard let record = TrialRecord.load(from: url) else {
                logger.warning("a switchback trial's record cannot be read; that trial is not resumed", metadata: ["model.version": "\(v)"])
                try? FileManager.default.removeItem(at: url)
                continue
            }
            guard mayBeTrialled(v), let m = try? loadVerified(v) else {
                try? FileManager.default.removeItem(at: url)
                continue
            }
            resumingTrial.withLock { $0 = record }
            beginTrial(m, onRecord: true)
            return v
        }
        return nil
    }

    /// The candidates owed a trial of `resumeTrialAtStart` (`trial-pending.json`; the newest of
    /// each kind, any other mark is removed): the one whose trial had begun goes first, then the
    /// one that waited. Each begins its trial when none runs, or waits for the one that runs
    /// (`queued` event) — one waits at most, the newer (as when a retraining's candidate replaces
    /// a waiting one).
    private func restorePendingCandidates(resumed: Int?) {
        var pending: [(model: ServedModel, began: Bool)] = []
        for v in store.versions().reversed() {
            let url = store.pendingTrialURL(v)
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            let o = (try? Data(contentsOf: url)).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
            let began = o?["began"] as? Bool ?? false
            guard v != resumed, !pending.contains(where: { $0.began == began }), mayBeTrialled(v), let m = try? loadVerified(v) else {
                try? FileManager.default.removeItem(at: url)
                continue
            }
            pending.append((m, began))
        }
        for (m, began) in pending.sorted(by: { $0.began && !$1.began }) {
            if !trialRunning.load(ordering: .relaxed) {
                let before = began ? "whose trial had begun before the restart, with no block on record," : "that waited for a trial before the restart"
                logger.notice("the candidate \(before) begins its trial", metadata: ["model.version": "\(m.version)"])
                beginTrial(m)
                continue
            }
            // (The waiting slot changes only on this queue.)
            if let newer = waitingCandidate.withLock({ $0 })?.version, newer > m.version {
                // A newer candidate waits already: this one gives way.
                try? FileManager.default.removeItem(at: store.pendingTrialURL(m.version))
                continue
            }
            queueCandidate(m, note: "owed a trial before the restart: this candidate's trial starts when the running one is decided")
        }
    }

    /// Control queue: a trial went on after a restart from `pairs` pairs of its record.
    func trialResumed(candidate: ServedModel, reference: Int?, pairs: Int, _ s: TrialSummary, noise: EarlierTrialNoise?) {
        var event = trialJSON(candidate: candidate, reference: reference, verdict: nil, summary: s, reason: nil, next: nil, noise: noise)
        event["phase"] = .string("trial")
        event["event"] = .string("resumed")
        publishRetrain(event)
        logger.notice("switchback trial resumed from its record: its pairs before the restart are kept",
                      metadata: ["model.version": "\(candidate.version)", "trial.pairs": "\(pairs)",
                                 "trial.reference": "\(ModelStore.ControlGroupRecord(reference))"])
    }

    /// A block of the trial ended: progress on `<prefix>/retrain` and in the status.
    func trialProgress(candidate: ServedModel, reference: Int?, arm: TrialArm, _ s: TrialSummary, noise: EarlierTrialNoise?) {
        let o = trialJSON(candidate: candidate, reference: reference, verdict: nil, summary: s, reason: nil, next: arm, noise: noise)
        trialStatus.withLock { $0 = o }
        metrics.trialPairs.set(Double(s.pairs))
        metrics.trialMeanDifference.set(s.meanDifference ?? 0)
        var event = o
        event["phase"] = .string("trial")
        event["event"] = .string("progress")
        publishRetrain(event)
    }

    /// The trial is decided (or abandoned): write the verdict beside the model (`trial.json`,
    /// `edgeq models show`), count it, publish it, and promote the candidate when it won.
    func finishTrial(candidate: ServedModel, reference: Int?, verdict: String, summary s: TrialSummary, reason: String?,
                     conditions: [String: [Double]]? = nil, noise: EarlierTrialNoise?) {
        if candidateSlot.withLock({ $0?.version == candidate.version }) {
            candidateSlot.withLock { $0 = nil }
            trialRunning.store(false, ordering: .relaxed)
        }
        // The trial is over: nothing to resume after a restart.
        try? FileManager.default.removeItem(at: store.runningTrialURL(candidate.version))
        try? FileManager.default.removeItem(at: store.pendingTrialURL(candidate.version))
        var o = trialJSON(candidate: candidate, reference: reference, verdict: verdict, summary: s, reason: reason, next: nil, noise: noise)
        if let conditions {
            // The range of each exogenous signal over the trial: where the candidate was seen.
            o["conditions"] = .object(conditions.mapValues { .array($0.map { .number($0) }) })
        }
        var promoted = false
        if verdict == TrialVerdict.promote.rawValue {
            // Written first as well: the model is loaded for serving with its trial (the guard
            // borrows the trial's noise), and again below with `promoted`.
            try? DurableFile.write(Data(JSONValue.object(o).jsonText.utf8), to: store.trialURL(candidate.version))
            do {
                try promote(version: candidate.version, reason: String(format: "switchback trial: better than %@ over %d pairs (mean difference %.4g per block)",
                                                                       reference.map { "v\($0)" } ?? "the incumbent", s.pairs, s.meanDifference ?? 0))
                promoted = true
            } catch {
                o["promotion_error"] = .string("\(error)")
                logger.error("the trial's winner could not be served", metadata: ["model.version": "\(candidate.version)", "error": "\(error)"])
            }
        }
        o["promoted"] = .bool(promoted)
        try? DurableFile.write(Data(JSONValue.object(o).jsonText.utf8), to: store.trialURL(candidate.version))
        trialStatus.withLock { $0 = o }
        metrics.trialVerdicts[verdict]?.increment()
        metrics.trialPairs.set(Double(s.pairs))
        metrics.trialMeanDifference.set(s.meanDifference ?? 0)
        metrics.trialCost.set(s.cost)
        // Told to the fleet once the unit's own status and metrics say it: whoever reads them on
        // seeing the fleet's verdict finds the same.
        fleet?.trialDecided(version: candidate.version, promoted: promoted, verdict: verdict, figures: o)
        var event = o
        event["phase"] = .string("trial")
        event["event"] = .string(verdict == "abandoned" ? "abandoned" : "verdict")
        publishRetrain(event)
        // The candidate that waited for this trial starts now, against the controller in charge now.
        if let next = waitingCandidate.withLock({ w -> ServedModel? in defer { w = nil }; return w }) {
            beginTrial(next)
        }
        logger.notice("switchback trial decided", metadata: [
            "model.version": "\(candidate.version)", "trial.verdict": "\(verdict)", "trial.promoted": "\(promoted)",
            "trial.pairs": "\(s.pairs)", "trial.mean_difference": "\(s.meanDifference.map { "\($0)" } ?? "none")",
            "trial.cost": "\(s.cost)", "trial.reason": "\(reason ?? "")",
        ])
        publishStatus()
    }

    /// Why a candidate was rejected before `min_pairs` pairs (`SwitchbackTrial`, "Early stop").
    static func earlyStopReason(_ s: TrialSummary, noise: EarlierTrialNoise?) -> String {
        let from = noise.map { String(format: "v%d's trial (sd %.4g over %d pairs)", $0.version, $0.sd, $0.pairs) } ?? "an earlier trial"
        return String(format: "early stop: clearly worse after %d pair%@ (mean difference %.4g per block; upper bound %.4g with the noise of %@)",
                      s.pairs, s.pairs == 1 ? "" : "s", s.meanDifference ?? 0, s.earlyStopUpperBound ?? 0, from)
    }

    /// Why the stop-loss rejected a candidate in the middle of its block (`TrialConfig.stopLoss`).
    static func stopLossReason(_ stop: TrialStopLoss) -> String {
        let against = stop.beforeTrial ? "the controller in charge's rate before the trial" : "the reference's latest block"
        return String(format: "stop-loss: the candidate's block had lost %.4g against %@ after %d scored ticks "
                          + "(%d ticks into the block), more than the limit %.4g%@ (the larger of %.3g of a block's return%@ and the plant's spreads)",
                      stop.deficit, against, stop.scoredTicks, stop.blockTicks, stop.limit,
                      stop.lead > 0 ? String(format: " plus its lead over the pairs so far, %.4g,", stop.lead) : "",
                      stop.share * (stop.beforeTrial && !stop.adjusted ? SwitchbackTrial.priorShareFactor : 1)
                          * (stop.spreadKnown ? 1 : SwitchbackTrial.unknownSpreadShareFactor),
                      stop.adjusted ? ", rewards less their exogenous baseline" : (stop.beforeTrial ? ", raw rewards" : ""))
    }

    /// The trial's figures as `trial.json`, its events and the status carry them; `noise`: the
    /// earlier trial's noise its early stop pools (`noise_from_trial`, null without).
    func trialJSON(candidate m: ServedModel, reference: Int?, verdict: String?, summary s: TrialSummary, reason: String?, next: TrialArm?,
                   noise: EarlierTrialNoise?) -> [String: JSONValue] {
        func num(_ v: Double?) -> JSONValue { v.flatMap { $0.isFinite ? JSONValue.number($0) : nil } ?? .null }
        let candidate = m.version
        var adjustment: [String: JSONValue] = [:]
        if case .object(let fields) = Self.baselineSummary(m.baseline) { adjustment = fields }
        adjustment["note"] = .string(baselineUse(m).note)
        var o: [String: JSONValue] = [
            "version": .number(Double(candidate)),
            // The decided figures (mean_difference, ci_low, ci_high, stop_high) are the adjusted
            // ones when `adjusted`; raw_* are the unadjusted ones; the cost is on raw returns.
            "adjusted": .bool(s.adjusted), "adjustment": .object(adjustment),
            "raw_mean_difference": num(s.rawMeanDifference),
            "raw_ci_low": num(s.rawInterval?.lowerBound), "raw_ci_high": num(s.rawInterval?.upperBound),
            "reference": reference.map { .string("v\($0)") } ?? .string("incumbent"),
            "verdict": verdict.map { .string($0) } ?? .null,
            "pairs": .number(Double(s.pairs)), "void_pairs": .number(Double(s.voidPairs)),
            "ticks": .number(Double(s.ticks)), "skipped_ticks": .number(Double(s.skippedTicks)),
            "confidence": .number(s.confidence), "margin": .number(s.margin),
            "mean_difference": num(s.meanDifference), "sd": num(s.standardDeviation),
            "ci_low": num(s.interval?.lowerBound), "ci_high": num(s.interval?.upperBound),
            "stop_high": num(s.stopUpperBound),
            "futility": num(s.futility), "futility_high": num(s.futilityUpperBound),
            "candidate_mean": num(s.meanCandidate), "reference_mean": num(s.meanReference),
            "cost": num(s.cost), "cost_share": num(s.costShare), "cost_base": num(s.costBase),
            "carry_over": num(s.carryOver), "carry_over_se": num(s.carryOverStandardError),
            "switches": .number(Double(s.switches)), "switching_cost": num(s.switchingCost), "switching_cost_share": num(s.switchingCostShare),
            "switch_loss_candidate": num(s.switchLossCandidate), "switch_loss_reference": num(s.switchLossReference),
            "burn_in_loss_without_switch": num(s.burnInLossWithoutSwitch),
            "time": .number((Date().timeIntervalSince1970 * 1000).rounded() / 1000),
            // The block order's seed: 64 bits, a decimal string (a JSON number is exact to 2⁵³).
            "seed": .string(String(s.seed)), "gateway_seed": .number(Double(seed)),
            "early_stop_high": num(s.earlyStopUpperBound), "noise_from_trial": EarlierTrialNoise.json(noise),
            "stop_loss": num(s.stopLossShare),
            "stop_loss_hit": s.stopLoss.map { h in
                .object(["block_ticks": .number(Double(h.blockTicks)), "scored_ticks": .number(Double(h.scoredTicks)),
                         "deficit": num(h.deficit), "limit": num(h.limit), "raw_deficit": num(h.rawDeficit),
                         "reference_block": num(h.referenceReturn),
                         "before_trial": .bool(h.beforeTrial), "adjusted": .bool(h.adjusted), "spread_known": .bool(h.spreadKnown),
                         "lead": num(h.lead)])
            } ?? .null,
        ]
        let c = map.learning.trial
        switch c.block {
        case .ticks(let n): o["block"] = .number(Double(n))
        case .episode: o["block"] = .string("episode")
        }
        o["burn_in"] = .number(Double(Self.scoredBurnIn(c)))
        if let reason { o["reason"] = .string(reason) }
        if let next { o["next_arm"] = .string(next.rawValue) }
        return o
    }

    /// The guard found the served model worse than its control group: roll back (walking back,
    /// quarantining the version left), or, with nothing to roll back to, back to shadow (at
    /// once, in memory, whatever the disk says). The event says which: `verdict` "rolled_back"
    /// with `from`, `to` and `quarantined`, or "fallback_to_shadow" with `from`.
    func guardTripped(from: Int?, control: Int?, _ s: GuardSummary) {
        guard mode == .control else { return }
        metrics.guardTrips.increment()
        let verdict: String
        let action: String
        var to: Int?
        var quarantined: Int?
        let why = s.stopLoss == nil ? "guard: worse than its control group" : "guard stop-loss: one block far worse than its control block"
        do {
            let r = try rollback(to: nil, reason: why)
            verdict = "rolled_back"
            to = r.to
            quarantined = r.quarantined
            action = "rolled back from version \(from.map(String.init) ?? "none") to \(r.to)\(r.quarantined.map { " (version \($0) quarantined)" } ?? "")"
        } catch {
            if let from { try? store.quarantine(from, reason: why) }
            quarantined = from.flatMap { store.isQuarantined($0) ? $0 : nil }
            leaveControl(reason: "\(why), no rollback (\(error))")
            verdict = "fallback_to_shadow"
            action = "back to shadow mode, the incumbent is in charge (no rollback: \(error))"
        }
        let controlName = control.map { "version \($0)" } ?? "the incumbent"
        let text: String
        if let stop = s.stopLoss {
            text = String(format: "guard stop-loss: the served model's block returned %.4g against its control block's %.4g (%@): it lost %.4g%@, beyond the limit %.4g (%.4g of the control block's |return|%@, or five of a pair's spread)%@; %@",
                          stop.served, stop.control, controlName, stop.deficit, stop.adjusted ? " adjusted for the exogenous baseline" : "",
                          stop.limit, stop.share, stop.spreadKnown ? "" : ", doubled: the spread is not known yet",
                          stop.lead > 0 ? String(format: " plus its lead over the window's other pairs, %.4g", stop.lead) : "", action)
        } else {
            text = String(format: "guard: the served model's block return is below its control group's (%@) by %.4g on average over %d pairs (%.0f%% interval %.4g … %.4g%@); %@",
                          controlName, -(s.meanDifference ?? 0), s.windowPairs, s.confidence * 100,
                          s.interval?.lowerBound ?? .nan, s.interval?.upperBound ?? .nan,
                          s.adjusted ? String(format: ", adjusted for the exogenous baseline; raw %.4g", -(s.rawMeanDifference ?? 0)) : "", action)
        }
        lastGuardEvent.withLock { $0 = text }
        logger.error("\(text)")
        func version(_ v: Int?) -> JSONValue { v.map { .number(Double($0)) } ?? .null }
        publishRetrain(["phase": .string("guard"), "verdict": .string(verdict), "from": version(from), "to": version(to),
                        "quarantined": version(quarantined), "control": control.map { .string("v\($0)") } ?? .string("incumbent"),
                        "pairs": .number(Double(s.windowPairs)), "mean_difference": s.meanDifference.map { .number($0) } ?? .null,
                        "adjusted": .bool(s.adjusted), "raw_mean_difference": s.rawMeanDifference.map { .number($0) } ?? .null,
                        "noise_from_trial": Self.borrowedNoiseJSON(s.borrowedNoise), "resumed_pairs": .number(Double(s.resumedPairs)),
                        "mode": .string(mode.rawValue), "reason": .string(text), "stop_loss": Self.guardStopLossJSON(s.stopLoss),
                        "switching": Self.guardSwitchingJSON(s.switching)])
        publish(controlPlane.statusTopic, statusJSON(state: "online", reason: text), qos: 1, retain: true)
    }

    /// What the guard's hand-overs cost (`GuardSwitching`): `{"switches", "switching_cost",
    /// "switching_cost_share", "switch_loss_control", "switch_loss_served",
    /// "burn_in_loss_without_switch", "rewards"}` (a mean is null before its first block; `rewards`
    /// is the share's base, so that runs can pool the cost over several guards).
    static func guardSwitchingJSON(_ s: GuardSwitching) -> JSONValue {
        func number(_ x: Double?) -> JSONValue { x.map { .number($0) } ?? .null }
        return .object(["switches": .number(Double(s.switches)), "switching_cost": .number(s.cost), "switching_cost_share": number(s.share),
                        "rewards": .number(s.rewards),
                        "switch_loss_control": number(s.lossToControl), "switch_loss_served": number(s.lossToServed),
                        "burn_in_loss_without_switch": number(s.lossWithoutSwitch)])
    }

    /// The guard's stop-loss trip: `{"served", "control", "deficit", "limit", "share", "lead",
    /// "spread_known", "adjusted"}`, or null (the statistics tripped it).
    static func guardStopLossJSON(_ s: GuardStopLoss?) -> JSONValue {
        guard let s else { return .null }
        return .object(["served": .number(s.served), "control": .number(s.control), "deficit": .number(s.deficit),
                        "limit": .number(s.limit), "share": .number(s.share), "lead": .number(s.lead),
                        "spread_known": .bool(s.spreadKnown), "adjusted": .bool(s.adjusted)])
    }

    /// The promoting trial's noise the guard pools with its own: `{"sd", "pairs"}` (the trial's
    /// standard deviation of a pair difference and its pairs), or null.
    static func borrowedNoiseJSON(_ n: ControlGroupGuard.PairNoise?) -> JSONValue {
        guard let n else { return .null }
        return .object(["sd": .number(n.variance.squareRoot()), "pairs": .number(Double(n.degreesOfFreedom + 1))])
    }

    /// Why the control-group guard is not watching the served model now, or nil when it is: it
    /// watches in control mode, with a model served and `control_share` above 0 — through a
    /// switchback trial too (its compared pairs keep their place between the trial's blocks).
    func guardNotWatching() -> String? {
        if map.learning.controlShare <= 0 { return "control_share is 0: the guard is off" }
        if mode != .control { return "shadow mode: the incumbent runs the plant" }
        if servedVersion == nil { return "no model is served" }
        return nil
    }

    /// The status document's `guard` field (and the `edgeq_guard_watching` gauge, set here:
    /// the status goes out on every change and every few seconds).
    func guardStatus() -> JSONValue {
        let notWatching = guardNotWatching()
        metrics.guardWatching.set(notWatching == nil ? 1 : 0)
        var o: [String: JSONValue] = [
            "control_share": .number(map.learning.controlShare), "window_pairs": .number(Double(map.learning.guardPairs)),
            "probation_pairs": .number(Double(map.learning.probationPairs)),
            "trips": .number(Double(metrics.guardTrips.value)), "watching": .bool(notWatching == nil),
            "control_group": .string(ModelStore.ControlGroupRecord(previousController.withLock { $0?.version }).description),
        ]
        if let notWatching { o["not_watching"] = .string(notWatching) }
        if let s = guardSummary.withLock({ $0 }) {
            o["pairs"] = .number(Double(s.pairs))
            o["mean_difference"] = s.meanDifference.map { .number($0) } ?? .null
            o["adjusted"] = .bool(s.adjusted)
            o["raw_mean_difference"] = s.rawMeanDifference.map { .number($0) } ?? .null
            o["served_mean"] = s.meanServed.map { .number($0) } ?? .null
            o["control_mean"] = s.meanControl.map { .number($0) } ?? .null
            o["noise_from_trial"] = Self.borrowedNoiseJSON(s.borrowedNoise)
            o["probation_pairs_left"] = .number(Double(s.probationPairsLeft))
            o["resumed_pairs"] = .number(Double(s.resumedPairs))
            o["probation_pairs_pending"] = .number(Double(s.probationPairsPending))
            o["switching"] = Self.guardSwitchingJSON(s.switching)
        }
        if let e = lastGuardEvent.withLock({ $0 }) { o["last_event"] = .string(e) }
        let proven = provenConditions.withLock { $0 }
        o["novelty_pairs"] = .number(Double(map.learning.noveltyPairs))
        o["proven_conditions"] = .object(proven.ranges.mapValues { .array($0.map { .number($0) }) })
        o["novel_conditions"] = .number(Double(proven.novel))
        return .object(o)
    }
}

extension Gateway {
    /// Decision thread, before each tick: when who runs the plant on this tick is not who the
    /// plant was last told is in charge (a trial's or the guard's block passed between the
    /// gateway and the incumbent, a served model or a candidate started acting in control mode
    /// without a model), the handover tells it first (`handOver`, idempotent; no allocation
    /// unless something changes). Leaving control by the mode is handed over by `leaveControl`.
    func handOverIfNeeded(_ who: TickController, _ d: inout DecisionState, reason: String? = nil) {
        let gateway = who.mode == .control
        // The gauge, not a copy on the decision thread: the watchdog also gives the plant back.
        if gateway != (metrics.gatewayInCharge.value == 1) {
            metrics.gatewayInCharge.set(gateway ? 1 : 0)
        }
        let want: Controller = gateway ? .gateway : .incumbent
        guard want != controller else { return }
        // A take only while the mode still says control (a cmd/mode shadow may have just given).
        if want == .gateway && mode != .control { return }
        let why: String
        switch who.role {
        case .trial?: why = "switchback trial block"
        case .guarded?: why = "guard block"
        case nil: why = "controller in charge"
        }
        handOver(to: want, reason: reason ?? why)
    }
}
