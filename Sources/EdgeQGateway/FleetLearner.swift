#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import EdgeQLog
import EdgeQMQTT
import EdgeQTopicMap
import Foundation
import Logging
import Synchronization

/// The seam where training on the fleet log goes (`FleetTrainer`: the device's retraining on
/// every gateway's rows, checks, signing, publishing on `<fleet>/model`).
///
/// The ingest loop calls `committed` on its own thread after each batch is in the fleet log and
/// before it is acknowledged; an implementation must return at once (hand the news to its own
/// training thread, which reads `fleetLogPath` through its own connection) so that ingest and
/// acknowledgements never wait for training.
public protocol FleetTraining: Sendable {
    /// A batch of `gateway` was committed: the fleet log now holds every row of that gateway's
    /// log up to `acked`; `inserted` rows are new.
    func committed(gateway: String, acked: Int64, inserted: Int, fleetLogPath: String)
    /// The learner is connected and about to ingest: start the training thread (it may publish
    /// through `learner.publishRetained`).
    func attached(to learner: FleetLearner)
    /// The learner is stopping: stop training (a training under way is abandoned) and return.
    func detached()
    /// The `training` object of the learner's status (nil: none).
    var statusJSON: JSONValue? { get }
}

extension FleetTraining {
    public func attached(to learner: FleetLearner) {}
    public func detached() {}
    public var statusJSON: JSONValue? { nil }
}

/// The fleet learner's ingest (`edgeq learner`, docs/fleet.md): takes the gateways' batches from
/// a shared subscription (`$share/<group>/<fleet>/experience/+`), stores them in the fleet log
/// (`DATA/fleet.sqlite`, deduplicated by gateway and row id), and acknowledges each gateway's
/// high-water mark on `<fleet>/ack/<gateway>` (retained) only after the commit.
public final class FleetLearner: Sendable {
    /// The learner's figures since start.
    public struct Figures: Sendable, Equatable {
        /// Batches stored.
        public var batches: UInt64 = 0
        /// Rows stored (new).
        public var rows: UInt64 = 0
        /// Rows received again and dropped.
        public var duplicates: UInt64 = 0
        /// Payloads refused (not a batch, or a batch under another gateway's topic).
        public var refused: UInt64 = 0
        /// Batches that could not be committed (not acknowledged: the gateway sends them again).
        public var failures: UInt64 = 0
        /// The high-water mark acknowledged per gateway.
        public var acked: [String: Int64] = [:]
        /// The newest verdict of each gateway on the fleet models (`<fleet>/verdict/<gateway>`).
        public var rollout: [String: JSONValue] = [:]
    }

    public let config: FleetLearnerConfig
    public let fleetLogPath: String
    let client: MQTTClient
    let logger: Logger
    let training: (any FleetTraining)?
    let registry = MetricsRegistry()
    let metricsServer: MetricsServer?
    private let figures = Mutex(Figures())
    /// The verdicts counted per gateway ("version verdict"), the newest `countedPerGateway`: a
    /// verdict published again (a gateway's restart, a retained copy after a reconnect) is not
    /// counted twice.
    private let counted = Mutex<[String: [String]]>([:])
    static let countedPerGateway = 64
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    private let startNanos = Gateway.now()
    private let rowsCounter: Counter, dupCounter: Counter, batchCounter: Counter, refusedCounter: Counter, failureCounter: Counter

    /// Prepares the learner: creates the data directory, checks the fleet log opens, makes the
    /// MQTT client (clean session, client id `edgeq-learner-<id>`, Last Will: offline status).
    ///
    /// - Throws: `GatewayError` for a data directory or fleet log that cannot be created or
    ///   opened, a broker URL that is not usable, a secret (user name, password) that cannot be
    ///   read, a metrics port that cannot be bound.
    public init(config: FleetLearnerConfig, broker: String, dataDirectory: String, metricsPort: UInt16? = nil,
                training: (any FleetTraining)? = nil, logger: Logger = Logger(label: "edgeq.learner")) throws {
        self.config = config
        self.logger = logger
        self.training = training
        do {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        } catch {
            throw GatewayError("cannot create the data directory \(dataDirectory): \(error.localizedDescription)")
        }
        fleetLogPath = (dataDirectory as NSString).appendingPathComponent(FleetLog.defaultFileName)
        do {
            _ = try FleetLog(path: fleetLogPath)
        } catch {
            throw GatewayError("cannot open the fleet log: \(error)")
        }
        do {
            var c = try MQTTConfiguration(url: broker, clientID: "edgeq-learner-\(config.id)")
            if let u = config.username { c.username = try BrokerConnection.resolveSecret(u) }
            if let p = config.password { c.password = Secret(try BrokerConnection.resolveSecret(p)) }
            if let t = config.tls { c.tls = TLSConfiguration(caFile: t.caFile, certificateFile: t.certFile, keyFile: t.keyFile) }
            c.session = .clean
            c.inboundCapacity = 4096
            c.will = LastWill(topic: config.statusTopic, payload: Array(#"{"state":"offline","reason":"connection lost"}"#.utf8),
                              qos: .atLeastOnce, retain: true)
            client = try MQTTClient(c, logger: logger)
        } catch let e as GatewayError {
            throw e
        } catch {
            throw GatewayError("MQTT: \(error)")
        }
        rowsCounter = registry.counter("edgeq_learner_rows_ingested_total", help: "Rows stored in the fleet log by this learner.")
        dupCounter = registry.counter("edgeq_learner_duplicates_total", help: "Rows received again and dropped (sent before their acknowledgement arrived).")
        batchCounter = registry.counter("edgeq_learner_batches_total", help: "Batches committed by this learner.")
        refusedCounter = registry.counter("edgeq_learner_refused_total", help: "Payloads refused: not a fleet batch, or a batch under another gateway's topic.")
        failureCounter = registry.counter("edgeq_learner_commit_failures_total", help: "Batches that could not be committed (not acknowledged; the gateway sends them again).")
        if let port = metricsPort {
            let r = registry
            metricsServer = try MetricsServer(host: "127.0.0.1", port: port) { r.render() }
        } else {
            metricsServer = nil
        }
    }

    /// The metrics server's port, if any.
    public var metricsPort: UInt16? { metricsServer?.port }

    /// The figures now.
    public var current: Figures { figures.withLock { $0 } }

    /// Connects and ingests on the calling thread until `stop()`; then publishes the offline
    /// status and disconnects. A batch under way is committed and acknowledged first.
    ///
    /// - Throws: `GatewayError` when the broker cannot be reached at start within 30 s, or the
    ///   fleet log cannot be opened.
    public func run() throws {
        defer { finished.signal() }
        let store: FleetLog
        do {
            store = try FleetLog(path: fleetLogPath)
        } catch {
            throw GatewayError("cannot open the fleet log: \(error)")
        }
        try client.subscribe(config.subscription, qos: .atLeastOnce)
        try client.subscribe(config.verdictFilter, qos: .atLeastOnce)
        client.start()
        do {
            try client.waitUntilConnected(timeout: 30)
        } catch {
            client.stop()
            throw GatewayError("cannot reach the broker: \(error)")
        }
        logger.info("fleet learner running", metadata: [
            "learner.id": "\(config.id)", "learner.subscription": "\(config.subscription)", "learner.log": "\(fleetLogPath)",
        ])
        publishStatus(state: "online")
        training?.attached(to: self)
        var lastStatus = Gateway.now()
        let prefix = config.fleet + "/experience/"
        let verdictPrefix = config.fleet + "/verdict/"
        while !stopping.load(ordering: .relaxed) {
            if let m = client.receive(timeout: 0.2) {
                if m.topic.hasPrefix(verdictPrefix) {
                    verdict(m, gateway: String(m.topic.dropFirst(verdictPrefix.count)))
                } else {
                    ingest(m, prefix: prefix, store: store)
                }
            }
            let now = Gateway.now()
            if now &- lastStatus > UInt64(config.statusInterval * 1e9) {
                lastStatus = now
                publishStatus(state: "online")
            }
        }
        training?.detached()
        publishStatus(state: "offline", reason: "stopped")
        // The retained offline status leaves (acknowledged) before the disconnect.
        if client.state == .connected, !client.waitUntilSent(timeout: 5) {
            logger.warning("the broker did not acknowledge the learner's offline status within 5 s: check the broker's connection")
        }
        client.stop()
        metricsServer?.stop()
        let f = current
        logger.info("fleet learner stopped", metadata: ["learner.rows": "\(f.rows)", "learner.duplicates": "\(f.duplicates)"])
    }

    /// Asks `run()` to stop (from any thread, e.g. a signal handler); waits for it when `wait`.
    public func stop(wait: Bool = true) {
        stopping.store(true, ordering: .relaxed)
        if wait {
            finished.wait()
            finished.signal()
        }
    }

    private func ingest(_ m: MQTTMessage, prefix: String, store: FleetLog) {
        guard m.topic.hasPrefix(prefix) else { return }
        let topicGateway = String(m.topic.dropFirst(prefix.count))
        let batch: FleetBatch
        do {
            batch = try FleetBatch.decode(m.payload)
        } catch {
            refuse("not a fleet batch: \(error)", topic: m.topic)
            return
        }
        guard batch.gateway == topicGateway else {
            refuse("a batch of gateway '\(batch.gateway)' on another gateway's topic", topic: m.topic)
            return
        }
        let result: FleetIngestResult
        do {
            result = try store.ingest(batch, learner: config.id)
        } catch {
            failureCounter.increment()
            figures.withLock { $0.failures &+= 1 }
            logger.error("fleet: a batch could not be committed (not acknowledged: the gateway sends it again)", metadata: [
                "fleet.gateway": "\(batch.gateway)", "error": "\(error)",
            ])
            return
        }
        rowsCounter.increment(by: UInt64(result.inserted))
        dupCounter.increment(by: UInt64(result.duplicates))
        batchCounter.increment()
        registry.gauge("edgeq_learner_gateway_acked", help: "The highest row id acknowledged per gateway (every row up to it is in the fleet log).",
                       labels: [("gateway", batch.gateway)]).set(Double(result.acked))
        figures.withLock {
            $0.batches &+= 1
            $0.rows &+= UInt64(result.inserted)
            $0.duplicates &+= UInt64(result.duplicates)
            $0.acked[batch.gateway] = result.acked
        }
        training?.committed(gateway: batch.gateway, acked: result.acked, inserted: result.inserted, fleetLogPath: fleetLogPath)
        let ack = #"{"gateway":\#(JSONValue.string(batch.gateway).jsonText),"log":\#(JSONValue.string(batch.log).jsonText),"acked":\#(result.acked),"learner":\#(JSONValue.string(config.id).jsonText)}"#
        do {
            _ = try client.publish(config.ackTopic(gateway: batch.gateway), ack, qos: .atLeastOnce, retain: true)
        } catch {
            logger.error("fleet: cannot publish an acknowledgement", metadata: ["fleet.gateway": "\(batch.gateway)", "error": "\(error)"])
        }
    }

    /// A gateway's verdict on a fleet model: the rollout table (status) and metrics.
    private func verdict(_ m: MQTTMessage, gateway: String) {
        guard !m.payload.isEmpty, let any = try? JSONSerialization.jsonObject(with: Data(m.payload)),
              let value = JSONValue(any: any), case .object(let o) = value else { return }
        // The label takes only the verdicts gateways send (a payload is not trusted to name series).
        let known: Set<String> = ["refused", "stored", "trial_started", "trial_queued", "promoted", "rejected", "trial_abandoned"]
        let kind: String
        if case .string(let k)? = o["verdict"], known.contains(k) { kind = k } else { kind = "unknown" }
        figures.withLock { $0.rollout[gateway] = value }
        // Counted once per (gateway, version, verdict): the same verdict again is news to the
        // rollout table (its time), not another verdict.
        let version: String
        if case .number(let v)? = o["version"] { version = String(v) } else { version = "none" }
        let isNew = counted.withLock { c -> Bool in
            let key = "\(version) \(kind)"
            var seen = c[gateway] ?? []
            if seen.contains(key) { return false }
            seen.append(key)
            if seen.count > Self.countedPerGateway { seen.removeFirst(seen.count - Self.countedPerGateway) }
            c[gateway] = seen
            return true
        }
        if isNew {
            registry.counter("edgeq_learner_verdicts_total", help: "The gateways' verdicts on fleet models, by verdict (refused, stored, trial_started, promoted, rejected, …); each (gateway, version, verdict) once.",
                             labels: [("verdict", kind)]).increment()
        }
        if case .number(let v)? = o["version"] {
            registry.gauge("edgeq_learner_gateway_model_version", help: "The fleet model version of each gateway's newest verdict.",
                           labels: [("gateway", gateway)]).set(v)
        }
        logger.info("fleet: a gateway's verdict", metadata: ["fleet.gateway": "\(gateway)", "fleet.verdict": "\(kind)",
                                                            "fleet.reason": "\(o["reason"].map { "\($0)" } ?? "")"])
    }

    /// Publishes `payload` retained with QoS 1 (the trainer's manifest and chunks).
    /// - Throws: the client's error when it cannot be queued.
    public func publishRetained(_ topic: String, _ payload: [UInt8]) throws {
        _ = try client.publish(topic, payload, qos: .atLeastOnce, retain: true)
    }

    /// Publishes the status now (after a training).
    public func publishStatusNow() { publishStatus(state: "online") }

    private func refuse(_ why: String, topic: String) {
        refusedCounter.increment()
        let n = figures.withLock { f -> UInt64 in
            f.refused &+= 1
            return f.refused
        }
        // Rate-limited: the first ten, then every hundredth.
        if n <= 10 || n % 100 == 0 {
            logger.warning("fleet: payload refused", metadata: ["mqtt.topic": "\(topic)", "fleet.reason": "\(why)", "fleet.refused": "\(n)"])
        }
    }

    /// The retained status on `<fleet>/learner/<id>/status`.
    func statusJSON(state: String, reason: String? = nil) -> String {
        let f = current
        let seconds = max(1e-9, Double(Gateway.now() &- startNanos) / 1e9)
        var gateways: [String: JSONValue] = [:]
        for (g, a) in f.acked { gateways[g] = .number(Double(a)) }
        var o: [String: JSONValue] = [
            "state": .string(state),
            "learner": .string(config.id),
            "group": .string(config.group),
            "batches": .number(Double(f.batches)),
            "rows": .number(Double(f.rows)),
            "duplicates": .number(Double(f.duplicates)),
            "refused": .number(Double(f.refused)),
            "failures": .number(Double(f.failures)),
            "rows_per_second": .number((Double(f.rows) / seconds * 10).rounded() / 10),
            "gateways": .object(gateways),
            "rollout": .object(f.rollout),
        ]
        if let t = training?.statusJSON { o["training"] = t }
        if let reason { o["reason"] = .string(reason) }
        return JSONValue.object(o).jsonText
    }

    private func publishStatus(state: String, reason: String? = nil) {
        _ = try? client.publish(config.statusTopic, statusJSON(state: state, reason: reason), qos: .atLeastOnce, retain: true)
    }
}
