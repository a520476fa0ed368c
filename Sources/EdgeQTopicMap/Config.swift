// The typed contents of a mapping file, as read and validated by `TopicMap.parse`.
// Every key has a default documented in docs/mapping.md.

/// A secret given by reference, never inline: an environment variable or a file.
public enum SecretReference: Sendable, Equatable {
    /// The value of environment variable `name`.
    case environment(String)
    /// The contents of the file at `path` (trailing newline removed).
    case file(String)
}

/// TLS files for the broker connection.
public struct TLSConfig: Sendable, Equatable {
    /// CA certificate file (PEM) to verify the broker.
    public var caFile: String?
    /// Client certificate file (PEM), for mutual TLS.
    public var certFile: String?
    /// Client key file (PEM), for mutual TLS.
    public var keyFile: String?

    /// TLS files; nil entries are not used.
    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }
}

/// The `gateway` section: who EdgeQ is and where it connects.
public struct GatewayConfig: Sendable, Equatable {
    /// The gateway id (letters, digits, `-`, `_`). Required.
    public var id: String
    /// Broker URLs (`mqtt://host:port` or `mqtts://host:port`), tried in order. Default `mqtt://127.0.0.1:1883`.
    public var brokers: [String] = ["mqtt://127.0.0.1:1883"]
    /// The MQTT client id. Default `edgeq-<id>`.
    public var clientID: String
    /// User name by reference, if the broker needs one.
    public var username: SecretReference?
    /// Password by reference, if the broker needs one.
    public var password: SecretReference?
    /// TLS files, when connecting with TLS.
    public var tls: TLSConfig?
    /// Control-plane topic prefix. Default `edgeq/<id>`.
    public var prefix: String
    /// Data directory (experience log, models). Default `data`.
    public var dataDirectory: String = "data"
    /// Mode at start. Default `shadow`.
    public var startMode: Mode = .shadow
    /// Payloads larger than this many bytes are rejected (`oversize`). Default 65536.
    public var maxPayloadBytes: Int = 65536

    /// Who is in charge of the plant.
    public enum Mode: String, Sendable, CaseIterable { case shadow, control }
}

/// How a signal's payload value becomes a number.
public enum SignalKind: Sendable, Equatable {
    /// A JSON number, or a raw numeric payload.
    case number
    /// JSON `true`/`false` (or a number, non-zero = true); raw `true false on off 1 0`. Gives 1 or 0.
    case bool
    /// A string mapped to a number by a table.
    case enumeration([String: Double])
}

/// What a plant model does with a signal (the signal's `role` key, docs/mapping.md).
public enum SignalRole: String, Sendable, Equatable, CaseIterable {
    /// The plant's response to the actions (a temperature, a level, an angle): a plant model
    /// predicts it. A number signal only.
    case controlled
    /// Not caused by the actions (weather, price, a setpoint, occupancy): given to a plant
    /// model, never predicted. A number or bool (0/1) signal.
    case exogenous
    /// The plant's readback of the action it applied (a heater's stage, a valve position, the
    /// power of the stage): in the model world its value at tick t is the value of the action
    /// applied from t−1 to t (`SignalConfig.appliedValues`). A number or bool signal.
    case applied
}

/// A Sparkplug B metric as a signal's source (the signal's `sparkplug` key, docs/mapping.md):
/// the metric `metric` of edge node `node` in group `group`, or of its device `device`.
public struct SparkplugSource: Sendable, Equatable, Hashable {
    /// The Sparkplug group id.
    public var group: String
    /// The edge node id.
    public var node: String
    /// The device id; nil for a metric of the edge node itself (NBIRTH/NDATA).
    public var device: String?
    /// The metric's name as its birth certificate gives it (e.g. `Supply/Temperature`).
    public var metric: String

    /// A metric of node `node` (or of its device `device`) in group `group`.
    public init(group: String, node: String, device: String? = nil, metric: String) {
        self.group = group
        self.node = node
        self.device = device
        self.metric = metric
    }

    /// The topic its values arrive on: `spBv1.0/<group>/DDATA/<node>/<device>`, or
    /// `spBv1.0/<group>/NDATA/<node>` for a node metric.
    public var dataTopic: String {
        if let device { return "spBv1.0/\(group)/DDATA/\(node)/\(device)" }
        return "spBv1.0/\(group)/NDATA/\(node)"
    }
}

/// One named value read from a topic.
public struct SignalConfig: Sendable, Equatable {
    /// The name used in expressions and features.
    public var name: String
    /// The topic or topic filter (`+` matches one level). For a Sparkplug signal, the topic its
    /// values arrive on (`SparkplugSource.dataTopic`); it is not decoded as JSON or raw text.
    public var topic: String
    /// The Sparkplug B metric the value comes from, instead of `topic` and `json`; nil for a
    /// signal read from a topic.
    public var sparkplug: SparkplugSource?
    /// JSON path of the value; nil for a raw payload.
    public var path: [JSONPathElement]?
    /// The JSON path as written.
    public var pathText: String?
    /// How the payload value becomes a number.
    public var kind: SignalKind = .number
    /// value = raw × scale + offset.
    public var scale: Double = 1
    /// Added after scaling.
    public var offset: Double = 0
    /// Valid range of the scaled value (inclusive); outside it the value is invalid, not clipped.
    public var range: ClosedRange<Double>?
    /// Age after which the value is stale, in seconds; nil = never stale.
    public var maxAge: Double?
    /// What a plant model does with the signal; nil: not used by a plant model (and not
    /// recorded in the log's `signals` columns).
    public var role: SignalRole?
    /// For `role: applied`: the signal's value for each action (index = action), from the
    /// signal's `applied: [v0, v1, …]` or, by default, each action's constant publish `value`.
    /// Empty for other roles.
    public var appliedValues: [Double] = []
    /// For `role: exogenous`: how a planner that teaches (`learning.distill`) forecasts the
    /// signal over its horizon (the signal's `forecast` key). Default `.persistence`.
    public var forecast: SignalForecast = .persistence
}

/// How the distillation's teacher forecasts an exogenous signal over its horizon (a signal's
/// `forecast` key, docs/mapping.md; docs/learning.md, "A schedule is known ahead").
public enum SignalForecast: String, Sendable, Equatable, CaseIterable {
    /// Held at its value now (what the gateway knows at the tick): weather, a load, a setpoint
    /// an operator may change at any time.
    case persistence
    /// Known ahead — a calendar, a tariff, an occupancy or comfort schedule, the clock: the
    /// teacher, which values logged states after the fact, takes the values the log shows over
    /// its horizon. The served network still sees only its state (give it the schedule's
    /// look-ahead features, as topics/thermal.yaml does with `occupied_next_2h`).
    case schedule
}

/// Whether a candidate policy can be judged on a plant model for this mapping (docs/mapping.md,
/// `model`): the model world must assemble the state, evaluate the masks, the reward and the
/// end condition from signals a model predicts or is given (roles `controlled`, `exogenous`,
/// `applied`) alone.
public enum ModelJudging: Sendable, Equatable {
    /// Everything the model world needs has a role.
    case applicable
    /// Something reads a signal without a role (or the wall clock); the text says what and
    /// what to do.
    case notApplicable(String)
}

/// How a feature is normalised before it enters the state vector.
public enum Normalization: Sendable, Equatable {
    /// Used as is.
    case none
    /// Mapped linearly from [min, max] to [-1, 1] (values outside map beyond ±1).
    case range(Double, Double)
    /// Standardised with a mean and standard deviation learned from the log and frozen into
    /// the model (`TopicMapRuntime.setLearnedStatistics`); used as is until then.
    case learned
}

/// One feature of the state vector.
public struct FeatureConfig: Sendable, Equatable {
    /// What the feature reads.
    public enum Source: Sendable, Equatable {
        /// A signal's value.
        case signal(String)
        /// A derived expression over signals and earlier features.
        case expression(String)
        /// sin and cos of 2π·value/period for an expression (two columns), e.g. an hour from the plant.
        case cyclic(String, period: Double)
        /// sin and cos of the wall-clock time of day (local time), two columns.
        case timeOfDay
        /// sin and cos of the wall-clock day of the week (local time), two columns.
        case dayOfWeek
    }
    /// The feature's name (usable in later expressions for `signal` and `expression` sources).
    public var name: String
    /// What the feature reads.
    public var source: Source
    /// How it is normalised.
    public var normalization: Normalization = .none
    /// This feature's own support margin (`support_margin` on the feature; docs/mapping.md,
    /// "safety"): nil takes `safety.support_margin`; a number ≥ 0 replaces it for this
    /// feature's inputs; `.infinity` (`none` in the file) leaves them unchecked.
    public var supportMargin: Double?
    /// Columns in the state vector: 1, or 2 for cyclic and time features.
    public var width: Int {
        switch source {
        case .signal, .expression: return 1
        case .cyclic, .timeOfDay, .dayOfWeek: return 2
        }
    }
}

/// When a decision is taken.
public enum TickConfig: Sendable, Equatable {
    /// Every `period` seconds.
    case period(Double)
    /// Once per message on this topic (after its signals are decoded).
    case trigger(String)
}

/// How the gateway finds ticks it missed between two states (a broker restart, a backlog the
/// broker dropped, a stalled decision thread), so that a transition spanning them is flagged
/// `gap` in the log and never learned from as one step (docs/mapping.md, `tick`).
public struct TickContinuity: Sendable, Equatable {
    /// When the clock says ticks were missed.
    public enum MaxGap: Sendable, Equatable {
        /// A periodic tick: more than 1.5 periods between two ticks. A trigger tick without a
        /// `sequence`: more than 3 × the median of the previous 16 intervals. A trigger tick
        /// with a `sequence`: the sequence alone decides.
        case automatic
        /// More than this many seconds between two ticks.
        case seconds(Double)
        /// Never by the clock (only the `sequence`, if any).
        case off
    }
    /// A signal that counts the plant's steps, one more per trigger message (`tick.sequence`);
    /// a transition whose next value is not the previous + 1 spans missed ticks.
    public var sequence: String?
    /// `tick.max_gap`.
    public var maxGap: MaxGap = .automatic

    /// No sequence, automatic clock rule.
    public init(sequence: String? = nil, maxGap: MaxGap = .automatic) {
        self.sequence = sequence
        self.maxGap = maxGap
    }
}

/// The Sparkplug B datatypes an action may write (Sparkplug 3.0.0, 6.4.16; the raw value is
/// the datatype's code on the wire).
public enum SparkplugDataType: Int, Sendable, Equatable, CaseIterable {
    case int8 = 1, int16, int32, int64, uint8, uint16, uint32, uint64, float, double, boolean

    /// The name in a mapping file and in the specification (`Int32`, `Double`, `Boolean`, …).
    public var name: String {
        switch self {
        case .int8: return "Int8"
        case .int16: return "Int16"
        case .int32: return "Int32"
        case .int64: return "Int64"
        case .uint8: return "UInt8"
        case .uint16: return "UInt16"
        case .uint32: return "UInt32"
        case .uint64: return "UInt64"
        case .float: return "Float"
        case .double: return "Double"
        case .boolean: return "Boolean"
        }
    }

    /// The smallest and largest value of an integer type (nil for Float, Double, Boolean).
    public var integerRange: ClosedRange<Double>? {
        switch self {
        case .int8: return -128...127
        case .int16: return -32768...32767
        case .int32: return -2_147_483_648...2_147_483_647
        case .int64: return -9_223_372_036_854_775_808...9_223_372_036_854_775_807
        case .uint8: return 0...255
        case .uint16: return 0...65535
        case .uint32: return 0...4_294_967_295
        case .uint64: return 0...18_446_744_073_709_551_615
        case .float, .double, .boolean: return nil
        }
    }
}

/// A Sparkplug B metric an action writes (a write's `sparkplug` key, docs/mapping.md): an NCMD to
/// edge node `node` of `group`, or a DCMD to its device `device`, setting `metric` to the
/// write's value as `datatype`.
public struct SparkplugWrite: Sendable, Equatable {
    /// The group id.
    public var group: String
    /// The edge node id.
    public var node: String
    /// The device id; nil: a metric of the edge node (NCMD).
    public var device: String?
    /// The metric's name.
    public var metric: String
    /// The datatype the value is sent as.
    public var datatype: SparkplugDataType

    /// A write of `metric` as `datatype` to node `node` of `group` (or its device `device`).
    public init(group: String, node: String, device: String? = nil, metric: String, datatype: SparkplugDataType) {
        self.group = group
        self.node = node
        self.device = device
        self.metric = metric
        self.datatype = datatype
    }

    /// The command topic: `spBv1.0/<group>/DCMD/<node>/<device>` or `spBv1.0/<group>/NCMD/<node>`.
    public var commandTopic: String {
        if let device { return "spBv1.0/\(group)/DCMD/\(node)/\(device)" }
        return "spBv1.0/\(group)/NCMD/\(node)"
    }
}

/// The `sparkplug` section: EdgeQ announces itself as a Sparkplug B edge node `node` of group
/// `group` (docs/operations.md, "Sparkplug B").
public struct SparkplugNodeConfig: Sendable, Equatable {
    /// The group id.
    public var group: String
    /// EdgeQ's edge node id.
    public var node: String

    /// EdgeQ as edge node `node` of `group`.
    public init(group: String, node: String) {
        self.group = group
        self.node = node
    }
}

/// One actuator write of an action.
public struct WriteConfig: Sendable, Equatable {
    /// The topic written to (no wildcards). For a Sparkplug write, its command topic.
    public var topic: String
    /// The Sparkplug B metric written instead of a payload (its payload is a Sparkplug B
    /// NCMD/DCMD with one metric; `template` is then `{{value}}`); nil for a plain write.
    public var sparkplug: SparkplugWrite?
    /// Payload template; `{{value}}`, `{{action}}`, `{{action_name}}` and `{{<signal or feature>}}` are substituted.
    public var template: String
    /// Expression for `{{value}}` (absolute value, or the expansion of a relative `step`).
    public var value: String?
    /// MQTT QoS 0, 1 or 2.
    public var qos: Int = 1
    /// MQTT retain flag.
    public var retain: Bool = false
}

/// One discrete action.
public struct ActionConfig: Sendable, Equatable {
    /// The action's name (unique; `hold` is reserved).
    public var name: String
    /// The writes published when the action is chosen (empty: publish nothing).
    public var writes: [WriteConfig]
    /// The action mask condition; nil = always allowed.
    public var allowed: String?
    /// The incumbent command value that corresponds to this action (for `incumbent`).
    public var incumbentValue: Double?
}

/// What the controller in charge now does, observed from its actuator topic. The same shape
/// describes the `applied` section: where the plant reports the action it actually applied.
public struct IncumbentConfig: Sendable, Equatable {
    /// The incumbent's actuator topic (filter).
    public var topic: String
    /// JSON path of the command value; nil for a raw payload.
    public var path: [JSONPathElement]?
    /// The JSON path as written.
    public var pathText: String?
    /// When the nearest action's value is farther than this, the command maps to no action. nil = any distance.
    public var maxDistance: Double?

    /// An incumbent observed on `topic`.
    public init(topic: String, path: [JSONPathElement]? = nil, pathText: String? = nil, maxDistance: Double? = nil) {
        self.topic = topic
        self.path = path
        self.pathText = pathText
        self.maxDistance = maxDistance
    }
}

/// The `control_plane` section: how the gateway's commands (`<prefix>/cmd/<verb>`) are checked.
public struct ControlPlaneConfig: Sendable, Equatable {
    /// `signed` (default): a state-changing command needs an Ed25519 signature by a trusted key
    /// (docs/security.md). `none`: a lab's opt-out; unsigned commands are obeyed, the gateway
    /// warns at start and its status says `"auth":"none"`.
    public enum Auth: String, Sendable, CaseIterable { case signed, none }
    /// Whether commands must be signed. Default `.signed`.
    public var auth: Auth = .signed

    /// The defaults (signed commands).
    public init() {}
}

/// What to do when a decision cannot be trusted.
public struct SafetyConfig: Sendable, Equatable {
    /// What to do instead of deciding.
    public enum Response: String, Sendable, CaseIterable { case fallback, hold }
    /// When a signal used by the state is stale. Default `fallback`.
    public var onStale: Response = .fallback
    /// When a signal used by the state is invalid or missing. Default `fallback`.
    public var onInvalid: Response = .fallback
    /// A range-normalised feature beyond ±(1 + margin) is out of distribution; nil = no check. Default 0.5.
    public var oodMargin: Double? = 0.5
    /// What to do when out of distribution. Default `fallback`.
    public var onOOD: Response = .fallback
    /// Expression that is true while the plant is in hand (manual) mode: EdgeQ then publishes nothing.
    public var handOverride: String?
    /// What to do in control when the state is outside the served model's training support.
    public enum SupportResponse: String, Sendable, CaseIterable {
        /// Give the plant back to its incumbent (through the `handover` writes) until the state
        /// has been inside the support for `supportHold` ticks in a row.
        case incumbent
        /// The mapping's `actions.fallback` on that tick.
        case fallback
        /// Publish nothing on that tick.
        case hold
        /// Act on the model's choice anyway (the state is still counted).
        case none
    }
    /// A state input beyond the served model's training box (`QModel.support`) widened by this
    /// share of its width on each side is outside the support; nil = no check. Default 0.5.
    public var supportMargin: Double? = 0.5
    /// What to do outside the support. The loader's default is `incumbent` when the mapping
    /// has a `handover` section, else `fallback`.
    public var onUnsupported: SupportResponse = .fallback
    /// With `incumbent`: ticks in a row inside the support before the model takes the plant
    /// back (on the last of them). Default 8.
    public var supportHold: Int = 8

    /// The defaults.
    public init() {}
}

/// The `learning` section, consumed by the learner.
public struct LearningConfig: Sendable, Equatable {
    /// Hidden layer widths. Default [64, 64].
    public var hidden: [Int] = [64, 64]
    /// Dueling heads. Default false.
    public var dueling = false
    /// Discount factor in [0, 1). Default 0.99.
    public var gamma = 0.99
    /// Mini-batch size. Default 256.
    public var batchSize = 256
    /// Adam learning rate. Default 0.0005.
    public var learningRate = 0.0005
    /// Gradient steps between target-network copies. Default 1000.
    public var targetUpdate = 1000
    /// n-step returns. Default 1.
    public var nStep = 1
    /// Exploration in control mode: ε from `start` to `end` over `decaySteps` decisions, at most
    /// `budget` × decisions explorative. Default all 0 (no exploration in control).
    public var epsilonStart = 0.0
    /// Final ε (see `epsilonStart`).
    public var epsilonEnd = 0.0
    /// Decisions over which ε decays.
    public var epsilonDecaySteps = 0
    /// At most this fraction of control decisions explorative.
    public var explorationBudget = 0.0
    /// Weight of the conservative (CQL) term. Default 0.1.
    public var cqlWeight = 0.1
    /// The weights each retraining starts from (`learning.warm_start`). Default `.served`.
    public var warmStart: WarmStart = .served

    /// Where a retraining takes its starting weights.
    public enum WarmStart: String, Sendable, Equatable, CaseIterable {
        /// The served model (none served: fresh weights).
        case served
        /// The newest stored version that is not quarantined — a candidate that passed its
        /// checks, trialled or not, or a fleet model — so that training goes on from where the
        /// last retraining ended even when its candidate lost its trial; the served model when
        /// that one does not load or has another shape.
        case newest
    }
    /// Apply the conservative term to every logged row, not only the incumbent's. Default false.
    public var cqlOnAllTransitions = false
    /// Double DQN targets (the online network picks the next action, the target network values
    /// it); false: the target network's max. Default true.
    public var doubleDQN = true
    /// Polyak averaging of the target network after every update, θ⁻ ← (1 − τ)θ⁻ + τθ, in
    /// (0, 1]; nil: a hard copy every `targetUpdate` updates. Default nil.
    public var polyakTau: Double?
    /// Threshold δ of the Huber TD loss (quadratic below δ, linear above). Default 1.
    public var huberDelta = 1.0
    /// Gradients are scaled down to this global L2 norm before each Adam step. Default 10.
    public var maxGradNorm = 10.0
    /// Prioritized replay: priority exponent α in (0, 1]; nil: uniform replay. Default nil.
    public var prioritizedAlpha: Double?
    /// Prioritized replay: importance-sampling exponent β at the start, in [0, 1]; annealed
    /// linearly to 1 over `betaAnnealUpdates`. Default 0.4 (used only with `prioritizedAlpha`).
    public var prioritizedBeta = 0.4
    /// Prioritized replay: updates over which β goes to 1. Default 20000.
    public var betaAnnealUpdates = 20000
    /// Gradient steps per retraining. Default 30000.
    public var updatesPerRetrain = 30000
    /// Retrain after this many new transitions; nil = not by count. Default 10000.
    public var retrainEveryTransitions: Int? = 10000
    /// Count-triggered retrainings start at least this many seconds apart (a flood of
    /// messages reaches any count many times a second); 0 = no spacing. Default 10 minutes.
    public var retrainMinSpacing: Double = 600
    /// Retrain at this interval in seconds; nil = not by time. Default nil.
    public var retrainInterval: Double?
    /// The time limit of every retraining on the gateway, in seconds (`retrain.seconds`); nil =
    /// none. A `cmd/retrain` with its own `seconds` wins. Bounds the distillation's teacher and
    /// student too (their shares of it). Default nil.
    public var retrainSeconds: Double?
    /// Keep logged transitions this many seconds. Default 90 days.
    public var retention: Double = 90 * 86400
    /// How a retrained candidate is promoted. Default: a switchback trial (`trial`).
    public var promotion: Promotion = .trial
    /// The switchback trial's settings (`promotion.trial`), used by `promotion: trial`.
    public var trial = TrialConfig()
    /// Distillation in retraining (`learning.distill`): off by default.
    public var distill = DistillConfig()
    /// Model rollouts in retraining (`learning.rollouts`): off by default.
    public var rollouts = RolloutConfig()
    /// After a promotion, the share of blocks the previous controller keeps as a control group
    /// the guard compares the served model with, in [0, 0.5]; 0 turns that guard off. Default 0.1.
    public var controlShare = 0.1
    /// The control-group guard compares the served model with the control group over this many
    /// recent block pairs. Default 20.
    public var guardPairs = 20
    /// Probation after a promotion: the control-group guard's first this-many cycles have two
    /// blocks each (a control block beside every served block) before the cycles of
    /// round(1 / `controlShare`) blocks begin, so the guard gets its first pairs within days on
    /// a plant with long blocks. 0: none. Default 0.
    public var probationPairs = 0
    /// Probation when the plant leaves what the served model's trial saw: when an exogenous
    /// signal goes beyond the range it had over the promoting trial (widened by a tenth of that
    /// range on each side), the control-group guard runs this many cycles of two blocks, as
    /// after a promotion, and the range grows to the new value. 0: off. Default 4.
    public var noveltyPairs = 4
    /// The plant model's pre-trial estimate keeps a candidate it predicts worse out of its
    /// trial, except every this-many-th in a row, which gets its trial anyway (an audit of the
    /// estimate); nil: no audit (every candidate predicted worse is kept out). Default 4.
    public var pretrialAuditEvery: Int? = 4
    /// Minimum agreement with the incumbent's logged actions for a candidate to pass. Default 0.5.
    public var minAgreement = 0.5
    /// Live guard: roll back when the rolling reward is worse than the incumbent baseline by more than this fraction. Default 0.05.
    public var rollbackMargin = 0.05
    /// Live guard: control ticks in the rolling window compared with the incumbent's baseline.
    public var guardWindow = 288
    /// shadow-first promotion: ticks a candidate is compared with the live decisions.
    public var shadowTicks = 288
    /// Model versions kept in the store (besides the served one and the rollback target).
    public var keepVersions = 10
    /// Check: int8 and fp32 must pick the same action on at least this share of held-out states.
    public var minQuantizationAgreement = 0.99
    /// Check: |Q| of greedy and logged actions at most this factor over max|r| / (1 − γ).
    public var qBoundSlack = 1.5
    /// Check: at most this share of probed states may get an action never logged near them.
    public var maxUnsupported = 0.25
    /// Check `incumbent_agreement`: a held-out row also counts as agreeing when the candidate
    /// values the incumbent's logged action within τ of its own pick, τ being this share of the
    /// 99.9th percentile of one-step |reward| over the incumbent's training rows
    /// (`checks.agreement_tie`; 0: its pick must be the logged action). Default 0: strict
    /// (docs/learning.md, "Agreement up to near-ties": measured through the gateway, counting
    /// near-ties passed nearly every candidate, catastrophic ones among them).
    public var agreementTie = 0.0
    /// Check of a candidate distilled from the plant model (`learning.distill`): on at least
    /// this share of the held-out valued states it picks the teacher's best action or one the
    /// teacher values within the near-tie tolerance of it (`checks.teacher_agreement`). Default 0.9.
    public var minTeacherAgreement = 0.9
    /// Check: usable transitions needed to retrain at all.
    public var minRows = 200
    /// Gradient updates of each of the report's two fitted Q evaluations (`checks.fqe_updates`;
    /// a figure, not a check; 0: not run). Default 4000.
    public var fqeUpdates = 4000

    /// The defaults.
    public init() {}

    /// How a candidate that passed its checks is served.
    public enum Promotion: String, Sendable, CaseIterable {
        /// An operator promotes it (`<prefix>/cmd/promote`).
        case manual
        /// Served as soon as it passed its checks.
        case auto
        /// Replaced by `trial`; the loader refuses it (its comparison, the candidate's own
        /// promises against the live outcomes, could not show that the candidate controls
        /// better). Kept so that gateway code written for it still compiles until it is removed.
        case shadowFirst = "shadow-first"
        /// A switchback trial on the plant: the candidate and the current controller take turns
        /// in randomized block pairs (`promotion.trial`); promoted only when the candidate is
        /// better with the configured confidence (or not worse than the stated margin).
        case trial
    }
}

/// The switchback trial's settings: the mapping's `learning.promotion.trial` section
/// (docs/mapping.md, docs/learning.md "The switchback trial and the control group").
///
/// The candidate and the reference controller take turns in blocks, two blocks (one each, in
/// random order) to a pair; per pair the difference of the block returns is scored.
public struct TrialConfig: Sendable, Equatable {
    /// How long a block lasts.
    public enum Block: Sendable, Equatable {
        /// A fixed number of ticks (continuing plants); the first `burnIn` are not scored.
        case ticks(Int)
        /// One whole episode (episodic plants): the block's return is the episode's return.
        case episode
    }
    /// Block length. Default 96 ticks.
    public var block: Block = .ticks(96)
    /// Ticks at the start of each tick block that are not scored (the plant settles after the
    /// switch); less than the block length; 0 for episode blocks. Default 8.
    public var burnIn = 8
    /// Confidence of every verdict, in (0.5, 1). Default 0.95.
    public var confidence = 0.95
    /// Non-inferiority margin as a share of the reference's |block return|, ≥ 0: promote when
    /// the candidate is not worse than this (0: superiority, it must be better). Default 0.
    public var margin = 0.0
    /// Budget: block pairs at most (the looks the confidence is split over run from `minPairs`
    /// to here). Default 30.
    public var maxPairs = 30
    /// Budget: ticks at most (nil: no tick budget). Default nil.
    public var maxTicks: Int?
    /// Pairs before any verdict, ≥ 2. Default 4.
    public var minPairs = 4
    /// Confidence with which a worse candidate is stopped, in (0.5, 1), without the correction
    /// for repeated looks: a stop only loses a candidate (it never serves one), so it may come
    /// early, which keeps what a worse candidate costs the plant small. nil: the same corrected
    /// bound as promotion (a stop is then as rare as a false promotion). Default 0.9.
    public var stopConfidence: Double? = 0.9
    /// Share of the promotion's error budget (α = 1 − confidence) spent at the last look, the
    /// one after the budget's last pair (`maxPairs`), in (0, 1); the rest is split evenly over
    /// the looks before it. Weighted Bonferroni: the looks' levels still add up to α, so an
    /// equal candidate is promoted with probability at most α, and a candidate a little better
    /// than the reference — one that runs the whole budget — is promoted far more often than
    /// with every look at α / L (docs/learning.md, "The trial's statistics"). nil: every look
    /// at α / L (the split before 2026-12-05). Default 0.5.
    public var lastLookShare: Double? = 0.5
    /// Futility share, in (0, 1): stop the trial without promoting (verdict `futile`) once the
    /// candidate is shown, with `stopConfidence` (like a reject: a stop only loses a candidate),
    /// not to be better than this share of the reference's |block return| (with a margin: its
    /// margin-shifted difference not above it). Two controllers that do exactly the same (every
    /// pair's difference 0) end after `minPairs` pairs instead of running the whole budget, and
    /// near-equal ones sooner on average; a candidate better than the share is stopped this way
    /// at a look with probability at most 1 − stopConfidence. It never promotes anything. nil:
    /// no futility stop (the budget ends a trial with no verdict). Default 0.01.
    public var futility: Double? = 0.01
    /// Whether a clearly worse candidate may be rejected before `minPairs` pairs, with the
    /// spread of a pair that an earlier trial on the device measured pooled with its own (the
    /// early stop; docs/operations.md, "The trial and the guard"). It only ever rejects. false:
    /// no verdict before `minPairs` pairs. Default true.
    public var earlyStop = true
    /// Stop-loss, a share > 0 of the reference's |block return|: the trial ends at once with
    /// `reject`, in the middle of the candidate's block, when that block has already lost more
    /// than this share of a reference block against the reference's latest scored block,
    /// tick for tick (its scored ticks so far × the reference block's reward per scored tick,
    /// minus what the candidate's scored ticks earned; adjusted by the exogenous baseline when
    /// the trial is) — and more than five standard deviations of what the ticks' spread alone
    /// makes of that deficit, so that rewards hovering around 0 do not make a hair trigger, and
    /// more than four times what the reference's own blocks' spread and five times what the
    /// pairs' spread make of it once those are known. A clearly wrecking candidate is stopped within its first block instead of
    /// running the whole of it (on the thermal zone, candidates losing 0.7–2 blocks in one block
    /// were seen). It watches the ticks the trial scores (not the burn-in). The share is doubled
    /// while the pairs' spread is not known (fewer than two pairs, no earlier trial's), and
    /// doubled again before the trial's first scored reference block, when an unadjusted trial
    /// compares with the controller in charge's rate over about a block of ticks before it (raw
    /// rewards; an adjusted trial waits for its first reference block).
    /// It may stop a candidate that is not worse when the
    /// plant's level moves by more than the limit between two blocks for reasons the exogenous
    /// adjustment does not explain; raise it or turn it off there. nil: no stop-loss. Default 0.5.
    public var stopLoss: Double? = 0.5
    /// Whether block pairs are adjusted by the candidate's exogenous baseline (a prediction of
    /// the reward from `role: exogenous` signals, fitted in retraining; docs/learning.md,
    /// "Adjusting for the weather"). Default `.exogenous`.
    public var adjust: Adjustment = .exogenous

    /// What the trial adjusts its pair differences for.
    public enum Adjustment: String, Sendable, Equatable, CaseIterable {
        /// Subtract the difference of the two blocks' exogenous baselines, when the retraining
        /// fitted one that helped on held-out data.
        case exogenous
        /// Compare raw block returns.
        case none
    }

    /// The defaults.
    public init() {}
}

/// A plant model class the mapping's `model.classes` may name (docs/mapping.md, "model";
/// docs/learning.md, "The plant model").
public enum PlantModelClassName: String, Sendable, CaseIterable, Equatable {
    /// The low-order linear model with dead time (identified on simulation error).
    case linear
    /// The MLP ensemble (its members' disagreement is the uncertainty).
    case ensemble
}

/// Distillation in retraining: the mapping's `learning.distill` section (docs/mapping.md,
/// docs/learning.md "Distillation in retraining"). When on and the retraining's plant model is
/// accepted, a receding-horizon planner on that model values logged states, a second candidate
/// is regressed on its values, and the retraining offers the better of the two candidates.
public struct DistillConfig: Sendable, Equatable {
    /// Distil a second candidate when the plant model is accepted. Default false.
    public var enabled = false
    /// The teacher's planning horizon in ticks. Default 64.
    public var horizon = 64
    /// Logged states the teacher values at most (spread evenly over the training rows). Default 2000.
    public var states = 2000
    /// The student's Adam updates. Default 30000.
    public var updates = 30000
    /// The teacher's own time limit in seconds (nil: none): it stops valuing states when it is
    /// spent, whether or not the retraining has a limit of its own (with one, the earlier of
    /// the two ends it). Default 180: on the thermal plant (5 actions, horizon 64, an MLP
    /// ensemble) the teacher values about a sixth of a second a state on one core, so the
    /// default 2,000 states would take longer than a retraining should.
    public var teacherSeconds: Double? = 180
    /// Rounds of the student on the plant model (DAgger, docs/learning.md "The student's own
    /// states in retraining"): each round the latest student runs in closed loop on the plant
    /// model from logged starts, the teacher values states it visited (up to half of `states` a
    /// round), and the student is trained again on every state valued so far. 0: the logged
    /// states only. Default 2.
    public var rounds = 2
    /// The distilled candidate's training support (the box of states the gateway lets it decide
    /// in; docs/operations.md, "Outside the model's support"). Default `.log`.
    public var support = Support.log

    /// Which states a distilled candidate's support box holds.
    public enum Support: String, Sendable, Equatable, CaseIterable {
        /// The log's rows of the controllers the gateway trusts, as for a Q-learning candidate.
        case log
        /// Those and the states the student was taught on: the logged states the teacher valued
        /// and the states it visited on the plant model in its rounds — where its own decisions
        /// take the plant, which the incumbent's log never shows (a deeper night setback). Only
        /// the switchback trial then judges it there (docs/learning.md, "The teacher in control,
        /// and the student's support").
        case taught
    }

    /// The defaults.
    public init() {}
}

/// Model rollouts in retraining: the mapping's `learning.rollouts` section (docs/mapping.md,
/// "learning"; docs/learning.md, "Model rollouts"). When it is on and the plant model is
/// accepted, short runs of the newest network on the plant model, from logged states, join the
/// log's rows in the Q-learning's replay (Dyna / MBPO), each synthetic reward lowered by the
/// model's uncertainty (MOPO).
public struct RolloutConfig: Sendable, Equatable {
    /// Add model rollouts when the plant model is accepted. Default false.
    public var enabled = false
    /// Logged start states per retraining (drawn at random from the training part of the plant
    /// data). Default 300.
    public var starts = 300
    /// Steps per rollout (fewer where the logged stretch ends, the model's end condition holds
    /// or the predicted state is unusable). Default 50: on cart-pole, 5-step rollouts (2,000 of
    /// them) slowed the learning down and 30–100-step ones sped it up (docs/learning.md,
    /// "Model rollouts").
    public var horizon = 50
    /// Share of the rollout's decisions taken at random among the allowed actions; the rest are
    /// the rollout policy's greedy choices (the warm-start network; every decision is random
    /// when there is none). Default 0.2.
    public var epsilon = 0.2
    /// λ of the synthetic reward r − λ·u, u the model's uncertainty after the step (its
    /// members' spread, in the controlled signals' units). Default 1.
    public var uncertaintyPenalty = 1.0
    /// A rollout ends before a step whose uncertainty exceeds this (nil: no limit). Default nil.
    public var maxUncertainty: Double?
    /// The most synthetic transitions a retraining may make (`starts × horizon`): the replay
    /// holds them beside the log's rows.
    public static let maxTransitions = 10_000_000

    /// The defaults (off).
    public init() {}
}

/// One message of the `handover` section: a fixed payload, rendered once when the mapping is
/// loaded (a handover must be publishable whatever the signals say, and a Last Will is
/// handed to the broker before it is needed).
public struct HandoverWrite: Sendable, Equatable {
    /// The topic written to (no wildcards).
    public var topic: String
    /// The payload bytes (the `payload` template with `{{value}}` filled in).
    public var payload: [UInt8]
    /// MQTT QoS 0, 1 or 2.
    public var qos: Int = 1
    /// MQTT retain flag.
    public var retain: Bool = false

    /// A write of `payload` to `topic`.
    public init(topic: String, payload: [UInt8], qos: Int = 1, retain: Bool = false) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

/// The `handover` section: what the gateway publishes when it takes control of the plant and
/// when it gives control back to the incumbent (docs/mapping.md, "handover").
public struct HandoverConfig: Sendable, Equatable {
    /// Published when the gateway takes control (in file order).
    public var take: [HandoverWrite] = []
    /// Published when the gateway gives control back: to shadow, by the live guard, by a
    /// fault, on shutdown (in file order).
    public var give: [HandoverWrite] = []
    /// Index into `give` of the write the broker publishes when the gateway dies while in
    /// control (the Last Will of the gateway's handover connection); nil: no Last Will.
    public var willIndex: Int?
    /// Keep-alive of the handover connection in seconds (≥ 5): the broker declares the
    /// gateway gone, and publishes the Last Will, within 1.5 × this. Default 5.
    public var keepAlive: Int = 5

    /// No writes, keep-alive 5 s.
    public init() {}

    /// The `give` write that is the Last Will, if any.
    public var will: HandoverWrite? { willIndex.flatMap { give.indices.contains($0) ? give[$0] : nil } }
}

/// The `fleet` section: ship the experience log to a fleet learner over the broker
/// (docs/fleet.md). Absent: nothing is shipped.
public struct FleetConfig: Sendable, Equatable {
    /// The fleet's topic prefix (e.g. `fleet/ahu`): batches go to `<topic>/experience/<gateway id>`,
    /// acknowledgements come on `<topic>/ack/<gateway id>`.
    public var topic: String
    /// Rows per batch, at most (default 500).
    public var batchRows: Int = 500
    /// Seconds between two looks at the log when there is nothing to send (default 1 s).
    public var interval: Double = 1
    /// The QoS of the batches (1 or 2; default 1).
    public var qos: Int = 1
    /// Batches sent and not yet acknowledged, at most (default 4).
    public var window: Int = 4
    /// Seconds without an acknowledgement after which every unacknowledged batch is sent again
    /// from the cursor (default 10 s).
    public var ackTimeout: Double = 10
    /// Whether the gateway takes the fleet learner's models from `<topic>/model` (verified,
    /// stored as a version, then its own trial or what `promotion` says; default true).
    public var models = true
    /// The largest fleet model, in bytes, the gateway reassembles (default 16 MiB); a manifest
    /// announcing more is refused (`too_large`).
    public var maxModelSize = 16 << 20
    /// How the shipper's two threads (`edgeq-fleet`, `edgeq-fleet-net`) are scheduled against
    /// the decision thread (default `normal`; docs/fleet.md, "The shipper's priority").
    public var priority: Priority = .normal
    /// The zlib level of the batches: 1 fastest … 9 smallest, 0 not compressed (default 1:
    /// measured, 3 % more bytes than level 6 for a quarter less of the shipper's CPU; docs/fleet.md).
    /// Every level reads back the same rows; a learner reads compressed and plain batches alike.
    public var deflateLevel = 1

    /// The scheduling of the shipper's threads (Linux: per thread).
    public enum Priority: String, Sendable, CaseIterable {
        /// The process's own priority, as the gateway's other threads (the default). On a busy
        /// core a decision that wakes while the shipper runs a batch may wait for its time slice.
        case normal
        /// nice 10, as a retraining: a smaller share of a busy core; the time-slice wait remains.
        case low
        /// `SCHED_IDLE`: a waking decision takes the core from the shipper at once, but while
        /// anything else keeps the cores busy the shipper gets almost no CPU and falls behind
        /// (rows that retention removes before they were shipped never reach the learner).
        /// Falls back to nice 19 when the kernel refuses `SCHED_IDLE`.
        case idle
    }

    /// A fleet section with the defaults for everything but the topic.
    public init(topic: String) { self.topic = topic }

    /// `<topic>/experience/<gateway>`.
    public func experienceTopic(gateway: String) -> String { "\(topic)/experience/\(gateway)" }
    /// `<topic>/ack/<gateway>`.
    public func ackTopic(gateway: String) -> String { "\(topic)/ack/\(gateway)" }
    /// `<topic>/model`: the fleet model's manifest (retained).
    public var modelTopic: String { "\(topic)/model" }
    /// `<topic>/model/chunk/+`: the fleet model's chunks (retained).
    public var modelChunkFilter: String { "\(topic)/model/chunk/+" }
    /// `<topic>/verdict/<gateway>`: what the gateway did with the newest fleet model (retained).
    public func verdictTopic(gateway: String) -> String { "\(topic)/verdict/\(gateway)" }
}
