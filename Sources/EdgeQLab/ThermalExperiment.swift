import EdgeQGateway
import EdgeQLog
import EdgeQNet
import EdgeQPlants
import EdgeQTopicMap
import Foundation
import EdgeQRetrain

/// Learning from the incumbent's logs on the thermal plant, end to end (docs/learning.md,
/// "Learning from the incumbent's logs"): log `logWeeks` weeks in shadow with the dithered
/// PI, retrain with the gateway's `Retrainer`, then run the candidate in control on fresh
/// weeks (other weather seeds) beside the plain PI on the same weather.
public struct ThermalExperiment: Sendable {
    /// Weeks of shadow logging (2,016 five-minute steps each).
    public var logWeeks = 6
    /// Share of the PI's decisions moved by ±1 level while logging.
    public var dither = 0.2
    /// Evaluation: weeks per evaluation seed.
    public var evaluationWeeks = 2
    /// Evaluation weather seeds (fresh: none equals the logging seed).
    public var evaluationSeeds: [UInt64] = [1001, 1002]
    /// Retraining limits (nil steps: the mapping's `updates_per_retrain`).
    public var limits = RetrainLimits()
    /// Check thresholds (nil: the mapping's).
    public var checkPolicy: CheckPolicy?

    /// The defaults.
    public init() {}

    /// One evaluation period: the PI and the candidate on the same weather.
    public struct Period: Sendable, Codable {
        /// The weather seed.
        public var seed: UInt64
        /// The PI's score.
        public var incumbent: LabScore
        /// The candidate's score.
        public var candidate: LabScore
        /// Candidate decisions the safety policy took over.
        public var fallbacks: Int
        /// Heater level shares of the candidate.
        public var candidateActionShare: [Double]

        /// A period of the PI's `incumbent` score and the `candidate`'s on the same weather.
        public init(seed: UInt64, incumbent: LabScore, candidate: LabScore, fallbacks: Int, candidateActionShare: [Double]) {
            self.seed = seed
            self.incumbent = incumbent
            self.candidate = candidate
            self.fallbacks = fallbacks
            self.candidateActionShare = candidateActionShare
        }
        /// (PI cost − candidate cost) / PI cost: positive is cheaper.
        public var costImprovement: Double {
            incumbent.energyCost > 0 ? (incumbent.energyCost - candidate.energyCost) / incumbent.energyCost : 0
        }
        /// Candidate comfort violation minus the PI's, kelvin-hours per week.
        public var extraComfortViolationPerWeek: Double {
            let weeks = Double(max(candidate.steps, 1)) / 2016
            return (candidate.comfortViolation - incumbent.comfortViolation) / weeks
        }
    }

    /// The experiment's outcome.
    public struct Outcome: Sendable {
        /// The retraining report (checks, figures, verdict).
        public var report: RetrainReport
        /// The candidate (whatever its verdict).
        public var candidate: QModel
        /// The logging run's result (the dithered PI).
        public var logging: LabResult
        /// One entry per evaluation seed.
        public var periods: [Period]
        /// Total cost improvement over all periods.
        public var costImprovement: Double { ThermalExperiment.costImprovement(periods) }
        /// Worst period.
        public var worstImprovement: Double { periods.map(\.costImprovement).min() ?? 0 }
    }

    /// (PI cost − candidate cost) / PI cost summed over `periods`: positive is cheaper; 0 without
    /// a PI cost.
    public static func costImprovement(_ periods: [Period]) -> Double {
        let pi = periods.map(\.incumbent.energyCost).reduce(0, +)
        let c = periods.map(\.candidate.energyCost).reduce(0, +)
        return pi > 0 ? (pi - c) / pi : 0
    }

    /// Runs the experiment with logging weather `seed`, writing the log under `directory`.
    ///
    /// - Throws: `LabError` (log), `RetrainError` (too little data, learner set-up).
    public func run(map: TopicMap, seed: UInt64, directory: URL) throws -> Outcome {
        let logPath = directory.appendingPathComponent("lab-\(seed).sqlite").path
        let lab = Lab(map: map)
        var plant = ThermalLabPlant(seed: seed)
        let logging = try lab.run(&plant, steps: logWeeks * 2016, policy: .incumbent(dither: dither), seed: seed, logPath: logPath)
        var retrainer = Retrainer(map: map, policy: checkPolicy)
        retrainer.seed = seed
        let (report, candidate) = try retrainer.train(logPath: logPath, limits: limits, warmStart: nil)
        let periods = try evaluate(candidate, map: map)
        return Outcome(report: report, candidate: candidate, logging: logging, periods: periods)
    }

    /// Fleet learning on the thermal plant (docs/fleet.md, "Learning together"): one plant per
    /// seed in `gatewaySeeds` (each its own weather and occupancy) logged `weeksEach` weeks in
    /// shadow with the dithered PI into its own SQLite log, as each gateway of a fleet logs; the
    /// rows pooled as the fleet learner pools them (`FleetTrainer.pooled`) and trained with the
    /// learner's retraining (`FleetTrainer.retrainer(for:)`: the device's training, checks and
    /// verdict); the candidate evaluated as `run`'s, against the plain PI on the same fresh
    /// weather. What the broker adds (transport, acknowledgements) is not in it: the fleet
    /// bench's other parts and the fleet tests measure that.
    ///
    /// - Parameter seed: the learner's seed.
    /// - Returns: the outcome; `logging` is the first gateway's logging run.
    /// - Throws: as `run`; `LabError.log` for no gateway seed; `RetrainError` when the pooled
    ///   rows are too few.
    public func runFleet(map: TopicMap, gatewaySeeds: [UInt64], weeksEach: Double, seed: UInt64, directory: URL) throws -> Outcome {
        let lab = Lab(map: map)
        let steps = Int((weeksEach * 2016).rounded())
        var logs: [(gateway: String, rows: [LoggedTransition])] = []
        var first: LabResult?
        for g in gatewaySeeds {
            let path = directory.appendingPathComponent("lab-fleet-\(seed)-g\(g).sqlite").path
            var plant = ThermalLabPlant(seed: g)
            let r = try lab.run(&plant, steps: steps, policy: .incumbent(dither: dither), seed: g, logPath: path)
            if first == nil { first = r }
            let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all)
            logs.append(("thermal-g\(g)", rows))
        }
        guard let logging = first else { throw LabError.log("a fleet needs at least one gateway seed") }
        let pooled = FleetTrainer.pooled(logs)
        var retrainer = FleetTrainer.retrainer(for: map)
        retrainer.seed = seed
        let output = directory.appendingPathComponent("lab-fleet-\(seed)-candidate.safetensors")
        let outcome = try retrainer.runWithPlantModel(rows: pooled.rows, limits: limits, warmStart: nil, output: output)
        try? FileManager.default.removeItem(at: output)
        try? FileManager.default.removeItem(at: output.appendingPathExtension("sha256"))
        let periods = try evaluate(outcome.candidate, map: map)
        return Outcome(report: outcome.report, candidate: outcome.candidate, logging: logging, periods: periods)
    }

    /// The candidate in control against the plain PI on each evaluation seed.
    ///
    /// - Throws: `LabError` when the model does not fit the mapping.
    public func evaluate(_ candidate: QModel, map: TopicMap) throws -> [Period] {
        let lab = Lab(map: map)
        var out: [Period] = []
        for s in evaluationSeeds {
            var a = ThermalLabPlant(seed: s)
            _ = try lab.run(&a, steps: evaluationWeeks * 2016, policy: .incumbent(dither: 0), seed: s)
            var b = ThermalLabPlant(seed: s)
            let r = try lab.run(&b, steps: evaluationWeeks * 2016, policy: .model(candidate), seed: s)
            out.append(Period(seed: s, incumbent: a.score, candidate: b.score, fallbacks: r.fallbacks,
                              candidateActionShare: r.actionShare))
        }
        return out
    }
}
