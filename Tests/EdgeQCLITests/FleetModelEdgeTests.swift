import EdgeQGateway
import EdgeQMQTT
import EdgeQNet
import EdgeQTestSupport
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Testing

/// The edges of fleet models (docs/fleet.md, "Models on the wire", "Models on the gateway"), with a
/// real mosquitto and real `edgeq run` / `edgeq learner` processes: a smaller successor clears the
/// chunk topics its predecessor used; a gateway restart stores nothing twice, starts no second
/// trial and says only what is true; a gateway of another fleet or with `models: false` never
/// subscribes to the models; a refused model is not checked again after a restart, and the
/// learner counts each verdict once.
@Suite(.serialized) struct FleetModelEdgeTests {
    /// The last filter a model-taking gateway's shipper subscribes to.
    static let chunks = "fleet/t/model/chunk/+"

    /// Processes, their logs and metrics, in one temporary folder.
    final class Rig: @unchecked Sendable {
        // @unchecked Sendable: used by the test's thread only.
        let dir: TempDir
        let broker: MosquittoBroker
        var processes: [String: ChildProcess] = [:]
        var ports: [String: UInt16] = [:]
        var starts: [String: Int] = [:]

        init() throws {
            dir = try TempDir()
            broker = try MosquittoBroker(extraConfig: ["log_type subscribe"])
        }

        func data(_ id: String) -> URL { dir.url.appendingPathComponent("data-\(id)") }
        func file(_ name: String) -> String { dir.url.appendingPathComponent(name).path }

        func logs() -> String {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.url.path).filter { $0.hasSuffix(".log") }.sorted()) ?? []
            return files.map { f in "--- \(f)\n" + ((try? String(contentsOfFile: file(f), encoding: .utf8)) ?? "").suffix(3000) }
                .joined(separator: "\n")
        }

        /// Trusts `publicKey` for models in the data directory of `id`.
        func trust(_ publicKey: URL, name: String, for id: String) throws {
            let models = TrustStore.keysDirectory(dataDirectory: data(id)).appendingPathComponent("models")
            try FileManager.default.createDirectory(at: models, withIntermediateDirectories: true)
            let target = models.appendingPathComponent("\(name).pub")
            if !FileManager.default.fileExists(atPath: target.path) { try FileManager.default.copyItem(at: publicKey, to: target) }
        }

        /// Starts `edgeq run` for gateway `id` with the mapping `yaml` (the log is appended to).
        func gateway(_ id: String, _ yaml: String) throws {
            try yaml.write(toFile: file("\(id).yaml"), atomically: true, encoding: .utf8)
            ports[id] = try FreePort.find()
            starts[id, default: 0] += 1
            processes[id] = try ChildProcess(EdgeQBinary.path, ["run", "--config", file("\(id).yaml"), "--broker", broker.url, "--data", data(id).path,
                                                                "--metrics-port", String(ports[id] ?? 0)],
                                             stderrPath: file("gw-\(id)-\(UUID().uuidString.prefix(4)).log"))
        }

        /// Starts `edgeq learner` with the file `text`.
        func learner(_ id: String, _ text: String, _ extra: [String] = []) throws {
            try text.write(toFile: file("\(id).yaml"), atomically: true, encoding: .utf8)
            ports[id] = try FreePort.find()
            processes[id] = try ChildProcess(EdgeQBinary.path, ["learner", "--config", file("\(id).yaml"), "--broker", broker.url,
                                                                "--data", data(id).path, "--metrics-port", String(ports[id] ?? 0)] + extra,
                                             stderrPath: file("\(id)-\(UUID().uuidString.prefix(4)).log"))
        }

        /// SIGTERM, and the exit status.
        func stop(_ id: String) -> Int32? {
            guard let p = processes[id] else { return nil }
            p.signal(SIGTERM)
            return p.wait(timeout: 30)
        }

        func metric(_ who: String, _ name: String) -> Double? {
            let text = (try? ChildProcess.run("curl", ["-s", "http://127.0.0.1:\(ports[who] ?? 0)/metrics"], timeout: 10).stdout) ?? ""
            for line in text.split(separator: "\n") where line.hasPrefix(name + " ") { return Double(line.dropFirst(name.count + 1)) }
            return nil
        }

        /// Filters the shipper of gateway `id` subscribed to, in the broker's log (one line per
        /// subscription: "<client id> <qos> <filter>"; the broker runs with `log_type subscribe`).
        func subscriptions(_ id: String) -> [String] {
            broker.log().split(separator: "\n").compactMap { line -> String? in
                let f = line.split(separator: " ")
                return f.count == 4 && f[1] == "edgeq-\(id)-fleet" && Int(f[2]) != nil ? String(f[3]) : nil
            }
        }

        /// Waits until each gateway in `ids` is online and its shipper has subscribed to `last`
        /// (its last subscription) `starts[id]` times: from then on, a message published comes to
        /// it after the retained ones it subscribed to.
        func online(_ ids: [String], _ status: MQTTClient, last: [String: String]) -> Bool {
            var up = Set<String>()
            return eventually(timeout: 60) {
                while let m = status.receive(timeout: 0.2) {
                    if String(decoding: m.payload, as: UTF8.self).contains(#""state":"online""#) {
                        up.insert(String(m.topic.split(separator: "/").dropFirst().first ?? ""))
                    }
                }
                return ids.allSatisfy { id in
                    up.contains(id) && subscriptions(id).filter { $0 == last[id] }.count >= (starts[id] ?? 0)
                }
            }
        }

        func stopAll() {
            for p in processes.values where p.isRunning {
                p.signal(SIGKILL)
                _ = p.wait(timeout: 10)
            }
        }
    }

    /// A random model that fits the process mapping (1 input, 2 actions), as bytes.
    static func modelBytes(_ map: TopicMap, seed: UInt64, in dir: URL) throws -> [UInt8] {
        let arch = Architecture(inputCount: map.stateWidth, hidden: [8], actionCount: map.actions.count)
        var rng = SystemRandomNumberGenerator()
        let calibration = (0..<(map.stateWidth * 64)).map { _ in Float.random(in: -1...1, using: &rng) }
        let model = try QModel(network: try MLP(arch, seed: seed), actionNames: map.actions.map(\.name),
                               normalization: .identity(map.stateWidth), calibrationStates: calibration)
        let file = dir.appendingPathComponent("m\(seed).safetensors")
        try model.save(to: file)
        return Array(try Data(contentsOf: file))
    }

    /// Publishes `bytes` as fleet model `version` on `fleet/t`, signed with `key`, in 1 KiB chunks.
    static func publish(_ client: MQTTClient, _ bytes: [UInt8], version: Int, map: TopicMap, key: SigningPrivateKey) throws {
        let sig = try ModelSignature.sign(modelBytes: bytes, version: version, mapping: map.fingerprint, keyName: "fleet-t", privateKey: key)
        let (manifest, chunks) = FleetModelChunk.split(modelBytes: bytes, signature: sig, maxMessage: 1024, learner: "test", rows: 0, gateways: [:])
        for c in chunks { _ = try client.publish("fleet/t/model/chunk/\(c.index)", c.encode(), qos: .atLeastOnce, retain: true) }
        _ = try client.publish("fleet/t/model", manifest.jsonText, qos: .atLeastOnce, retain: true)
    }

    /// Feeds gateway `id` plant states `steps` (one transition each), the incumbent's action with each.
    static func feed(_ plant: MQTTClient, _ id: String, steps: ClosedRange<Int>) throws {
        for s in steps {
            let x = Double((s * 37) % 200) / 10 - 10
            _ = try plant.publish("plant/\(id)/state", #"{"step":\#(s),"x":\#(x)}"#, qos: .atLeastOnce)
            _ = try plant.publish("plant/\(id)/cmd", #"{"a":\#(x > 0 ? 1 : 0)}"#, qos: .atLeastOnce)
            if s % 20 == 19 { usleep(2_000) }
        }
    }

    /// Everything retained under `filter` now: subscribes, then publishes a marker on `marker`
    /// (inside the filter) and reads until it comes back (retained messages come before it).
    static func retained(_ broker: MosquittoBroker, _ filter: String, marker: String) throws -> [MQTTMessage] {
        let c = try plantClient(broker, filter)
        defer { c.stop() }
        _ = try c.publish(marker, "sync", qos: .atLeastOnce)
        var out: [MQTTMessage] = []
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, let m = c.receive(timeout: 1) {
            if m.topic == marker { return out }
            out.append(m)
        }
        throw MQTTTestError("the marker on \(marker) did not come back")
    }

    struct MQTTTestError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    // MARK: - 1. A smaller successor clears the chunk topics its predecessor used

    /// The learner publishes a model in three 1 KiB chunks, restarts with `max_message: 64KiB` and
    /// publishes its successor in one chunk: chunks 1 and 2 are cleared (nothing stale stays
    /// retained under `fleet/t/model/chunk/+`), the gateway that was connected all along stores
    /// both models and refuses nothing, and a gateway that connects afterwards reassembles the
    /// new model from the retained messages — the learner's bytes.
    @Test func aSmallerSuccessorClearsTheLeftoverChunksAndALateGatewayReassemblesIt() throws {
        let rig = try Rig()
        let plant = try plantClient(rig.broker, "edgeq/+/status")
        let verdicts = try FleetModelProcessTests.Verdicts(rig.broker)
        defer {
            plant.stop()
            verdicts.client.stop()
            rig.stopAll()
        }
        let keys = try KeyFile.generate(name: "fleet-t", directory: rig.dir.url.appendingPathComponent("private"))
        for id in ["a", "b"] { try rig.trust(keys.publicKey, name: "fleet-t", for: id) }
        try rig.gateway("a", FleetModelProcessTests.mapping("a", policy: "manual"))
        try #require(rig.online(["a"], plant, last: ["a": Self.chunks]), "gateway a did not come online:\n\(rig.logs())")
        func learnerFile(_ maxMessage: String) -> String {
            "fleet: fleet/t\ngroup: g\nid: l1\nstatus_interval: 1s\nmapping: \(rig.file("a.yaml"))\nkey: \(keys.privateKey.path)\nmax_message: \(maxMessage)\n"
        }
        let learnerStore = { try ModelStore(dataDirectory: rig.data("l1")) }

        // First model: 1 KiB messages, more than one chunk.
        try rig.learner("l1", learnerFile("1KiB"), ["--train-every", "90"])
        try #require(eventually(timeout: 60) { rig.metric("l1", "edgeq_learner_batches_total") != nil }, "the learner did not start:\n\(rig.logs())")
        try Self.feed(plant, "a", steps: 0...100)
        try #require(eventually(timeout: 120) { rig.metric("l1", "edgeq_learner_models_published_total") == 1 }, "no first model:\n\(rig.logs())")
        let v1 = try #require(try learnerStore().versions().last)
        let before = try Self.retained(rig.broker, "fleet/t/model/#", marker: "fleet/t/model/sync")
        let firstManifest = try #require(before.first { $0.topic == "fleet/t/model" }.flatMap { try? FleetModelManifest.parse($0.payload) })
        #expect(firstManifest.version == v1 && firstManifest.chunks >= 3, "\(firstManifest.chunks) chunks")
        #expect(verdicts.wait("a", version: v1, kind: "stored") != nil, "gateway a, v\(v1):\n\(rig.logs())")
        #expect(rig.stop("l1") == 0, "\(rig.logs())")

        // Second model: the same learner data, 64 KiB messages: one chunk.
        try rig.learner("l1", learnerFile("64KiB"), ["--train-every", "90"])
        try #require(eventually(timeout: 60) { rig.metric("l1", "edgeq_learner_batches_total") != nil }, "the learner did not restart:\n\(rig.logs())")
        try Self.feed(plant, "a", steps: 101...201)
        try #require(eventually(timeout: 120) { rig.metric("l1", "edgeq_learner_models_published_total") == 1 }, "no second model:\n\(rig.logs())")
        let v2 = try #require(try learnerStore().versions().last)
        #expect(v2 > v1)

        // What a subscriber to the chunks gets now: chunk 0 of v2, nothing else.
        let after = try Self.retained(rig.broker, "fleet/t/model/#", marker: "fleet/t/model/sync")
        let manifest = try #require(after.first { $0.topic == "fleet/t/model" }.flatMap { try? FleetModelManifest.parse($0.payload) })
        #expect(manifest.version == v2 && manifest.chunks == 1, "v\(manifest.version), \(manifest.chunks) chunks")
        let chunkTopics = after.filter { $0.topic.hasPrefix("fleet/t/model/chunk/") }
        #expect(chunkTopics.map(\.topic) == ["fleet/t/model/chunk/0"], "retained chunk topics: \(chunkTopics.map(\.topic))")
        #expect(chunkTopics.compactMap { FleetModelChunk.decode($0.payload)?.version } == [v2])

        // Gateway a (connected throughout) stored both and refused nothing (the empty clears are not chunks).
        #expect(verdicts.wait("a", version: v2, kind: "stored") != nil, "gateway a, v\(v2):\n\(rig.logs())")
        #expect(!(verdicts.seen["a"] ?? []).contains { $0["verdict"] as? String == "refused" }, "\(verdicts.seen["a"] ?? [])")
        #expect(try ModelStore(dataDirectory: rig.data("a")).versions() == [v1, v2])

        // Gateway b connects now: it gets v2 from the retained messages, the learner's bytes.
        try rig.gateway("b", FleetModelProcessTests.mapping("b", policy: "manual"))
        #expect(verdicts.wait("b", version: v2, kind: "stored") != nil, "gateway b:\n\(rig.logs())")
        let bStore = try ModelStore(dataDirectory: rig.data("b"))
        #expect(bStore.versions() == [v2])
        #expect(try Data(contentsOf: bStore.modelURL(v2)) == Data(contentsOf: try learnerStore().modelURL(v2)))
        #expect((verdicts.seen["b"] ?? []).count == 1, "\(verdicts.seen["b"] ?? [])")
        for id in ["l1", "a", "b"] { #expect(rig.stop(id) == 0, "\(id):\n\(rig.logs())") }
    }

    // MARK: - 2. A gateway restart

    /// Gateway a (`manual`) and b (`trial`, in shadow: its trial waits for control) store fleet
    /// model v1 and say so; both restart three times, and the retained model comes again each
    /// time: nothing is stored twice and a stays silent. b's trial of v1 survives each restart
    /// (it had begun with no block on record: it begins again, `trial_started` once more, never
    /// `trial_abandoned`), so v2, published after the first restart, is `trial_queued`. Before
    /// the second restart v2's mark (`trial-pending.json`) is removed — as when a gateway stops
    /// between storing a model and marking its trial: the retained v2 then says `trial_abandoned`
    /// once (`trial.json` written), and the third restart says nothing of it. The trials are
    /// resumed before the first fleet message is handled: were they not, the retained v1 would
    /// be taken for a trial cut short (CI saw that order once).
    @Test func aRestartedGatewayStoresNothingTwiceResumesItsTrialAndSaysOnlyWhatIsTrue() throws {
        let rig = try Rig()
        let plant = try plantClient(rig.broker, "edgeq/+/status")
        let verdicts = try FleetModelProcessTests.Verdicts(rig.broker)
        defer {
            plant.stop()
            verdicts.client.stop()
            rig.stopAll()
        }
        let keyFiles = try KeyFile.generate(name: "fleet-t", directory: rig.dir.url.appendingPathComponent("private"))
        let key = try KeyFile.readPrivateKey(keyFiles.privateKey)
        let policies = ["a": "manual", "b": "trial"]
        for id in ["a", "b"] {
            try rig.trust(keyFiles.publicKey, name: "fleet-t", for: id)
            try rig.gateway(id, FleetModelProcessTests.mapping(id, policy: policies[id] ?? "manual"))
        }
        try #require(rig.online(["a", "b"], plant, last: ["a": Self.chunks, "b": Self.chunks]), "the gateways did not come online:\n\(rig.logs())")
        let map = try TopicMap.parse(yaml: FleetModelProcessTests.mapping("a", policy: "manual"))
        let v1 = 1_000, v2 = 1_001
        try Self.publish(plant, try Self.modelBytes(map, seed: 1, in: rig.dir.url), version: v1, map: map, key: key)
        #expect(verdicts.wait("a", version: v1, kind: "stored") != nil, "a:\n\(rig.logs())")
        #expect(verdicts.wait("b", version: v1, kind: "trial_started")?["waiting_for_control"] as? Bool == true, "b:\n\(rig.logs())")
        let bStore = try ModelStore(dataDirectory: rig.data("b"))
        let summary = { (id: String) in (verdicts.seen[id] ?? []).map { "\($0["verdict"] as? String ?? "?") v\(($0["version"] as? NSNumber)?.intValue ?? 0)" } }
        /// Stops both gateways, runs `between`, starts them again and waits until they are back.
        func restart(_ between: () throws -> Void = {}) throws {
            for id in ["a", "b"] { #expect(rig.stop(id) == 0, "\(id):\n\(rig.logs())") }
            _ = verdicts.wait("none", version: 0, kind: "", timeout: 0.5)   // read what is in flight
            verdicts.seen = [:]
            try between()
            for id in ["a", "b"] { try rig.gateway(id, FleetModelProcessTests.mapping(id, policy: policies[id] ?? "manual")) }
            try #require(rig.online(["a", "b"], plant, last: ["a": Self.chunks, "b": Self.chunks]), "the gateways did not come back:\n\(rig.logs())")
        }

        // Restart 1: b's trial of v1 had begun and recorded no block: it begins again.
        try restart()
        #expect(verdicts.wait("b", version: v1, kind: "trial_started")?["waiting_for_control"] as? Bool == true, "b:\n\(rig.logs())")
        #expect(!FileManager.default.fileExists(atPath: bStore.trialURL(v1).path), "v1's trial was decided or abandoned:\n\(rig.logs())")
        #expect(FileManager.default.fileExists(atPath: bStore.pendingTrialURL(v1).path))

        // v2: b queues it behind v1's trial, which still runs.
        try Self.publish(plant, try Self.modelBytes(map, seed: 2, in: rig.dir.url), version: v2, map: map, key: key)
        #expect(verdicts.wait("a", version: v2, kind: "stored") != nil, "a:\n\(rig.logs())")
        #expect(verdicts.wait("b", version: v2, kind: "trial_queued") != nil, "b (v1's trial runs):\n\(rig.logs())")
        #expect(summary("a") == ["stored v\(v2)"], "a after its restart: \(summary("a"))")
        #expect(summary("b") == ["trial_started v\(v1)", "trial_queued v\(v2)"], "b after its restart: \(summary("b"))")
        for id in ["a", "b"] {
            #expect(try ModelStore(dataDirectory: rig.data(id)).versions() == [v1, v2], "\(id)")
            #expect(rig.metric(id, "edgeq_fleet_models_stored_total") == 1, "\(id): stored since the last start")
        }

        // Restart 2, v2's mark gone: v1's trial begins again, the retained v2 says it has none.
        try restart { try FileManager.default.removeItem(at: bStore.pendingTrialURL(v2)) }
        let abandoned = verdicts.wait("b", version: v2, kind: "trial_abandoned")
        #expect((abandoned?["reason"] as? String)?.contains("restarted") == true, "b: \(String(describing: abandoned))\n\(rig.logs())")
        #expect((abandoned?["trial"] as? [String: Any])?["verdict"] as? String == "abandoned", "\(String(describing: abandoned))")
        let record = try JSONSerialization.jsonObject(with: Data(contentsOf: bStore.trialURL(v2))) as? [String: Any]
        #expect(record?["verdict"] as? String == "abandoned" && record?["promoted"] as? Bool == false, "\(String(describing: record))")
        #expect(summary("b").sorted() == ["trial_abandoned v\(v2)", "trial_started v\(v1)"], "b after its second restart: \(summary("b"))")

        // Restart 3: v1's trial begins again; nothing new about v2, nothing from a.
        try restart()
        #expect(verdicts.wait("b", version: v1, kind: "trial_started") != nil, "b:\n\(rig.logs())")
        _ = verdicts.wait("none", version: 0, kind: "", timeout: 2)   // what else might come
        #expect(summary("a") == [], "a after its third restart: \(summary("a"))")
        #expect(summary("b") == ["trial_started v\(v1)"], "b after its third restart: \(summary("b"))")
        for id in ["a", "b"] {
            #expect(try ModelStore(dataDirectory: rig.data(id)).versions() == [v1, v2], "\(id)")
            #expect((rig.metric(id, "edgeq_fleet_models_stored_total") ?? 0) == 0, "\(id): stored since the last start")
        }
        for id in ["a", "b"] { #expect(rig.stop(id) == 0, "\(id):\n\(rig.logs())") }
    }

    // MARK: - 3. A refused model after a restart

    /// Publishes `bytes` as fleet model `version`, signed by `keyName`/`key`, with chunk 0
    /// altered on the way when `alterChunk`.
    static func publish(_ client: MQTTClient, _ bytes: [UInt8], version: Int, map: TopicMap, keyName: String, key: SigningPrivateKey,
                        alterChunk: Bool) throws {
        let sig = try ModelSignature.sign(modelBytes: bytes, version: version, mapping: map.fingerprint, keyName: keyName, privateKey: key)
        let (manifest, split) = FleetModelChunk.split(modelBytes: bytes, signature: sig, maxMessage: 1024, learner: "test", rows: 0, gateways: [:])
        var chunks = split
        if alterChunk { chunks[0].bytes[chunks[0].bytes.count / 2] ^= 0x40 }
        for c in chunks { _ = try client.publish("fleet/t/model/chunk/\(c.index)", c.encode(), qos: .atLeastOnce, retain: true) }
        _ = try client.publish("fleet/t/model", manifest.jsonText, qos: .atLeastOnce, retain: true)
    }

    /// Gateway a refuses v1, signed by a key it does not trust (`unknown_key`), and remembers it
    /// (`fleet-refused.json`). Restarted, it gets the retained v1 again and neither checks it
    /// again nor publishes a verdict (`edgeq_fleet_models_refused_before_total` 1, no verdict).
    /// Once the key is trusted (a restart with `keys/models/stranger.pub`), v1 is checked again
    /// and stored. A model refused for its transport (v2, a chunk altered: `sha_mismatch`) is
    /// checked again after a restart and refused again; the learner counts each (gateway,
    /// version, verdict) once: 2 refusals, 1 stored.
    @Test func aRefusedModelIsNotCheckedAgainAfterARestartAndTheLearnerCountsEachVerdictOnce() throws {
        let rig = try Rig()
        let plant = try plantClient(rig.broker, "edgeq/+/status")
        let verdicts = try FleetModelProcessTests.Verdicts(rig.broker)
        let learnerStatus = try plantClient(rig.broker, "fleet/t/learner/l1/status")
        defer {
            plant.stop()
            verdicts.client.stop()
            learnerStatus.stop()
            rig.stopAll()
        }
        let keyFiles = try KeyFile.generate(name: "fleet-t", directory: rig.dir.url.appendingPathComponent("private"))
        let strangerFiles = try KeyFile.generate(name: "stranger", directory: rig.dir.url.appendingPathComponent("private"))
        let stranger = try KeyFile.readPrivateKey(strangerFiles.privateKey)
        try rig.trust(keyFiles.publicKey, name: "fleet-t", for: "a")
        let yaml = FleetModelProcessTests.mapping("a", policy: "manual")
        let map = try TopicMap.parse(yaml: yaml)
        try rig.learner("l1", "fleet: fleet/t\ngroup: g\nid: l1\nstatus_interval: 1s\n")
        try #require(eventually(timeout: 60) { rig.metric("l1", "edgeq_learner_batches_total") != nil }, "the learner did not start:\n\(rig.logs())")
        try rig.gateway("a", yaml)
        try #require(rig.online(["a"], plant, last: ["a": Self.chunks]), "gateway a did not come online:\n\(rig.logs())")
        func restart() throws {
            #expect(rig.stop("a") == 0, "a:\n\(rig.logs())")
            try rig.gateway("a", yaml)
            try #require(rig.online(["a"], plant, last: ["a": Self.chunks]), "gateway a did not come back:\n\(rig.logs())")
        }
        let summary = { (verdicts.seen["a"] ?? []).map { "\($0["verdict"] as? String ?? "?") v\(($0["version"] as? NSNumber)?.intValue ?? 0)" } }

        // 1. v1 by an untrusted key: refused, remembered.
        let v1 = 2_000, v2 = 2_001
        try Self.publish(plant, try Self.modelBytes(map, seed: 4, in: rig.dir.url), version: v1, map: map, keyName: "stranger", key: stranger, alterChunk: false)
        #expect(verdicts.wait("a", version: v1, kind: "refused", reason: "unknown_key") != nil, "a:\n\(rig.logs())")
        // Remembered right after its verdict was queued.
        let file = rig.data("a").appendingPathComponent("fleet-refused.json")
        var remembered: [[String: Any]] = []
        let written = eventually(timeout: 10) {
            remembered = (try? JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])?["refused"] as? [[String: Any]] ?? []
            return !remembered.isEmpty
        }
        #expect(written && remembered.count == 1 && remembered.first?["version"] as? Int == v1 && remembered.first?["reason"] as? String == "unknown_key",
                "\(remembered)")

        // 2. Two restarts: v1 comes again each time; not checked, nothing published.
        for _ in 0..<2 {
            _ = verdicts.wait("none", version: 0, kind: "", timeout: 0.5)
            verdicts.seen = [:]
            try restart()
            #expect(eventually(timeout: 30) { rig.metric("a", "edgeq_fleet_models_refused_before_total") == 1 }, "a:\n\(rig.logs())")
            #expect(rig.metric("a", #"edgeq_fleet_models_refused_total{reason="unknown_key"}"#) == 0)
            _ = verdicts.wait("none", version: 0, kind: "", timeout: 1)
            #expect(summary().isEmpty, "a after a restart: \(summary())")
        }

        // 3. The key trusted now: v1 is checked again at the next start, and stored.
        try rig.trust(strangerFiles.publicKey, name: "stranger", for: "a")
        verdicts.seen = [:]
        try restart()
        #expect(verdicts.wait("a", version: v1, kind: "stored") != nil, "a:\n\(rig.logs())")
        #expect(try ModelStore(dataDirectory: rig.data("a")).versions() == [v1])

        // 4. v2 with a chunk altered on the way: refused, and again after a restart (checked again).
        try Self.publish(plant, try Self.modelBytes(map, seed: 5, in: rig.dir.url), version: v2, map: map, keyName: "fleet-t",
                         key: try KeyFile.readPrivateKey(keyFiles.privateKey), alterChunk: true)
        let first = verdicts.wait("a", version: v2, kind: "refused", reason: "sha_mismatch")
        #expect(first != nil, "a:\n\(rig.logs())")
        verdicts.seen = [:]
        try restart()
        let again = verdicts.wait("a", version: v2, kind: "refused", reason: "sha_mismatch")
        let againTime = try #require((again?["time"] as? NSNumber)?.doubleValue, "a:\n\(rig.logs())")
        #expect(againTime != (first?["time"] as? NSNumber)?.doubleValue)

        // The learner has seen the newest verdict (its rollout says so) and counted each once.
        let seenByLearner = eventually(timeout: 30) {
            var newest: Double?
            while let m = learnerStatus.receive(timeout: 0.2) {
                let o = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any]
                newest = (((o?["rollout"] as? [String: Any])?["a"] as? [String: Any])?["time"] as? NSNumber)?.doubleValue ?? newest
            }
            return newest == againTime
        }
        #expect(seenByLearner, "the learner did not see the last verdict:\n\(rig.logs())")
        #expect(rig.metric("l1", #"edgeq_learner_verdicts_total{verdict="refused"}"#) == 2, "\(rig.logs())")
        #expect(rig.metric("l1", #"edgeq_learner_verdicts_total{verdict="stored"}"#) == 1, "\(rig.logs())")
        for id in ["a", "l1"] { #expect(rig.stop(id) == 0, "\(id):\n\(rig.logs())") }
    }

    // MARK: - 4. Gateways that do not take the fleet's models

    /// Gateway x belongs to another fleet topic, y has `models: false`, z takes fleet/t's models:
    /// only z subscribes to fleet/t's model topics (the broker's subscription log: x subscribes
    /// to its own fleet's, y to its acknowledgements only), stores the model and says so; x and y
    /// store nothing and publish no verdict.
    @Test func aGatewayOfAnotherFleetOrWithModelsFalseNeverSubscribesToTheModels() throws {
        let rig = try Rig()
        let plant = try plantClient(rig.broker, "edgeq/+/status")
        let verdicts = try plantClient(rig.broker, "+/+/verdict/#")
        defer {
            plant.stop()
            verdicts.stop()
            rig.stopAll()
        }
        let keyFiles = try KeyFile.generate(name: "fleet-t", directory: rig.dir.url.appendingPathComponent("private"))
        let base = { (id: String) in FleetModelProcessTests.mapping(id, policy: "manual") }
        let yamls = [
            "x": base("x").replacingOccurrences(of: "fleet: {topic: fleet/t,", with: "fleet: {topic: fleet/other,"),
            "y": base("y").replacingOccurrences(of: "fleet: {topic: fleet/t,", with: "fleet: {topic: fleet/t, models: false,"),
            "z": base("z"),
        ]
        #expect(yamls["x"] != base("x") && yamls["y"] != base("y"))
        for id in ["x", "y", "z"] {
            try rig.trust(keyFiles.publicKey, name: "fleet-t", for: id)
            try rig.gateway(id, yamls[id] ?? "")
        }
        try #require(rig.online(["x", "y", "z"], plant, last: ["x": "fleet/other/model/chunk/+", "y": "fleet/t/ack/y", "z": Self.chunks]), "the gateways did not come online:\n\(rig.logs())")
        let map = try TopicMap.parse(yaml: base("x"))
        try Self.publish(plant, try Self.modelBytes(map, seed: 3, in: rig.dir.url), version: 500, map: map,
                         key: try KeyFile.readPrivateKey(keyFiles.privateKey))
        // z stores it; then every verdict there is has arrived.
        var seen: [(String, String)] = []
        let zStored = eventually(timeout: 30) {
            while let m = verdicts.receive(timeout: 0.2) { seen.append((m.topic, String(decoding: m.payload, as: UTF8.self))) }
            return seen.contains { $0.0 == "fleet/t/verdict/z" && $0.1.contains(#""verdict":"stored""#) }
        }
        #expect(zStored, "z:\n\(rig.logs())")
        #expect(seen.map(\.0) == ["fleet/t/verdict/z"], "\(seen)")
        #expect(try ModelStore(dataDirectory: rig.data("z")).versions() == [500])
        for id in ["x", "y"] {
            #expect(try ModelStore(dataDirectory: rig.data(id)).versions().isEmpty, "\(id)")
            #expect(rig.metric(id, "edgeq_fleet_models_stored_total") == 0 && rig.metric(id, "edgeq_fleet_rows_shipped_total") != nil, "\(id)")
        }
        // The broker's log of subscriptions.
        let subs = { (id: String) in rig.subscriptions(id).sorted() }
        let subscriptions = ["x", "y", "z"].map { "\($0): \(subs($0))" }
        // x takes its own fleet's models, never fleet/t's; y takes none.
        #expect(subs("x") == ["fleet/other/ack/x", "fleet/other/model", "fleet/other/model/chunk/+"], "\(subscriptions)")
        #expect(subs("y") == ["fleet/t/ack/y"], "\(subscriptions)")
        #expect(subs("z") == ["fleet/t/ack/z", "fleet/t/model", "fleet/t/model/chunk/+"], "\(subscriptions)")
        for id in ["x", "y", "z"] { #expect(rig.stop(id) == 0, "\(id):\n\(rig.logs())") }
    }
}
