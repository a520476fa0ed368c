import EdgeQLab
import EdgeQPlants
import EdgeQTopicMap
import Foundation

/// `edgeq bench model`, distillation (docs/learning.md, "Distillation: the planner teaches the
/// int8 network"): the planner on the model learned from 6 shifts of the PI's shadow log (seed
/// 1000, no dither, through topics/heater.yaml) values each first action on the logged states;
/// a Q-network of the mapping's architecture is regressed on those values and quantized as
/// retraining quantizes. Measured: how often the int8 network picks the teacher's best action
/// on the newest fifth of the log (held out), and, per evaluation seed, its cost per shift
/// serving the heater through the lab (control mode, the one decision core) against its
/// teacher (`HeaterPlanning.runLearnedPlanner`), the planner with the true model and the PI.
struct HeaterDistillEntry {
    struct Row {
        var seed: UInt64
        var shifts: Int
        var pi: HeaterPlanning.Run
        var truth: HeaterPlanning.Run
        var teacher: HeaterPlanning.Run
        var student: HeaterPlanning.Run
    }
    var outcome: HeaterDistillation.Outcome?
    var rows: [Row] = []

    static func measure(seeds: [UInt64], shifts: Int, context: BenchContext) throws -> HeaterDistillEntry {
        var entry = HeaterDistillEntry()
        let root = Anchors.packageRoot()
        let map = try TopicMap.load(path: root.appendingPathComponent("topics/heater.yaml").path)
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-bench-distill-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        var settings = HeaterDistillation.Settings()
        settings.every = context.quick ? 4 : 2   // the teacher values every 2nd logged state (every 4th with --quick)
        let o = try HeaterDistillation.distil(map: map, logPath: scratch.appendingPathComponent("heater-1000.sqlite").path, settings: settings)
        entry.outcome = o
        context.progress(String(format: "heater distillation: teacher = planner on %@ valued %d training states (%d of them visited by the student in control) and %d held-out logged states (%.1f s), student %@ trained in %.1f s (loss %.4g); int8 agrees with the teacher on %.1f%% of held-out states (within %.2g: %.1f%%; mean regret %.4f, max %.3f), %.1f%% of training states",
                                o.modelDescription, o.trainStates, o.studentStates, o.heldOutStates, o.teacherSeconds, o.student.architecture.label, o.trainSeconds,
                                o.trainLoss, o.heldOut.strict * 100, o.heldOut.tolerance, o.heldOut.tolerant * 100, o.heldOut.meanRegret,
                                o.heldOut.maxRegret, o.train.strict * 100))
        let learned = o.model
        let steps = shifts * Heater.Parameters().episodeSteps
        for s in seeds {
            let pi = HeaterPlanning.runPI(seed: s, steps: steps)
            let truth = try HeaterPlanning.runPlanner(seed: s, steps: steps, relaxed: true)
            let teacher = try HeaterPlanning.runLearnedPlanner(seed: s, steps: steps, model: learned, relaxed: true)
            let student = try HeaterDistillation.runStudent(o.student, map: map, seed: s, steps: steps)
            let n = Double(shifts)
            context.progress(String(format: "heater seed %llu: return per shift PI %.1f, planner true model %.1f, teacher (planner, learned model) %.1f, distilled int8 network %.1f",
                                    s, pi.totalReward / n, truth.totalReward / n, teacher.totalReward / n, student.totalReward / n))
            entry.rows.append(Row(seed: s, shifts: shifts, pi: pi, truth: truth, teacher: teacher, student: student))
        }
        return entry
    }

    func figures(bench: String) -> [BenchFigure] {
        var out: [BenchFigure] = []
        if let o = outcome {
            out.append(BenchFigure(bench: bench, figure: "heater: distilled int8 network picks the teacher's best action (held-out logged states)",
                                   value: o.heldOut.strict * 100, unit: "%", better: .higher))
            out.append(BenchFigure(bench: bench, figure: String(format: "heater: distilled int8 network's pick within %.2g of the teacher's best value (held-out)", o.heldOut.tolerance),
                                   value: o.heldOut.tolerant * 100, unit: "%", better: .higher))
            out.append(BenchFigure(bench: bench, figure: "heater: distilled int8 network's mean regret by the teacher's values (held-out)",
                                   value: o.heldOut.meanRegret, unit: "reward", better: .lower))
        }
        for r in rows {
            let n = Double(max(r.shifts, 1))
            out.append(BenchFigure(bench: bench, figure: "heater seed \(r.seed): distilled int8 network cost per shift (−return)",
                                   value: -r.student.totalReward / n, unit: "reward", anchor: "its teacher (planner, learned model, same seed)",
                                   anchorValue: -r.teacher.totalReward / n, better: .lower))
            out.append(BenchFigure(bench: bench, figure: "heater seed \(r.seed): distilled int8 network cost per shift against the PI (−return)",
                                   value: -r.student.totalReward / n, unit: "reward", anchor: "HeaterPI (same seed)",
                                   anchorValue: -r.pi.totalReward / n, better: .lower))
        }
        let vsPI = rows.compactMap { ModelBench.percentLower(-$0.student.totalReward, than: -$0.pi.totalReward) }
        let teacherVsPI = rows.compactMap { ModelBench.percentLower(-$0.teacher.totalReward, than: -$0.pi.totalReward) }
        let truthVsPI = rows.compactMap { ModelBench.percentLower(-$0.truth.totalReward, than: -$0.pi.totalReward) }
        out.append(BenchFigure(bench: bench, figure: "heater: distilled int8 network better than the PI (mean over \(rows.count) seeds)",
                               value: ModelBench.mean(vsPI), unit: "%", better: .higher))
        out.append(BenchFigure(bench: bench, figure: "heater: distilled int8 network points behind its teacher (mean)",
                               value: ModelBench.mean(zip(teacherVsPI, vsPI).map { $0 - $1 }), unit: "points", better: .lower))
        out.append(BenchFigure(bench: bench, figure: "heater: distilled int8 network points behind the planner with the true model (mean)",
                               value: ModelBench.mean(zip(truthVsPI, vsPI).map { $0 - $1 }), unit: "points", better: .lower))
        return out
    }
}
