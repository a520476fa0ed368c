import EdgeQLab
import EdgeQPlants
import Foundation

/// `edgeq bench model`: the plant model's benchmark (docs/benchmarks.md, "bench model"). For
/// now the limits every model-based figure is read against:
///
/// 1. **Thermal optimum** — per seed (1…`--seeds`, default 5), one week of the thermal zone from
///    Monday 00:00: the optimum with perfect forecast (`ThermalOptimum`: dynamic programming on a
///    0.05 K grid with the true model, the tariff, the occupancy and the weather) run on the
///    plant, against the simulator's PI (`ThermalPI`) on the same week. Its energy cost and
///    comfort violation, and the cost saving. A second optimum weighs comfort 100× (1,000 per
///    kelvin-hour): the cheapest policy that keeps comfort, the fair reading of "cheaper than
///    the PI with no comfort loss". And the receding-horizon planner with the same true model
///    and perfect forecast (`ThermalPlanning`: 12-hour horizon, relaxed): how close the kind of
///    planner that will run on a learned model comes to the limit.
/// 2. **Heater planner** — per seed, two shifts (1,920 steps of 30 s; one with `--quick`) of the
///    heater with dead time: the receding-horizon planner with the true model
///    (`HeaterPlanning`: 32-minute horizon, doubling blocks, relaxed to average levels with a
///    sigma-delta realisation; and restricted to the stages) against the heater's PI
///    (`HeaterPI`) on the same seed (the same ambient, setpoint changes and sensor noise). The
///    cost per shift (−return; lower is better) and the percent better.
///
/// Anchor: the plant's incumbent, run in the same process on the same seed. Each plant is one
/// entry (`ThermalEntry`, `HeaterEntry`) with its per-seed rows and the figures it gives, so
/// learned-model columns (fit errors at several horizons against persistence, the planner on
/// the learned model) are added to an entry without touching the others.
///
/// `EDGEQ_BENCH_MODEL_PARTS` (e.g. `thermal_distill` or `heater,heater_distill`) runs only some
/// parts: `thermal` (the optimum and the true-model planner), `heater` (the planner with the
/// true and the learned model), `fit` (free-run errors), `heater_distill`, `thermal_distill`
/// (`ThermalDistillEntry`: the gateway's retraining with distillation serving the thermal zone).
enum ModelBench {
    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        let seeds = (1...UInt64(max(context.modelSeeds, 1))).map { $0 }
        let parts = try selectedParts(ProcessInfo.processInfo.environment)
        var figures: [BenchFigure] = []
        if parts.contains("thermal") {
            figures += try ThermalEntry.measure(seeds: seeds, context: context).figures(bench: context.bench)
        }
        if parts.contains("heater") {
            figures += try HeaterEntry.measure(seeds: seeds, shifts: context.quick ? 1 : 2, context: context)
                .figures(bench: context.bench)
            figures += try HeaterLearnedEntry.measure(seeds: seeds, shifts: context.quick ? 1 : 2, context: context)
                .figures(bench: context.bench)
        }
        if parts.contains("fit") {
            figures += try ModelFitEntry.measure(seed: 1, context: context).figures(bench: context.bench)
        }
        if parts.contains("heater_distill") {
            figures += try HeaterDistillEntry.measure(seeds: seeds, shifts: context.quick ? 1 : 2, context: context).figures(bench: context.bench)
        }
        if parts.contains("thermal_distill") {
            figures += try ThermalDistillEntry.measure(seeds: seeds, context: context).figures(bench: context.bench)
        }
        return figures
    }

    /// The parts `EDGEQ_BENCH_MODEL_PARTS` names (comma-separated; every part when unset).
    static let parts = ["thermal", "heater", "fit", "heater_distill", "thermal_distill"]

    static func selectedParts(_ env: [String: String]) throws -> Set<String> {
        let asked = Set((env["EDGEQ_BENCH_MODEL_PARTS"] ?? parts.joined(separator: ",")).split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) })
        if let unknown = asked.subtracting(parts).sorted().first {
            throw BenchError.failed("unknown part '\(unknown)' in EDGEQ_BENCH_MODEL_PARTS; available: \(parts.joined(separator: ", "))")
        }
        return asked
    }

    /// (anchor − value) / |anchor| in percent: how much lower `value` is (a cost).
    static func percentLower(_ value: Double, than anchor: Double) -> Double? {
        anchor != 0 ? 100 * (anchor - value) / abs(anchor) : nil
    }

    static func mean(_ xs: [Double]) -> Double? { xs.isEmpty ? nil : xs.reduce(0, +) / Double(xs.count) }
}

/// The thermal zone's section: the perfect-forecast optimum against the PI, per weekly seed.
struct ThermalEntry {
    /// One seed's week.
    struct Row {
        var seed: UInt64
        var pi: ThermalOptimum.Result
        var optimum: ThermalOptimum.Result
        var comfortKeeping: ThermalOptimum.Result
        /// The receding-horizon planner with the true model and perfect forecast.
        var planner: ThermalOptimum.Result
    }
    var rows: [Row] = []

    static func measure(seeds: [UInt64], context: BenchContext) throws -> ThermalEntry {
        var entry = ThermalEntry()
        var strict = ThermalOptimum()
        strict.comfortWeight = 1000
        for s in seeds {
            let zone = ThermalZone(seed: s)
            let steps = zone.parameters.episodeSteps
            let pi = ThermalOptimum.runPI(zone, steps: steps)
            let optimum = ThermalOptimum().run(zone, steps: steps)
            let keeping = strict.run(zone, steps: steps)
            let t0 = Date()
            let planner = try ThermalPlanning.runPlanner(zone, steps: steps)
            let seconds = Date().timeIntervalSince(t0)
            context.progress(String(format: "thermal seed %llu, one week: PI cost %.2f, comfort %.3f K·h; optimum cost %.2f, comfort %.3f K·h (DP estimate of the reward %.2f, earned %.2f); comfort-keeping optimum cost %.2f, comfort %.3f K·h",
                                    s, pi.energyCost, pi.comfortViolation, optimum.energyCost, optimum.comfortViolation,
                                    optimum.predictedObjective ?? .nan, optimum.totalReward, keeping.energyCost, keeping.comfortViolation))
            context.progress(String(format: "thermal seed %llu: planner (true model, perfect forecast) cost %.2f, comfort %.3f K·h, reward %.2f; %.2f ms per decision",
                                    s, planner.energyCost, planner.comfortViolation, planner.totalReward, 1000 * seconds / Double(max(steps, 1))))
            entry.rows.append(Row(seed: s, pi: pi, optimum: optimum, comfortKeeping: keeping, planner: planner))
        }
        return entry
    }

    func figures(bench: String) -> [BenchFigure] {
        var out: [BenchFigure] = []
        let anchor = "ThermalPI (same week)"
        for r in rows {
            out.append(BenchFigure(bench: bench, figure: "thermal seed \(r.seed): optimum energy cost per week", value: r.optimum.energyCost,
                                   unit: "currency", anchor: anchor, anchorValue: r.pi.energyCost, better: .lower))
            out.append(BenchFigure(bench: bench, figure: "thermal seed \(r.seed): optimum comfort violation per week", value: r.optimum.comfortViolation,
                                   unit: "K·h", anchor: anchor, anchorValue: r.pi.comfortViolation, better: .lower))
            out.append(BenchFigure(bench: bench, figure: "thermal seed \(r.seed): comfort-keeping optimum energy cost per week", value: r.comfortKeeping.energyCost,
                                   unit: "currency", anchor: anchor, anchorValue: r.pi.energyCost, better: .lower))
            out.append(BenchFigure(bench: bench, figure: "thermal seed \(r.seed): planner (true model, perfect forecast) energy cost per week", value: r.planner.energyCost,
                                   unit: "currency", anchor: anchor, anchorValue: r.pi.energyCost, better: .lower))
            out.append(BenchFigure(bench: bench, figure: "thermal seed \(r.seed): planner (true model, perfect forecast) comfort violation per week", value: r.planner.comfortViolation,
                                   unit: "K·h", anchor: anchor, anchorValue: r.pi.comfortViolation, better: .lower))
        }
        let saving = rows.compactMap { ModelBench.percentLower($0.optimum.energyCost, than: $0.pi.energyCost) }
        let keepingSaving = rows.compactMap { ModelBench.percentLower($0.comfortKeeping.energyCost, than: $0.pi.energyCost) }
        let rewardGain = rows.compactMap { ModelBench.percentLower(-$0.optimum.totalReward, than: -$0.pi.totalReward) }
        out.append(BenchFigure(bench: bench, figure: "thermal: optimum cheaper than the PI (mean over \(rows.count) weeks)",
                               value: ModelBench.mean(saving), unit: "%", better: .higher))
        out.append(BenchFigure(bench: bench, figure: "thermal: optimum cheaper than the PI (worst week)",
                               value: saving.min(), unit: "%", better: .higher))
        out.append(BenchFigure(bench: bench, figure: "thermal: optimum's cost + comfort penalty below the PI's (mean)",
                               value: ModelBench.mean(rewardGain), unit: "%", better: .higher))
        out.append(BenchFigure(bench: bench, figure: "thermal: comfort-keeping optimum cheaper than the PI (mean)",
                               value: ModelBench.mean(keepingSaving), unit: "%", better: .higher))
        out.append(BenchFigure(bench: bench, figure: "thermal: comfort-keeping optimum's extra comfort violation over the PI (worst week)",
                               value: rows.map { $0.comfortKeeping.comfortViolation - $0.pi.comfortViolation }.max(),
                               unit: "K·h", better: .lower))
        let plannerSaving = rows.compactMap { ModelBench.percentLower($0.planner.energyCost, than: $0.pi.energyCost) }
        let plannerReward = rows.compactMap { ModelBench.percentLower(-$0.planner.totalReward, than: -$0.pi.totalReward) }
        out.append(BenchFigure(bench: bench, figure: "thermal: planner (true model, perfect forecast) cheaper than the PI (mean)",
                               value: ModelBench.mean(plannerSaving), unit: "%", better: .higher))
        out.append(BenchFigure(bench: bench, figure: "thermal: planner (true model, perfect forecast) cost + comfort penalty below the PI's (mean)",
                               value: ModelBench.mean(plannerReward), unit: "%", better: .higher))
        out.append(BenchFigure(bench: bench, figure: "thermal: planner (true model, perfect forecast) extra comfort violation over the PI (worst week)",
                               value: rows.map { $0.planner.comfortViolation - $0.pi.comfortViolation }.max(), unit: "K·h", better: .lower))
        return out
    }
}

/// The heater's section: the planner with the true model against the PI, per seed.
struct HeaterEntry {
    /// One seed's run.
    struct Row {
        var seed: UInt64
        var shifts: Int
        var pi: HeaterPlanning.Run
        var relaxed: HeaterPlanning.Run
        var discrete: HeaterPlanning.Run
    }
    var rows: [Row] = []

    static func measure(seeds: [UInt64], shifts: Int, context: BenchContext) throws -> HeaterEntry {
        var entry = HeaterEntry()
        let steps = shifts * Heater.Parameters().episodeSteps
        for s in seeds {
            let pi = HeaterPlanning.runPI(seed: s, steps: steps)
            let t0 = Date()
            let relaxed = try HeaterPlanning.runPlanner(seed: s, steps: steps, relaxed: true)
            let seconds = Date().timeIntervalSince(t0)
            let discrete = try HeaterPlanning.runPlanner(seed: s, steps: steps, relaxed: false)
            context.progress(String(format: "heater seed %llu, %d shifts, %d setpoint changes: return per shift PI %.1f, planner relaxed %.1f, discrete %.1f; mean |error| %.2f / %.2f / %.2f K; relaxed planner %.2f ms per decision",
                                    s, shifts, pi.setpointChanges, pi.totalReward / Double(shifts), relaxed.totalReward / Double(shifts),
                                    discrete.totalReward / Double(shifts), pi.meanAbsError, relaxed.meanAbsError, discrete.meanAbsError,
                                    1000 * seconds / Double(max(steps, 1))))
            entry.rows.append(Row(seed: s, shifts: shifts, pi: pi, relaxed: relaxed, discrete: discrete))
        }
        return entry
    }

    func figures(bench: String) -> [BenchFigure] {
        var out: [BenchFigure] = []
        let anchor = "HeaterPI (same seed)"
        for r in rows {
            let n = Double(max(r.shifts, 1))
            out.append(BenchFigure(bench: bench, figure: "heater seed \(r.seed): planner (true model, relaxed) cost per shift (−return)",
                                   value: -r.relaxed.totalReward / n, unit: "reward", anchor: anchor, anchorValue: -r.pi.totalReward / n, better: .lower))
            out.append(BenchFigure(bench: bench, figure: "heater seed \(r.seed): planner (true model, stages only) cost per shift (−return)",
                                   value: -r.discrete.totalReward / n, unit: "reward", anchor: anchor, anchorValue: -r.pi.totalReward / n, better: .lower))
        }
        let relaxed = rows.compactMap { ModelBench.percentLower(-$0.relaxed.totalReward, than: -$0.pi.totalReward) }
        let discrete = rows.compactMap { ModelBench.percentLower(-$0.discrete.totalReward, than: -$0.pi.totalReward) }
        out.append(BenchFigure(bench: bench, figure: "heater: planner (true model, relaxed) better than the PI (mean over \(rows.count) seeds)",
                               value: ModelBench.mean(relaxed), unit: "%", better: .higher))
        out.append(BenchFigure(bench: bench, figure: "heater: planner (true model, relaxed) better than the PI (worst seed)",
                               value: relaxed.min(), unit: "%", better: .higher))
        out.append(BenchFigure(bench: bench, figure: "heater: planner (true model, stages only) better than the PI (mean)",
                               value: ModelBench.mean(discrete), unit: "%", better: .higher))
        return out
    }
}
