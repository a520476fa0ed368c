#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import EdgeQLog
import EdgeQNet
import EdgeQRetrain
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Logging
import Synchronization

/// Training on the fleet log (`edgeq learner` with `mapping` and `key`, docs/fleet.md "Training
/// and publishing"): after every `trainEvery` new transitions (with `perGateway`, `trainEvery`
/// for each gateway that shipped rows since the last training began), the device's retraining
/// (`Retrainer`, the same training, checks and verdict as `cmd/retrain` on a gateway) runs on
/// every gateway's rows; a candidate that passes its checks is stored in `DATA/models/` signed
/// with the learner's key (`ModelStore`, the same signing as `edgeq models sign --key`) and
/// published retained on `<fleet>/model` (manifest) and `<fleet>/model/chunk/<i>` (the file in
/// chunks of at most `maxMessage` bytes). A candidate that fails its checks is not published.
///
/// Training runs on its own thread: ingest and acknowledgements never wait for it.
public final class FleetTrainer: FleetTraining {
    /// The trainer's figures.
    public struct Figures: Sendable {
        /// Trainings run, by verdict (`passed`, `failed`, `not_enough_data`, `error`).
        public var trainings: [String: Int] = [:]
        /// Models published.
        public var published = 0
        /// The newest published version.
        public var version: Int?
        /// Rows (transitions) the last training read, in all and per gateway.
        public var replayRows = 0
        public var gatewayRows: [String: Int] = [:]
        /// Gradient updates per second of the last training.
        public var updatesPerSecond = 0.0
        /// The last training: verdict, reasons, checks in words.
        public var last: [String: JSONValue]?
        /// Whether a training is running.
        public var running = false
    }

    let map: TopicMap
    let keyFile: URL
    let keyName: String
    let trainEvery: Int
    /// `train_every: N/gateway`: the threshold and the updates scale with the gateways that
    /// shipped since the last training began.
    let perGateway: Bool
    let window: Int?
    let updates: Int?
    let maxMessage: Int
    let dataDirectory: URL
    let logger: Logger
    let store: ModelStore
    /// New rows since the last training began, and the gateways they came from.
    private let pending = Mutex(Pending())
    private let wake = DispatchSemaphore(value: 0)
    private let stopping = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    private let figures = Mutex(Figures())
    private let learner = Mutex<FleetLearner?>(nil)

    /// Prepares training for the fleet of `map`, signing with the private key in `keyFile`
    /// (its name is the file's stem, as `edgeq models sign --key`). Each training reads at most
    /// `window` rows of the fleet log (each gateway's newest, `fleetRows`; nil: the whole log).
    ///
    /// - Throws: `KeyFileError` when the key cannot be read; `ModelStore.Error` when
    ///   `DATA/models` cannot be created.
    /// With `perGateway`, a training starts after `trainEvery` new rows for each gateway that
    /// shipped since the previous one began, and runs that many times the updates.
    public init(map: TopicMap, keyFile: URL, trainEvery: Int, perGateway: Bool = false, window: Int? = nil, updates: Int?, maxMessage: Int,
                dataDirectory: URL, logger: Logger = Logger(label: "edgeq.learner.training")) throws {
        _ = try KeyFile.readPrivateKey(keyFile)
        self.map = map
        self.keyFile = keyFile
        keyName = keyFile.deletingPathExtension().lastPathComponent
        self.trainEvery = max(1, trainEvery)
        self.perGateway = perGateway
        self.window = window.map { max(1, $0) }
        self.updates = updates
        self.maxMessage = maxMessage
        self.dataDirectory = dataDirectory
        self.logger = logger
        store = try ModelStore(dataDirectory: dataDirectory)
        figures.withLock { $0.version = store.versions().last }
    }

    /// The figures now.
    public var current: Figures { figures.withLock { $0 } }

    /// New rows since the last training began, and the gateways that sent them.
    struct Pending: Sendable, Equatable {
        var rows = 0
        var gateways: Set<String> = []

        /// Whether a training is due: `trainEvery` rows, or with `perGateway` `trainEvery` for
        /// each gateway that sent some.
        func due(trainEvery: Int, perGateway: Bool) -> Bool {
            rows > 0 && rows >= threshold(trainEvery: trainEvery, perGateway: perGateway)
        }

        /// The rows at which a training is due now.
        func threshold(trainEvery: Int, perGateway: Bool) -> Int {
            perGateway ? trainEvery * max(1, gateways.count) : trainEvery
        }
    }

    /// The updates of a training that starts with `gateways` gateways' new rows pending: the
    /// learner's `updates` (nil: the mapping's `updates_per_retrain`), times the gateways with
    /// `perGateway` — so that each gateway's new rows get the updates a single gateway's would.
    static func updates(base: Int?, map: TopicMap, perGateway: Bool, gateways: Int) -> Int? {
        guard perGateway else { return base }
        return (base ?? map.learning.updatesPerRetrain) * max(1, gateways)
    }

    public func committed(gateway: String, acked: Int64, inserted: Int, fleetLogPath: String) {
        guard inserted > 0 else { return }
        let due = pending.withLock { p -> Bool in
            p.rows += inserted
            p.gateways.insert(gateway)
            return p.due(trainEvery: trainEvery, perGateway: perGateway)
        }
        if due { wake.signal() }
    }

    public func attached(to learner: FleetLearner) {
        self.learner.withLock { $0 = learner }
        let t = Thread { [self] in
            // Lower priority than ingest (the nice value is per thread on Linux).
            setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
            loop(learner)
            done.signal()
        }
        t.name = "edgeq-fleet-train"
        t.stackSize = 4 << 20
        t.start()
    }

    public func detached() {
        stopping.store(true, ordering: .relaxed)
        wake.signal()
        done.wait()
        learner.withLock { $0 = nil }
    }

    public var statusJSON: JSONValue? {
        let f = current
        var trainings: [String: JSONValue] = [:]
        for (k, v) in f.trainings { trainings[k] = .number(Double(v)) }
        var gws: [String: JSONValue] = [:]
        for (k, v) in f.gatewayRows { gws[k] = .number(Double(v)) }
        let p = pending.withLock { $0 }
        return .object([
            "running": .bool(f.running), "train_every": .number(Double(trainEvery)),
            "train_every_per_gateway": .bool(perGateway),
            "train_rows": window.map { .number(Double($0)) } ?? .string("all"),
            "pending": .number(Double(p.rows)), "pending_gateways": .number(Double(p.gateways.count)),
            "next_training_at": .number(Double(p.threshold(trainEvery: trainEvery, perGateway: perGateway))),
            "trainings": .object(trainings), "published": .number(Double(f.published)),
            "version": f.version.map { .number(Double($0)) } ?? .null,
            "replay_rows": .number(Double(f.replayRows)), "gateway_rows": .object(gws),
            "prioritized_replay": .bool(map.learning.prioritizedAlpha != nil),
            "updates_per_second": .number((f.updatesPerSecond * 10).rounded() / 10),
            "last": f.last.map { .object($0) } ?? .null,
            "signer": .string(keyName),
        ])
    }

    private func loop(_ learner: FleetLearner) {
        let r = learner.registry
        let published = r.counter("edgeq_learner_models_published_total", help: "Models that passed their checks, signed and published on <fleet>/model.")
        let version = r.gauge("edgeq_learner_model_version", help: "The newest model version published.")
        let replay = r.gauge("edgeq_learner_replay_rows", help: "Fleet-log transitions the last training read (its replay).")
        let ups = r.gauge("edgeq_learner_updates_per_second", help: "Gradient updates per second of the last training.")
        let running = r.gauge("edgeq_learner_training", help: "1 while a training runs.")
        if let v = current.version { version.set(Double(v)) }
        while !stopping.load(ordering: .relaxed) {
            _ = wake.wait(timeout: .now() + 1)
            if stopping.load(ordering: .relaxed) { break }
            let started = pending.withLock { p -> Pending? in
                guard p.due(trainEvery: trainEvery, perGateway: perGateway) else { return nil }
                defer { p = Pending() }
                return p
            }
            guard let started else { continue }
            running.set(1)
            figures.withLock { $0.running = true }
            let steps = Self.updates(base: updates, map: map, perGateway: perGateway, gateways: started.gateways.count)
            let verdict = train(learner, updates: steps, published: published, version: version, replay: replay, ups: ups)
            r.counter("edgeq_learner_trainings_total", help: "Trainings on the fleet log, by verdict (passed: published).",
                      labels: [("verdict", verdict)]).increment()
            figures.withLock {
                $0.running = false
                $0.trainings[verdict, default: 0] += 1
            }
            running.set(0)
            learner.publishStatusNow()
        }
    }

    /// Every gateway's rows, each gateway's oldest 90 % first and their newest 10 % last, so
    /// that the retraining's held-out tail (the newest tenth of the list) holds every gateway's
    /// newest rows. Each gateway's rows stay in log order (its plant stretches stay whole).
    ///
    /// With `window`, a training reads at most `window` rows: each gateway's newest, shared
    /// evenly among the gateways (`shares`), so that a training's cost stays bounded as the
    /// fleet log grows and every gateway's recent plant is in it.
    static func fleetRows(_ log: FleetLog, window: Int? = nil) throws -> (rows: [LoggedTransition], perGateway: [String: Int]) {
        let summaries = try log.gateways()
        var counts: [String: Int] = [:]
        for g in summaries { counts[g.gateway, default: 0] += Int(g.rows) }
        guard let window else {
            return try pooled(counts.keys.sorted().map { g in (g, try log.transitions(gateway: g)) })
        }
        let share = shares(counts, window: window)
        return try pooled(counts.keys.sorted().map { g in (g, try log.transitions(gateway: g, newest: share[g] ?? 0)) })
    }

    /// How many of each gateway's rows a training with `window` reads: `window` shared evenly,
    /// a gateway with fewer rows than its share giving the rest to the others (water-filling);
    /// every row when the log holds no more than `window`.
    public static func shares(_ counts: [String: Int], window: Int) -> [String: Int] {
        var out: [String: Int] = [:]
        var left = max(0, window)
        let order = counts.sorted { ($0.value, $0.key) < ($1.value, $1.key) }
        for (i, (g, n)) in order.enumerated() {
            let remaining = order.count - i
            // An even share of what is left (rounded up: the sum is `window` when the rows are there).
            let take = min(max(0, n), left / remaining + (left % remaining > 0 ? 1 : 0))
            out[g] = take
            left -= take
        }
        return out
    }

    /// The rows of several gateways as one training reads them (`fleetRows`): each gateway's
    /// oldest 90 % in the order given, then each gateway's newest 10 %; every gateway's rows in
    /// log order. Also for the lab's fleet experiment (`ThermalExperiment.runFleet`).
    public static func pooled(_ gateways: [(gateway: String, rows: [LoggedTransition])]) -> (rows: [LoggedTransition], perGateway: [String: Int]) {
        var trainParts: [LoggedTransition] = []
        var heldParts: [LoggedTransition] = []
        var per: [String: Int] = [:]
        for (g, rows) in gateways {
            per[g, default: 0] += rows.count
            let held = max(rows.count / 10, rows.isEmpty ? 0 : 1)
            trainParts += rows.dropLast(held)
            heldParts += rows.suffix(held)
        }
        return (trainParts + heldParts, per)
    }

    /// The retraining the learner runs for `map`: the device's (`Retrainer(map:)`, the same
    /// training, checks and verdict), without two figures nothing downstream reads, which cost
    /// most of each training:
    /// - the plant model, fitted only when `learning.distill` or `learning.rollouts` uses it (the
    ///   pre-trial estimate is each gateway's, on its own plant): on cart-pole the fit was 48 s of a 49.5 s training at
    ///   20,000 samples, every time (a gateway keeps its fit between retrainings,
    ///   `PlantModelFit`; the learner, whose rows mix gateways, could not);
    /// - the fitted Q evaluation (`CheckPolicy.fqeUpdates`, a figure, not a check): two fresh
    ///   networks of 4,000 updates each, eight times the training's 1,000 on cart-pole.
    public static func retrainer(for map: TopicMap) -> Retrainer {
        var policy = CheckPolicy(map.learning)
        policy.fqeUpdates = 0
        var r = Retrainer(map: map, policy: policy)
        if !map.learning.distill.enabled && !map.learning.rollouts.enabled {
            r.plantModelOff = "not fitted by the fleet learner: nothing it publishes uses a plant model without learning.distill or learning.rollouts "
                + "(each gateway's own retraining fits one for its pre-trial estimate)"
        }
        return r
    }

    private func train(_ learner: FleetLearner, updates: Int?, published: Counter, version: Gauge, replay: Gauge, ups: Gauge) -> String {
        let rows: [LoggedTransition]
        let perGateway: [String: Int]
        do {
            (rows, perGateway) = try Self.fleetRows(try FleetLog(path: learner.fleetLogPath), window: window)
        } catch {
            logger.error("training: cannot read the fleet log", metadata: ["error": "\(error)"])
            figures.withLock { $0.last = ["verdict": .string("error"), "error": .string("cannot read the fleet log: \(error)")] }
            return "error"
        }
        replay.set(Double(rows.count))
        figures.withLock {
            $0.replayRows = rows.count
            $0.gatewayRows = perGateway
        }
        let warm = store.versions().last.flatMap { try? QModel.load(from: store.modelURL($0)) }
        let output = dataDirectory.appendingPathComponent("candidate.safetensors")
        logger.info("training on the fleet log", metadata: [
            "training.rows": "\(rows.count)", "training.gateways": "\(perGateway.count)", "training.warm_start": "\(warm != nil)",
            "training.updates": "\(updates ?? map.learning.updatesPerRetrain)",
            "training.prioritized_replay": "\(map.learning.prioritizedAlpha.map { "alpha \($0)" } ?? "none (uniform)")",
        ])
        let outcome: Retrainer.Outcome
        do {
            outcome = try Self.retrainer(for: map).runWithPlantModel(
                rows: rows, limits: RetrainLimits(steps: updates), warmStart: warm, output: output,
                shouldStop: { self.stopping.load(ordering: .relaxed) })
        } catch let e as RetrainError {
            let kind = e.kind == .notEnoughData ? "not_enough_data" : "error"
            logger.notice("training did not run to a candidate", metadata: ["error": "\(e)", "training.rows": "\(rows.count)"])
            figures.withLock { $0.last = ["verdict": .string(kind), "error": .string(e.description)] }
            return kind
        } catch {
            figures.withLock { $0.last = ["verdict": .string("error"), "error": .string("\(error)")] }
            return "error"
        }
        let report = outcome.report
        let rate = report.seconds > 0 ? Double(report.updates) / report.seconds : 0
        ups.set(rate)
        var last: [String: JSONValue] = [
            "verdict": .string(report.verdict), "rows": .number(Double(report.rows)), "updates": .number(Double(report.updates)),
            "seconds": .number((report.seconds * 1000).rounded() / 1000),
            "reasons": .array(report.reasons.map { .string($0) }),
            "checks": .array(report.checks.map { c in
                .object(["name": .string(c.name), "status": .string(c.status.rawValue), "value": c.value.map { .number($0) } ?? .null,
                         "limit": .number(c.limit)])
            }),
        ]
        figures.withLock { $0.updatesPerSecond = rate }
        for c in report.checks {
            logger.info("training check", metadata: ["retrain.check": "\(c.name)", "retrain.check.status": "\(c.status.rawValue)",
                                                     "retrain.check.value": "\(c.value.map { "\($0)" } ?? "none")", "retrain.check.limit": "\(c.limit)"])
        }
        guard report.passed else {
            logger.notice("candidate failed its checks: not published", metadata: ["retrain.reasons": "\(report.reasons.joined(separator: "; "))"])
            figures.withLock { $0.last = last }
            return "failed"
        }
        defer {
            try? FileManager.default.removeItem(at: output)
            try? FileManager.default.removeItem(at: output.appendingPathExtension("sha256"))
        }
        do {
            // Numbered from the clock (and above the previous one): above the versions a gateway
            // stored before, so that it may store this one (docs/fleet.md, "Versions").
            let newest = max(store.versions().last ?? 0, store.servedRecords().compactMap { $0 }.max() ?? 0)
            let v = max(newest + 1, Int(Date().timeIntervalSince1970))
            let signer = ModelSigner.key(file: keyFile, name: keyName, mapping: map.fingerprint, version: v)
            var files = ["model.safetensors": output]
            if FileManager.default.fileExists(atPath: output.appendingPathExtension("sha256").path) {
                files["model.safetensors.sha256"] = output.appendingPathExtension("sha256")
            }
            let stored = try store.add(files: files, report: report.json(), signer: signer)
            let bytes = Array(try Data(contentsOf: store.modelURL(stored)))
            let signature = try ModelSignature.parse(Data(contentsOf: store.signatureURL(stored)))
            try publish(learner, bytes: bytes, signature: signature, rows: rows.count, perGateway: perGateway)
            published.increment()
            version.set(Double(stored))
            last["version"] = .number(Double(stored))
            figures.withLock {
                $0.published += 1
                $0.version = stored
                $0.last = last
            }
            logger.notice("fleet model published", metadata: ["model.version": "\(stored)", "model.signer": "\(keyName)",
                                                              "training.rows": "\(rows.count)", "model.bytes": "\(bytes.count)"])
            return "passed"
        } catch {
            logger.error("the candidate passed its checks but could not be stored or published", metadata: ["error": "\(error)"])
            last["error"] = .string("\(error)")
            figures.withLock { $0.last = last }
            return "error"
        }
    }

    /// The file that remembers how many chunks the last published model had (to clear the
    /// retained chunks a smaller successor does not overwrite).
    var publishedFile: URL { dataDirectory.appendingPathComponent("fleet-model-published.json") }

    /// Chunks first, then the manifest (a gateway that sees the manifest finds its chunks
    /// retained); leftover chunk topics of a bigger predecessor are cleared.
    func publish(_ learner: FleetLearner, bytes: [UInt8], signature: ModelSignature, rows: Int, perGateway: [String: Int]) throws {
        let (manifest, chunks) = FleetModelChunk.split(modelBytes: bytes, signature: signature, maxMessage: maxMessage,
                                                       learner: learner.config.id, rows: rows, gateways: perGateway)
        for c in chunks {
            try learner.publishRetained(learner.config.modelChunkTopic(c.index), c.encode())
        }
        let before = (try? JSONSerialization.jsonObject(with: Data(contentsOf: publishedFile)) as? [String: Any])?["chunks"] as? Int ?? 0
        if before > chunks.count {
            for i in chunks.count..<before { try learner.publishRetained(learner.config.modelChunkTopic(i), []) }
        }
        try learner.publishRetained(learner.config.modelTopic, Array(manifest.jsonText.utf8))
        try DurableFile.write(Data("{\"version\":\(manifest.version),\"chunks\":\(chunks.count)}\n".utf8), to: publishedFile)
    }
}

extension ModelSigner {
    /// Signs the stored bytes as `version` with the private key in `file` (named `name`), for
    /// the mapping with fingerprint `mapping`: how the fleet learner stores what it publishes.
    static func key(file: URL, name: String, mapping: String, version: Int) -> ModelSigner {
        ModelSigner(version: version) { bytes, v in
            try ModelSignature.sign(modelBytes: bytes, version: v, mapping: mapping, keyName: name, privateKey: try KeyFile.readPrivateKey(file))
        }
    }
}
