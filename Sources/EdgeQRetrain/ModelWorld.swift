import EdgeQModel
import EdgeQNet
import EdgeQTopicMap

/// A policy run on the plant model in closed loop, through the mapping (docs/learning.md,
/// "Judging a candidate on the plant model").
///
/// At each simulated tick the mapping's own state (with its history) is assembled from the
/// signals, the policy decides, the model steps with that action, and the reward and end
/// condition come from the mapping's `model` section (`TopicMap.modelRewardSource`). The
/// signals of the model world:
/// - **controlled**: the logged samples up to the start, the model's predictions after it;
/// - **exogenous**: replayed from the log (the segment's own values, also after the start);
/// - **applied**: the value (`SignalConfig.appliedValues`) of the action applied from the
///   previous tick to this one (the logged action before the start, the policy's after it).
///
/// A run starts at sample `start` of a segment: the `history − 1` samples before it fill the
/// state's history, so the first decision sees a real history; it lasts `horizon` steps or
/// until the segment ends (the exogenous signals are known only that far) or the model's end
/// condition holds.
///
/// A network decides as the gateway's decision core does in control: the state must be `.ok`
/// (a predicted value outside a signal's `range`, or a feature beyond the safety margin, makes
/// it unusable), the action mask is the mapping's (with `min_dwell`), the engine's masked
/// greedy action is taken; otherwise the safety policy's response applies — `fallback` applies
/// the fallback action, `hold` keeps the action last applied (the plant keeps its last command;
/// a plant whose own controller takes over on a hold is not modelled).
public struct ModelWorld: Sendable {
    /// Who acts in a run.
    public enum Policy: Sendable {
        /// A Q-network, greedy among the allowed actions, through an engine of `precision`.
        case network(QModel, precision: Precision)
        /// The logged actions, open loop: what the controller in charge did from the same start.
        case logged
        /// The log itself, no model: the logged actions and the logged signals that followed them,
        /// scored with the mapping's model reward and end condition. What the plant really
        /// returned from the start, the measure a run on the model is checked against
        /// (`PretrialEstimate`'s calibration). With a network, `Run.agreement` says on what share
        /// of the steps its greedy choice on the logged state was the logged action (how far the
        /// stretch is that network's own).
        case observed(comparedWith: QModel?, precision: Precision)

        /// The log itself, compared with nothing.
        public static var observed: Policy { .observed(comparedWith: nil, precision: .int8) }
    }

    /// One run's outcome.
    public struct Run: Sendable, Equatable, Codable {
        /// Discounted return Σ γ^i·r(start+1+i) over the run's steps.
        public var discountedReturn: Double
        /// The rewards, one per step (the reward at tick start+1+i, as the model sees it).
        public var rewards: [Double]
        /// The actions applied, one per step.
        public var actions: [Int]
        /// The model's end condition held after the last step.
        public var ended: Bool
        /// Decisions where the safety policy acted instead of the network (unusable state, no
        /// allowed action, non-finite Q-values).
        public var fallbacks: Int
        /// The model's uncertainty (`PlantRollout.uncertainty`) over the steps: mean and largest.
        public var meanUncertainty: Double
        /// See `meanUncertainty`.
        public var maxUncertainty: Double
        /// An `observed` run compared with a network: the share of the steps on which the
        /// network's greedy choice (on the logged state, with the mapping's mask) was the logged
        /// action; nil otherwise.
        public var agreement: Double?

        enum CodingKeys: String, CodingKey {
            case discountedReturn = "discounted_return", rewards, actions, ended, fallbacks
            case meanUncertainty = "mean_uncertainty", maxUncertainty = "max_uncertainty", agreement
        }
    }

    /// The mapping.
    public let map: TopicMap
    /// The fitted plant model.
    public let model: any PlantModel
    /// The log's data the runs start from and replay the exogenous signals of.
    public let data: PlantData
    /// Discount factor (default: the mapping's `learning.gamma`).
    public var gamma: Double

    let controlledSlots: [Int]
    let exogenousSlots: [Int]
    let appliedSlots: [Int]

    /// A world for `map`, `model` and `data`.
    ///
    /// - Throws: `ModelWorldError` `.notApplicable` when the mapping cannot be judged on a
    ///   model (`TopicMap.modelJudging` says why and what to do); `.mismatch` when the data's or
    ///   the model's signals or actions are not the mapping's.
    public init(map: TopicMap, model: any PlantModel, data: PlantData) throws(ModelWorldError) {
        if case .notApplicable(let why) = map.modelJudging { throw ModelWorldError(.notApplicable, why) }
        let names = map.modelSignalNames
        guard data.controlledNames == names.controlled, data.exogenousNames == names.exogenous else {
            throw ModelWorldError(.mismatch, "the plant data's signals (controlled \(data.controlledNames), exogenous \(data.exogenousNames)) are not the mapping's (controlled \(names.controlled), exogenous \(names.exogenous)): read the log with this mapping's PlantDataReader")
        }
        guard data.actionCount == map.actions.count, model.actionCount == map.actions.count,
              model.outputCount == names.controlled.count, model.exogenousCount == names.exogenous.count else {
            throw ModelWorldError(.mismatch, "the plant model (\(model.outputCount) outputs, \(model.exogenousCount) exogenous, \(model.actionCount) actions) or the data (\(data.actionCount) actions) do not fit the mapping (\(names.controlled.count) controlled, \(names.exogenous.count) exogenous, \(map.actions.count) actions): fit the model on this mapping's data")
        }
        for i in map.appliedSignals where map.signals[i].appliedValues.count != map.actions.count {
            throw ModelWorldError(.mismatch, "signal '\(map.signals[i].name)' has no value per action (a mapping built without the loader?)")
        }
        self.map = map
        self.model = model
        self.data = data
        gamma = map.learning.gamma
        controlledSlots = map.modelSignals.controlled
        exogenousSlots = map.modelSignals.exogenous
        appliedSlots = map.appliedSignals
    }

    /// The first sample a run may start at: the model's memory, and the state's history with
    /// the applied action known at each of its ticks.
    public var earliestStart: Int { max(model.memory - 1, map.history, 1) }

    /// Runs `policy` from sample `start` of segment `segment` for at most `horizon` steps.
    ///
    /// - Throws: `ModelWorldError` `.badStart` when the segment does not exist or `start` leaves
    ///   no history before it (`earliestStart`) or no step after it; `.rewardUnavailable` when the
    ///   model reward cannot be evaluated (a non-finite value: the message names the tick).
    public func run(segment si: Int, start: Int, horizon: Int, policy: Policy) throws(ModelWorldError) -> Run {
        guard data.segments.indices.contains(si) else {
            throw ModelWorldError(.badStart, "segment \(si) does not exist (the data have \(data.segments.count))")
        }
        let seg = data.segments[si]
        guard start >= earliestStart, start + 1 < seg.count, horizon >= 1 else {
            throw ModelWorldError(.badStart, "a run needs \(earliestStart) samples before its start and one step after it; segment \(si) has \(seg.count) samples, start \(start), horizon \(horizon)")
        }
        let steps = min(horizon, seg.count - 1 - start)
        var runtime = TopicMapRuntime(map: map)
        var table = SignalTable(for: map)
        let second: UInt64 = 1_000_000_000
        var state = [Float](repeating: 0, count: map.stateWidth)
        var mask = [Bool](repeating: true, count: map.actions.count)
        var q = [Float](repeating: 0, count: map.actions.count)
        var engine: QEngine?
        let network: (QModel, Precision)?
        switch policy {
        case .network(let m, let precision): network = (m, precision)
        case .observed(let m?, let precision): network = (m, precision)
        case .observed(nil, _), .logged: network = nil
        }
        if let (m, precision) = network {
            guard m.inputCount == map.stateWidth, m.actionCount == map.actions.count else {
                throw ModelWorldError(.mismatch, "the network takes \(m.inputCount) inputs and gives \(m.actionCount) actions; the mapping's state has \(map.stateWidth) and \(map.actions.count) actions")
            }
            engine = m.makeEngine(precision)
        }
        var agreed = 0

        func setSignals(_ controlled: [Double], _ exogenous: [Double], applied: Int, tick: Int, checked: Bool) {
            self.setSignals(in: &table, controlled, exogenous, applied: applied, tick: tick, checked: checked)
        }

        // The history before the start, from the log.
        fillHistory(seg, start: start, runtime: &runtime, table: &table, state: &state)

        var rollout = model.rollout(from: seg, at: start)
        var run = Run(discountedReturn: 0, rewards: [], actions: [], ended: false, fallbacks: 0, meanUncertainty: 0, maxUncertainty: 0,
                      agreement: nil)
        var previous = seg.actions[start - 1]
        var discount = 1.0
        for i in 0..<steps {
            let t = start + i
            let now = UInt64(t + 1) * second
            let status = state.withUnsafeMutableBufferPointer { runtime.assembleState(from: table, now: now, wallClock: 0, into: $0) }
            let action: Int
            // The network's greedy choice among the allowed actions, when the state is usable.
            func choice() -> Int? {
                let allowed = mask.withUnsafeMutableBufferPointer { runtime.actionMask(into: $0) }
                guard status == .ok, let engine else { return nil }
                let best = state.withUnsafeBufferPointer { s in q.withUnsafeMutableBufferPointer { engine.bestAction(state: s, mask: mask, qValues: $0) } }
                return allowed > 0 && q.allSatisfy(\.isFinite) ? best : nil
            }
            switch policy {
            case .logged:
                action = seg.actions[t]
            case .observed:
                action = seg.actions[t]
                if engine != nil, choice() == action { agreed += 1 }
            case .network:
                if let choice = choice() {
                    action = choice
                } else {
                    run.fallbacks += 1
                    let response = status == .ok ? SafetyConfig.Response.fallback : (status.response(map.safety) ?? .fallback)
                    action = response == .fallback ? (map.fallbackAction ?? previous) : previous
                }
            }
            runtime.recordApplied(action: action)
            let predicted: [Double], u: Double
            if case .observed = policy {
                predicted = seg.controlled[t + 1]
                u = 0
            } else {
                predicted = rollout.step(action: action, actionCount: map.actions.count, exogenous: seg.exogenous[t])
                u = rollout.uncertainty
            }
            run.meanUncertainty += u
            run.maxUncertainty = max(run.maxUncertainty, u)
            let scored = score(predicted, exogenous: seg.exogenous[t + 1], applied: action, tick: t + 1, runtime: &runtime, table: &table)
            guard let r = scored.reward else {
                throw ModelWorldError(.rewardUnavailable, "the model reward (\(map.modelRewardSource ?? "")) is not a finite number at tick \(t + 1) of segment \(si) (predicted \(predicted)): check the expression and the signals it reads")
            }
            let end = scored.ended
            run.rewards.append(r)
            run.actions.append(action)
            run.discountedReturn += discount * r
            discount *= gamma
            previous = action
            if end {
                run.ended = true
                break
            }
        }
        run.meanUncertainty /= Double(max(run.rewards.count, 1))
        if engine != nil, case .observed = policy { run.agreement = Double(agreed) / Double(max(run.rewards.count, 1)) }
        return run
    }
}

extension ModelWorld {
    /// Writes one simulated tick's signals into `table`: the controlled and exogenous values and
    /// the applied value of action `applied`, stamped at second `tick + 1`; `checked` checks each
    /// against its signal's `range` as decoded values are.
    func setSignals(in table: inout SignalTable, _ controlled: [Double], _ exogenous: [Double], applied: Int, tick: Int, checked: Bool) {
        let now = UInt64(tick + 1) * 1_000_000_000
        for (k, s) in controlledSlots.enumerated() { table.set(signal: s, value: controlled[k], time: now, in: map, checkRange: checked) }
        for (k, s) in exogenousSlots.enumerated() { table.set(signal: s, value: exogenous[k], time: now, in: map, checkRange: checked) }
        for s in appliedSlots { table.set(signal: s, value: map.signals[s].appliedValues[applied], time: now, in: map, checkRange: checked) }
    }

    /// Scores one simulated step: the signals predicted for `tick` (after action `applied`)
    /// are set as they are — a prediction beyond a signal's range still has a reward — and the
    /// mapping's model reward (nil: not a finite number) and end condition are evaluated on them;
    /// then the same signals are set again checked like decoded ones, for the next decision's state.
    func score(_ predicted: [Double], exogenous: [Double], applied: Int, tick: Int, runtime: inout TopicMapRuntime,
               table: inout SignalTable) -> (reward: Double?, ended: Bool) {
        setSignals(in: &table, predicted, exogenous, applied: applied, tick: tick, checked: false)
        runtime.refresh(from: table, now: UInt64(tick + 1) * 1_000_000_000)
        let reward = runtime.modelReward()
        let ended = runtime.modelTerminal() ?? false
        setSignals(in: &table, predicted, exogenous, applied: applied, tick: tick, checked: true)
        return (reward, ended)
    }

    /// The (segment, sample) pairs a closed-loop run may start at: a history before it
    /// (`earliestStart`), a step after it, and not among the newest `heldOutSamples` samples of
    /// the data (those of the rows a retraining holds out for its checks).
    public func eligibleStarts(heldOutSamples: Int) -> [(segment: Int, start: Int)] {
        let limit = data.sampleCount - max(heldOutSamples, 0)
        var out: [(Int, Int)] = []
        var before = 0
        for (si, seg) in data.segments.enumerated() {
            if earliestStart < seg.count - 1 {
                for k in earliestStart..<(seg.count - 1) where before + k < limit { out.append((si, k)) }
            }
            before += seg.count
        }
        return out
    }

    /// What a closed-loop run on the model starts from at sample `start` of `seg`: the mapping's
    /// runtime and signal table with the logged history filled in (`fillHistory`), and the
    /// buffers a decision uses (the state, the action mask, the Q-values).
    func loopStart(_ seg: PlantSegment, at start: Int)
        -> (runtime: TopicMapRuntime, table: SignalTable, state: [Float], mask: [Bool], q: [Float]) {
        var runtime = TopicMapRuntime(map: map)
        var table = SignalTable(for: map)
        var state = [Float](repeating: 0, count: map.stateWidth)
        fillHistory(seg, start: start, runtime: &runtime, table: &table, state: &state)
        let A = map.actions.count
        return (runtime, table, state, [Bool](repeating: true, count: A), [Float](repeating: 0, count: A))
    }

    /// Fills the mapping's state history before sample `start` of `seg` from the log (as a run
    /// does) and sets the start's own signals.
    func fillHistory(_ seg: PlantSegment, start: Int, runtime: inout TopicMapRuntime, table: inout SignalTable, state: inout [Float]) {
        for k in max(1, start - map.history + 1)..<start {
            setSignals(in: &table, seg.controlled[k], seg.exogenous[k], applied: seg.actions[k - 1], tick: k, checked: true)
            _ = state.withUnsafeMutableBufferPointer { runtime.assembleState(from: table, now: UInt64(k + 1) * 1_000_000_000, wallClock: 0, into: $0) }
            runtime.recordApplied(action: seg.actions[k])
        }
        setSignals(in: &table, seg.controlled[start], seg.exogenous[start], applied: seg.actions[start - 1], tick: start, checked: true)
    }
}

/// Why the model world cannot run. Each message says what to do.
public struct ModelWorldError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: Sendable, Equatable {
        /// The mapping reads signals without a role where the model world needs them.
        case notApplicable
        /// The data, model or network do not fit the mapping.
        case mismatch
        /// The start leaves no history or no step.
        case badStart
        /// The model reward could not be evaluated.
        case rewardUnavailable
    }

    /// What went wrong.
    public let kind: Kind
    /// The explanation, with what to do.
    public let message: String

    init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
