import EdgeQLab
import EdgeQTopicMap
import Foundation

/// `edgeq bench fleet --parts thermal`: issue 15's thermal goal — 4 gateways × 2 weeks of
/// shadow data reach the result of 1 gateway × 6 weeks — in the lab, through the shipped
/// learning code (docs/benchmarks.md, `## fleet`).
///
/// Per seed s (1…5; 1 with `--quick`): **one gateway** logs 6 weeks of its plant (weather and
/// occupancy seed s) under the PI dithered 20 %, and retrains as a gateway does
/// (`ThermalExperiment.run`: the device's `Retrainer`, topics/thermal.yaml); **four gateways**
/// log 2 weeks each of their own plants (seeds 100·s … 100·s + 3), and one training on their
/// pooled rows runs as the fleet learner runs it (`ThermalExperiment.runFleet`:
/// `FleetTrainer.pooled` and `FleetTrainer.retrainer(for:)`). Both candidates then control the
/// plant on the same fresh weather (seeds 1001–1003, 2 weeks each; 1001 with `--quick`) beside
/// the plain PI. A candidate that fails its checks is not served: the PI stays (0 %), as in
/// `edgeq bench retrain`'s thermal figures. The broker is not in it (its transport is the
/// other parts' and the fleet tests' subject); the learning is the shipped code's.
enum FleetThermalBench {
    static let gateways = 4
    static let weeksEach = 2.0
    static let singleWeeks = 6

    static func run(work: URL, context: BenchContext) throws -> [BenchFigure] {
        let root = Anchors.packageRoot()
        let mapPath = root.appendingPathComponent("topics/thermal.yaml").path
        let map: TopicMap
        do { map = try TopicMap.load(path: mapPath) } catch {
            throw BenchError.failed("cannot load \(mapPath) (run the bench from the package folder): \(error)")
        }
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let seeds: [UInt64] = context.quick ? [1] : [1, 2, 3, 4, 5]
        var experiment = ThermalExperiment()
        experiment.logWeeks = singleWeeks
        experiment.evaluationSeeds = context.quick ? [1001] : [1001, 1002, 1003]
        var single: [Double] = [], fleet: [Double] = []
        var singleComfort: [Double] = [], fleetComfort: [Double] = []
        var singlePassed = 0, fleetPassed = 0
        for s in seeds {
            context.progress("thermal seed \(s): 1 gateway × \(singleWeeks) weeks, retraining on its own")
            let one = try experiment.run(map: map, seed: s, directory: work)
            let seedsOfFleet = (0..<UInt64(gateways)).map { 100 * s + $0 }
            context.progress("thermal seed \(s): \(gateways) gateways × \(Int(weeksEach)) weeks (plants \(seedsOfFleet.map(String.init).joined(separator: ", "))), one training on the pooled rows as the learner's")
            let many = try experiment.runFleet(map: map, gatewaySeeds: seedsOfFleet, weeksEach: weeksEach, seed: s, directory: work)
            func served(_ o: ThermalExperiment.Outcome) -> (cost: Double, comfort: Double) {
                o.report.passed ? (o.costImprovement, o.periods.map(\.extraComfortViolationPerWeek).max() ?? 0) : (0, 0)
            }
            let a = served(one), b = served(many)
            single.append(a.cost)
            fleet.append(b.cost)
            singleComfort.append(a.comfort)
            fleetComfort.append(b.comfort)
            if one.report.passed { singlePassed += 1 }
            if many.report.passed { fleetPassed += 1 }
            context.progress(String(format: "thermal seed %d: 1 × %d weeks %+.2f%% (%@, %d rows, %@), %d × %d weeks %+.2f%% (%@, %d rows, %@) cheaper than the PI as served",
                                    s, singleWeeks, a.cost * 100, one.report.verdict, one.report.rows, Self.agreement(one),
                                    gateways, Int(weeksEach), b.cost * 100, many.report.verdict, many.report.rows, Self.agreement(many))
                + (one.report.passed ? "" : "; 1 gateway's candidate refused: \(one.report.reasons.joined(separator: "; "))\(Self.unserved(one))")
                + (many.report.passed ? "" : "; the fleet's candidate refused: \(many.report.reasons.joined(separator: "; "))\(Self.unserved(many))"))
        }
        func mean(_ x: [Double]) -> Double { x.reduce(0, +) / Double(max(x.count, 1)) }
        let bench = "fleet"
        let anchor = "1 gateway × \(singleWeeks) weeks, measured in this run"
        return [
            BenchFigure(bench: bench, figure: headline, value: mean(fleet) * 100, unit: "% cheaper than the PI, as served, mean of \(seeds.count)",
                        anchor: anchor, anchorValue: mean(single) * 100, better: .higher),
            BenchFigure(bench: bench, figure: "thermal/single_6_weeks/cost_improvement", value: mean(single) * 100,
                        unit: "% cheaper than the PI, as served, mean of \(seeds.count)", anchor: "incumbent PI", anchorValue: 0, better: .higher),
            BenchFigure(bench: bench, figure: "thermal/gateways4_2_weeks/cost_improvement_worst_seed", value: (fleet.min() ?? 0) * 100,
                        unit: "% cheaper than the PI, as served", anchor: anchor + " (its worst seed)", anchorValue: (single.min() ?? 0) * 100, better: .higher),
            BenchFigure(bench: bench, figure: "thermal/gateways4_2_weeks/extra_comfort_violation_worst_period", value: fleetComfort.max() ?? 0,
                        unit: "K·h/week over the PI", anchor: anchor, anchorValue: singleComfort.max() ?? 0, better: .lower),
            BenchFigure(bench: bench, figure: "thermal/gateways4_2_weeks/candidates_passed", value: Double(fleetPassed),
                        unit: "of \(seeds.count)", anchor: anchor, anchorValue: Double(singlePassed), better: .higher),
        ]
    }

    /// The candidate's agreement with the PI's logged actions, up to near-ties (and their τ)
    /// and strictly (`incumbent_agreement`, docs/learning.md "Agreement up to near-ties").
    static func agreement(_ o: ThermalExperiment.Outcome) -> String {
        let f = o.report.figures
        return String(format: "incumbent agreement %.1f%% (τ %.3g), strictly %.1f%%", (f["incumbent_agreement"] ?? .nan) * 100,
                      f["incumbent_agreement_tie"] ?? .nan, (f["incumbent_agreement_strict"] ?? .nan) * 100)
    }

    /// What a refused candidate would have done, had it been served (it is evaluated either
    /// way): whether the check that refused it kept a worse or a better model out.
    static func unserved(_ o: ThermalExperiment.Outcome) -> String {
        String(format: " (had it been served: %+.2f%% cheaper than the PI, worst period %+.2f%%, extra comfort violation %.2f K·h/week at worst)",
               o.costImprovement * 100, o.worstImprovement * 100, o.periods.map(\.extraComfortViolationPerWeek).max() ?? 0)
    }

    /// The goal's figure, measured or printed as not measured.
    static let headline = "thermal: 4 gateways × 2 weeks of shadow data against 1 gateway × 6 weeks"
}
