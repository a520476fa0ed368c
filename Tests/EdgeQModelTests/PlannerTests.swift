import EdgeQLab
import EdgeQModel
import EdgeQPlants
import Testing

/// The receding-horizon planner (docs/learning.md, "The planner and the limit"): on the heater
/// with its true model against the heater's PI, the relaxation against discrete blocks, the
/// sigma-delta realisation, and the configuration's checks.
@Suite struct PlannerTests {
    /// The true-model rollout is the plant's physics: stepped with the plant's stages and the
    /// plant's (true) ambient, it predicts the true product temperature exactly.
    @Test func trueModelRolloutReproducesTheHeater() {
        var heater = Heater(seed: 7)
        var rollout = HeaterTrueModelRollout(heater)
        let n = heater.parameters.levels.count
        var maxError = 0.0
        for t in 0..<400 {
            let level = (t / 37) % n
            let predicted = rollout.step(action: level, actionCount: n, exogenous: [heater.setpoint, heater.ambientTemp])
            _ = heater.step(level: level)
            maxError = max(maxError, abs(predicted[0] - heater.productTemp))
        }
        #expect(maxError < 1e-9)
    }

    /// One shift (960 steps of 30 s, with the plant's own setpoint changes) on two seeds: the
    /// planner that knows the true model beats the PI's return, and the relaxed planner (blocks
    /// at any average level) is not worse than the one restricted to the stages.
    @Test(arguments: [UInt64(1), 2])
    func plannerWithTheTrueModelBeatsTheHeaterPI(seed: UInt64) throws {
        let steps = 960
        let pi = HeaterPlanning.runPI(seed: seed, steps: steps)
        let discrete = try HeaterPlanning.runPlanner(seed: seed, steps: steps, relaxed: false)
        let relaxed = try HeaterPlanning.runPlanner(seed: seed, steps: steps, relaxed: true)
        print("heater seed \(seed), \(steps) steps, \(pi.setpointChanges) setpoint changes: return PI \(pi.totalReward), "
              + "planner discrete \(discrete.totalReward), relaxed \(relaxed.totalReward); "
              + "mean |error| PI \(pi.meanAbsError) K, discrete \(discrete.meanAbsError) K, relaxed \(relaxed.meanAbsError) K")
        #expect(pi.setpointChanges >= 1)
        #expect(discrete.setpointChanges == pi.setpointChanges)
        #expect(relaxed.totalReward > pi.totalReward)
        #expect(relaxed.totalReward >= discrete.totalReward)
    }

    /// The sigma-delta carry: over a block of L decisions with the same planned level, the
    /// applied stages average to it within 1/L; with plans that change every decision, the sum
    /// of applied levels never strays more than ½ level from the sum of planned ones.
    @Test func sigmaDeltaAveragesToThePlannedLevel() throws {
        let order = [2, 0, 4, 1, 3]   // action order[i] is the i-th lowest level
        let position = [1, 3, 0, 4, 2]  // inverse: the position of each action
        var planner = try RecedingHorizonPlanner(.init(blocks: [1, 2, 4], actionCount: 5, order: order, relaxed: true))
        for planned in [0.0, 0.25, 1.5, 2.75, 3.1, 4.0, 0.6] {
            for length in [1, 2, 4, 8, 16, 32] {
                var sum = 0.0
                for _ in 0..<length { sum += Double(position[planner.realise(position: planned)]) }
                #expect(abs(sum / Double(length) - planned) <= 1.0 / Double(length) + 1e-12,
                        "planned \(planned) over \(length): applied mean \(sum / Double(length))")
            }
        }
        planner.reset()
        var drift = 0.0
        var worst = 0.0
        var x: UInt64 = 12345
        for _ in 0..<2000 {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            let planned = Double(x >> 11) / Double(1 << 53) * 4
            drift += Double(position[planner.realise(position: planned)]) - planned
            worst = max(worst, abs(drift))
        }
        #expect(worst <= 0.5 + 1e-9)
    }

    /// A plain discrete planner (one-tick blocks) on a plant it knows exactly: a tank whose level
    /// is the running sum of the action's inflow, rewarded for being near 10. It fills at the top
    /// rate, then holds; the predicted return is the return the plan really earns.
    @Test func discretePlannerFindsTheObviousPlan() throws {
        var planner = try RecedingHorizonPlanner(.init(blocks: [Int](repeating: 1, count: 8), actionCount: 3))
        let inflow = [0.0, 1.0, 2.0]
        var tank = Integrator(level: 0, inflow: inflow)
        let reward: ([Double], [Double], [Double], Int) -> Double = { y, _, _, _ in -abs(y[0] - 10) }
        var actions: [Int] = []
        var earned = 0.0
        var firstPrediction: Double?
        for _ in 0..<12 {
            let d = planner.decide(from: tank, forecast: { _ in [] }, reward: reward)
            if firstPrediction == nil { firstPrediction = d.predictedReturn }
            actions.append(d.action)
            earned += reward(tank.step(action: d.action, actionCount: 3, exogenous: []), [], [], 0)
        }
        #expect(Array(actions.prefix(5)) == [2, 2, 2, 2, 2])
        #expect(tank.level == 10)
        #expect(Array(actions.suffix(3)) == [0, 0, 0])
        // The first plan (8 ticks: five at 2, then hold) earns −(8+6+4+2+0+0+0+0) = −20.
        #expect(firstPrediction == -20)
        #expect(earned == -20)
    }

    /// With a discount the predicted return is the discounted sum from tick 0: the tank's first
    /// plan at discount ½ earns −8 − 6/2 − 4/4 − 2/8 = −12.25.
    @Test func discountCountsFromTheFirstTick() throws {
        var planner = try RecedingHorizonPlanner(.init(blocks: [Int](repeating: 1, count: 8), actionCount: 3, discount: 0.5))
        let tank = Integrator(level: 0, inflow: [0, 1, 2])
        let d = planner.decide(from: tank, forecast: { _ in [] }, reward: { y, _, _, _ in -abs(y[0] - 10) })
        #expect(d.action == 2)
        #expect(d.predictedReturn == -12.25)
    }

    @Test func badConfigurationsAreRefused() {
        #expect(throws: PlannerError.self) { try RecedingHorizonPlanner(.init(blocks: [], actionCount: 3)) }
        #expect(throws: PlannerError.self) { try RecedingHorizonPlanner(.init(blocks: [2, 0], actionCount: 3)) }
        #expect(throws: PlannerError.self) { try RecedingHorizonPlanner(.init(blocks: [2], actionCount: 3, order: [0, 1, 1])) }
        #expect(throws: PlannerError.self) { try RecedingHorizonPlanner(.init(blocks: [2], actionCount: 3, relaxed: true)) }
        #expect(RecedingHorizonPlanner.Configuration.doublingBlocks(horizon: 64) == [1, 1, 2, 4, 8, 16, 32])
        #expect(RecedingHorizonPlanner.Configuration.doublingBlocks(horizon: 10, first: 2) == [2, 2, 4, 2])
    }
}

/// A tank whose level rises by the action's inflow each tick (a test plant known exactly).
struct Integrator: PlantRollout {
    var level: Double
    let inflow: [Double]
    var controlled: [Double] { [level] }
    var uncertainty: Double { 0 }
    mutating func step(mix: [Double], exogenous: [Double]) -> [Double] {
        for (i, m) in mix.enumerated() { level += m * inflow[i] }
        return [level]
    }
}
