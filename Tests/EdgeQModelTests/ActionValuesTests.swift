import EdgeQModel
import Testing

/// The planner's value of each first action (`RecedingHorizonPlanner.actionValues`, the
/// teacher of distillation, docs/learning.md): on plants it knows exactly, the values are the
/// returns of the best plans that start with each action, the best of them is `decide`'s
/// predicted return, and asking for them leaves `decide` as it was.
@Suite struct ActionValuesTests {
    /// The tank of `PlannerTests` (level += inflow, reward −|level − 10|, 8 one-tick blocks, from
    /// 0): starting with inflow 2 the best plan fills in five ticks (−8 −6 −4 −2 −0 −0 −0 −0 =
    /// −20, `decide`'s value); with 1 first it earns −9 −7 −5 −3 −1 = −25; with 0 first
    /// −10 −8 −6 −4 −2 = −30.
    @Test func valuesOfTheFirstActionOnTheTank() throws {
        var planner = try RecedingHorizonPlanner(.init(blocks: [Int](repeating: 1, count: 8), actionCount: 3))
        let tank = Integrator(level: 0, inflow: [0, 1, 2])
        let reward: ([Double], [Double], [Double], Int) -> Double = { y, _, _, _ in -abs(y[0] - 10) }
        let v = planner.actionValues(from: tank, forecast: { _ in [] }, reward: reward)
        #expect(v.values == [-30, -25, -20])
        #expect(v.bestReturn == -20)
        #expect(planner.lastPlan.isEmpty)
        var fresh = try RecedingHorizonPlanner(.init(blocks: [Int](repeating: 1, count: 8), actionCount: 3))
        let d = fresh.decide(from: tank, forecast: { _ in [] }, reward: reward)
        #expect(d.action == 2)
        #expect(v.values.max() == d.predictedReturn)
        // The values did not touch the planner's history: its decision is a fresh planner's.
        #expect(planner.decide(from: tank, forecast: { _ in [] }, reward: reward) == d)
    }

    /// Values are indexed by action, not by level: with the actions' inflows permuted and
    /// `order` saying so (relaxed blocks), the action with the largest inflow gets the best
    /// value, equal to the unconstrained plan's (which fills at the top rate too). With a
    /// discount of ½ the values count from the first tick like `decide`'s.
    @Test func valuesAreIndexedByActionThroughOrder() throws {
        let inflow = [2.0, 0.0, 1.0]          // action 1 is the lowest level, action 0 the highest
        var planner = try RecedingHorizonPlanner(.init(blocks: [Int](repeating: 1, count: 8), actionCount: 3,
                                                       order: [1, 2, 0], relaxed: true, discount: 0.5))
        let tank = Integrator(level: 0, inflow: inflow)
        let reward: ([Double], [Double], [Double], Int) -> Double = { y, _, _, _ in -abs(y[0] - 10) }
        let v = planner.actionValues(from: tank, forecast: { _ in [] }, reward: reward)
        #expect(v.values[0] == v.bestReturn)
        #expect(v.values[0] == -12.25)       // −8 − 6/2 − 4/4 − 2/8, as in PlannerTests
        #expect(v.values[2] < v.values[0])
        #expect(v.values[1] < v.values[2])
        // First tick at 0 costs −10 now and delays the fill by one tick.
        #expect(v.values[1] == -10 - 8.0 / 2 - 6.0 / 4 - 4.0 / 8 - 2.0 / 16)
    }
}
