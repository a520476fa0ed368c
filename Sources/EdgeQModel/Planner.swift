import Foundation

/// A receding-horizon planner over the mapping's discrete actions (docs/learning.md, "The
/// planner and the limit"): at each decision it searches a plan over the next `horizon` ticks
/// on a plant rollout, applies the plan's first step, and plans again at the next tick.
///
/// - **Move blocking**: the horizon is cut into blocks (e.g. 1, 1, 2, 4, 8, 16, 32 ticks); the
///   plan holds one value per block, so the search is over a handful of values however long
///   the horizon.
/// - **Relaxation** (with `order`, the actions from the lowest level to the highest, and
///   `relaxed`): a block's value is any average level on a grid between the discrete ones — a
///   mix of neighbouring levels k and k + 1 with a fraction — which the rollout steps as an
///   action mix. It is the right model of a plant whose lag averages switching between stages
///   (a heater, a valve); the applied stages are realised from the first block's level by a
///   sigma-delta carry kept across decisions, so over a block they average to the planned
///   level within one level ÷ the block's length. Restricted to the discrete levels, blocks
///   cannot express "between stage 2 and 3" for longer than the first blocks and the plan
///   settles off the target.
/// - **Search**: the best of the last plan shifted one tick and every constant plan, then
///   coordinate descent over the blocks (each block tries every value with the others held;
///   relaxed, every grid level and then a local refinement that halves its step
///   `refinements` times, so a block's level is found to 1/(grid·2^refinements) of an
///   interval, and a pattern search that moves energy between the block and the next;
///   discrete, every pair of values for the block and the next) for `sweeps` sweeps or until a
///   sweep changes nothing. Blocks before the one
///   being searched are stepped once and branched from (the rollout is a value), so a sweep
///   costs about blocks × values × horizon model steps.
///
/// The planner runs beside the decision path (retraining, a teacher), never in it. It keeps
/// its buffers (the action mixes, the forecast of the horizon) from decision to decision; the
/// allocations left per decision are the forecast's and the rollout's own.
public struct RecedingHorizonPlanner: Sendable {
    /// What the planner searches and how.
    public struct Configuration: Sendable, Equatable {
        /// Block lengths in ticks, first block first; their sum is the horizon.
        public var blocks: [Int]
        /// Number of discrete actions (`0..<actionCount`).
        public var actionCount: Int
        /// The actions from the lowest level to the highest (a permutation of
        /// `0..<actionCount`); nil when the actions are not ordered levels (no relaxation).
        public var order: [Int]?
        /// Blocks may take any average level between neighbouring actions of `order` (on a grid
        /// of `gridPerInterval` steps per interval). Needs `order`.
        public var relaxed: Bool
        /// Grid steps between neighbouring levels in the relaxation (4: fractions 0, ¼, ½, ¾).
        public var gridPerInterval: Int
        /// Discount per tick (1: none).
        public var discount: Double
        /// Coordinate-descent sweeps at most.
        public var sweeps: Int
        /// Relaxed only: halvings of the local refinement around a block's best grid level.
        public var refinements: Int

        /// A configuration; see the properties.
        public init(blocks: [Int], actionCount: Int, order: [Int]? = nil, relaxed: Bool = false,
                    gridPerInterval: Int = 4, discount: Double = 1, sweeps: Int = 2, refinements: Int = 6) {
            self.blocks = blocks
            self.actionCount = actionCount
            self.order = order
            self.relaxed = relaxed
            self.gridPerInterval = gridPerInterval
            self.discount = discount
            self.sweeps = sweeps
            self.refinements = refinements
        }

        /// The horizon in ticks (the blocks' sum).
        public var horizon: Int { blocks.reduce(0, +) }

        /// Blocks that double from `first` ticks (`first`, `first`, 2·`first`, 4·`first`, …), the last
        /// one cut so that they sum to `horizon`.
        public static func doublingBlocks(horizon: Int, first: Int = 1) -> [Int] {
            var out: [Int] = []
            var left = max(horizon, 1)
            var next = max(first, 1)
            var repeated = false
            while left > 0 {
                let b = min(next, left)
                out.append(b)
                left -= b
                if repeated { next *= 2 } else { repeated = true }
            }
            return out
        }
    }

    /// One decision.
    public struct Decision: Sendable, Equatable {
        /// The action to apply now.
        public var action: Int
        /// The first block's planned value: a position on `order` (0 = the lowest level, a
        /// fraction between neighbours when relaxed), or the action itself without `order`.
        public var plannedLevel: Double
        /// The plan's predicted (discounted) return over the horizon.
        public var predictedReturn: Double
        /// Plans evaluated (full or from a block on) for this decision.
        public var evaluations: Int
    }

    /// The configuration.
    public let configuration: Configuration
    /// The sigma-delta carry: the part of the planned levels the applied stages have not given
    /// yet (within ±½ level).
    public private(set) var carry = 0.0

    /// The grid of block values: positions on `order` (or the actions without `order`).
    private let positions: [Double]
    /// The action mix of the block being stepped (filled in place).
    private var mix: [Double]
    /// The block each tick of the horizon falls in, and each block's first tick.
    private let blockOfTick: [Int]
    private let blockStart: [Int]
    /// The last plan (a position per block), empty before the first decision.
    private var plan: [Double] = []
    /// The forecast of the horizon (tick k → the exogenous values then), refilled per decision.
    private var forecastCache: [[Double]]

    /// A planner with `configuration`.
    /// - Throws: `PlannerError.badConfiguration` naming what is wrong (empty or non-positive
    ///   blocks, no actions, an `order` that is not a permutation, relaxation without order).
    public init(_ configuration: Configuration) throws(PlannerError) {
        let c = configuration
        guard !c.blocks.isEmpty, c.blocks.allSatisfy({ $0 > 0 }) else {
            throw .badConfiguration("blocks must be non-empty and positive, got \(c.blocks)")
        }
        guard c.actionCount >= 1 else { throw .badConfiguration("actionCount must be at least 1") }
        if let o = c.order, o.sorted() != Array(0..<c.actionCount) {
            throw .badConfiguration("order \(o) is not a permutation of 0..<\(c.actionCount)")
        }
        if c.relaxed && c.order == nil { throw .badConfiguration("relaxed needs order (the actions as ordered levels)") }
        guard c.gridPerInterval >= 1, c.sweeps >= 0, c.refinements >= 0, c.discount > 0, c.discount <= 1 else {
            throw .badConfiguration("gridPerInterval ≥ 1, sweeps ≥ 0, refinements ≥ 0 and 0 < discount ≤ 1 (got \(c.gridPerInterval), \(c.sweeps), \(c.refinements), \(c.discount))")
        }
        self.configuration = c
        let n = c.actionCount
        let g = c.relaxed ? c.gridPerInterval : 1
        positions = (0...((n - 1) * g)).map { Double($0) / Double(g) }
        mix = [Double](repeating: 0, count: n)
        var blockOfTick: [Int] = []
        var blockStart: [Int] = []
        for (b, len) in c.blocks.enumerated() {
            blockStart.append(blockOfTick.count)
            blockOfTick += [Int](repeating: b, count: len)
        }
        self.blockOfTick = blockOfTick
        self.blockStart = blockStart
        forecastCache = [[Double]](repeating: [], count: blockOfTick.count)
    }

    /// Plans from `rollout` (the plant model at the present) and returns the action to apply now.
    ///
    /// - Parameters:
    ///   - rollout: the model at the present; the planner branches copies of it.
    ///   - forecast: tick k ahead (0 = now) → the exogenous values during the step from tick k
    ///     to k + 1 (what the rollout's `step` takes). Called once per tick of the horizon.
    ///   - reward: (predicted controlled signals at tick k + 1, the exogenous values of step k,
    ///     the step's action mix, k) → the step's reward, higher better: the mapping's reward
    ///     evaluated on predicted signals.
    public mutating func decide(
        from rollout: any PlantRollout,
        forecast: (Int) -> [Double],
        reward: ([Double], [Double], [Double], Int) -> Double
    ) -> Decision {
        let c = configuration
        let horizon = blockOfTick.count
        for k in 0..<horizon { forecastCache[k] = forecast(k) }
        // The last plan shifted one tick is a starting plan beside the constant ones.
        let shifted: [Double]? = plan.count == c.blocks.count
            ? blockStart.map { s in plan[blockOfTick[min(s + 1, horizon - 1)]] } : nil
        let found = search(rollout, start: shifted, fixedFirst: nil, reward: reward)
        plan = found.plan

        let planned = found.plan[0]
        let action: Int
        if c.relaxed {
            action = realise(position: planned)
        } else {
            let i = min(max(Int(planned.rounded()), 0), c.actionCount - 1)
            action = c.order.map { $0[i] } ?? i
        }
        return Decision(action: action, plannedLevel: planned, predictedReturn: found.value, evaluations: found.evaluations)
    }

    /// The value of each first action (docs/learning.md, "Distillation"): what `decide` would
    /// predict if the first block (the first tick with doubling blocks from 1) were held at that
    /// action and the rest of the plan optimised.
    public struct ActionValues: Sendable, Equatable {
        /// Per action (indexed by action, `0..<actionCount`): the predicted (discounted) return
        /// over the horizon with the first block fixed to it.
        public var values: [Double]
        /// The unconstrained plan's predicted return (what `decide` from a fresh planner predicts;
        /// above every entry of `values` when its first block is between two levels).
        public var bestReturn: Double
        /// Plans evaluated for all of it.
        public var evaluations: Int
    }

    /// The value of each first action from `rollout`: for each action a, the plan's predicted
    /// return with the first block held at a (one-hot: the action itself, not a mix) and the
    /// other blocks searched as `decide` searches them, starting from the unconstrained best
    /// plan with its first block replaced and from every constant plan. Q(s, a) of a teacher
    /// whose horizon is the planner's: the planner's choices and predicted returns, per action.
    ///
    /// Independent of the planner's history: it neither starts from nor changes `lastPlan`
    /// and the sigma-delta `carry` (each logged state is asked on its own); a planner can be
    /// used for both. The parameters are `decide`'s.
    public mutating func actionValues(
        from rollout: any PlantRollout,
        forecast: (Int) -> [Double],
        reward: ([Double], [Double], [Double], Int) -> Double
    ) -> ActionValues {
        let c = configuration
        for k in 0..<blockOfTick.count { forecastCache[k] = forecast(k) }
        let free = search(rollout, start: nil, fixedFirst: nil, reward: reward)
        var evaluations = free.evaluations
        var values = [Double](repeating: -.infinity, count: c.actionCount)
        for position in 0..<c.actionCount {
            let action = c.order.map { $0[position] } ?? position
            let p = Double(position)
            var start = free.plan
            start[0] = p
            let found = search(rollout, start: start, fixedFirst: p, reward: reward)
            evaluations += found.evaluations
            values[action] = found.value
        }
        return ActionValues(values: values, bestReturn: free.value, evaluations: evaluations)
    }

    /// The search of docs above: the best of `start` (if any) and every constant plan, then
    /// coordinate descent. With `fixedFirst`, block 0 is held at that position throughout.
    /// Uses `forecastCache` as filled by the caller.
    private mutating func search(_ rollout: any PlantRollout, start: [Double]?, fixedFirst: Double?,
                                 reward: ([Double], [Double], [Double], Int) -> Double) -> (plan: [Double], value: Double, evaluations: Int) {
        let c = configuration
        var evaluations = 0

        // Starting plans: `start` (decide: the last plan shifted one tick), and every constant plan on the grid.
        var best: [Double]
        var bestValue = -Double.infinity
        if let start, start.count == c.blocks.count {
            best = start
            bestValue = evaluate(rollout, plan: start, fromBlock: 0, reward: reward)
            evaluations += 1
        } else {
            best = [Double](repeating: fixedFirst ?? 0, count: c.blocks.count)
        }
        var candidate = best
        for v in positions {
            for b in candidate.indices { candidate[b] = v }
            if let f = fixedFirst { candidate[0] = f }
            let value = evaluate(rollout, plan: candidate, fromBlock: 0, reward: reward)
            evaluations += 1
            if value > bestValue {
                bestValue = value
                best = candidate
            }
        }

        // Coordinate descent over the blocks; the prefix before block b is stepped once.
        let top = Double(c.actionCount - 1)
        for _ in 0..<c.sweeps {
            var changed = false
            var prefix = rollout
            var prefixReturn = 0.0
            var weight = 1.0
            for b in c.blocks.indices {
                // Held: block 0 is neither searched nor moved by the pair searches below.
                let held = fixedFirst != nil && b == 0
                var blockBest = best[b]
                var blockBestValue = bestValue - prefixReturn
                candidate = best
                func tryValue(_ v: Double) {
                    guard v != blockBest else { return }
                    candidate[b] = v
                    let value = evaluate(prefix, plan: candidate, fromBlock: b, reward: reward)
                    evaluations += 1
                    if value > blockBestValue + 1e-12 * max(1, abs(blockBestValue)) {
                        blockBestValue = value
                        blockBest = v
                    }
                }
                if !held {
                    for v in positions { tryValue(v) }
                    if c.relaxed {
                        var step = 0.5 / Double(c.gridPerInterval)
                        for _ in 0..<c.refinements {
                            let centre = blockBest
                            tryValue(max(centre - step, 0))
                            tryValue(min(centre + step, top))
                            step /= 2
                        }
                    }
                }
                if blockBest != best[b] {
                    best[b] = blockBest
                    bestValue = prefixReturn + blockBestValue
                    changed = true
                }
                // Relaxed: move energy between block b and the next (their sum of levels × ticks
                // held), by a pattern search. Blocks inside the dead time act almost alike, so the
                // objective has a valley along this direction where single-block moves stall
                // (seen on the heater: "low now, high next" replanned forever, settling 1.7 K off).
                if held {
                    // Nothing moves block 0.
                } else if c.relaxed && b + 1 < c.blocks.count {
                    let ratio = Double(c.blocks[b]) / Double(c.blocks[b + 1])
                    var value = bestValue - prefixReturn
                    var step = 1.0
                    for _ in 0..<(c.refinements + 4) {
                        var improved = false
                        for sign in stride(from: 1.0, through: -1.0, by: -2.0) {
                            candidate = best
                            candidate[b] = min(max(best[b] + sign * step, 0), top)
                            candidate[b + 1] = min(max(best[b + 1] - (candidate[b] - best[b]) * ratio, 0), top)
                            guard candidate[b] != best[b] || candidate[b + 1] != best[b + 1] else { continue }
                            let v = evaluate(prefix, plan: candidate, fromBlock: b, reward: reward)
                            evaluations += 1
                            if v > value + 1e-12 * max(1, abs(value)) {
                                value = v
                                best = candidate
                                bestValue = prefixReturn + v
                                changed = true
                                improved = true
                                break
                            }
                        }
                        if !improved { step /= 2 }
                    }
                } else if b + 1 < c.blocks.count {
                    // Discrete: every pair of values for block b and the next (the same valley,
                    // in steps of whole levels).
                    var value = bestValue - prefixReturn
                    let (current0, current1) = (best[b], best[b + 1])
                    for v in positions {
                        for w in positions where v != current0 || w != current1 {
                            candidate = best
                            candidate[b] = v
                            candidate[b + 1] = w
                            let x = evaluate(prefix, plan: candidate, fromBlock: b, reward: reward)
                            evaluations += 1
                            if x > value + 1e-12 * max(1, abs(value)) {
                                value = x
                                best[b] = v
                                best[b + 1] = w
                                bestValue = prefixReturn + x
                                changed = true
                            }
                        }
                    }
                }
                // Step the prefix through block b with its chosen value.
                fillMix(best[b])
                for k in blockStart[b]..<(blockStart[b] + c.blocks[b]) {
                    let y = prefix.step(mix: mix, exogenous: forecastCache[k])
                    prefixReturn += weight * reward(y, forecastCache[k], mix, k)
                    weight *= c.discount
                }
            }
            if !changed { break }
        }
        return (best, bestValue, evaluations)
    }

    /// The sigma-delta realisation of a planned position on `order` (0 = the lowest level): the
    /// action whose position is nearest `position + carry`; the difference is carried to the
    /// next call. Over n calls with the same position the applied positions average to it
    /// within 1/n (the carry stays within ±½). Without `order` it returns the nearest action.
    public mutating func realise(position: Double) -> Int {
        let n = configuration.actionCount
        let target = position + carry
        let index = min(max(Int(target.rounded()), 0), n - 1)
        carry = min(max(target - Double(index), -0.5), 0.5)
        return configuration.order.map { $0[index] } ?? index
    }

    /// The last decision's plan: one value per block (positions on `order`, or actions), empty
    /// before the first decision.
    public var lastPlan: [Double] { plan }

    /// Forgets the last plan and the carry (a new episode, or someone else was in control).
    public mutating func reset() {
        plan = []
        carry = 0
    }

    /// Fills `mix` with the action mix of a block value: without `order` the action `position`;
    /// with it the levels at ⌊position⌋ and the next one, weighted by the fraction.
    private mutating func fillMix(_ position: Double) {
        let n = configuration.actionCount
        for i in 0..<n { mix[i] = 0 }
        let p = min(max(position, 0), Double(n - 1))
        guard let order = configuration.order else {
            mix[min(Int(p.rounded()), n - 1)] = 1
            return
        }
        let lo = min(Int(p), max(n - 2, 0))
        let f = p - Double(lo)
        mix[order[lo]] = 1 - f
        if f > 0, lo + 1 < n { mix[order[lo + 1]] += f }
    }

    /// The return of `plan` from block `first` on, starting from `start` (the rollout at the
    /// first tick of that block); discounting counts from tick 0.
    private mutating func evaluate(_ start: any PlantRollout, plan: [Double], fromBlock first: Int,
                                   reward: ([Double], [Double], [Double], Int) -> Double) -> Double {
        let c = configuration
        var r = start
        var total = 0.0
        var k = blockStart[first]
        var weight = c.discount == 1 ? 1 : pow(c.discount, Double(k))
        for b in first..<c.blocks.count {
            fillMix(plan[b])
            for _ in 0..<c.blocks[b] {
                let y = r.step(mix: mix, exogenous: forecastCache[k])
                total += weight * reward(y, forecastCache[k], mix, k)
                weight *= c.discount
                k += 1
            }
        }
        return total
    }
}

/// Why a planner could not be set up. Each case says what to fix.
public enum PlannerError: Error, Equatable, CustomStringConvertible {
    /// The configuration is inconsistent (the message names the field).
    case badConfiguration(String)

    public var description: String {
        switch self {
        case .badConfiguration(let s): return "planner configuration: \(s)"
        }
    }
}
