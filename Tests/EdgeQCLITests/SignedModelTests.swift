import EdgeQGateway
import EdgeQMQTT
import EdgeQNet
import EdgeQTestSupport
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Testing

/// Only a signed model drives the plant, through the real `edgeq run` and `edgeq models`
/// processes on real model files (docs/security.md, "Signed models"; docs/operations.md,
/// "Anti-rollback"). Each test prepares a data directory the way an attacker or an older EdgeQ
/// would leave it, starts the gateway, and reads what it serves from its retained status, its
/// `<prefix>/retrain` events, its metrics and its log.
///
/// Before: a model file replaced together with its `.sha256` was loaded as verified and served,
/// and `models/current` rewritten by hand to an older version was served without a word.
@Suite struct SignedModelTests {
    static let learning = "  hidden: [16, 16]\n  retrain: {every_transitions: none}"

    /// A random model that fits `map` (its weights from `seed`).
    func model(for map: TopicMap, seed: UInt64) throws -> QModel {
        let arch = Architecture(inputCount: map.stateWidth, hidden: [16, 16], actionCount: map.actions.count)
        var rng = SystemRandomNumberGenerator()
        let calibration = (0..<(map.stateWidth * 256)).map { _ in Float.random(in: -1...1, using: &rng) }
        return try QModel(network: try MLP(arch, seed: seed), actionNames: map.actions.map(\.name),
                          normalization: .identity(map.stateWidth), calibrationStates: calibration)
    }

    /// Stores a model (signed by `signer`, default: the data directory's device key for `map`)
    /// and serves it, as a promotion would.
    @discardableResult
    func storeAndServe(_ map: TopicMap, in data: URL, seed: UInt64, signer: ModelSigner? = nil) throws -> Int {
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let file = data.appendingPathComponent("incoming.safetensors")
        try model(for: map, seed: seed).save(to: file)
        let store = try ModelStore(dataDirectory: data)
        let v = try store.add(files: ["model.safetensors": file, "model.safetensors.sha256": QModel.checksumURL(for: file)],
                              report: Data(#"{"verdict":"passed"}"#.utf8),
                              signer: try signer ?? ModelSigner.device(dataDirectory: data, map: map))
        try store.setCurrent(v, reason: "test")
        return v
    }

    /// A mapping file for gateway `id` and its parsed map.
    func mapping(_ dir: TempDir, id: String) throws -> (file: String, map: TopicMap) {
        let yaml = processMapping(id: id, plant: id, learning: Self.learning)
        let file = dir.url.appendingPathComponent("\(id).yaml").path
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        return (file, try TopicMap.parse(yaml: yaml, file: file))
    }

    /// What one run of `edgeq run` showed: its first online status, the model refusals it
    /// published on `<prefix>/retrain`, its metrics and its log.
    struct Run {
        var status: [String: Any]
        var refusedEvents: [[String: Any]]
        var metrics: String
        var log: String

        var servedVersion: Int? { (status["model"] as? [String: Any])?["version"] as? Int }
        var signedBy: String? { (status["model"] as? [String: Any])?["signed_by"] as? String }
        var refusals: [(version: Int, reason: String)] {
            ((status["model_refusals"] as? [[String: Any]]) ?? []).compactMap { r in
                guard let v = r["version"] as? Int, let reason = r["reason"] as? String else { return nil }
                return (v, reason)
            }
        }
    }

    /// Starts `edgeq run`, waits for it to come online and for the refusals it announces, reads
    /// its metrics, stops it (SIGTERM, exit 0 expected).
    func run(_ file: String, id: String, data: URL, dir: TempDir, name: String, expectRefusals: Int = 0) throws -> Run {
        let broker = try MosquittoBroker()
        let observer = try plantClient(broker, "edgeq/\(id)/#")
        defer { observer.stop() }
        let port = try FreePort.find()
        let logPath = dir.url.appendingPathComponent("\(name).log").path
        let gw = try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url, "--data", data.path,
                                                     "--metrics-port", String(port)], stderrPath: logPath)
        defer { if gw.isRunning { gw.signal(SIGKILL); _ = gw.wait(timeout: 10) } }
        let log = { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
        var status: [String: Any]?
        var refused: [[String: Any]] = []
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline && (status == nil || refused.count < expectRefusals) {
            guard let m = observer.receive(timeout: 0.2) else { continue }
            let object = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any] ?? [:]
            if m.topic == "edgeq/\(id)/status", status == nil, object["state"] as? String == "online" { status = object }
            if m.topic == "edgeq/\(id)/retrain", object["phase"] as? String == "model_refused" { refused.append(object) }
        }
        let s = try #require(status, "the gateway did not come online; its log:\n\(log())")
        let metrics = try ChildProcess.run("curl", ["-s", "http://127.0.0.1:\(port)/metrics"], timeout: 10).stdout
        gw.signal(SIGTERM)
        #expect(gw.wait(timeout: 30) == 0, "edgeq run did not exit 0; its log:\n\(log())")
        return Run(status: s, refusedEvents: refused, metrics: metrics, log: log())
    }

    @Test func aTamperedModelWithARewrittenChecksumIsRefusedAtStartAndTheEarlierVersionServed() throws {
        let dir = try TempDir()
        let (file, map) = try mapping(dir, id: "sa")
        let data = dir.url.appendingPathComponent("data")
        for seed in 1...3 { try storeAndServe(map, in: data, seed: UInt64(seed)) }
        // The attack: other weights in v3's file, and its .sha256 rewritten to match (QModel.save
        // writes both). The checksum check alone passes it: that is what was served before.
        let store = try ModelStore(dataDirectory: data)
        try model(for: map, seed: 99).save(to: store.modelURL(3))
        _ = try QModel.load(from: store.modelURL(3))

        let r = try run(file, id: "sa", data: data, dir: dir, name: "gw", expectRefusals: 1)
        #expect(r.servedVersion == 2, "\(r.status)")
        #expect(r.signedBy == "device")
        #expect(r.refusals.contains { $0.version == 3 && $0.reason == "tampered" }, "\(r.status)")
        #expect(r.refusedEvents.contains { $0["version"] as? Int == 3 && $0["reason"] as? String == "tampered" }, "\(r.refusedEvents)")
        #expect(r.metrics.contains(#"edgeq_model_refusals_total{reason="tampered"} 1"#), "\(r.metrics)")
        #expect(r.log.contains("model version refused"), "\(r.log)")
        // The fallback is recorded as a switch of its own: the next start serves v2 at once.
        #expect(store.current() == 2)
        #expect(store.servedRecords().last == 2)
    }

    @Test func aModelSignedForAnotherMappingIsRefused() throws {
        let dir = try TempDir()
        let (file, map) = try mapping(dir, id: "sb")
        let data = dir.url.appendingPathComponent("data")
        try storeAndServe(map, in: data, seed: 1)
        // Same shape (1 input, 2 actions), other normalisation: another fingerprint.
        let other = try TopicMap.parse(yaml: processMapping(id: "sb", plant: "sb", learning: Self.learning)
            .replacingOccurrences(of: "normalize: [-10, 10]", with: "normalize: [-5, 5]"), file: "other.yaml")
        #expect(other.fingerprint != map.fingerprint && other.stateWidth == map.stateWidth)
        let device = try DeviceKey.loadOrCreate(dataDirectory: data)
        try storeAndServe(map, in: data, seed: 2, signer: .device(device, mapping: other.fingerprint))

        let r = try run(file, id: "sb", data: data, dir: dir, name: "gw", expectRefusals: 1)
        #expect(r.servedVersion == 1, "\(r.status)")
        #expect(r.refusals.contains { $0.version == 2 && $0.reason == "other_mapping" }, "\(r.status)")
    }

    @Test func aModelsKeyModelIsImportedAndServedAndRefusedOnceTheKeyIsNoLongerTrusted() throws {
        let dir = try TempDir()
        let (file, map) = try mapping(dir, id: "sc")
        let data = dir.url.appendingPathComponent("data")
        try storeAndServe(map, in: data, seed: 1)
        // A lab signs a model with its own key.
        let keys = dir.url.appendingPathComponent("lab-keys")
        let gen = try EdgeQBinary.run(["keys", "generate", "lab", "--dir", keys.path])
        #expect(gen.code == 0, "\(gen.stderr)")
        let modelFile = dir.url.appendingPathComponent("lab-model.safetensors")
        try model(for: map, seed: 5).save(to: modelFile)
        let sign = try EdgeQBinary.run(["models", "sign", "--file", modelFile.path, "--key", keys.appendingPathComponent("lab.key").path,
                                        "--as-version", "2", "--config", file])
        #expect(sign.code == 0, "\(sign.stderr)")
        let sig = modelFile.path + ".sig"

        // Not trusted yet: refused, with the reason and where the key would go.
        let refused = try EdgeQBinary.run(["models", "import", modelFile.path, "--sig", sig, "--config", file, "--data", data.path])
        #expect(refused.code == 65, "\(refused)")
        #expect(refused.stderr.contains("unknown_key") && refused.stderr.contains("keys/models"), "\(refused.stderr)")
        #expect(try ModelStore(dataDirectory: data).versions() == [1])

        // Trusted under keys/models/: stored as the signed version, with its .sig.
        let models = data.appendingPathComponent("keys/models")
        try FileManager.default.createDirectory(at: models, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: keys.appendingPathComponent("lab.pub"), to: models.appendingPathComponent("lab.pub"))
        let imported = try EdgeQBinary.run(["models", "import", modelFile.path, "--sig", sig, "--config", file, "--data", data.path])
        #expect(imported.code == 0, "\(imported)")
        #expect(imported.stdout.contains("stored as v2"), "\(imported.stdout)")
        let promote = try EdgeQBinary.run(["models", "promote", "2", "--data", data.path])
        #expect(promote.code == 0, "\(promote)")

        let first = try run(file, id: "sc", data: data, dir: dir, name: "gw1")
        #expect(first.servedVersion == 2 && first.signedBy == "lab", "\(first.status)")
        #expect(first.refusals.isEmpty, "\(first.status)")

        // The key is withdrawn: its model is refused, the device's v1 is served.
        try FileManager.default.removeItem(at: models.appendingPathComponent("lab.pub"))
        let second = try run(file, id: "sc", data: data, dir: dir, name: "gw2", expectRefusals: 1)
        #expect(second.servedVersion == 1, "\(second.status)")
        #expect(second.refusals.contains { $0.version == 2 && $0.reason == "unknown_key" }, "\(second.status)")
    }

    @Test func currentRewrittenByHandToAnOlderVersionIsNotServed() throws {
        let dir = try TempDir()
        let (file, map) = try mapping(dir, id: "sd")
        let data = dir.url.appendingPathComponent("data")
        for seed in 1...3 { try storeAndServe(map, in: data, seed: UInt64(seed)) }
        // The attack: the pointer names v1, a validly signed older version.
        let current = data.appendingPathComponent("models/current")
        try "1\n".write(to: current, atomically: true, encoding: .utf8)

        let r = try run(file, id: "sd", data: data, dir: dir, name: "gw1", expectRefusals: 1)
        #expect(r.servedVersion == 3, "\(r.status)")
        #expect(r.refusals.contains { $0.version == 1 && $0.reason == "unrecorded_switch" }, "\(r.status)")
        #expect(r.metrics.contains(#"edgeq_model_refusals_total{reason="unrecorded_switch"} 1"#), "\(r.metrics)")
        #expect(try ModelStore(dataDirectory: data).current() == 3)

        // A recorded rollback (here the operator's offline one) is followed, without a refusal.
        let back = try EdgeQBinary.run(["models", "rollback", "--data", data.path])
        #expect(back.code == 0 && back.stdout.contains("serving v2"), "\(back)")
        let after = try run(file, id: "sd", data: data, dir: dir, name: "gw2")
        #expect(after.servedVersion == 2, "\(after.status)")
        #expect(after.refusals.isEmpty, "\(after.status)")
    }

    @Test func versionsStoredBeforeSignedModelsAreRefusedUntilAnOperatorSignsThem() throws {
        let dir = try TempDir()
        let (file, map) = try mapping(dir, id: "se")
        let data = dir.url.appendingPathComponent("data")
        for seed in 1...2 { try storeAndServe(map, in: data, seed: UInt64(seed)) }
        // As an older EdgeQ left them: no .sig.
        let store = try ModelStore(dataDirectory: data)
        for v in store.versions() { try FileManager.default.removeItem(at: store.signatureURL(v)) }

        let before = try run(file, id: "se", data: data, dir: dir, name: "gw1", expectRefusals: 2)
        #expect(before.servedVersion == nil, "\(before.status)")
        #expect(before.refusals.map(\.reason) == ["missing_signature", "missing_signature"], "\(before.status)")
        #expect(before.log.contains("edgeq models sign 2"), "\(before.log)")
        #expect(store.pointer() == 2, "the pointer is kept for after the signing")

        let sign = try EdgeQBinary.run(["models", "sign", "2", "--config", file, "--data", data.path])
        #expect(sign.code == 0 && sign.stdout.contains("signed v2"), "\(sign)")
        let again = try EdgeQBinary.run(["models", "sign", "2", "--config", file, "--data", data.path])
        #expect(again.stdout.contains("already signed"), "\(again)")
        let list = try EdgeQBinary.run(["models", "list", "--data", data.path, "--config", file])
        #expect(list.stdout.contains("v2") && list.stdout.contains("signed by device") && list.stdout.contains("UNSIGNED"), "\(list.stdout)")

        let after = try run(file, id: "se", data: data, dir: dir, name: "gw2")
        #expect(after.servedVersion == 2 && after.signedBy == "device", "\(after.status)")
    }

    @Test func edgeqTrainSignsWhatItStoresAndRefusesToWarmStartFromATamperedModel() throws {
        let dir = try TempDir()
        let yaml = processMapping(id: "p1", plant: "p", learning: """
              hidden: [8]
              updates_per_retrain: 200
              checks: {quantization_agreement: 0, max_unsupported: 1, min_rows: 50}
              promotion: {min_agreement: 0}
            """)
        let file = dir.url.appendingPathComponent("p.yaml").path
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        let map = try TopicMap.parse(yaml: yaml, file: file)
        try writeTestLog(dataDirectory: dir.url.path, rows: 300)
        let first = try EdgeQBinary.run(["train", "--data", dir.url.path, "--config", file, "--promote"])
        #expect(first.code == 0, "\(first.stderr)\n\(first.stdout)")
        let store = try ModelStore(dataDirectory: dir.url)
        let device = try DeviceKey.loadOrCreate(dataDirectory: dir.url)
        let verified = try ModelSignature.verify(modelFile: store.modelURL(1), expectedVersion: 1, expectedMapping: map.fingerprint,
                                                 trust: TrustStore(keys: []).adding(device))
        #expect(verified.signature.key == "device")

        // Training on from a tampered served model and signing the result would launder it.
        let other = try QModel.load(from: store.modelURL(1))
        var params = other.parameters
        params[params.count - 1] += 0.5
        let tampered = try QModel(network: try MLP(other.architecture, parameters: params), actionNames: other.actionNames,
                                  normalization: other.normalization, calibrationStates: other.referenceStates)
        try tampered.save(to: store.modelURL(1))
        let second = try EdgeQBinary.run(["train", "--data", dir.url.path, "--config", file])
        #expect(second.code == 65, "\(second)")
        #expect(second.stderr.contains("tampered"), "\(second.stderr)")
        #expect(store.versions() == [1])
    }
}
