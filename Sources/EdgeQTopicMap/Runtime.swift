// The per-tick part: state vector, reward, terminal, action mask, actuator writes.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Whether the state assembled at a tick can be used for a decision.
public enum StateStatus: Sendable, Equatable {
    /// Every feature is valid and within distribution.
    case ok
    /// A signal the state needs is older than its `max_age` (index into `TopicMap.signals`).
    case stale(signal: Int)
    /// A signal the state needs is missing or was rejected (index into `TopicMap.signals`).
    case invalid(signal: Int)
    /// A derived feature evaluated to a non-finite value (index into `TopicMap.features`).
    case invalidFeature(feature: Int)
    /// A range-normalised feature is beyond ±(1 + `safety.ood_margin`) (index into `TopicMap.features`).
    case outOfDistribution(feature: Int)
    /// The hand/auto override says the plant is in hand: EdgeQ must publish nothing.
    case handOverride

    /// What the safety policy says to do instead of deciding; nil for `.ok`.
    public func response(_ safety: SafetyConfig) -> SafetyConfig.Response? {
        switch self {
        case .ok: return nil
        case .stale: return safety.onStale
        case .invalid, .invalidFeature: return safety.onInvalid
        case .outOfDistribution: return safety.onOOD
        case .handOverride: return .hold
        }
    }
}

/// One message to publish for an action.
public struct ActuatorWrite: Sendable, Equatable {
    /// The topic to publish to.
    public var topic: String
    /// The rendered payload.
    public var payload: [UInt8]
    /// MQTT QoS.
    public var qos: Int
    /// MQTT retain flag.
    public var retain: Bool

    /// A write of `payload` to `topic`.
    public init(topic: String, payload: [UInt8], qos: Int, retain: Bool) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

/// The mutable per-tick evaluation of a `TopicMap`: owned by one thread (the decision loop).
/// Sized once; `assembleState`, `reward`, `terminal`, `truncated` and `actionMask` allocate
/// nothing; `render` allocates only when the output buffer must grow.
public struct TopicMapRuntime: Sendable {
    /// The mapping this runtime evaluates.
    public let map: TopicMap
    var slots: [Double]
    var slotValid: [Bool]
    var current: [Float]
    var ring: [Float]
    var ringHead = 0
    var ringFill = 0
    var learnedMean: [Float]
    var learnedStd: [Float]
    var lastAction: Int?
    var ticksSinceChange = Int.max / 2
    /// Expression evaluations (reward, terminal, derived features, masks, values) that gave a
    /// non-finite result (division by zero, log of 0, …) and were treated as invalid.
    public private(set) var invalidExpressionCount = 0

    /// A runtime for `map`, with empty history.
    public init(map: TopicMap) {
        self.map = map
        slots = [Double](repeating: .nan, count: map.slotCount)
        slotValid = [Bool](repeating: false, count: map.slotCount)
        current = [Float](repeating: 0, count: map.featureWidth)
        ring = [Float](repeating: 0, count: map.featureWidth * map.history)
        learnedMean = [Float](repeating: 0, count: map.featureWidth)
        learnedStd = [Float](repeating: 1, count: map.featureWidth)
    }

    /// Freezes the learned normalisation (`normalize: learned`) from a model: per column of one
    /// tick's features, `(x - mean) / std`. Columns of other features are ignored.
    /// Lengths must equal `map.featureWidth`; std values ≤ 0 are treated as 1.
    public mutating func setLearnedStatistics(mean: [Float], std: [Float]) {
        precondition(mean.count == map.featureWidth && std.count == map.featureWidth, "statistics need featureWidth entries")
        learnedMean = mean
        learnedStd = std.map { $0 > 0 && $0.isFinite ? $0 : 1 }
    }

    /// Forgets the history (call at an episode boundary, so no state mixes two episodes).
    public mutating func resetHistory() { ringFill = 0; ringHead = 0 }

    /// Copies the signals from `table` (marking stale ones invalid) and evaluates the derived
    /// features. `assembleState` calls it; call it yourself to evaluate a reward without a state.
    public mutating func refresh(from table: SignalTable, now: UInt64) {
        let ages = map.maxAgeNs
        for i in 0..<ages.count {
            var ok = table.statusCode[i] == 1
            if ok, now >= table.times[i], now - table.times[i] > ages[i] { ok = false }
            slots[i] = table.values[i]
            slotValid[i] = ok
        }
        let list = map.expressionFeatures
        guard !list.isEmpty else { return }
        let exprs = map.featureExprs, exprIndex = map.featureExprIndex, fslots = map.featureSlot
        for fi in list {
            let (v, ok) = evaluate(exprs[exprIndex[fi]])
            slots[fslots[fi]] = v
            slotValid[fslots[fi]] = ok
        }
    }

    @inline(__always) mutating func evaluate(_ c: CompiledExpression) -> (Double, Bool) {
        for s in c.slots where !slotValid[s] { return (.nan, false) }
        let v = slots.withUnsafeBufferPointer { b -> Double in
            guard let base = b.baseAddress else { return .nan }  // no slots: nothing to read
            return c.evaluate(base)
        }
        if v.isFinite { return (v, true) }
        invalidExpressionCount += 1
        return (.nan, false)
    }

    /// Writes the values of the signals with a role (`map.loggedSignals`, in order) as of the
    /// last `refresh`/`assembleState` into `out` (`map.loggedSignals.count` entries): the decoded
    /// value (after `scale` and `offset`; a bool as 0/1), or NaN when the signal is missing,
    /// invalid or stale. Allocates nothing.
    public func loggedSignalValues(into out: UnsafeMutableBufferPointer<Double>) {
        let list = map.loggedSignals
        precondition(out.count == list.count, "the buffer needs one entry per signal with a role")
        for (k, i) in list.enumerated() { out[k] = slotValid[i] ? slots[i] : .nan }
    }

    /// Builds the state vector for this tick into `out` (`map.stateWidth` floats: this tick's
    /// features first, then the previous ticks', newest first; until `history` ticks have been
    /// seen the oldest available tick is repeated) and says whether it can be trusted.
    ///
    /// - Parameters:
    ///   - table: the signal table the decoder fills.
    ///   - now: monotonic time in ns (the same clock as `decode`'s `time`), for staleness.
    ///   - wallClock: seconds since 1970 (for `time:` features, in the device's local time).
    /// - Returns: `.ok`, or the first reason (in feature order) the state cannot be used. The
    ///   history advances only for `.ok` and `.outOfDistribution` states.
    public mutating func assembleState(
        from table: SignalTable, now: UInt64, wallClock: Double, into out: UnsafeMutableBufferPointer<Float>
    ) -> StateStatus {
        precondition(out.count == map.stateWidth, "the state buffer must hold map.stateWidth floats")
        refresh(from: table, now: now)
        if let h = map.handOverride {
            let (v, ok) = evaluate(h)
            if !ok || v != 0 { return .handOverride }
        }
        var col = 0
        var ood: Int?
        let oodLimit = map.safety.oodMargin.map { 1 + $0 } ?? .infinity
        // Local copies of the map's arrays: one retain each per tick instead of one per access.
        let kinds = map.featureKind, fslots = map.featureSlot, depStart = map.featureDepStart, deps = map.featureDeps
        let normKind = map.normKind, normLo = map.normLo, normSpan = map.normSpan
        for fi in 0..<kinds.count {
            for d in depStart[fi]..<depStart[fi + 1] where !slotValid[deps[d]] {
                let s = deps[d]
                if table.statusCode[s] == 1 || table.statusCode[s] == SignalTable.staleCode { return .stale(signal: s) }
                return .invalid(signal: s)
            }
            switch kinds[fi] {
            case 0: current[col] = Float(slots[fslots[fi]]); col += 1
            case 1:
                guard slotValid[fslots[fi]] else { return .invalidFeature(feature: fi) }
                current[col] = Float(slots[fslots[fi]]); col += 1
            case 2:
                let (v, ok) = evaluate(map.featureExprs[map.featureExprIndex[fi]])
                guard ok else { return .invalidFeature(feature: fi) }
                let a = 2 * Double.pi * v / map.featurePeriod[fi]
                current[col] = Float(sin(a)); current[col + 1] = Float(cos(a)); col += 2
                continue
            default:
                var t = time_t(wallClock.rounded(.down))
                var tmv = tm()
                localtime_r(&t, &tmv)
                let dayFraction = (Double(tmv.tm_hour) * 3600 + Double(tmv.tm_min) * 60 + Double(tmv.tm_sec)) / 86400
                let a: Double
                if kinds[fi] == 3 { a = 2 * Double.pi * dayFraction } else { a = 2 * Double.pi * (Double(tmv.tm_wday) + dayFraction) / 7 }
                current[col] = Float(sin(a)); current[col + 1] = Float(cos(a)); col += 2
                continue
            }
            switch normKind[fi] {
            case 1:
                let x = 2 * (Double(current[col - 1]) - normLo[fi]) / normSpan[fi] - 1
                current[col - 1] = Float(x)
                if ood == nil, Swift.abs(x) > oodLimit { ood = fi }
            case 2:
                current[col - 1] = (current[col - 1] - learnedMean[col - 1]) / learnedStd[col - 1]
            default: break
            }
        }
        // Push this tick into the history ring and write out newest first.
        let w = map.featureWidth
        let k = map.history
        ringHead = (ringHead + k - 1) % k
        for j in 0..<w { ring[ringHead * w + j] = current[j] }
        ringFill = Swift.min(ringFill + 1, k)
        for h in 0..<k {
            let src = (ringHead + Swift.min(h, ringFill - 1)) % k
            for j in 0..<w { out[h * w + j] = ring[src * w + j] }
        }
        if let ood { return .outOfDistribution(feature: ood) }
        return .ok
    }

    /// The reward expression over the values of the last `refresh`/`assembleState`; nil when a
    /// signal it reads is invalid or stale, or the result is not finite (counted).
    public mutating func reward() -> Double? {
        let (v, ok) = evaluate(map.reward)
        return ok ? v : nil
    }

    /// The terminal expression (plant reached an end state: no bootstrap); false when the
    /// mapping has none; nil when it cannot be evaluated.
    public mutating func terminal() -> Bool? {
        guard let t = map.terminal else { return false }
        let (v, ok) = evaluate(t)
        return ok ? v != 0 : nil
    }

    /// The reward as the plant model sees it (`map.modelRewardSource`) over the values of the
    /// last `refresh`/`assembleState`; nil when the mapping's model judging is not applicable,
    /// a signal it reads is invalid, or the result is not finite (counted).
    public mutating func modelReward() -> Double? {
        guard let c = map.model.reward else { return nil }
        let (v, ok) = evaluate(c)
        return ok ? v : nil
    }

    /// The end condition as the plant model sees it (`map.modelTerminalSource`); false when
    /// there is none; nil when it cannot be evaluated.
    public mutating func modelTerminal() -> Bool? {
        guard let t = map.model.terminal else { return false }
        let (v, ok) = evaluate(t)
        return ok ? v != 0 : nil
    }

    /// The truncated expression (time limit or outside reset: bootstrap as usual); false when
    /// the mapping has none; nil when it cannot be evaluated.
    public mutating func truncated() -> Bool? {
        guard let t = map.truncated else { return false }
        let (v, ok) = evaluate(t)
        return ok ? v != 0 : nil
    }

    /// Writes the action mask into `mask` (`map.actions.count` entries): an action is allowed
    /// when its `allowed` condition is true (an invalid condition forbids it) and, while the
    /// minimum dwell since the last change has not passed, only the current action is allowed.
    /// - Returns: how many actions are allowed.
    @discardableResult
    public mutating func actionMask(into mask: UnsafeMutableBufferPointer<Bool>) -> Int {
        precondition(mask.count == map.actions.count, "the mask needs one entry per action")
        var n = 0
        let dwelling = map.minDwell > 0 && lastAction != nil && ticksSinceChange < map.minDwell
        for i in 0..<mask.count {
            var ok = true
            if dwelling && i != lastAction { ok = false }
            if ok, let c = map.allowed[i] {
                let (v, valid) = evaluate(c)
                ok = valid && v != 0
            }
            mask[i] = ok
            if ok { n += 1 }
        }
        return n
    }

    /// Records the action applied at this tick (nil: hold, nothing published), for `min_dwell`.
    public mutating func recordApplied(action: Int?) {
        if let a = action, a != lastAction {
            lastAction = a
            ticksSinceChange = 0
        } else if ticksSinceChange < Int.max / 2 {
            ticksSinceChange += 1
        }
    }

    /// Appends the payload of write `write` of action `action` to `buffer` (which you may reuse:
    /// `removeAll(keepingCapacity: true)` first). Allocates only when `buffer` must grow.
    /// - Returns: false (buffer unchanged) when a value or placeholder is invalid: hold instead.
    public mutating func render(action: Int, write: Int, into buffer: inout [UInt8], model: Int? = nil) -> Bool {
        let w = map.writes[action][write]
        var value = 0.0
        if let c = w.value {
            let (v, ok) = evaluate(c)
            guard ok else { return false }
            value = v
        }
        for s in w.template.slots where !slotValid[s] { return false }
        let mark = buffer.count
        let ok = slots.withUnsafeBufferPointer { b -> Bool in
            guard let base = b.baseAddress else { return false }
            return w.template.render(into: &buffer, value: value, action: action, actionName: map.actionNames[action], model: model, slots: base)
        }
        if !ok { buffer.removeSubrange(mark...) }
        return ok
    }

    /// The messages to publish for `action` (empty for an action that publishes nothing), or
    /// nil when one cannot be rendered (an invalid value): hold instead.
    public mutating func writes(for action: Int) -> [ActuatorWrite]? {
        var out: [ActuatorWrite] = []
        for (j, w) in map.writes[action].enumerated() {
            var buf: [UInt8] = []
            buf.reserveCapacity(64)
            guard render(action: action, write: j, into: &buf) else { return nil }
            out.append(ActuatorWrite(topic: w.topic, payload: buf, qos: w.qos, retain: w.retain))
        }
        return out
    }
}
