import EdgeQCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Gymnasium's MountainCar-v0, written from its published definition
/// (gymnasium/envs/classic_control/mountain_car.py, `MountainCarEnv`, after Moore 1990,
/// registered with `max_episode_steps=200`):
///
///     velocity += (action − 1)·0.001 + cos(3·position)·(−0.0025)
///     velocity  = clip(velocity, −0.07, 0.07)
///     position += velocity
///     position  = clip(position, −1.2, 0.6)
///     if position == −1.2 and velocity < 0: velocity = 0
///     terminated = position ≥ 0.5 and velocity ≥ 0
///     reward = −1
///
/// Start: position uniform in [−0.6, −0.4], velocity 0. Actions: 0 accelerate left, 1 don't
/// accelerate, 2 accelerate right. Reward −1 for every step, including the one that reaches
/// the goal, so an episode's return is minus its length. Truncated (bootstrap as usual) after
/// 200 steps when the goal was not reached on the 200th (Gymnasium's `TimeLimit` would flag
/// both; terminal wins here, as it must for learning).
///
/// The state is kept in Double, as Gymnasium keeps it (a float64 array); Gymnasium's
/// observation is the float32 rounding of the same state. The start draws come from
/// `SeededGenerator`, so a seed does not give the same starts as Gymnasium's `np_random`.
public struct MountainCar: Sendable {
    public static let minPosition = -1.2
    public static let maxPosition = 0.6
    public static let maxSpeed = 0.07
    public static let goalPosition = 0.5
    public static let goalVelocity = 0.0
    public static let force = 0.001
    public static let gravity = 0.0025
    /// Steps after which an episode is truncated (MountainCar-v0's registration).
    public static let stepLimit = 200
    /// Number of discrete actions.
    public static let actionCount = 3

    /// Position along the track (−1.2…0.6).
    public private(set) var position = 0.0
    /// Velocity (−0.07…0.07).
    public private(set) var velocity = 0.0
    /// Steps taken in the current episode.
    public private(set) var steps = 0
    private var rng: SeededGenerator

    /// A mountain car whose starts draw from `seed`.
    public init(seed: UInt64) {
        rng = SeededGenerator(seed: seed)
        reset()
    }

    /// A mountain car at a given state (for reference trajectories).
    public init(position: Double, velocity: Double = 0, seed: UInt64 = 0) {
        rng = SeededGenerator(seed: seed)
        self.position = position
        self.velocity = velocity
    }

    /// Starts an episode: position uniform in [−0.6, −0.4], velocity 0.
    public mutating func reset() {
        position = -0.6 + 0.2 * rng.nextUnit()
        velocity = 0
        steps = 0
    }

    /// The result of one step.
    public struct Step: Sendable, Equatable {
        public var position: Double
        public var velocity: Double
        /// Always −1.
        public var reward: Double
        /// The car reached the goal: no bootstrap.
        public var terminal: Bool
        /// The 200-step limit: bootstrap as usual.
        public var truncated: Bool
    }

    /// Applies `action` (0 left, 1 none, 2 right; others clamped) for one step.
    public mutating func step(_ action: Int) -> Step {
        let a = Double(min(max(action, 0), 2))
        // Grouped as Python evaluates `velocity += a + b`: velocity + (a + b).
        var v = velocity + ((a - 1) * Self.force + cos(3 * position) * (-Self.gravity))
        v = min(max(v, -Self.maxSpeed), Self.maxSpeed)
        var x = position + v
        x = min(max(x, Self.minPosition), Self.maxPosition)
        if x == Self.minPosition && v < 0 { v = 0 }
        position = x
        velocity = v
        steps += 1
        let terminal = x >= Self.goalPosition && v >= Self.goalVelocity
        let truncated = !terminal && steps >= Self.stepLimit
        return Step(position: x, velocity: v, reward: -1, terminal: terminal, truncated: truncated)
    }
}

/// The mountain car's state message (`plant/mountaincar/state`, docs/simulators.md).
/// `reward`, `terminal` and `truncated` describe the step that led to this state; the first
/// state of an episode has reward 0.
public struct MountainCarState: Sendable, Equatable, Codable {
    /// Steps taken in this episode.
    public var step = 0
    /// Episode number.
    public var episode = 0
    /// Position.
    public var position = 0.0
    /// Velocity.
    public var velocity = 0.0
    /// Reward of the last step (−1, 0 at an episode's start).
    public var reward = 0.0
    /// The car reached the goal.
    public var terminal = false
    /// The 200-step limit was reached.
    public var truncated = false
}

/// The mountain car's incumbent: the classic energy-pumping rule, accelerate in the
/// direction the car moves (right when the velocity is ≥ 0, else left), which swings the
/// car higher on every pass. Deterministic. Over 201 starts evenly spread on [−0.6, −0.4]
/// its mean return is −119.4 (−125 … −113; test `energyPumpingReachesTheGoalOnEveryStart`);
/// never "don't accelerate".
public struct MountainCarRule: Sendable {
    /// The rule.
    public init() {}

    /// 2 (right) when `velocity` ≥ 0, else 0 (left).
    public func decide(velocity: Double) -> Int { velocity >= 0 ? 2 : 0 }
}

/// The mountain car run episode after episode with its rule as incumbent: the state message
/// to publish, the returns, and a new episode after the state that ended one was published.
/// Shared by `edgeq sim mountaincar` and the lab.
public struct MountainCarEpisodes: Sendable {
    /// The plant.
    public private(set) var env: MountainCar
    /// The incumbent.
    public var rule = MountainCarRule()
    /// The current state message.
    public private(set) var message: MountainCarState
    /// Episode returns.
    public private(set) var returns = EpisodeReturns()
    /// Episodes begun before the current one.
    public private(set) var episode = 0
    /// Steps taken since `init`.
    public private(set) var totalSteps = 0
    var pendingReset = false

    /// A mountain car drawing its starts from `seed`.
    public init(seed: UInt64) {
        env = MountainCar(seed: seed)
        message = MountainCarState(step: 0, episode: 0, position: env.position, velocity: env.velocity)
    }

    /// The rule's action for the current state.
    public func incumbentAction() -> Int { rule.decide(velocity: env.velocity) }

    /// Applies `action`; the message then says how the step ended.
    public mutating func step(_ action: Int) {
        let s = env.step(action)
        totalSteps += 1
        returns.add(reward: s.reward, ended: s.terminal || s.truncated)
        message = MountainCarState(step: env.steps, episode: episode, position: s.position, velocity: s.velocity,
                                   reward: s.reward, terminal: s.terminal, truncated: s.truncated)
        if s.terminal || s.truncated { pendingReset = true }
    }

    /// After the state that ended an episode was published: starts the next one (true).
    public mutating func startNextEpisodeIfEnded() -> Bool {
        guard pendingReset else { return false }
        pendingReset = false
        episode += 1
        env.reset()
        message = MountainCarState(step: 0, episode: episode, position: env.position, velocity: env.velocity)
        return true
    }
}
