import EdgeQModel
import EdgeQPlants
import Foundation

/// The heater's true model as a plant rollout: the plant's own physics (`Heater.nextTemperatures`)
/// stepped from its true hidden state (both node temperatures and the heater output in the
/// transport delay), without its noise. What "a planner that knows the true model" plans on
/// (docs/learning.md, "The planner and the limit").
///
/// - Controlled: `[product temperature T₂]` (°C, the true value; the plant's sensor adds
///   noise and a 0.293 K quantum).
/// - Exogenous: `[setpoint, ambient temperature]` (°C); only the ambient enters the physics.
/// - Action mix: a probability vector over the heater's stages; the power entering the
///   transport delay is the mix's average power fraction.
public struct HeaterTrueModelRollout: PlantRollout {
    /// The plant whose constants and exact step are used (its own state is read once, at `init`).
    private let plant: Heater
    private var heaterTemp: Double
    private var productTemp: Double
    /// Output fractions in the transport delay (a ring; `head` arrives next).
    private var inFlight: [Double]
    private var head = 0

    /// The rollout at the heater's present: its true temperatures and what is in the delay.
    public init(_ heater: Heater) {
        plant = heater
        heaterTemp = heater.heaterTemp
        productTemp = heater.productTemp
        inFlight = heater.powerInFlight
    }

    public var controlled: [Double] { [productTemp] }
    public var uncertainty: Double { 0 }

    public mutating func step(mix: [Double], exogenous: [Double]) -> [Double] {
        let levels = plant.parameters.levels
        var u = 0.0
        for i in 0..<min(mix.count, levels.count) { u += mix[i] * levels[i] }
        let arriving: Double
        if inFlight.isEmpty {
            arriving = u
        } else {
            arriving = inFlight[head]
            inFlight[head] = u
            head = head + 1 == inFlight.count ? 0 : head + 1
        }
        let ambient = exogenous.count > 1 ? exogenous[1] : plant.parameters.ambientMean
        (heaterTemp, productTemp) = plant.nextTemperatures(heaterTemp: heaterTemp, productTemp: productTemp,
                                                           arrivingPower: arriving, ambient: ambient)
        return [productTemp]
    }
}

/// The heater under a receding-horizon planner that knows the true model, against its PI on the
/// same seed (the same ambient, setpoint changes and sensor noise: the plant's randomness does
/// not depend on the actions). Used by `edgeq bench model` and the planner's tests.
public enum HeaterPlanning {
    /// The planner for `parameters`' stages: doubling blocks over `horizon` ticks (64 ticks of
    /// 30 s: 32 minutes, two slow time constants after the 3-minute dead time), the stages as
    /// ordered levels, relaxed or restricted to the stages.
    public static func configuration(_ parameters: Heater.Parameters = .init(), relaxed: Bool,
                                     horizon: Int = 64, discount: Double = 1) -> RecedingHorizonPlanner.Configuration {
        let order = parameters.levels.indices.sorted { parameters.levels[$0] < parameters.levels[$1] }
        return .init(blocks: RecedingHorizonPlanner.Configuration.doublingBlocks(horizon: horizon),
                     actionCount: parameters.levels.count, order: order, relaxed: relaxed, discount: discount)
    }

    /// The heater's reward on predicted signals: −(|T₂ − setpoint| + energy_weight · power
    /// fraction) with the controlled `[T₂]`, exogenous `[setpoint, ambient]` and the step's mix.
    public static func reward(_ parameters: Heater.Parameters) -> @Sendable ([Double], [Double], [Double], Int) -> Double {
        let levels = parameters.levels
        let w = parameters.energyWeight
        return { y, exo, mix, _ in
            var u = 0.0
            for i in 0..<min(mix.count, levels.count) { u += mix[i] * levels[i] }
            let sp = exo.first ?? 0
            return -(abs((y.first ?? sp) - sp) + w * u)
        }
    }

    /// One run's outcome.
    public struct Run: Sendable, Equatable {
        /// Steps run.
        public var steps: Int
        /// Sum of the plant's rewards (its return over the run).
        public var totalReward: Double
        /// Mean |T₂ − setpoint| (the true temperature), K.
        public var meanAbsError: Double
        /// Energy drawn, kWh.
        public var energyKWh: Double
        /// Setpoint changes during the run.
        public var setpointChanges: Int
    }

    /// The PI (`HeaterPI`, the plant's incumbent) on seed `seed` for `steps` steps.
    public static func runPI(seed: UInt64, steps: Int, parameters: Heater.Parameters = .init()) -> Run {
        var heater = Heater(seed: seed, parameters: parameters)
        var pi = HeaterPI(heater: heater)
        for _ in 0..<steps {
            _ = heater.step(level: pi.decide(heater.observation))
            _ = heater.startNextShiftIfEnded()
        }
        return run(heater)
    }

    /// The planner with the true model on seed `seed` for `steps` steps: each tick it plans from
    /// the heater's true state with the setpoint and ambient held at what the state message
    /// shows (persistence: the operators' changes cannot be foreseen).
    public static func runPlanner(seed: UInt64, steps: Int, relaxed: Bool, horizon: Int = 64,
                                  parameters: Heater.Parameters = .init()) throws(PlannerError) -> Run {
        var heater = Heater(seed: seed, parameters: parameters)
        var planner = try RecedingHorizonPlanner(configuration(parameters, relaxed: relaxed, horizon: horizon))
        let reward = reward(parameters)
        for _ in 0..<steps {
            let exo = [heater.observation.setpoint, heater.observation.ambientTemp]
            let d = planner.decide(from: HeaterTrueModelRollout(heater), forecast: { _ in exo }, reward: reward)
            _ = heater.step(level: d.action)
            _ = heater.startNextShiftIfEnded()
        }
        return run(heater)
    }

    /// The planner on a **learned** plant model on seed `seed` for `steps` steps: each tick it
    /// starts a rollout of `model` from the measured history (the quantised temperature the
    /// state message shows, the setpoint and ambient, the stages applied) and plans as
    /// `runPlanner` does. `model` predicts `[temp]` from the exogenous `[setpoint,
    /// ambient_temp]` (the heater mapping's roles). `discount`: the planner's per tick (1, the
    /// default: undiscounted; a teacher plans with the mapping's `learning.gamma`).
    public static func runLearnedPlanner(seed: UInt64, steps: Int, model: any PlantModel, relaxed: Bool, horizon: Int = 64,
                                         discount: Double = 1, parameters: Heater.Parameters = .init()) throws(PlannerError) -> Run {
        var heater = Heater(seed: seed, parameters: parameters)
        var planner = try RecedingHorizonPlanner(configuration(parameters, relaxed: relaxed, horizon: horizon, discount: discount))
        let reward = reward(parameters)
        // The live history: the last `keep` samples (a model needs `memory`), trimmed as it grows.
        let keep = model.memory + 2
        var history = PlantSegment(controlled: [], exogenous: [], actions: [])
        var pi = HeaterPI(heater: heater)   // decides until the history is long enough
        for _ in 0..<steps {
            let o = heater.observation
            let exo = [o.setpoint, o.ambientTemp]
            history.controlled.append([o.temp])
            history.exogenous.append(exo)
            let action: Int
            let piAction = pi.decide(o)     // kept in step (its integral) even while the planner decides
            if history.count >= model.memory {
                let d = planner.decide(from: model.rollout(from: history, at: history.count - 1), forecast: { _ in exo }, reward: reward)
                action = d.action
            } else {
                action = piAction
            }
            _ = heater.step(level: action)
            history.actions.append(action)
            _ = heater.startNextShiftIfEnded()   // bookkeeping: the plant runs on, so does the history
            if history.count > 4 * keep {
                let cut = history.count - keep
                history.controlled.removeFirst(cut)
                history.exogenous.removeFirst(cut)
                history.actions.removeFirst(cut)
            }
        }
        return run(heater)
    }

    private static func run(_ heater: Heater) -> Run {
        let s = heater.score
        return Run(steps: s.steps, totalReward: s.totalReward, meanAbsError: s.meanAbsError, energyKWh: s.energyKWh,
                   setpointChanges: s.setpointChanges)
    }
}
