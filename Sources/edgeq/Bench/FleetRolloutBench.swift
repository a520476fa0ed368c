import EdgeQGateway
import EdgeQMQTT
import EdgeQNet
import EdgeQSystem
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Logging

/// What the rollout figure runs (`--models`, `--quick`).
struct FleetRolloutOptions: Sendable {
    /// Gateway processes the models go to.
    var gateways = 8
    /// Models published one after another, timed (after one warm-up model).
    var models = 20
}

/// `edgeq bench fleet`, the model rollout (issue 15's goal: publish → "stored and verified" on
/// 8 gateways, p99 < 1 s).
///
/// Real parts only: one mosquitto, `gateways` real `edgeq run` processes (this binary) in
/// shadow mode, each with a `fleet` section (models on, the default) and the bench's signing
/// key trusted under `keys/models/`, under `promotion: manual` — so a model that passed every
/// check is stored and nothing else happens: its verdict is `stored`. The mapping is a
/// 32-signal plant (32 features, 9 actions); the models are int8 32-256-256-9 networks (the
/// `inference` bench's large shape) with random weights, one seed per model, each signed for
/// the gateways' mapping fingerprint with the real signing code (`ModelSignature.sign`) and
/// published as the learner publishes (`FleetTrainer.publish`): the chunks retained with QoS 1
/// in messages of at most the learner's default `max_message` (256 KiB), then the manifest.
///
/// Method: the bench subscribes to `<fleet>/verdict/+` before anything is published. A first
/// model (not timed) shows every gateway's model path working; once the gateways are idle, `models`
/// models follow one after another, each with a version above the last, 0.1 s after the
/// previous one's last verdict. A sample is the time from the start of a model's publication
/// (before its first chunk) to the arrival in the bench process of one gateway's `stored`
/// verdict for that version (retained verdicts of older versions are ignored): `models` ×
/// `gateways` samples, of which the p50, the p99 and the maximum are printed, with the count of
/// `stored` verdicts against models × gateways. Any other verdict (a refusal and its reason), or
/// a gateway silent for 30 s, fails the bench. The gateways' CPU time over the timed models
/// (their processes, all threads: reassembly, SHA-256, Ed25519, loading the model and checking
/// its reference set, the store's write — and what an idle gateway does meanwhile) per model
/// and gateway is printed too. At the end every gateway's store must hold the last model's
/// exact bytes.
enum FleetRolloutBench {
    static let fleetTopic = "fleet/rollout"
    /// The models' shape: the `inference` bench's large network.
    static let inputs = 32, hidden = [256, 256], actions = 9
    static var shape: String { "\(inputs)-\(hidden.map(String.init).joined(separator: "-"))-\(actions)" }

    /// One signed model, ready to publish.
    struct SignedModel {
        let version: Int
        let bytes: [UInt8]
        let signature: ModelSignature
    }

    static func run(_ o: FleetRolloutOptions, work: URL, edgeq: String, context: BenchContext) throws -> [BenchFigure] {
        let ids = (1...o.gateways).map { "rollout-\($0)" }
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)

        // The learner's signing key; every gateway trusts its public half for models.
        let keyName = "fleet-bench"
        let key: ModelKey
        do {
            let files = try KeyFile.generate(name: keyName, directory: work.appendingPathComponent("learner-keys"))
            for id in ids {
                let trusted = TrustStore.keysDirectory(dataDirectory: work.appendingPathComponent(id)).appendingPathComponent(KeyRole.models.rawValue)
                try FileManager.default.createDirectory(at: trusted, withIntermediateDirectories: true)
                try FileManager.default.copyItem(at: files.publicKey, to: trusted.appendingPathComponent("\(keyName).pub"))
            }
            key = ModelKey(name: keyName, privateKey: try KeyFile.readPrivateKey(files.privateKey))
        } catch {
            throw BenchError.failed("cannot make the rollout's signing key in \(work.path): \(error)")
        }

        // One mapping per gateway (its own id and topics); the fingerprint must be the same.
        var fingerprint = ""
        var actionNames: [String] = []
        for id in ids {
            let file = work.appendingPathComponent("\(id).yaml").path
            let map: TopicMap
            do {
                try mapping(id: id).write(toFile: file, atomically: true, encoding: .utf8)
                map = try TopicMap.load(path: file)
            } catch {
                throw BenchError.failed("cannot write or load the rollout mapping \(file): \(error)")
            }
            guard fingerprint.isEmpty || map.fingerprint == fingerprint else {
                throw BenchError.failed("the rollout mappings have different fingerprints (\(file)): one model cannot fit them all")
            }
            fingerprint = map.fingerprint
            actionNames = map.actions.map(\.name)
        }

        // Every model made and signed before anything is timed: the warm-up one, then `models`.
        context.progress("making and signing \(o.models + 1) int8 \(shape) models")
        let base = Int(Date().timeIntervalSince1970)
        let models = try (0...o.models).map { j in
            try makeModel(seed: UInt64(j + 1), version: base + j, actionNames: actionNames, fingerprint: fingerprint, key: key)
        }
        let maxMessage = FleetLearnerConfig(fleet: fleetTopic, group: "bench", id: "bench").maxMessage
        let size = models[0].bytes.count
        let chunkCount = FleetModelChunk.split(modelBytes: models[0].bytes, signature: models[0].signature, maxMessage: maxMessage,
                                               learner: "bench", rows: 0, gateways: [:]).chunks.count
        context.progress("model: \(size) bytes, \(chunkCount) chunks of ≤ \(maxMessage) bytes")

        let broker = try MosquittoBroker()
        defer { broker.stop() }
        let verdicts = try FleetBench.client(broker, subscribe: "\(fleetTopic)/verdict/+")
        defer { verdicts.stop() }
        let statuses = try FleetBench.client(broker, subscribe: "edgeq/+/status")
        defer { statuses.stop() }
        let publisher: MQTTClient
        do {
            var quiet = Logger(label: "edgeq.bench.fleet") { StreamLogHandler.standardError(label: $0) }
            quiet.logLevel = .warning
            publisher = try MQTTClient(try MQTTConfiguration(url: broker.url, clientID: "bench-learner-\(UUID().uuidString.prefix(8))"), logger: quiet)
            publisher.start()
            try publisher.waitUntilConnected(timeout: 10)
        } catch {
            throw BenchError.failed("the rollout's publisher cannot connect to \(broker.url): \(error)")
        }
        defer { publisher.stop() }

        context.progress("starting \(ids.count) gateways (shadow mode, promotion manual)")
        var gateways: [(id: String, child: ChildProcess, log: String)] = []
        defer { for g in gateways { _ = g.child.stop(grace: 10) } }
        for id in ids {
            let data = work.appendingPathComponent(id)
            let log = data.appendingPathComponent("gateway.log").path
            let child = try ChildProcess(edgeq, ["run", "--config", work.appendingPathComponent("\(id).yaml").path, "--broker", broker.url,
                                                 "--data", data.path, "--mode", "shadow", "--log-level", "warning"],
                                             stdoutPath: log, stderrPath: log)
            gateways.append((id, child, log))
        }
        func logTail(_ id: String) -> String {
            let path = gateways.first { $0.id == id }?.log ?? ""
            return lastLine((try? String(contentsOfFile: path, encoding: .utf8)) ?? "")
        }
        var online = Set<String>()
        let deadline = Date().addingTimeInterval(60)
        while online.count < ids.count && Date() < deadline {
            if let dead = gateways.first(where: { !$0.child.isRunning }) {
                throw BenchError.failed("the gateway \(dead.id) exited: \(logTail(dead.id))")
            }
            guard let m = statuses.receive(timeout: 0.2) else { continue }
            let parts = m.topic.split(separator: "/")
            if parts.count == 3, String(decoding: m.payload, as: UTF8.self).contains(#""state":"online""#) { online.insert(String(parts[1])) }
        }
        guard online.count == ids.count else {
            let missing = ids.filter { !online.contains($0) }
            throw BenchError.failed("gateways not online after 60 s: \(missing.map { "\($0) (\(logTail($0)))" }.joined(separator: ", "))")
        }

        /// Publishes `model` as the learner does; the monotonic time before its first chunk.
        func publish(_ model: SignedModel) throws -> UInt64 {
            let (manifest, chunks) = FleetModelChunk.split(modelBytes: model.bytes, signature: model.signature, maxMessage: maxMessage,
                                                           learner: "bench", rows: 0, gateways: [:])
            let start = MonotonicClock.nanoseconds()
            do {
                for c in chunks {
                    try publisher.publish("\(fleetTopic)/model/chunk/\(c.index)", c.encode(), qos: .atLeastOnce, retain: true)
                }
                try publisher.publish("\(fleetTopic)/model", manifest.jsonText, qos: .atLeastOnce, retain: true)
            } catch {
                throw BenchError.failed("cannot publish the model v\(model.version): \(error)")
            }
            return start
        }

        /// Waits for every gateway's `stored` verdict on `version`: each one's time since `start` (s).
        func collect(_ version: Int, since start: UInt64, timeout: Double) throws -> [String: Double] {
            var seen: [String: Double] = [:]
            let deadline = Date().addingTimeInterval(timeout)
            while seen.count < ids.count && Date() < deadline {
                guard let m = verdicts.receive(timeout: 0.2) else { continue }
                guard let o = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any] else { continue }
                let gateway = String(m.topic.split(separator: "/").last ?? "")
                let kind = o["verdict"] as? String ?? "?"
                let about = (o["version"] as? NSNumber)?.intValue
                // A refusal that names no version: the manifest itself did not decode.
                guard about == version || (about == nil && kind == "refused") else { continue }   // an older model's verdict (retained)
                guard kind == "stored" else {
                    throw BenchError.failed("the gateway \(gateway) answered the model v\(version) with '\(kind)' (reason: \(o["reason"] as? String ?? "none"); \(o["message"] as? String ?? "")), not 'stored'")
                }
                if seen[gateway] == nil, ids.contains(gateway) {
                    seen[gateway] = Double(m.arrival &- start) / 1e9
                }
            }
            guard seen.count == ids.count else {
                let missing = ids.filter { seen[$0] == nil }
                throw BenchError.failed("no 'stored' verdict on the model v\(version) within \(Int(timeout)) s from \(missing.map { "\($0) (\(logTail($0)))" }.joined(separator: ", "))")
            }
            return seen
        }

        // The warm-up model: every gateway's subscription and model path works (not timed).
        let warm = try collect(models[0].version, since: try publish(models[0]), timeout: 60)
        context.progress(String(format: "warm-up model v%d stored by %d gateways (slowest %.0f ms)", models[0].version, warm.count,
                                (warm.values.max() ?? 0) * 1000))
        for g in gateways { E2EBench.waitUntilIdle(g.child.pid, context: context) }

        var samples: [Double] = []
        samples.reserveCapacity(o.models * ids.count)
        let cpu0 = gateways.map { MQTTBench.processCPUSeconds($0.child.pid) }
        for model in models.dropFirst() {
            usleep(100_000)   // a learner publishes minutes apart: the previous model's after-work is not in this one's times
            let times = try collect(model.version, since: try publish(model), timeout: 30)
            samples += times.values
            context.progress(String(format: "model v%d: stored by %d gateways in %.1f–%.1f ms", model.version, times.count,
                                    (times.values.min() ?? 0) * 1000, (times.values.max() ?? 0) * 1000))
        }
        let cpu1 = gateways.map { MQTTBench.processCPUSeconds($0.child.pid) }
        var cpuPerModel: Double?
        let spent = zip(cpu0, cpu1).compactMap { a, b -> Double? in
            guard let a, let b else { return nil }
            return b - a
        }
        if spent.count == gateways.count { cpuPerModel = spent.reduce(0, +) / Double(gateways.count * o.models) * 1000 }

        // Stored means these very bytes: the last model, read back from every gateway's store.
        guard let last = models.last else { return [] }
        for id in ids {
            let stored = try? ModelStore(dataDirectory: work.appendingPathComponent(id)).modelURL(last.version)
            guard let url = stored, let bytes = try? Data(contentsOf: url), Array(bytes) == last.bytes else {
                throw BenchError.failed("the gateway \(id) said 'stored' for v\(last.version), but its store does not hold the published bytes")
            }
        }

        samples.sort()
        func at(_ q: Double) -> Double? {
            guard !samples.isEmpty else { return nil }
            return samples[min(samples.count - 1, Int(Double(samples.count) * q))] * 1000
        }
        context.progress(String(format: "rollout: %d samples, p50 %.1f ms, p99 %.1f ms, max %.1f ms; gateway CPU %.1f ms per model",
                                samples.count, at(0.5) ?? .nan, at(0.99) ?? .nan, (samples.last ?? .nan) * 1000, cpuPerModel ?? .nan))
        let label = "model rollout: publish → stored and verified on \(ids.count) gateways"
        return [
            BenchFigure(bench: "fleet", figure: "\(label), p50", value: at(0.5), unit: "ms", better: .lower),
            BenchFigure(bench: "fleet", figure: "\(label), p99 (goal < 1 s)", value: at(0.99), unit: "ms", better: .lower),
            BenchFigure(bench: "fleet", figure: "\(label), max", value: samples.last.map { $0 * 1000 }, unit: "ms", better: .lower),
            BenchFigure(bench: "fleet", figure: "model rollout: 'stored' verdicts (every model on every gateway)",
                        value: Double(samples.count), unit: "verdicts", anchor: "models × gateways",
                        anchorValue: Double(o.models * ids.count), better: .higher),
            BenchFigure(bench: "fleet", figure: "model rollout: model file (int8 \(shape), with its fp32 weights)",
                        value: Double(size), unit: "bytes", better: .lower),
            BenchFigure(bench: "fleet", figure: "model rollout: chunks per model (messages of ≤ \(maxMessage / 1024) KiB, the learner's default)",
                        value: Double(chunkCount), unit: "chunks", better: .lower),
            BenchFigure(bench: "fleet", figure: "model rollout: gateway CPU time per model (reassemble, verify, load, store; per gateway)",
                        value: cpuPerModel, unit: "ms", better: .lower),
        ]
    }

    /// The signing key (its name and private half).
    struct ModelKey {
        let name: String
        let privateKey: SigningPrivateKey
    }

    /// A random int8 model of the bench's shape (`seed`), signed as `version` for `fingerprint`.
    static func makeModel(seed: UInt64, version: Int, actionNames: [String], fingerprint: String, key: ModelKey) throws -> SignedModel {
        do {
            let net = try MLP(Architecture(inputCount: inputs, hidden: hidden, actionCount: actions), seed: seed)
            var rng = SeededBenchGenerator(seed: 1_000 + seed)
            let calibration = (0..<(inputs * 512)).map { _ in Float.random(in: -1...1, using: &rng) }
            let model = try QModel(network: net, actionNames: actionNames, normalization: .identity(inputs), calibrationStates: calibration)
            let bytes = model.encoded()
            let signature = try ModelSignature.sign(modelBytes: bytes, version: version, mapping: fingerprint, keyName: key.name, privateKey: key.privateKey)
            return SignedModel(version: version, bytes: bytes, signature: signature)
        } catch {
            throw BenchError.failed("cannot make the rollout model v\(version): \(error)")
        }
    }

    /// The mapping of rollout gateway `id`: a plant with 32 signals (the state) and 9 commands,
    /// whose incumbent's commands are observed; no retraining; fleet models stored, not served.
    static func mapping(id: String) -> String {
        var s = "gateway:\n  id: \(id)\n  mode: shadow\nsignals:\n"
        for i in 0..<inputs { s += "  - {name: x\(i), topic: rollout/\(id)/state, json: \"x[\(i)]\", range: [-1, 1]}\n" }
        s += "state:\n  features:\n"
        for i in 0..<inputs { s += "    - {signal: x\(i)}\n" }
        s += "tick:\n  trigger: rollout/\(id)/state\nreward: 0\nactions:\n  fallback: hold\n  list:\n"
        for a in 0..<actions { s += "    - {name: a\(a), publish: {topic: rollout/\(id)/cmd, payload: '{\"a\":\(a)}', value: \(a)}}\n" }
        s += "incumbent:\n  topic: rollout/\(id)/cmd\n  json: a\n"
        s += "safety:\n  ood_margin: none\n"
        s += "learning:\n  retrain: {every_transitions: none}\n  promotion: {policy: manual}\n"
        s += "fleet: {topic: \(fleetTopic)}\n"
        return s
    }
}
