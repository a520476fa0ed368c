// The compiled mapping and the per-message hot path: topic → signals.

/// Why a signal's value was rejected. The gateway exposes one counter per reason
/// (`metricName`).
public enum DecodeFailure: Int, Sendable, CaseIterable, CustomStringConvertible {
    /// The payload is not valid JSON (or nests deeper than 64 levels).
    case invalidJSON
    /// The JSON path is not in the payload.
    case missingField
    /// The value at the path has the wrong JSON type (e.g. a string for a number).
    case wrongType
    /// A raw payload is not a number (or not a boolean word, for a bool signal).
    case notANumber
    /// The number is NaN or infinite (also after scale and offset).
    case nonFinite
    /// The value is outside the signal's valid range.
    case outOfRange
    /// The payload is larger than `gateway.max_payload`.
    case oversize
    /// An enum signal received a string that is not in its `values`.
    case unknownEnumValue
    /// The payload is valid JSON syntax but an object names the same key twice (at any depth):
    /// which of the two values is meant is not defined (RFC 8259), so neither is taken.
    case duplicateKey

    /// The Prometheus label value for this reason.
    public var metricName: String {
        switch self {
        case .invalidJSON: return "invalid_json"
        case .missingField: return "missing_field"
        case .wrongType: return "wrong_type"
        case .notANumber: return "not_a_number"
        case .nonFinite: return "non_finite"
        case .outOfRange: return "out_of_range"
        case .oversize: return "oversize"
        case .unknownEnumValue: return "unknown_enum_value"
        case .duplicateKey: return "duplicate_key"
        }
    }
    /// The metric label.
    public var description: String { metricName }
}

/// The state of one signal in a `SignalTable`.
public enum SignalStatus: Sendable, Equatable {
    /// No message carried it yet.
    case missing
    /// The last message gave a valid value.
    case valid
    /// Its source said the value is gone (a Sparkplug NDEATH or DDEATH), or it cannot be trusted
    /// until the source is born again (a Sparkplug sequence gap or unknown alias): stale at
    /// once, whatever its `max_age`.
    case stale
    /// The last message was rejected, for this reason.
    case invalid(DecodeFailure)
}

/// The latest value of every signal, written by `TopicMap.decode` and read at each tick.
/// Sized once for a map; decoding allocates nothing.
///
/// Use a table only with the map it was made for (its indices are that map's signal indices).
public struct SignalTable: Sendable {
    /// The latest value per signal (NaN when missing or invalid).
    public internal(set) var values: [Double]
    /// Monotonic time (ns) of the last message for each signal, valid or not.
    public internal(set) var times: [UInt64]
    var statusCode: [UInt8]   // 0 missing, 1 valid, 2+reason invalid, staleCode stale
    /// The status code of a signal its source declared gone (`markStale`).
    static let staleCode: UInt8 = 255
    var failures: [Int]
    var captures: [JSONCapture]
    /// Messages whose topic matched no signal.
    public internal(set) var unroutedMessages = 0

    /// A table for `map`'s signals, all missing.
    public init(for map: TopicMap) {
        let n = map.signals.count
        values = [Double](repeating: .nan, count: n)
        times = [UInt64](repeating: 0, count: n)
        statusCode = [UInt8](repeating: 0, count: n)
        failures = [Int](repeating: 0, count: DecodeFailure.allCases.count)
        captures = [JSONCapture](repeating: JSONCapture(), count: max(1, map.routes.map(\.signals.count).max() ?? 1))
    }

    /// The status of signal `index` (an index into `TopicMap.signals`).
    public func status(of index: Int) -> SignalStatus {
        let c = statusCode[index]
        if c == 0 { return .missing }
        if c == 1 { return .valid }
        if c == Self.staleCode { return .stale }
        return .invalid(DecodeFailure(rawValue: Int(c) - 2) ?? .invalidJSON)
    }

    /// How many signal values were rejected for `reason` since the table was made.
    public func count(_ reason: DecodeFailure) -> Int { failures[reason.rawValue] }

    /// Sets signal `index` (an index into `TopicMap.signals`) to `value`, already decoded (after
    /// `scale` and `offset`), at monotonic time `time` (ns), checked like a decoded value: NaN or
    /// infinite is `nonFinite`, outside the signal's `range` is `outOfRange` (both counted; with
    /// `checkRange` false a value outside the range is taken). For callers that own the signal
    /// values themselves, such as the plant model's world, where a predicted temperature is a
    /// signal as if the plant had published it.
    public mutating func set(signal index: Int, value: Double, time: UInt64, in map: TopicMap, checkRange: Bool = true) {
        guard value.isFinite else { reject(index, .nonFinite, time: time); return }
        if checkRange, value < map.lo[index] || value > map.hi[index] { reject(index, .outOfRange, time: time); return }
        values[index] = value
        statusCode[index] = 1
        times[index] = time
    }

    /// Marks signal `index` stale at once (its value is dropped, whatever its `max_age`): its
    /// source said it is gone. A decision that needs it meets `.stale` and the safety policy's
    /// `on_stale`. The next value makes it valid again. Allocates nothing.
    public mutating func markStale(signal index: Int, time: UInt64) {
        values[index] = .nan
        statusCode[index] = Self.staleCode
        times[index] = time
    }

    /// Marks signal `index` invalid for `reason` (counted), for decoders outside the topic map
    /// (the Sparkplug B decoder). Allocates nothing.
    public mutating func reject(signal index: Int, _ reason: DecodeFailure, time: UInt64) {
        reject(index, reason, time: time)
    }

    @inline(__always) mutating func reject(_ s: Int, _ reason: DecodeFailure, time: UInt64) {
        values[s] = .nan
        statusCode[s] = UInt8(2 + reason.rawValue)
        times[s] = time
        failures[reason.rawValue] += 1
    }
}

/// One topic (or `+` filter) and the signals it carries.
struct Route: Sendable {
    let filter: String
    let isWildcard: Bool
    /// Signal indices; capture `k` of the extractor belongs to `signals[k]`.
    let signals: [Int]
    /// nil for a raw payload.
    let extractor: JSONExtractor?
}

/// How a feature column is computed at each tick.
enum FeatureEval: Sendable {
    case slot(Int)
    case expression(CompiledExpression, slot: Int)
    case cyclic(CompiledExpression, period: Double)
    case timeOfDay
    case dayOfWeek
}

/// The `model` section, compiled: the reward and end condition as the plant model sees them.
struct ModelObjective: Sendable {
    /// nil: not applicable (see `judging`).
    var reward: CompiledExpression?
    /// nil: no end condition (or not applicable).
    var terminal: CompiledExpression?
    var judging: ModelJudging = .notApplicable("no model section was compiled")
    /// `model.classes`: the classes the fit tries, in the selection's order; nil: all.
    var classes: [PlantModelClassName]?
}

/// One compiled actuator write.
struct CompiledWrite: Sendable {
    let topic: String
    let template: PayloadTemplate
    let value: CompiledExpression?
    let qos: Int
    let retain: Bool
}

/// A validated, compiled mapping file: what EdgeQ reads, how it builds the state, what it
/// may do and how it learns. Immutable and `Sendable`; the per-tick mutable part is
/// `TopicMapRuntime`, the per-message one `SignalTable`.
///
/// Make one with `TopicMap.load(path:)` or `TopicMap.parse(yaml:file:)`.
public struct TopicMap: Sendable {
    /// The `gateway` section.
    public let gateway: GatewayConfig
    /// The signals, in file order (their indices index `SignalTable`).
    public let signals: [SignalConfig]
    /// State features in order (a feature may take 2 columns; see `FeatureConfig.width`).
    public let features: [FeatureConfig]
    /// Ticks of history in the state (1 = the current tick only).
    public let history: Int
    /// When decisions are taken.
    public let tick: TickConfig
    /// The actions, in the network's output order.
    public let actions: [ActionConfig]
    /// The action taken when the safety policy says `fallback`; nil = hold (publish nothing).
    public let fallbackAction: Int?
    /// Minimum ticks between two changes of action (0 = none).
    public let minDwell: Int
    /// How to observe the controller in charge, if given.
    public let incumbent: IncumbentConfig?
    /// Where the plant reports the action it applied (the `applied` section), if given: in
    /// control mode the logged action is the reported one.
    public let applied: IncumbentConfig?
    /// How missed ticks are found (`tick.sequence`, `tick.max_gap`).
    public let continuity: TickContinuity
    /// Index of the `tick.sequence` signal, if any.
    public let sequenceSignal: Int?
    /// The `safety` section (defaults when absent).
    public let safety: SafetyConfig
    /// The `learning` section (defaults when absent).
    public let learning: LearningConfig
    /// The `control_plane` section (defaults when absent: signed commands).
    public let controlPlane: ControlPlaneConfig
    /// The `handover` section (empty when absent: nothing is published on a handover).
    public let handover: HandoverConfig
    /// The `fleet` section (nil when absent: the experience log is not shipped; docs/fleet.md).
    public let fleet: FleetConfig?
    /// The `sparkplug` section (nil when absent: EdgeQ is no Sparkplug edge node).
    public let sparkplugNode: SparkplugNodeConfig?
    /// The signals a plant model uses, by role (`SignalConfig.role`), as indices into
    /// `signals`, each list in file order.
    public let modelSignals: (controlled: [Int], exogenous: [Int])
    /// Every signal with a role, in file order (controlled and exogenous mixed): the signals the
    /// log records raw in its `signals` columns, in this order (`loggedSignalNames`).
    public let loggedSignals: [Int]
    /// The names of `loggedSignals`, in order.
    public var loggedSignalNames: [String] { loggedSignals.map { signals[$0].name } }
    /// The signals with `role: applied` (readbacks of the applied action), as indices into
    /// `signals`, in file order.
    public let appliedSignals: [Int]
    /// Whether a policy can be judged on a plant model (the `model` section, docs/mapping.md).
    public let modelJudging: ModelJudging
    /// The reward as the plant model sees it: `model.reward`, or the mapping's `reward` when it
    /// reads only signals with a role; nil when `modelJudging` is not applicable.
    public var modelRewardSource: String? { model.reward?.source }
    /// The compiled `modelRewardSource`, for evaluating it over signal values without a
    /// `TopicMapRuntime` (a planner's many predicted steps): slot i is signal i (`signals`);
    /// nil when `modelJudging` is not applicable.
    public var modelRewardExpression: CompiledExpression? { model.reward }
    /// The end condition as the plant model sees it: `model.terminal`, or the mapping's
    /// `terminal` when it reads only signals with a role; nil when there is none.
    public var modelTerminalSource: String? { model.terminal?.source }
    /// `model.classes`: the plant model classes retraining fits and chooses among, in
    /// `PlantModelClassName` order (docs/mapping.md, "model"); nil: every class.
    public var modelClasses: [PlantModelClassName]? { model.classes }
    /// The names of the model's controlled and exogenous signals, in order.
    public var modelSignalNames: (controlled: [String], exogenous: [String]) {
        (modelSignals.controlled.map { signals[$0].name }, modelSignals.exogenous.map { signals[$0].name })
    }
    /// Source texts of the reward, terminal and truncated expressions.
    public var rewardSource: String { reward.source }
    /// The terminal expression's text, if any.
    public var terminalSource: String? { terminal?.source }
    /// The truncated expression's text, if any.
    public var truncatedSource: String? { truncated?.source }

    let featureEval: [FeatureEval]
    let model: ModelObjective
    let reward: CompiledExpression
    let terminal: CompiledExpression?
    let truncated: CompiledExpression?
    let writes: [[CompiledWrite]]
    let allowed: [CompiledExpression?]
    let handOverride: CompiledExpression?
    let slotCount: Int
    let slotNames: [String]
    let routes: [Route]
    let exactRoutes: [String: Int]
    let wildcardRoutes: [Int]
    let actionNames: [[UInt8]]
    let incumbentExtractor: JSONExtractor?
    let appliedExtractor: JSONExtractor?
    /// Signal slots each feature depends on (directly or through earlier features).
    let featureSignals: [[Int]]

    /// The signals a `cyclic` feature reads (indices into `signals`): phases such as the plant's
    /// hour or weekday, whose mean over a time says nothing.
    public var cyclicSignals: Set<Int> {
        var out = Set<Int>()
        for (f, deps) in zip(features, featureSignals) {
            if case .cyclic = f.source { out.formUnion(deps) }
        }
        return out
    }
    /// Per-signal and per-feature numbers in plain arrays, so the hot path copies no
    /// configuration structs (each copy costs reference-count traffic).
    let kindCode: [UInt8]          // 0 number, 1 bool, 2 enum
    let enumTables: [[([UInt8], Double)]]
    let scale: [Double], offset: [Double], lo: [Double], hi: [Double]
    let maxAgeNs: [UInt64]         // UInt64.max: never stale
    let normKind: [UInt8]          // per feature: 0 none, 1 range, 2 learned
    let normLo: [Double], normSpan: [Double]
    /// Per feature: 0 signal, 1 expression, 2 cyclic, 3 time of day, 4 day of week.
    let featureKind: [UInt8]
    /// Per feature: its slot (kinds 0 and 1), else -1.
    let featureSlot: [Int]
    /// Per feature: index into `featureExprs` (kinds 1 and 2), else -1.
    let featureExprIndex: [Int]
    let featureExprs: [CompiledExpression]
    let featurePeriod: [Double]
    /// Signal dependencies of feature f: `featureDeps[featureDepStart[f]..<featureDepStart[f + 1]]`.
    let featureDepStart: [Int]
    let featureDeps: [Int]
    /// Expression features in order (evaluated at every refresh).
    let expressionFeatures: [Int]
    let featureWidthStored: Int

    init(gateway: GatewayConfig, signals: [SignalConfig], features: [FeatureConfig], history: Int,
         featureEval: [FeatureEval], tick: TickConfig, reward: CompiledExpression, terminal: CompiledExpression?,
         truncated: CompiledExpression?, actions: [ActionConfig], writes: [[CompiledWrite]], allowed: [CompiledExpression?],
         fallback: Int?, minDwell: Int, incumbent: IncumbentConfig?, safety: SafetyConfig,
         handOverride: CompiledExpression?, learning: LearningConfig, slotCount: Int, slotNames: [String],
         applied: IncumbentConfig? = nil, continuity: TickContinuity = .init(), controlPlane: ControlPlaneConfig = .init(),
         handover: HandoverConfig = HandoverConfig(), model: ModelObjective = ModelObjective(), fleet: FleetConfig? = nil,
         sparkplugNode: SparkplugNodeConfig? = nil) {
        self.sparkplugNode = sparkplugNode
        self.model = model
        modelJudging = model.judging
        self.controlPlane = controlPlane
        self.handover = handover
        self.fleet = fleet
        self.applied = applied
        self.continuity = continuity
        sequenceSignal = continuity.sequence.flatMap { name in signals.firstIndex { $0.name == name } }
        appliedExtractor = applied?.path.map { JSONExtractor(paths: [$0]) }
        self.gateway = gateway
        self.signals = signals
        let roles = signals.indices.filter { signals[$0].role != nil }
        loggedSignals = roles
        modelSignals = (roles.filter { signals[$0].role == .controlled }, roles.filter { signals[$0].role == .exogenous })
        appliedSignals = roles.filter { signals[$0].role == .applied }
        self.features = features
        self.history = history
        self.featureEval = featureEval
        self.tick = tick
        self.reward = reward
        self.terminal = terminal
        self.truncated = truncated
        self.actions = actions
        self.writes = writes
        self.allowed = allowed
        self.fallbackAction = fallback
        self.minDwell = minDwell
        self.incumbent = incumbent
        self.safety = safety
        self.handOverride = handOverride
        self.learning = learning
        self.slotCount = slotCount
        self.slotNames = slotNames
        actionNames = actions.map { Array($0.name.utf8) }

        // Routes: one per distinct topic filter, in first-use order.
        var order: [String] = []
        var byTopic: [String: [Int]] = [:]
        for (i, s) in signals.enumerated() where s.sparkplug == nil {
            if byTopic[s.topic] == nil { order.append(s.topic) }
            byTopic[s.topic, default: []].append(i)
        }
        var routes: [Route] = []
        var exact: [String: Int] = [:]
        var wild: [Int] = []
        for t in order {
            let sigs = byTopic[t] ?? []
            let isJSON = sigs.contains { signals[$0].path != nil }
            let ex = isJSON ? JSONExtractor(paths: sigs.map { signals[$0].path ?? [] }) : nil
            let w = t.contains("+")
            routes.append(Route(filter: t, isWildcard: w, signals: sigs, extractor: ex))
            if w { wild.append(routes.count - 1) } else { exact[t] = routes.count - 1 }
        }
        self.routes = routes
        exactRoutes = exact
        wildcardRoutes = wild
        incumbentExtractor = incumbent?.path.map { JSONExtractor(paths: [$0]) }

        // Dependencies of each feature on signals.
        featureSignals = Self.dependencies(signalCount: signals.count, slotCount: slotCount, featureEval: featureEval).features
        kindCode = signals.map {
            switch $0.kind {
            case .number: return 0
            case .bool: return 1
            case .enumeration: return 2
            }
        }
        enumTables = signals.map {
            if case .enumeration(let t) = $0.kind { return t.map { (Array($0.key.utf8), $0.value) } }
            return []
        }
        scale = signals.map(\.scale)
        offset = signals.map(\.offset)
        lo = signals.map { $0.range?.lowerBound ?? -.infinity }
        hi = signals.map { $0.range?.upperBound ?? .infinity }
        maxAgeNs = signals.map { s in
            guard let a = s.maxAge else { return UInt64.max }
            return a * 1e9 >= Double(UInt64.max / 2) ? UInt64.max : UInt64(a * 1e9)
        }
        normKind = features.map {
            switch $0.normalization {
            case .none: return 0
            case .range: return 1
            case .learned: return 2
            }
        }
        normLo = features.map { if case .range(let l, _) = $0.normalization { return l } else { return 0 } }
        normSpan = features.map { if case .range(let l, let h) = $0.normalization { return h - l } else { return 1 } }
        var kinds: [UInt8] = [], fslots: [Int] = [], exprIndex: [Int] = [], exprs: [CompiledExpression] = [], periods: [Double] = []
        var exprFeatures: [Int] = []
        for (fi, e) in featureEval.enumerated() {
            switch e {
            case .slot(let s): kinds.append(0); fslots.append(s); exprIndex.append(-1); periods.append(0)
            case .expression(let c, let slot):
                kinds.append(1); fslots.append(slot); exprIndex.append(exprs.count); exprs.append(c); periods.append(0)
                exprFeatures.append(fi)
            case .cyclic(let c, let period):
                kinds.append(2); fslots.append(-1); exprIndex.append(exprs.count); exprs.append(c); periods.append(period)
            case .timeOfDay: kinds.append(3); fslots.append(-1); exprIndex.append(-1); periods.append(0)
            case .dayOfWeek: kinds.append(4); fslots.append(-1); exprIndex.append(-1); periods.append(0)
            }
        }
        featureKind = kinds
        featureSlot = fslots
        featureExprIndex = exprIndex
        featureExprs = exprs
        featurePeriod = periods
        expressionFeatures = exprFeatures
        var starts = [0]
        var deps: [Int] = []
        for d in featureSignals { deps += d; starts.append(deps.count) }
        featureDepStart = starts
        featureDeps = deps
        featureWidthStored = features.reduce(0) { $0 + $1.width }
    }

    /// The signals each slot depends on (a signal's slot: itself; an expression feature's slot:
    /// the signals it reads, directly or through earlier features), and each feature's.
    static func dependencies(signalCount: Int, slotCount: Int, featureEval: [FeatureEval]) -> (slots: [[Int]], features: [[Int]]) {
        var slotDeps: [[Int]] = (0..<slotCount).map { $0 < signalCount ? [$0] : [] }
        var fs: [[Int]] = []
        for e in featureEval {
            switch e {
            case .slot(let s): fs.append([s])
            case .expression(let c, let slot):
                let d = Array(Set(c.slots.flatMap { slotDeps[$0] })).sorted()
                slotDeps[slot] = d
                fs.append(d)
            case .cyclic(let c, _): fs.append(Array(Set(c.slots.flatMap { slotDeps[$0] })).sorted())
            case .timeOfDay, .dayOfWeek: fs.append([])
            }
        }
        return (slotDeps, fs)
    }

    /// Per state input, the support margin it is checked with (`FeatureConfig.supportMargin`,
    /// else `safety.support_margin`; `.infinity`: not checked), in the state vector's order
    /// (every history tick repeats the features'); nil when no input is checked.
    public var stateSupportMargins: [Float]? {
        var perTick: [Float] = []
        for f in features {
            let m = f.supportMargin ?? safety.supportMargin ?? .infinity
            perTick.append(contentsOf: repeatElement(Float(m), count: f.width))
        }
        guard perTick.contains(where: { $0.isFinite }) else { return nil }
        return Array((0..<history).map { _ in perTick }.joined())
    }

    /// Per state input, a name for people (warnings, `edgeq models show`): the feature's name,
    /// `.sin` / `.cos` for the two columns of a cyclic or time feature, and `[t-k]` for the
    /// k-th previous tick's copy when `history` > 1 (this tick's features first, then the
    /// previous ticks', newest first, as the state vector holds them).
    public var stateInputNames: [String] {
        var perTick: [String] = []
        for f in features {
            if f.width == 2 {
                perTick.append(f.name + ".sin")
                perTick.append(f.name + ".cos")
            } else {
                perTick.append(f.name)
            }
        }
        return (0..<history).flatMap { k in k == 0 ? perTick : perTick.map { "\($0)[t-\(k)]" } }
    }

    /// Per state input, the inverse of its feature's fixed-range normalisation (`normalize:
    /// [min, max]`): the value in the feature's own units of a stored value — the value itself
    /// for an input used as is — or nil for an input standardised with statistics learned from
    /// the log and for a cyclic column. In the state vector's order.
    public var stateInputUnits: [(@Sendable (Double) -> Double)?] {
        var perTick: [(@Sendable (Double) -> Double)?] = []
        for f in features {
            if f.width == 2 {
                perTick.append(contentsOf: [nil, nil])
            } else {
                switch f.normalization {
                case .range(let lo, let hi): perTick.append({ x in lo + (x + 1) / 2 * (hi - lo) })
                case .none: perTick.append({ x in x })
                case .learned: perTick.append(nil)
                }
            }
        }
        return Array((0..<history).map { _ in perTick }.joined())
    }

    /// Columns of one tick's features.
    public var featureWidth: Int { featureWidthStored }
    /// Length of the state vector: `featureWidth × history`.
    public var stateWidth: Int { featureWidth * history }

    /// Topic filters EdgeQ subscribes to: signal topics, the tick trigger, the incumbent's topic
    /// (not the Sparkplug B topics: see `sparkplugSignals`).
    public var subscribedTopics: [String] {
        var out: [String] = routes.map(\.filter)
        if case .trigger(let t) = tick, !out.contains(t) { out.append(t) }
        if let i = incumbent, !out.contains(i.topic) { out.append(i.topic) }
        if let a = applied, !out.contains(a.topic) { out.append(a.topic) }
        return out
    }

    /// Topics actions publish to.
    public var publishedTopics: [String] {
        var out: [String] = []
        for ws in writes { for w in ws where !out.contains(w.topic) { out.append(w.topic) } }
        return out
    }

    /// Index of signal `name`, if declared.
    public func signalIndex(named name: String) -> Int? { signals.firstIndex { $0.name == name } }

    /// The route index for an exact topic (for callers that cache it per subscription); nil
    /// when the topic matches only `+` filters or nothing.
    public func routeIndex(topic: String) -> Int? { exactRoutes[topic] }

    /// True when a message on `topic` is a decision tick (`tick.trigger`).
    public func isTrigger(topic: String) -> Bool {
        guard case .trigger(let t) = tick else { return false }
        // utf8.contains: String.contains(String) goes through NSString (two allocations a tick).
        return t.utf8.contains(UInt8(ascii: "+")) ? topicMatches(filter: t, topic: topic) : t == topic
    }

    /// Decodes one message into `table`: every signal carried by `topic` gets a new value
    /// or is marked invalid with a reason (counted in the table). Never throws, never
    /// allocates; bad payloads only mark signals invalid.
    ///
    /// - Parameters:
    ///   - topic: the message's topic (exact lookup first, then the `+` filters).
    ///   - payload: the message bytes.
    ///   - time: monotonic time in ns (for staleness).
    /// - Returns: how many routes (topic filters) matched; 0 means the topic carries no signal
    ///   (counted in `table.unroutedMessages`).
    @discardableResult
    public func decode(topic: String, payload: UnsafeRawBufferPointer, time: UInt64, into table: inout SignalTable) -> Int {
        var matched = 0
        if let r = exactRoutes[topic] {
            decode(route: r, payload: payload, time: time, into: &table)
            matched += 1
        }
        for r in wildcardRoutes where topicMatches(filter: routes[r].filter, topic: topic) {
            decode(route: r, payload: payload, time: time, into: &table)
            matched += 1
        }
        if matched == 0 { table.unroutedMessages += 1 }
        return matched
    }

    /// Decodes a message for a known route (see `routeIndex(topic:)`).
    public func decode(route r: Int, payload: UnsafeRawBufferPointer, time: UInt64, into table: inout SignalTable) {
        let route = routes[r]
        if payload.count > gateway.maxPayloadBytes {
            for s in route.signals { table.reject(s, .oversize, time: time) }
            return
        }
        if let ex = route.extractor {
            let outcome = table.captures.withUnsafeMutableBufferPointer { caps -> JSONExtractor.Outcome in
                guard let base = caps.baseAddress else { return .invalid }
                return ex.scan(payload, into: base)
            }
            switch outcome {
            case .valid: break
            case .invalid:
                for s in route.signals { table.reject(s, .invalidJSON, time: time) }
                return
            case .duplicateKey:
                for s in route.signals { table.reject(s, .duplicateKey, time: time) }
                return
            }
            for (k, s) in route.signals.enumerated() {
                let cap = table.captures[k]
                let result = convert(cap, signal: s, payload: payload)
                store(result, signal: s, time: time, into: &table)
            }
        } else {
            for s in route.signals {
                store(convertRaw(signal: s, payload: payload), signal: s, time: time, into: &table)
            }
        }
    }

    enum Converted { case value(Double), failure(DecodeFailure) }

    /// The signals read from Sparkplug B metrics (their `sparkplug` source), in file order.
    public var sparkplugSignals: [Int] { signals.indices.filter { signals[$0].sparkplug != nil } }

    /// Stores a value decoded outside the topic map (a Sparkplug B metric's number, or a
    /// boolean as 1/0) into signal `s`: scale, offset and range are applied and checked as for
    /// a topic's value (`non_finite`, `out_of_range`). A number for an enum signal is
    /// `wrong_type`. Allocates nothing.
    public func store(raw: Double, signal s: Int, time: UInt64, into table: inout SignalTable) {
        if kindCode[s] == 2 { table.reject(s, .wrongType, time: time); return }
        guard raw.isFinite else { table.reject(s, .nonFinite, time: time); return }
        store(.value(kindCode[s] == 1 ? (raw != 0 ? 1 : 0) : raw), signal: s, time: time, into: &table)
    }

    /// Stores a text value decoded outside the topic map (a Sparkplug B String metric) into
    /// signal `s`: an enum signal looks it up in its `values` (`unknown_enum_value`); a number or
    /// bool signal takes no text (`wrong_type`). Allocates nothing.
    public func store(text: UnsafeRawBufferPointer, signal s: Int, time: UInt64, into table: inout SignalTable) {
        guard kindCode[s] == 2 else { table.reject(s, .wrongType, time: time); return }
        store(lookup(s, text), signal: s, time: time, into: &table)
    }

    @inline(__always) func store(_ c: Converted, signal s: Int, time: UInt64, into table: inout SignalTable) {
        switch c {
        case .failure(let f): table.reject(s, f, time: time)
        case .value(let raw):
            let v = raw * scale[s] + offset[s]
            guard v.isFinite else { table.reject(s, .nonFinite, time: time); return }
            if v < lo[s] || v > hi[s] { table.reject(s, .outOfRange, time: time); return }
            table.values[s] = v
            table.statusCode[s] = 1
            table.times[s] = time
        }
    }

    func convert(_ cap: JSONCapture, signal s: Int, payload: UnsafeRawBufferPointer) -> Converted {
        switch (kindCode[s], cap.kind) {
        case (_, .missing): return .failure(.missingField)
        case (0, .number), (1, .number):
            guard cap.number.isFinite else { return .failure(.nonFinite) }
            if kindCode[s] == 1 { return .value(cap.number != 0 ? 1 : 0) }
            return .value(cap.number)
        case (1, .bool): return .value(cap.number)
        case (2, .string):
            guard !cap.escaped else { return .failure(.unknownEnumValue) }
            let bytes = UnsafeRawBufferPointer(rebasing: payload[cap.start..<cap.end])
            return lookup(s, bytes)
        default: return .failure(.wrongType)
        }
    }

    func convertRaw(signal s: Int, payload: UnsafeRawBufferPointer) -> Converted {
        guard let base = payload.baseAddress?.assumingMemoryBound(to: UInt8.self), payload.count > 0 else {
            return .failure(.notANumber)
        }
        switch kindCode[s] {
        case 0:
            guard let v = NumberParser.parseRaw(base, payload.count) else { return .failure(.notANumber) }
            return v.isFinite ? .value(v) : .failure(.nonFinite)
        case 1:
            var a = 0, b = payload.count
            while a < b, NumberParser.isSpace(base[a]) { a += 1 }
            while b > a, NumberParser.isSpace(base[b - 1]) { b -= 1 }
            let w = UnsafeRawBufferPointer(rebasing: payload[a..<b])
            for (word, v) in Self.boolWords {
                if bytesEqual(w, UnsafeRawBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)) { return .value(v) }
            }
            return .failure(.notANumber)
        default:
            var a = 0, b = payload.count
            while a < b, NumberParser.isSpace(base[a]) { a += 1 }
            while b > a, NumberParser.isSpace(base[b - 1]) { b -= 1 }
            if b - a >= 2, base[a] == UInt8(ascii: "\""), base[b - 1] == UInt8(ascii: "\"") { a += 1; b -= 1 }
            return lookup(s, UnsafeRawBufferPointer(rebasing: payload[a..<b]))
        }
    }

    static let boolWords: [(StaticString, Double)] = [("true", 1), ("on", 1), ("1", 1), ("false", 0), ("off", 0), ("0", 0)]

    func lookup(_ s: Int, _ bytes: UnsafeRawBufferPointer) -> Converted {
        for (k, v) in enumTables[s] {
            let found = k.withUnsafeBytes { bytesEqual($0, bytes) }
            if found { return .value(v) }
        }
        return .failure(.unknownEnumValue)
    }

    /// The action nearest to the incumbent's command in a message on `topic`, or nil when the
    /// topic is not the incumbent's, the payload is unreadable, or no action is within
    /// `incumbent.max_distance`. Ties go to the lower index. Allocates nothing.
    public func incumbentAction(topic: String, payload: UnsafeRawBufferPointer) -> Int? {
        guard let inc = incumbent else { return nil }
        return nearestAction(inc, incumbentExtractor, topic: topic, payload: payload)
    }

    /// The action the plant reports it applied in a message on `topic` (the `applied`
    /// section), mapped like the incumbent's commands (nearest `incumbent_value`); nil when the
    /// topic is not the `applied` one or the report is unreadable or too far from every action.
    /// Allocates nothing.
    public func appliedAction(topic: String, payload: UnsafeRawBufferPointer) -> Int? {
        guard let a = applied else { return nil }
        return nearestAction(a, appliedExtractor, topic: topic, payload: payload)
    }

    /// True when `topic` is the `applied` section's topic (or matches its filter).
    public func isAppliedTopic(_ topic: String) -> Bool {
        guard let a = applied else { return false }
        return a.topic.utf8.contains(UInt8(ascii: "+")) ? topicMatches(filter: a.topic, topic: topic) : a.topic == topic
    }

    func nearestAction(_ inc: IncumbentConfig, _ extractor: JSONExtractor?, topic: String, payload: UnsafeRawBufferPointer) -> Int? {
        // utf8.contains: String.contains(String) goes through NSString (allocations per message).
        guard inc.topic.utf8.contains(UInt8(ascii: "+")) ? topicMatches(filter: inc.topic, topic: topic) : inc.topic == topic else { return nil }
        guard payload.count <= gateway.maxPayloadBytes else { return nil }
        var value: Double
        if let ex = extractor {
            var cap = JSONCapture()
            guard ex.extract(payload, into: &cap) else { return nil }
            switch cap.kind {
            case .number, .bool: value = cap.number
            default: return nil
            }
        } else {
            guard let base = payload.baseAddress?.assumingMemoryBound(to: UInt8.self),
                  let v = NumberParser.parseRaw(base, payload.count) else { return nil }
            value = v
        }
        guard value.isFinite else { return nil }
        var best: Int?
        var bestDistance = Double.infinity
        for (i, a) in actions.enumerated() {
            guard let iv = a.incumbentValue else { continue }
            let d = Swift.abs(iv - value)
            if d < bestDistance { best = i; bestDistance = d }
        }
        if let m = inc.maxDistance, bestDistance > m { return nil }
        return best
    }
}

@inline(__always) func bytesEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    for i in 0..<a.count where a[i] != b[i] { return false }
    return true
}
