#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import EdgeQCore
import EdgeQLog
import EdgeQMQTT
import EdgeQNet
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Logging
import Synchronization
import EdgeQRetrain
import EdgeQSparkplug

/// How `edgeq run` starts a gateway: the mapping file plus the command line's overrides.
public struct GatewayOptions: Sendable {
    /// The parsed mapping file.
    public var map: TopicMap
    /// Broker URL instead of the mapping file's first one.
    public var broker: String?
    /// Data directory instead of the mapping file's.
    public var dataDirectory: String?
    /// Mode to start in instead of the persisted one (or the mapping file's).
    public var mode: GatewayMode?
    /// Port for Prometheus metrics (0: any free port; nil: no metrics server).
    public var metricsPort: UInt16?
    /// Address the metrics server binds.
    public var metricsHost: String = "127.0.0.1"
    /// Inference precision: mixed (default: int8, fp32 on int8's near-ties), int8 or fp32.
    public var precision: Precision = .mixed
    /// Seconds between status refreshes carrying the counters (status is also published on
    /// every mode or model change).
    public var statusInterval: Double = 5
    /// Control mode: the watchdog publishes the fallback when no decision was made for this
    /// many seconds (nil: 3 periods for a periodic tick, off for a trigger tick).
    public var watchdogSeconds: Double?
    /// Thresholds of a candidate's checks (nil: defaults, support limit from the mapping file).
    public var checkPolicy: CheckPolicy?
    /// Ignore the mapping file's retrain schedule (retrain only on `cmd/retrain`), e.g. for a demo.
    public var scheduleEnabled = true
    /// The shortest time between two retrainings started by `retrain.every_transitions`, in
    /// seconds, instead of the mapping file's `retrain.min_spacing` (default 10 minutes): a
    /// flood of messages logs thousands of transitions a second and would otherwise start one
    /// retraining after another, each reading the whole log.
    public var countRetrainSpacing: Double?
    /// After a burst of messages or a retraining, also hand the executable's read-only pages
    /// back to the kernel (`edgeq run` sets it unless `--no-release-startup-pages`; see
    /// docs/operations.md, "Memory"). Off by default: a process that embeds the gateway decides.
    public var releaseCodePages = false
    /// Handle each message (decode, and the tick it triggers) on the MQTT network thread, inside
    /// libmosquitto's callback, instead of handing it to the decision thread: one thread
    /// wake-up less between a sensor message and the command (docs/operations.md, "Threads").
    /// The decision thread keeps the periodic ticks. Measured better (docs/benchmarks.md, e2e),
    /// hence the default; `edgeq run --no-inline-decisions` restores the hand-off.
    public var inlineDecisions = true
    /// Time limit of the experience log's integrity check at start (`PRAGMA quick_check`), in
    /// seconds; a damaged log is moved aside and a fresh one started (docs/log.md, "Damage").
    public var logCheckSeconds: Double = 5
    /// systemd's notification socket (`edgeq run` under a `Type=notify` unit): `READY=1` once
    /// connected and deciding, `WATCHDOG=1` while the decision thread is alive, `STOPPING=1` at
    /// shutdown (ServiceNotifier.swift, docs/operations.md). Nil: nothing is sent.
    public var serviceNotifier: ServiceNotifier?
    /// The one seed of the gateway's random draws — the exploration in control, each trial's
    /// block order, the control group's blocks — each derived from it and the model versions
    /// involved (`SeededGenerator.derive`), so that a run can be replayed (docs/operations.md,
    /// "Replaying a run's random draws"). Nil: drawn at start (at most
    /// `SeededGenerator.largestPrintableSeed`), logged and shown in the status.
    public var seed: UInt64?

    public init(map: TopicMap) { self.map = map }
}

/// Errors that stop a gateway from starting; each says what to do.
public struct GatewayError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A model that passed its checks, ready to serve.
final class ServedModel: Sendable {
    let version: Int
    let sha256: String
    /// The name of the key whose signature it passed (`device`, or a `keys/models/` key).
    let signedBy: String
    let model: QModel
    /// The exogenous baseline stored beside it (`baseline.json`, written by the retraining that
    /// made it; nil: none, e.g. a fleet model): its trial and guard adjust with it when accepted.
    let baseline: ExogenousBaseline?
    /// The switchback trial that promoted it (`trial.json` beside it, verdict `promote`; nil:
    /// none, e.g. promoted by a command): the guard borrows its estimate of the pairs' noise
    /// when its control group is that trial's reference.
    let promotingTrial: PromotingTrial?

    init(version: Int, sha256: String, signedBy: String = "", model: QModel, baseline: ExogenousBaseline? = nil,
         promotingTrial: PromotingTrial? = nil) {
        self.version = version
        self.sha256 = sha256
        self.signedBy = signedBy
        self.model = model
        self.baseline = baseline
        self.promotingTrial = promotingTrial
    }
}

/// An earlier trial's estimate of the pairs' noise, for a new trial's early stop
/// (`SwitchbackTrial`, "Early stop"): of the trials on this device with the same blocks and
/// adjustment and at least `min_pairs` pairs, the widest spread (`Gateway.earlierTrialNoise`).
struct EarlierTrialNoise: Sendable, Equatable, Codable {
    /// The version whose trial measured it.
    var version: Int
    /// That trial's standard deviation of a pair difference.
    var sd: Double
    /// That trial's scored pairs.
    var pairs: Int

    /// As `SwitchbackTrial` pools it (nil when it estimates nothing).
    var noise: PairNoise? { PairNoise(standardDeviation: sd, pairs: pairs) }

    /// `{"version": "vN", "sd", "pairs"}` for events, `trial.json` and the status, or null.
    static func json(_ e: EarlierTrialNoise?) -> JSONValue {
        guard let e else { return .null }
        return .object(["version": .string("v\(e.version)"), "sd": .number(e.sd), "pairs": .number(Double(e.pairs))])
    }
}

/// What the control-group guard takes from the trial that promoted a model (`trial.json`).
struct PromotingTrial: Sendable, Equatable {
    /// The trial's reference: nil for the incumbent, else its version.
    var reference: Int?
    /// Whether its pair differences were adjusted by the exogenous baseline.
    var adjusted: Bool
    /// Its estimate of the pairs' noise (nil: no usable spread — fewer than two pairs, none, or
    /// a file written before the field existed).
    var noise: ControlGroupGuard.PairNoise?
    /// The range of each exogenous signal over its scored ticks ({name: [low, high]}; empty in a
    /// `trial.json` written before the field existed).
    var conditions: [String: [Double]] = [:]

    /// Reads `trial.json`; nil when there is none, it is unreadable, or its verdict is not
    /// `promote`.
    static func load(from url: URL) -> PromotingTrial? {
        guard let data = try? Data(contentsOf: url),
              let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              o["verdict"] as? String == TrialVerdict.promote.rawValue,
              let reference = o["reference"] as? String else { return nil }
        guard let referenceGroup = ModelStore.ControlGroupRecord(name: reference) else { return nil }
        var noise: ControlGroupGuard.PairNoise?
        if let sd = o["sd"] as? Double, let pairs = o["pairs"] as? Int { noise = ControlGroupGuard.PairNoise(standardDeviation: sd, pairs: pairs) }
        var conditions: [String: [Double]] = [:]
        for (name, value) in o["conditions"] as? [String: Any] ?? [:] {
            if let r = value as? [Double], r.count == 2, r[0].isFinite, r[1].isFinite, r[0] <= r[1] { conditions[name] = r }
        }
        return PromotingTrial(reference: referenceGroup.version, adjusted: o["adjusted"] as? Bool ?? false, noise: noise, conditions: conditions)
    }
}

/// The gateway: the data path (docs/architecture.md) on one decision thread (the caller of `run()`),
/// with the MQTT network thread, the log writer thread, the metrics server and a control
/// queue (commands, model loading: everything that may touch the disk) beside it.
///
/// The decision path (message in → command out) never touches the disk, never waits for
/// training and takes no lock held by anything slow: a new model is handed over through a
/// mutex held only for a pointer swap, and picked up between two decisions.
public final class Gateway: Sendable {
    // Sendable, checked by the compiler: every stored property is a `let` of a Sendable type
    // (atomics, mutexes, the MQTT client, the log writer, …). The decision state lives in
    // `decision`, a `Mutex<DecisionState>`; the run loop's own counters are locals of `run()`.

    public let map: TopicMap
    public let controlPlane: ControlPlane
    public let dataDirectory: URL
    let options: GatewayOptions
    /// The seed every random draw of this run derives from (`GatewayOptions.seed`, or drawn).
    public let seed: UInt64
    let logger: Logger
    let client: MQTTClient
    let log: ExperienceLog
    let writer: TransitionWriter
    let store: ModelStore
    /// Model signatures: the device key, the keys trusted for models, the mapping fingerprint,
    /// the refusals (ModelTrust.swift).
    let modelTrust: ModelTrust
    let metrics: GatewayMetrics
    let metricsServer: MetricsServer?
    let control = DispatchQueue(label: "edgeq.control")

    let modeState = Atomic<Int>(0)  // 0 shadow, 1 control
    let modeReason = Mutex<String>("start")
    let served = Mutex<ServedModel?>(nil)
    let servedGeneration = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    let lastDecisionNanos = Atomic<UInt64>(0)
    /// When the decision thread's loop last went round with the decision lock free (monotonic
    /// ns): what the systemd watchdog checks (`startServiceWatchdog`). Written by the loop at
    /// most every `Gateway.loopBeatSpacing`, never per message.
    let loopBeat = Atomic<UInt64>(0)
    let finished = DispatchSemaphore(value: 0)
    let checkPolicy: CheckPolicy
    let retraining = Atomic<Bool>(false)
    /// Held while a retraining frees `retraining` and publishes its last event (`done` or
    /// `failed`), and while one publishes `started`: the next retraining's `started` comes after
    /// the previous one's last event.
    let retrainAnnouncement = Mutex(())
    let lastCandidate = Mutex<Int?>(nil)
    /// Candidates the pre-trial estimate kept out of their trial in a row (since the last one
    /// that got a trial): every `promotion.pretrial_audit`-th gets its trial anyway.
    let pretrialKeptOut = Mutex<Int>(0)
    let lastRetrain = Mutex<RetrainReport?>(nil)
    /// The last accepted plant model fit, handed to the next retraining to reuse while the log
    /// has not grown enough since (`Retrainer.plantFitReuse`); only the retraining thread uses it.
    let plantFit = Mutex<PlantModelFit?>(nil)
    let transitionsAtLastRetrain = Atomic<Int>(0)
    let lastRetrainTime = Atomic<UInt64>(Date().timeIntervalSince1970.bitPattern)
    /// When the last retraining started by `retrain.every_transitions` started (monotonic ns, 0: none).
    let lastCountRetrainStart = Atomic<UInt64>(0)
    /// The burst detector of `HeapTrim` (used on the control queue).
    let heapTrim = Mutex(HeapTrim())
    /// The guard's last event, its figures (TrialControl.swift), the trial's figures.
    let lastGuardEvent = Mutex<String?>(nil)
    let guardSummary = Mutex<GuardSummary?>(nil)
    let trialStatus = Mutex<[String: JSONValue]?>(nil)
    /// A trial was handed to the decision thread and is not decided yet (control queue).
    let trialRunning = Atomic<Bool>(false)
    /// The newest candidate waiting for the running trial to be decided.
    let waitingCandidate = Mutex<ServedModel?>(nil)
    /// The candidate on trial, handed to the decision thread (picked up when the generation moves).
    let candidateSlot = Mutex<ServedModel?>(nil)
    /// The earlier trial's noise its trial's early stop may borrow, set with `candidateSlot`
    /// (`earlierTrialNoise`, for the adjustment the candidate's baseline gives; nil: none).
    let candidateNoise = Mutex<EarlierTrialNoise?>(nil)
    /// What the control queue read from the end of the log for the candidate's trial
    /// (`trialStart`): its exogenous baseline warmed there (nil: none, or at rest) and the
    /// controller in charge's rate over its last block of scored ticks, raw and less that
    /// baseline (the stop-loss's yardstick before the trial's first reference block; nil: none).
    /// Set with `candidateSlot`, taken by the decision thread when it picks the candidate up.
    let candidateStart = Mutex<(version: Int, evaluator: BaselineEvaluator?, rate: RecentResidualRate?)?>(nil)
    /// The served model's exogenous baseline warmed on the end of the log, for its guard; set
    /// with `served` and taken by the decision thread when it picks the model up.
    let servedBaseline = Mutex<(version: Int, evaluator: BaselineEvaluator)?>(nil)
    let candidateGeneration = Atomic<Int>(0)
    /// The controller before the served model (the guard's control group; nil: the incumbent).
    let previousController = Mutex<ServedModel?>(nil)
    /// The guard's record read at start for the served model (`models/vN/guard.json`), taken by
    /// the decision thread's first pick-up of that model (then nil; a switch clears it).
    let restoredGuard = Mutex<GuardRecord?>(nil)
    /// The running trial's record read at start, taken by the decision thread when it picks up
    /// that candidate (`resumeTrialAtStart`).
    let resumingTrial = Mutex<TrialRecord?>(nil)
    /// The newest trial and guard records the decision thread handed over, not yet written: the
    /// control queue writes the newest one and skips those it replaced (with short blocks the
    /// queue would otherwise fsync once per block).
    let trialRecordSlot = Mutex<TrialRecord?>(nil)
    let guardRecordSlot = Mutex<(record: GuardRecord, generation: Int)?>(nil)
    /// The exogenous signals: their positions in `DecisionCore.signals` and names (a trial
    /// records their ranges; the guard watches closer beyond them).
    let exogenous: [(position: Int, name: String)]
    /// The conditions a trial records and the guard watches: each exogenous signal, then (with
    /// blocks of ticks, unless a cyclic feature reads it) "mean(<name>)", its exponential mean
    /// with a time constant of one block.
    let conditionNames: [String]
    /// That time constant in ticks (nil with episode blocks: no means).
    let conditionSmoothing: Double?
    /// The exogenous signals with a mean among the conditions (indices into `exogenous`; not
    /// those a cyclic feature reads).
    let conditionSmoothed: [Int]
    /// The served model's proven conditions as the status shows them ({name: [low, high]}) and
    /// the novel conditions seen since it was served.
    let provenConditions = Mutex<(ranges: [String: [Double]], novel: Int)>(([:], 0))
    /// The mode still to be written to the state file (control queue; see ModePersistence.swift).
    let pendingState = Mutex<PendingState>(PendingState())

    // Signed commands (GatewayCommands.swift, docs/security.md).
    /// The device's own key (signs the models this gateway trains).
    public let deviceKey: DeviceKey
    /// The keys trusted by role (`DATA/keys/<role>/NAME.pub`) plus the device key.
    public let trust: TrustStore
    /// Checks every command before it is parsed (control queue).
    let verifier: CommandVerifier
    /// Command messages handed over by the decision thread, not yet verified (bounded).
    let commandInbox = CommandInbox(capacity: Gateway.maxPendingCommands, maxBytes: Gateway.maxPendingCommandBytes)
    /// Wakes the command thread.
    let commandSignal = DispatchSemaphore(value: 0)
    /// Signalled when the command thread has ended.
    let commandThreadDone = DispatchSemaphore(value: 0)
    let modeChange = Mutex<ModeChange>(ModeChange(by: nil, at: Date().timeIntervalSince1970))

    /// The decision state: one owner at a time, proven by the compiler (see `DecisionState`).
    /// Taken by the network thread for message-triggered ticks and by the `run()` thread for
    /// periodic ones (and for every message with `--no-inline-decisions`); with one kind of
    /// tick it is never contended. (ThreadSanitizer does not see the futex under `Mutex` on
    /// Linux and may report races that are not there; the compiler's proof stands.)
    let decision: Mutex<DecisionState>
    /// Who the plant was told is in charge, and the handover connection carrying the `give`
    /// Last Will (Handover.swift).
    let handover: HandoverState
    /// Ships the experience log to the fleet learner (nil without a `fleet` section; FleetShipper.swift).
    let fleet: FleetShipper?
    /// The edge nodes and devices whose Sparkplug B metrics feed signals (empty without any):
    /// messages are classified and their protobuf decoded with it before the decision lock.
    let sparkplug: SparkplugLayout
    /// EdgeQ as a Sparkplug B edge node (the mapping's `sparkplug` section), if any.
    let sparkplugNode: SparkplugNode?
    /// The last decision's action (-2: none yet, -1: hold) and the last closed transition's
    /// reward (NaN: none yet), for the edge node's metrics.
    let lastActionIndex = Atomic<Int>(-2)
    let lastRewardBits = Atomic<UInt64>(Double.nan.bitPattern)

    /// Sets up every part; connects nothing yet.
    ///
    /// - Throws: `GatewayError` for a data directory that cannot be created, a log that
    ///   cannot be opened, a broker URL or credentials that are not usable, a metrics port
    ///   that cannot be bound.
    public init(_ options: GatewayOptions, logger: Logger = Logger(label: "edgeq.gateway")) throws {
        self.options = options
        self.logger = logger
        map = options.map
        let m = options.map
        let exo = m.loggedSignals.enumerated().compactMap { k, i in
            m.signals[i].role == .exogenous ? (position: k, name: m.signals[i].name) : nil
        }
        exogenous = exo
        if case .ticks(let b) = m.learning.trial.block {
            // No mean of a phase (a signal a cyclic feature reads: the plant's hour, weekday).
            let cyclic = m.cyclicSignals
            let smoothed = exo.indices.filter { !cyclic.contains(m.loggedSignals[exo[$0].position]) }
            conditionSmoothing = Double(b)
            conditionSmoothed = smoothed
            conditionNames = exo.map(\.name) + smoothed.map { "mean(\(exo[$0].name))" }
        } else {
            conditionSmoothing = nil
            conditionSmoothed = []
            conditionNames = exo.map(\.name)
        }
        controlPlane = ControlPlane(prefix: map.gateway.prefix)
        dataDirectory = URL(fileURLWithPath: options.dataDirectory ?? map.gateway.dataDirectory)
        do {
            try FileManager.default.createDirectory(at: dataDirectory, withIntermediateDirectories: true)
        } catch {
            throw GatewayError("cannot create the data directory \(dataDirectory.path): \(error.localizedDescription)")
        }
        let retentionHold: RetentionHold? = map.fleet == nil ? nil : RetentionHold()
        do {
            let path = dataDirectory.appendingPathComponent(ExperienceLog.defaultFileName).path
            let (opened, check) = try ExperienceLog.openForAppending(path: path, gatewayID: map.gateway.id,
                                                                      checkSeconds: options.logCheckSeconds)
            log = opened
            for r in opened.recoveries {
                logger.critical("the experience log was damaged: moved aside, a fresh log started (the damaged file is kept for inspection)", metadata: [
                    "log.path": "\(path)", "log.moved_to": "\(r.movedTo)", "log.problem": "\(r.problem)",
                ])
            }
            if case .unfinished(let seconds) = check {
                logger.warning("the experience log's integrity check did not finish within its time limit; the part checked is sound", metadata: [
                    "log.path": "\(path)", "log.check_seconds": "\(seconds)",
                ])
            }
            var wo = TransitionWriter.Options()
            // With a fleet, rows no learner acknowledged are kept past the retention (the shipper
            // releases them as acknowledgements come): nothing logged is lost to an outage.
            wo.retention = RetentionPolicy(maxRows: nil, maxAge: map.learning.retention, hold: retentionHold)
            wo.signalNames = map.loggedSignalNames
            writer = try log.makeWriter(options: wo, logger: logger)
        } catch {
            if error.kind == .readOnly { throw GatewayError("cannot write the experience log: \(error.message)") }
            throw GatewayError("cannot open the experience log in \(dataDirectory.path): \(error)")
        }
        // ---- Trust: signed commands (begin). The device key, the trusted keys and the command
        // verifier (GatewayCommands.swift); model signatures (ModelTrust) use the same two.
        let trusted = try GatewayTrust.load(map: map, dataDirectory: dataDirectory, logger: logger)
        deviceKey = trusted.device
        trust = trusted.trust
        verifier = trusted.verifier
        // ---- Trust: signed commands (end).
        store = try ModelStore(dataDirectory: dataDirectory)
        metrics = GatewayMetrics(map: map)
        // --- Signed models: the device key and the keys trusted for models (loaded above);
        // only a model signed for this mapping by one of them is served.
        modelTrust = ModelTrust(device: deviceKey, trust: trust, map: map, registry: metrics.registry)
        // --- end signed models

        var policy = options.checkPolicy ?? Retrainer(map: options.map).policy
        policy.servedPrecision = options.precision   // the agreement check measures the served path
        checkPolicy = policy
        let seed = options.seed ?? UInt64.random(in: 0...SeededGenerator.largestPrintableSeed)
        self.seed = seed
        decision = Mutex(DecisionState(map: map, explorationSeed: GatewaySeeds.exploration(seed)))
        sparkplug = SparkplugLayout(map: map)

        // MQTT: the client id is stable (persistent session), the Last Will says offline.
        do {
            var config = try BrokerConnection.configuration(for: map, broker: options.broker, clientID: map.gateway.clientID)
            if let sn = map.sparkplugNode {
                sparkplugNode = try SparkplugNode(config: sn, base: config, bdSeq: SparkplugNode.nextBdSeq(dataDirectory: dataDirectory), logger: logger)
            } else {
                sparkplugNode = nil
            }
            handover = HandoverState(map: map, base: config, registry: metrics.registry)
            if let f = map.fleet {
                fleet = try FleetShipper(config: f, gatewayID: map.gateway.id, dataDirectory: dataDirectory,
                                         logPath: log.path, base: config, fingerprint: map.fingerprint,
                                         modelKeys: trust.keys.filter { $0.role == .models }, retentionHold: retentionHold,
                                         registry: metrics.registry, logger: logger)
            } else {
                fleet = nil
            }
            config.session = .persistent(expiry: 3600)
            // With inline decisions the hand-off stays empty (the handler takes every message):
            // a small ring instead of 8,192 slots (≈ 0.4 MB).
            config.inboundCapacity = options.inlineDecisions ? 64 : 8192
            config.will = LastWill(topic: controlPlane.statusTopic,
                                   payload: Array(#"{"state":"offline","reason":"connection lost"}"#.utf8),
                                   qos: .atLeastOnce, retain: true)
            client = try MQTTClient(config, logger: logger)
        } catch let e as GatewayError {
            throw e
        } catch {
            throw GatewayError("MQTT: \(error)")
        }

        if let port = options.metricsPort {
            let registry = metrics.registry
            metricsServer = try MetricsServer(host: options.metricsHost, port: port) { registry.render() }
        } else {
            metricsServer = nil
        }
        registerCollectors()

        // Mode: command line, else persisted, else the mapping file.
        let persisted = try? GatewayState.load(from: dataDirectory)
        let mode = options.mode ?? persisted?.mode ?? GatewayMode(rawValue: map.gateway.startMode.rawValue) ?? .shadow
        modeState.store(mode == .control ? 1 : 0, ordering: .relaxed)
        modeReason.withLock { $0 = options.mode != nil ? "command line" : (persisted?.reason ?? "mapping file") }
        if options.mode == nil, let persisted {
            modeChange.withLock { $0 = ModeChange(by: persisted.by, at: persisted.since) }
        }

        // The served model, verified (checksum + reference set); on failure fall back to the
        // previous version, and without any model start in shadow.
        loadServedModelAtStart()
        if mode == .control && served.withLock({ $0 == nil }) && map.learning.promotion != .trial {
            modeState.store(0, ordering: .relaxed)
            modeReason.withLock { $0 = "no model has passed its checks: started in shadow" }
            logger.warning("control mode asked for, but no model has passed its checks: running in shadow")
        }
    }

    /// The port the metrics server listens on, if any.
    public var metricsPort: UInt16? { metricsServer?.port }

    /// The current mode.
    public var mode: GatewayMode { modeState.load(ordering: .relaxed) == 1 ? .control : .shadow }

    /// The served model's version, if any.
    public var servedVersion: Int? { served.withLock { $0?.version } }

    /// The log writer's figures.
    public var logMetrics: TransitionWriter.Metrics { writer.metrics }

    /// The metrics in Prometheus text format.
    public func renderMetrics() -> String { metrics.registry.render() }

    // MARK: - Running

    /// Connects and runs the decision loop on the calling thread until `stop()`; then stops
    /// deciding, flushes the log, publishes the offline status and disconnects.
    ///
    /// - Throws: `GatewayError` when the broker cannot be reached at start within 30 s.
    public func run() throws {
        defer { finished.signal() }
        // MQTT 5 no-local where the gateway also publishes: its own commands on the incumbent's
        // topic are not counted as the incumbent's, and the empty retained messages it publishes
        // to clear a retained command do not come back to it (3.1.1 has no such option: there
        // the echo arrives, is recognised and ignored as before).
        let published = Set(map.actions.flatMap { $0.writes.map(\.topic) })
        try client.subscribe(controlPlane.commandFilter, qos: .atLeastOnce, noLocal: true)
        for topic in map.subscribedTopics {
            try client.subscribe(topic, qos: .atLeastOnce, noLocal: published.contains(topic))
        }
        if let inc = map.incumbent, !map.subscribedTopics.contains(inc.topic) {
            try client.subscribe(inc.topic, qos: .atLeastOnce, noLocal: published.contains(inc.topic) || inc.topic.contains("+") || inc.topic.contains("#"))
        }
        if let app = map.applied, !map.subscribedTopics.contains(app.topic) {
            try client.subscribe(app.topic, qos: .atLeastOnce)
        }
        // Sparkplug B: every message of the edge nodes (and their devices) the mapping reads.
        for filter in sparkplug.subscriptions {
            try client.subscribe(filter, qos: .atLeastOnce)
        }
        if options.inlineDecisions {
            // Messages are handled as they arrive, on the network thread. After `stop()` they
            // are dropped: the loop below takes the lock once more after it ends, so no
            // decision is under way during the shutdown.
            client.start { [self] m in
                let sp = sparkplugInbound(m)   // protobuf decoding, before the lock
                decision.withLock { d in
                    if !stopping.load(ordering: .relaxed) { handle(m, sparkplug: sp, &d) }
                }
                return true
            }
        } else {
            client.start()
        }
        do {
            try client.waitUntilConnected(timeout: 30)
        } catch {
            client.stop()
            throw GatewayError("cannot reach the broker: \(error)")
        }
        logger.info("gateway running", metadata: [
            "gateway.id": "\(map.gateway.id)", "gateway.mode": "\(mode.rawValue)",
            "gateway.model": "\(servedVersion.map(String.init) ?? "none")",
            "gateway.seed": "\(seed)",
        ])
        if mode == .control && servedVersion != nil {
            handOver(to: .gateway, reason: "started in control mode")
        } else {
            announceHandover(reason: "started: the incumbent is in charge")
        }
        startCommandThread()
        control.async { self.announceModelRefusals() }   // those of the start, on <prefix>/retrain
        // The fleet models stored before (their trials' verdicts go to the fleet too), and the
        // trial that ran or was owed when the gateway stopped, before the first fleet model is
        // handled: a stored model seen again must find its trial resumed, not take it for cut short.
        fleet?.knowStoredVersions(storedFleetVersions())
        control.sync { self.resumeTrialAtStart() }
        fleet?.setModelHandler { [self] manifest, bytes in fleetModelArrived(manifest, bytes) }
        fleet?.start()
        do {
            try sparkplugNode?.start { [self] in edgeNodeSnapshot() }
        } catch {
            logger.error("Sparkplug edge node not started", metadata: ["error": "\(error)"])
        }
        transitionsAtLastRetrain.store(0, ordering: .relaxed)
        publishStatus()
        lastDecisionNanos.store(Self.now(), ordering: .relaxed)
        let watchdog = startWatchdog()
        // systemd: connected and deciding from here on; then the liveness ticks.
        let notifier = options.serviceNotifier
        loopBeat.store(Self.now(), ordering: .relaxed)
        notifier?.send("READY=1\nSTATUS=deciding in \(mode.rawValue) mode, model \(servedVersion.map(String.init) ?? "none")")
        let serviceWatchdog = startServiceWatchdog()
        var lastBeat = Self.now()

        // The loop's own bookkeeping (this thread only).
        var messagesSinceCheck = 0
        var lastConnects: UInt64 = 1
        var lastStatusNanos: UInt64 = 0
        var nextTick: UInt64?
        if case .period(let p) = map.tick { nextTick = Self.now() + UInt64(p * 1e9) }
        var lastTrimWindow = Self.now()
        while !stopping.load(ordering: .relaxed) {
            var timeout = 0.2
            if let due = nextTick {
                let now = Self.now()
                timeout = due > now ? min(0.2, Double(due - now) / 1e9) : 0
            }
            let message = client.receive(timeout: timeout)
            if let m = message {
                let sp = sparkplugInbound(m)   // protobuf decoding, before the lock
                decision.withLock { d in handle(m, sparkplug: sp, &d) }
                messagesSinceCheck &+= 1
            }
            if messagesSinceCheck >= 256 || message == nil {
                // A new connection (broker restarted: retained messages may be gone):
                // publish the status again at once.
                messagesSinceCheck = 0
                let connects = client.counters.connects
                if connects != lastConnects {
                    lastConnects = connects
                    control.async { self.publishStatus() }
                }
            }
            if let due = nextTick, Self.now() >= due, case .period(let p) = map.tick {
                decision.withLock { d in decide(arrival: due, &d) }
                nextTick = due + UInt64(p * 1e9)
                if let n = nextTick, n < Self.now() { nextTick = Self.now() + UInt64(p * 1e9) }  // fell behind: skip
            }
            let now = Self.now()
            if now &- lastStatusNanos > UInt64(options.statusInterval * 1e9) {
                lastStatusNanos = now
                control.async { self.publishStatus() }
            }
            if serviceWatchdog != nil && now &- lastBeat > Self.loopBeatSpacing {
                // The loop is alive; and a decision stuck on the network thread would hold this
                // lock (inline decisions): then the beat stops and so does WATCHDOG=1.
                decision.withLock { _ in }
                lastBeat = now
                loopBeat.store(Self.now(), ordering: .relaxed)
            }
            if now &- lastTrimWindow > UInt64(HeapTrim.window * 1e9) {
                lastTrimWindow = now
                let received = client.counters.received
                control.async {
                    if self.heapTrim.withLock({ $0.windowEnded(received: received) }) {
                        HeapTrim.trim(after: "a burst of messages", codePages: self.options.releaseCodePages, logger: self.logger)
                    }
                }
            }
        }
        watchdog?.cancel()
        serviceWatchdog?.cancel()
        notifier?.send("STOPPING=1\nSTATUS=stopping: flushing the log")
        decision.withLock { _ in }  // waits out a decision under way on the network thread
        shutdown()
    }

    /// Asks `run()` to stop (from any thread, e.g. a signal handler) and waits for it.
    public func stop(wait: Bool = true) {
        stopping.store(true, ordering: .relaxed)
        if wait {
            finished.wait()
            finished.signal()
        }
    }

    private func shutdown() {
        // The plant first: no decision comes any more (the give, then the offline status).
        handOverAtShutdown()
        stopCommandThread()
        fleet?.stop()
        sparkplugNode?.stop()   // NDEATH, then disconnect
        // Close the open transition? It has no t+1: it is not a transition, nothing is lost.
        do {
            try writer.flush(timeout: 30)
            try writer.close(timeout: 30)
        } catch {
            logger.critical("the experience log could not be flushed: \(error)")
        }
        control.sync {}
        persistStateAtShutdown()
        publish(controlPlane.statusTopic, statusJSON(state: "offline", reason: "stopped"), qos: 1, retain: true)
        // Everything published so far (the give, the last commands and status, the retained
        // offline status) leaves before the disconnect: written at QoS 0, acknowledged at QoS 1.
        // Not connected (the broker down): nothing can leave, the stop does not wait for it.
        if client.state == .connected, !client.waitUntilSent(timeout: 5) {
            logger.warning("the broker did not acknowledge the last messages within 5 s (the retained offline status may be missing): check the broker's connection")
        }
        client.stop()
        metricsServer?.stop()
        logger.info("gateway stopped", metadata: ["log.rows": "\(writer.metrics.rowsWritten)"])
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    // MARK: - Messages

    /// A Sparkplug B message of an edge node the mapping reads, classified and decoded (the
    /// protobuf decoder allocates: called before the decision lock); nil for any other message.
    func sparkplugInbound(_ m: MQTTMessage) -> SparkplugInbound? {
        guard !sparkplug.isEmpty, SparkplugLayout.isSparkplug(m.topic) else { return nil }
        if m.payload.count > map.gateway.maxPayloadBytes { return nil }
        return sparkplug.inbound(topic: m.topic, payload: m.payload)
    }

    func handle(_ m: MQTTMessage, sparkplug sp: SparkplugInbound? = nil, _ d: inout DecisionState) {
        if let sp {
            let effect = d.sparkplug.apply(sp, time: m.arrival, into: &d.core.table)
            metrics.sparkplugBirths.mirror(UInt64(d.sparkplug.births))
            metrics.sparkplugDeaths.mirror(UInt64(d.sparkplug.deaths))
            metrics.sparkplugRebirthRequests.mirror(UInt64(d.sparkplug.rebirthRequests))
            metrics.sparkplugUndecodable.mirror(UInt64(d.sparkplug.undecodable))
            if let node = effect.rebirth { requestRebirth(node: node, reason: effect.reason ?? "") }
            if map.isTrigger(topic: m.topic) { decide(arrival: m.arrival, &d) }
            return
        }
        if !sparkplug.isEmpty, SparkplugLayout.isSparkplug(m.topic) {
            // A Sparkplug message the mapping does not read (a command, an oversize payload):
            // never decoded as JSON.
            return
        }
        if controlPlane.isCommandTopic(m.topic) {
            // Verified and answered on the control queue, never here. A zero-length message
            // deletes a retained one at the broker (also the gateway's own clearing): no command.
            if !m.payload.isEmpty {
                // A test's stuck decision (EDGEQ_FAULT=decision-hang-on-command): commands only,
                // never a sensor message's path.
                FaultInjection.hang("decision-hang-on-command")
                metrics.controlCommands.increment()
                enqueueCommand(m)
            }
            return
        }
        let r = m.payload.withUnsafeBytes { d.core.receive(topic: m.topic, payload: $0, time: m.arrival) }
        if r.incumbent { metrics.incumbentSeen.increment() }
        if r.applied { metrics.appliedReports.increment() }
        if r.routed == 0 && map.incumbent?.topic != m.topic && map.applied?.topic != m.topic {
            metrics.unrouted.increment()
        }
        if r.triggers {
            decide(arrival: m.arrival, &d)
        }
    }

    /// What EdgeQ's own edge node announces (read on the edge node's queue).
    func edgeNodeSnapshot() -> EdgeNodeSnapshot {
        let a = lastActionIndex.load(ordering: .relaxed)
        let action = a == -2 ? "" : (a >= 0 && a < map.actions.count ? map.actions[a].name : "hold")
        let r = Double(bitPattern: lastRewardBits.load(ordering: .relaxed))
        let fallbacks = metrics.fallbacks.values.reduce(UInt64(0)) { $0 + $1.value }
        return EdgeNodeSnapshot(mode: mode.rawValue, modelVersion: servedVersion, lastAction: action,
                                reward: r.isNaN ? nil : r, decisions: metrics.ticks.value, fallbacks: fallbacks)
    }

    /// Asks a Sparkplug B edge node to publish its births again (NCMD `Node Control/Rebirth`),
    /// on the control queue: its signals stay stale until the new birth.
    func requestRebirth(node: Int, reason: String) {
        let n = sparkplug.nodes[node]
        control.async { [self] in
            let (topic, payload) = SparkplugCommands.rebirth(group: n.group, node: n.node)
            logger.warning("Sparkplug: asking the edge node for a rebirth; its signals are stale until then", metadata: [
                "sparkplug.group": "\(n.group)", "sparkplug.node": "\(n.node)", "sparkplug.reason": "\(reason)",
            ])
            publish(topic, payload, qos: 0, retain: false)
        }
    }

    // MARK: - The decision

    /// One tick through the decision core (`DecisionCore`, shared with the lab): then publish
    /// the applied action's writes (control) or the shadow report (shadow), log the closed
    /// transition, feed the switchback trial or the guard, and count.
    func decide(arrival: UInt64, _ d: inout DecisionState) {
        metrics.ticks.increment()
        pickUpModel(&d)
        let now = Self.now()
        let wall = Date().timeIntervalSince1970
        // Who is in charge: the incumbent, the served model, or a trial's or guard's arm.
        let who = controller(&d)
        // Outside the served model's support the incumbent is in charge until the state is back
        // (the core decides per tick; the handover follows it, before the tick when the hold
        // goes on, right after it when the hold began or ended on this tick).
        let held = who.mode == .control && d.core.supportHolding
        handOverIfNeeded(held ? who.asIncumbent : who, &d)
        // Exploration (the mapping's `learning.exploration`, in control only) goes on in every
        // model's decisions, a trial's arms included: against the incumbent the candidate's blocks
        // explore as the candidate would when served (the incumbent's blocks are its own), and in
        // a trial between two models both arms draw from the same ε schedule. So a trial judges
        // what the plant would get — a model whose exploration costs more than its greedy choices
        // gain is not promoted — and the log keeps getting the explorative rows the next
        // retraining learns from.
        let out = d.core.tick(now: now, wallClock: wall, mode: who.mode, engine: who.engine, modelVersion: who.version)
        syncDecoderCounters(&d)
        if out.outsideSupport != nil { metrics.outsideSupport.increment() }
        if out.supportHeld != held {
            if out.supportHeld {
                metrics.supportHandbacks.increment()
                logger.warning("state outside the served model's training support: the incumbent is in charge until the state is back inside", metadata: [
                    "state.input": "\(out.outsideSupport ?? -1)", "state.input_name": "\(out.outsideSupport.map { map.stateInputNames[$0] } ?? "none")",
                    "model.version": "\(who.version ?? "none")",
                    "safety.support_hold": "\(map.safety.supportHold)",
                ])
            }
            handOverIfNeeded(out.supportHeld ? who.asIncumbent : who, &d, reason: out.supportHeld ? "state outside the model's support" : nil)
        }
        let closedRole = d.openRole
        d.openRole = d.core.hasOpen ? who.role : nil
        record(out, &d)
        if sparkplugNode != nil {
            // Two relaxed stores: what the edge node announces (read on its own queue).
            if let t = out.closed { lastRewardBits.store(t.reward.bitPattern, ordering: .relaxed) }
            if !out.episodeEnded {
                lastActionIndex.store((out.mode == .control ? out.applied : out.choice) ?? -1, ordering: .relaxed)
            }
        }
        feedTrialAndGuard(&d, out, closedRole: closedRole)

        if out.episodeEnded {
            if out.mode == .shadow { publishShadow(&d, out, note: "episode_end") }
            lastDecisionNanos.store(Self.now(), ordering: .relaxed)
            return
        }
        if out.fp32TieBreak { metrics.fp32TieBreaks.increment() }
        if let reason = out.fallback { metrics.fallbacks[reason]?.increment() }
        if out.explored { metrics.explorations.increment() }
        if out.mode == .control, let a = out.applied {
            for (j, w) in map.actions[a].writes.enumerated() {
                publishWrite(w, d.core.writeBuffers[j])
            }
        }
        let modeIndex = out.mode == .control ? 1 : 0
        let column = out.mode == .control ? (out.applied ?? map.actions.count) : (out.choice ?? map.actions.count + (out.ranModel ? 0 : 1))
        metrics.decisions[modeIndex][min(column, map.actions.count + 1)].increment()
        if out.mode == .shadow { publishShadow(&d, out, note: out.supportHeld ? "outside_support" : nil) }
        let decided = Self.now()
        metrics.latency.observe(Double(decided &- arrival) / 1e9)
        lastDecisionNanos.store(decided, ordering: .relaxed)

        checkSchedule()
    }

    /// Logs and counts the transition a tick closed.
    func record(_ out: DecisionCore.Outcome, _ d: inout DecisionState) {
        if out.closeSkipped { metrics.transitionsSkipped.increment() }
        if out.incumbentMissing { metrics.incumbentMissing.increment() }
        if out.shadowCompared {
            metrics.shadowCompared.increment()
            if out.shadowAgreed { metrics.shadowAgreed.increment() }
        }
        if out.gap { metrics.tickGaps.increment() }
        if out.appliedMismatch { metrics.appliedMismatches.increment() }
        guard let t = out.closed else { return }
        switch writer.submit(t) {
        case .queued, .queuedOverCapacity: metrics.transitionsLogged.increment()
        case .dropped, .closed: metrics.transitionsSkipped.increment()
        }
    }

    func publish(_ topic: String, _ bytes: [UInt8], qos: Int, retain: Bool) {
        do {
            _ = try client.publish(topic, bytes, qos: QoS(rawValue: Int32(qos)) ?? .atLeastOnce, retain: retain)
        } catch {
            logger.error("publish failed", metadata: ["mqtt.topic": "\(topic)", "error": "\(error)"])
        }
    }

    /// Publishes one rendered action write: as it is, or for a Sparkplug write as an NCMD/DCMD
    /// with the metric set to the rendered value (protobuf encoding allocates: docs/benchmarks.md,
    /// "Sparkplug B decoding"). A value that does not fit the metric's datatype is not sent.
    func publishWrite(_ w: WriteConfig, _ rendered: [UInt8]) {
        guard let sp = w.sparkplug else {
            publish(w.topic, rendered, qos: w.qos, retain: w.retain)
            return
        }
        guard let payload = SparkplugCommands.payload(sp, rendered: rendered) else {
            logger.error("Sparkplug write not sent: the value does not fit the metric's datatype", metadata: [
                "mqtt.topic": "\(w.topic)", "sparkplug.metric": "\(sp.metric)", "sparkplug.datatype": "\(sp.datatype.name)",
                "value": "\(String(decoding: rendered, as: UTF8.self))",
            ])
            return
        }
        publish(w.topic, payload, qos: w.qos, retain: w.retain)
    }

    /// `<prefix>/shadow`: the tick, the model's choice and Q-values, the incumbent's last
    /// command (observed after the previous tick), and why no choice was made when none was.
    func publishShadow(_ d: inout DecisionState, _ out: DecisionCore.Outcome, note: String? = nil) {
        let choice = out.episodeEnded ? nil : out.choice
        let ranModel = out.episodeEnded ? false : out.ranModel
        let reason = out.episodeEnded ? nil : out.fallback
        d.payload.removeAll(keepingCapacity: true)
        d.payload.append(contentsOf: #"{"tick":"#.utf8)
        d.appendInt(Int(d.core.tick))
        d.payload.append(contentsOf: #","action":"#.utf8)
        if let choice { d.appendInt(choice) } else { d.payload.append(contentsOf: "null".utf8) }
        d.payload.append(contentsOf: #","action_name":"#.utf8)
        if let choice { d.appendString(map.actions[choice].name) } else { d.payload.append(contentsOf: "null".utf8) }
        d.payload.append(contentsOf: #","q":"#.utf8)
        if ranModel {
            d.payload.append(UInt8(ascii: "["))
            for (i, q) in d.core.qValues.enumerated() {
                if i > 0 { d.payload.append(UInt8(ascii: ",")) }
                d.appendFloat(q)
            }
            d.payload.append(UInt8(ascii: "]"))
        } else {
            d.payload.append(contentsOf: "null".utf8)
        }
        d.payload.append(contentsOf: #","incumbent_previous":"#.utf8)
        d.appendLastIncumbent()
        d.payload.append(contentsOf: #","status":"#.utf8)
        d.appendString(note ?? reason?.rawValue ?? "ok")
        d.payload.append(contentsOf: #","model":"#.utf8)
        if let v = d.engineModel?.version { d.appendInt(v) } else { d.payload.append(contentsOf: "null".utf8) }
        d.payload.append(UInt8(ascii: "}"))
        publish(controlPlane.shadowTopic, d.payload, qos: 0, retain: false)
    }

    /// Copies the decoder's per-reason counts into the metrics.
    func syncDecoderCounters(_ d: inout DecisionState) {
        for r in DecodeFailure.allCases {
            metrics.rejected[r.rawValue].mirror(UInt64(d.core.table.count(r)))
        }
        metrics.unrouted.mirror(UInt64(d.core.table.unroutedMessages))
        metrics.invalidExpressions.mirror(UInt64(d.core.runtime.invalidExpressionCount))
    }

    /// Takes a newly served model, and a new candidate for trial, between two decisions (the
    /// control queue put them there).
    func pickUpModel(_ d: inout DecisionState) {
        defer { pickUpCandidate(&d) }
        let g = servedGeneration.load(ordering: .acquiring)
        guard g != d.engineGeneration else { return }
        d.engineGeneration = g
        d.engineModel = served.withLock { $0 }
        d.engine = d.engineModel.map { $0.model.makeEngine(options.precision) }
        if let m = d.engineModel, m.model.inputCount != map.stateWidth || m.model.actionCount != map.actions.count {
            logger.error("the served model does not fit the mapping file; not used",
                         metadata: ["model.inputs": "\(m.model.inputCount)", "map.state_width": "\(map.stateWidth)"])
            d.engine = nil
            d.engineModel = nil
        }
        servedModelChanged(&d)
    }
}
