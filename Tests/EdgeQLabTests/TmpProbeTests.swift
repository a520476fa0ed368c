import EdgeQLab
import EdgeQModel
import EdgeQPlants
import Foundation
import Testing

@Suite struct TmpProbeTests {
    @Test func benchLike() throws {
        let map = try NewPlantsLabTests.map("heater")
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var settings = HeaterDistillation.Settings()
        settings.studentRounds = Int(ProcessInfo.processInfo.environment["EDGEQ_DISTILL_ROUNDS"] ?? "") ?? 0
        settings.every = Int(ProcessInfo.processInfo.environment["EDGEQ_DISTILL_EVERY"] ?? "") ?? 1
        let o = try HeaterDistillation.distil(map: map, logPath: dir.appendingPathComponent("l.sqlite").path, settings: settings)
        for tol in [0.01, 0.02, 0.03, 0.05] {
            let held = o.heldOut
            _ = held
            print("tol \\(tol)")
        }
        print(String(format: "PROBE every %d rounds \(settings.studentRounds): %d train / %d held; teacher %.1f s, train %.1f s; held strict %.1f%% within %.2g %.1f%% near-ties %.1f%% regret %.4f max %.3f; fp32 strict %.1f%%; train strict %.1f%%",
                     settings.every, o.trainStates, o.heldOutStates, o.teacherSeconds, o.trainSeconds, o.heldOut.strict * 100, o.heldOut.tolerance,
                     o.heldOut.tolerant * 100, o.heldOut.teacherNearTies * 100, o.heldOut.meanRegret, o.heldOut.maxRegret, o.heldOutFP32.strict * 100, o.train.strict * 100))
        let shifts = 2, steps = 2 * 960
        for s in UInt64(1)...3 {
            let pi = HeaterPlanning.runPI(seed: s, steps: steps)
            let truth = try HeaterPlanning.runPlanner(seed: s, steps: steps, relaxed: true)
            let teacher = try HeaterPlanning.runLearnedPlanner(seed: s, steps: steps, model: o.model, relaxed: true)
            let student = try HeaterDistillation.runStudent(o.student, map: map, seed: s, steps: steps)
            let mixed = try HeaterDistillation.runStudent(o.student, map: map, seed: s, steps: steps, precision: .mixed)
            func pct(_ x: Double) -> Double { 100 * (x - pi.totalReward) / abs(pi.totalReward) }
            print(String(format: "PROBE seed %llu per shift: PI %.1f, truth %.1f (%.1f%%), teacher %.1f (%.1f%%), student int8 %.1f (%.1f%%), mixed %.1f (%.1f%%)",
                         s, pi.totalReward / Double(shifts), truth.totalReward / Double(shifts), pct(truth.totalReward), teacher.totalReward / Double(shifts), pct(teacher.totalReward),
                         student.totalReward / Double(shifts), pct(student.totalReward), mixed.totalReward / Double(shifts), pct(mixed.totalReward)))
        }
    }
}
