import EdgeQModel
import EdgeQTopicMap
import Synchronization

extension PlanTeacher {
    /// A teacher for any mapping (docs/learning.md, "Distillation in retraining"): the reward is
    /// the mapping's own `model` reward (`TopicMap.modelRewardSource`) evaluated through a
    /// `TopicMapRuntime` on the predicted signals, as `ModelWorld` evaluates it — the controlled
    /// signals predicted, the exogenous ones as the planner's forecast gives them, each `applied`
    /// signal set to the step's action mix of its per-action values (`SignalConfig.appliedValues`;
    /// a one-hot mix gives the action's own value).
    ///
    /// The planner: doubling move blocks over `horizon` ticks. When an applied signal has a
    /// different value for every action (the actions are levels of one quantity: stages, a
    /// valve's positions), the actions are ordered by that value and blocks may take any
    /// average level between neighbouring actions (the relaxation of docs/learning.md, "The
    /// planner and the limit"); otherwise blocks take the discrete actions.
    ///
    /// - Throws: `PlanTeacherError` when the mapping cannot be judged on a model (its
    ///   `model_judging` says why and what to do) or the horizon is below 1.
    public init(map: TopicMap, model: any PlantModel, horizon: Int) throws(PlanTeacherError) {
        if case .notApplicable(let why) = map.modelJudging { throw PlanTeacherError(why) }
        guard map.modelRewardSource != nil else {
            throw PlanTeacherError("the mapping has no model reward: give 'model: {reward: …}' over signals with a role (docs/mapping.md, \"model\")")
        }
        guard horizon >= 1 else { throw PlanTeacherError("the teacher's horizon must be at least 1 tick, found \(horizon)") }
        let A = map.actions.count
        for i in map.appliedSignals where map.signals[i].appliedValues.count != A {
            throw PlanTeacherError("signal '\(map.signals[i].name)' has no value per action (a mapping built without the loader?)")
        }
        let order = Self.levelOrder(map)
        let configuration = RecedingHorizonPlanner.Configuration(
            blocks: RecedingHorizonPlanner.Configuration.doublingBlocks(horizon: horizon), actionCount: A,
            order: order, relaxed: order != nil)
        let evaluator = MappingReward(map: map)
        self.init(map: map, model: model, configuration: configuration, reward: { y, e, mix, _ in evaluator.reward(y, e, mix) })
    }

    /// The actions ordered by the values of the first applied signal that gives every action a
    /// different value (lowest first); nil when none does.
    static func levelOrder(_ map: TopicMap) -> [Int]? {
        for i in map.appliedSignals {
            let v = map.signals[i].appliedValues
            guard v.count == map.actions.count, v.count > 1, Set(v).count == v.count, v.allSatisfy(\.isFinite) else { continue }
            return v.indices.sorted { v[$0] < v[$1] }
        }
        return nil
    }
}

/// The mapping's model reward on predicted signals, shared by the planner's calls: one runtime
/// and signal table behind a mutex (a teacher is used by one thread at a time; the lock keeps
/// the closure `@Sendable` without copying the runtime per call).
final class MappingReward: Sendable {
    let expression: CompiledExpression?
    let controlled: [Int], exogenous: [Int], applied: [(signal: Int, values: [Double])]
    /// Slot i holds signal i's value (the expression reads only signals with a role).
    let slots: Mutex<[Double]>

    init(map: TopicMap) {
        expression = map.modelRewardExpression
        controlled = map.modelSignals.controlled
        exogenous = map.modelSignals.exogenous
        applied = map.appliedSignals.map { ($0, map.signals[$0].appliedValues) }
        let width = max(map.signals.count, (expression?.slots.max() ?? -1) + 1)
        slots = Mutex([Double](repeating: .nan, count: width))
    }

    /// The reward of a step: `controlled` predicted at its end, `exogenous` during it, `mix`
    /// the action mix (one weight per action); −∞ when the expression cannot be evaluated (a
    /// signal it reads is not finite, or its result is not: the planner then avoids the plan).
    /// The values are taken as they are, without a range check, as `ModelWorld` evaluates the
    /// reward of a prediction beyond a signal's range.
    func reward(_ y: [Double], _ e: [Double], _ mix: [Double]) -> Double {
        guard let expression else { return -.infinity }
        return slots.withLock { v in
            for (k, i) in controlled.enumerated() where k < y.count { v[i] = y[k] }
            for (k, i) in exogenous.enumerated() where k < e.count { v[i] = e[k] }
            for (i, values) in applied {
                var x = 0.0
                for a in 0..<min(mix.count, values.count) { x += mix[a] * values[a] }
                v[i] = x
            }
            for s in expression.slots where !v[s].isFinite { return -.infinity }
            let r = v.withUnsafeBufferPointer { b in b.baseAddress.map { expression.evaluate($0) } ?? .nan }
            return r.isFinite ? r : -.infinity
        }
    }
}

/// Why a teacher cannot be built for a mapping; the message says what to do.
public struct PlanTeacherError: Error, Sendable, CustomStringConvertible {
    /// What is wrong and what to do.
    public let description: String
    init(_ description: String) { self.description = description }
}
