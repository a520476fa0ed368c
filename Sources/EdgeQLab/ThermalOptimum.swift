import EdgeQPlants
import Foundation

/// The thermal simulator's limit (docs/learning.md, "The planner and the limit"): the best any
/// controller could do on a week when it knows the plant, the tariff, the occupancy and the
/// weather exactly, by dynamic programming on a grid of zone temperatures.
///
/// Why it is exact up to the grid: the zone's step is affine in its temperature,
/// T′ = d·T + (1 − d)·(T_out + gains/UA), and the outdoor temperature (weather and noise) is
/// drawn from the seed whatever the heater does, so a copy of the zone stepped with any
/// levels gives every step's inputs; the only approximation is the linear interpolation of the
/// value function between grid points. The policy is then applied to a copy of the real zone
/// (each step choosing the level that maximises reward + value of the exact next temperature),
/// so the figures are the plant's own score of a policy it really ran, not the DP's estimate.
public struct ThermalOptimum: Sendable {
    /// Lowest zone temperature on the grid, °C (values below are clamped to it).
    public var gridLow = 0.0
    /// Highest zone temperature on the grid, °C.
    public var gridHigh = 40.0
    /// Grid spacing, K.
    public var gridStep = 0.05
    /// Weight of a kelvin-hour of discomfort in the objective; nil: the plant's own
    /// (`comfortWeight`, so the objective is the reward). A large weight gives the cheapest
    /// policy that keeps comfort.
    public var comfortWeight: Double?

    /// The defaults (a 0.05 K grid over 0…40 °C, the plant's reward).
    public init() {}

    /// What a policy did over the run, in the plant's own score.
    public struct Result: Sendable, Equatable {
        /// Steps run.
        public var steps: Int
        /// Energy cost, currency units.
        public var energyCost: Double
        /// Kelvin-hours outside the comfort band while occupied.
        public var comfortViolation: Double
        /// Sum of the plant's rewards (−(cost + comfort_weight · violation)).
        public var totalReward: Double
        /// Energy used, kWh.
        public var energyKWh: Double
        /// The DP's own estimate of the objective from the start (nil for other policies).
        public var predictedObjective: Double?
    }

    /// The optimal policy on `zone` from its present for `steps` steps (at most to the end of
    /// its episode), run on a copy of it.
    public func run(_ zone: ThermalZone, steps: Int) -> Result {
        let steps = max(0, min(steps, zone.parameters.episodeSteps - zone.steps))
        let h = gridStep > 0 ? gridStep : 0.05
        let n = max(2, Int(((gridHigh - gridLow) / h).rounded()) + 1)
        let w = comfortWeight ?? zone.parameters.comfortWeight
        let levels = zone.parameters.levels.count
        func objective(_ o: ThermalStepOutcome) -> Double { -(o.energyCost + w * o.comfortViolation) }

        // The zone at the start of every step (its inputs then), by stepping a copy.
        var zones: [ThermalZone] = []
        zones.reserveCapacity(steps)
        var z = zone
        for _ in 0..<steps {
            zones.append(z)
            _ = z.step(level: 0)
        }
        // values[k·n + i]: the best objective from step k at grid point i; row `steps` is 0.
        var values = [Double](repeating: 0, count: (steps + 1) * n)
        func value(_ k: Int, _ t: Double) -> Double {
            let x = min(max((t - gridLow) / h, 0), Double(n - 1))
            let i = min(Int(x), n - 2)
            let f = x - Double(i)
            return values[k * n + i] * (1 - f) + values[k * n + i + 1] * f
        }
        for k in stride(from: steps - 1, through: 0, by: -1) {
            let zk = zones[k]
            for i in 0..<n {
                let t = gridLow + Double(i) * h
                var best = -Double.infinity
                for l in 0..<levels {
                    let o = zk.outcome(from: t, level: l)
                    best = max(best, objective(o) + value(k + 1, o.zoneTemp))
                }
                values[k * n + i] = best
            }
        }
        // Run the policy on the real zone.
        z = zone
        for k in 0..<steps {
            var bestLevel = 0
            var best = -Double.infinity
            for l in 0..<levels {
                let o = z.outcome(from: z.zoneTemp, level: l)
                let v = objective(o) + value(k + 1, o.zoneTemp)
                if v > best {
                    best = v
                    bestLevel = l
                }
            }
            _ = z.step(level: bestLevel)
        }
        var r = Self.difference(zone, z)
        r.predictedObjective = steps > 0 ? value(0, zone.zoneTemp) : 0
        return r
    }

    /// `policy` (observation → level) on a copy of `zone` for `steps` steps (at most to the end of
    /// its episode).
    public static func run(_ zone: ThermalZone, steps: Int, policy: (ThermalStep) -> Int) -> Result {
        let steps = max(0, min(steps, zone.parameters.episodeSteps - zone.steps))
        var z = zone
        for _ in 0..<steps { _ = z.step(level: policy(z.observation)) }
        return difference(zone, z)
    }

    /// The simulator's incumbent (`ThermalPI` with `parameters`) on a copy of `zone`.
    public static func runPI(_ zone: ThermalZone, steps: Int, parameters: ThermalPI.Parameters = .init()) -> Result {
        var pi = ThermalPI(zone: zone, parameters: parameters)
        return run(zone, steps: steps) { pi.decide($0) }
    }

    private static func difference(_ before: ThermalZone, _ after: ThermalZone) -> Result {
        let a = before.score
        let b = after.score
        return Result(steps: b.steps - a.steps, energyCost: b.energyCost - a.energyCost,
                      comfortViolation: b.comfortViolation - a.comfortViolation,
                      totalReward: b.totalReward - a.totalReward, energyKWh: b.energyKWh - a.energyKWh,
                      predictedObjective: nil)
    }
}
