import EdgeQCore
import Foundation

/// A tank whose level is held by an outlet valve with five positions, against an inflow
/// that wanders (docs/simulators.md, "tank").
///
///     A · dh/dt = q_in(t) − c · opening · √h
///
/// (Torricelli outflow), integrated with 10 Euler sub-steps per 10-second step. The inflow
/// is a base flow plus a slow AR(1) wander (~10 min, σ 0.08 m³/min) and rare steps (an
/// upstream pump starting or stopping), drawn from the seed. Spilling over the top sets
/// `overflow`. An episode is 2,000 steps (about 5.5 hours); the last step is `truncated`.
public struct Tank: Sendable {
    /// Physical constants.
    public struct Parameters: Sendable, Equatable {
        /// Seconds of plant time per step.
        public var stepSeconds: Double = 10
        /// Cross-section, m².
        public var area: Double = 1.0
        /// Height of the overflow edge, m.
        public var height: Double = 2.0
        /// Level setpoint, m.
        public var setpoint: Double = 1.0
        /// Outflow coefficient c, m³/min at 1 m head fully open.
        public var outflowCoefficient: Double = 1.2
        /// Valve opening per position.
        public var openings: [Double] = [0, 0.25, 0.5, 0.75, 1.0]
        /// Base inflow, m³/min.
        public var baseInflow: Double = 0.5
        /// Standard deviation of the slow inflow wander, m³/min.
        public var inflowSigma: Double = 0.08
        /// Probability per step of an inflow step change.
        public var stepProbability: Double = 0.002
        /// Size of an inflow step, m³/min.
        public var stepSize: Double = 0.2
        /// Steps per episode.
        public var episodeSteps: Int = 2_000
        /// The default tank.
        public init() {}
    }

    /// The constants.
    public let parameters: Parameters
    /// Level, m.
    public private(set) var level = 1.0
    /// Valve position (0…4) applied in the last step.
    public private(set) var valve = 2
    /// Current inflow, m³/min.
    public private(set) var inflow = 0.5
    /// Steps taken in this episode.
    public private(set) var steps = 0
    /// Episode number (0 for the first).
    public private(set) var episode = -1
    /// The last observation.
    public private(set) var observation = TankStep()
    /// The score of everything stepped since `init`.
    public private(set) var score = TankScore()

    private var rng: SeededGenerator
    private var wander = 0.0
    private var offset = 0.0

    /// A tank whose disturbances and initial levels draw from `seed`.
    public init(seed: UInt64, parameters: Parameters = .init()) {
        self.parameters = parameters
        rng = SeededGenerator(seed: seed)
        _ = reset()
    }

    /// Starts an episode: level within ±0.2 m of the setpoint, valve half open.
    public mutating func reset() -> TankStep {
        episode += 1
        steps = 0
        level = parameters.setpoint + 0.4 * (rng.nextUnit() - 0.5)
        valve = 2
        inflow = max(0, parameters.baseInflow + wander + offset)
        observation = TankStep(step: 0, episode: episode, level: level, setpoint: parameters.setpoint,
                               inflow: inflow, valve: valve, overflow: 0, reward: 0, truncated: false)
        return observation
    }

    /// Runs one step with the valve at `position` (clamped to 0…4).
    public mutating func step(valve position: Int) -> TankStep {
        let p = parameters
        let newValve = min(max(position, 0), p.openings.count - 1)
        let moved = newValve != valve
        valve = newValve
        let opening = p.openings[valve]
        var overflow = false
        let dtMinutes = p.stepSeconds / 60 / 10
        for _ in 0..<10 {
            let out = p.outflowCoefficient * opening * max(level, 0).squareRoot()
            level += dtMinutes * (inflow - out) / p.area
            if level >= p.height {
                level = p.height
                overflow = true
            }
            level = max(level, 0)
        }
        // Disturbance for the next step.
        let phi = exp(-p.stepSeconds / 600)
        wander = phi * wander + p.inflowSigma * (1 - phi * phi).squareRoot() * rng.nextGaussian()
        if rng.nextUnit() < p.stepProbability {
            offset = (rng.nextUnit() < 0.5 || offset > 0.3) ? offset - p.stepSize : offset + p.stepSize
            offset = min(max(offset, -0.4), 0.4)
        }
        inflow = min(max(p.baseInflow + wander + offset, 0), 1.1)
        steps += 1
        let error = abs(level - p.setpoint)
        let reward = -(error + (moved ? 0.01 : 0) + (overflow ? 1 : 0))
        observation = TankStep(step: steps, episode: episode, level: level, setpoint: p.setpoint,
                               inflow: inflow, valve: valve, overflow: overflow ? 1 : 0, reward: reward,
                               truncated: steps >= p.episodeSteps)
        score.add(observation, moved: moved)
        return observation
    }
}

/// The tank state message (`plant/tank/state`); `reward` and `overflow` describe the step
/// that led to this state.
public struct TankStep: Sendable, Equatable, Codable {
    /// Steps taken in this episode.
    public var step = 0
    /// Episode number.
    public var episode = 0
    /// Level, m.
    public var level = 0.0
    /// Setpoint, m.
    public var setpoint = 0.0
    /// Inflow, m³/min (measured upstream).
    public var inflow = 0.0
    /// Valve position 0…4.
    public var valve = 0
    /// 1 when the tank spilled during the step.
    public var overflow = 0
    /// −(|level − setpoint| + 0.01 per valve move + 1 per overflow).
    public var reward = 0.0
    /// The episode ended with this step.
    public var truncated = false
}

/// The tank's score (`plant/tank/score`).
public struct TankScore: Sendable, Equatable, Codable {
    /// Sum of |level − setpoint| over the steps, m.
    public var absErrorSum = 0.0
    /// Valve moves.
    public var valveMoves = 0
    /// Steps with overflow.
    public var overflows = 0
    /// Sum of the rewards.
    public var totalReward = 0.0
    /// Steps counted.
    public var steps = 0
    /// Mean |level − setpoint|, m.
    public var meanAbsError: Double { steps == 0 ? 0 : absErrorSum / Double(steps) }

    /// An empty score.
    public init() {}

    mutating func add(_ s: TankStep, moved: Bool) {
        absErrorSum += abs(s.level - s.setpoint)
        if moved { valveMoves += 1 }
        overflows += s.overflow
        totalReward += s.reward
        steps += 1
    }

    enum CodingKeys: String, CodingKey {
        case absErrorSum = "abs_error_sum", valveMoves = "valve_moves", overflows
        case totalReward = "total_reward", steps
    }
}

/// The tank's incumbent: a PI on the level with deadband and anti-windup, the output
/// (valve opening 0…1) quantised to the nearest of the five positions.
public struct TankPI: Sendable {
    /// Tuning.
    public struct Parameters: Sendable, Equatable {
        /// Proportional gain, opening per m.
        public var kp: Double = 3.0
        /// Integral time, minutes.
        public var integralTime: Double = 3
        /// Deadband on the level error, m.
        public var deadband: Double = 0.02
        /// Opening when the error is zero and the integral empty (bias).
        public var bias: Double = 0.5
        /// The default tuning.
        public init() {}
    }

    /// The tuning.
    public let parameters: Parameters
    /// The valve openings per position.
    public let openings: [Double]
    /// Minutes per step.
    public let stepMinutes: Double
    /// The integral term (opening).
    public private(set) var integral = 0.0

    /// A PI for `tank`.
    public init(tank: Tank, parameters: Parameters = .init()) {
        self.parameters = parameters
        openings = tank.parameters.openings
        stepMinutes = tank.parameters.stepSeconds / 60
    }

    /// The valve position (0…4) for the observed state.
    public mutating func decide(_ obs: TankStep) -> Int {
        let error = obs.level - obs.setpoint   // too high → open more
        let e = abs(error) <= parameters.deadband ? 0 : error
        let unsaturated = parameters.bias + parameters.kp * e + integral
        let output = min(max(unsaturated, 0), 1)
        let pushingHigh = unsaturated >= 1 && e > 0
        let pushingLow = unsaturated <= 0 && e < 0
        if !pushingHigh && !pushingLow {
            integral += parameters.kp / parameters.integralTime * e * stepMinutes
            integral = min(max(integral, -parameters.bias), 1 - parameters.bias)
        }
        return ThermalPI.quantise(output, levels: openings)
    }
}
