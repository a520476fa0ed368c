import EdgeQLab
import EdgeQModel
import EdgeQPlants
import EdgeQRetrain
import EdgeQTopicMap
import Foundation

/// `edgeq bench model`, the learned model's part: per plant, the incumbent's shadow log as the
/// gateway writes it (the lab drives the plant through its shipped mapping and the one decision
/// core into a real SQLite log, no dither), read into plant data (`PlantDataReader`) and given
/// to the same selection retraining runs (`PlantModelSelection` over `PlantModelClasses.standard`:
/// linear and ensemble): each class's held-out free-run error at 3 horizons against
/// persistence, and the class chosen. Then, on the heater, the planner on the learned model
/// against the planner that knows the true model and against the PI.
struct ModelFitEntry {
    /// One plant's fit.
    struct Row {
        var plant: String
        var seed: UInt64
        var samples: Int
        var report: PlantFitReport?
        var error: String?
        var seconds: Double
    }
    var rows: [Row] = []

    /// The lab plants with a shipped mapping that marks controlled signals, and the steps of
    /// shadow log each gets (about a week of plant time for the continuing plants; a few dozen
    /// episodes for the episodic ones).
    static let plants: [(name: String, steps: Int)] = [("heater", 6 * 960), ("thermal", 2016), ("cartpole", 5_000), ("mountaincar", 5_000)]

    static func shadowLog<P: LabPlant>(_ plant: inout P, map: TopicMap, steps: Int, seed: UInt64, path: String) throws {
        _ = try Lab(map: map).run(&plant, steps: steps, policy: .incumbent(dither: 0), seed: seed, logPath: path)
    }

    /// Logs `name`'s incumbent for `steps` steps on `seed` and returns the log's plant data.
    static func data(plant name: String, steps: Int, seed: UInt64, root: URL, scratch: URL) throws -> (TopicMap, PlantData) {
        let map = try TopicMap.load(path: root.appendingPathComponent("topics/\(name).yaml").path)
        let path = scratch.appendingPathComponent("\(name)-\(seed).sqlite").path
        switch name {
        case "heater": var p = HeaterLabPlant(seed: seed); try shadowLog(&p, map: map, steps: steps, seed: seed, path: path)
        case "thermal": var p = ThermalLabPlant(seed: seed); try shadowLog(&p, map: map, steps: steps, seed: seed, path: path)
        case "cartpole": var p = CartPoleLabPlant(seed: seed); try shadowLog(&p, map: map, steps: steps, seed: seed, path: path)
        case "mountaincar": var p = MountainCarLabPlant(seed: seed); try shadowLog(&p, map: map, steps: steps, seed: seed, path: path)
        default: throw BenchError.failed("no lab plant named \(name)")
        }
        let (data, _) = try PlantDataReader(map: map, minimumSamples: 30).read(logPath: path)
        return (map, data)
    }

    static func measure(seed: UInt64, context: BenchContext) throws -> ModelFitEntry {
        var entry = ModelFitEntry()
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-bench-model-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        for (name, steps) in plants {
            let (_, data) = try data(plant: name, steps: context.quick ? steps / 2 : steps, seed: seed,
                                     root: Anchors.packageRoot(), scratch: scratch)
            let t0 = Date()
            var row = Row(plant: name, seed: seed, samples: data.sampleCount, report: nil, error: nil, seconds: 0)
            do {
                row.report = try PlantModelSelection(fitters: PlantModelClasses.standard(), horizons: PlantModelSelection.horizons(for: data), seed: seed).evaluate(data).report
            } catch {
                row.error = "\(error)"
            }
            row.seconds = Date().timeIntervalSince(t0)
            if let r = row.report {
                let classes = r.classes.map { c in
                    "\(c.name) " + c.horizons.map { h in h.ratio.map { String(format: "%.3f", $0) } ?? "–" }.joined(separator: "/")
                }
                context.progress("model fit, \(name) (seed \(seed), \(data.sampleCount) samples of the incumbent's shadow log, \(String(format: "%.1f", row.seconds)) s): ratio to persistence at \(r.horizons.map(String.init).joined(separator: "/")) ticks: \(classes.joined(separator: "; ")); chosen \(r.chosen ?? "none")\(r.refused.map { " (refused: \($0))" } ?? "")")
            } else {
                context.progress("model fit, \(name): not measured: \(row.error ?? "?")")
            }
            entry.rows.append(row)
        }
        return entry
    }

    func figures(bench: String) -> [BenchFigure] {
        var out: [BenchFigure] = []
        for r in rows {
            guard let report = r.report else {
                out.append(BenchFigure(bench: bench, figure: "\(r.plant): plant model fit", value: nil, unit: "ratio",
                                       better: .lower, reason: "not measured: \(r.error ?? "no report")"))
                continue
            }
            for c in report.classes {
                for h in c.horizons {
                    out.append(BenchFigure(bench: bench, figure: "\(r.plant): \(c.name) model held-out free-run error at \(h.steps) ticks",
                                           value: h.modelNormalized, unit: "× held-out SD",
                                           anchor: "persistence (same windows)", anchorValue: h.persistenceNormalized, better: .lower,
                                           reason: h.modelNormalized == nil ? "not measured: \(c.error ?? "the free run diverged")" : nil))
                }
            }
            out.append(BenchFigure(bench: bench, figure: "\(r.plant): plant model chosen (\(report.chosen ?? "none, refused"))",
                                   value: report.chosen == nil ? 0 : 1, unit: "1 = a model better than persistence", better: .higher))
        }
        return out
    }
}

/// The heater: the planner on the model learned from a PI shadow log of another seed (6 shifts)
/// against the planner with the true model and the PI, on the same evaluation seeds.
struct HeaterLearnedEntry {
    struct Row {
        var seed: UInt64
        var pi: HeaterPlanning.Run
        var truth: HeaterPlanning.Run
        var learned: HeaterPlanning.Run
    }
    var model = ""
    var rows: [Row] = []

    static func measure(seeds: [UInt64], shifts: Int, context: BenchContext) throws -> HeaterLearnedEntry {
        var entry = HeaterLearnedEntry()
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-bench-heater-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        // Learned from a seed the evaluation never sees: the PI's log, no dither.
        let (_, data) = try ModelFitEntry.data(plant: "heater", steps: 6 * 960, seed: 1000, root: Anchors.packageRoot(), scratch: scratch)
        let (model, report) = try PlantModelSelection(fitters: PlantModelClasses.standard(), seed: 1000).select(data)
        entry.model = model.description
        context.progress("heater: planner on the learned model \(model.description) (chosen \(report.chosen ?? "?") from 6 shifts of the PI's shadow log, seed 1000)")
        let steps = shifts * Heater.Parameters().episodeSteps
        for s in seeds {
            let pi = HeaterPlanning.runPI(seed: s, steps: steps)
            let truth = try HeaterPlanning.runPlanner(seed: s, steps: steps, relaxed: true)
            let t0 = Date()
            let learned = try HeaterPlanning.runLearnedPlanner(seed: s, steps: steps, model: model, relaxed: true)
            let ms = 1000 * Date().timeIntervalSince(t0) / Double(max(steps, 1))
            context.progress(String(format: "heater seed %llu: return per shift PI %.1f, planner true model %.1f, planner learned model %.1f (%.2f ms per decision)",
                                    s, pi.totalReward / Double(shifts), truth.totalReward / Double(shifts), learned.totalReward / Double(shifts), ms))
            entry.rows.append(Row(seed: s, pi: pi, truth: truth, learned: learned))
        }
        return entry
    }

    func figures(bench: String) -> [BenchFigure] {
        var out: [BenchFigure] = []
        for r in rows {
            out.append(BenchFigure(bench: bench, figure: "heater seed \(r.seed): planner (learned model) cost (−return)",
                                   value: -r.learned.totalReward, unit: "reward", anchor: "planner (true model, same seed)",
                                   anchorValue: -r.truth.totalReward, better: .lower))
        }
        let vsPI = rows.compactMap { ModelBench.percentLower(-$0.learned.totalReward, than: -$0.pi.totalReward) }
        let truthVsPI = rows.compactMap { ModelBench.percentLower(-$0.truth.totalReward, than: -$0.pi.totalReward) }
        out.append(BenchFigure(bench: bench, figure: "heater: planner (learned model) better than the PI (mean over \(rows.count) seeds)",
                               value: ModelBench.mean(vsPI), unit: "%", better: .higher))
        out.append(BenchFigure(bench: bench, figure: "heater: planner (learned model) points behind the planner with the true model (mean; goal ≤ 1)",
                               value: zip(truthVsPI, vsPI).map { $0 - $1 }.reduce(0, +) / Double(max(rows.count, 1)), unit: "points", better: .lower))
        return out
    }
}
