import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQNet
import EdgeQTestSupport
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Testing

/// Fleet models end to end (docs/fleet.md, "Training and publishing", "Models on the gateway"):
/// a real mosquitto, a real `edgeq learner` that trains on the fleet log of three real `edgeq run`
/// gateways and publishes a signed model in chunks; every gateway verifies and stores it and
/// publishes its verdict (manual: stored, trial: trial started, auto: promoted); models published
/// from the test with the real signing code — a bad signature, another mapping's fingerprint, an
/// altered chunk, an untrusted key — are refused by every gateway with the reason.
@Suite(.serialized) struct FleetModelProcessTests {
    static let learning = """
          hidden: [8]
          updates_per_retrain: 300
          retrain: {every_transitions: none}
          prioritized_replay: {alpha: 0.6}
          checks: {quantization_agreement: 0, max_unsupported: 1, min_rows: 50}
          promotion: {policy: POLICY, min_agreement: 0}
        """

    /// The process mapping with a fleet section, under `promotion: policy`.
    /// Waits (up to 60 s) until `gateways` distinct gateways have said `"state":"online"` on the
    /// status topics `plant` subscribes to.
    static func waitUntilOnline(_ plant: MQTTClient, gateways: Int) -> Bool {
        eventually(timeout: 60) {
            var up = Set<String>()
            while let m = plant.receive(timeout: 0.2) {
                if String(decoding: m.payload, as: UTF8.self).contains(#""state":"online""#) { up.insert(m.topic) }
            }
            return up.count == gateways
        }
    }

    /// The learner's configuration of these tests: fleet `fleet/t`, group `g`, id `l1`, status
    /// every second, models in messages of at most 1 KiB (so they are chunked).
    static func learnerConfig(mapping: String, key: String) -> String {
        """
        fleet: fleet/t
        group: g
        id: l1
        status_interval: 1s
        mapping: \(mapping)
        key: \(key)
        max_message: 1KiB
        """
    }

    static func mapping(_ id: String, policy: String, normalize: String = "[-10, 10]") -> String {
        processMapping(id: id, plant: id, learning: learning.replacingOccurrences(of: "POLICY", with: policy))
            .replacingOccurrences(of: "normalize: [-10, 10]", with: "normalize: \(normalize)")
        + "\nfleet: {topic: fleet/t, batch_rows: 50, interval: 100ms, window: 4, ack_timeout: 2s}\n"
    }

    /// The verdicts seen on `fleet/t/verdict/+`, newest per gateway (parsed).
    final class Verdicts: @unchecked Sendable {
        // @unchecked Sendable: `client` is thread-safe and `seen` is touched by the test thread only.
        let client: MQTTClient
        var seen: [String: [[String: Any]]] = [:]

        init(_ broker: MosquittoBroker) throws { client = try plantClient(broker, "fleet/t/verdict/+") }

        /// Waits for a verdict of `gateway` on `version` matching `kind` (and `reason`).
        func wait(_ gateway: String, version: Int, kind: String, reason: String? = nil, timeout: Double = 60) -> [String: Any]? {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if let v = seen[gateway]?.first(where: { ($0["version"] as? NSNumber)?.intValue == version && $0["verdict"] as? String == kind
                    && (reason == nil || $0["reason"] as? String == reason) }) {
                    return v
                }
                guard let m = client.receive(timeout: 0.2), let o = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any] else { continue }
                seen[String(m.topic.split(separator: "/").last ?? ""), default: []].append(o)
            }
            return nil
        }
    }

    @Test func theLearnerTrainsOnThreeGatewaysAndPublishesASignedChunkedModelThatBadModelsCannotImitate() throws {
        let dir = try TempDir()
        let broker = try MosquittoBroker()
        let plant = try plantClient(broker, "edgeq/+/status")
        let verdicts = try Verdicts(broker)
        var processes: [ChildProcess] = []
        defer {
            plant.stop()
            verdicts.client.stop()
            for p in processes where p.isRunning {
                p.signal(SIGKILL)
                _ = p.wait(timeout: 10)
            }
        }
        func logs() -> String {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.url.path).filter { $0.hasSuffix(".log") }.sorted()) ?? []
            return files.map { f in "--- \(f)\n" + ((try? String(contentsOfFile: dir.url.appendingPathComponent(f).path, encoding: .utf8)) ?? "").suffix(4000) }
                .joined(separator: "\n")
        }
        func data(_ id: String) -> URL { dir.url.appendingPathComponent("data-\(id)") }

        // The learner's key; both gateways trust its public half for models.
        let keyFiles = try KeyFile.generate(name: "fleet-t", directory: dir.url.appendingPathComponent("private"))
        for id in ["a", "b", "c"] {
            let models = TrustStore.keysDirectory(dataDirectory: data(id)).appendingPathComponent("models")
            try FileManager.default.createDirectory(at: models, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: keyFiles.publicKey, to: models.appendingPathComponent("fleet-t.pub"))
        }

        // Gateway a stores what it gets (manual), b starts its own trial, c serves it (auto).
        let policies = ["a": "manual", "b": "trial", "c": "auto"]
        var ports: [String: UInt16] = [:]
        for id in ["a", "b", "c"] {
            let file = dir.url.appendingPathComponent("\(id).yaml").path
            try Self.mapping(id, policy: policies[id] ?? "manual").write(toFile: file, atomically: true, encoding: .utf8)
            ports[id] = try FreePort.find()
            processes.append(try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url, "--data", data(id).path,
                                                                 "--metrics-port", String(ports[id] ?? 0)],
                                              stderrPath: dir.url.appendingPathComponent("gw-\(id).log").path))
        }
        let online = Self.waitUntilOnline(plant, gateways: 3)
        try #require(online, "the gateways did not come online:\n\(logs())")

        // The learner: trains once 250 new transitions are in, publishes in messages of ≤ 1 KiB.
        let learnerData = dir.url.appendingPathComponent("learner")
        let learnerFile = dir.url.appendingPathComponent("learner.yaml").path
        try Self.learnerConfig(mapping: dir.url.appendingPathComponent("a.yaml").path, key: keyFiles.privateKey.path)
            .write(toFile: learnerFile, atomically: true, encoding: .utf8)
        ports["l1"] = try FreePort.find()
        processes.append(try ChildProcess(EdgeQBinary.path, ["learner", "--config", learnerFile, "--broker", broker.url, "--data", learnerData.path,
                                                             "--metrics-port", String(ports["l1"] ?? 0), "--train-every", "250",
                                                             "--train-rows", "1000"],
                                          stderrPath: dir.url.appendingPathComponent("learner.log").path))
        func metric(_ who: String, _ name: String) -> Double? {
            let text = (try? ChildProcess.run("curl", ["-s", "http://127.0.0.1:\(ports[who] ?? 0)/metrics"], timeout: 10).stdout) ?? ""
            for line in text.split(separator: "\n") where line.hasPrefix(name + " ") { return Double(line.dropFirst(name.count + 1)) }
            return nil
        }
        try #require(eventually(timeout: 60) { metric("l1", "edgeq_learner_batches_total") != nil }, "the learner did not start:\n\(logs())")

        // 101 plant states (100 transitions) per gateway, the incumbent's action with each.
        for id in ["a", "b", "c"] {
            for s in 0...100 {
                let x = Double((s * 37) % 200) / 10 - 10
                _ = try plant.publish("plant/\(id)/state", #"{"step":\#(s),"x":\#(x)}"#, qos: .atLeastOnce)
                _ = try plant.publish("plant/\(id)/cmd", #"{"a":\#(x > 0 ? 1 : 0)}"#, qos: .atLeastOnce)
                if s % 20 == 19 { usleep(2_000) }
            }
        }

        // 1. One training (300 rows ≥ 250), a candidate that passes, signed and published.
        try #require(eventually(timeout: 180) { metric("l1", "edgeq_learner_models_published_total") == 1 },
                     "no model was published:\n\(logs())")
        let store = try ModelStore(dataDirectory: learnerData)
        let version = try #require(store.versions().last)
        let bytes = Array(try Data(contentsOf: store.modelURL(version)))
        let learnerPub = try KeyFile.readPublicKey(keyFiles.publicKey)
        let trust = TrustStore(keys: [TrustedKey(name: "fleet-t", role: .models, publicKey: learnerPub)])
        let map = try TopicMap.load(path: dir.url.appendingPathComponent("a.yaml").path)
        let signed = try ModelSignature.verify(modelFile: store.modelURL(version), expectedVersion: version, expectedMapping: map.fingerprint, trust: trust)
        #expect(signed.signature.key == "fleet-t")
        #expect((metric("l1", "edgeq_learner_replay_rows") ?? 0) >= 250)

        // The retained manifest announces chunks of ≤ 1 KiB (the model is bigger).
        let watcher = try plantClient(broker, "fleet/t/model/#")
        defer { watcher.stop() }
        var manifest: FleetModelManifest?
        var chunkCount = 0
        _ = eventually(timeout: 20) {
            while let m = watcher.receive(timeout: 0.2) {
                if m.topic == "fleet/t/model" { manifest = try? FleetModelManifest.parse(m.payload) }
                if m.topic.hasPrefix("fleet/t/model/chunk/"), let c = FleetModelChunk.decode(m.payload) {
                    #expect(m.payload.count <= 1024)
                    if c.version == version { chunkCount += 1 }
                }
            }
            return manifest != nil && chunkCount == manifest?.chunks
        }
        let m = try #require(manifest)
        #expect(m.version == version && m.sha256 == signed.signature.sha256 && m.signer == "fleet-t" && m.mapping == map.fingerprint)
        #expect(m.chunks > 1 && m.chunks == chunkCount, "chunks: \(m.chunks) announced, \(chunkCount) seen; model \(bytes.count) bytes")
        #expect(m.gateways.keys.sorted() == ["a", "b", "c"] && m.rows >= 250, "\(m.gateways)")
        print("fleet model v\(version): \(bytes.count) bytes in \(m.chunks) chunks, trained on \(m.rows) rows \(m.gateways)")

        // 2. Both gateways verified and stored it (the same bytes), and said so.
        #expect(verdicts.wait("a", version: version, kind: "stored") != nil, "gateway a:\n\(logs())")
        let b = verdicts.wait("b", version: version, kind: "trial_started")
        #expect(b?["waiting_for_control"] as? Bool == true, "gateway b: \(String(describing: b))\n\(logs())")
        let c = verdicts.wait("c", version: version, kind: "promoted")
        #expect(c != nil, "gateway c:\n\(logs())")
        // Reported, not asserted (a debug build on a shared machine): manifest published → verdict.
        let latencies = [("a", verdicts.wait("a", version: version, kind: "stored")), ("b", b), ("c", c)].map { id, v in
            "\(id) \(String(format: "%.3f", ((v?["time"] as? NSNumber)?.doubleValue ?? .nan) - m.time)) s"
        }
        print("fleet model v\(version): published → verdict \(latencies.joined(separator: ", "))")
        for id in ["a", "b", "c"] {
            let gwStore = try ModelStore(dataDirectory: data(id))
            #expect(try Data(contentsOf: gwStore.modelURL(version)) == Data(bytes), "gateway \(id) stored other bytes")
            #expect(metric(id, "edgeq_fleet_models_stored_total") == 1)
        }
        // The learner's rollout: both verdicts in its metrics and status.
        #expect(eventually(timeout: 20) {
            metric("l1", #"edgeq_learner_verdicts_total{verdict="stored"}"#) == 1
                && metric("l1", #"edgeq_learner_verdicts_total{verdict="trial_started"}"#) == 1
                && metric("l1", #"edgeq_learner_verdicts_total{verdict="promoted"}"#) == 1
                && metric("l1", #"edgeq_learner_gateway_model_version{gateway="a"}"#) == Double(version)
        }, "learner metrics:\n\(logs())")

        // 3. Models published from here with the real signing code, each refused by both gateways.
        let key = try KeyFile.readPrivateKey(keyFiles.privateKey)
        func publish(_ bytes: [UInt8], _ signature: ModelSignature, alterChunk: Bool = false) throws {
            let (manifest, split) = FleetModelChunk.split(modelBytes: bytes, signature: signature, maxMessage: 1024, learner: "test", rows: 0, gateways: [:])
            var chunks = split
            if alterChunk { chunks[0].bytes[chunks[0].bytes.count / 2] ^= 0x40 }
            for c in chunks { _ = try plant.publish("fleet/t/model/chunk/\(c.index)", c.encode(), qos: .atLeastOnce, retain: true) }
            _ = try plant.publish("fleet/t/model", manifest.jsonText, qos: .atLeastOnce, retain: true)
        }
        // A bad signature: signed by the trusted key, then one bit of the signature flipped.
        let good = try ModelSignature.sign(modelBytes: bytes, version: version + 1, mapping: map.fingerprint, keyName: "fleet-t", privateKey: key)
        var sig = good.signature
        sig[10] ^= 0x01
        let bad = try ModelSignature.parse(Data(good.jsonText.replacingOccurrences(of: Data(good.signature).base64EncodedString(),
                                                                                   with: Data(sig).base64EncodedString()).utf8))
        try publish(bytes, bad)
        // Another mapping's fingerprint (x normalised over [-5, 5]: another state), properly signed.
        let other = try TopicMap.parse(yaml: Self.mapping("a", policy: "manual", normalize: "[-5, 5]"))
        #expect(other.fingerprint != map.fingerprint)
        let otherSig = try ModelSignature.sign(modelBytes: bytes, version: version + 2, mapping: other.fingerprint, keyName: "fleet-t", privateKey: key)
        try publish(bytes, otherSig)
        // Properly signed, but a chunk altered on the way.
        let altered = try ModelSignature.sign(modelBytes: bytes, version: version + 3, mapping: map.fingerprint, keyName: "fleet-t", privateKey: key)
        try publish(bytes, altered, alterChunk: true)
        // Properly signed by a key no gateway trusts.
        let strangerKey = try KeyFile.readPrivateKey(try KeyFile.generate(name: "stranger", directory: dir.url.appendingPathComponent("private")).privateKey)
        let stranger = try ModelSignature.sign(modelBytes: bytes, version: version + 4, mapping: map.fingerprint, keyName: "stranger", privateKey: strangerKey)
        try publish(bytes, stranger)

        let cases: [(Int, String)] = [(version + 1, "bad_signature"), (version + 2, "other_mapping"), (version + 3, "sha_mismatch"), (version + 4, "unknown_key")]
        for id in ["a", "b", "c"] {
            for (v, reason) in cases {
                #expect(verdicts.wait(id, version: v, kind: "refused", reason: reason) != nil, "gateway \(id) v\(v) \(reason):\n\(logs())")
                #expect(eventually(timeout: 10) { metric(id, #"edgeq_fleet_models_refused_total{reason="\#(reason)"}"#) == 1 }, "gateway \(id) \(reason)")
            }
            // Nothing refused was stored.
            #expect(try ModelStore(dataDirectory: data(id)).versions() == [version], "gateway \(id)")
            #expect(metric(id, "edgeq_fleet_models_stored_total") == 1)
        }
        #expect(eventually(timeout: 20) { metric("l1", #"edgeq_learner_verdicts_total{verdict="refused"}"#) == 12 }, "learner:\n\(logs())")

        // The learner's retained status: the rollout per gateway and its training.
        let statusClient = try plantClient(broker, "fleet/t/learner/l1/status")
        defer { statusClient.stop() }
        var status: [String: Any] = [:]
        let rolledOut = eventually(timeout: 20) {
            while let m = statusClient.receive(timeout: 0.2) {
                status = (try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any]) ?? status
            }
            let rollout = status["rollout"] as? [String: [String: Any]] ?? [:]
            return rollout.keys.sorted() == ["a", "b", "c"] && rollout.values.allSatisfy { $0["verdict"] as? String == "refused" }
        }
        #expect(rolledOut, "\(status)")
        let training = status["training"] as? [String: Any] ?? [:]
        #expect(training["published"] as? Int == 1 && training["prioritized_replay"] as? Bool == true && training["signer"] as? String == "fleet-t", "\(training)")
        #expect(training["train_rows"] as? Int == 1000, "\(training)")
        // Gateway c serves the fleet model.
        #expect(eventually(timeout: 10) { metric("c", "edgeq_model_version") == Double(version) })

        // The gateway's log says why.
        let gwLog = (try? String(contentsOf: dir.url.appendingPathComponent("gw-a.log"), encoding: .utf8)) ?? ""
        #expect(gwLog.contains("fleet: model refused") && gwLog.contains("bad_signature") && gwLog.contains("fleet model stored"))

        // Every metric the shipped Grafana dashboard plots is one these gateways or this learner
        // expose (after training, publishing and verdicts, every series exists).
        let exposed = ["a", "b", "c", "l1"].map { who in
            (try? ChildProcess.run("curl", ["-s", "http://127.0.0.1:\(ports[who] ?? 0)/metrics"], timeout: 10).stdout) ?? ""
        }.joined(separator: "\n")
        let plotted = try Self.dashboardMetrics()
        #expect(plotted.isSuperset(of: ["edgeq_trial_active", "edgeq_trial_pairs", "edgeq_trial_mean_difference", "edgeq_trial_verdicts_total", "edgeq_in_charge"]),
                "the dashboard must show the trial: \(plotted.sorted())")
        for name in Self.notExposed(plotted, in: exposed) {
            Issue.record("the dashboard plots \(name), which neither the gateways nor the learner expose")
        }
        #expect(exposed.contains(#"edgeq_trial_verdicts_total{verdict="futile"} 0"#))
        for p in processes {
            p.signal(SIGTERM)
            #expect(p.wait(timeout: 30) == 0, "\(logs())")
        }
    }

    /// The metric names the shipped Grafana dashboard (deploy/grafana-dashboard.json) plots.
    static func dashboardMetrics() throws -> Set<String> {
        let url = PackageRoot.url.appendingPathComponent("deploy/grafana-dashboard.json")
        let dashboard = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        let expressions = panels.flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
        return Set(expressions.flatMap { e in
            e.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") }).map(String.init).filter { $0.hasPrefix("edgeq_") }
        })
    }

    /// The names of `plotted` that no `# TYPE` line of the exposition text `exposed` declares (a
    /// histogram's name_bucket, name_sum and name_count count as its name).
    static func notExposed(_ plotted: Set<String>, in exposed: String) -> [String] {
        let declared = Set(exposed.split(separator: "\n").compactMap { line -> String? in
            let parts = line.split(separator: " ")
            return parts.count >= 3 && parts[0] == "#" && parts[1] == "TYPE" ? String(parts[2]) : nil
        })
        return plotted.sorted().filter { name in
            let base = ["_bucket", "_sum", "_count"].first { name.hasSuffix($0) }.map { String(name.dropLast($0.count)) } ?? name
            return !declared.contains(name) && !declared.contains(base)
        }
    }

    /// The training keys are checked before anything runs: exit 66 for a key that cannot be read,
    /// 65 with the line for a bad mapping, 64 for --train-every or --train-rows without training and
    /// for a window below 1,000 rows.
    @Test func theLearnerRefusesAnUnreadableKeyABadMappingAndTrainEveryWithoutTraining() throws {
        let dir = try TempDir()
        let mapping = dir.url.appendingPathComponent("m.yaml").path
        try Self.mapping("a", policy: "manual").write(toFile: mapping, atomically: true, encoding: .utf8)
        let bad = dir.url.appendingPathComponent("bad.yaml").path
        try Self.mapping("a", policy: "manual").replacingOccurrences(of: "reward: -abs(x)", with: "reward: -abs(nope)")
            .write(toFile: bad, atomically: true, encoding: .utf8)
        func learner(_ extra: String, _ args: [String] = []) throws -> (code: Int32, stderr: String) {
            let file = dir.url.appendingPathComponent("l.yaml").path
            try "fleet: fleet/t\ngroup: g\nid: l1\n\(extra)".write(toFile: file, atomically: true, encoding: .utf8)
            let r = try EdgeQBinary.run(["learner", "--config", file, "--data", dir.url.appendingPathComponent("d").path,
                                         "--broker", "mqtt://127.0.0.1:1"] + args, timeout: 60)
            return (r.code, r.stderr)
        }
        let noKey = try learner("mapping: \(mapping)\nkey: \(dir.url.path)/missing.key\n")
        #expect(noKey.code == 66 && noKey.stderr.contains("missing.key"), "\(noKey)")
        let keys = try KeyFile.generate(name: "k", directory: dir.url.appendingPathComponent("keys"))
        let badMap = try learner("mapping: \(bad)\nkey: \(keys.privateKey.path)\n")
        #expect(badMap.code == 65 && badMap.stderr.contains("bad.yaml:") && badMap.stderr.contains("nope"), "\(badMap)")
        let usage = try learner("", ["--train-every", "10"])
        #expect(usage.code == 64 && usage.stderr.contains("--train-every needs 'mapping' and 'key'"), "\(usage)")
        let every = try learner("mapping: \(mapping)\nkey: \(keys.privateKey.path)\n", ["--train-every", "10/site"])
        #expect(every.code == 64 && every.stderr.contains("--train-every must be a whole number of new transitions in 1...100000000, or N/gateway (found '10/site')"), "\(every)")
        let rowsUsage = try learner("", ["--train-rows", "5000"])
        #expect(rowsUsage.code == 64 && rowsUsage.stderr.contains("--train-rows needs 'mapping' and 'key'"), "\(rowsUsage)")
        let small = try learner("", ["--train-rows", "10"])
        #expect(small.code == 64 && small.stderr.contains("--train-rows must be a whole number of rows, at least 1000, or 'all'"), "\(small)")
    }

    /// `train_every: 40/gateway` on a real learner, fed batches from the test (the gateway's own
    /// encoder): 30 rows from each of two gateways (60 pending: a pooled `train_every: 40` would
    /// have trained) start nothing, the status says the next training comes at 80; 20 more rows
    /// start one, and it runs twice the mapping's 300 updates.
    @Test func perGatewayTrainEveryWaitsForEachGatewaysRowsAndScalesTheUpdates() throws {
        let dir = try TempDir()
        let broker = try MosquittoBroker()
        let plant = try plantClient(broker, "fleet/t/#")
        var learner: ChildProcess?
        defer {
            plant.stop()
            if let learner, learner.isRunning {
                learner.signal(SIGKILL)
                _ = learner.wait(timeout: 10)
            }
        }
        let keyFiles = try KeyFile.generate(name: "fleet-t", directory: dir.url.appendingPathComponent("private"))
        let mapping = dir.url.appendingPathComponent("a.yaml").path
        try Self.mapping("a", policy: "manual").write(toFile: mapping, atomically: true, encoding: .utf8)
        let file = dir.url.appendingPathComponent("learner.yaml").path
        try (Self.learnerConfig(mapping: mapping, key: keyFiles.privateKey.path) + "\ntrain_every: 40/gateway\n")
            .write(toFile: file, atomically: true, encoding: .utf8)
        let logPath = dir.url.appendingPathComponent("learner.log").path
        learner = try ChildProcess(EdgeQBinary.path, ["learner", "--config", file, "--broker", broker.url, "--data", dir.url.appendingPathComponent("learner").path],
                                   stderrPath: logPath)
        func log() -> String { ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").suffix(4000).description }
        var status: [String: Any] = [:]
        var acked: [String: Int64] = [:]
        /// Reads what arrives for `seconds` (the status comes every second: until then).
        func drain(_ seconds: Double) {
            let end = Date().addingTimeInterval(seconds)
            while Date() < end, let m = plant.receive(timeout: max(0.01, end.timeIntervalSinceNow)) {
                guard let o = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any] else { continue }
                if m.topic == "fleet/t/learner/l1/status" { status = o }
                if m.topic.hasPrefix("fleet/t/ack/"), let g = o["gateway"] as? String, let a = (o["acked"] as? NSNumber)?.int64Value {
                    acked[g] = max(acked[g] ?? 0, a)
                }
            }
        }
        func training() -> [String: Any] { status["training"] as? [String: Any] ?? [:] }
        try #require(eventually(timeout: 60) { drain(0.1); return status["state"] as? String == "online" }, "the learner did not come online:\n\(log())")
        func send(_ gateway: String, _ ids: ClosedRange<Int>) throws {
            let rows = ids.map { i -> LoggedTransition in
                let x = Float((i * 37) % 200) / 100 - 1
                let t = Transition(time: 1_790_000_000 + Double(i), tick: Int64(i), episode: 0, state: [x], action: x > 0 ? 1 : 0, actor: .incumbent,
                                   reward: -Double(abs(x)), nextState: [x * 0.9], mode: .shadow)
                return LoggedTransition(id: Int64(i), transition: t)
            }
            let batch = FleetBatch(gateway: gateway, origin: 0, after: Int64(ids.lowerBound - 1), last: Int64(ids.upperBound), rows: rows)
            _ = try plant.publish("fleet/t/experience/\(gateway)", batch.encode(), qos: .atLeastOnce)
            #expect(eventually(timeout: 30) { drain(0.1); return acked[gateway] == Int64(ids.upperBound) }, "\(gateway) not acknowledged:\n\(log())")
        }
        try send("g1", 1...30)
        try send("g2", 1...30)
        // Two status periods after the last acknowledgement: nothing trained.
        #expect(eventually(timeout: 30) {
            drain(0.1)
            return training()["pending"] as? Double == 60 && training()["pending_gateways"] as? Double == 2
        }, "\(training())\n\(log())")
        drain(2.5)
        let before = training()
        #expect(before["train_every"] as? Double == 40 && before["train_every_per_gateway"] as? Bool == true, "\(before)")
        #expect(before["next_training_at"] as? Double == 80 && before["pending"] as? Double == 60, "\(before)")
        #expect((before["trainings"] as? [String: Any])?.isEmpty == true, "trained before 40 rows per gateway: \(before)")
        try send("g1", 31...50)
        #expect(eventually(timeout: 120) {
            drain(0.1)
            return (training()["trainings"] as? [String: Any])?.isEmpty == false && training()["running"] as? Bool == false
        }, "no training after 80 rows from 2 gateways: \(training())\n\(log())")
        let last = training()["last"] as? [String: Any] ?? [:]
        #expect(last["updates"] as? Double == 600, "the mapping's 300 updates times 2 gateways: \(last)")
        #expect(training()["pending"] as? Double == 0 && training()["pending_gateways"] as? Double == 0, "\(training())")
        #expect(log().contains("training.updates=600"), "\(log())")
    }

    /// A candidate that fails its checks is not published: the learner trains with a mapping whose
    /// `q_bound_slack` no Q-network can meet; nothing goes to `fleet/t/model`, the gateway gets
    /// nothing, the learner says why.
    @Test func aCandidateThatFailsItsChecksIsNotPublished() throws {
        let dir = try TempDir()
        let broker = try MosquittoBroker()
        let plant = try plantClient(broker, "edgeq/+/status")
        let models = try plantClient(broker, "fleet/t/#")
        var processes: [ChildProcess] = []
        defer {
            plant.stop()
            models.stop()
            for p in processes where p.isRunning {
                p.signal(SIGKILL)
                _ = p.wait(timeout: 10)
            }
        }
        func logs() -> String {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.url.path).filter { $0.hasSuffix(".log") }.sorted()) ?? []
            return files.map { f in "--- \(f)\n" + ((try? String(contentsOfFile: dir.url.appendingPathComponent(f).path, encoding: .utf8)) ?? "").suffix(4000) }
                .joined(separator: "\n")
        }
        let keyFiles = try KeyFile.generate(name: "fleet-t", directory: dir.url.appendingPathComponent("private"))
        let gw = dir.url.appendingPathComponent("a.yaml").path
        try Self.mapping("a", policy: "manual").write(toFile: gw, atomically: true, encoding: .utf8)
        let strict = dir.url.appendingPathComponent("strict.yaml").path
        let strictYAML = Self.mapping("a", policy: "manual").replacingOccurrences(of: "checks: {quantization_agreement: 0,", with: "checks: {q_bound_slack: 0.000001, quantization_agreement: 0,")
        #expect(strictYAML != Self.mapping("a", policy: "manual"))
        try strictYAML.write(toFile: strict, atomically: true, encoding: .utf8)
        let port = try FreePort.find()
        processes.append(try ChildProcess(EdgeQBinary.path, ["run", "--config", gw, "--broker", broker.url, "--data", dir.url.appendingPathComponent("data-a").path],
                                          stderrPath: dir.url.appendingPathComponent("gw-a.log").path))
        try #require(eventually(timeout: 60) { plant.receive(timeout: 0.2).map { String(decoding: $0.payload, as: UTF8.self).contains(#""state":"online""#) } ?? false },
                     "the gateway did not come online:\n\(logs())")
        let learnerFile = dir.url.appendingPathComponent("learner.yaml").path
        try "fleet: fleet/t\ngroup: g\nid: l1\nstatus_interval: 1s\nmapping: \(strict)\nkey: \(keyFiles.privateKey.path)\ntrain_every: 80\n"
            .write(toFile: learnerFile, atomically: true, encoding: .utf8)
        let learnerData = dir.url.appendingPathComponent("learner")
        processes.append(try ChildProcess(EdgeQBinary.path, ["learner", "--config", learnerFile, "--broker", broker.url, "--data", learnerData.path,
                                                             "--metrics-port", String(port)],
                                          stderrPath: dir.url.appendingPathComponent("learner.log").path))
        func metric(_ name: String) -> Double? {
            let text = (try? ChildProcess.run("curl", ["-s", "http://127.0.0.1:\(port)/metrics"], timeout: 10).stdout) ?? ""
            for line in text.split(separator: "\n") where line.hasPrefix(name + " ") { return Double(line.dropFirst(name.count + 1)) }
            return nil
        }
        try #require(eventually(timeout: 60) { metric("edgeq_learner_batches_total") != nil }, "the learner did not start:\n\(logs())")
        for s in 0...100 {
            let x = Double((s * 37) % 200) / 10 - 10
            _ = try plant.publish("plant/a/state", #"{"step":\#(s),"x":\#(x)}"#, qos: .atLeastOnce)
            _ = try plant.publish("plant/a/cmd", #"{"a":\#(x > 0 ? 1 : 0)}"#, qos: .atLeastOnce)
        }
        #expect(eventually(timeout: 120) { (metric(#"edgeq_learner_trainings_total{verdict="failed"}"#) ?? 0) >= 1 && metric("edgeq_learner_training") == 0 },
                "no failed training:\n\(logs())")
        #expect(metric("edgeq_learner_models_published_total") == 0)
        #expect(metric(#"edgeq_learner_trainings_total{verdict="passed"}"#) == nil)
        #expect(try ModelStore(dataDirectory: learnerData).versions().isEmpty)
        var seen: [String] = []
        while let m = models.receive(timeout: 0.5) { seen.append(m.topic) }
        #expect(!seen.contains { $0.hasPrefix("fleet/t/model") || $0.hasPrefix("fleet/t/verdict/") }, "\(seen)")
        let log = (try? String(contentsOf: dir.url.appendingPathComponent("learner.log"), encoding: .utf8)) ?? ""
        #expect(log.contains("candidate failed its checks: not published") && log.contains("q_within_bound"), "\(log.suffix(3000))")
    }
}
