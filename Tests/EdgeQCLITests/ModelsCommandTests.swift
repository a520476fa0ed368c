import EdgeQGateway
import EdgeQMQTT
import EdgeQNet
import EdgeQTestSupport
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Testing

/// `edgeq models rollback` through the real `edgeq` process, offline (`--data`) and against a
/// running `edgeq run` behind a broker that wants a password and TLS with a client
/// certificate (`--config`). Before: two rollbacks toggled between two versions (the target
/// was the last *different* entry of the served history), and `--config` connected with the
/// broker URL alone, ignoring the mapping file's credentials and TLS.
@Suite struct ModelsCommandTests {
    /// Three models that fit `map`, stored in `data` and served one after the other (v1, v2, v3).
    func serveThree(for map: TopicMap, in data: URL) throws {
        let store = try ModelStore(dataDirectory: data)
        for seed in 1...3 {
            let arch = Architecture(inputCount: map.stateWidth, hidden: [16, 16], actionCount: map.actions.count)
            var rng = SystemRandomNumberGenerator()
            let calibration = (0..<(map.stateWidth * 256)).map { _ in Float.random(in: -1...1, using: &rng) }
            var model = try QModel(network: try MLP(arch, seed: UInt64(seed)), actionNames: map.actions.map(\.name),
                                   normalization: .identity(map.stateWidth), calibrationStates: calibration)
            if seed == 3 { model.support = StateSupport.fit(calibration, inputCount: map.stateWidth) }
            try store.setCurrent(try add(model, to: store, for: map, in: data), reason: "test")
        }
    }

    /// Stores `model` in `data`'s store as a version that passed its checks, signed with the
    /// device key for `map`; its version.
    func add(_ model: QModel, to store: ModelStore, for map: TopicMap, in data: URL) throws -> Int {
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let file = data.appendingPathComponent("incoming.safetensors")
        try model.save(to: file)
        return try store.add(files: ["model.safetensors": file, "model.safetensors.sha256": QModel.checksumURL(for: file)],
                             report: Data(#"{"verdict":"passed"}"#.utf8), signer: try ModelSigner.device(dataDirectory: data, map: map))
    }

    static let learning = "  hidden: [16, 16]\n  retrain: {every_transitions: none}"

    @Test func offlineRollbackTwiceGoesBackTwiceThenRefuses() throws {
        let dir = try TempDir()
        let data = dir.url.appendingPathComponent("data")
        let map = try TopicMap.parse(yaml: processMapping(id: "m1", plant: "m", learning: Self.learning), file: "m.yaml")
        try serveThree(for: map, in: data)

        let first = try EdgeQBinary.run(["models", "rollback", "--data", data.path])
        #expect(first.code == 0, "\(first.stderr)")
        #expect(first.stdout.contains("serving v2 (v3 quarantined)"), "\(first.stdout)")
        let second = try EdgeQBinary.run(["models", "rollback", "--data", data.path])
        #expect(second.code == 0, "\(second.stderr)")
        #expect(second.stdout.contains("serving v1 (v2 quarantined)"), "\(second.stdout)")
        let third = try EdgeQBinary.run(["models", "rollback", "--data", data.path])
        #expect(third.code == 1, "\(third)")
        #expect(third.stderr.contains("no earlier version to roll back to"), "\(third.stderr)")
        #expect(!third.stderr.contains("USAGE"), "a run-time refusal printed the usage text")
        #expect(try ModelStore(dataDirectory: data).current() == 1)

        let list = try EdgeQBinary.run(["models", "list", "--data", data.path])
        let lines = list.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("* v1") && !$0.contains("QUARANTINED") }, "\(list.stdout)")
        #expect(lines.contains { $0.contains("v2") && $0.contains("QUARANTINED") }, "\(list.stdout)")
        #expect(lines.contains { $0.contains("v3") && $0.contains("QUARANTINED") }, "\(list.stdout)")
        let show = try EdgeQBinary.run(["models", "show", "3", "--data", data.path])
        #expect(show.stdout.contains("quarantine since"), "\(show.stdout)")
        // v3 carries its training support, v2 none.
        #expect(show.stdout.contains("support    per state input, the range it was trained on"), "\(show.stdout)")
        let show2 = try EdgeQBinary.run(["models", "show", "2", "--data", data.path])
        #expect(show2.stdout.contains("support    none recorded"), "\(show2.stdout)")

        // By name, a quarantined version is served again.
        let promote = try EdgeQBinary.run(["models", "promote", "3", "--data", data.path])
        #expect(promote.code == 0, "\(promote.stderr)")
        #expect(promote.stdout.contains("its quarantine is lifted"), "\(promote.stdout)")
        let store = try ModelStore(dataDirectory: data)
        #expect(store.current() == 3 && !store.isQuarantined(3))
    }

    /// `edgeq models show --config` names every state input of the support (a cyclic feature's
    /// two columns, the previous tick's copies) and gives each range in the feature's own units
    /// where its normalisation is a fixed range, with the range the model acts in (widened by the
    /// input's support margin; "not checked" where the mapping says `none`); a mapping of another
    /// width is refused.
    @Test func showNamesTheSupportsInputsInTheirUnits() throws {
        let dir = try TempDir()
        let data = dir.url.appendingPathComponent("data")
        let yaml = """
            gateway:
              id: m5
              mode: shadow
            signals:
              - {name: step, topic: plant/m/state, json: step}
              - {name: x, topic: plant/m/state, json: x, range: [-10, 10]}
              - {name: hour, topic: plant/m/state, json: hour, range: [0, 24]}
              - {name: load, topic: plant/m/state, json: load}
            state:
              history: 2
              features:
                - {signal: x, normalize: [0, 40]}
                - {name: hod, cyclic: hour, period: 24}
                - {signal: load, support_margin: none}
            tick:
              trigger: plant/m/state
            reward: -abs(x)
            actions:
              fallback: hold
              list:
                - {name: low, publish: {topic: plant/m/cmd, payload: '{"a":0}', value: 0}}
                - {name: high, publish: {topic: plant/m/cmd, payload: '{"a":1}', value: 1}}
            incumbent:
              topic: plant/m/cmd
              json: a
            learning:
            \(Self.learning)
            """
        let mappingFile = dir.url.appendingPathComponent("m.yaml")
        try yaml.write(to: mappingFile, atomically: true, encoding: .utf8)
        let map = try TopicMap.parse(yaml: yaml, file: "m.yaml")
        #expect(map.stateInputNames == ["x", "hod.sin", "hod.cos", "load", "x[t-1]", "hod.sin[t-1]", "hod.cos[t-1]", "load[t-1]"])
        let store = try ModelStore(dataDirectory: data)
        let arch = Architecture(inputCount: map.stateWidth, hidden: [16, 16], actionCount: 2)
        var rng = SystemRandomNumberGenerator()
        let calibration = (0..<(map.stateWidth * 64)).map { _ in Float.random(in: -1...1, using: &rng) }
        var model = try QModel(network: try MLP(arch, seed: 1), actionNames: ["low", "high"],
                               normalization: .identity(map.stateWidth), calibrationStates: calibration)
        // x stored in [-0.5, 0], i.e. 10 … 20 in its units (normalised from [0, 40]); with the
        // default margin (half the range on each side) the model acts in 5 … 25.
        let lo: [Float] = [-0.5, -1, -1, 3, -0.5, -1, -1, 3], hi: [Float] = [0, 1, 1, 7, 0, 1, 1, 7]
        model.support = StateSupport.fit(lo + hi, inputCount: map.stateWidth)
        let v = try add(model, to: store, for: map, in: data)
        let show = try EdgeQBinary.run(["models", "show", "\(v)", "--data", data.path, "--config", mappingFile.path])
        #expect(show.code == 0, "\(show.stderr)")
        let lines = show.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        func line(_ name: String) -> String? { lines.first { $0.hasPrefix(name + " ") } }
        #expect(line("x") == "x             trained on [10, 20], acts in [5, 25]", "\(show.stdout)")
        #expect(line("hod.cos[t-1]") == "hod.cos[t-1]  trained on [-1, 1], acts in [-2, 2]", "\(show.stdout)")
        #expect(line("load") == "load          trained on [3, 7], not checked", "\(show.stdout)")
        #expect(line("x[t-1]")?.hasSuffix("trained on [10, 20], acts in [5, 25]") == true, "\(show.stdout)")
        // Another mapping (one state input) is refused: its inputs are not this model's.
        let other = dir.url.appendingPathComponent("other.yaml")
        try processMapping(id: "m6", plant: "m", learning: Self.learning).write(to: other, atomically: true, encoding: .utf8)
        let refused = try EdgeQBinary.run(["models", "show", "\(v)", "--data", data.path, "--config", other.path])
        #expect(refused.code == 65 && refused.stderr.contains("state has 1 inputs and v\(v)'s support 8"), "\(refused)")
    }

    /// `edgeq models show` prints the exogenous baseline's fit (`baseline.json`, as a retraining
    /// writes it) and whether the trial was adjusted, with the decided and the raw figures.
    @Test func showPrintsTheBaselineAndTheAdjustedTrial() throws {
        let dir = try TempDir()
        let data = dir.url.appendingPathComponent("data")
        let map = try TopicMap.parse(yaml: processMapping(id: "m3", plant: "m", learning: Self.learning), file: "m.yaml")
        try serveThree(for: map, in: data)
        let store = try ModelStore(dataDirectory: data)
        try Data(#"""
            {"model":null,"report":{"accepted":true,"adjusted_rms":2.5,"features":13,"fitted_rows":5760,"held_out_variance_ratio":0.0609,
             "max_ratio":0.8,"placebo_pairs":12,"raw_rms":24.9,"rows":"incumbent","signals":["setpoint","ambient_temp"],"time_constants":[15,60]}}
            """#.utf8).write(to: store.baselineURL(3))
        try Data(#"""
            {"version":3,"reference":"incumbent","verdict":"budget-exhausted","pairs":30,"ticks":14400,"confidence":0.95,"mean_difference":1.75,
             "ci_low":-2.9,"ci_high":6.3,"raw_mean_difference":6.6,"raw_ci_low":-24.8,"raw_ci_high":38,"adjusted":true,
             "adjustment":{"note":"adjusted by the exogenous baseline of setpoint, ambient_temp (held-out placebo variance ratio 0.06)"},
             "candidate_mean":-46,"reference_mean":-47.8,"cost":0,"cost_share":0,"sd":12.6,"conditions":{"setpoint":[19,22],"ambient_temp":[-4.4375,13.78]}}
            """#.utf8).write(to: store.trialURL(3))
        try Data(#"""
            {"version":2,"reference":"v1","verdict":"futile","pairs":4,"ticks":4000,"confidence":0.95,"mean_difference":0,
             "ci_low":0,"ci_high":0,"futility":0.01,"futility_high":-5,"candidate_mean":500,"reference_mean":500,"cost":0,"cost_share":0}
            """#.utf8).write(to: store.trialURL(2))
        try Data(#"""
            {"version":1,"reference":"incumbent","verdict":"reject","pairs":1,"ticks":864,"confidence":0.95,"mean_difference":-48,
             "reason":"early stop: clearly worse after 1 pair","early_stop_high":-20.5,"noise_from_trial":{"version":"v7","sd":8.7,"pairs":30},
             "candidate_mean":-57,"reference_mean":-9,"cost":48,"cost_share":2.67}
            """#.utf8).write(to: store.trialURL(1))
        let early = try EdgeQBinary.run(["models", "show", "1", "--data", data.path])
        #expect(early.code == 0, "\(early.stderr)")
        #expect(early.stdout.contains("trial      reject against incumbent: early stop: clearly worse after 1 pair"), "\(early.stdout)")
        #expect(early.stdout.contains("early stop with the noise of v7's trial (sd 8.7 over 30 pairs): a clearly worse candidate is rejected before min_pairs (bound -20.5)"),
                "\(early.stdout)")
        // The same version as the stop-loss left it: rejected inside its block.
        try Data(#"""
            {"version":1,"reference":"incumbent","verdict":"reject","pairs":0,"ticks":620,"confidence":0.95,
             "reason":"stop-loss: the candidate's block had lost 61.2 against the reference's latest block after 76 scored ticks (220 ticks into the block), more than the limit 57.5 (the larger of 0.5 of a block's return and the plant's spreads)",
             "stop_loss":0.5,"stop_loss_hit":{"block_ticks":220,"scored_ticks":76,"deficit":61.2,"limit":57.5,"raw_deficit":61.2},
             "candidate_mean":null,"reference_mean":null,"cost":61.2,"cost_share":0.27}
            """#.utf8).write(to: store.trialURL(1))
        let stopped = try EdgeQBinary.run(["models", "show", "1", "--data", data.path])
        #expect(stopped.code == 0, "\(stopped.stderr)")
        #expect(stopped.stdout.contains("trial      reject against incumbent: stop-loss: the candidate's block had lost 61.2"), "\(stopped.stdout)")
        #expect(stopped.stdout.contains("stop-loss: the candidate's block had lost 61.2 against the reference's latest block after 76 scored ticks (limit 57.5): rejected inside the block"),
                "\(stopped.stdout)")
        // Stopped in its first block of an adjusted trial, against the rate before it less the baseline.
        try Data(#"""
            {"version":1,"reference":"incumbent","verdict":"reject","pairs":0,"ticks":200,"confidence":0.95,"adjusted":true,
             "reason":"stop-loss: the candidate's block had lost 40.5 against the controller in charge's rate before the trial after 56 scored ticks (200 ticks into the block), more than the limit 38 (the larger of 1 of a block's return, rewards less their exogenous baseline, and the plant's spreads)",
             "stop_loss":0.5,"stop_loss_hit":{"block_ticks":200,"scored_ticks":56,"deficit":40.5,"limit":38,"raw_deficit":52.1,"before_trial":true,"adjusted":true},
             "candidate_mean":null,"reference_mean":null,"cost":52.1,"cost_share":0.9}
            """#.utf8).write(to: store.trialURL(1))
        let first = try EdgeQBinary.run(["models", "show", "1", "--data", data.path])
        #expect(first.code == 0, "\(first.stderr)")
        #expect(first.stdout.contains("stop-loss: the candidate's block had lost 40.5 against the controller in charge's rate before the trial "
                                      + "(rewards less their exogenous baseline) after 56 scored ticks (limit 38): rejected inside the block"), "\(first.stdout)")
        let futile = try EdgeQBinary.run(["models", "show", "2", "--data", data.path])
        #expect(futile.code == 0, "\(futile.stderr)")
        #expect(futile.stdout.contains("trial      futile against v1"), "\(futile.stdout)")
        #expect(futile.stdout.contains("futile: shown not to be better than 1 % of the reference's block return (bound -5 < 0): stopped without promoting"), "\(futile.stdout)")
        #expect(!futile.stdout.contains("sd of a pair difference"), "a trial.json without sd: \(futile.stdout)")
        let show = try EdgeQBinary.run(["models", "show", "3", "--data", data.path])
        #expect(show.code == 0, "\(show.stderr)")
        #expect(show.stdout.contains("baseline   accepted (exogenous: setpoint, ambient_temp; 13 features; rows of incumbent, 5760)"), "\(show.stdout)")
        #expect(show.stdout.contains("held-out placebo pairs 12: variance ratio 0.0609 (accepted at ≤ 0.8), rms 24.9 raw, 2.5 adjusted"), "\(show.stdout)")
        #expect(show.stdout.contains("mean difference per pair 1.75 (0.95 interval -2.9 … 6.3), adjusted for the exogenous baseline"), "\(show.stdout)")
        #expect(show.stdout.contains("raw (unadjusted): mean difference 6.6 (interval -24.8 … 38)"), "\(show.stdout)")
        // Not a promotion: the spread is shown, nothing borrows it.
        #expect(show.stdout.contains("sd of a pair difference 12.6\n"), "\(show.stdout)")
        #expect(show.stdout.contains("adjusted by the exogenous baseline of setpoint, ambient_temp"), "\(show.stdout)")
        #expect(show.stdout.contains("conditions seen: ambient_temp -4.438 … 13.78, setpoint 19 … 22\n"), "not a promotion: \(show.stdout)")
        #expect(!show.stdout.contains("guard      "), "no guard.json: \(show.stdout)")
        // The guard's record (as the gateway writes it after a compared pair).
        try Data(#"""
            {"adjusted":true,"block":"ticks:480","burn_in":60,"control_group":"v2","pairs":5,"probation_pairs_left":0,"served":3,
             "time":1764950400,"void_pairs":0,"window":[[-40,-38,1,0],[-50,-49,0,0],[-45,-47,0,1]]}
            """#.utf8).write(to: store.guardURL(3))
        // A trial that runs (v2 has a verdict file: its running record is not shown).
        try Data(#"{"candidate":3,"reference":"v2","blocks":[{"arm":"candidate"},{"arm":"reference"},{"arm":"reference"}]}"#.utf8)
            .write(to: store.runningTrialURL(3))
        try FileManager.default.removeItem(at: store.trialURL(3))
        let running = try EdgeQBinary.run(["models", "show", "3", "--data", data.path])
        #expect(running.stdout.contains("trial      running against v2: 1 pairs and 1 block so far (a restart goes on from its complete pairs)"), "\(running.stdout)")
        let list = try EdgeQBinary.run(["models", "list", "--data", data.path])
        #expect(list.stdout.contains("trial: running"), "\(list.stdout)")
        let guarded = try EdgeQBinary.run(["models", "show", "3", "--data", data.path])
        #expect(guarded.stdout.contains("guard      5 pairs compared against v2 (blocks ticks:480, adjusted); window of 3: mean difference per pair -0.3333; probation left 0; written 2025-12-05T16:00:00Z (a restart goes on from it)"), "\(guarded.stdout)")
        // A candidate waiting for the running trial (the gateway's mark beside it).
        try FileManager.default.removeItem(at: store.runningTrialURL(3))
        try Data(#"{"version":3,"began":false,"since":1764950400,"replaces":null}"#.utf8).write(to: store.pendingTrialURL(3))
        let waiting = try EdgeQBinary.run(["models", "show", "3", "--data", data.path])
        #expect(waiting.stdout.contains("trial      waiting: its trial begins when the running one is decided (a restart keeps it waiting)"), "\(waiting.stdout)")
        #expect(try EdgeQBinary.run(["models", "list", "--data", data.path]).stdout.contains("trial: waiting"))
        // One whose trial began, no block ended yet.
        try Data(#"{"version":3,"began":true,"since":1764950400,"replaces":null}"#.utf8).write(to: store.pendingTrialURL(3))
        let begun = try EdgeQBinary.run(["models", "show", "3", "--data", data.path])
        #expect(begun.stdout.contains("trial      running: no block ended yet (a restart begins it again)"), "\(begun.stdout)")
    }

    @Test func rollbackOverMQTTUsesTheMappingsCredentialsAndTLSAndWalksBack() throws {
        let dir = try TempDir()
        let pki = try TestCertificates(in: dir.url.appendingPathComponent("pki"))
        let broker = try MosquittoBroker(auth: .passwords(["plant": "s3cret"]),
                                         tls: .init(certificates: pki, requireClientCertificate: true))
        let password = dir.url.appendingPathComponent("mqtt-password")
        try "s3cret\n".write(to: password, atomically: true, encoding: .utf8)
        let user = dir.url.appendingPathComponent("mqtt-user")
        try "plant\n".write(to: user, atomically: true, encoding: .utf8)
        let yaml = processMapping(id: "m2", plant: "m", learning: Self.learning).replacingOccurrences(of: "  id: m2\n", with: """
              id: m2
              brokers: ["\(broker.url)"]
              username: {file: \(user.path)}
              password: {file: \(password.path)}
              tls: {ca: \(pki.caFile), cert: \(pki.clientCertificateFile), key: \(pki.clientKeyFile)}

            """)
        let file = dir.url.appendingPathComponent("m2.yaml").path
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        let map = try TopicMap.parse(yaml: yaml, file: file)
        #expect(map.gateway.tls != nil && map.gateway.password != nil)
        let data = dir.url.appendingPathComponent("data")
        try serveThree(for: map, in: data)
        let alice = try TestKey("alice", in: dir.url.appendingPathComponent("private"), data: data)

        // An observer on the same broker (it needs the same credentials and TLS).
        let observer = try MQTTClient(try BrokerConnection.configuration(for: map, broker: nil, clientID: "observer"))
        defer { observer.stop() }
        try observer.subscribe("edgeq/m2/status", qos: .atLeastOnce)
        observer.start()
        try observer.waitUntilConnected(timeout: 10)
        let gateway = try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--data", data.path],
                                       stderrPath: dir.url.appendingPathComponent("gw.log").path)
        defer { if gateway.isRunning { gateway.signal(SIGKILL); _ = gateway.wait(timeout: 10) } }
        var online = false
        let deadline = Date().addingTimeInterval(30)
        while !online && Date() < deadline {
            if let m = observer.receive(timeout: 0.2) {
                let s = String(decoding: m.payload, as: UTF8.self)
                online = s.contains(#""state":"online""#) && s.contains(#""version":3"#)
            }
        }
        #expect(online, "the gateway did not come online serving v3: \((try? String(contentsOf: dir.url.appendingPathComponent("gw.log"), encoding: .utf8)) ?? "")")

        let first = try EdgeQBinary.run(["models", "rollback", "--config", file, "--key", alice.keyFile.path], timeout: 60)
        #expect(first.code == 0, "\(first.stderr)")
        #expect(first.stdout.contains(#""ok":true"#) && first.stdout.contains(#""version":2"#), "\(first.stdout)")
        #expect(first.stdout.contains(#""quarantined":3"#), "\(first.stdout)")
        #expect(first.stdout.contains(#""by":"alice""#), "the reply names the signing key: \(first.stdout)")
        // Without --key: a usage error, nothing sent (the gateway obeys only signed commands).
        let unsigned = try EdgeQBinary.run(["models", "rollback", "--config", file], timeout: 60)
        #expect(unsigned.code == 64 && unsigned.stderr.contains("--key"), "\(unsigned)")
        let second = try EdgeQBinary.run(["models", "rollback", "--config", file, "--key", alice.keyFile.path], timeout: 60)
        #expect(second.code == 0, "\(second.stderr)")
        #expect(second.stdout.contains(#""version":1"#), "\(second.stdout)")
        let third = try EdgeQBinary.run(["models", "rollback", "--config", file, "--key", alice.keyFile.path], timeout: 60)
        #expect(third.code == 1, "\(third)")
        #expect(third.stdout.contains(#""ok":false"#) && third.stdout.contains("no earlier version"), "\(third.stdout)")

        gateway.signal(SIGTERM)
        #expect(gateway.wait(timeout: 30) == 0)
        let store = try ModelStore(dataDirectory: data)
        #expect(store.current() == 1)
        #expect(store.quarantined().map(\.version) == [2, 3])
    }
}
