import EdgeQCore
import EdgeQModel
import EdgeQNet
import EdgeQTopicMap

/// The states a distilled student visits when it decides on the plant model (DAgger on the
/// model: docs/learning.md, "The student's own states in retraining"). A student trained on the
/// incumbent's logged states alone meets states the log never shows as soon as it acts (its own
/// stage patterns, its own way onto a setpoint); the teacher values those states too, and the
/// student is trained again on them.
///
/// Each run starts at a logged sample of the training part of the plant data, with the logged
/// history before it, and the student decides as the gateway's decision core does in control
/// (`ModelWorld.run`'s `.network` policy: the mapping's state and mask, the engine's masked
/// greedy action); the model steps, the exogenous signals are the log's. A run ends at its
/// horizon, where the logged stretch ends, at the model's end condition, or at a state the
/// gateway would not decide on (unusable, no allowed action, non-finite values: the safety
/// policy would act there, not the student).
public struct StudentVisits: Sendable {
    /// One visited state: what the student saw and where the model was.
    public struct Visit: Sendable {
        /// The mapping's state (the network's input) at the visit.
        public var state: [Float]
        /// The model's rollout at the visit (a value: the teacher branches from it).
        public var rollout: any PlantRollout
        /// The exogenous signals at the visit (the teacher holds them over its horizon, but for
        /// the `forecast: schedule` ones).
        public var exogenous: [Double] { exogenousAhead[sample] }
        /// The logged exogenous signals of the visit's stretch (shared storage, not a copy) and
        /// the visit's sample in it: the teacher reads the scheduled signals ahead from them.
        public var exogenousAhead: [[Double]]
        /// See `exogenousAhead`.
        public var sample: Int
    }

    /// The world the student runs in.
    public let world: ModelWorld

    /// Visits on `world`.
    public init(world: ModelWorld) {
        self.world = world
    }

    /// Runs `student` from `runs` starts drawn (with replacement) from the training part of the
    /// data (`ModelWorld.eligibleStarts`: never among the newest `heldOutSamples` samples) for
    /// up to `horizon` steps each, and keeps every `every`-th state after the start (the start
    /// itself is a logged state, valued with the log), at most `limit` in all.
    ///
    /// - Parameter shouldStop: polled between runs; the visits so far are returned.
    /// - Returns: the visits in run order; empty when no sample can start a run or the network
    ///   does not fit the mapping.
    public func visits(student: QModel, precision: Precision, runs: Int, horizon: Int, every: Int, limit: Int,
                       heldOutSamples: Int, seed: UInt64, shouldStop: () -> Bool = { false }) -> [Visit] {
        let map = world.map
        guard student.inputCount == map.stateWidth, student.actionCount == map.actions.count, horizon >= 1, limit > 0 else { return [] }
        let starts = world.eligibleStarts(heldOutSamples: heldOutSamples)
        guard !starts.isEmpty else { return [] }
        let engine = student.makeEngine(precision)
        var rng = SeededGenerator(seed: seed ^ 0xDA66_E5)
        var out: [Visit] = []
        for _ in 0..<max(runs, 0) {
            if shouldStop() || out.count >= limit { break }
            let (si, start) = starts[Int.random(in: 0..<starts.count, using: &rng)]
            run(segment: si, start: start, engine: engine, horizon: horizon, every: max(every, 1), limit: limit, into: &out)
        }
        return out
    }

    /// One run from sample `start` of segment `si`, its visits appended to `out`.
    func run(segment si: Int, start: Int, engine: QEngine, horizon: Int, every: Int, limit: Int, into out: inout [Visit]) {
        let map = world.map
        let seg = world.data.segments[si]
        let A = map.actions.count
        let steps = min(horizon, seg.count - 1 - start)
        var (runtime, table, state, mask, q) = world.loopStart(seg, at: start)
        let second: UInt64 = 1_000_000_000
        var rollout = world.model.rollout(from: seg, at: start)
        for i in 0..<max(steps, 0) {
            let t = start + i
            let status = state.withUnsafeMutableBufferPointer { runtime.assembleState(from: table, now: UInt64(t + 1) * second, wallClock: 0, into: $0) }
            let allowed = mask.withUnsafeMutableBufferPointer { runtime.actionMask(into: $0) }
            guard status == .ok, allowed > 0 else { return }
            let best = state.withUnsafeBufferPointer { s in q.withUnsafeMutableBufferPointer { engine.bestAction(state: s, mask: mask, qValues: $0) } }
            guard let action = best, q.allSatisfy(\.isFinite) else { return }
            if i > 0, i % every == 0 {
                out.append(Visit(state: state, rollout: rollout, exogenousAhead: seg.exogenous, sample: t))
                if out.count >= limit { return }
            }
            runtime.recordApplied(action: action)
            let predicted = rollout.step(action: action, actionCount: A, exogenous: seg.exogenous[t])
            guard predicted.allSatisfy(\.isFinite) else { return }
            let scored = world.score(predicted, exogenous: seg.exogenous[t + 1], applied: action, tick: t + 1, runtime: &runtime, table: &table)
            guard scored.reward != nil, !scored.ended else { return }
        }
    }
}

extension PlanTeacher {
    /// The teacher's values of each visited state (`StudentVisits`): the planner from the
    /// visit's rollout, the exogenous signals forecast as for a logged row (held at the visit's,
    /// the `forecast: schedule` ones read ahead in the log). `exogenousNames`: the order of the
    /// visits' exogenous signals (their plant data's). `shouldStop` is polled before each state;
    /// the states valued so far are returned.
    ///
    /// - Throws: `PlannerError` for a bad planner configuration.
    public func values(of visits: [StudentVisits.Visit], exogenousNames: [String],
                       shouldStop: () -> Bool = { false }) throws -> [Distillation.Example] {
        var planner = try RecedingHorizonPlanner(configuration)
        var out: [Distillation.Example] = []
        out.reserveCapacity(visits.count)
        let scheduled = scheduledSignals(exogenousNames)
        for v in visits {
            if shouldStop() { break }
            let values = planner.actionValues(from: v.rollout, forecast: Self.forecast(v.exogenousAhead, at: v.sample, scheduled: scheduled),
                                              reward: reward).values
            out.append(Distillation.Example(state: v.state, values: values))
        }
        return out
    }
}
