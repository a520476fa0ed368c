import EdgeQModel
import EdgeQPlants
import Foundation

/// The thermal zone's steps ahead, read from the plant (`ThermalZone.outcome(from:level:)` on
/// copies of the zone): per step k, the affine map T′ = slope·T + offset[level], each level's
/// energy cost, and whether the zone is occupied at the end of the step. Exact, because the
/// outdoor temperature does not depend on the heater. Shared by the rollouts that branch from
/// it (arrays, copied by reference).
public struct ThermalForecastTable: Sendable {
    /// Steps covered.
    public let count: Int
    /// Levels of the heater.
    public let levels: Int
    let slope: [Double]
    /// offset[k·levels + l]: the next temperature from 0 °C at level l.
    let offset: [Double]
    /// cost[k·levels + l]: the step's energy cost at level l.
    let cost: [Double]
    /// price per kWh of step k, and 1 when the zone is occupied at the end of step k.
    let price: [Double]
    let occupiedAfter: [Double]

    /// The next `steps` steps of `zone` from its present (past the end of its week the clock
    /// runs on into the next; nothing resets).
    public init(_ zone: ThermalZone, steps: Int) {
        let n = zone.parameters.levels.count
        var slope: [Double] = [], offset: [Double] = [], cost: [Double] = [], price: [Double] = [], occ: [Double] = []
        slope.reserveCapacity(steps)
        offset.reserveCapacity(steps * n)
        cost.reserveCapacity(steps * n)
        var z = zone
        for _ in 0..<steps {
            let base = z.outcome(from: 0, level: 0)
            slope.append(z.outcome(from: 1, level: 0).zoneTemp - base.zoneTemp)
            for l in 0..<n {
                let o = z.outcome(from: 0, level: l)
                offset.append(o.zoneTemp)
                cost.append(o.energyCost)
            }
            price.append(z.observation.price)
            // Occupied at the end of the step ⇔ a zone far below the band would count discomfort.
            occ.append(z.outcome(from: -1000, level: 0).comfortViolation > 0 ? 1 : 0)
            _ = z.step(level: 0)
        }
        count = steps
        levels = n
        self.slope = slope
        self.offset = offset
        self.cost = cost
        self.price = price
        occupiedAfter = occ
    }

    /// The exogenous values of step k (clamped to the table): `[price, occupied at the end of
    /// the step (0/1), k]`.
    public func exogenous(_ k: Int) -> [Double] {
        let i = min(max(k, 0), count - 1)
        return [price[i], occupiedAfter[i], Double(i)]
    }
}

/// The thermal zone's true model as a plant rollout, with perfect forecast: the zone
/// temperature stepped by `ThermalForecastTable` (the plant's own step, read ahead). A mix of
/// levels is its average power (the step is affine in the power, so this is exact).
///
/// Controlled `[zone temperature]`; exogenous `[price, occupied after the step, table index]`
/// (the index says which step of the table to apply).
public struct ThermalTrueModelRollout: PlantRollout {
    private let table: ThermalForecastTable
    private var temp: Double

    /// A rollout at zone temperature `temperature`.
    public init(_ table: ThermalForecastTable, temperature: Double) {
        self.table = table
        temp = temperature
    }

    public var controlled: [Double] { [temp] }
    public var uncertainty: Double { 0 }

    public mutating func step(mix: [Double], exogenous: [Double]) -> [Double] {
        let k = min(max(Int(exogenous.count > 2 ? exogenous[2] : 0), 0), table.count - 1)
        var next = table.slope[k] * temp
        for l in 0..<min(mix.count, table.levels) { next += mix[l] * table.offset[k * table.levels + l] }
        temp = next
        return [temp]
    }
}

/// The thermal zone under the receding-horizon planner with its true model and perfect forecast
/// (the tariff, the occupancy and the weather): how close a planner of the kind that will run on
/// a learned model gets to the DP limit (`ThermalOptimum`).
public enum ThermalPlanning {
    /// The planner: blocks doubling from `firstBlock` steps over `horizon` steps (144: 12 hours,
    /// so a night's end is in view; first blocks of 30 minutes: 6, 6, 12, 24, 48, 48), the levels
    /// as ordered powers, relaxed (the zone's 6.7-hour time constant averages any switching).
    /// Chosen on seed 1 (cost + comfort penalty): over a week, first blocks of 2, 4, 6, 8 steps
    /// gave 28.6, 26.7, 26.1, 26.1 (a 16-hour horizon with 4: 26.2); over its first day, 1 step
    /// gave 7.35 and 2 steps 6.54.
    public static func configuration(_ parameters: ThermalZone.Parameters = .init(), horizon: Int = 144,
                                     firstBlock: Int = 6, relaxed: Bool = true) -> RecedingHorizonPlanner.Configuration {
        let order = parameters.levels.indices.sorted { parameters.levels[$0] < parameters.levels[$1] }
        return .init(blocks: RecedingHorizonPlanner.Configuration.doublingBlocks(horizon: horizon, first: firstBlock),
                     actionCount: parameters.levels.count, order: order, relaxed: relaxed)
    }

    /// The thermal reward on predicted signals: −(energy cost + comfort_weight · kelvin-hours
    /// outside the band at the end of the step when occupied then), as the plant defines it
    /// (docs/simulators.md, "thermal"); the energy cost of a mix is the mix of the levels' costs.
    public static func reward(_ parameters: ThermalZone.Parameters) -> @Sendable ([Double], [Double], [Double], Int) -> Double {
        let p = parameters
        return { y, exo, mix, _ in
            var power = 0.0
            for l in 0..<min(mix.count, p.levels.count) { power += mix[l] * p.levels[l] }
            let cost = power * p.stepHours * (exo.first ?? 0)
            let t = y.first ?? p.comfortLow
            let occupied = exo.count > 1 && exo[1] > 0
            let violation = occupied ? max(0, p.comfortLow - t, t - p.comfortHigh) * p.stepHours : 0
            return -(cost + p.comfortWeight * violation)
        }
    }

    /// The planner on a copy of `zone` for `steps` steps (at most to the end of its episode).
    public static func runPlanner(_ zone: ThermalZone, steps: Int, horizon: Int = 144,
                                  relaxed: Bool = true) throws(PlannerError) -> ThermalOptimum.Result {
        let steps = max(0, min(steps, zone.parameters.episodeSteps - zone.steps))
        let table = ThermalForecastTable(zone, steps: steps + horizon)
        var planner = try RecedingHorizonPlanner(configuration(zone.parameters, horizon: horizon, relaxed: relaxed))
        let reward = reward(zone.parameters)
        var policyStep = 0
        return ThermalOptimum.run(zone, steps: steps) { obs in
            let now = policyStep
            policyStep += 1
            let d = planner.decide(from: ThermalTrueModelRollout(table, temperature: obs.zoneTemp),
                                   forecast: { table.exogenous(now + $0) }, reward: reward)
            return d.action
        }
    }
}
