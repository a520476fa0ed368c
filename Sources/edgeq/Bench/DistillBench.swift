import EdgeQLab
import EdgeQNet
import EdgeQPlants
import EdgeQRetrain
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
///
/// Then the gateway's own retraining on the same log (`Retrainer.runWithPlantModel`, the
/// mapping with `learning.distill` on, its defaults — with `--quick` a smaller teacher —, with
/// the student's rounds on the plant model and without them, docs/learning.md "The student's
/// own states in retraining"): each distilled candidate serves the same seeds through the lab.
struct HeaterDistillEntry {
    /// The retraining's distilled candidate with `rounds` rounds: its report and its runs per seed.
    struct Retrained {
        var rounds: Int
        var report: DistillReport?
        var runs: [HeaterPlanning.Run] = []
    }
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
    var retrained: [Retrained] = []

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
            // The teacher as the distillation's `PlanTeacher` plans: discounted by the mapping's γ.
            let teacher = try HeaterPlanning.runLearnedPlanner(seed: s, steps: steps, model: learned, relaxed: true,
                                                               discount: map.learning.gamma)
            let student = try HeaterDistillation.runStudent(o.student, map: map, seed: s, steps: steps)
            let n = Double(shifts)
            context.progress(String(format: "heater seed %llu: return per shift PI %.1f, planner true model %.1f, teacher (planner, learned model) %.1f, distilled int8 network %.1f",
                                    s, pi.totalReward / n, truth.totalReward / n, teacher.totalReward / n, student.totalReward / n))
            entry.rows.append(Row(seed: s, shifts: shifts, pi: pi, truth: truth, teacher: teacher, student: student))
        }
        // The gateway's retraining on the same log, with and without the student's rounds.
        let text = try String(contentsOf: root.appendingPathComponent("topics/heater.yaml"), encoding: .utf8)
        for rounds in [2, 0] {
            let distill = context.quick ? "{enabled: true, horizon: 32, states: 300, updates: 5000, rounds: \(rounds)}" : "{enabled: true, rounds: \(rounds)}"
            let edited = text.replacingOccurrences(of: "learning:\n  hidden: [64, 64]\n", with: "learning:\n  hidden: [64, 64]\n  distill: \(distill)\n")
            guard edited != text else { throw BenchError.failed("topics/heater.yaml has no 'learning:' section starting with 'hidden: [64, 64]' to add distillation to") }
            let m = try TopicMap.parse(yaml: edited, file: "heater.yaml")
            let t0 = Date()
            let o = try Retrainer(map: m, policy: CheckPolicy(m.learning)).runWithPlantModel(
                logPath: scratch.appendingPathComponent("heater-1000.sqlite").path, limits: RetrainLimits(steps: context.quick ? 500 : m.learning.updatesPerRetrain),
                warmStart: nil, output: scratch.appendingPathComponent("retrained-\(rounds).safetensors"))
            var r = Retrained(rounds: rounds, report: o.report.distill)
            let d = o.report.distill
            context.progress(String(format: "heater retraining with distillation, %d rounds on the model (%.1f s): %d logged + %d visited states valued (teacher %.1f s), held-out agreement %.1f%% (within the tolerance %.1f%%), candidate offered: %@",
                                    rounds, Date().timeIntervalSince(t0), d?.statesValued ?? 0, d?.studentStates ?? 0, d?.teacherSeconds ?? 0,
                                    (d?.agreementHeldOut?.strict ?? .nan) * 100, (d?.agreementHeldOut?.tolerant ?? .nan) * 100, d?.chosen ?? "-"))
            if let student = o.distilledCandidate {
                for s in seeds {
                    let run = try HeaterDistillation.runStudent(student, map: m, seed: s, steps: steps)
                    context.progress(String(format: "heater seed %llu: retraining's distilled candidate (%d rounds) return per shift %.1f", s, rounds, run.totalReward / Double(shifts)))
                    r.runs.append(run)
                }
            }
            entry.retrained.append(r)
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
        for r in retrained {
            let name = "heater: retraining's distilled candidate (\(r.rounds) rounds on the model)"
            let measured = r.runs.count == rows.count && !rows.isEmpty
            let why = r.report.flatMap { $0.skipped } ?? "the retraining made no distilled candidate"
            for (row, run) in zip(rows, r.runs) {
                let n = Double(max(row.shifts, 1))
                out.append(BenchFigure(bench: bench, figure: "heater seed \(row.seed): retraining's distilled candidate (\(r.rounds) rounds) cost per shift against the PI (−return)",
                                       value: -run.totalReward / n, unit: "reward", anchor: "HeaterPI (same seed)", anchorValue: -row.pi.totalReward / n, better: .lower))
            }
            let gains = zip(rows, r.runs).compactMap { ModelBench.percentLower(-$0.1.totalReward, than: -$0.0.pi.totalReward) }
            out.append(BenchFigure(bench: bench, figure: "\(name) better than the PI (mean over \(rows.count) seeds)",
                                   value: measured ? ModelBench.mean(gains) : nil, unit: "%", better: .higher, reason: measured ? nil : why))
            out.append(BenchFigure(bench: bench, figure: "\(name) points behind the planner with the true model (mean)",
                                   value: measured ? ModelBench.mean(zip(truthVsPI, gains).map { $0 - $1 }) : nil, unit: "points", better: .lower,
                                   reason: measured ? nil : why))
        }
        return out
    }
}
