import EdgeQGateway
import EdgeQNet
import EdgeQTopicMap
import Foundation
import EdgeQRetrain

/// Cart-pole with periodic retraining in control mode, the way a gateway with
/// `promotion: auto` and ε exploration would run it: a first chunk in shadow (the weak rule
/// acts, undithered by default, as `edgeq sim cartpole` runs it), then retrain every
/// `learning.retrain.every_transitions` steps from the whole log with `learning.updates_per_retrain` updates (warm start from the served model),
/// serve the candidate when it passes the mapping file's checks, and run the next chunk in
/// control with ε from the mapping's exploration schedule (ε decays over control decisions,
/// as in the gateway). After each retraining the served model is evaluated greedily (in the
/// lab's precision, mixed by default) on a separate plant. The goal counts only once a chunk
/// has run in control: a first model good enough from the shadow log alone keeps going.
public struct CartPoleRetraining: Sendable {
    /// Plant steps between retrainings; nil: the mapping's `retrain.every_transitions`
    /// (2,000 when the mapping has none).
    public var chunk: Int?
    /// Gradient updates per retraining; nil: the mapping's `updates_per_retrain`.
    public var updatesPerRetrain: Int?
    /// Stop after this many plant steps.
    public var maxSteps = 40_000
    /// Stop once the greedy evaluation reaches this mean return (after a chunk in control).
    public var goal = 400.0
    /// Episodes per evaluation.
    public var evaluationEpisodes = 10
    /// Share of the shadow chunks' steps where the rule's command is replaced by a random one
    /// (plant-side dither). Default 0: the rule as the simulator ships it (`edgeq sim
    /// cartpole`, `--dither` 0); the shipped mapping learns from it (docs/learning.md).
    public var shadowDither = 0.0
    /// Warm start each retraining from the last candidate, served or not (true), or from the
    /// served model only, as the gateway does (false).
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
        /// The last retraining's report figures (max |Q|, agreement, …).
        public var figures: [String: Double] = [:]
        /// Decisions the served models made in control so far (explorative ones included).
        public var controlDecisions = 0
    }

    /// Runs the loop; returns the learning curve (stops early at `goal`).
    ///
    /// - Throws: `LabError` (log), `RetrainError` (learner set-up).
    public func run(map: TopicMap, seed: UInt64, directory: URL) throws -> [Point] {
        let logPath = directory.appendingPathComponent("cartpole-\(seed).sqlite").path
        let l = map.learning
        let chunk = max(self.chunk ?? l.retrainEveryTransitions ?? 2_000, 1)
        let updates = updatesPerRetrain ?? l.updatesPerRetrain
        let lab = Lab(map: map)
        var plant = CartPoleLabPlant(seed: seed)
        var steps = min(chunk, maxSteps)
        _ = try lab.run(&plant, steps: steps, policy: .incumbent(dither: shadowDither), seed: seed, logPath: logPath)
        // The mapping's checks; the fitted-Q estimate is a figure, not a check: skipped here.
        var policy = CheckPolicy(l)
        policy.fqeUpdates = 0
        var retrainer = Retrainer(map: map, policy: policy)
        retrainer.seed = seed
        var served: QModel?
        var last: QModel?
        var curve: [Point] = []
        var controlSteps = 0
        var round: UInt64 = 0
        while true {
            round += 1
            retrainer.seed = seed &+ round &* 7919
            let warm = warmStartFromLastCandidate ? (last ?? served) : served
            let (report, candidate) = try retrainer.train(logPath: logPath, limits: RetrainLimits(steps: updates), warmStart: warm)
            last = candidate
            if report.passed { served = candidate }
            var mean = 0.0
            if let m = served {
                var evalPlant = CartPoleLabPlant(seed: seed &* 1000 &+ round)
                var returns: [Double] = []
                while returns.count < evaluationEpisodes {
                    _ = try lab.run(&evalPlant, steps: 500, policy: .model(m), seed: round)
                    returns = evalPlant.episodeReturns
                }
                mean = returns.prefix(evaluationEpisodes).reduce(0, +) / Double(evaluationEpisodes)
            }
            curve.append(Point(steps: steps, meanReturn: mean, passed: report.passed, reasons: report.reasons, figures: report.figures,
                               controlDecisions: controlSteps))
            if (mean >= goal && controlSteps > 0) || steps >= maxSteps { break }
            let n = min(chunk, maxSteps - steps)
            if let m = served {
                let r = try lab.run(&plant, steps: n, policy: .exploring(m, start: l.epsilonStart, end: l.epsilonEnd,
                                                                         decaySteps: l.epsilonDecaySteps, after: controlSteps),
                                    seed: seed &+ round, logPath: logPath)
                controlSteps += r.modelDecisions
            } else {
                _ = try lab.run(&plant, steps: n, policy: .incumbent(dither: shadowDither), seed: seed &+ round, logPath: logPath)
            }
            steps += n
        }
        return curve
    }
}
