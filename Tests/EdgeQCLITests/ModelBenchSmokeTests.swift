import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq bench model` end to end with one seed and one heater shift: the real `edgeq` binary
/// prints every figure in the benchmark format, each measured in the run, and the limits are
/// what they claim to be (the thermal optimum cheaper than the PI on its week, the heater
/// planner with the true model better than the heater's PI), and the thermal zone's retraining
/// with distillation serves its candidates.
@Suite struct ModelBenchSmokeTests {
    @Test func oneSeedPrintsEveryFigureMeasured() throws {
        let r = try EdgeQBinary.run(["bench", "model", "--json", "--seeds", "1", "--quick"], timeout: 600)
        #expect(r.code == 0, "stderr: \(r.stderr.suffix(2000))")
        let (lines, problems) = BenchLines.parse(r.stdout, bench: "model")
        #expect(problems.isEmpty, "\(problems)")
        for (figure, o) in lines {
            #expect(o["value"] is NSNumber, "\(figure) was not measured: \(o["reason"] ?? "no reason")")
        }
        func pair(_ figure: String) -> (Double, Double)? {
            guard let o = lines[figure], let v = (o["value"] as? NSNumber)?.doubleValue,
                  let a = (o["anchor_value"] as? NSNumber)?.doubleValue else { return nil }
            return (v, a)
        }
        let thermal = pair("thermal seed 1: optimum energy cost per week")
        #expect(thermal != nil)
        if let (optimum, pi) = thermal { #expect(optimum < pi) }
        let planner = pair("thermal seed 1: planner (true model, perfect forecast) energy cost per week")
        if let (p, pi) = planner, let (optimum, _) = thermal { #expect(p < pi && p >= optimum * 0.99) } else { Issue.record("no thermal planner figure") }
        let heater = pair("heater seed 1: planner (true model, relaxed) cost per shift (−return)")
        #expect(heater != nil)
        if let (cost, pi) = heater { #expect(cost < pi) }
        #expect(lines["thermal: optimum cheaper than the PI (mean over 1 weeks)"] != nil)
        #expect(lines["heater: planner (true model, relaxed) better than the PI (mean over 1 seeds)"] != nil)
        // The learned model: the heater's planner on it beats the PI; every plant's fit has a
        // class chosen, at 3 horizons per class against persistence.
        let learned = pair("heater seed 1: planner (learned model) cost (−return)")
        if let (cost, truth) = learned, let (_, pi) = heater { #expect(cost < pi && cost >= truth * 0.99) } else { Issue.record("no learned-model heater figure") }
        for plant in ["heater", "thermal", "cartpole", "mountaincar"] {
            let fits = lines.keys.filter { $0.hasPrefix("\(plant): ") && $0.contains("model held-out free-run error at") }
            #expect(fits.count == 6, "\(plant): \(fits.count) fit figures (2 classes × 3 horizons)")
            #expect(lines.keys.contains { $0.hasPrefix("\(plant): plant model chosen (") && !$0.contains("none") }, "\(plant): no class chosen")
        }
        // Distillation: the int8 network in control beats the PI; its held-out agreement is a share.
        let student = pair("heater seed 1: distilled int8 network cost per shift against the PI (−return)")
        if let (cost, pi) = student { #expect(cost < pi) } else { Issue.record("no distilled-network heater figure") }
        let agreement = (lines["heater: distilled int8 network picks the teacher's best action (held-out logged states)"]?["value"] as? NSNumber)?.doubleValue
        #expect(agreement.map { $0 > 0 && $0 <= 100 } == true)
        // The gateway's retraining with distillation, with and without the student's rounds on the
        // plant model: each candidate served the seed.
        for rounds in [2, 0] {
            #expect(pair("heater seed 1: retraining's distilled candidate (\(rounds) rounds) cost per shift against the PI (−return)") != nil, "\(rounds) rounds")
            #expect(lines["heater: retraining's distilled candidate (\(rounds) rounds on the model) better than the PI (mean over 1 seeds)"] != nil)
        }
        // The thermal zone's retraining with distillation (a small teacher with --quick): the
        // distilled and the model-free candidate each served the fresh week.
        for kind in ["distilled", "model-free"] {
            #expect(lines["thermal seed 1: retraining's \(kind) candidate cheaper than the PI (1 weeks served)"] != nil, "\(kind)")
            #expect(lines["thermal: retraining's \(kind) candidate's cost + comfort penalty below the PI's (mean)"] != nil, "\(kind)")
        }
        // The teacher in control of the first fresh week (its best value, the planner's decision),
        // and how far the student is behind it.
        for how in ["its best value", "the planner's decision"] {
            #expect(lines["thermal seed 1: the teacher in control (\(how)) cheaper than the PI (first evaluation seed)"] != nil, "\(how)")
        }
        #expect(lines["thermal: distilled candidate points behind its teacher (its best value), cost (first evaluation seed, mean)"] != nil)
        // thermal: 5 per seed + 8; heater: 2 per seed + 3; learned heater: 1 per seed + 2; fits: 4 × 7;
        // distillation: 3 + 2 per seed + 3; retraining's distillation: 2 × (1 per seed + 2);
        // thermal distillation: 4 per seed + 12
        let expected: Int = 18 + 3 + 28 + 8 + 6 + 16
        #expect(lines.count == expected)
    }

    /// `EDGEQ_BENCH_MODEL_PARTS` runs only the parts it names, and refuses a name it does not know
    /// before anything runs.
    @Test func thePartsVariableChoosesWhatRuns() throws {
        let bad = try ChildProcess.run(EdgeQBinary.path, ["bench", "model", "--quick", "--seeds", "1"], timeout: 60,
                                       environment: ["EDGEQ_BENCH_MODEL_PARTS": "fit,thermal-distill"])
        #expect(bad.code != 0 && bad.stderr.contains("unknown part 'thermal-distill' in EDGEQ_BENCH_MODEL_PARTS; available: thermal, heater, fit, heater_distill, thermal_distill"),
                "exit \(bad.code): \(bad.stderr)")
        #expect(!bad.stderr.contains("thermal seed"), "\(bad.stderr)")
        let r = try ChildProcess.run(EdgeQBinary.path, ["bench", "model", "--json", "--quick", "--seeds", "1"], timeout: 600,
                                     environment: ["EDGEQ_BENCH_MODEL_PARTS": "fit"])
        #expect(r.code == 0, "stderr: \(r.stderr.suffix(2000))")
        let (lines, problems) = BenchLines.parse(r.stdout, bench: "model")
        #expect(problems.isEmpty, "\(problems)")
        #expect(lines.count == 28 && lines.keys.allSatisfy { $0.contains("free-run error") || $0.contains("plant model chosen") }, "\(lines.keys.sorted())")
    }
}
