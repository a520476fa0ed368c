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
    /// Control ticks in the live guard's rolling window (nil: the mapping file's `promotion.guard_window`).
    public var guardWindow: Int?
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

    init(version: Int, sha256: String, signedBy: String = "", model: QModel) {
        self.version = version
        self.sha256 = sha256
        self.signedBy = signedBy
        self.model = model
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
    let finished = DispatchSemaphore(value: 0)
    let checkPolicy: CheckPolicy
    let retraining = Atomic<Bool>(false)
    let lastCandidate = Mutex<Int?>(nil)
    let lastRetrain = Mutex<RetrainReport?>(nil)
    let transitionsAtLastRetrain = Atomic<Int>(0)
    let lastRetrainTime = Atomic<UInt64>(Date().timeIntervalSince1970.bitPattern)
    /// When the last retraining started by `retrain.every_transitions` started (monotonic ns, 0: none).
    let lastCountRetrainStart = Atomic<UInt64>(0)
    /// The burst detector of `HeapTrim` (used on the control queue).
    let heapTrim = Mutex(HeapTrim())
    let guardWindow: Int
    let guardBaseline = Atomic<UInt64>(Double.nan.bitPattern)
    let guardMean = Atomic<UInt64>(Double.nan.bitPattern)
    let lastGuardEvent = Mutex<String?>(nil)
    let candidateSlot = Mutex<ServedModel?>(nil)
    let candidateGeneration = Atomic<Int>(0)
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

    /// Sets up every part; connects nothing yet.
    ///
    /// - Throws: `GatewayError` for a data directory that cannot be created, a log that
    ///   cannot be opened, a broker URL or credentials that are not usable, a metrics port
    ///   that cannot be bound.
    public init(_ options: GatewayOptions, logger: Logger = Logger(label: "edgeq.gateway")) throws {
        self.options = options
        self.logger = logger
        map = options.map
        controlPlane = ControlPlane(prefix: map.gateway.prefix)
        dataDirectory = URL(fileURLWithPath: options.dataDirectory ?? map.gateway.dataDirectory)
        do {
            try FileManager.default.createDirectory(at: dataDirectory, withIntermediateDirectories: true)
        } catch {
            throw GatewayError("cannot create the data directory \(dataDirectory.path): \(error.localizedDescription)")
        }
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
            wo.retention = RetentionPolicy(maxRows: nil, maxAge: map.learning.retention)
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
        guardWindow = max(options.guardWindow ?? options.map.learning.guardWindow, 1)
        decision = Mutex(DecisionState(map: map, guardWindow: guardWindow))

        // MQTT: the client id is stable (persistent session), the Last Will says offline.
        do {
            var config = try BrokerConnection.configuration(for: map, broker: options.broker, clientID: map.gateway.clientID)
            handover = HandoverState(map: map, base: config, registry: metrics.registry)
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
        if mode == .control && served.withLock({ $0 == nil }) {
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
        if options.inlineDecisions {
            // Messages are handled as they arrive, on the network thread. After `stop()` they
            // are dropped: the loop below takes the lock once more after it ends, so no
            // decision is under way during the shutdown.
            client.start { [self] m in
                decision.withLock { d in
                    if !stopping.load(ordering: .relaxed) { handle(m, &d) }
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
        ])
        if mode == .control { handOver(to: .gateway, reason: "started in control mode") }
        startCommandThread()
        control.async { self.refreshGuardBaseline() }
        transitionsAtLastRetrain.store(0, ordering: .relaxed)
        publishStatus()
        control.async { self.announceModelRefusals() }   // those of the start, on <prefix>/retrain
        lastDecisionNanos.store(Self.now(), ordering: .relaxed)
        let watchdog = startWatchdog()

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
                decision.withLock { d in handle(m, &d) }
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
        // Give libmosquitto a moment to send the retained offline status before disconnecting.
        usleep(300_000)
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

    func handle(_ m: MQTTMessage, _ d: inout DecisionState) {
        if controlPlane.isCommandTopic(m.topic) {
            // Verified and answered on the control queue, never here. A zero-length message
            // deletes a retained one at the broker (also the gateway's own clearing): no command.
            if !m.payload.isEmpty {
                metrics.controlCommands.increment()
                enqueueCommand(m)
            }
            return
        }
        m.payload.withUnsafeBytes { bytes in
            if let inc = map.incumbent, inc.topic == m.topic || inc.topic.utf8.contains(UInt8(ascii: "+")) {
                if let a = map.incumbentAction(topic: m.topic, payload: bytes) {
                    d.pendingIncumbent = a
                    metrics.incumbentSeen.increment()
                }
            }
            if map.applied != nil, map.isAppliedTopic(m.topic) {
                if let a = map.appliedAction(topic: m.topic, payload: bytes) {
                    d.pendingApplied = a
                    metrics.appliedReports.increment()
                }
            }
            let routed = map.decode(topic: m.topic, payload: bytes, time: m.arrival, into: &d.table)
            if routed == 0 && map.incumbent?.topic != m.topic && map.applied?.topic != m.topic {
                metrics.unrouted.increment()
            }
        }
        if map.isTrigger(topic: m.topic) {
            decide(arrival: m.arrival, &d)
        }
    }

    // MARK: - The decision

    /// One tick: assemble and check the state, close the previous transition, decide,
    /// publish (control) or report (shadow), open the next transition.
    func decide(arrival: UInt64, _ d: inout DecisionState) {
        d.tick += 1
        metrics.ticks.increment()
        pickUpModel(&d)
        let now = Self.now()
        let wall = Date().timeIntervalSince1970
        let stateStatus = d.state.withUnsafeMutableBufferPointer {
            d.runtime.assembleState(from: d.table, now: now, wallClock: wall, into: $0)
        }
        // While the plant is in hand (safety.hand_override), the gateway only shadows.
        let modeNow: GatewayMode = stateStatus == .handOverride ? .shadow : mode
        let reward = d.runtime.reward()
        let terminal = d.runtime.terminal() ?? false
        let truncated = d.runtime.truncated() ?? false
        let allowedCount = d.mask.withUnsafeMutableBufferPointer { d.runtime.actionMask(into: $0) }
        syncDecoderCounters(&d)
        // Missed ticks since the previous one: by the clock, and by the plant's step counter.
        let clockGap = d.gaps.observe(now)
        var sequence: Double?
        if let si = map.sequenceSignal, d.table.status(of: si) == .valid { sequence = d.table.values[si] }

        // Close the transition of the previous tick: its reward and next state are this tick's.
        closeTransition(&d, stateOK: stateStatus == .ok || stateStatus.isOOD, reward: reward, terminal: terminal, truncated: truncated,
                        sequence: sequence, clockGap: clockGap)

        if terminal || truncated {
            // The end of an episode is not a decision point; the next state starts a new one.
            if modeNow == .shadow { publishShadow(&d, choice: nil, ranModel: false, status: stateStatus, reason: nil, note: "episode_end") }
            d.episode += 1
            d.runtime.resetHistory()
            d.open = nil
            d.pendingIncumbent = nil
            d.pendingApplied = nil
            lastDecisionNanos.store(Self.now(), ordering: .relaxed)
            return
        }

        // Decide.
        var choice: Int?
        var actor: Actor = modeNow == .shadow ? .incumbent : .model
        var reason: FallbackReason?
        var ranModel = false
        if stateStatus != .ok {
            reason = FallbackReason(stateStatus)
        } else if let engine = d.engine {
            let asked = engine.fp32Decisions
            let best = d.state.withUnsafeBufferPointer { s in
                d.qValues.withUnsafeMutableBufferPointer { q in engine.bestAction(state: s, mask: d.mask, qValues: q) }
            }
            if engine.fp32Decisions != asked { metrics.fp32TieBreaks.increment() }
            ranModel = true
            if !d.qValues.allSatisfy({ $0.isFinite }) {
                reason = .nonFiniteQ
            } else if best == nil || allowedCount == 0 {
                reason = .noAllowedAction
            } else {
                choice = best
            }
        } else if modeNow == .control {
            reason = .noModel
        }

        var applied: Int?
        if let reason {
            metrics.fallbacks[reason]?.increment()
            let response = stateStatus == .ok ? SafetyConfig.Response.fallback : (stateStatus.response(map.safety) ?? .fallback)
            if modeNow == .control {
                actor = .fallback
                // A fallback that cannot be rendered is not published: hold.
                if response == .fallback, let fb = map.fallbackAction, publishWrites(action: fb, &d) {
                    applied = fb
                }
                d.runtime.recordApplied(action: applied)
            }
        } else if modeNow == .control, var choice {
            if let explored = explore(&d) {
                choice = explored
                actor = .exploration
            }
            if publishWrites(action: choice, &d) {
                applied = choice
            } else {
                // One of the action's writes cannot be rendered (an invalid value): nothing of
                // it went out. Fall back, and log the row as the fallback it is.
                reason = .renderFailed
                metrics.fallbacks[.renderFailed]?.increment()
                actor = .fallback
                if let fb = map.fallbackAction, fb != choice, publishWrites(action: fb, &d) { applied = fb }
            }
            d.runtime.recordApplied(action: applied)
        }

        let modeIndex = modeNow == .control ? 1 : 0
        let column = modeNow == .control ? (applied ?? map.actions.count) : (choice ?? map.actions.count + (ranModel ? 0 : 1))
        metrics.decisions[modeIndex][min(column, map.actions.count + 1)].increment()

        if modeNow == .shadow {
            publishShadow(&d, choice: choice, ranModel: ranModel, status: stateStatus, reason: reason)
        }
        let decided = Self.now()
        metrics.latency.observe(Double(decided &- arrival) / 1e9)
        lastDecisionNanos.store(decided, ordering: .relaxed)

        // Open the transition of this tick (only from a usable state).
        if stateStatus == .ok || stateStatus.isOOD {
            d.open = DecisionState.OpenTransition(
                time: wall, tick: d.tick, monotonic: now, sequence: sequence, state: d.state, applied: applied, actor: actor,
                mode: modeNow == .control ? .control : .shadow,
                modelVersion: d.engineModel.map { String($0.version) },
                qValues: ranModel ? d.qValues : nil, modelAction: choice)
            if let cand = d.candidateEngine {
                // shadow-first: what the candidate would do here (one more inference per tick,
                // only while a candidate is being compared).
                let pick = d.state.withUnsafeBufferPointer { s in
                    d.candidateQValues.withUnsafeMutableBufferPointer { q in cand.bestAction(state: s, mask: d.mask, qValues: q) }
                }
                d.open?.candidateAction = pick
                d.open?.candidateQ = d.candidateQValues
            }
        } else {
            d.open = nil
        }
        d.pendingIncumbent = nil
        d.pendingApplied = nil
        checkSchedule()
    }

    /// Exploration with limits (control mode, `learning.exploration`): with probability ε
    /// (from `start` to `end` over `decay_steps` control decisions) a uniformly random allowed
    /// action instead of the greedy one, as long as explorative decisions stay within
    /// `budget` (a share of all control decisions). Off by default (budget 0).
    func explore(_ d: inout DecisionState) -> Int? {
        let l = map.learning
        d.controlDecisions += 1
        guard l.explorationBudget > 0, Double(d.explorations) < l.explorationBudget * Double(d.controlDecisions) else { return nil }
        let progress = l.epsilonDecaySteps > 0 ? min(1, Double(d.controlDecisions) / Double(l.epsilonDecaySteps)) : 1
        let epsilon = l.epsilonStart + (l.epsilonEnd - l.epsilonStart) * progress
        guard epsilon > 0, d.exploreRNG.nextUnit() < epsilon else { return nil }
        let allowed = d.mask.indices.filter { d.mask[$0] }
        guard !allowed.isEmpty else { return nil }
        d.explorations += 1
        metrics.explorations.increment()
        return allowed[Int(d.exploreRNG.next() % UInt64(allowed.count))]
    }

    /// Logs the open transition with this tick's reward and state, flagged `gap` when ticks
    /// were missed between the two (`clockGap`, or `sequence` not the previous one + 1) and
    /// `appliedMismatch` when the plant reported applying another action than the one published.
    func closeTransition(_ d: inout DecisionState, stateOK: Bool, reward: Double?, terminal: Bool, truncated: Bool, sequence: Double?, clockGap: Bool) {
        guard let o = d.open else { return }
        defer { d.open = nil }
        guard stateOK, let reward else {
            metrics.transitionsSkipped.increment()
            return
        }
        var action = o.applied
        var actor = o.actor
        if o.mode == .shadow {
            // The behaviour is the incumbent's command observed between tick t and t+1.
            action = d.pendingIncumbent
            actor = .incumbent
            d.lastIncumbentReported = d.pendingIncumbent
            if d.pendingIncumbent == nil { metrics.incumbentMissing.increment() }
            if let mine = o.modelAction, let theirs = d.pendingIncumbent {
                metrics.shadowCompared.increment()
                if mine == theirs { metrics.shadowAgreed.increment() }
            }
        }
        var flags: TransitionFlags = []
        if clockGap {
            flags.insert(.gap)
        } else if map.sequenceSignal != nil {
            // Unknown on either side: continuity cannot be shown, so the row is not one step.
            if let before = o.sequence, let after = sequence, after == before + 1 {} else { flags.insert(.gap) }
        }
        if flags.contains(.gap) { metrics.tickGaps.increment() }
        if o.mode == .control, let reported = d.pendingApplied, reported != o.applied {
            // The plant applied something else than what was published (or published nothing):
            // the row records what the plant did, chosen by the plant.
            flags.insert(.appliedMismatch)
            metrics.appliedMismatches.increment()
            action = reported
            actor = .incumbent
        }
        var bits: UInt64 = 0
        for (i, ok) in d.mask.enumerated() where ok && i < 64 { bits |= 1 << UInt64(i) }
        let t = Transition(
            time: o.time, tick: o.tick, episode: d.episode, state: o.state, action: action, actor: actor,
            reward: reward, nextState: d.state, nextMask: bits, terminal: terminal, truncated: truncated,
            mode: o.mode, modelVersion: o.modelVersion, qValues: o.qValues, modelAction: o.modelAction, flags: flags)
        switch writer.submit(t) {
        case .queued, .queuedOverCapacity: metrics.transitionsLogged.increment()
        case .dropped, .closed: metrics.transitionsSkipped.increment()
        }
        if o.mode == .control && o.actor == .model { guardObserve(&d, reward: reward) }
        if let pick = o.candidateAction, let q = o.candidateQ, let live = action {
            compareCandidate(&d, pick: pick, live: live, q: q, reward: reward, terminal: terminal)
        }
    }

    /// Publishes every write of `action`, or none: all are rendered first (into the
    /// preallocated `writeBuffers`, no allocation), and only when each rendered are they sent.
    ///
    /// - Returns: false when a write could not be rendered (an invalid value): nothing was published.
    func publishWrites(action: Int, _ d: inout DecisionState) -> Bool {
        let writes = map.actions[action].writes
        for j in writes.indices {
            d.writeBuffers[j].removeAll(keepingCapacity: true)
            guard d.runtime.render(action: action, write: j, into: &d.writeBuffers[j]) else { return false }
        }
        for (j, w) in writes.enumerated() {
            publish(w.topic, d.writeBuffers[j], qos: w.qos, retain: w.retain)
        }
        return true
    }

    func publish(_ topic: String, _ bytes: [UInt8], qos: Int, retain: Bool) {
        do {
            _ = try client.publish(topic, bytes, qos: QoS(rawValue: Int32(qos)) ?? .atLeastOnce, retain: retain)
        } catch {
            logger.error("publish failed", metadata: ["mqtt.topic": "\(topic)", "error": "\(error)"])
        }
    }

    /// `<prefix>/shadow`: the tick, the model's choice and Q-values, the incumbent's last
    /// command (observed after the previous tick), and why no choice was made when none was.
    func publishShadow(_ d: inout DecisionState, choice: Int?, ranModel: Bool, status: StateStatus, reason: FallbackReason?, note: String? = nil) {
        d.payload.removeAll(keepingCapacity: true)
        d.payload.append(contentsOf: #"{"tick":"#.utf8)
        d.appendInt(Int(d.tick))
        d.payload.append(contentsOf: #","action":"#.utf8)
        if let choice { d.appendInt(choice) } else { d.payload.append(contentsOf: "null".utf8) }
        d.payload.append(contentsOf: #","action_name":"#.utf8)
        if let choice { d.appendString(map.actions[choice].name) } else { d.payload.append(contentsOf: "null".utf8) }
        d.payload.append(contentsOf: #","q":"#.utf8)
        if ranModel {
            d.payload.append(UInt8(ascii: "["))
            for (i, q) in d.qValues.enumerated() {
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
            metrics.rejected[r.rawValue].mirror(UInt64(d.table.count(r)))
        }
        metrics.unrouted.mirror(UInt64(d.table.unroutedMessages))
        metrics.invalidExpressions.mirror(UInt64(d.runtime.invalidExpressionCount))
    }

    /// Takes a newly served model between two decisions (the control queue put it there).
    func pickUpModel(_ d: inout DecisionState) {
        let cg = candidateGeneration.load(ordering: .acquiring)
        if cg != d.candidateEngineGeneration {
            d.candidateEngineGeneration = cg
            d.comparison = CandidateComparison()
            d.comparedCandidate = candidateSlot.withLock { $0 }
            d.candidateEngine = d.comparedCandidate.map { $0.model.makeEngine(options.precision) }
        }
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
    }
}

extension StateStatus {
    var isOOD: Bool {
        if case .outOfDistribution = self { return true }
        return false
    }
}
