import EdgeQCore
import EdgeQNet

/// A simulator the learner can drive in process (cart-pole in tests and benchmarks).
public protocol Environment {
    /// Starts an episode and returns the first raw state.
    mutating func reset() -> [Float]
    /// Applies `action`; returns the next raw state, the reward and how the episode ended.
    mutating func step(_ action: Int) -> (state: [Float], reward: Float, terminal: Bool, truncated: Bool)
}

/// One evaluation of the greedy policy during online training.
public struct EvaluationPoint: Sendable, Equatable {
    /// Environment steps taken when it was measured.
    public var step: Int
    /// Mean undiscounted return over the evaluation episodes.
    public var meanReturn: Double
}

/// Online training of a `DQNLearner` on a simulator, CleanRL's loop:
/// act ε-greedily, observe, learn every `trainFrequency` steps, evaluate greedily from time
/// to time on a separate copy of the environment.
public struct OnlineTraining {
    /// Evaluate every this many environment steps (0 = never).
    public var evaluationInterval = 2_000
    /// Episodes per evaluation.
    public var evaluationEpisodes = 10
    /// Stop as soon as an evaluation reaches this mean return (nil = run all steps).
    public var stopAtReturn: Double? = nil

    /// Evaluation every 2,000 steps over 10 episodes, no early stop.
    public init() {}

    /// Trains for at most `steps` environment steps; returns the evaluation curve.
    public func run<E: Environment>(_ learner: DQNLearner, environment: inout E, evaluationEnvironment: inout E,
                                    steps: Int) -> [EvaluationPoint] {
        var curve: [EvaluationPoint] = []
        var state = environment.reset()
        let config = learner.config
        for t in 1...max(steps, 1) {
            let action = learner.act(state: state, epsilon: config.epsilon(atStep: t)) ?? 0
            let r = environment.step(action)
            learner.observe(Transition(state: state, action: action, reward: r.reward, nextState: r.state,
                                       terminal: r.terminal, truncated: r.truncated))
            // EASY TO MISS: obs = next_obs, except at an episode's end, where we reset.
            state = (r.terminal || r.truncated) ? environment.reset() : r.state
            if t >= config.learningStarts, t % max(config.trainFrequency, 1) == 0 {
                for _ in 0..<config.gradientSteps { learner.update() }
            }
            if evaluationInterval > 0, t % evaluationInterval == 0 {
                let m = Self.evaluate(learner.online, normalization: learner.normalization,
                                      environment: &evaluationEnvironment, episodes: evaluationEpisodes)
                curve.append(EvaluationPoint(step: t, meanReturn: m))
                if let goal = stopAtReturn, m >= goal { break }
            }
        }
        return curve
    }

    /// Mean return of the greedy policy of `network` over `episodes` episodes.
    public static func evaluate<E: Environment>(_ network: MLP, normalization: Normalization, environment: inout E,
                                                episodes: Int) -> Double {
        var total = 0.0
        let n = network.architecture.inputCount
        var x = [Float](repeating: 0, count: n)
        for _ in 0..<episodes {
            var s = environment.reset()
            while true {
                for i in 0..<n { x[i] = (s[i] - normalization.mean[i]) / normalization.std[i] }
                let a = x.withUnsafeBufferPointer { network.greedyAction($0.baseAddress!, mask: nil) } ?? 0
                let r = environment.step(a)
                total += Double(r.reward)
                if r.terminal || r.truncated { break }
                s = r.state
            }
        }
        return total / Double(max(episodes, 1))
    }
}

/// The result of offline training on logged transitions.
public struct OfflineResult {
    /// The trained fp32 network (quantize it with `QModel(network:…)`).
    public var network: MLP
    /// The normalisation fitted on the logged states (the model must carry it).
    public var normalization: Normalization
    /// Metrics of the last update.
    public var lastMetrics: UpdateMetrics?
    /// Mean TD loss over the last 10% of updates.
    public var finalTDLoss: Float
}

extension DQNLearner {
    /// Trains from logged transitions (in log order) for `updates` gradient updates and
    /// returns the trained fp32 network. States are standardised with constants fitted on
    /// the log; transitions from the incumbent get the CQL term (`config.cqlWeight`).
    ///
    /// - Throws: `LearnerError` when the log is empty or a transition does not fit the
    ///   architecture (state width, action range, mask width).
    public static func train(from transitions: [Transition], config: DQNConfig, architecture: Architecture,
                             updates: Int, seed: UInt64) throws -> OfflineResult {
        guard !transitions.isEmpty else { throw LearnerError("no transitions to learn from") }
        let n = architecture.inputCount, A = architecture.actionCount
        for (k, t) in transitions.enumerated() {
            guard t.state.count == n, t.nextState.count == n, (0..<A).contains(t.action), (t.nextMask?.count ?? A) == A else {
                throw LearnerError("transition \(k) does not fit \(architecture.label): state width, action or mask size")
            }
        }
        let norm = Normalization.fit(transitions.flatMap(\.state), inputCount: n)
        var cfg = config
        cfg.bufferSize = max(transitions.count, 1)
        cfg.batchSize = min(config.batchSize, transitions.count)
        let learner = try DQNLearner(config: cfg, architecture: architecture, seed: seed, normalization: norm)
        for t in transitions { learner.observe(t) }
        learner.flushPending()
        var last: UpdateMetrics?
        var tail: Float = 0
        var tailCount = 0
        for u in 0..<updates {
            last = learner.update()
            if u >= updates - max(updates / 10, 1), let m = last { tail += m.tdLoss; tailCount += 1 }
        }
        return OfflineResult(network: learner.online, normalization: norm, lastMetrics: last,
                             finalTDLoss: tailCount > 0 ? tail / Float(tailCount) : 0)
    }
}
