#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import EdgeQLog
import EdgeQMQTT
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Logging
import Synchronization

/// Ships the experience log to the fleet learner (docs/fleet.md): batches of logged rows on
/// `<fleet>/experience/<gateway id>`, from a durable cursor that moves only when a learner
/// acknowledges (`<fleet>/ack/<gateway id>`).
///
/// It runs on its own thread with its own MQTT connection (client id `<client id>-fleet`) and
/// its own read-only connection to the log: it never sees a tick, never takes the decision
/// lock, and the log writer never waits for it.
///
/// Exactly once, from the learner's side: rows are sent after the cursor, at most `window`
/// batches wait for an acknowledgement, and after a reconnect or `ack_timeout` without an
/// acknowledgement every unacknowledged row is sent again from the cursor. A row may thus
/// reach a learner twice before it is acknowledged (the learner drops the copy); once
/// acknowledged it is never sent again, and the cursor survives a restart (`fleet-cursor.json`).
///
/// Both of its threads — the loop (`edgeq-fleet`) and its connection's network thread
/// (`edgeq-fleet-net`) — run at the mapping's `fleet.priority`: the process's own by default,
/// `low` or `idle` when it says so (docs/fleet.md, "The shipper's priority").
public final class FleetShipper: Sendable {
    /// The cursor file inside the data directory.
    public static let cursorFileName = "fleet-cursor.json"
    /// The name of the shipper's thread (`/proc/<pid>/task/<tid>/comm`, `top -H`).
    public static let threadName = "edgeq-fleet"
    /// The name of the network thread of the shipper's connection.
    public static let networkThreadName = "edgeq-fleet-net"

    /// How the shipper's two threads are scheduled against the decision thread: the mapping's
    /// `fleet.priority` (docs/fleet.md, "The shipper's priority"). On Linux the scheduling class
    /// and the nice value are per thread.
    public typealias Priority = FleetConfig.Priority

    /// Names the calling thread (at most 15 bytes) by writing `/proc/thread-self/comm`, as
    /// `pthread_setname_np` does (not visible to Swift on glibc). Linux only; best effort.
    static func nameCurrentThread(_ name: String) {
        #if os(Linux)
        let fd = open("/proc/thread-self/comm", O_WRONLY)
        guard fd >= 0 else { return }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        #endif
    }

    /// The figures of the shipper, consistent with each other at the time they were read.
    public struct Figures: Sendable, Equatable {
        /// The durable cursor: the highest row id a learner acknowledged.
        public var acked: Int64 = 0
        /// Rows sent (every copy counts).
        public var rowsShipped: UInt64 = 0
        /// Rows acknowledged since start (how far the cursor moved).
        public var rowsAcked: UInt64 = 0
        /// Log rows not acknowledged yet (largest row id − cursor).
        public var lagRows: Int64 = 0
        /// Batches waiting for an acknowledgement.
        public var inFlight: Int = 0
        /// Times the unacknowledged rows were sent again (reconnect or timeout).
        public var resends: UInt64 = 0
        /// Batches sent.
        public var batches: UInt64 = 0
        /// The last problem (a log that cannot be read, a cursor that cannot be written), if any.
        public var problem: String?
        /// Fleet models stored as a version.
        public var modelsStored: UInt64 = 0
        /// Fleet models refused.
        public var modelsRefused: UInt64 = 0
        /// Fleet models not checked again since start: refused before (by this run or an earlier
        /// one) under the keys, mapping and `max_model_size` it has now (`fleet-refused.json`).
        public var modelsRefusedBefore: UInt64 = 0
        /// The verdict on the newest fleet model (as published on `<fleet>/verdict/<gateway>`).
        public var lastVerdict: String?
    }

    /// What the gateway does with a complete, reassembled fleet model (verify, store, trial);
    /// nil: nothing new (the version is already stored). Runs on the shipper thread.
    typealias ModelHandler = @Sendable (FleetModelManifest, [UInt8]) -> [String: JSONValue]?

    let config: FleetConfig
    let gatewayID: String
    let logPath: String
    let cursorURL: URL
    let client: MQTTClient
    let logger: Logger
    /// How the shipper's threads are scheduled (the mapping's `fleet.priority`).
    public var priority: Priority { config.priority }
    private let figures = Mutex(Figures())
    /// The identity of the log file being shipped (`meta.log_id`) and the highest
    /// acknowledgement received for it (network thread → shipper thread); one lock, so an
    /// acknowledgement for a replaced log can never land on the new one's count.
    private let ack = Mutex<(log: String, acked: Int64)>(("", 0))
    private let wake = DispatchSemaphore(value: 0)
    private let stopping = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    private let started = Atomic<Bool>(false)
    private let shipped: Counter, ackedRows: Counter, lag: Gauge
    /// The gateway's mapping fingerprint (a fleet model for another mapping is refused).
    let fingerprint: String
    /// Model messages from the network thread, for the shipper thread (bounded).
    private let modelInbox = Mutex<[MQTTMessage]>([])
    private let modelHandler = Mutex<ModelHandler?>(nil)
    /// The log's age retention: released through the durable cursor (rows a learner has), so that
    /// rows no learner acknowledged are never deleted by age. nil: the log has no hold.
    private let retentionHold: RetentionHold?
    /// The fleet model versions this gateway stored since start (their trial verdicts are reported).
    private let fleetVersions = Mutex<Set<Int>>([])
    /// The fleet model the handler is taking now (stored, its trial begun), and the verdicts of
    /// its trial decided before the handler returned: published after the handler's own verdict
    /// (`trial_started`), so that the retained verdict is the newest and none is lost.
    private let handling = Mutex<(version: Int, decided: [[String: JSONValue]])?>(nil)
    private let modelsStored: Counter
    private let modelsRefused: [String: Counter]
    private let modelsRefusedBeforeCounter: Counter
    /// The models refused (by this run or an earlier one), remembered in `fleet-refused.json`.
    private let refusedModels: Mutex<RefusedFleetModels>
    /// The remembered refusals seen again since start ("version sha256"), each counted once.
    private let refusedSeenAgain = Mutex<Set<String>>([])

    /// Prepares the shipper (connects nothing yet). The gateway makes one from its `fleet`
    /// section; `edgeq bench fleet` drives it on pre-filled logs.
    ///
    /// Its threads run at `config.priority`; its batches are deflated at `config.deflateLevel`
    /// (0: sent uncompressed).
    ///
    /// - Parameters:
    ///   - config: the mapping's `fleet` section.
    ///   - logPath: the experience log to ship (read-only); `dataDirectory` holds the cursor.
    ///   - base: the gateway's MQTT configuration (broker, credentials, TLS); the shipper uses a
    ///     clean session under `<client id>-fleet`, without a Last Will.
    ///   - fingerprint: the gateway's mapping fingerprint (a fleet model for another is refused).
    ///   - modelKeys: the keys the gateway trusts for models: a refusal remembered in
    ///     `fleet-refused.json` holds while these, the fingerprint and `max_model_size` stay.
    ///   - retentionHold: the hold of the log's age retention (`RetentionPolicy.hold`), released
    ///     through the durable cursor as learners acknowledge rows; nil: none.
    ///   - registry: where `edgeq_fleet_*` metrics are registered.
    /// - Throws: `GatewayError` when the MQTT client cannot be made from `base`.
    public init(config: FleetConfig, gatewayID: String, dataDirectory: URL, logPath: String, base: MQTTConfiguration,
                fingerprint: String, modelKeys: [TrustedKey] = [], retentionHold: RetentionHold? = nil,
                registry: MetricsRegistry, logger: Logger) throws {
        let priority = config.priority
        self.config = config
        self.retentionHold = retentionHold
        self.fingerprint = fingerprint
        self.gatewayID = gatewayID
        self.logPath = logPath
        self.logger = logger
        cursorURL = dataDirectory.appendingPathComponent(Self.cursorFileName)
        var c = base
        c.clientID = base.clientID + "-fleet"
        c.session = .clean
        c.will = nil
        c.inboundCapacity = 16
        c.networkThreadSetup = {
            Self.nameCurrentThread(Self.networkThreadName)
            priority.applyToCurrentThread()
        }
        do {
            client = try MQTTClient(c, logger: logger)
        } catch {
            throw GatewayError("fleet: cannot make the shipper's MQTT client: \(error)")
        }
        shipped = registry.counter("edgeq_fleet_rows_shipped_total", help: "Log rows sent to the fleet learner (every copy counts).")
        ackedRows = registry.counter("edgeq_fleet_rows_acked_total", help: "Log rows a fleet learner acknowledged (the cursor's moves).")
        lag = registry.gauge("edgeq_fleet_lag_rows", help: "Log rows not acknowledged by a fleet learner yet.")
        modelsStored = registry.counter("edgeq_fleet_models_stored_total", help: "Fleet models verified and stored as a version.")
        var refused: [String: Counter] = [:]
        for r in FleetModelRefusal.all {
            refused[r] = registry.counter("edgeq_fleet_models_refused_total", help: "Fleet models refused, by reason (a bad signature, a sha mismatch, another mapping, …).",
                                          labels: [("reason", r)])
        }
        modelsRefused = refused
        modelsRefusedBeforeCounter = registry.counter("edgeq_fleet_models_refused_before_total",
                                                      help: "Fleet models not checked again since start: refused before under the same trusted keys, mapping and max_model_size (fleet-refused.json).")
        refusedModels = Mutex(RefusedFleetModels(
            dataDirectory: dataDirectory,
            context: RefusedFleetModels.context(mapping: fingerprint, maxModelSize: config.maxModelSize, modelKeys: modelKeys),
            logger: logger))
        let initial = Self.loadCursor(cursorURL, topic: config.topic, logger: logger)
        figures.withLock { $0.acked = initial.acked }
        ack.withLock { $0 = (initial.log, initial.acked) }
    }

    /// The figures now.
    public var current: Figures { figures.withLock { $0 } }

    /// The `fleet` object of the status JSON.
    var statusJSON: JSONValue {
        let f = current
        var o: [String: JSONValue] = [
            "topic": .string(config.experienceTopic(gateway: gatewayID)),
            "acked": .number(Double(f.acked)),
            "rows_shipped": .number(Double(f.rowsShipped)),
            "rows_acked": .number(Double(f.rowsAcked)),
            "lag_rows": .number(Double(f.lagRows)),
            "in_flight": .number(Double(f.inFlight)),
            "resends": .number(Double(f.resends)),
            "connected": .bool(client.state == .connected),
        ]
        if let p = f.problem { o["problem"] = .string(p) }
        if config.models {
            var m: [String: JSONValue] = ["topic": .string(config.modelTopic), "stored": .number(Double(f.modelsStored)),
                                          "refused": .number(Double(f.modelsRefused)), "refused_before": .number(Double(f.modelsRefusedBefore))]
            if let v = f.lastVerdict, let data = v.data(using: .utf8), let any = try? JSONSerialization.jsonObject(with: data),
               let value = JSONValue(any: any) {
                m["last_verdict"] = value
            }
            o["models"] = .object(m)
        }
        return .object(o)
    }

    /// The fleet models this gateway stored before it started (`report.json` says `source: fleet`):
    /// a trial of one that resumes after a restart reports its start and verdict to the fleet too.
    func knowStoredVersions(_ versions: Set<Int>) { fleetVersions.withLock { $0.formUnion(versions) } }

    /// Sets what the gateway does with a complete fleet model (before `start`).
    func setModelHandler(_ h: @escaping ModelHandler) { modelHandler.withLock { $0 = h } }

    /// The switchback trial of `version` was decided: when it is a fleet model this gateway
    /// stored, its verdict goes to `<fleet>/verdict/<gateway>` with the trial's figures.
    func trialDecided(version: Int, promoted: Bool, verdict: String, figures: [String: JSONValue]) {
        var o: [String: JSONValue] = ["verdict": .string(promoted ? "promoted" : (verdict == "abandoned" ? "trial_abandoned" : "rejected")),
                                      "version": .number(Double(version)), "trial": .object(figures)]
        if !promoted {
            // An abandoned trial says why (the served model changed, …); a decided one its verdict.
            if verdict == "abandoned", case .string(let why)? = figures["reason"] {
                o["reason"] = .string(why)
            } else {
                o["reason"] = .string("trial verdict: \(verdict)")
            }
        }
        // Decided while the handler is still taking this very model (a trial abandoned at once):
        // kept for `takeModels`, which publishes it after the handler's `trial_started`.
        let kept = handling.withLock { h -> Bool in
            guard var taking = h, taking.version == version else { return false }
            taking.decided.append(o)
            h = taking
            return true
        }
        guard !kept, fleetVersions.withLock({ $0.contains(version) }) else { return }
        publishVerdict(o)
    }

    /// The trial of `version` began after waiting for another one (`trial_queued` before): when
    /// it is a fleet model this gateway stored, `trial_started` goes to `<fleet>/verdict/<gateway>`.
    /// (A fleet model whose trial begins while the handler takes it is reported by `takeModels`,
    /// with the handler's verdict: not twice.)
    func trialBegan(version: Int, reference: Int?, waitingForControl: Bool) {
        guard handling.withLock({ $0?.version }) != version, fleetVersions.withLock({ $0.contains(version) }) else { return }
        publishVerdict(["verdict": .string("trial_started"), "version": .number(Double(version)),
                        "reference": reference.map { .string("v\($0)") } ?? .string("incumbent"),
                        "waiting_for_control": .bool(waitingForControl)])
    }

    /// Publishes a verdict (retained, QoS 1) with the gateway id and time; counts it.
    func publishVerdict(_ object: [String: JSONValue]) {
        var o = object
        o["gateway"] = .string(gatewayID)
        o["time"] = .number((Date().timeIntervalSince1970 * 1000).rounded() / 1000)
        let text = JSONValue.object(o).jsonText
        figures.withLock { $0.lastVerdict = text }
        do {
            _ = try client.publish(config.verdictTopic(gateway: gatewayID), text, qos: .atLeastOnce, retain: true)
        } catch {
            logger.warning("fleet: cannot publish the model verdict now", metadata: ["error": "\(error)"])
        }
    }

    /// Refusal of a fleet model: counted, logged, published, and remembered (`fleet-refused.json`)
    /// unless it says nothing about the model itself.
    private func refuse(_ manifest: FleetModelManifest?, reason: String, message: String) {
        (modelsRefused[reason] ?? modelsRefused[FleetModelRefusal.malformed])?.increment()
        figures.withLock { $0.modelsRefused &+= 1 }
        logger.warning("fleet: model refused", metadata: [
            "fleet.model.version": "\(manifest.map { String($0.version) } ?? "unknown")", "fleet.model.reason": "\(reason)",
            "fleet.model.signer": "\(manifest?.signer ?? "unknown")", "error": "\(message)",
        ])
        publishVerdict(["verdict": .string("refused"), "reason": .string(reason), "message": .string(message),
                        "version": manifest.map { .number(Double($0.version)) } ?? .null,
                        "signer": manifest.map { .string($0.signer) } ?? .null])
        // Remembered after its verdict is queued: a restart in between checks the model again.
        if let m = manifest {
            do {
                try refusedModels.withLock { _ = try $0.remember(version: m.version, sha256: m.sha256, reason: reason) }
            } catch {
                logger.error("fleet: cannot write the file of refused models; the model will be checked again after a restart",
                             metadata: ["fleet.model.version": "\(m.version)", "error": "\(error)"])
            }
        }
    }

    /// Feeds the queued model messages to the assembler; a complete model goes to the handler.
    private func takeModels(_ assembler: inout FleetModelAssembler) {
        let messages = modelInbox.withLock { q -> [MQTTMessage] in
            defer { q = [] }
            return q
        }
        for m in messages {
            // A model refused before (this run or an earlier one, trusting what it trusts now) is
            // not checked again and gets no new verdict: the retained one stands.
            if m.topic == config.modelTopic, let manifest = try? FleetModelManifest.parse(m.payload),
               let before = refusedModels.withLock({ $0.refusal(version: manifest.version, sha256: manifest.sha256) }) {
                let first = refusedSeenAgain.withLock { $0.insert("\(manifest.version) \(manifest.sha256)").inserted }
                if first {
                    figures.withLock { $0.modelsRefusedBefore &+= 1 }
                    modelsRefusedBeforeCounter.increment()
                    logger.notice("fleet: model refused before, not checked again", metadata: [
                        "fleet.model.version": "\(manifest.version)", "fleet.model.reason": "\(before.reason)",
                        "fleet.refused_file": "\(RefusedFleetModels.fileName)",
                    ])
                }
                continue
            }
            let event = m.topic == config.modelTopic ? assembler.manifest(m.payload, mapping: fingerprint) : assembler.chunk(m.payload)
            switch event {
            case .waiting:
                continue
            case .refused(let manifest, let reason, let message):
                refuse(manifest, reason: reason, message: message)
            case .complete(let manifest, let bytes):
                guard let handler = modelHandler.withLock({ $0 }) else { continue }
                handling.withLock { $0 = (manifest.version, []) }
                // The verdicts of its trial decided meanwhile go out after the handler's own (below),
                // once the version is known as a fleet model's.
                defer {
                    let decided = handling.withLock { h -> [[String: JSONValue]] in
                        defer { h = nil }
                        return h?.decided ?? []
                    }
                    if !decided.isEmpty, fleetVersions.withLock({ $0.contains(manifest.version) }) {
                        for o in decided { publishVerdict(o) }
                    }
                }
                guard let verdict = handler(manifest, bytes) else { continue }
                let kind = verdict["verdict"].flatMap { v -> String? in if case .string(let s) = v { return s } else { return nil } } ?? ""
                if kind == "refused" {
                    let reason = verdict["reason"].flatMap { v -> String? in if case .string(let s) = v { return s } else { return nil } } ?? FleetModelRefusal.malformed
                    let message = verdict["message"].flatMap { v -> String? in if case .string(let s) = v { return s } else { return nil } } ?? ""
                    refuse(manifest, reason: reason, message: message)
                } else {
                    // `trial_abandoned` here is a stored version seen again after a restart that
                    // cut its trial short: reported, not stored again.
                    if kind != "trial_abandoned" {
                        modelsStored.increment()
                        fleetVersions.withLock { _ = $0.insert(manifest.version) }
                        figures.withLock { $0.modelsStored &+= 1 }
                    }
                    var o = verdict
                    o["version"] = .number(Double(manifest.version))
                    o["signer"] = .string(manifest.signer)
                    publishVerdict(o)
                }
            }
        }
    }

    /// Starts the connection and the shipper thread; a second call does nothing.
    public func start() {
        guard !started.exchange(true, ordering: .relaxed) else { return }
        let ackTopic = config.ackTopic(gateway: gatewayID)
        do {
            try client.subscribe(ackTopic, qos: .atLeastOnce)
        } catch {
            logger.error("fleet: cannot subscribe to the acknowledgements", metadata: ["mqtt.topic": "\(ackTopic)", "error": "\(error)"])
        }
        let modelTopic = config.modelTopic
        let chunkPrefix = config.modelTopic + "/chunk/"
        if config.models {
            for filter in [modelTopic, config.modelChunkFilter] {
                do {
                    try client.subscribe(filter, qos: .atLeastOnce)
                } catch {
                    logger.error("fleet: cannot subscribe to the fleet models", metadata: ["mqtt.topic": "\(filter)", "error": "\(error)"])
                }
            }
        }
        let inboxLimit = max(64, config.maxModelSize / 1024 + 16)
        client.start { [self] m in
            if m.topic == modelTopic || m.topic.hasPrefix(chunkPrefix) {
                // Handed to the shipper thread (never worked on here, on the network thread).
                modelInbox.withLock { q in
                    if q.count >= inboxLimit { q.removeFirst() }
                    q.append(m)
                }
                wake.signal()
                return true
            }
            if m.topic == ackTopic, let (a, log) = Self.parseAck(m.payload) {
                let moved = ack.withLock { s -> Bool in
                    guard log == nil || log == s.log, a > s.acked else { return false }
                    s.acked = a
                    return true
                }
                if moved { wake.signal() }
            }
            return true
        }
        let t = Thread { [self] in
            Self.nameCurrentThread(Self.threadName)
            priority.applyToCurrentThread()
            loop()
            done.signal()
        }
        t.name = Self.threadName
        t.start()
    }

    /// Stops the thread (after its current batch) and the connection, waiting at most `timeout`.
    public func stop(timeout: Double = 10) {
        guard started.load(ordering: .relaxed) else { return }
        stopping.store(true, ordering: .relaxed)
        wake.signal()
        _ = done.wait(timeout: .now() + timeout)
        client.stop()
    }

    /// `{"acked": N, "log": L, …}` → (N, L).
    static func parseAck(_ payload: [UInt8]) -> (Int64, String?)? {
        guard let o = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any],
              let n = o["acked"] as? NSNumber else { return nil }
        let v = n.doubleValue
        guard v.isFinite, v >= 0, v < 9e15 else { return nil }
        return (Int64(v), o["log"] as? String)
    }

    // MARK: - The cursor

    /// The cursor and the log file it counts in ("" when not known).
    static func loadCursor(_ url: URL, topic: String, logger: Logger) -> (acked: Int64, log: String) {
        guard let data = try? Data(contentsOf: url) else { return (0, "") }
        guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let n = o["acked"] as? NSNumber, n.int64Value >= 0 else {
            logger.warning("fleet: the cursor file cannot be read; shipping from the start of the log (the learner drops what it already has)",
                           metadata: ["fleet.cursor": "\(url.path)"])
            return (0, "")
        }
        if let t = o["topic"] as? String, t != topic {
            logger.notice("fleet: the fleet topic changed; shipping from the start of the log", metadata: ["fleet.was": "\(t)", "fleet.topic": "\(topic)"])
            return (0, "")
        }
        return (n.int64Value, o["log"] as? String ?? "")
    }

    private func saveCursor(_ acked: Int64, log: String, into file: inout CursorFile) throws {
        let text = #"{"acked":\#(acked),"log":\#(JSONValue.string(log).jsonText),"topic":\#(JSONValue.string(config.topic).jsonText),"gateway":\#(JSONValue.string(gatewayID).jsonText)}"#
        try file.write(text)
    }

    /// The cursor file's writer, owned by the shipper thread (not Sendable: one thread).
    ///
    /// The cursor is one JSON object padded with spaces to `recordSize` bytes. The first write
    /// (and any record that does not fit) replaces the file crash-safe (`DurableFile`: temporary
    /// file, fsync, rename, fsync of the folder); later moves overwrite the record in place on the
    /// file kept open and `fdatasync` it — the same durability for a quarter of the CPU (measured
    /// on this project's machine: 78 against 328 µs a write; at one acknowledgement a batch the
    /// replacement was about half the shipper's CPU). A record of one 512-byte sector at offset 0
    /// is written whole by the disk; were it ever torn, the file no longer parses and the shipper
    /// ships from the start of the log, which the learner stores once (the loader's fallback).
    struct CursorFile: ~Copyable {
        /// The record's size: one disk sector.
        static let recordSize = 512
        let url: URL
        private var fd: Int32 = -1

        init(url: URL) { self.url = url }

        deinit { if fd >= 0 { close(fd) } }

        /// Writes `json` (one line, no newline) durably.
        mutating func write(_ json: String) throws {
            var bytes = Array(json.utf8)
            let fits = bytes.count < Self.recordSize
            if fits {
                bytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: Self.recordSize - 1 - bytes.count))
            }
            bytes.append(UInt8(ascii: "\n"))
            if fits, fd >= 0 {
                // Still the file at `url`? Deleted or replaced from outside (an operator, a
                // restore), the open file is not the cursor any more: write a new one.
                if stillAtURL() {
                    let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
                    if n == bytes.count, fdatasync(fd) == 0 { return }
                }
                // Not written whole, not synced, or not the cursor any more: replace the file
                // instead, and open it again.
                close(fd)
                fd = -1
            }
            try DurableFile.write(Data(bytes), to: url)
            if fits { fd = open(url.path, O_WRONLY | O_CLOEXEC) }
        }

        /// The open file is the one at `url` (same device and inode).
        private func stillAtURL() -> Bool {
            var open = stat(), named = stat()
            guard fstat(fd, &open) == 0, stat(url.path, &named) == 0 else { return false }
            return open.st_ino == named.st_ino && open.st_dev == named.st_dev
        }
    }

    // MARK: - The thread

    /// A batch waiting for its acknowledgement: its last row id and when it was sent.
    private struct Sent {
        let last: Int64
        let at: UInt64
    }

    /// The inode of the file at `path` (0 when it cannot be read): a replaced log has another.
    static func inode(_ path: String) -> UInt64 {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_ino) : 0
    }

    private func loop() {
        var tail: LogTail?
        var tailInode: UInt64 = 0
        var log = ack.withLock { $0.log }
        var acked = figures.withLock { $0.acked }
        var persisted = acked
        var next = acked                 // rows after this one are not sent yet
        var inFlight: [Sent] = []
        var lastConnects = client.counters.connects
        var lastPartial: UInt64 = 0
        let timeoutNs = UInt64(config.ackTimeout * 1e9)
        let intervalNs = UInt64(config.interval * 1e9)
        let topic = config.experienceTopic(gateway: gatewayID)
        let qos: QoS = config.qos == 2 ? .exactlyOnce : .atLeastOnce
        var problem: String?
        var assembler = FleetModelAssembler(maxSize: config.maxModelSize)
        var cursorFile = CursorFile(url: cursorURL)

        while !stopping.load(ordering: .relaxed) {
            _ = wake.wait(timeout: .now() + min(config.interval, 0.5))
            if stopping.load(ordering: .relaxed) { break }
            if config.models { takeModels(&assembler) }
            let now = Gateway.now()
            problem = nil   // what goes wrong in this round, if anything

            // 0. The log file: opened read-only; opened again when it was replaced (a damaged
            // file moved aside). Another file counts its rows anew: ship it from its start.
            if tail != nil && Self.inode(logPath) != tailInode { tail = nil }
            if tail == nil {
                do {
                    let t = try LogTail(path: logPath)
                    tail = t
                    tailInode = Self.inode(logPath)
                    if t.logID != log {
                        if !log.isEmpty {
                            // Not the file the cursor counts in: its rows are another sequence.
                            logger.notice("fleet: the experience log was replaced; shipping the new log from its start",
                                          metadata: ["fleet.log": "\(t.logID)", "fleet.was": "\(log)"])
                            acked = 0
                            next = 0
                            inFlight.removeAll()
                        }
                        log = t.logID
                        let start = acked
                        ack.withLock { $0 = (t.logID, start) }
                        persisted = -1   // write the cursor with the log's identity
                        retentionHold?.release(through: start)
                    }
                } catch {
                    problem = "cannot read the experience log: \(error)"
                }
            }

            // 1. Acknowledgements move the cursor (durably) and retire the batches they cover.
            let a = ack.withLock { $0.acked }
            if a > acked {
                let moved = a - acked
                acked = a
                inFlight.removeAll { $0.last <= a }
                if next < a { next = a }   // acknowledged through another path (a restored learner)
                ackedRows.increment(by: UInt64(moved))
                figures.withLock { $0.rowsAcked &+= UInt64(moved) }
            }
            if acked != persisted {
                do {
                    try saveCursor(acked, log: log, into: &cursorFile)
                    persisted = acked
                } catch {
                    problem = "cannot write the cursor \(cursorURL.path): \(error)"
                    logger.error("fleet: \(problem ?? "")")
                }
            }
            // The log's age retention may delete what a learner has (durably, by our cursor) —
            // only once this file is known to be the one the cursor counts in.
            if tail != nil, persisted >= 0 { retentionHold?.release(through: persisted) }

            // 2. A new connection, or no acknowledgement in time: send again from the cursor.
            let connects = client.counters.connects
            let reconnected = connects != lastConnects
            lastConnects = connects
            let timedOut = inFlight.first.map { now &- $0.at > timeoutNs } ?? false
            if (reconnected || timedOut) && next > acked {
                logger.info("fleet: sending the unacknowledged rows again", metadata: [
                    "fleet.reason": "\(reconnected ? "reconnected" : "no acknowledgement in time")",
                    "fleet.from": "\(acked)", "fleet.to": "\(next)",
                ])
                inFlight.removeAll()
                next = acked
                figures.withLock { $0.resends &+= 1 }
            }

            // 3. New batches while the window has room (only when connected: libmosquitto would
            // keep them in memory, and they are sent again from the cursor after the connect).
            var lastID: Int64 = acked
            if let tail, client.state == .connected {
                do {
                    while inFlight.count < config.window && !stopping.load(ordering: .relaxed) {
                        let rows = try tail.rows(after: next, limit: config.batchRows)
                        guard let last = rows.last else { break }
                        // A part batch waits for the interval (fewer, fuller batches).
                        if rows.count < config.batchRows && now &- lastPartial < intervalNs { break }
                        if rows.count < config.batchRows { lastPartial = now }
                        let batch = FleetBatch(gateway: gatewayID, log: log, origin: acked, after: next, last: last.id, rows: rows)
                        _ = try client.publish(topic, batch.encode(compress: config.deflateLevel > 0, level: Int32(clamping: config.deflateLevel)), qos: qos)
                        inFlight.append(Sent(last: last.id, at: now))
                        next = last.id
                        shipped.increment(by: UInt64(rows.count))
                        figures.withLock { $0.rowsShipped &+= UInt64(rows.count); $0.batches &+= 1 }
                    }
                    lastID = try tail.lastID()
                } catch {
                    problem = "\(error)"
                    logger.error("fleet: cannot ship", metadata: ["error": "\(error)"])
                }
            } else if let tail {
                lastID = (try? tail.lastID()) ?? acked
            }
            let lagRows = max(0, lastID - acked)
            lag.set(Double(lagRows))
            figures.withLock {
                $0.acked = acked
                $0.lagRows = lagRows
                $0.inFlight = inFlight.count
                $0.problem = problem
            }
        }
    }
}

extension FleetConfig.Priority {
    /// Applies the priority to the calling thread (`who` 0 names the calling thread).
    func applyToCurrentThread() {
        #if os(Linux)
        switch self {
        case .idle:
            var param = sched_param()
            if sched_setscheduler(0, Self.schedIdle, &param) != 0 {
                setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
            }
        case .low:
            setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
        case .normal:
            break
        }
        #endif
    }

    /// `SCHED_IDLE` (linux/sched.h; not exported by Glibc's module).
    static let schedIdle: Int32 = 5
}
