#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import EdgeQLog
import EdgeQModel
import EdgeQNet
import Foundation
import Logging
import EdgeQRetrain
import EdgeQTopicMap

/// Retraining beside the decision path: one at a time, on a background thread of lower
/// priority; progress and results on `<prefix>/retrain`. A trigger while one runs is
/// answered ok:false "busy" (not queued: the next trigger after it ends starts a fresh
/// one on the then newer log).
extension Gateway {
    /// `cmd/retrain`.
    func retrainRequested(steps: Int?, seconds: Double?, window: Int?, trigger: String, reply: (Bool, String?, [String: JSONValue]) -> Void) {
        let limits = RetrainLimits(steps: steps, seconds: seconds ?? map.learning.retrainSeconds, window: window)
        if startRetraining(limits, trigger: trigger) {
            reply(true, nil, ["started": .bool(true)])
        } else {
            reply(false, "busy: a retraining is already running (progress on \(controlPlane.retrainTopic))", [:])
        }
    }

    /// Starts a retraining unless one runs. Returns false when busy.
    @discardableResult
    func startRetraining(_ limits: RetrainLimits, trigger: String) -> Bool {
        guard !retraining.exchange(true, ordering: .acquiringAndReleasing) else { return false }
        let servedNow = served.withLock { $0 }
        let servedModel = servedNow?.model
        var configured = Retrainer(map: map, policy: checkPolicy)
        configured.baselineReference = baselineReference
        configured.supportRows = store.supportRows(trial: map.learning.trial)
        let retrainer = configured
        let logPath = log.path
        let output = dataDirectory.appendingPathComponent("candidate.safetensors")
        let thread = Thread { [self] in
            // Lower priority than the decision thread. On Linux the nice value is per thread, and
            // `who` 0 names the calling thread (setpriority(2), "Bugs").
            setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
            // Learn from everything logged so far: commit the writer's queue first (this waits
            // on the writer, never on the decision thread).
            try? writer.flush(timeout: 10)
            // The starting weights (`learning.warm_start`); the plant model's judgement below
            // still compares with the served model, the controller in charge.
            let (warm, warmVersion) = warmStart(served: servedNow)
            // The retraining's last event (`done` or `failed`), said once it is no longer busy.
            var terminal: [String: JSONValue]
            // A retraining started (by the schedule) in the moment between the previous one's
            // end and its `done` says `started` after that `done`, never before it.
            retrainAnnouncement.withLock { _ in
                publishRetrain(["phase": .string("started"), "trigger": .string(trigger),
                                "limits": .object(["steps": limits.steps.map { .number(Double($0)) } ?? .null,
                                                   "seconds": limits.seconds.map { .number($0) } ?? .null,
                                                   "window": limits.window.map { .number(Double($0)) } ?? .null]),
                                "warm_start": warmVersion.map { .string("v\($0)") } ?? .null])
            }
            do {
                let outcome = try retrainer.runWithPlantModel(
                    logPath: logPath, limits: limits, warmStart: warm, output: output, plantFit: plantFit.withLock { $0 },
                    progress: { p in
                        var o: [String: JSONValue] = ["phase": .string(p.phase), "updates": .number(Double(p.updates)), "of": .number(Double(p.of))]
                        if let td = p.tdLoss, td.isFinite { o["td_loss"] = .number(td) }
                        self.publishRetrain(o)
                    },
                    shouldStop: { self.stopping.load(ordering: .relaxed) })
                // Kept for the next retraining; a refused fit is not kept (the next one tries again).
                plantFit.withLock { $0 = outcome.plantFit }
                var report = outcome.report
                // Judged on the plant model before the trial: against the controller in charge
                // when the retraining began (the served model, else the incumbent's log). A
                // retraining that chose between a distilled and a Q-learning candidate by this
                // estimate has made it already (`report.pretrial`, the chosen one's).
                if report.passed, report.pretrial == nil, map.learning.promotion == .trial, let model = outcome.plantModel, let data = outcome.plantData {
                    publishRetrain(["phase": .string("pretrial"), "model": .string(model.description)])
                    let estimate = PretrialEstimate(map: map, model: model, data: data, settings: .init(map: map))
                    report.pretrial = estimate.estimate(candidate: outcome.candidate, current: servedModel.map { .network($0) } ?? .logged)
                }
                if report.passed {
                    var files = ["model.safetensors": output, "model.safetensors.sha256": output.appendingPathExtension("sha256")]
                    let baselineFile = output.deletingLastPathComponent().appendingPathComponent("candidate-baseline.json")
                    if let b = outcome.baseline, (try? DurableFile.write(b.json(), to: baselineFile)) != nil { files["baseline.json"] = baselineFile }
                    // Signed with the device key inside the store's lock, over the bytes stored.
                    let version = try store.add(files: files, report: report.json(), signer: modelTrust.signer)
                    report.version = version
                    try? DurableFile.write(report.json(), to: store.reportURL(version))
                    try? FileManager.default.removeItem(at: output)
                    try? FileManager.default.removeItem(at: output.appendingPathExtension("sha256"))
                    try? FileManager.default.removeItem(at: baselineFile)
                    lastCandidate.withLock { $0 = version }
                    var promoted = false
                    switch map.learning.promotion {
                    case .auto:
                        control.sync {
                            promoted = (try? promote(version: version, reason: "retrained (\(trigger)), passed its checks, promotion auto")) != nil
                        }
                    case .trial, .shadowFirst:
                        // Proven on the plant first: a switchback trial against the controller in
                        // charge (it runs in control mode; `.shadowFirst` is refused by the loader)
                        // — unless the plant model already predicts it worse.
                        // Every `pretrial_audit`-th candidate in a row predicted worse gets its
                        // trial anyway: a plant model that misjudges the plant (on cart-pole it
                        // called candidates worse that balanced 500 steps out of 500) must not keep
                        // every later candidate away from the only honest judge.
                        let auditEvery = map.learning.pretrialAuditEvery
                        let keptOutBefore = pretrialKeptOut.withLock { $0 }
                        if let p = report.pretrial, p.verdict == .predictedWorse, let every = auditEvery, keptOutBefore + 1 >= every {
                            publishRetrain(["phase": .string("trial"), "event": .string("audit"), "version": .number(Double(version)),
                                            "reason": .string("the plant model predicts it worse, but \(keptOutBefore) candidate\(keptOutBefore == 1 ? " was" : "s were") kept out in a row before it (pretrial_audit \(every)): it gets its trial, which checks the estimate"),
                                            "pretrial": Self.pretrialSummary(p)])
                            logger.notice("candidate predicted worse gets its trial: an audit of the plant model's estimate", metadata: [
                                "model.version": "\(version)", "pretrial.kept_out_in_a_row": "\(keptOutBefore)"])
                        } else if let p = report.pretrial, p.verdict == .predictedWorse {
                            pretrialKeptOut.withLock { $0 += 1 }
                            publishRetrain(["phase": .string("trial"), "event": .string("skipped"), "version": .number(Double(version)),
                                            "reason": .string("the plant model predicts it worse than the \(servedModel == nil ? "incumbent" : "served model"): mean return difference \(roundedForReading(p.meanDifference, significant: 4)), upper bound \(roundedForReading(p.upperBound, significant: 4)) at \(p.confidence) confidence"),
                                            "pretrial": Self.pretrialSummary(p)])
                            logger.notice("candidate kept out of the trial: the plant model predicts it worse", metadata: [
                                "model.version": "\(version)", "pretrial.mean_difference": "\(p.meanDifference)",
                                "pretrial.upper_bound": "\(p.upperBound)", "pretrial.relative_change_pct": "\(p.relativeChangePct.map { "\($0)" } ?? "none")"])
                            break
                        }
                        if keptOutForShortLog(version, baseline: outcome.baseline, next: "a later retraining's candidate is trialled") != nil {
                            break
                        }
                        pretrialKeptOut.withLock { $0 = 0 }
                        control.sync {
                            do { try startTrial(version) } catch {
                                logger.error("the switchback trial could not start", metadata: ["model.version": "\(version)", "error": "\(error)"])
                            }
                        }
                    case .manual:
                        break
                    }
                    terminal = result(report, promoted: promoted)
                    terminal["baseline"] = Self.baselineSummary(outcome.baseline)
                    logRetrainResult(report, promoted: promoted, trigger: trigger)
                } else {
                    terminal = result(report, promoted: false)
                    terminal["baseline"] = Self.baselineSummary(outcome.baseline)
                    logRetrainResult(report, promoted: false, trigger: trigger)
                }
                lastRetrain.withLock { $0 = report }
            } catch {
                terminal = ["phase": .string("failed"), "verdict": .string("failed"), "error": .string("\(error)")]
                logger.error("retraining failed", metadata: ["error": "\(error)", "retrain.trigger": "\(trigger)"])
            }
            transitionsAtLastRetrain.store(Int(metrics.transitionsLogged.value), ordering: .relaxed)
            lastRetrainTime.store(Date().timeIntervalSince1970.bitPattern, ordering: .relaxed)
            // Free before the last word: whoever waits for `done` (or `failed`) and asks for the
            // next retraining at once must not be told "busy" by a thread that has nothing left
            // to do but say so. Everything the next one reads (the plant fit, the schedule's
            // counters, the stored version) is in place by now.
            retrainAnnouncement.withLock { _ in
                retraining.store(false, ordering: .releasing)
                publishRetrain(terminal)
            }
            control.async {
                self.publishStatus()
                // The rows, replay and networks of the retraining are freed by now.
                HeapTrim.trim(after: "a retraining", codePages: self.options.releaseCodePages, logger: self.logger)
            }
        }
        thread.name = "edgeq-retrain"
        thread.stackSize = 4 << 20
        thread.start()
        return true
    }

    /// Whose log rows a trial's exogenous baseline is fitted on: the controller a trial started
    /// now would run against — the served model, else the incumbent.
    var baselineReference: ExogenousBaseline.Reference {
        served.withLock { $0.map { .model(String($0.version)) } } ?? .incumbent
    }

    /// Whether a stored candidate (a retraining's or a fleet model) is kept out of the trial
    /// because its exogenous baseline could not be checked for want of log; nil when it is not,
    /// else the reason, which has then been said: a `skipped` trial event on `<prefix>/retrain`
    /// with the baseline, and a notice in the gateway's log. `next` says who is trialled instead.
    ///
    /// With the adjustment on, an unadjusted trial of a plant whose conditions drive its returns
    /// cannot decide within its budget, and it would hold the trial from the next candidates (one
    /// trial at a time). With `adjust: none` no baseline needs a longer log: every candidate goes
    /// to its (unadjusted) trial.
    func keptOutForShortLog(_ version: Int, baseline: ExogenousBaseline?, next: String) -> String? {
        guard let b = baseline?.report, b.needsLongerLog else { return nil }
        let why = "the log is too short to check the trial's exogenous baseline (\(b.reason ?? "too few rows")): an unadjusted trial would take the trial's place for its whole budget; \(next) (promotion.trial.adjust: none trials every candidate unadjusted)"
        publishRetrain(["phase": .string("trial"), "event": .string("skipped"), "version": .number(Double(version)),
                        "reason": .string(why), "baseline": Self.baselineSummary(baseline)])
        logger.notice("candidate kept out of the trial: the log is too short to check the exogenous baseline",
                      metadata: ["model.version": "\(version)", "baseline.placebo_pairs": "\(b.placeboPairs)"])
        return why
    }

    /// The gateway's own log gets what `<prefix>/retrain` gets: one line per check (info,
    /// warning when it failed) and the verdict (notice), with the version and whether it was
    /// promoted.
    func logRetrainResult(_ r: RetrainReport, promoted: Bool, trigger: String) {
        for c in r.checks {
            let metadata: Logger.Metadata = [
                "retrain.check": "\(c.name)", "retrain.check.status": "\(c.status.rawValue)",
                "retrain.check.value": "\(c.value.map { "\($0)" } ?? "none")", "retrain.check.limit": "\(c.limit)",
                "retrain.check.note": "\(c.note)",
                "retrain.check.advisory": "\(c.advisory ?? "no")",
            ]
            if c.status == .failed {
                logger.warning("retraining check failed", metadata: metadata)
            } else {
                logger.info("retraining check", metadata: metadata)
            }
        }
        logger.notice("retraining done", metadata: [
            "retrain.verdict": "\(r.verdict)", "retrain.version": "\(r.version.map(String.init) ?? "none")",
            "retrain.promoted": "\(promoted)", "retrain.trigger": "\(trigger)", "retrain.rows": "\(r.rows)",
            "retrain.updates": "\(r.updates)", "retrain.seconds": "\(String(format: "%.1f", r.seconds))",
            "retrain.warm_start": "\(r.warmStart)", "retrain.reasons": "\(r.reasons.joined(separator: "; "))",
            "retrain.not_judged": "\(r.notJudged.joined(separator: "; "))",
            "retrain.advisory": "\(r.advisory.joined(separator: "; "))",
        ])
    }

    func result(_ r: RetrainReport, promoted: Bool) -> [String: JSONValue] {
        var figures: [String: JSONValue] = [:]
        for (k, v) in r.figures where v.isFinite { figures[k] = .number(v) }
        return [
            "phase": .string("done"), "verdict": .string(r.verdict),
            "version": r.version.map { .number(Double($0)) } ?? .null,
            "promoted": .bool(promoted),
            "reasons": .array(r.reasons.map { .string($0) }),
            "not_judged": .array(r.notJudged.map { .string($0) }),
            "advisory": .array(r.advisory.map { .string($0) }),
            "checks": .array(r.checks.map { c in
                var o: [String: JSONValue] = ["name": .string(c.name), "value": c.value.map { .number($0) } ?? .null,
                                              "limit": .number(c.limit), "status": .string(c.status.rawValue),
                                              "passed": c.passed.map { .bool($0) } ?? .null, "note": .string(c.note)]
                if c.status == .advisory {
                    o["within_limit"] = c.withinLimit.map { .bool($0) } ?? .null
                    o["advisory"] = c.advisory.map { .string($0) } ?? .null
                }
                return .object(o)
            }),
            "learner": r.learner.flatMap { (try? JSONEncoder().encode($0)).flatMap { try? JSONSerialization.jsonObject(with: $0) } }
                .flatMap { JSONValue(any: $0) } ?? .null,
            "figures": .object(figures),
            "rows": .number(Double(r.rows)), "gap_rows_excluded": .number(Double(r.gapRowsExcluded)), "updates": .number(Double(r.updates)),
            "seconds": .number((r.seconds * 1000).rounded() / 1000), "warm_start": .bool(r.warmStart),
            "plant_model": Self.plantModelSummary(r),
            "pretrial": r.pretrial.map(Self.pretrialSummary) ?? .null,
            "distill": r.distill.map(Self.distillSummary) ?? .null,
        ]
    }

    /// The weights a retraining starts from and their version (nil, nil: fresh weights):
    /// `learning.warm_start: served` — the served model; `newest` — the newest stored version
    /// that is not quarantined, loaded and verified as for serving, else the served model.
    /// Reads a model file: call it on the retraining thread, never on the decision path.
    func warmStart(served servedNow: ServedModel?) -> (model: QModel?, version: Int?) {
        let fallback = (servedNow?.model, servedNow?.version)
        guard map.learning.warmStart == .newest,
              let newest = store.versions().filter({ !store.isQuarantined($0) }).max(),
              newest != servedNow?.version else { return fallback }
        do {
            return (try loadVerified(newest).model, newest)
        } catch {
            logger.warning("retraining starts from the served model: the newest version does not load",
                           metadata: ["model.version": "\(newest)", "error": "\(error)"])
            return fallback
        }
    }

    /// The exogenous baseline in the retrain result and the trial's events: accepted or not and
    /// why, whether only a longer log was missing, the held-out placebo variance ratio, the rows
    /// it was fitted on.
    static func baselineSummary(_ b: ExogenousBaseline?) -> JSONValue {
        guard let r = b?.report else { return .null }
        func num(_ x: Double?) -> JSONValue { x.map { $0.isFinite ? .number(roundedForReading($0, significant: 4)) : .null } ?? .null }
        return .object([
            "accepted": .bool(r.accepted), "reason": r.reason.map { .string($0) } ?? .null, "needs_longer_log": .bool(r.needsLongerLog),
            "held_out_variance_ratio": num(r.heldOutVarianceRatio), "max_ratio": num(r.maxRatio),
            "placebo_pairs": .number(Double(r.placeboPairs)), "raw_rms": num(r.rawRMS), "adjusted_rms": num(r.adjustedRMS),
            "rows": .string(r.rows), "fitted_rows": .number(Double(r.fittedRows)), "features": .number(Double(r.features)),
            "signals": .array(r.signals.map { .string($0) }), "time_constants": .array(r.timeConstants.map { num($0) }),
        ])
    }

    /// Distillation in the retrain result (`learning.distill`): which candidate was chosen and
    /// why, or why none was distilled; the teacher agreement on held-out states, the distilled
    /// candidate's verdict and whether the time limit cut it short. The full report
    /// (checks, both estimates) is in report.json.
    static func distillSummary(_ d: DistillReport) -> JSONValue {
        func num(_ x: Double?) -> JSONValue { x.map { $0.isFinite ? .number($0) : .null } ?? .null }
        var o: [String: JSONValue] = [
            "chosen": .string(d.chosen), "why": .string(d.why),
            "skipped": d.skipped.map { .string($0) } ?? .null,
            "stopped_early": d.stoppedEarly.map { .string($0) } ?? .null,
            "verdict": d.verdict.map { .string($0) } ?? .null,
            "dqn_verdict": d.dqnVerdict.map { .string($0) } ?? .null,
            "states_valued": .number(Double(d.statesValued)), "held_out_states": .number(Double(d.heldOutStates)),
            "rounds_made": d.roundsMade.map { .number(Double($0)) } ?? .null, "student_states": d.studentStates.map { .number(Double($0)) } ?? .null,
            "rounds_skipped": d.roundsSkipped.map { .string($0) } ?? .null,
            "updates": .number(Double(d.updates)), "teacher_seconds": num(d.teacherSeconds), "train_seconds": num(d.trainSeconds),
        ]
        if let a = d.agreementHeldOut {
            o["agreement_held_out"] = .object(["states": .number(Double(a.states)), "strict": num(a.strict), "tolerant": num(a.tolerant),
                                               "tolerance": num(a.tolerance), "mean_regret": num(a.meanRegret)])
        }
        if let p = d.pretrial { o["pretrial"] = pretrialSummary(p) }
        if let p = d.dqnPretrial { o["dqn_pretrial"] = pretrialSummary(p) }
        return .object(o)
    }

    /// The pre-trial estimate in the retrain events: the verdict, the paired difference of
    /// predicted returns (candidate − current) with its bounds, the relative change, and the
    /// calibration (the log's own return from the starts, the model's bias on it).
    static func pretrialSummary(_ p: PretrialEstimate.Report) -> JSONValue {
        func num(_ x: Double) -> JSONValue { x.isFinite ? .number(x) : .null }
        return .object([
            "verdict": .string(p.verdict.rawValue), "reason": p.reason.map { .string($0) } ?? .null,
            "current": .string(p.current), "model": .string(p.model), "runs": .number(Double(p.runs)),
            "horizon": .number(Double(p.horizon)), "confidence": num(p.confidence),
            "mean_difference": num(roundedForReading(p.meanDifference, significant: 5)),
            "lower_bound": num(roundedForReading(p.lowerBound, significant: 5)),
            "upper_bound": num(roundedForReading(p.upperBound, significant: 5)),
            "relative_change_pct": p.relativeChangePct.map { num(roundedForReading($0, significant: 4)) } ?? .null,
            "observed_mean_return": p.observedMeanReturn.map { num(roundedForReading($0, significant: 5)) } ?? .null,
            "calibration_bias": p.calibrationBias.map { num(roundedForReading($0, significant: 4)) } ?? .null,
        ])
    }

    /// The plant model in a retraining's result: the chosen class (or null) and, per class, its
    /// held-out free-run error at the longest horizon as a ratio to persistence; `refused` or
    /// `skipped` say why no model was kept; `reused` says the fit of an earlier retraining was
    /// kept (the log had not grown enough since), `fitted_on_samples` how many samples it was
    /// fitted on. The full report is in report.json.
    static func plantModelSummary(_ r: RetrainReport) -> JSONValue {
        guard let p = r.plantModel else {
            return r.plantModelSkipped.map { .object(["chosen": .null, "skipped": .string($0)]) } ?? .null
        }
        var classes: [String: JSONValue] = [:]
        for c in p.classes {
            classes[c.name] = c.longest.flatMap(\.ratio).map { .number(roundedForReading($0, significant: 4)) } ?? .null
        }
        return .object([
            "chosen": p.chosen.map { .string($0) } ?? .null,
            "refused": p.refused.map { .string($0) } ?? .null,
            "horizon": p.horizons.max().map { .number(Double($0)) } ?? .null,
            "ratio_to_persistence": .object(classes),
            "held_out_samples": .number(Double(p.heldOutSamples)),
            "fitted_on_samples": p.fittedOnSamples.map { .number(Double($0)) } ?? .null,
            "reused": .bool(p.reused),
        ])
    }

    func publishRetrain(_ object: [String: JSONValue]) {
        var o = object
        o["time"] = .number((Date().timeIntervalSince1970 * 1000).rounded() / 1000)
        publish(controlPlane.retrainTopic, Array(JSONValue.object(o).jsonText.utf8), qos: 1, retain: false)
    }

    /// Called on the decision thread after each tick: fires the mapping file's schedule.
    func checkSchedule() {
        guard options.scheduleEnabled else { return }
        let l = map.learning
        let logged = Int(metrics.transitionsLogged.value)
        if let every = l.retrainEveryTransitions, every > 0,
           logged - transitionsAtLastRetrain.load(ordering: .relaxed) >= every {
            // Spaced by `retrain.min_spacing` (or `countRetrainSpacing` when set): under a flood
            // the count is reached many times a second (docs/operations.md, "Memory").
            let now = Self.now()
            let last = lastCountRetrainStart.load(ordering: .relaxed)
            if last == 0 || Double(now &- last) / 1e9 >= (options.countRetrainSpacing ?? l.retrainMinSpacing) {
                lastCountRetrainStart.store(now, ordering: .relaxed)
                transitionsAtLastRetrain.store(logged, ordering: .relaxed)
                control.async { _ = self.startRetraining(RetrainLimits(seconds: l.retrainSeconds), trigger: "schedule: \(every) new transitions") }
            }
        }
        if let interval = l.retrainInterval, interval > 0 {
            let last = Double(bitPattern: lastRetrainTime.load(ordering: .relaxed))
            let now = Date().timeIntervalSince1970
            if now - last >= interval {
                lastRetrainTime.store(now.bitPattern, ordering: .relaxed)
                control.async { _ = self.startRetraining(RetrainLimits(seconds: l.retrainSeconds), trigger: "schedule: every \(Int(interval)) s") }
            }
        }
    }

    /// Extra fields of the status document: retraining and the live guard.
    func extraStatus() -> [String: JSONValue] {
        var o: [String: JSONValue] = ["retraining": .bool(retraining.load(ordering: .relaxed))]
        if let c = lastCandidate.withLock({ $0 }) { o["candidate"] = .number(Double(c)) }
        if let r = lastRetrain.withLock({ $0 }) {
            o["last_retrain"] = .object(["verdict": .string(r.verdict), "version": r.version.map { .number(Double($0)) } ?? .null,
                                         "reasons": .array(r.reasons.map { .string($0) })])
        }
        o["guard"] = guardStatus()
        if let t = trialStatus.withLock({ $0 }) { o["trial"] = .object(t) }
        // Who runs the plant now: the gateway (a model, or the safety fallback) or the incumbent
        // (shadow, control without a model, a trial's or the guard's incumbent blocks).
        o["in_charge"] = .string(metrics.gatewayInCharge.value == 1 ? "gateway" : "incumbent")
        o["trial_running"] = .bool(trialRunning.load(ordering: .relaxed))
        return o
    }
}

extension ModelStore {
    /// Which log rows widen the next candidate's support (`SupportRows`): the control rows of
    /// the versions served so far (served.log) that are not quarantined, and none of any other
    /// model's stretches in charge (a candidate's trial blocks, a running trial's too), nor the
    /// trial's burn-in after them (`trial`: none for episode blocks, whose next episode starts
    /// from the plant's reset). The gateway's retraining and `edgeq train` both use it.
    public func supportRows(trial: TrialConfig) -> SupportRows {
        let quarantined = Set(self.quarantined().map(\.version))
        let trusted = Set(servedRecords().compactMap { $0 }.filter { !quarantined.contains($0) }.map { String($0) })
        let settle: Int
        switch trial.block {
        case .ticks: settle = trial.burnIn
        case .episode: settle = 0
        }
        return SupportRows(trusted: trusted, settleRows: settle)
    }
}
