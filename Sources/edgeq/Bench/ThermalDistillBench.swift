import EdgeQLab
import EdgeQNet
import EdgeQPlants
import EdgeQRetrain
import EdgeQTopicMap
import Foundation

/// `edgeq bench model`, the thermal zone's distilled candidate (docs/learning.md, "Distillation
/// on the thermal zone"): per seed, the lab logs `logWeeks` weeks of the PI in shadow (dithered
/// 20 %, as topics/thermal.yaml's comment asks) through topics/thermal.yaml; then the gateway's
/// own retraining runs twice on that log — as shipped (model-free) and with `learning.distill`
/// on at its defaults (the planner on the plant model learned from the log teaches the int8
/// network, with the student's rounds on the model) — and each candidate serves fresh weeks
/// (weather seeds 1001…) through the lab's decision core against the plain PI on the same
/// weather (`ThermalExperiment.evaluate`). Whatever the checks said: the figures are what each
/// candidate does in control; the verdicts are printed beside them. Then the teacher itself in
/// control of the first fresh weeks (`TeacherDrivenPlant`: the planner on the plant model the
/// retraining accepted), picking its best value and deciding as the planner does: how far the
/// student is from what taught it.
///
/// The goal it is read against (issue 14): ≥ 15 % cheaper than the PI over 5 seeds with no
/// comfort loss beyond the PI's; the perfect-forecast optimum (`ThermalEntry`) is the limit.
struct ThermalDistillEntry {
    /// One retraining's candidate on one logging seed.
    struct Candidate {
        var verdict: String
        var periods: [ThermalExperiment.Period]
        var seconds: Double
        var distill: DistillReport?
        /// Cost improvement over the PI over all periods (positive is cheaper).
        var improvement: Double { ThermalExperiment.costImprovement(periods) }
        /// The plant's own cost + comfort penalty (−return) below the PI's, over all periods.
        var penaltyImprovement: Double {
            let pi = periods.map(\.incumbent.totalReward).reduce(0, +)
            let c = periods.map(\.candidate.totalReward).reduce(0, +)
            return pi != 0 ? (c - pi) / abs(pi) : 0
        }
        /// The worst period's extra comfort violation over the PI, K·h a week.
        var worstExtraComfort: Double { periods.map(\.extraComfortViolationPerWeek).max() ?? 0 }
    }
    /// The distillation's teacher in control (`TeacherDrivenPlant`) on the first evaluation
    /// seed: the planner on the retraining's plant model deciding each step, against the PI's
    /// period of the same weather.
    struct TeacherRun {
        var period: ThermalExperiment.Period
        var seconds: Double
        var teacherDecisions: Int
        /// Steps the PI decided (the model's memory at each episode's start, unusable signals).
        var incumbentDecisions: Int
        var profile: DayProfile
        var improvement: Double { period.costImprovement }
        var penaltyImprovement: Double { ThermalDistillEntry.penalty(period) }
    }
    /// Where a controller spends: on working days, per 3-hour bin of the day, the mean heater
    /// level and zone temperature after the step (a diagnostic, printed in the progress).
    struct DayProfile {
        var level = [Double](repeating: 0, count: 8), temp = [Double](repeating: 0, count: 8), n = [Int](repeating: 0, count: 8)
        mutating func add(_ o: ThermalStep) {
            guard o.weekday < 5 else { return }
            let b = min(max(Int(o.hour / 3), 0), 7)
            level[b] += Double(o.level)
            temp[b] += o.zoneTemp
            n[b] += 1
        }
        var text: String {
            (0..<8).map { b in n[b] == 0 ? "-" : String(format: "%02d h %.2f/%.1f", b * 3, level[b] / Double(n[b]), temp[b] / Double(n[b])) }
                .joined(separator: ", ")
        }
    }
    struct Row {
        var seed: UInt64
        var modelFree: Candidate
        /// nil when the retraining made no distilled candidate (`skippedWhy` says why).
        var distilled: Candidate?
        var skippedWhy: String?
        /// The teacher in control, picking its best value per state (what the student is taught)
        /// and deciding as the planner decides; nil without a plant model or a distilled candidate.
        var teacherBest: TeacherRun?
        var teacherPlanner: TeacherRun?
        /// The distilled candidate on the teacher's period (the first evaluation seed).
        var studentPeriod: ThermalExperiment.Period? { distilled?.periods.first }
    }
    var rows: [Row] = []
    var weeksEvaluated = 0

    /// The mapping `text` (topics/thermal.yaml) with `distill` added to its `learning` section.
    static func withDistill(_ text: String, _ distill: String) throws -> TopicMap {
        let edited = text.replacingOccurrences(of: "learning:\n  hidden: [64, 64]\n", with: "learning:\n  hidden: [64, 64]\n  distill: \(distill)\n")
        guard edited != text else { throw BenchError.failed("topics/thermal.yaml has no 'learning:' section starting with 'hidden: [64, 64]' to add distillation to") }
        return try TopicMap.parse(yaml: edited, file: "thermal.yaml")
    }

    static func measure(seeds: [UInt64], context: BenchContext) throws -> ThermalDistillEntry {
        var entry = ThermalDistillEntry()
        let root = Anchors.packageRoot()
        let path = root.appendingPathComponent("topics/thermal.yaml").path
        let shipped = try TopicMap.load(path: path)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        // --quick: a smoke run of the part (2 weeks of log, a small teacher, one week served).
        // EDGEQ_BENCH_THERMAL_DISTILL: another `distill` section to try (e.g. `{enabled: true, teacher_seconds: none}`).
        let section = ProcessInfo.processInfo.environment["EDGEQ_BENCH_THERMAL_DISTILL"]
            ?? (context.quick ? "{enabled: true, horizon: 16, states: 40, updates: 2000, rounds: 1}" : "{enabled: true}")
        let distilling = try withDistill(text, section)
        context.progress("thermal distillation with distill: \(section)")
        var experiment = ThermalExperiment()
        experiment.logWeeks = context.quick ? 2 : 6
        experiment.evaluationWeeks = context.quick ? 1 : 2
        experiment.evaluationSeeds = context.quick ? [1001] : [1001, 1002, 1003]
        entry.weeksEvaluated = experiment.evaluationWeeks * experiment.evaluationSeeds.count
        let limits = RetrainLimits(steps: context.quick ? 500 : nil)
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-bench-thermal-distill-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        for s in seeds {
            let logPath = scratch.appendingPathComponent("thermal-\(s).sqlite").path
            var plant = ThermalLabPlant(seed: s)
            _ = try Lab(map: shipped).run(&plant, steps: experiment.logWeeks * 2016, policy: .incumbent(dither: experiment.dither), seed: s, logPath: logPath)
            // As shipped: the model-free candidate.
            var t0 = Date()
            var free = Retrainer(map: shipped, policy: CheckPolicy(shipped.learning))
            free.seed = s
            let (report, candidate) = try free.train(logPath: logPath, limits: limits, warmStart: nil)
            let freeRun = Candidate(verdict: report.verdict, periods: try experiment.evaluate(candidate, map: shipped),
                                    seconds: Date().timeIntervalSince(t0), distill: nil)
            context.progress(String(format: "thermal seed %llu: model-free candidate (%.1f s, checks %@) %+.2f%% cheaper than the PI served over %d weeks (cost + comfort penalty %+.2f%%), worst period extra comfort %.2f K·h/week",
                                    s, freeRun.seconds, freeRun.verdict, freeRun.improvement * 100, entry.weeksEvaluated, freeRun.penaltyImprovement * 100, freeRun.worstExtraComfort))
            // With distillation: the distilled candidate, whichever the retraining chose.
            t0 = Date()
            var teacher = Retrainer(map: distilling, policy: CheckPolicy(distilling.learning))
            teacher.seed = s
            let o = try teacher.trainWithPlantModel(logPath: logPath, limits: limits, warmStart: nil)
            let seconds = Date().timeIntervalSince(t0)
            let d = o.report.distill
            var row = Row(seed: s, modelFree: freeRun)
            if let student = o.distilledCandidate {
                let run = Candidate(verdict: o.report.verdict, periods: try experiment.evaluate(student, map: distilling), seconds: seconds, distill: d)
                row.distilled = run
                if let model = o.plantModel, let pi = run.periods.first {
                    let profiles = try Self.profiles(student: student, map: distilling, seed: pi.seed, weeks: experiment.evaluationWeeks)
                    context.progress("thermal seed \(s): working days by 3-hour bin, mean level / zone °C: the PI \(profiles.pi.text); the student \(profiles.student.text) (the PI in charge outside the student's support \(profiles.supportHeld) of \(experiment.evaluationWeeks * 2016) ticks)")
                    let teacherMap = try PlanTeacher(map: distilling, model: model, horizon: distilling.learning.distill.horizon)
                    for how in [PlanTeacher.ClosedLoop.bestValue, .planner] {
                        let r = try teacherRun(teacherMap, how: how, against: pi, weeks: experiment.evaluationWeeks, map: distilling)
                        if how == .bestValue { row.teacherBest = r } else { row.teacherPlanner = r }
                        context.progress(String(format: "thermal seed %llu: the teacher in control (%@, weather seed %llu, %.1f s, %d steps decided, %d by the PI) %+.2f%% cheaper than the PI (cost + comfort penalty %+.2f%%), extra comfort %.2f K·h/week; the distilled student on the same weeks %+.2f%% (%+.2f%%)",
                                                s, how == .bestValue ? "its best value" : "the planner's decision", pi.seed, r.seconds, r.teacherDecisions, r.incumbentDecisions,
                                                r.improvement * 100, r.penaltyImprovement * 100, r.period.extraComfortViolationPerWeek,
                                                pi.costImprovement * 100, Self.penalty(pi) * 100))
                        context.progress("thermal seed \(s): the teacher (\(how == .bestValue ? "its best value" : "the planner's decision")) by 3-hour bin: \(r.profile.text)")
                    }
                }
                context.progress(String(format: "thermal seed %llu: distilled candidate (%.1f s: teacher %d logged + %d visited states in %.1f s, held-out agreement %.1f%%, within the tolerance %.1f%%; the retraining chose %@ (%@), checks %@) %+.2f%% cheaper than the PI (cost + comfort penalty %+.2f%%), worst period extra comfort %.2f K·h/week",
                                        s, seconds, d?.statesValued ?? 0, d?.studentStates ?? 0, d?.teacherSeconds ?? 0,
                                        (d?.agreementHeldOut?.strict ?? .nan) * 100, (d?.agreementHeldOut?.tolerant ?? .nan) * 100,
                                        d?.chosen ?? "-", d?.why ?? "-", o.report.verdict, run.improvement * 100, run.penaltyImprovement * 100, run.worstExtraComfort))
            } else {
                row.skippedWhy = d?.skipped ?? "the retraining made no distilled candidate"
                context.progress("thermal seed \(s): no distilled candidate: \(row.skippedWhy ?? "")")
            }
            entry.rows.append(row)
        }
        return entry
    }

    /// The teacher (`how`) in control of the weather of `pi`'s period for `weeks` weeks, against it.
    static func teacherRun(_ teacher: PlanTeacher, how: PlanTeacher.ClosedLoop, against pi: ThermalExperiment.Period, weeks: Int,
                           map: TopicMap) throws -> TeacherRun {
        let t0 = Date()
        var plant = try TeacherDrivenPlant(ThermalLabPlant(seed: pi.seed), teacher: teacher, how: how)
        var profile = DayProfile()
        let r = try Lab(map: map).run(&plant, steps: weeks * 2016, policy: .incumbent(dither: 0), seed: pi.seed,
                                      onStep: { p, _ in profile.add(p.plant.zone.observation) })
        let period = ThermalExperiment.Period(seed: pi.seed, incumbent: pi.incumbent, candidate: plant.score, fallbacks: plant.incumbentDecisions,
                                              candidateActionShare: r.actionShare)
        return TeacherRun(period: period, seconds: Date().timeIntervalSince(t0), teacherDecisions: plant.teacherDecisions,
                          incumbentDecisions: plant.incumbentDecisions, profile: profile)
    }

    /// The PI's and the `student`'s day profiles on `seed`'s weather for `weeks` weeks (runs of
    /// their own, as `ThermalExperiment.evaluate` runs them).
    static func profiles(student: QModel, map: TopicMap, seed: UInt64, weeks: Int) throws -> (pi: DayProfile, student: DayProfile, supportHeld: Int) {
        var pi = DayProfile(), st = DayProfile()
        var a = ThermalLabPlant(seed: seed), b = ThermalLabPlant(seed: seed)
        _ = try Lab(map: map).run(&a, steps: weeks * 2016, policy: .incumbent(dither: 0), seed: seed, onStep: { p, _ in pi.add(p.zone.observation) })
        let r = try Lab(map: map).run(&b, steps: weeks * 2016, policy: .model(student), seed: seed, onStep: { p, _ in st.add(p.zone.observation) })
        return (pi, st, r.supportHeldTicks)
    }

    /// A period's cost + comfort penalty below the PI's (the plant's own reward).
    static func penalty(_ p: ThermalExperiment.Period) -> Double {
        p.incumbent.totalReward != 0 ? (p.candidate.totalReward - p.incumbent.totalReward) / abs(p.incumbent.totalReward) : 0
    }

    func figures(bench: String) -> [BenchFigure] {
        var out: [BenchFigure] = []
        let anchor = "ThermalPI (same weather)"
        for r in rows {
            out.append(BenchFigure(bench: bench, figure: "thermal seed \(r.seed): retraining's distilled candidate cheaper than the PI (\(weeksEvaluated) weeks served)",
                                   value: r.distilled.map { $0.improvement * 100 }, unit: "%", anchor: anchor, anchorValue: 0, better: .higher,
                                   reason: r.distilled == nil ? r.skippedWhy : nil))
            out.append(BenchFigure(bench: bench, figure: "thermal seed \(r.seed): retraining's model-free candidate cheaper than the PI (\(weeksEvaluated) weeks served)",
                                   value: r.modelFree.improvement * 100, unit: "%", anchor: anchor, anchorValue: 0, better: .higher))
        }
        let distilled = rows.compactMap(\.distilled)
        let measured = distilled.count == rows.count && !rows.isEmpty
        let why = rows.compactMap(\.skippedWhy).first ?? "no seed ran"
        out.append(BenchFigure(bench: bench, figure: "thermal: retraining's distilled candidate cheaper than the PI (mean over \(rows.count) seeds)",
                               value: measured ? ModelBench.mean(distilled.map { $0.improvement * 100 }) : nil, unit: "%", anchor: anchor, anchorValue: 0,
                               better: .higher, reason: measured ? nil : why))
        out.append(BenchFigure(bench: bench, figure: "thermal: retraining's distilled candidate's cost + comfort penalty below the PI's (mean)",
                               value: measured ? ModelBench.mean(distilled.map { $0.penaltyImprovement * 100 }) : nil, unit: "%", anchor: anchor, anchorValue: 0,
                               better: .higher, reason: measured ? nil : why))
        out.append(BenchFigure(bench: bench, figure: "thermal: retraining's distilled candidate extra comfort violation over the PI (worst period)",
                               value: measured ? distilled.map(\.worstExtraComfort).max() : nil, unit: "K·h/week", anchor: anchor, anchorValue: 0,
                               better: .lower, reason: measured ? nil : why))
        out.append(BenchFigure(bench: bench, figure: "thermal: retraining's distilled candidates offered (chosen and passed the checks)",
                               value: measured ? Double(distilled.filter { $0.verdict == "passed" && $0.distill?.chosen == "distilled" }.count) : nil, unit: "of \(rows.count)",
                               better: .higher, reason: measured ? nil : why))
        out.append(BenchFigure(bench: bench, figure: "thermal: retraining's model-free candidate cheaper than the PI (mean over \(rows.count) seeds)",
                               value: ModelBench.mean(rows.map { $0.modelFree.improvement * 100 }), unit: "%", anchor: anchor, anchorValue: 0, better: .higher))
        out.append(BenchFigure(bench: bench, figure: "thermal: retraining's model-free candidate's cost + comfort penalty below the PI's (mean)",
                               value: ModelBench.mean(rows.map { $0.modelFree.penaltyImprovement * 100 }), unit: "%", anchor: anchor, anchorValue: 0, better: .higher))
        out.append(BenchFigure(bench: bench, figure: "thermal: retraining's model-free candidate extra comfort violation over the PI (worst period)",
                               value: rows.map(\.modelFree.worstExtraComfort).max(), unit: "K·h/week", anchor: anchor, anchorValue: 0, better: .lower))
        // The teacher in control on the first evaluation seed, and the student on the same weeks.
        let teacherWhy = measured ? "no plant model was accepted, so there is no teacher" : why
        let taught = rows.filter { $0.teacherBest != nil && $0.teacherPlanner != nil && $0.studentPeriod != nil }
        let teacherMeasured = taught.count == rows.count && !rows.isEmpty
        for r in rows {
            for (label, run) in [("its best value", r.teacherBest), ("the planner's decision", r.teacherPlanner)] {
                out.append(BenchFigure(bench: bench, figure: "thermal seed \(r.seed): the teacher in control (\(label)) cheaper than the PI (first evaluation seed)",
                                       value: run.map { $0.improvement * 100 }, unit: "%", anchor: anchor, anchorValue: 0, better: .higher,
                                       reason: run == nil ? teacherWhy : nil))
            }
        }
        out.append(BenchFigure(bench: bench, figure: "thermal: the teacher in control (its best value) cheaper than the PI (first evaluation seed, mean)",
                               value: teacherMeasured ? ModelBench.mean(taught.compactMap { $0.teacherBest.map { $0.improvement * 100 } }) : nil, unit: "%",
                               anchor: anchor, anchorValue: 0, better: .higher, reason: teacherMeasured ? nil : teacherWhy))
        out.append(BenchFigure(bench: bench, figure: "thermal: the teacher in control (the planner's decision) cheaper than the PI (first evaluation seed, mean)",
                               value: teacherMeasured ? ModelBench.mean(taught.compactMap { $0.teacherPlanner.map { $0.improvement * 100 } }) : nil, unit: "%",
                               anchor: anchor, anchorValue: 0, better: .higher, reason: teacherMeasured ? nil : teacherWhy))
        out.append(BenchFigure(bench: bench, figure: "thermal: the teacher in control (its best value): cost + comfort penalty below the PI's (first evaluation seed, mean)",
                               value: teacherMeasured ? ModelBench.mean(taught.compactMap { $0.teacherBest.map { $0.penaltyImprovement * 100 } }) : nil, unit: "%",
                               anchor: anchor, anchorValue: 0, better: .higher, reason: teacherMeasured ? nil : teacherWhy))
        out.append(BenchFigure(bench: bench, figure: "thermal: distilled candidate points behind its teacher (its best value), cost (first evaluation seed, mean)",
                               value: teacherMeasured ? ModelBench.mean(taught.compactMap { r in
                                   r.teacherBest.flatMap { t in r.studentPeriod.map { (t.improvement - $0.costImprovement) * 100 } } }) : nil,
                               unit: "points", better: .lower, reason: teacherMeasured ? nil : teacherWhy))
        out.append(BenchFigure(bench: bench, figure: "thermal: retraining with distillation, wall time (mean)",
                               value: measured ? ModelBench.mean(distilled.map(\.seconds)) : nil, unit: "s", better: .lower, reason: measured ? nil : why))
        return out
    }
}
