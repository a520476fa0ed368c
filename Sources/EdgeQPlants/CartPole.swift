import EdgeQCore

/// The classic cart-pole (Barto, Sutton & Anderson 1983), with the constants, Euler
/// integration, termination and 500-step limit of Gymnasium's CartPole-v1, so results
/// compare with published ones and with the Stable-Baselines3 anchors.
///
/// State: (x, ẋ, θ, θ̇). Actions: 0 pushes left, 1 pushes right (10 N). Reward 1 per step,
/// including the step that terminates. Terminal when |θ| > 12° or |x| > 2.4; truncated at
/// 500 steps (bootstrap as usual: the pole did not fall).
public struct CartPole: Sendable {
    public static let gravity = 9.8
    public static let massCart = 1.0
    public static let massPole = 0.1
    public static let halfLength = 0.5
    public static let forceMagnitude = 10.0
    public static let tau = 0.02
    public static let thetaThreshold = 12 * 2 * Double.pi / 360
    public static let xThreshold = 2.4
    /// Steps after which an episode is truncated (CartPole-v1).
    public static let stepLimit = 500
    /// Observation width.
    public static let observationCount = 4
    /// Number of discrete actions.
    public static let actionCount = 2

    /// (x, ẋ, θ, θ̇).
    public private(set) var state: (Double, Double, Double, Double) = (0, 0, 0, 0)
    /// Steps taken in the current episode.
    public private(set) var steps = 0
    private var rng: SeededGenerator

    /// A cart-pole whose resets draw from `seed`.
    public init(seed: UInt64) {
        rng = SeededGenerator(seed: seed)
        _ = reset()
    }

    /// Starts an episode: every state variable uniform in [-0.05, 0.05].
    public mutating func reset() -> [Double] {
        func u() -> Double { rng.nextUnit() * 0.1 - 0.05 }
        state = (u(), u(), u(), u())
        steps = 0
        return observation
    }

    /// The current observation as an array (x, ẋ, θ, θ̇).
    public var observation: [Double] { [state.0, state.1, state.2, state.3] }

    /// The result of one step.
    public struct Step: Sendable {
        public var observation: [Double]
        public var reward: Double
        /// The pole fell or the cart left the track: no bootstrap.
        public var terminal: Bool
        /// The step limit was reached: bootstrap as usual.
        public var truncated: Bool
    }

    /// Applies `action` (0 left, 1 right) for one 20 ms step.
    public mutating func step(_ action: Int) -> Step {
        let (x, xDot, theta, thetaDot) = state
        let force = action == 1 ? Self.forceMagnitude : -Self.forceMagnitude
        let cosT = cosine(theta)
        let sinT = sine(theta)
        let totalMass = Self.massCart + Self.massPole
        let poleMassLength = Self.massPole * Self.halfLength
        let temp = (force + poleMassLength * thetaDot * thetaDot * sinT) / totalMass
        let thetaAcc = (Self.gravity * sinT - cosT * temp)
            / (Self.halfLength * (4.0 / 3.0 - Self.massPole * cosT * cosT / totalMass))
        let xAcc = temp - poleMassLength * thetaAcc * cosT / totalMass
        state = (x + Self.tau * xDot, xDot + Self.tau * xAcc,
                 theta + Self.tau * thetaDot, thetaDot + Self.tau * thetaAcc)
        steps += 1
        let terminal = abs(state.0) > Self.xThreshold || abs(state.2) > Self.thetaThreshold
        let truncated = !terminal && steps >= Self.stepLimit
        return Step(observation: observation, reward: 1, terminal: terminal, truncated: truncated)
    }
}

#if canImport(Glibc)
import Glibc
private func cosine(_ x: Double) -> Double { Glibc.cos(x) }
private func sine(_ x: Double) -> Double { Glibc.sin(x) }
#elseif canImport(Darwin)
import Darwin
private func cosine(_ x: Double) -> Double { Darwin.cos(x) }
private func sine(_ x: Double) -> Double { Darwin.sin(x) }
#endif
