import EdgeQCore
import Foundation

/// The weekly schedule of the thermal zone: occupancy and the time-of-use price.
/// Known ahead (a building's timetable and its tariff), so controllers and the gateway's
/// features may look at it in advance.
public struct ThermalSchedule: Sendable, Equatable {
    /// First occupied hour on working days (inclusive).
    public var occupiedFrom: Double = 8
    /// End of occupancy on working days (exclusive).
    public var occupiedUntil: Double = 18
    /// Working days, 0 = Monday … 6 = Sunday.
    public var workingDays: Set<Int> = [0, 1, 2, 3, 4]
    /// Price per kWh off-peak (22:00–07:00 every day, and weekends outside the peak).
    public var offPeakPrice: Double = 0.10
    /// Price per kWh on working days 07:00–17:00 and 20:00–22:00, and weekends 07:00–22:00.
    public var shoulderPrice: Double = 0.20
    /// Price per kWh in the working-day evening peak.
    public var peakPrice: Double = 0.40
    /// Start of the peak (working days).
    public var peakFrom: Double = 17
    /// End of the peak (exclusive).
    public var peakUntil: Double = 20

    /// The default schedule (office hours Monday–Friday 08–18, peak 17–20).
    public init() {}

    /// Whether the zone is occupied at `hour` (0 ≤ hour < 24) of `weekday` (0 = Monday).
    public func occupied(weekday: Int, hour: Double) -> Bool {
        workingDays.contains(weekday) && hour >= occupiedFrom && hour < occupiedUntil
    }

    /// The price per kWh at `hour` of `weekday`.
    public func price(weekday: Int, hour: Double) -> Double {
        if hour < 7 || hour >= 22 { return offPeakPrice }
        if workingDays.contains(weekday) && hour >= peakFrom && hour < peakUntil { return peakPrice }
        return shoulderPrice
    }

    /// (weekday, hour) at `hours` after Monday 00:00.
    public static func clock(_ hours: Double) -> (weekday: Int, hour: Double) {
        let days = (hours / 24).rounded(.down)
        let weekday = Int(days.truncatingRemainder(dividingBy: 7))
        return (weekday, hours - days * 24)
    }

    /// The share of the `span` hours after `hours` (sampled every `step` hours) that is occupied.
    public func occupiedShare(after hours: Double, span: Double, step: Double) -> Double {
        let n = max(1, Int((span / step).rounded()))
        var k = 0
        for i in 1...n {
            let (d, h) = Self.clock(hours + Double(i) * step)
            if occupied(weekday: d, hour: h) { k += 1 }
        }
        return Double(k) / Double(n)
    }

    /// The mean price over the `span` hours after `hours` (the steps that start then).
    public func meanPrice(after hours: Double, span: Double, step: Double) -> Double {
        let n = max(1, Int((span / step).rounded()))
        var sum = 0.0
        for i in 0..<n {
            let (d, h) = Self.clock(hours + Double(i) * step)
            sum += price(weekday: d, hour: h)
        }
        return sum / Double(n)
    }
}

/// One room heated by a five-level electric heater: a first-order RC heat balance
/// (docs/simulators.md, "thermal").
///
///     C · dT/dt = UA · (T_out − T) + P_heater + P_internal(occupied) + P_solar(hour)
///
/// integrated exactly over each 5-minute step with the inputs held. Outdoor temperature:
/// a daily sine (coldest at 05:00) around a mean, plus slow weather (AR(1), ~2 days, σ 2 K)
/// and fast noise (AR(1), ~1 h, σ 0.3 K), all drawn from the seed. An episode is one week
/// starting Monday 00:00 (2,016 steps); the last step is `truncated`.
public struct ThermalZone: Sendable {
    /// Physical constants and the comfort band.
    public struct Parameters: Sendable, Equatable {
        /// Minutes of plant time per step.
        public var stepMinutes: Double = 5
        /// Heat capacity C of the zone, kWh/K (air, furniture, light walls).
        public var capacity: Double = 1.0
        /// Heat loss coefficient UA, kW/K (time constant C/UA ≈ 6.7 h).
        public var conductance: Double = 0.15
        /// Heater power per level, kW.
        public var levels: [Double] = [0, 1.5, 3, 4.5, 6]
        /// Comfort band while occupied, °C.
        public var comfortLow: Double = 20
        /// Upper edge of the comfort band, °C.
        public var comfortHigh: Double = 24
        /// Heat from people and equipment while occupied, kW.
        public var internalGain: Double = 0.4
        /// Peak solar gain at noon (a half sine from 07:00 to 17:00), kW.
        public var solarPeak: Double = 0.6
        /// Mean outdoor temperature, °C.
        public var outdoorMean: Double = 5
        /// Half the daily outdoor swing, K.
        public var outdoorAmplitude: Double = 4
        /// Standard deviation of the slow weather term, K.
        public var weatherSigma: Double = 2
        /// Standard deviation of the fast noise term, K.
        public var noiseSigma: Double = 0.3
        /// Days per episode.
        public var episodeDays: Int = 7
        /// Weight of one kelvin-hour of discomfort in the reward, currency units.
        public var comfortWeight: Double = 10
        /// The default zone.
        public init() {}

        /// Hours per step.
        public var stepHours: Double { stepMinutes / 60 }
        /// Steps per episode.
        public var episodeSteps: Int { Int((Double(episodeDays) * 24 / stepHours).rounded()) }
    }

    /// The plant's constants.
    public let parameters: Parameters
    /// Its timetable and tariff.
    public let schedule: ThermalSchedule
    /// The zone temperature, °C.
    public private(set) var zoneTemp: Double = 18
    /// Steps taken in this episode.
    public private(set) var steps = 0
    /// The episode number (0 for the first).
    public private(set) var episode = -1
    /// The last observation (the JSON state message).
    public private(set) var observation: ThermalStep
    /// The score of everything stepped since `init` (all episodes).
    public private(set) var score = ThermalScore()

    private var rng: SeededGenerator
    private var weather = 0.0
    private var noise = 0.0

    /// A zone whose weather and initial temperatures draw from `seed`.
    public init(seed: UInt64, parameters: Parameters = .init(), schedule: ThermalSchedule = .init()) {
        self.parameters = parameters
        self.schedule = schedule
        rng = SeededGenerator(seed: seed)
        weather = parameters.weatherSigma * rng.nextGaussian()
        noise = parameters.noiseSigma * rng.nextGaussian()
        observation = ThermalStep()
        _ = reset()
    }

    /// Hours since Monday 00:00 of this episode.
    public var hours: Double { Double(steps) * parameters.stepHours }

    /// The outdoor temperature now, °C.
    public var outdoorTemp: Double {
        let (_, hour) = ThermalSchedule.clock(hours)
        return parameters.outdoorMean + weather + noise
            - parameters.outdoorAmplitude * cos(2 * Double.pi * (hour - 5) / 24)
    }

    /// Starts an episode on Monday 00:00 with the zone near its night setback (17 ± 0.5 °C).
    /// The weather carries on from the previous episode.
    public mutating func reset() -> ThermalStep {
        episode += 1
        steps = 0
        zoneTemp = 17 + 0.5 * (2 * rng.nextUnit() - 1)
        observation = makeObservation(level: 0, energyCost: 0, violation: 0, truncated: false)
        return observation
    }

    /// What the step that starts now would do if the zone were at `temperature` with the heater
    /// at `level` (clamped to 0…4): the exact solution over the step with this step's outdoor
    /// temperature, occupancy and sun, and the step's cost as the reward counts it.
    /// `step(level:)` is this applied to the zone's own temperature; a planner that knows the
    /// plant (the lab's `ThermalOptimum`) asks it about other temperatures. The outdoor
    /// temperature does not depend on the heater, so a copy of the zone stepped with any levels
    /// gives every later step's inputs exactly.
    public func outcome(from temperature: Double, level requested: Int) -> ThermalStepOutcome {
        let p = parameters
        let level = min(max(requested, 0), p.levels.count - 1)
        let power = p.levels[level]
        let (weekday, hour) = ThermalSchedule.clock(hours)
        let occupiedNow = schedule.occupied(weekday: weekday, hour: hour)
        let price = schedule.price(weekday: weekday, hour: hour)
        let solar = (hour > 7 && hour < 17) ? p.solarPeak * sin(Double.pi * (hour - 7) / 10) : 0
        let gains = power + (occupiedNow ? p.internalGain : 0) + solar
        // Exact solution of the linear ODE over the step with the inputs held.
        let equilibrium = outdoorTemp + gains / p.conductance
        let decay = exp(-p.stepHours * p.conductance / p.capacity)
        let next = equilibrium + (temperature - equilibrium) * decay
        let energyCost = power * p.stepHours * price
        // Comfort counts at the end of the step (the clock one step on).
        let (d2, h2) = ThermalSchedule.clock(Double(steps + 1) * p.stepHours)
        var violation = 0.0
        if schedule.occupied(weekday: d2, hour: h2) {
            violation = max(0, p.comfortLow - next, next - p.comfortHigh) * p.stepHours
        }
        return ThermalStepOutcome(level: level, zoneTemp: next, energyCost: energyCost, comfortViolation: violation,
                                  reward: -(energyCost + p.comfortWeight * violation))
    }

    /// Runs one step (5 minutes) with the heater at `level` (clamped to 0…4).
    public mutating func step(level requested: Int) -> ThermalStep {
        let p = parameters
        let o = outcome(from: zoneTemp, level: requested)
        zoneTemp = o.zoneTemp

        // Weather moves on.
        let slow = exp(-p.stepHours / 48)
        weather = slow * weather + p.weatherSigma * (1 - slow * slow).squareRoot() * rng.nextGaussian()
        let fast = exp(-p.stepHours / 1)
        noise = fast * noise + p.noiseSigma * (1 - fast * fast).squareRoot() * rng.nextGaussian()
        steps += 1

        let truncated = steps >= p.episodeSteps
        observation = makeObservation(level: o.level, energyCost: o.energyCost, violation: o.comfortViolation, truncated: truncated)
        score.add(observation, comfortWeight: p.comfortWeight)
        return observation
    }

    private func makeObservation(level: Int, energyCost: Double, violation: Double, truncated: Bool) -> ThermalStep {
        let p = parameters
        let (weekday, hour) = ThermalSchedule.clock(hours)
        return ThermalStep(
            step: steps, episode: episode, hour: hour, weekday: weekday, zoneTemp: zoneTemp,
            outdoorTemp: outdoorTemp,
            occupied: schedule.occupied(weekday: weekday, hour: hour) ? 1 : 0,
            occupiedNext2h: schedule.occupiedShare(after: hours, span: 2, step: p.stepHours),
            price: schedule.price(weekday: weekday, hour: hour),
            priceNext2h: schedule.meanPrice(after: hours, span: 2, step: p.stepHours),
            comfortLow: p.comfortLow, comfortHigh: p.comfortHigh, level: level,
            powerKW: p.levels[level], energyCost: energyCost, comfortViolation: violation,
            reward: -(energyCost + p.comfortWeight * violation), truncated: truncated
        )
    }
}

/// One step's outcome from a given zone temperature (`ThermalZone.outcome(from:level:)`).
public struct ThermalStepOutcome: Sendable, Equatable {
    /// The level applied (clamped to the heater's).
    public var level: Int
    /// The zone temperature at the end of the step, °C.
    public var zoneTemp: Double
    /// Currency units the step's energy costs.
    public var energyCost: Double
    /// Kelvin-hours outside the comfort band at the end of the step (0 when unoccupied then).
    public var comfortViolation: Double
    /// The step's reward: −(energy_cost + comfort_weight · comfort_violation).
    public var reward: Double
}

/// The thermal state message (`plant/thermal/state`); field names as in docs/simulators.md.
/// `level`, `power_kw`, `energy_cost`, `comfort_violation` and `reward` describe the step
/// that led to this state; `price` is what the next step's energy will cost.
public struct ThermalStep: Sendable, Equatable, Codable {
    /// Steps taken in this episode.
    public var step = 0
    /// Episode number.
    public var episode = 0
    /// Hour of the day, 0 ≤ hour < 24.
    public var hour = 0.0
    /// 0 = Monday … 6 = Sunday.
    public var weekday = 0
    /// Zone temperature, °C.
    public var zoneTemp = 0.0
    /// Outdoor temperature, °C.
    public var outdoorTemp = 0.0
    /// 1 while occupied.
    public var occupied = 0
    /// Share of the next 2 hours that is occupied (0…1): a schedule known ahead.
    public var occupiedNext2h = 0.0
    /// Price per kWh for the step starting now.
    public var price = 0.0
    /// Mean price over the next 2 hours.
    public var priceNext2h = 0.0
    /// Lower edge of the comfort band, °C.
    public var comfortLow = 0.0
    /// Upper edge of the comfort band, °C.
    public var comfortHigh = 0.0
    /// Heater level applied in the last step (0…4).
    public var level = 0
    /// Heater power in the last step, kW.
    public var powerKW = 0.0
    /// Currency units spent in the last step.
    public var energyCost = 0.0
    /// Kelvin-hours outside the comfort band in the last step (0 when unoccupied).
    public var comfortViolation = 0.0
    /// −(energy_cost + comfort_weight · comfort_violation) for the last step.
    public var reward = 0.0
    /// The episode (one week) ended with this step.
    public var truncated = false

    enum CodingKeys: String, CodingKey {
        case step, episode, hour, weekday
        case zoneTemp = "zone_temp", outdoorTemp = "outdoor_temp", occupied
        case occupiedNext2h = "occupied_next_2h", price, priceNext2h = "price_next_2h"
        case comfortLow = "comfort_low", comfortHigh = "comfort_high", level
        case powerKW = "power_kw", energyCost = "energy_cost", comfortViolation = "comfort_violation"
        case reward, truncated
    }
}

/// The thermal plant's score (`plant/thermal/score`).
public struct ThermalScore: Sendable, Equatable, Codable {
    /// Total energy cost, currency units.
    public var energyCost = 0.0
    /// Kelvin-hours outside the comfort band while occupied.
    public var comfortViolation = 0.0
    /// Sum of the per-step rewards.
    public var totalReward = 0.0
    /// Energy used, kWh.
    public var energyKWh = 0.0
    /// Steps counted.
    public var steps = 0

    /// An empty score.
    public init() {}

    mutating func add(_ s: ThermalStep, comfortWeight: Double) {
        energyCost += s.energyCost
        comfortViolation += s.comfortViolation
        totalReward += s.reward
        energyKWh += s.powerKW * 5 / 60
        steps += 1
    }

    enum CodingKeys: String, CodingKey {
        case energyCost = "energy_cost", comfortViolation = "comfort_violation"
        case totalReward = "total_reward", energyKWh = "energy_kwh", steps
    }
}

/// The thermal zone's incumbent: a schedule-based thermostat with a PI controller, as a
/// building management system would run it.
///
/// - Setpoint: the middle of the comfort band while occupied, and from `preheatLead` hours
///   before occupancy starts (a fixed morning start, like a real time program); a setback
///   otherwise.
/// - PI on the zone temperature with a deadband (errors within ±`deadband` count as zero:
///   no hunting) and anti-windup by conditional integration (the integral stops while the
///   output is saturated in the error's direction, and stays within the output range), so a
///   long setback or a cold morning does not make it overshoot.
/// - Output quantised to the nearest of the five heater levels.
public struct ThermalPI: Sendable {
    /// Tuning.
    public struct Parameters: Sendable, Equatable {
        /// Proportional gain, kW per K.
        public var kp: Double = 2.0
        /// Integral time, hours.
        public var integralTime: Double = 1.0
        /// Deadband on the error, K.
        public var deadband: Double = 0.3
        /// Setpoint while occupied, °C (the comfort band's middle would be 22; nil uses it).
        public var occupiedSetpoint: Double? = nil
        /// Setpoint when unoccupied, °C.
        public var setback: Double = 17
        /// Hours before occupancy the occupied setpoint starts (0: none).
        public var preheatLead: Double = 1.0
        /// Anti-windup on (a controller without it exists only to show why it matters).
        public var antiWindup = true
        /// The default tuning.
        public init() {}
    }

    /// The tuning.
    public let parameters: Parameters
    /// The schedule the thermostat is programmed with.
    public let schedule: ThermalSchedule
    /// The heater power per level, kW (the zone's).
    public let levels: [Double]
    /// Hours per step.
    public let stepHours: Double
    /// The integral term, kW.
    public private(set) var integral = 0.0

    /// A PI for `zone` (its levels, step and schedule).
    public init(zone: ThermalZone, parameters: Parameters = .init()) {
        self.parameters = parameters
        schedule = zone.schedule
        levels = zone.parameters.levels
        stepHours = zone.parameters.stepHours
    }

    /// The setpoint the thermostat follows for an observation.
    public func setpoint(for obs: ThermalStep) -> Double {
        let occupiedSP = parameters.occupiedSetpoint ?? (obs.comfortLow + obs.comfortHigh) / 2
        if obs.occupied == 1 { return occupiedSP }
        if parameters.preheatLead > 0 {
            let hours = Double(obs.weekday) * 24 + obs.hour + parameters.preheatLead
            let (d, h) = ThermalSchedule.clock(hours)
            if schedule.occupied(weekday: d, hour: h) { return occupiedSP }
        }
        return parameters.setback
    }

    /// The heater level (0…4) for the observed state.
    public mutating func decide(_ obs: ThermalStep) -> Int {
        let maxPower = levels.last ?? 0
        let error = setpoint(for: obs) - obs.zoneTemp
        let e = abs(error) <= parameters.deadband ? 0 : error
        let unsaturated = parameters.kp * e + integral
        let output = min(max(unsaturated, 0), maxPower)
        let step = parameters.kp / parameters.integralTime * e * stepHours
        if parameters.antiWindup {
            let pushingHigh = unsaturated >= maxPower && e > 0
            let pushingLow = unsaturated <= 0 && e < 0
            if !pushingHigh && !pushingLow { integral = min(max(integral + step, 0), maxPower) }
        } else {
            integral += step
        }
        return ThermalPI.quantise(output, levels: levels)
    }

    /// The level whose power is nearest `power`.
    public static func quantise(_ power: Double, levels: [Double]) -> Int {
        var best = 0
        for (i, p) in levels.enumerated() where abs(p - power) < abs(levels[best] - power) { best = i }
        return best
    }
}
