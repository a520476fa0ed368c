import EdgeQTopicMap
import Testing

/// The mapping's `fleet` section and the fleet learner's own file (docs/fleet.md).
@Suite struct FleetSectionTests {
    /// The line the first appended line lands on.
    static let firstLine = minimal.split(separator: "\n", omittingEmptySubsequences: false).count

    @Test func absentMeansNoShippingAndDefaultsAreDocumented() throws {
        #expect(try TopicMap.parse(yaml: minimal, file: "m.yaml").fleet == nil)
        let f = try #require(try TopicMap.parse(yaml: minimal + "fleet: {topic: fleet/ahu}\n", file: "m.yaml").fleet)
        #expect(f == FleetConfig(topic: "fleet/ahu"))
        #expect(f.batchRows == 500 && f.interval == 1 && f.qos == 1 && f.window == 4 && f.ackTimeout == 10)
        #expect(f.experienceTopic(gateway: "t") == "fleet/ahu/experience/t" && f.ackTopic(gateway: "t") == "fleet/ahu/ack/t")
        let all = try #require(try TopicMap.parse(yaml: minimal + """
            fleet:
              topic: fleet/ahu
              batch_rows: 200
              interval: 250ms
              qos: 2
              window: 8
              ack_timeout: 30s

            """, file: "m.yaml").fleet)
        #expect(all.batchRows == 200 && all.interval == 0.25 && all.qos == 2 && all.window == 8 && all.ackTimeout == 30)
        // Fleet models: taken by default, at most 16 MiB.
        #expect(f.models && f.maxModelSize == 16 << 20)
        #expect(f.modelTopic == "fleet/ahu/model" && f.modelChunkFilter == "fleet/ahu/model/chunk/+" && f.verdictTopic(gateway: "t") == "fleet/ahu/verdict/t")
        let off = try #require(try TopicMap.parse(yaml: minimal + "fleet: {topic: fleet/ahu, models: false, max_model_size: 4096}\n", file: "m.yaml").fleet)
        #expect(!off.models && off.maxModelSize == 4096)
    }

    @Test func problemsAreReportedWithTheirLine() {
        let cases: [(String, Int, String)] = [
            ("fleet: {batch_rows: 5}", 0, "missing required key 'topic' in fleet"),
            ("fleet:\n  topic: fleet/+/x", 1, "invalid fleet topic"),
            ("fleet:\n  topic: fleet/ahu/", 1, "must not end with '/'"),
            ("fleet:\n  topic: fleet/ahu\n  qos: 0", 2, "fleet qos must be in 1...2"),
            ("fleet:\n  topic: fleet/ahu\n  batch_rows: 0", 2, "fleet batch_rows must be in 1...10000"),
            ("fleet:\n  topic: fleet/ahu\n  window: 100", 2, "fleet window (batches in flight) must be in 1...64"),
            ("fleet:\n  topic: fleet/ahu\n  interval: soon", 2, "fleet interval must be a positive duration"),
            ("fleet:\n  topic: fleet/ahu\n  ack_timeout: 10ms", 2, "at least 100ms"),
            ("fleet:\n  topic: fleet/ahu\n  batch_row: 5", 2, "did you mean 'batch_rows'?"),
            ("fleet:\n  topic: edgeq/t/fleet", 1, "overlaps the gateway's control-plane prefix"),
            ("fleet:\n  topic: fleet/ahu\n  models: maybe", 2, "fleet models must be"),
            ("fleet:\n  topic: fleet/ahu\n  max_model_size: 10", 2, "fleet max_model_size (bytes) must be in 1024..."),
        ]
        for (yaml, line, text) in cases {
            let d = diagnostics(minimal + yaml + "\n")
            #expect(d.count == 1, "\(yaml): \(d)")
            #expect(d.first?.line == Self.firstLine + line, "\(yaml): \(d)")
            #expect(d.first?.message.contains(text) == true, "\(yaml): \(d)")
        }
    }

    /// The shipper's scheduling and compression are mapping keys (docs/mapping.md, `fleet`):
    /// `normal` and 1 by default, every documented value read as written.
    @Test func priorityAndDeflateLevelAreReadWithTheirDefaults() throws {
        let f = try #require(try TopicMap.parse(yaml: minimal + "fleet: {topic: fleet/ahu}\n", file: "m.yaml").fleet)
        #expect(f.priority == .normal && f.deflateLevel == 1)
        for p in ["normal", "low", "idle"] {
            let c = try #require(try TopicMap.parse(yaml: minimal + "fleet: {topic: fleet/ahu, priority: \(p)}\n", file: "m.yaml").fleet)
            #expect(c.priority.rawValue == p)
        }
        for level in 0...9 {
            let c = try #require(try TopicMap.parse(yaml: minimal + "fleet:\n  topic: fleet/ahu\n  deflate_level: \(level)\n", file: "m.yaml").fleet)
            #expect(c.deflateLevel == level)
        }
    }

    /// A bad priority or level is an error at its value's line and column, saying what is allowed.
    @Test func badPriorityAndDeflateLevelAreReportedAtTheirValue() {
        let cases: [(String, Int, Int, String)] = [
            ("fleet:\n  topic: fleet/ahu\n  priority: lo", 2, 13, "fleet priority (of the shipper's threads) must be one of normal, low, idle, found 'lo'; did you mean 'low'?"),
            ("fleet:\n  topic: fleet/ahu\n  priority: 10", 2, 13, "must be one of normal, low, idle, found '10'"),
            ("fleet: {topic: fleet/ahu, priority: [idle]}", 0, 37, "fleet priority (of the shipper's threads) must be a text"),
            ("fleet:\n  topic: fleet/ahu\n  deflate_level: 10", 2, 18, "fleet deflate_level (zlib; 0: not compressed) must be in 0...9, found 10"),
            ("fleet:\n  topic: fleet/ahu\n  deflate_level: -1", 2, 18, "must be in 0...9, found -1"),
            ("fleet:\n  topic: fleet/ahu\n  deflate_level: fast", 2, 18, "fleet deflate_level (zlib; 0: not compressed) must be a whole number"),
            ("fleet:\n  topic: fleet/ahu\n  deflate_levl: 1", 2, 3, "did you mean 'deflate_level'?"),
        ]
        for (yaml, line, column, text) in cases {
            let d = diagnostics(minimal + yaml + "\n")
            #expect(d.count == 1, "\(yaml): \(d)")
            #expect(d.first?.line == Self.firstLine + line, "\(yaml): \(d)")
            #expect(d.first?.column == column, "\(yaml): \(d)")
            #expect(d.first?.message.contains(text) == true, "\(yaml): \(d)")
        }
    }

    /// Operational settings: the `fleet` section (topic, batching, the shipper's priority and
    /// compression) is not part of the mapping's fingerprint, so changing them never invalidates
    /// a signed model (docs/security.md, "The mapping fingerprint").
    @Test func fleetSettingsAreNotInTheFingerprint() throws {
        let plain = try TopicMap.parse(yaml: minimal, file: "m.yaml")
        let shipping = try TopicMap.parse(yaml: minimal + "fleet: {topic: fleet/ahu, batch_rows: 100, priority: idle, deflate_level: 0}\n", file: "m.yaml")
        let other = try TopicMap.parse(yaml: minimal + "fleet: {topic: fleet/b, priority: low, deflate_level: 9}\n", file: "m.yaml")
        #expect(shipping.fleet?.priority == .idle && other.fleet?.deflateLevel == 9)
        // The fingerprint is the SHA-256 of this text (EdgeQTrust).
        #expect(plain.canonicalDefinition == shipping.canonicalDefinition && shipping.canonicalDefinition == other.canonicalDefinition)
    }

    @Test func theLearnerFileIsValidatedLikeAMapping() throws {
        let c = try FleetLearnerConfig.parse(yaml: "fleet: fleet/ahu\ngroup: g1\nid: l-1\nstatus_interval: 2s\nmetrics_port: 0\n")
        #expect(c.subscription == "$share/g1/fleet/ahu/experience/+")
        #expect(c.ackTopic(gateway: "a") == "fleet/ahu/ack/a" && c.statusTopic == "fleet/ahu/learner/l-1/status")
        #expect(c.statusInterval == 2 && c.metricsPort == 0 && c.broker == nil && c.data == nil && c.username == nil && c.tls == nil)
        let secured = try FleetLearnerConfig.parse(yaml: "fleet: f\ngroup: g\nid: l\nusername: {env: U}\npassword: {file: /p}\ntls: {ca: /ca.pem}\n")
        #expect(secured.username == .environment("U") && secured.password == .file("/p") && secured.tls?.caFile == "/ca.pem")
        do {
            _ = try FleetLearnerConfig.parse(yaml: "fleet: f\ngroup: g\nid: l\npassword: hunter2\n", file: "f.yaml")
            Issue.record("an inline password was accepted")
        } catch {
            #expect(error.diagnostics.map(\.line) == [4] && error.diagnostics.first?.message.contains("must not be written inline") == true)
        }
        do {
            _ = try FleetLearnerConfig.parse(yaml: "fleet: fleet/ahu\ngroup: a/b\nid: l1\nbroker: http://x\ngrup: 1\n", file: "f.yaml")
            Issue.record("an invalid learner file was accepted")
        } catch {
            let lines = error.diagnostics.map(\.line)
            #expect(lines == [2, 4, 5], "\(error.diagnostics)")
            #expect(error.diagnostics.map(\.description).joined().contains("did you mean 'group'?"))
        }
    }

    @Test func theLearnerFileTakesTheTrainingKeys() throws {
        let plain = try FleetLearnerConfig.parse(yaml: "fleet: fleet/ahu\ngroup: g\nid: l\n")
        #expect(plain.mapping == nil && plain.key == nil && plain.trainEvery == 5000 && plain.trainRows == 100_000 && plain.updates == nil && plain.maxMessage == 256 * 1024)
        #expect(plain.modelTopic == "fleet/ahu/model" && plain.modelChunkTopic(2) == "fleet/ahu/model/chunk/2" && plain.verdictFilter == "fleet/ahu/verdict/+")
        let c = try FleetLearnerConfig.parse(yaml: "fleet: f\ngroup: g\nid: l\nmapping: /m.yaml\nkey: /k/fleet.key\ntrain_every: 300\nupdates: 900\nmax_message: 64kB\n")
        #expect(c.mapping == "/m.yaml" && c.key == "/k/fleet.key" && c.trainEvery == 300 && c.updates == 900 && c.maxMessage == 64_000)
        #expect(try FleetLearnerConfig.parse(yaml: "fleet: f\ngroup: g\nid: l\nmax_message: 1MiB\n").maxMessage == 1 << 20)
        #expect(try FleetLearnerConfig.parse(yaml: "fleet: f\ngroup: g\nid: l\ntrain_rows: 20000\n").trainRows == 20_000)
        #expect(!c.trainEveryPerGateway && !plain.trainEveryPerGateway)
        let each = try FleetLearnerConfig.parse(yaml: "fleet: f\ngroup: g\nid: l\nmapping: /m.yaml\nkey: /k/fleet.key\ntrain_every: 1_000/gateway\n")
        #expect(each.trainEvery == 1000 && each.trainEveryPerGateway)
        #expect(FleetLearnerConfig.parseTrainEvery("250") ?? (0, true) == (250, false))
        #expect(FleetLearnerConfig.parseTrainEvery(" 250 /gateway") ?? (0, false) == (250, true))
        for bad in ["0/gateway", "250/site", "/gateway", "-3", "1e3", "100000001"] {
            #expect(FleetLearnerConfig.parseTrainEvery(bad) == nil, "\(bad)")
        }
        #expect(try FleetLearnerConfig.parse(yaml: "fleet: f\ngroup: g\nid: l\ntrain_rows: all\n").trainRows == nil)
        #expect(try FleetLearnerConfig.parse(yaml: "fleet: f\ngroup: g\nid: l\nmax_message: 2048\n").maxMessage == 2048)
        let cases: [(String, Int, String)] = [
            ("mapping: /m.yaml", 4, "training needs a key"),
            ("key: /k.key", 4, "a key without 'mapping'"),
            ("max_message: 100", 4, "between 1KiB and 256MiB"),
            ("max_message: big", 4, "is not a size"),
            ("train_every: 0", 4, "train_every must be a whole number of new transitions in 1...100000000, or N/gateway"),
            ("train_every: 500/site", 4, "found '500/site'"),
            ("train_every: [500]", 4, "train_every must be a whole number"),
            ("train_rows: 10", 4, "train_rows (rows a training reads, or 'all') must be in 1000..."),
            ("train_rows: some", 4, "train_rows (rows a training reads, or 'all')"),
        ]
        for (line, at, text) in cases {
            do {
                _ = try FleetLearnerConfig.parse(yaml: "fleet: f\ngroup: g\nid: l\n" + line + "\n", file: "f.yaml")
                Issue.record("accepted: \(line)")
            } catch {
                #expect(error.diagnostics.map(\.line) == [at], "\(line): \(error.diagnostics)")
                #expect(error.diagnostics.first?.message.contains(text) == true, "\(line): \(error.diagnostics)")
            }
        }
    }
}
