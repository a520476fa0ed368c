import EdgeQCore
import EdgeQLearner
import EdgeQModel
import EdgeQNet
import EdgeQTopicMap
import Foundation

/// Synthetic transitions made on the plant model for the Q-learning (`learning.rollouts`;
/// docs/learning.md, "Model rollouts"): Dyna / MBPO's short branched rollouts, with MOPO's
/// uncertainty penalty.
///
/// Each rollout starts at a logged sample drawn at random from the training part of the plant
/// data (the newest samples, those of the held-out rows, are never a start), with the logged
/// history before it; then for up to `horizon` steps the rollout policy decides on the
/// mapping's own state (the warm-start network's greedy choice among the allowed actions, or a
/// random allowed action with probability `epsilon`; every choice random without a network),
/// the plant model steps, and the mapping's `model` reward and end condition are evaluated on
/// the predicted signals, exactly as `ModelWorld.run` does. The synthetic reward is
/// r − λ·u (u: the model's uncertainty after the step, λ: `uncertainty_penalty`), so the
/// learner values less what the model is unsure of.
///
/// A rollout stops early when the model's end condition holds (that step is terminal), when
/// the predicted state is unusable for a decision (a signal beyond its `range`, a feature
/// beyond the safety margin: the gateway would not decide there either, and the step that led
/// there is not learned from), when the uncertainty exceeds `max_uncertainty` (that step is
/// not learned from), or where the logged stretch ends (its exogenous signals are known only
/// that far). The last step of a rollout that did not end is marked `truncated`: its target
/// bootstraps, and an n-step return never reaches across two rollouts.
public struct ModelRollouts: Sendable {
    /// What the rollouts made (report.json's `rollouts`, snake_case keys).
    public struct Summary: Codable, Sendable, Equatable {
        /// Rollouts begun, and how many were asked for.
        public var starts = 0
        /// See `starts`.
        public var startsLimit = 0
        /// The horizon asked for.
        public var horizon = 0
        /// Synthetic transitions made (what joined the replay).
        public var transitions = 0
        /// Rollouts that ended in the model's end condition (a terminal transition).
        public var terminal = 0
        /// Rollouts cut because a predicted state was unusable (out of range, beyond the safety
        /// margin, or a reward that could not be evaluated).
        public var unusable = 0
        /// Rollouts cut because the uncertainty passed `max_uncertainty`.
        public var uncertain = 0
        /// The rollout policy: `network` (the warm-start network, ε-greedy) or `random`.
        public var policy = "random"
        /// The model's uncertainty over the synthetic transitions: mean and largest.
        public var meanUncertainty = 0.0
        /// See `meanUncertainty`.
        public var maxUncertainty = 0.0
        /// The mean reward subtracted (λ·u).
        public var meanPenalty = 0.0
        /// The mean synthetic reward (after the penalty), beside the logged rows' mean reward.
        public var meanReward = 0.0
        /// Seconds the rollouts took.
        public var seconds = 0.0

        /// Nothing made yet.
        public init() {}

        enum CodingKeys: String, CodingKey {
            case starts, startsLimit = "starts_limit", horizon, transitions, terminal, unusable, uncertain, policy
            case meanUncertainty = "mean_uncertainty", maxUncertainty = "max_uncertainty", meanPenalty = "mean_penalty"
            case meanReward = "mean_reward", seconds
        }
    }

    /// The world the rollouts run in (the mapping, the fitted model, the plant data).
    public let world: ModelWorld
    /// The settings (`learning.rollouts`).
    public let config: RolloutConfig

    /// Rollouts on `world` as `config` says.
    public init(world: ModelWorld, config: RolloutConfig) {
        self.world = world
        self.config = config
    }

    /// The (segment, sample) pairs a rollout may start at (`ModelWorld.eligibleStarts`).
    public func eligibleStarts(heldOutSamples: Int) -> [(segment: Int, start: Int)] {
        world.eligibleStarts(heldOutSamples: heldOutSamples)
    }

    /// Runs `config.starts` rollouts from starts drawn (with replacement) from `eligibleStarts`.
    ///
    /// - Parameters:
    ///   - network: the rollout policy's network (nil: random decisions).
    ///   - precision: its engine's precision.
    ///   - heldOutSamples: the newest samples of the data that are never a start.
    ///   - seed: the draws' seed (starts and random decisions).
    ///   - shouldStop: polled between rollouts; the rollouts made so far are returned.
    /// - Returns: the transitions of each rollout in order (raw states, as the log's), and the
    ///   summary.
    public func make(network: QModel?, precision: Precision, heldOutSamples: Int, seed: UInt64,
                     shouldStop: () -> Bool = { false }) -> (rollouts: [[Transition]], summary: Summary) {
        let clock = Date()
        var summary = Summary()
        summary.startsLimit = config.starts
        summary.horizon = config.horizon
        let map = world.map
        let usableNetwork = network.flatMap { $0.inputCount == map.stateWidth && $0.actionCount == map.actions.count ? $0 : nil }
        summary.policy = usableNetwork == nil ? "random" : "network"
        let engine = usableNetwork?.makeEngine(precision)
        let starts = eligibleStarts(heldOutSamples: heldOutSamples)
        var rng = SeededGenerator(seed: seed ^ 0x5EED_0F_D1A)
        var out: [[Transition]] = []
        guard !starts.isEmpty else { return (out, summary) }
        out.reserveCapacity(config.starts)
        var uSum = 0.0, penaltySum = 0.0, rewardSum = 0.0
        for _ in 0..<config.starts {
            if shouldStop() { break }
            let (si, start) = starts[Int.random(in: 0..<starts.count, using: &rng)]
            let r = rollout(segment: si, start: start, engine: engine, rng: &rng)
            summary.starts += 1
            switch r.end {
            case .terminal: summary.terminal += 1
            case .unusable: summary.unusable += 1
            case .uncertain: summary.uncertain += 1
            case .horizon: break
            }
            for (t, u) in zip(r.rows, r.uncertainties) {
                uSum += u
                penaltySum += config.uncertaintyPenalty * u
                rewardSum += Double(t.reward)
                summary.maxUncertainty = max(summary.maxUncertainty, u)
            }
            summary.transitions += r.rows.count
            if !r.rows.isEmpty { out.append(r.rows) }
        }
        let n = Double(max(summary.transitions, 1))
        summary.meanUncertainty = uSum / n
        summary.meanPenalty = penaltySum / n
        summary.meanReward = rewardSum / n
        summary.seconds = Date().timeIntervalSince(clock)
        return (out, summary)
    }

    /// How one rollout ended.
    enum End { case horizon, terminal, unusable, uncertain }

    /// One rollout from sample `start` of segment `si`.
    func rollout(segment si: Int, start: Int, engine: QEngine?, rng: inout SeededGenerator)
        -> (rows: [Transition], uncertainties: [Double], end: End) {
        let map = world.map
        let seg = world.data.segments[si]
        let A = map.actions.count
        let steps = min(config.horizon, seg.count - 1 - start)
        var (runtime, table, state, mask, q) = world.loopStart(seg, at: start)
        let second: UInt64 = 1_000_000_000
        var status = state.withUnsafeMutableBufferPointer { runtime.assembleState(from: table, now: UInt64(start + 1) * second, wallClock: 0, into: $0) }
        var allowed = mask.withUnsafeMutableBufferPointer { runtime.actionMask(into: $0) }
        var model = world.model.rollout(from: seg, at: start)
        var rows: [Transition] = []
        var us: [Double] = []
        var end = End.horizon
        for i in 0..<max(steps, 0) {
            let t = start + i
            guard status == .ok, allowed > 0 else { end = .unusable; break }
            // ε-greedy among the allowed actions (random without a network, or when its values
            // are not finite).
            var action: Int?
            if let engine, rng.nextUnit() >= config.epsilon {
                let best = state.withUnsafeBufferPointer { s in q.withUnsafeMutableBufferPointer { engine.bestAction(state: s, mask: mask, qValues: $0) } }
                if q.allSatisfy(\.isFinite) { action = best }
            }
            guard let a = action ?? rng.randomAllowed(mask) else { end = .unusable; break }
            runtime.recordApplied(action: a)
            let predicted = model.step(action: a, actionCount: A, exogenous: seg.exogenous[t])
            let u = model.uncertainty
            if let limit = config.maxUncertainty, u > limit { end = .uncertain; break }
            guard predicted.allSatisfy(\.isFinite) else { end = .unusable; break }
            let scored = world.score(predicted, exogenous: seg.exogenous[t + 1], applied: a, tick: t + 1, runtime: &runtime, table: &table)
            guard let r = scored.reward else { end = .unusable; break }
            let ended = scored.ended
            let previous = state
            status = state.withUnsafeMutableBufferPointer { runtime.assembleState(from: table, now: UInt64(t + 2) * second, wallClock: 0, into: $0) }
            allowed = mask.withUnsafeMutableBufferPointer { runtime.actionMask(into: $0) }
            if !ended && status != .ok { end = .unusable; break }   // no decision there: nothing to bootstrap from
            let next = state.allSatisfy(\.isFinite) ? state : previous   // a terminal step's next state is never bootstrapped
            rows.append(Transition(state: previous, action: a, reward: Float(r - config.uncertaintyPenalty * u), nextState: next,
                                   terminal: ended, truncated: false, nextMask: ended ? nil : mask, fromIncumbent: false))
            us.append(u)
            if ended { end = .terminal; break }
        }
        // A rollout that did not end is cut: the target bootstraps, and an n-step return does not
        // run on into the next rollout.
        if end != .terminal, !rows.isEmpty { rows[rows.count - 1].truncated = true }
        return (rows, us, end)
    }
}

extension Retrainer {
    /// Adds the model rollouts (`learning.rollouts`) to `learner`'s replay, when the plant model
    /// was accepted; otherwise says why not in `report.rolloutsSkipped`. The warm-start network
    /// (the served or newest model, when it has the candidate's shape) is the rollout policy, in
    /// mixed precision as the gateway decides by default.
    /// Never fails the retraining.
    ///
    /// - Parameter heldOutRows: the rows held out for the checks: as many of the plant data's
    ///   newest samples are never a start.
    func addRollouts(to learner: DQNLearner, model: (any PlantModel)?, data: PlantData?, heldOutRows: Int, warmStart: QModel?,
                     wantsPlantModel: Bool, into report: inout RetrainReport, progress: (Progress) -> Void,
                     shouldStop: () -> Bool) -> ModelRollouts.Summary? {
        guard let model, let data else {
            report.rolloutsSkipped = "the plant model was not accepted: "
                + (report.plantModel?.refused ?? report.plantModelSkipped
                   ?? (wantsPlantModel ? "none was fitted" : "the mapping marks no signal 'role: controlled' (or the plant model is off)"))
            return nil
        }
        let world: ModelWorld
        do {
            world = try ModelWorld(map: map, model: model, data: data)
        } catch {
            report.rolloutsSkipped = "the model world cannot run: \(error)"
            return nil
        }
        progress(Progress(phase: "rollouts", updates: 0, of: 0, tdLoss: nil))
        let made = ModelRollouts(world: world, config: map.learning.rollouts)
            .make(network: warmStart, precision: .mixed, heldOutSamples: heldOutRows, seed: seed, shouldStop: shouldStop)
        for rollout in made.rollouts {
            for t in rollout { learner.observe(t) }
        }
        learner.flushPending()
        if made.summary.starts == 0 {
            report.rolloutsSkipped = "no logged sample can start a rollout (each needs \(world.earliestStart) samples of history before it and one after it, outside the held-out rows)"
        }
        report.figures["rollout_transitions"] = Double(made.summary.transitions)
        report.figures["rollout_seconds"] = made.summary.seconds
        return made.summary
    }
}
