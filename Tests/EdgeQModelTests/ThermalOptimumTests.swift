import EdgeQLab
import EdgeQPlants
import Testing

/// The thermal simulator's limit by dynamic programming (docs/learning.md, "The planner and
/// the limit"), checked on one day against the PI and hand-written policies on the plant's own
/// reward: −(energy cost + comfort_weight · kelvin-hours outside the band while occupied).
@Suite struct ThermalOptimumTests {
    /// `outcome(from:level:)` is the step: asked about the zone's own temperature it gives the
    /// temperature and reward `step(level:)` then produces.
    @Test func outcomeIsTheStep() {
        var zone = ThermalZone(seed: 3)
        for t in 0..<600 {
            let level = (t / 11) % 5
            let o = zone.outcome(from: zone.zoneTemp, level: level)
            let s = zone.step(level: level)
            #expect(o.zoneTemp == s.zoneTemp)
            #expect(o.reward == s.reward)
        }
    }

    /// One day (Monday, 288 five-minute steps) on three seeds: the DP's policy, run on the plant,
    /// earns at least the reward of the PI and of five other policies, and its own estimate
    /// matches what it earned (the grid is the only approximation).
    @Test(arguments: [UInt64(1), 2, 3])
    func optimumBeatsThePIAndHandWrittenPoliciesOverADay(seed: UInt64) {
        let zone = ThermalZone(seed: seed)
        let steps = 288
        let optimum = ThermalOptimum().run(zone, steps: steps)
        let pi = ThermalOptimum.runPI(zone, steps: steps)
        var strictPI = ThermalPI.Parameters()
        strictPI.occupiedSetpoint = 20.5
        strictPI.preheatLead = 2
        var noPreheat = ThermalPI.Parameters()
        noPreheat.preheatLead = 0
        let schedule = zone.schedule
        let alternatives: [(String, ThermalOptimum.Result)] = [
            ("PI", pi),
            ("PI 20.5 °C, 2 h preheat", ThermalOptimum.runPI(zone, steps: steps, parameters: strictPI)),
            ("PI without preheat", ThermalOptimum.runPI(zone, steps: steps, parameters: noPreheat)),
            ("always off", ThermalOptimum.run(zone, steps: steps) { _ in 0 }),
            ("always level 2", ThermalOptimum.run(zone, steps: steps) { _ in 2 }),
            ("thermostat 21 °C from 06:00 on working days", ThermalOptimum.run(zone, steps: steps) { obs in
                let on = schedule.workingDays.contains(obs.weekday) && obs.hour >= 6 && obs.hour < 18
                return on && obs.zoneTemp < 21 ? 4 : 0
            }),
        ]
        print("thermal seed \(seed), one day: optimum reward \(optimum.totalReward) (cost \(optimum.energyCost), "
              + "comfort \(optimum.comfortViolation) K·h, predicted \(optimum.predictedObjective ?? .nan)); "
              + alternatives.map { "\($0.0) \($0.1.totalReward) (cost \($0.1.energyCost), comfort \($0.1.comfortViolation) K·h)" }
                .joined(separator: "; "))
        #expect(optimum.steps == steps)
        for (name, r) in alternatives {
            #expect(optimum.totalReward >= r.totalReward, "\(name) earned \(r.totalReward), the optimum \(optimum.totalReward)")
        }
        if let predicted = optimum.predictedObjective {
            #expect(abs(predicted - optimum.totalReward) <= 0.02 * abs(optimum.totalReward) + 0.01)
        } else {
            Issue.record("the optimum gives no estimate")
        }
    }

    /// With a large comfort weight the DP keeps comfort at least as well as the PI and is still
    /// cheaper (the cheapest policy that keeps comfort, a second reading of the limit).
    @Test func comfortKeepingOptimumIsCheaperThanThePI() {
        let zone = ThermalZone(seed: 4)
        var strict = ThermalOptimum()
        strict.comfortWeight = 1000
        let optimum = strict.run(zone, steps: 288)
        let pi = ThermalOptimum.runPI(zone, steps: 288)
        #expect(optimum.comfortViolation <= pi.comfortViolation + 1e-6)
        #expect(optimum.energyCost < pi.energyCost)
    }
}

/// The receding-horizon planner on the thermal zone with its true model and perfect forecast.
@Suite struct ThermalPlanningTests {
    /// The forecast table is the plant: a rollout on it, stepped with the levels the plant
    /// runs, predicts the zone temperature within rounding.
    @Test func trueModelRolloutReproducesTheZone() {
        var zone = ThermalZone(seed: 5)
        let table = ThermalForecastTable(zone, steps: 500)
        var rollout = ThermalTrueModelRollout(table, temperature: zone.zoneTemp)
        var worst = 0.0
        for k in 0..<500 {
            let level = (k / 13) % 5
            let y = rollout.step(action: level, actionCount: 5, exogenous: table.exogenous(k))
            _ = zone.step(level: level)
            worst = max(worst, abs(y[0] - zone.zoneTemp))
        }
        #expect(worst < 1e-9)
    }

    /// One day (seed 1): the planner is at least as good as the PI on the plant's reward, and
    /// not better than the DP optimum beyond the grid's error.
    @Test func plannerIsBetweenThePIAndTheOptimumOverADay() throws {
        let zone = ThermalZone(seed: 1)
        let planner = try ThermalPlanning.runPlanner(zone, steps: 288)
        let pi = ThermalOptimum.runPI(zone, steps: 288)
        let optimum = ThermalOptimum().run(zone, steps: 288)
        print("thermal seed 1, one day: reward PI \(pi.totalReward), planner \(planner.totalReward) (cost \(planner.energyCost), comfort \(planner.comfortViolation) K·h), optimum \(optimum.totalReward)")
        #expect(planner.totalReward >= pi.totalReward)
        #expect(planner.totalReward <= optimum.totalReward + 0.01 * abs(optimum.totalReward))
    }
}
