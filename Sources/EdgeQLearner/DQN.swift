import EdgeQCore
import EdgeQNet

// The Double DQN learner, CleanRL style: one documented hyperparameter struct and the
// whole update readable top to bottom in `update(_:)`. Easy-to-miss lines are marked.

/// Hyperparameters of the DQN learner. Defaults suit small control problems
/// (docs/learning.md explains each and what to try when learning stalls).
public struct DQNConfig: Sendable, Equatable, Codable {
    /// Discount factor γ.
    public var gamma: Float = 0.99
    /// Adam learning rate.
    public var learningRate: Float = 1e-3
    /// Minibatch size.
    public var batchSize = 64
    /// Replay capacity (transitions).
    public var bufferSize = 100_000
    /// n of the n-step return (1 = plain one-step TD).
    public var nStep = 3
    /// Double DQN (online net picks a', target net values it). False = vanilla max target.
    public var doubleDQN = true
    /// Hard target sync every this many updates (used when `polyakTau` is nil).
    public var targetUpdateInterval = 500
    /// Polyak averaging θ⁻ ← (1 − τ) θ⁻ + τ θ after every update; nil = hard sync.
    public var polyakTau: Float? = nil
    /// Huber threshold δ of the TD loss.
    public var huberDelta: Float = 1
    /// Gradients are scaled down to this global L2 norm.
    public var maxGradNorm: Float = 10
    /// Prioritized replay exponent α; nil = uniform replay.
    public var prioritizedAlpha: Double? = nil
    /// Importance-sampling exponent β at the start; annealed linearly to 1 over `betaAnnealUpdates`.
    public var prioritizedBeta: Double = 0.4
    /// Updates over which β goes to 1.
    public var betaAnnealUpdates = 20_000
    /// Weight of the conservative (CQL) term on transitions from the incumbent:
    /// α (logsumexp_a Q(s, a) − Q(s, a_data)). ~0.1 worked on logged PI data; ≥ 1 copies the incumbent.
    public var cqlWeight: Float = 0.1
    /// Apply the CQL term to every transition, not only the incumbent's.
    public var cqlOnAllTransitions = false
    /// Exploration: ε goes linearly from `epsilonStart` to `epsilonEnd` over `epsilonDecaySteps` env steps.
    public var epsilonStart: Double = 1
    /// ε after the decay.
    public var epsilonEnd: Double = 0.05
    /// Environment steps over which ε decays linearly.
    public var epsilonDecaySteps = 10_000
    /// Environment steps before the first update.
    public var learningStarts = 1_000
    /// One training round every this many environment steps …
    public var trainFrequency = 1
    /// … of this many gradient updates.
    public var gradientSteps = 1
    /// The bootstrap value Q_target(s′, a*) is clipped to this range before it enters a
    /// target; nil: not clipped. Every fixed point of the update lies in
    /// [min(r_min, 0), max(r_max, 0)] / (1 − γ) for rewards in [r_min, r_max], one-step or
    /// n-step alike, so clipping to it removes only values no return can have (the retrainer
    /// sets it from the log's rewards: docs/learning.md, "The candidate's checks").
    public var bootstrapRange: ClosedRange<Float>? = nil

    /// The defaults above.
    public init() {}

    /// The cart-pole settings (docs/learning.md, "cart-pole"): used by the learning smoke
    /// test and `edgeq bench learn`, 5 of 5 seeds at 500 by 50,000 steps.
    public static var cartPole: DQNConfig {
        var c = DQNConfig()
        c.learningRate = 1e-3
        c.batchSize = 64
        c.nStep = 3
        c.epsilonDecaySteps = 5_000
        c.epsilonEnd = 0.02
        c.learningStarts = 500
        c.polyakTau = 0.005
        c.maxGradNorm = 1
        c.cqlWeight = 0
        return c
    }

    /// ε after `step` environment steps.
    public func epsilon(atStep step: Int) -> Double {
        let f = min(Double(step) / Double(max(epsilonDecaySteps, 1)), 1)
        return epsilonStart + f * (epsilonEnd - epsilonStart)
    }

    /// Every field, in declaration order; an unset option (`polyakTau`, `prioritizedAlpha`)
    /// is written as null rather than left out, so that a report shows the whole setting.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(gamma, forKey: .gamma)
        try c.encode(learningRate, forKey: .learningRate)
        try c.encode(batchSize, forKey: .batchSize)
        try c.encode(bufferSize, forKey: .bufferSize)
        try c.encode(nStep, forKey: .nStep)
        try c.encode(doubleDQN, forKey: .doubleDQN)
        try c.encode(targetUpdateInterval, forKey: .targetUpdateInterval)
        try c.encode(polyakTau, forKey: .polyakTau)
        try c.encode(huberDelta, forKey: .huberDelta)
        try c.encode(maxGradNorm, forKey: .maxGradNorm)
        try c.encode(prioritizedAlpha, forKey: .prioritizedAlpha)
        try c.encode(prioritizedBeta, forKey: .prioritizedBeta)
        try c.encode(betaAnnealUpdates, forKey: .betaAnnealUpdates)
        try c.encode(cqlWeight, forKey: .cqlWeight)
        try c.encode(cqlOnAllTransitions, forKey: .cqlOnAllTransitions)
        try c.encode(epsilonStart, forKey: .epsilonStart)
        try c.encode(epsilonEnd, forKey: .epsilonEnd)
        try c.encode(epsilonDecaySteps, forKey: .epsilonDecaySteps)
        try c.encode(learningStarts, forKey: .learningStarts)
        try c.encode(trainFrequency, forKey: .trainFrequency)
        try c.encode(gradientSteps, forKey: .gradientSteps)
        try c.encode(bootstrapRange, forKey: .bootstrapRange)
    }
}

/// What one update measured (CleanRL's names: docs/learning.md).
public struct UpdateMetrics: Sendable, Equatable {
    /// Weighted Huber TD loss, mean over the batch.
    public var tdLoss: Float
    /// CQL term, mean over the batch (0 without incumbent rows).
    public var cqlLoss: Float
    /// Mean Q(s, a) of the taken actions.
    public var meanQ: Float
    /// Global gradient norm before clipping.
    public var gradNorm: Float
}

/// A Double DQN learner: online and target networks, Adam, replay with n-step returns
/// (uniform or prioritized), CQL for incumbent data, masked ε-greedy actions.
///
/// Not thread-safe: one owner drives it (the retraining task, a benchmark, a test).
public final class DQNLearner {
    /// The hyperparameters.
    public let config: DQNConfig
    /// The network's shape.
    public let architecture: Architecture
    /// The network being trained.
    public let online: MLP
    /// The target network for the bootstrap values.
    public let target: MLP
    /// The replay buffer (normalised states).
    public private(set) var replay: ReplayBuffer
    /// Applied to raw states before they are stored or acted on.
    public let normalization: Normalization
    /// Gradient updates done.
    public private(set) var updates = 0

    private var adam: Adam
    private var nstep: NStepBuilder
    private var rng: SeededGenerator
    private var batch: Batch
    // Per-update scratch, (B, A) and (B): no allocation inside `update`.
    private var dq: [Float]
    private var targets: [Float]
    private var tdErrors: [Float]
    private var nextActions: [Int]
    private var stateScratch: [Float]

    /// A learner with networks initialised from `seed`.
    ///
    /// - Parameter normalization: applied to raw states (identity by default).
    /// - Throws: `QNetError` (`invalidArgument`) for a bad architecture; `LearnerError` when the
    ///   normalisation does not fit it.
    public init(config: DQNConfig, architecture: Architecture, seed: UInt64, normalization: Normalization? = nil) throws {
        try architecture.validate()
        self.config = config
        self.architecture = architecture
        let norm = normalization ?? .identity(architecture.inputCount)
        guard norm.mean.count == architecture.inputCount else {
            throw LearnerError("normalisation has \(norm.mean.count) entries, the network \(architecture.inputCount) inputs")
        }
        self.normalization = norm
        online = try MLP(architecture, seed: seed)
        target = try MLP(architecture, seed: seed)
        target.copyParameters(from: online)
        adam = Adam(parameterCount: architecture.parameterCount, learningRate: config.learningRate)
        replay = ReplayBuffer(capacity: config.bufferSize, inputCount: architecture.inputCount,
                              actionCount: architecture.actionCount, prioritizedAlpha: config.prioritizedAlpha)
        nstep = NStepBuilder(n: config.nStep, gamma: config.gamma)
        rng = SeededGenerator(seed: seed &+ 0x5EED)
        let B = config.batchSize, A = architecture.actionCount
        batch = Batch(size: B, inputCount: architecture.inputCount, actionCount: A)
        dq = .init(repeating: 0, count: B * A)
        targets = .init(repeating: 0, count: B)
        tdErrors = .init(repeating: 0, count: B)
        nextActions = .init(repeating: 0, count: B)
        stateScratch = .init(repeating: 0, count: architecture.inputCount)
    }

    // MARK: acting

    /// ε-greedy among allowed actions: with probability ε a uniformly random allowed
    /// action, else the greedy allowed one. Returns nil when `mask` allows nothing or the
    /// state does not have `inputCount` values.
    public func act(state: [Float], mask: [Bool]? = nil, epsilon: Double) -> Int? {
        let A = architecture.actionCount
        guard state.count == architecture.inputCount else { return nil }
        if rng.nextUnit() < epsilon {
            let allowed = (0..<A).filter { a in mask.map { a < $0.count && $0[a] } ?? true }
            guard !allowed.isEmpty else { return nil }
            return allowed[Int(rng.next() % UInt64(allowed.count))]
        }
        for i in 0..<architecture.inputCount { stateScratch[i] = (state[i] - normalization.mean[i]) / normalization.std[i] }
        return stateScratch.withUnsafeBufferPointer { online.greedyAction($0.baseAddress!, mask: mask) }
    }

    // MARK: experience

    /// Transitions `observe` dropped because they did not fit the architecture.
    public private(set) var rejectedTransitions = 0

    /// Adds one transition (raw states) to the n-step window and the replay buffer. A
    /// transition whose state widths or action do not fit the architecture is dropped and
    /// counted in `rejectedTransitions`.
    public func observe(_ t: Transition) {
        let n = architecture.inputCount
        guard t.state.count == n, t.nextState.count == n, (0..<architecture.actionCount).contains(t.action) else {
            rejectedTransitions += 1
            return
        }
        for item in nstep.push(t) { store(item) }
    }

    /// Stores what is still in the n-step window (call at the end of a logged data set).
    public func flushPending() {
        for item in nstep.flush() { store(item) }
    }

    private func store(_ item: NStepBuilder.Item) {
        replay.add(state: normalize(item.first.state), action: item.first.action, nStepReturn: item.nStepReturn,
                   nextState: normalize(item.nextState), discount: item.discount, nextMask: item.nextMask,
                   fromIncumbent: item.first.fromIncumbent)
    }

    private func normalize(_ s: [Float]) -> [Float] {
        (0..<architecture.inputCount).map { (s[$0] - normalization.mean[$0]) / normalization.std[$0] }
    }

    // MARK: the update

    /// Samples a batch from replay and does one update; nil when replay holds fewer
    /// transitions than a batch.
    @discardableResult
    public func update() -> UpdateMetrics? {
        guard replay.count >= config.batchSize else { return nil }
        let beta = min(1, config.prioritizedBeta + (1 - config.prioritizedBeta) * Double(updates) / Double(max(config.betaAnnealUpdates, 1)))
        replay.sample(into: &batch, beta: beta, rng: &rng)
        let metrics = update(batch)
        if replay.isPrioritized { replay.updatePriorities(batch.indices, tdErrors: tdErrors) }
        return metrics
    }

    /// The bootstrap targets y_b = R_b + γ^k_b · Q_target(s'_b, a*_b) for a batch, where
    /// a* = argmax over allowed actions of Q_online(s') (Double DQN) or of Q_target(s'); when
    /// the mask allows no action, over all actions (an empty mask is not an end: only a
    /// terminal step, whose discount is 0, stops the bootstrap).
    /// Exposed for tests; `update` uses the same code.
    public func targets(for batch: Batch) -> [Float] {
        computeTargets(batch)
        return Array(targets.prefix(batch.count))
    }

    private func computeTargets(_ batch: Batch) {
        let B = batch.count, A = architecture.actionCount
        if targets.count < B { targets = .init(repeating: 0, count: B); nextActions = .init(repeating: 0, count: B) }
        batch.nextStates.withUnsafeBufferPointer { s2 in
            batch.nextMasks.withUnsafeBufferPointer { m in
                // 1. choose a' in s' — EASY TO MISS: only among actions allowed in s'. A mask
                //    that allows nothing does not end the episode (only `terminal` does): the
                //    choice is then among all actions, as without a mask (docs/learning.md).
                let chooser = config.doubleDQN ? online : target
                let qc = chooser.forward(s2.baseAddress!, batch: B)
                for b in 0..<B {
                    var best = -1
                    var bestQ = -Float.infinity
                    for a in 0..<A where m[b * A + a] {
                        if best < 0 || qc[b * A + a] > bestQ { best = a; bestQ = qc[b * A + a] }
                    }
                    if best < 0 {
                        for a in 0..<A where best < 0 || qc[b * A + a] > bestQ { best = a; bestQ = qc[b * A + a] }
                    }
                    nextActions[b] = best
                }
                // 2. value it with the target network.
                let qt = target.forward(s2.baseAddress!, batch: B)
                for b in 0..<B {
                    // EASY TO MISS: discount is 0 after a terminal step (no bootstrap), γ^k after a
                    // truncated one (bootstrap as usual).
                    let a = nextActions[b]
                    var bootstrap: Float = a >= 0 ? qt[b * A + a] : 0   // a < 0 only when A = 0
                    if let r = config.bootstrapRange { bootstrap = min(max(bootstrap, r.lowerBound), r.upperBound) }
                    targets[b] = batch.returns[b] + batch.discounts[b] * bootstrap
                }
            }
        }
    }

    /// One gradient update on `batch` (normalised states): Huber TD loss weighted by the
    /// importance weights, plus the CQL term on incumbent rows; clip; Adam; target sync.
    @discardableResult
    public func update(_ batch: Batch) -> UpdateMetrics {
        let B = batch.count, A = architecture.actionCount
        if dq.count < B * A { dq = .init(repeating: 0, count: B * A); tdErrors = .init(repeating: 0, count: B) }
        // 1. targets from s' (before the forward on s: the workspace keeps only the last pass).
        computeTargets(batch)
        // 2. Q(s, ·) with the online network, kept for backward.
        let q = batch.states.withUnsafeBufferPointer { online.forward($0.baseAddress!, batch: B) }
        var tdLoss: Float = 0, cqlLoss: Float = 0, meanQ: Float = 0
        let invB = 1 / Float(B)
        for k in 0..<(B * A) { dq[k] = 0 }
        for b in 0..<B {
            let a = batch.actions[b]
            let qa = q[b * A + a]
            meanQ += qa * invB
            // 3. TD error and Huber loss, weighted by the importance weight.
            let td = qa - targets[b]
            tdErrors[b] = td
            let (l, g) = huber(td, delta: config.huberDelta)
            tdLoss += batch.weights[b] * l * invB
            dq[b * A + a] += batch.weights[b] * g * invB
            // 4. CQL on incumbent rows: α (logsumexp_a Q(s, a) − Q(s, a_data)); its gradient is
            //    α (softmax(Q) − onehot(a_data)): pushes down actions the incumbent did not take.
            if config.cqlWeight > 0, batch.fromIncumbent[b] || config.cqlOnAllTransitions {
                var m = -Float.infinity
                for j in 0..<A { m = max(m, q[b * A + j]) }
                var z: Float = 0
                for j in 0..<A { z += expf(q[b * A + j] - m) }
                cqlLoss += config.cqlWeight * (m + logf(z) - qa) * invB
                for j in 0..<A {
                    let p = expf(q[b * A + j] - m) / z
                    dq[b * A + j] += config.cqlWeight * invB * (p - (j == a ? 1 : 0))
                }
            }
        }
        // 5. backward, clip by global norm, Adam.
        online.zeroGradients()
        dq.withUnsafeBufferPointer { online.backward($0.baseAddress!) }
        let norm = clipGlobalNorm(online.gradients, maxNorm: config.maxGradNorm)
        adam.update(online)
        updates += 1
        // 6. target network: Polyak every update, or a hard copy every N updates.
        if let tau = config.polyakTau {
            target.blend(toward: online, tau: tau)
        } else if updates % max(config.targetUpdateInterval, 1) == 0 {
            target.copyParameters(from: online)
        }
        return UpdateMetrics(tdLoss: tdLoss, cqlLoss: cqlLoss, meanQ: meanQ, gradNorm: norm)
    }

    /// The TD errors of the last update (B), for priorities and tests.
    public var lastTDErrors: [Float] { tdErrors }
}

/// An error from the learner: what was wrong with the request.
public struct LearnerError: Error, CustomStringConvertible, Sendable {
    /// What went wrong and what to do.
    public let description: String
    init(_ description: String) { self.description = description }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
