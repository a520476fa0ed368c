import EdgeQCore

/// The cart-pole's incumbent: push toward the side the pole leans to.
///
/// Deliberately weak: by default it looks at the angle only (θ > 0 → push right), which
/// keeps the pole up for about 40 steps (a random policy: about 22; the limit: 500). Adding
/// the angular velocity (`velocityGain` 0.5, i.e. θ + θ̇/2) makes the bang-bang rule balance
/// for the full 500 steps on every seed tried, leaving a learner nothing to improve, so it
/// is available but not the default.
public struct CartPoleRule: Sendable {
    /// Weight of θ̇ in the lean estimate θ + k·θ̇ (0 by default).
    public let velocityGain: Double

    /// The rule; `velocityGain` 0 judges the lean by θ alone.
    public init(velocityGain: Double = 0) {
        self.velocityGain = velocityGain
    }

    /// 1 (push right) when θ + k·θ̇ > 0, else 0. `observation` is (x, ẋ, θ, θ̇).
    public func decide(_ observation: [Double]) -> Int {
        guard observation.count >= 4 else { return 0 }
        return observation[2] + velocityGain * observation[3] > 0 ? 1 : 0
    }
}

/// Exploration with limits for an incumbent: with probability `probability` the chosen
/// level moves by exactly one step up or down (down at the top, up at the bottom), so the
/// log shows the consequences of nearby actions without upsetting the plant. Off (0) by
/// default in the simulators (`--dither P`).
public struct Dither: Sendable {
    /// Share of decisions changed.
    public let probability: Double
    /// Number of levels (actions are 0..<levelCount).
    public let levelCount: Int
    private var rng: SeededGenerator

    /// A dither for actions 0..<levelCount, drawing from `seed`.
    public init(probability: Double, levelCount: Int, seed: UInt64) {
        self.probability = min(max(probability, 0), 1)
        self.levelCount = max(levelCount, 1)
        rng = SeededGenerator(seed: seed)
    }

    /// The level to apply instead of `level`, and whether it was changed.
    public mutating func apply(_ level: Int) -> (level: Int, dithered: Bool) {
        guard levelCount > 1, probability > 0, rng.nextUnit() < probability else { return (level, false) }
        var up = rng.nextUnit() < 0.5
        if level <= 0 { up = true }
        if level >= levelCount - 1 { up = false }
        return (min(max(level + (up ? 1 : -1), 0), levelCount - 1), true)
    }
}

/// Episode returns for the cart-pole's score (mean episode return).
public struct EpisodeReturns: Sendable, Equatable {
    /// Returns of finished episodes.
    public private(set) var returns: [Double] = []
    /// The return of the running episode.
    public private(set) var current = 0.0

    /// An empty record.
    public init() {}

    /// Adds a step's reward; `ended` closes the episode.
    public mutating func add(reward: Double, ended: Bool) {
        current += reward
        if ended {
            returns.append(current)
            current = 0
        }
    }

    /// The mean return of the finished episodes (0 when none).
    public var mean: Double { returns.isEmpty ? 0 : returns.reduce(0, +) / Double(returns.count) }
}
