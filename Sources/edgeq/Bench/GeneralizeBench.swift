import EdgeQMQTT
import EdgeQSimulators
import EdgeQSystem
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Logging

/// What `edgeq bench generalize` runs: which plants, how many seeds, how many steps.
struct GeneralizeOptions: Sendable {
    /// The plants, in order; default every built-in plant.
    var plants: [PlantKind] = PlantKind.allCases
    /// Seeds firstSeed…firstSeed+seeds−1 per plant.
    var seeds = 5
    /// The first seed (`--first-seed`; default 1).
    var firstSeed = 1
    /// Steps per run; nil: the plant's budget (`GeneralizeBench.defaultSteps`).
    var steps: Int?
    /// Share of the plant incumbent's decisions moved ±1 level (the twin is never dithered).
    var dither = 0.0
    /// The mapping file the gateway runs instead of topics/<plant>.yaml (one plant only): e.g.
    /// the plant's mapping with `learning.distill` on.
    var mapping: String?
}

/// `edgeq bench generalize`: every plant through the real gateway process and a real broker,
/// from shadow under the plant's incumbent to the end of a fixed step budget, with retraining
/// on the mapping's schedule and promotion by the mapping's policy (docs/benchmarks.md).
///
/// Per plant and seed: a fresh mosquitto on a free loopback port, `edgeq run --config
/// topics/<plant>.yaml --mode shadow` on a fresh data directory (an operator key of the
/// bench's own is trusted there, so its commands are signed as `edgeq cmd` signs), and the
/// plant (`edgeq sim`'s simulator, in this process) with its evaluation twin: per window (or
/// episode) the plant's return beside the incumbent's on the same exogenous randomness.
///
/// Control follows `learning.promotion.policy` as the mapping says, read, not assumed:
/// `trial` — a signed `cmd/mode control` at the start (the gateway runs the trial);
/// `auto`, `shadow-first` — a signed `cmd/mode control` once the status names a served model
/// (a served model decides only in control); `manual` — nothing is promoted (the bench does
/// not act as the operator who would), and the figures that need a promotion say so.
enum GeneralizeBench {
    /// Step budget per plant when `--steps` is not given.
    static func defaultSteps(_ plant: PlantKind) -> Int {
        switch plant {
        case .cartpole: return 50_000      // the issue's goal: ≥ 475 within 50k steps
        case .thermal: return 16_128       // 8 weeks of 5-minute steps
        case .tank: return 40_000          // 20 episodes of 2,000 steps
        case .heater: return 28_800        // 10 days of 30 s steps
        case .mountaincar: return 40_000   // about 300 episodes under the incumbent
        }
    }

    /// Plant steps per second of wall time (in control the plant also waits for each command).
    static let rate = 1000.0
    /// Evaluation windows (or episodes) in the final return.
    static let finalWindows = 10

    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        let options = context.generalize
        let root = Anchors.packageRoot()
        let executable = try MQTTBench.selfExecutable()
        var figures: [BenchFigure] = []
        for plant in options.plants {
            let mappingPath = options.mapping ?? root.appendingPathComponent("topics/\(plant.rawValue).yaml").path
            let map: TopicMap
            do {
                map = try TopicMap.load(path: mappingPath)
            } catch {
                throw BenchError.failed("cannot load \(mappingPath): \(error)")
            }
            let steps = options.steps ?? defaultSteps(plant)
            var outcomes: [Outcome] = []
            let first = UInt64(max(options.firstSeed, 1))
            for seed in first...(first + UInt64(max(options.seeds, 1)) - 1) {
                context.progress("\(plant.rawValue) seed \(seed): \(steps) steps, promotion policy \(map.learning.promotion.rawValue), mapping \(mappingPath)"
                                 + (map.learning.distill.enabled ? ", distillation on" : ""))
                let started = Date()
                var o = try runOne(plant: plant, seed: seed, steps: steps, map: map, mappingPath: mappingPath,
                                   executable: executable, context: context)
                if let behind = retrainingsBehind(o, steps: steps, every: map.learning.retrainEveryTransitions) {
                    o.notes.append(behind)
                    context.progress("\(plant.rawValue) seed \(seed): WARNING \(behind)")
                }
                context.progress("\(plant.rawValue) seed \(seed): wall time \(String(format: "%.0f", Date().timeIntervalSince(started))) s; "
                                 + summary(o))
                context.progress("\(plant.rawValue) seed \(seed): \(o.windows.count) windows, \(o.retrainings) retrainings, "
                                 + "first promotion \(o.firstPromotionStep.map(String.init) ?? "none"), guard trips \(o.guardTrips ?? -1), guard pairs \(o.guardPairs.isEmpty ? "none" : o.guardPairs.keys.sorted().map { "v\($0) \(o.guardPairs[$0] ?? 0)" }.joined(separator: ", ")), novel conditions \(o.novelConditions.count)\(o.novelConditions.isEmpty ? "" : " (" + o.novelConditions.prefix(4).map { "\($0.signal) \(String(format: "%.3g", $0.value)) at \($0.step)" }.joined(separator: ", ") + (o.novelConditions.count > 4 ? ", …" : "") + ")"), support handbacks \(o.supportHandbacks.map(String.init) ?? "-"), "
                                 + "trials skipped: \(skippedSummary(o)); trials: "
                                 + o.trialEvents.filter { $0.event["event"] as? String == "verdict" }.map { e in
                                     let v = (e.event["version"] as? NSNumber).map { "v\($0)" } ?? "?"
                                     let d = (e.event["mean_difference"] as? NSNumber).map { String(format: "%+.3g", $0.doubleValue) } ?? "—"
                                     return "\(v) \(e.event["verdict"] as? String ?? "?") after \(e.event["pairs"] ?? "?") pairs (Δ \(d)) at step \(e.step)"
                                 }.joined(separator: "; ")
                                 + "; pre-trial estimates: " + (o.pretrials.isEmpty ? "none" : o.pretrials.map { p in
                                     "v\(p.version) \(p.verdict) (Δ \(p.difference.map { String(format: "%+.3g", $0) } ?? "—"))"
                                 }.joined(separator: "; "))
                                 + "; " + worstServedSummary(o))
                outcomes.append(o)
            }
            figures += self.figures(plant: plant.rawValue, steps: steps, outcomes: outcomes)
        }
        return figures
    }

    /// A warning when fewer retrainings ended than `every_transitions` asks for over the run
    /// (below 90 % of steps / every − 1): the plant waits while a retraining runs, but a machine
    /// too busy for the gateway's retraining thread still starves it (measured: 32–46 of 49 with
    /// six bench processes on two cores), and such a run's learning figures do not compare with
    /// a quiet sitting's. Nil when on pace or without a transition count schedule.
    static func retrainingsBehind(_ o: Outcome, steps: Int, every: Int?) -> String? {
        guard let every, every > 0 else { return nil }
        let expected = steps / every - 1
        guard expected >= 5, Double(o.retrainings) < 0.9 * Double(expected) else { return nil }
        return "retrainings fell behind: \(o.retrainings) ended against about \(expected) (one every \(every) transitions over \(steps) steps); "
            + "the machine was too busy for this run's learning figures to compare with a quiet sitting's"
    }

    /// The served windows worse than the incumbent's twin by more than 2 % (issue 13's bound),
    /// for people: how many of how many, and the worst one's model, first step and returns.
    static func worstServedSummary(_ o: Outcome) -> String {
        let served = servedWindows(o)
        let bad = served.filter { ($0.vsIncumbentPercent ?? 0) < -2 }
        guard let worst = served.min(by: { ($0.vsIncumbentPercent ?? 0) < ($1.vsIncumbentPercent ?? 0) }),
              let pct = worst.vsIncumbentPercent else { return "served windows: none" }
        let perModel = Dictionary(grouping: bad, by: { $0.controller }).map { "\($0.key) \($0.value.count)" }.sorted().joined(separator: ", ")
        return "served windows worse than the incumbent by > 2 %: \(bad.count) of \(served.count)"
            + (bad.isEmpty ? "" : " (\(perModel))")
            + String(format: "; worst: %@ from step %d, %.4g against %.4g (%+.1f %%)", worst.controller, worst.firstStep,
                     worst.realReturn, worst.incumbentReturn, pct)
    }

    /// One run for people: each retraining's result (stored version, verdict, with
    /// `learning.distill` which candidate was offered and why), the evaluation windows by the
    /// controller that decided them with their return against the incumbent's, and each trial's
    /// verdict with its mean difference a block, also as a share of the reference's block return.
    static func summary(_ o: Outcome) -> String {
        let candidates = o.candidates.isEmpty ? "no retraining ended" : o.candidates.map { c -> String in
            let version = c.version.map { "v\($0)" } ?? "not stored"
            let why = c.why.map { " (\($0))" } ?? ""
            return "\(version) \(c.verdict) \(c.chosen ?? "-")\(why)"
        }.joined(separator: "; ")
        let byController = Dictionary(grouping: o.windows, by: { $0.controller })
        let windows = byController.keys.sorted().map { k -> String in
            let ws = byController[k] ?? []
            let pct = percent(ws).map { String(format: "%+.1f%%", $0) } ?? "—"
            return "\(k) \(ws.count) (\(pct))"
        }.joined(separator: ", ")
        let verdicts = o.trialEvents.filter { $0.event["event"] as? String == "verdict" }.map { e -> String in
            let v = (e.event["version"] as? NSNumber).map { "v\($0)" } ?? "?"
            let d = (e.event["mean_difference"] as? NSNumber)?.doubleValue
            let ref = (e.event["reference_mean"] as? NSNumber)?.doubleValue
            var pct = "—"
            if let d, let ref, ref != 0 { pct = String(format: "%+.1f%%", 100 * d / abs(ref)) }
            let delta = d.map { String(format: "%+.3g", $0) } ?? "—"
            let verdict = e.event["verdict"] as? String ?? "?"
            let pairs = (e.event["pairs"] as? NSNumber).map { "\($0)" } ?? "?"
            // The interval that decided (adjusted when the trial was) and the raw one, as shares
            // of the reference's block return.
            func interval(_ lo: String, _ hi: String) -> String {
                guard let l = (e.event[lo] as? NSNumber)?.doubleValue, let h = (e.event[hi] as? NSNumber)?.doubleValue, let ref, ref != 0 else { return "—" }
                return String(format: "%+.1f … %+.1f%%", 100 * l / abs(ref), 100 * h / abs(ref))
            }
            let adjusted = e.event["adjusted"] as? Bool ?? false
            let ratio = ((e.event["adjustment"] as? [String: Any])?["held_out_variance_ratio"] as? NSNumber).map { String(format: "%.2f", $0.doubleValue) } ?? "—"
            let raw = (e.event["raw_mean_difference"] as? NSNumber)?.doubleValue
            let rawPct = raw.flatMap { r in ref.flatMap { $0 != 0 ? String(format: "%+.1f%%", 100 * r / abs($0)) : nil } } ?? "—"
            let how = adjusted
                ? "adjusted (held-out variance ratio \(ratio)): interval \(interval("ci_low", "ci_high")); raw \(rawPct), interval \(interval("raw_ci_low", "raw_ci_high"))"
                : "\(((e.event["adjustment"] as? [String: Any])?["note"] as? String) ?? "not adjusted (no note)"): interval \(interval("ci_low", "ci_high"))"
            // A trial the stop-loss ended inside a candidate's block: after how many scored ticks,
            // and what the block had lost, as a share of the reference's block return.
            var stopped = ""
            if let hit = e.event["stop_loss_hit"] as? [String: Any], let lost = (hit["raw_deficit"] as? NSNumber)?.doubleValue {
                let ticks = (hit["scored_ticks"] as? NSNumber).map { "\($0)" } ?? "?"
                let block = (hit["reference_block"] as? NSNumber)?.doubleValue ?? 0
                let share = block != 0 ? String(format: "%.0f%%", 100 * lost / abs(block)) : "?"
                let yardstick = hit["before_trial"] as? Bool == true ? "a block at the rate before the trial" : "the reference's latest block"
                // The share is raw; an adjusted stop decided on its deficit less the baseline.
                let adjusted = hit["adjusted"] as? Bool == true
                    ? (hit["deficit"] as? NSNumber).map { String(format: "; %.4g less the baseline", $0.doubleValue) } ?? "" : ""
                stopped = "; stopped by the stop-loss after \(ticks) scored ticks, lost \(String(format: "%.4g", lost)) (\(share) of \(yardstick)\(adjusted))"
            }
            return "\(v) \(verdict) after \(pairs) pairs (Δ \(delta) a block, \(pct) of the reference's block return; \(how)\(stopped))"
        }.joined(separator: "; ")
        return "candidates: \(candidates); windows by controller (return vs the incumbent's): \(windows); trial verdicts: \(verdicts.isEmpty ? "none" : verdicts)"
    }

    /// The candidates the gateway stored but kept out of the trial (its `skipped` trial events):
    /// how many, and per version why — the pre-trial estimate predicted it worse (the event
    /// carries `pretrial`), or the log was too short to check its exogenous baseline (`baseline`).
    static func skippedSummary(_ o: Outcome) -> String {
        let skipped = o.trialEvents.filter { $0.event["event"] as? String == "skipped" }
        guard !skipped.isEmpty else { return "0" }
        return "\(skipped.count) (" + skipped.map { e -> String in
            let v = (e.event["version"] as? NSNumber).map { "v\($0)" } ?? "?"
            let why = e.event["pretrial"] is [String: Any] ? "predicted worse by the plant model"
                : e.event["baseline"] is [String: Any] ? "log too short to check its exogenous baseline"
                : (e.event["reason"] as? String) ?? "no reason given"
            return "\(v) at step \(e.step): \(why)"
        }.joined(separator: "; ") + ")"
    }

    // MARK: One run

    /// One control-group guard's hand-over figures as the gateway last reported them
    /// (`guard.switching`): `switching_cost`, `rewards` (what the plant earned on its blocks)
    /// and `switches`.
    struct GuardSwitchingSeen {
        var cost: Double
        var rewards: Double
        var switches: Int
    }

    /// What one plant × seed run measured.
    struct Outcome {
        var seed: UInt64
        var policy: String
        var windows: [EvaluationWindow]
        var changes: [GatewayChange]
        /// Retrainings that ended (`phase` done or failed) and how many promoted.
        var retrainings = 0
        /// The plant's step when each promoting retraining's result arrived.
        var promotionSteps: [Int] = []
        /// Trial events on `<prefix>/retrain` (`phase` beginning with `trial`), with the
        /// plant's step when they arrived.
        var trialEvents: [(step: Int, event: [String: Any])] = []
        /// The status's `guard.trips` at the end, or the guard events counted when the status
        /// had none; nil when neither was seen.
        var guardTrips: Int?
        /// Per served version, the most pairs its control-group guard had compared in a status the
        /// bench saw (the status comes every 5 s of wall time: a lower bound at the end).
        var guardPairs: [Int: Int] = [:]
        /// What the control-group guards' hand-overs cost, per guard (`BenchGatewayRun`
        /// follows them through the status and the guard events): empty when no status or
        /// guard event carried `switching` with its `rewards`.
        var guardSwitching: [GuardSwitchingSeen] = []
        /// The novel conditions the gateway reported (`guard_watch` events): the plant's step,
        /// the signal and its value.
        var novelConditions: [(step: Int, signal: String, value: Double)] = []
        /// Times the gateway gave the plant back to its incumbent because the state left the
        /// served model's training support (the status's `counters.support_handbacks`).
        var supportHandbacks: Int?
        /// The status's `quarantined` at the end; nil when no status was seen.
        var quarantined: [Int]?
        /// The reasons of the last retraining whose candidate did not pass.
        var lastRefusal: String?
        /// Each passed candidate's pre-trial estimate on the plant model (the retrain result's
        /// `pretrial`): version, verdict, predicted mean return difference against the
        /// controller in charge.
        var pretrials: [(version: Int, verdict: String, difference: Double?)] = []
        /// Each retraining's result: the stored version (nil when its candidate failed its
        /// checks), the verdict and, with `learning.distill`, which candidate the retraining
        /// offered (`dqn` or `distilled`) and why (nil without).
        var candidates: [(version: Int?, verdict: String, chosen: String?, why: String?)] = []
        /// Why control was not taken, or what went wrong, for the reasons of null figures.
        var notes: [String] = []

        /// The plant step of the first served model.
        var firstPromotionStep: Int? { changes.first { $0.servedVersion != nil }?.step }
    }

    static func runOne(plant: PlantKind, seed: UInt64, steps: Int, map: TopicMap, mappingPath: String,
                       executable: String, context: BenchContext) throws -> Outcome {
        let broker = try MosquittoBroker()
        defer { broker.stop() }
        let data = FileManager.default.temporaryDirectory
            .appendingPathComponent("edgeq-generalize-\(plant.rawValue)-\(seed)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        // $EDGEQ_BENCH_KEEP=1 keeps the data directory (log, models, gateway.log) for a look afterwards.
        let keep = ProcessInfo.processInfo.environment["EDGEQ_BENCH_KEEP"] == "1"
        defer {
            if keep { context.progress("data directory kept: \(data.path)") } else { try? FileManager.default.removeItem(at: data) }
        }
        let run = try BenchGatewayRun(label: "\(plant.rawValue) seed \(seed)", plant: plant, seed: seed, steps: steps, map: map,
                                      mappingPath: mappingPath, executable: executable, broker: broker, data: data, context: context)
        defer { run.close() }
        run.startPlant()
        var lastProgress = Date()
        while try run.poll(timeout: 0.1) {
            if Date().timeIntervalSince(lastProgress) > 10 {
                lastProgress = Date()
                context.progress("\(plant.rawValue) seed \(seed): step \(run.sim.stepsDone) of \(steps)")
            }
        }
        return try run.finish()
    }

    // MARK: Figures

    /// 100 × (Σ real − Σ incumbent) / |Σ incumbent| over `windows`; nil without any or when the
    /// incumbent's sum is 0.
    static func percent(_ windows: [EvaluationWindow]) -> Double? {
        let real = windows.reduce(0) { $0 + $1.realReturn }
        let inc = windows.reduce(0) { $0 + $1.incumbentReturn }
        guard !windows.isEmpty, inc != 0 else { return nil }
        return 100 * (real - inc) / abs(inc)
    }

    /// The windows of `o` decided wholly by a model the gateway served (its status named it), after
    /// that model's trial ended. Since the simulators label a step by the model that chose it, a
    /// candidate's trial blocks carry its own version: they are not served windows unless that
    /// candidate was served.
    static func servedWindows(_ o: Outcome) -> [EvaluationWindow] {
        let everServed = Set(o.changes.compactMap(\.servedVersion))
        return servedWindows(o.windows, trialEvents: o.trialEvents).filter { w in servedVersion(w).map(everServed.contains) ?? false }
    }

    /// The windows decided wholly by one served model, after that model's trial ended (when the
    /// gateway reported one; otherwise from its promotion, which a whole window implies), in
    /// their order. `servedFrom` (model version → the plant step at which the gateway's status
    /// first named it served), when given, also requires the window to start at or after that
    /// step: a stricter reading for a run that is judged while trials are still under way.
    static func servedWindows(_ windows: [EvaluationWindow], trialEvents: [(step: Int, event: [String: Any])],
                              servedFrom: [Int: Int]? = nil) -> [EvaluationWindow] {
        var trialEnd: [Int: Int] = [:]
        for (step, e) in trialEvents {
            let verdict = e["verdict"] as? String
            if let v = (e["version"] as? NSNumber)?.intValue ?? (e["candidate"] as? NSNumber)?.intValue, verdict != nil {
                trialEnd[v] = max(trialEnd[v] ?? 0, step)
            }
        }
        return windows.filter { w in
            guard let v = servedVersion(w) else { return false }
            if let servedFrom {
                guard let from = servedFrom[v], w.firstStep >= from else { return false }
            }
            return w.firstStep >= (trialEnd[v] ?? 0)
        }
    }

    /// The lowest `percent` over `length` consecutive windows of one controller among `windows`
    /// (in their order; another controller's windows in between do not break a run); nil when no
    /// controller has `length` of them.
    static func worstRun(_ windows: [EvaluationWindow], length: Int) -> Double? {
        var byController: [String: [EvaluationWindow]] = [:]
        for w in windows { byController[w.controller, default: []].append(w) }
        var worst: Double?
        for list in byController.values where list.count >= length {
            for start in 0...(list.count - length) {
                if let p = percent(Array(list[start..<(start + length)])) { worst = min(worst ?? p, p) }
            }
        }
        return worst
    }

    /// The model version that decided every step of `w` (its controller `vN`), nil otherwise.
    static func servedVersion(_ w: EvaluationWindow) -> Int? {
        guard w.controller.hasPrefix("v") else { return nil }
        return Int(w.controller.dropFirst())
    }

    /// The per-seed figures of one run, each with its reason when it could not be measured.
    static func seedFigures(_ o: Outcome, steps: Int) -> [(name: String, value: Double?, unit: String, better: BenchFigure.Better, reason: String?)] {
        let noteSuffix = o.notes.isEmpty ? "" : " (\(o.notes.joined(separator: "; ")))"
        var out: [(String, Double?, String, BenchFigure.Better, String?)] = []

        let last = Array(o.windows.suffix(finalWindows))
        let final = percent(last)
        out.append(("final_return_vs_incumbent", final, "%", .higher,
                    final == nil ? (o.windows.isEmpty ? "not measured: no evaluation window closed within \(steps) steps"
                                                      : "not measured: the incumbent's return over the last windows is 0") : nil))

        // The same windows as plain returns (mean per window): the cart-pole goal is stated so.
        let noWindow = "not measured: no evaluation window closed within \(steps) steps"
        out.append(("final_return", last.isEmpty ? nil : last.reduce(0) { $0 + $1.realReturn } / Double(last.count),
                    "per window", .higher, last.isEmpty ? noWindow : nil))
        out.append(("final_incumbent_return", last.isEmpty ? nil : last.reduce(0) { $0 + $1.incumbentReturn } / Double(last.count),
                    "per window", .higher, last.isEmpty ? noWindow : nil))
        // The model served at the end, on its own: its last windows (each decided wholly by it),
        // without the trial arms, the guard's control group and the incumbent's blocks that the
        // last windows of the plant also hold.
        let servedAtEnd = o.changes.last?.servedVersion
        let own = servedAtEnd.map { v in Array(o.windows.filter { $0.controller == "v\(v)" }.suffix(finalWindows)) } ?? []
        let noOwn = !own.isEmpty ? nil : servedAtEnd.map { "not measured: no window was decided wholly by v\($0), the model served at the end" }
            ?? "not measured: no model was served at the end of the run"
        out.append(("final_served_return", own.isEmpty ? nil : own.reduce(0) { $0 + $1.realReturn } / Double(own.count),
                    "per window", .higher, noOwn))
        // The same windows against the incumbent's twin on them: on a continuing plant the
        // final figure above also holds an unfinished trial's arms and control-group blocks.
        let ownPercent = percent(own)
        out.append(("final_served_vs_incumbent", ownPercent, "%", .higher,
                    ownPercent != nil ? nil : noOwn ?? "not measured: the incumbent's return over those windows is 0"))

        // The plant steps until the plant's return reached its learning goal (cart-pole: a
        // 10-episode mean of 475, issue 14's "plant steps to ≥ 475"), whoever decided the episodes.
        if let plant = o.windows.first?.plant, let goal = returnGoal(plant) {
            let reached = stepsToGoal(o.windows, goal: goal)
            out.append(("steps_to_\(Int(goal))", reached.map(Double.init), "steps", .lower,
                        reached == nil ? "not measured: the mean return over \(finalWindows) windows in a row never reached \(Int(goal)) within \(steps) steps" : nil))
        }

        let first = o.firstPromotionStep
        out.append(("steps_to_first_promotion", first.map(Double.init), "steps", .lower,
                    first == nil ? "not measured: no model was promoted within \(steps) steps (policy \(o.policy), "
                        + "\(o.retrainings) retrainings ended, \(o.promotionSteps.count) promoted"
                        + (o.promotionSteps.isEmpty ? "" : " (result at plant step \(o.promotionSteps.map(String.init).joined(separator: ", ")))")
                        + (o.lastRefusal.map { "; last refused: \($0)" } ?? "") + ")\(noteSuffix)" : nil))

        let served = servedWindows(o)
        let worst = served.compactMap(\.vsIncumbentPercent).min()
        out.append(("worst_served_vs_incumbent", worst, "%", .higher,
                    worst == nil ? "not measured: no evaluation window was decided wholly by a served model after its trial\(noteSuffix)" : nil))
        // Over 10 windows in a row of one served model (cart-pole: 10 episodes, the span its
        // return goal is judged on; thermal: 10 days): a single window says as much about the
        // episode or the day as about the model.
        let worst10 = worstRun(served, length: finalWindows)
        out.append(("worst_served_10_windows_vs_incumbent", worst10, "%", .higher,
                    worst10 == nil ? "not measured: no served model decided \(finalWindows) evaluation windows after its trial\(noteSuffix)" : nil))

        // Trial cost: what the gateway reports, never computed here.
        // The gateway's trial events carry `cost_share` (the reward the candidate's blocks
        // lost, as a share of the reference's return over the trial). Every trial counts, at
        // its last event: its verdict, its abandonment, or — a trial still running when the run
        // ended — its last progress (until 2026-12-05 only decided trials counted, and a
        // candidate far worse than the PI whose trial the run's end cut off cost nothing).
        let costs = trialCostShares(o.trialEvents.map(\.event))
        let costReason: String?
        if !costs.isEmpty {
            costReason = nil
        } else if o.trialEvents.isEmpty {
            costReason = "not measured: the gateway published no trial events on <prefix>/retrain (promotion.policy \(o.policy))"
        } else {
            let keys = Set(o.trialEvents.flatMap { $0.event.keys }).sorted().joined(separator: ", ")
            costReason = "not measured: no trial completed a pair (no event with a cost share; event keys: \(keys))"
        }
        out.append(("trial_cost", costs.isEmpty ? nil : costs.reduce(0, +) / Double(costs.count), "% of incumbent return", .lower, costReason))
        // The same trials pooled: Σ cost / Σ the reference's return over them.
        let pooled = trialCostPooled(o.trialEvents.map(\.event))
        out.append(("trial_cost_pooled", pooled, "% of incumbent return", .lower,
                    pooled != nil ? nil : costReason ?? "not measured: the gateway's trial events carry no cost_base"))
        // What the hand-overs cost in the burn-ins, which the trials do not score, pooled the same way.
        let switching = trialSwitchingCostPooled(o.trialEvents.map(\.event))
        out.append(("trial_switching_cost_pooled", switching, "% of incumbent return", .lower,
                    switching != nil ? nil : costReason ?? "not measured: the gateway's trial events carry no switching_cost"))
        // What switching itself added to the decided trials' differences (the gateway's
        // `carry_over` estimate), as a share of the reference's block return.
        let carry = o.trialEvents.compactMap { e -> Double? in
            guard e.event["event"] as? String == "verdict", let c = (e.event["carry_over"] as? NSNumber)?.doubleValue,
                  let r = (e.event["reference_mean"] as? NSNumber)?.doubleValue, r != 0 else { return nil }
            return 100 * c / abs(r)
        }
        out.append(("trial_carry_over", carry.isEmpty ? nil : carry.reduce(0, +) / Double(carry.count), "% of reference block return", .lower,
                    carry.isEmpty ? "not measured: no decided trial had enough blocks for a carry-over estimate (two in each of its four cells)" : nil))

        // What the guard's hand-overs cost in its burn-ins (the gateway's `guard.switching`),
        // pooled over the guards of the run: Σ cost / Σ |reward earned on the guards' blocks|.
        let guardBase = o.guardSwitching.reduce(0) { $0 + abs($1.rewards) }
        let guardSwitches = o.guardSwitching.reduce(0) { $0 + $1.switches }
        out.append(("guard_switching_cost_pooled", guardBase > 0 ? 100 * o.guardSwitching.reduce(0) { $0 + $1.cost } / guardBase : nil,
                    "% of the reward on the guard's blocks", .lower,
                    guardBase > 0 ? nil : o.guardSwitching.isEmpty
                        ? "not measured: no status or guard event carried the guard's switching figures with their rewards (no guard watched, or a build before 2026-12-07)"
                        : "not measured: the guards' blocks earned no reward"))
        out.append(("guard_switches", o.guardSwitching.isEmpty ? nil : Double(guardSwitches), "switches", .lower,
                    o.guardSwitching.isEmpty ? "not measured: no status or guard event carried the guard's switching figures" : nil))
        out.append(("guard_trips", o.guardTrips.map(Double.init), "trips", .lower,
                    o.guardTrips == nil ? "not measured: no status from the gateway" : nil))
        out.append(("novel_conditions", Double(o.novelConditions.count), "guard_watch events", .lower, nil))
        out.append(("support_handbacks", o.supportHandbacks.map(Double.init), "handbacks", .lower,
                    o.supportHandbacks == nil ? "not measured: the gateway's status carried no support_handbacks counter" : nil))
        // Candidates stored but kept out of the trial: the gateway's `skipped` trial events (the
        // plant model predicted them worse, or the log was too short to check their baseline).
        let runsTrials = o.policy == "trial" || o.policy == "shadow-first"
        out.append(("trials_skipped", runsTrials ? Double(o.trialEvents.filter { $0.event["event"] as? String == "skipped" }.count) : nil,
                    "candidates", .lower,
                    runsTrials ? nil : "not measured: promotion.policy \(o.policy) runs no switchback trial, so none is skipped"))
        out.append(("quarantined_models", o.quarantined.map { Double($0.count) }, "models", .lower,
                    o.quarantined == nil ? "not measured: the gateway's status carried no quarantined list" : nil))
        out.append(("retrainings", Double(o.retrainings), "retrainings", .higher, nil))

        // The pre-trial estimates against the trials' outcomes: of the candidates that had both,
        // the share whose predicted sign (better / worse than the controller in charge) matched
        // the sign of the trial's mean difference; and the candidates the estimate kept out.
        let trialDifference: [Int: Double] = Dictionary(o.trialEvents.compactMap { e -> (Int, Double)? in
            guard e.event["event"] as? String == "verdict", let v = (e.event["version"] as? NSNumber)?.intValue,
                  let d = (e.event["mean_difference"] as? NSNumber)?.doubleValue else { return nil }
            return (v, d)
        }, uniquingKeysWith: { _, last in last })
        let paired = o.pretrials.compactMap { p -> Bool? in
            guard let predicted = p.difference, predicted != 0, let actual = trialDifference[p.version], actual != 0 else { return nil }
            return (predicted > 0) == (actual > 0)
        }
        out.append(("pretrial_sign_agreement", paired.isEmpty ? nil : 100 * Double(paired.filter { $0 }.count) / Double(paired.count),
                    "% of candidates with a trial verdict", .higher,
                    paired.isEmpty ? (o.pretrials.isEmpty ? "not measured: no pre-trial estimate (no plant model accepted, or promotion not trial)"
                                                          : "not measured: no estimated candidate reached a trial verdict") : nil))
        // A candidate predicted worse that got its trial anyway (`promotion.pretrial_audit`) was
        // not kept out: its `audit` event says so.
        let audits = o.trialEvents.filter { $0.event["event"] as? String == "audit" }.count
        out.append(("pretrial_kept_out", o.pretrials.isEmpty ? nil : Double(o.pretrials.filter { $0.verdict == "predicted_worse" }.count - audits),
                    "candidates", .lower, o.pretrials.isEmpty ? "not measured: no pre-trial estimate" : nil))
        // Estimates whose bounds excluded 0 but whose model was off on the logged actions' return
        // by at least the difference it predicted: the trial decided those.
        out.append(("pretrial_uncalibrated", o.pretrials.isEmpty ? nil : Double(o.pretrials.filter { $0.verdict == "uncalibrated" }.count),
                    "candidates", .lower, o.pretrials.isEmpty ? "not measured: no pre-trial estimate" : nil))
        out.append(("pretrial_audits", o.pretrials.isEmpty ? nil : Double(audits),
                    "candidates", .lower, o.pretrials.isEmpty ? "not measured: no pre-trial estimate" : nil))
        return out
    }

    /// The mean return over `finalWindows` windows a plant's learning goal asks for: 475 on
    /// cart-pole (the issues' goal); nil for plants without one.
    static func returnGoal(_ plant: String) -> Double? {
        plant == PlantKind.cartpole.rawValue ? 475 : nil
    }

    /// The plant step (the end of the window) at which the mean real return over the last
    /// `finalWindows` windows first reached `goal`; nil when it never did or fewer windows closed.
    static func stepsToGoal(_ windows: [EvaluationWindow], goal: Double) -> Int? {
        guard windows.count >= finalWindows else { return nil }
        var sum = windows.prefix(finalWindows).reduce(0) { $0 + $1.realReturn }
        for i in (finalWindows - 1)..<windows.count {
            if i >= finalWindows { sum += windows[i].realReturn - windows[i - finalWindows].realReturn }
            if sum / Double(finalWindows) >= goal { return windows[i].firstStep + windows[i].steps }
        }
        return nil
    }

    /// Per-seed figures (`<plant>/seed<N>/<figure>`) and the plant's figures over its seeds
    /// (`<plant>/<figure>`): the mean of the final returns and of the trial cost, the median
    /// steps to the first promotion, the worst window, the sums of guard trips, quarantined
    /// models and retrainings.
    static func figures(plant: String, steps: Int, outcomes: [Outcome]) -> [BenchFigure] {
        var figures: [BenchFigure] = []
        var bySeed: [String: [(seed: UInt64, value: Double?, unit: String, better: BenchFigure.Better, reason: String?)]] = [:]
        var order: [String] = []
        for o in outcomes {
            for f in seedFigures(o, steps: steps) {
                figures.append(BenchFigure(bench: "generalize", figure: "\(plant)/seed\(o.seed)/\(f.name)", value: f.value,
                                           unit: f.unit, better: f.better, reason: f.reason))
                if bySeed[f.name] == nil { order.append(f.name) }
                bySeed[f.name, default: []].append((o.seed, f.value, f.unit, f.better, f.reason))
            }
        }
        for name in order {
            let rows = bySeed[name] ?? []
            let values = rows.compactMap(\.value)
            let value: Double?
            switch name {
            case "final_return_vs_incumbent", "final_return", "final_incumbent_return", "final_served_return", "final_served_vs_incumbent", "trial_cost", "trial_cost_pooled", "trial_switching_cost_pooled", "guard_switching_cost_pooled", "trial_carry_over", "pretrial_sign_agreement": value = values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
            case "steps_to_first_promotion", "steps_to_475": value = BenchFigure.median(values)
            case "worst_served_vs_incumbent", "worst_served_10_windows_vs_incumbent": value = values.min()
            default: value = values.isEmpty ? nil : values.reduce(0, +)
            }
            var reason: String?
            if values.isEmpty {
                reason = rows.first?.reason ?? "not measured"
            } else if values.count < rows.count {
                reason = "measured on \(values.count) of \(rows.count) seeds"
            }
            figures.append(BenchFigure(bench: "generalize", figure: "\(plant)/\(name)", value: value,
                                       unit: rows.first?.unit ?? "", better: rows.first?.better ?? .higher, reason: reason))
        }
        return figures
    }
}
