import EdgeQGateway
import EdgeQNet
import EdgeQTopicMap
import Foundation

/// Cart-pole with periodic retraining in control mode, the way a gateway with
/// `promotion: auto` and ε exploration would run it: a first chunk in shadow (the weak rule
/// acts), then retrain every `chunk` steps from the whole log (warm start from the served
/// model), serve the candidate when it passes its checks, and run the next chunk in control
/// with ε from the mapping's exploration schedule. After each retraining the served model is
/// evaluated greedily on a separate plant.
public struct CartPoleRetraining: Sendable {
    /// Plant steps between retrainings.
    public var chunk = 2_000
    /// Gradient updates per retraining.
    public var updatesPerRetrain = 2_000
    /// Stop after this many plant steps.
    public var maxSteps = 40_000
    /// Stop once the greedy evaluation reaches this mean return.
    public var goal = 400.0
    /// Episodes per evaluation.
    public var evaluationEpisodes = 10
    /// Warm start each retraining from the last candidate, served or not (true), or from the
    /// served model only, as the gateway does today (false).
    public var warmStartFromLastCandidate = false

    /// The defaults.
    public init() {}

    /// One point of the learning curve.
    public struct Point: Sendable {
        /// Plant steps taken when the model was evaluated.
        public var steps: Int
        /// Mean greedy return of the served model.
        public var meanReturn: Double
        /// The last retraining passed its checks (and was served).
        public var passed: Bool
        /// Why it failed, when it did.
        public var reasons: [String]
    }

    /// Runs the loop; returns the learning curve (stops early at `goal`).
    ///
    /// - Throws: `LabError` (log), `RetrainError` (learner set-up).
    public func run(map: TopicMap, seed: UInt64, directory: URL) throws -> [Point] {
        let logPath = directory.appendingPathComponent("cartpole-\(seed).sqlite").path
        let lab = Lab(map: map)
        var plant = CartPoleLabPlant(seed: seed)
        var steps = min(chunk, maxSteps)
        _ = try lab.run(&plant, steps: steps, policy: .incumbent(dither: 0.5), seed: seed, logPath: logPath)
        var policy = CheckPolicy()
        policy.fqeUpdates = 0
        var retrainer = Retrainer(map: map, policy: policy)
        retrainer.seed = seed
        var served: QModel?
        var last: QModel?
        var curve: [Point] = []
        let l = map.learning
        var round: UInt64 = 0
        while true {
            round += 1
            let warm = warmStartFromLastCandidate ? (last ?? served) : served
            let (report, candidate) = try retrainer.train(logPath: logPath, limits: RetrainLimits(steps: updatesPerRetrain), warmStart: warm)
            last = candidate
            if report.passed { served = candidate }
            var mean = 0.0
            if let m = served {
                var evalPlant = CartPoleLabPlant(seed: seed &* 1000 &+ round)
                var done = 0
                var returns: [Double] = []
                while done < evaluationEpisodes {
                    _ = try lab.run(&evalPlant, steps: 500, policy: .model(m), seed: round)
                    returns = evalPlant.episodeReturns
                    done = returns.count
                }
                mean = returns.prefix(evaluationEpisodes).reduce(0, +) / Double(evaluationEpisodes)
            }
            curve.append(Point(steps: steps, meanReturn: mean, passed: report.passed, reasons: report.reasons))
            if mean >= goal || steps >= maxSteps { break }
            let n = min(chunk, maxSteps - steps)
            let f = l.epsilonDecaySteps > 0 ? min(Double(steps) / Double(l.epsilonDecaySteps), 1) : 1
            let epsilon = l.epsilonStart + f * (l.epsilonEnd - l.epsilonStart)
            if let m = served {
                _ = try lab.run(&plant, steps: n, policy: .model(m, epsilon: epsilon), seed: seed &+ round, logPath: logPath)
            } else {
                _ = try lab.run(&plant, steps: n, policy: .incumbent(dither: 0.5), seed: seed &+ round, logPath: logPath)
            }
            steps += n
        }
        return curve
    }
}
