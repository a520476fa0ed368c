import EdgeQLog
import EdgeQMQTT
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Synchronization
import Testing

/// `edgeq init` as a real process against each built-in simulator (`edgeq sim`, with its
/// incumbent) on a real mosquitto. Expected exchange: the simulator publishes its state on
/// plant/NAME/state and its incumbent's command on plant/NAME/cmd at 50 steps/s; `edgeq init`
/// listens for 3 s (the simulator starts inside that window) and drafts a mapping; the test listens
/// to the same states inside that window. The filled draft then runs against the simulator started
/// again from its first step, so the gateway sees what init saw.
/// The draft names the state fields with ranges holding every value the test saw, finds the
/// incumbent on plant/NAME/cmd, and fails `edgeq check` with its two TODOs (reward, actions);
/// with only those lines replaced it passes and runs in shadow under the real `edgeq run`.
@Suite(.serialized) struct InitCommandTests {
    /// A simulator, what its draft must show, and what a user fills in.
    struct Plant: CustomStringConvertible, Sendable {
        let name: String
        /// The command's JSON field and its number of actions (docs/simulators.md).
        let commandKey: String
        let actions: Int
        /// State fields the draft must read.
        let fields: [String]
        /// The reward a user writes over the draft's signals.
        let reward: String
        /// The state field that reads back the applied command (`role: applied`), if any.
        var readback: String?
        var description: String { name }
    }

    static let plants: [Plant] = [
        Plant(name: "cartpole", commandKey: "action", actions: 2, fields: ["x", "x_dot", "theta", "theta_dot", "step"], reward: "reward"),
        Plant(name: "thermal", commandKey: "level", actions: 5, fields: ["zone_temp", "outdoor_temp", "price", "occupied", "level", "step"], reward: "reward", readback: "level"),
        Plant(name: "tank", commandKey: "valve", actions: 5, fields: ["level", "setpoint", "inflow", "valve", "step"], reward: "-abs(level - setpoint)", readback: "valve"),
        Plant(name: "heater", commandKey: "level", actions: 5, fields: ["temp", "setpoint", "ambient_temp", "level", "step"], reward: "-abs(temp - setpoint)", readback: "level"),
        Plant(name: "mountaincar", commandKey: "action", actions: 3, fields: ["position", "velocity", "step"], reward: "reward"),
    ]

    static func text(_ url: URL) -> String { (try? String(contentsOf: url, encoding: .utf8)) ?? "" }

    /// Replaces the one line that starts with `prefix` by `replacement` (lines joined by \n).
    static func replacingLine(startingWith prefix: String, in text: String, with replacement: String) -> String {
        var lines = text.components(separatedBy: "\n")
        let hits = lines.indices.filter { lines[$0].hasPrefix(prefix) }
        #expect(hits.count == 1, "\(hits.count) lines start with '\(prefix)'")
        if let i = hits.first { lines[i] = replacement }
        return lines.joined(separator: "\n")
    }

    @Test(arguments: plants)
    func draftsAMappingThatRunsInShadowOnceRewardAndActionsAreFilled(_ plant: Plant) throws {
        let broker = try MosquittoBroker()
        let dir = try TempDir()
        // The simulator from its first step, seed 1: once inside init's window, and again from
        // the start when the filled draft runs. So the gateway sees the stretch of the plant that
        // init saw, however long the steps between take on a loaded machine (a plant that ran on
        // meanwhile can leave the drafted ranges, and its states are then rightly invalid).
        func startSimulator(_ run: String) throws -> ChildProcess {
            try ChildProcess(EdgeQBinary.path, ["sim", plant.name, "--broker", broker.url, "--seed", "1"],
                             stdoutPath: dir.url.appendingPathComponent("sim-\(run).out").path,
                             stderrPath: dir.url.appendingPathComponent("sim-\(run).log").path)
        }

        // edgeq init listens for 3 s; the test records the states inside that window.
        let draft = dir.url.appendingPathComponent("draft.yaml")
        let initLog = dir.url.appendingPathComponent("init.log")
        let initProcess = try ChildProcess(EdgeQBinary.path, ["init", "--broker", broker.url, "--topics", "plant/\(plant.name)/#",
                                                              "--seconds", "3", "--out", draft.path],
                                           stderrPath: initLog.path)
        defer { _ = initProcess.stop(grace: 5) }
        #expect(eventually(timeout: 20) { Self.text(initLog).contains("listening") }, "init never listened: \(Self.text(initLog))")
        // Until 2.5 s after init started its 3 s window: every state seen here was also heard there.
        let until = Date().addingTimeInterval(2.5)
        let observer = try plantClient(broker, "plant/\(plant.name)/state")
        let firstRun = try startSimulator("init")
        var states: [[String: Any]] = []
        while Date() < until {
            if let m = observer.receive(timeout: 0.05),
               let o = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any] { states.append(o) }
        }
        observer.stop()
        let code = initProcess.wait(timeout: 30)
        _ = firstRun.stop(grace: 5)
        #expect(code == 0, "edgeq init exited \(String(describing: code)): \(Self.text(initLog))")
        let drafted = Self.text(draft)
        #expect(!states.isEmpty, "the simulator published nothing")

        // Unfilled: edgeq check reports the two TODOs with their lines, and fails.
        let lines = drafted.components(separatedBy: "\n")
        let rewardLine = (lines.firstIndex { $0.hasPrefix("reward: TODO") } ?? -1) + 1
        let listLine = (lines.firstIndex { $0.hasPrefix("  list: TODO") } ?? -1) + 1
        #expect(rewardLine > 0 && listLine > 0, "no reward/actions TODO in the draft:\n\(drafted)")
        let unfilled = try EdgeQBinary.run(["check", draft.path])
        #expect(unfilled.code == 65)
        #expect(unfilled.stderr.contains("\(draft.path):\(rewardLine):9: reward is still TODO: what counts as good"), "\(unfilled.stderr)")
        #expect(unfilled.stderr.contains("\(draft.path):\(listLine):9: actions.list is still TODO: EdgeQ's actions"), "\(unfilled.stderr)")
        #expect(unfilled.stderr.contains("2 TODOs left to fill in"), "\(unfilled.stderr)")
        // `edgeq run` refuses it the same way, before touching the broker.
        let refused = try EdgeQBinary.run(["run", "--config", draft.path, "--broker", broker.url, "--data", dir.url.appendingPathComponent("refused").path], timeout: 60)
        #expect(refused.code == 65 && refused.stderr.contains("reward is still TODO"), "\(refused.stderr)")

        // Fill in the reward and the actions, as a user would: replace the two TODO lines.
        let actions = (0..<plant.actions).map { a in
            "    - {name: a\(a), publish: {topic: plant/\(plant.name)/cmd, payload: '{\"\(plant.commandKey)\":{{value}},\"step\":{{step}}}', value: \(a)}}"
        }
        var filled = Self.replacingLine(startingWith: "reward: TODO", in: drafted, with: "reward: \(plant.reward)")
        filled = Self.replacingLine(startingWith: "  list: TODO", in: filled, with: (["  list:"] + actions).joined(separator: "\n"))
        let filledFile = dir.url.appendingPathComponent("filled.yaml")
        try filled.write(to: filledFile, atomically: true, encoding: .utf8)
        let check = try EdgeQBinary.run(["check", filledFile.path])
        #expect(check.code == 0, "the filled draft fails edgeq check:\n\(check.stderr)\n\(filled)")
        let map = try TopicMap.load(path: filledFile.path)

        // The sensor topic and fields, each range holding every value the test saw.
        let stateTopic = "plant/\(plant.name)/state"
        for f in plant.fields {
            #expect(map.signals.contains { $0.topic == stateTopic && $0.pathText == f }, "no signal for \(f) in\n\(drafted)")
        }
        for s in map.signals where s.topic == stateTopic {
            guard let range = s.range, let path = s.pathText else { continue }
            let seen = states.compactMap { ($0[path] as? NSNumber)?.doubleValue }
            #expect(!seen.isEmpty, "the test saw no \(path)")
            let outside = seen.filter { !range.contains($0) }
            #expect(outside.isEmpty, "\(s.name) range \(range) misses \(outside.prefix(5))")
        }
        // The incumbent and the tick.
        #expect(map.incumbent?.topic == "plant/\(plant.name)/cmd")
        #expect(map.incumbent?.pathText == plant.commandKey)
        #expect(map.tick == .trigger(stateTopic))
        #expect(drafted.contains("\n  sequence: step "), "\(drafted)")
        #expect(map.gateway.id == plant.name)
        // The suggested actions rebuild the incumbent's payload: its value, and the step echoed.
        #expect(drafted.contains("payload: '{\"\(plant.commandKey)\":{{value}},\"step\":{{step}}}'"), "\(drafted)")
        // The plant's readback of the applied command is found by its values.
        for s in map.signals where s.topic == stateTopic && s.pathText != nil {
            #expect((s.role == .applied) == (s.pathText == plant.readback), "\(s.name): role \(String(describing: s.role))")
        }

        // The filled draft runs in shadow: decisions are reported and logged.
        let data = dir.url.appendingPathComponent("data").path
        let shadow = try plantClient(broker, "edgeq/\(plant.name)/shadow")
        defer { shadow.stop() }
        let gwLog = dir.url.appendingPathComponent("gw.log")
        let gw = try ChildProcess(EdgeQBinary.path, ["run", "--config", filledFile.path, "--broker", broker.url, "--data", data],
                                  stderrPath: gwLog.path)
        defer { _ = gw.stop(grace: 5) }
        let status = try plantClient(broker, "edgeq/\(plant.name)/status")
        defer { status.stop() }
        #expect(eventually(timeout: 30) {
            guard let m = status.receive(timeout: 0.1) else { return false }
            return String(decoding: m.payload, as: UTF8.self).contains(#""state":"online""#)
        }, "the gateway never came online: \(Self.text(gwLog))")
        let secondRun = try startSimulator("shadow")
        defer { _ = secondRun.stop(grace: 5) }
        var reports = 0
        #expect(eventually(timeout: 30) {
            while shadow.receive(timeout: 0) != nil { reports += 1 }
            return reports >= 20
        }, "\(reports) shadow reports; gateway log:\n\(Self.text(gwLog))")
        gw.signal(SIGTERM)
        let exit = gw.wait(timeout: 30)
        #expect(exit == 0, "edgeq run exited \(String(describing: exit)):\n\(Self.text(gwLog))")
        let rows = try ExperienceLog.open(dataDirectory: data, create: false).transitions(window: .all).map(\.transition)
        #expect(rows.count >= 10, "\(rows.count) rows logged")
        #expect(rows.allSatisfy { $0.mode == .shadow })
    }

    @Test func noMessageInTheWindowSaysWhichFilterAndHowLong() throws {
        let broker = try MosquittoBroker()
        let r = try EdgeQBinary.run(["init", "--broker", broker.url, "--topics", "plant/silent/#", "--seconds", "1"], timeout: 60)
        #expect(r.code == 66)
        #expect(r.stderr.contains("no message on plant/silent/# at \(broker.url) within 1 s"), "\(r.stderr)")
        #expect(r.stderr.contains("Check the broker URL and the filter"), "\(r.stderr)")
        #expect(r.stdout.isEmpty)
    }

    @Test func anUnreachableBrokerExits69() throws {
        let port = try FreePort.find()
        let r = try EdgeQBinary.run(["init", "--broker", "mqtt://127.0.0.1:\(port)", "--topics", "plant/#", "--seconds", "1", "--connect-timeout", "1"], timeout: 60)
        #expect(r.code == 69)
        #expect(r.stderr.contains("cannot reach the broker mqtt://127.0.0.1:\(port)"), "\(r.stderr)")
    }

    @Test func aBadFilterIsAUsageError() throws {
        let r = try EdgeQBinary.run(["init", "--broker", "mqtt://127.0.0.1:1", "--topics", "plant/#/state"], timeout: 60)
        #expect(r.code == 64)
        #expect(r.stderr.contains("'#' must be the whole last level"), "\(r.stderr)")
        let plus = try EdgeQBinary.run(["init", "--broker", "mqtt://127.0.0.1:1", "--topics", "plant/a+/state"], timeout: 60)
        #expect(plus.code == 64)
        #expect(plus.stderr.contains("'+' must fill a whole level"), "\(plus.stderr)")
    }

    @Test func anExistingOutFileIsKeptUnlessForced() throws {
        let dir = try TempDir()
        let out = dir.url.appendingPathComponent("m.yaml")
        try "keep me\n".write(to: out, atomically: true, encoding: .utf8)
        let r = try EdgeQBinary.run(["init", "--broker", "mqtt://127.0.0.1:1", "--topics", "plant/#", "--out", out.path], timeout: 60)
        #expect(r.code == 64)
        #expect(r.stderr.contains("--out \(out.path) exists: give --force"), "\(r.stderr)")
        #expect(Self.text(out) == "keep me\n")
    }

    /// A boiler's two devices on their own clocks, publishing until the returned flag is set: a
    /// raw temperature every 20 ms, and a JSON status (nested bool, enum string) every third
    /// temperature, just before it (so neither topic follows the other consistently: no incumbent).
    static func publishBoiler(_ cfg: MQTTConfiguration) throws -> StopFlag {
        let plant = try MQTTClient(cfg)
        plant.start()
        try plant.waitUntilConnected(timeout: 10)
        let stop = StopFlag()
        let publisher = Thread {
            var i = 0
            while !stop.isSet {
                if i % 3 == 0 {
                    _ = try? plant.publish("site/boiler/status", "{\"burner\":{\"on\":\(i % 6 == 0)},\"mode\":\"\(i % 9 == 0 ? "auto" : "eco")\"}", qos: .atLeastOnce)
                }
                _ = try? plant.publish("site/boiler/temp", "\(60 + Double(i % 7) * 0.5)", qos: .atLeastOnce)
                i += 1
                usleep(20_000)
            }
            plant.stop()
        }
        publisher.start()
        return stop
    }

    /// A TLS broker that wants a client certificate: init listens with --tls-ca/--tls-cert/--tls-key
    /// and the draft connects the gateway the same way (`edgeq check` accepts the files).
    @Test func listensOverTLSAndWritesTheTLSFiles() throws {
        let dir = try TempDir()
        let pki = try TestCertificates(in: dir.url.appendingPathComponent("pki"))
        let broker = try MosquittoBroker(tls: .init(certificates: pki, requireClientCertificate: true))
        var cfg = try MQTTConfiguration(url: broker.url, clientID: "plant-tls")
        cfg.tls = TLSConfiguration(caFile: pki.caFile, certificateFile: pki.clientCertificateFile, keyFile: pki.clientKeyFile)
        let stop = try Self.publishBoiler(cfg)
        defer { stop.set() }
        let out = dir.url.appendingPathComponent("boiler.yaml")
        let r = try EdgeQBinary.run(["init", "--broker", broker.url, "--topics", "site/boiler/#", "--seconds", "1.5", "--out", out.path,
                                     "--tls-ca", pki.caFile, "--tls-cert", pki.clientCertificateFile, "--tls-key", pki.clientKeyFile], timeout: 60)
        #expect(r.code == 0, "\(r.stderr)")
        let drafted = Self.text(out)
        #expect(drafted.contains("  brokers: [\(broker.url)]"), "\(drafted)")
        #expect(drafted.contains("  tls: {ca: \(pki.caFile), cert: \(pki.clientCertificateFile), key: \(pki.clientKeyFile)}"), "\(drafted)")
        // Filled in (a reward, one action), the draft loads with the same TLS files.
        var filled = Self.replacingLine(startingWith: "reward: TODO", in: drafted, with: "reward: -abs(temp - 61)")
        filled = Self.replacingLine(startingWith: "  list: TODO", in: filled,
                                    with: "  list:\n    - {name: low, publish: {topic: site/boiler/cmd, payload: '{{value}}', value: 0}}")
        let filledFile = dir.url.appendingPathComponent("filled.yaml")
        try filled.write(to: filledFile, atomically: true, encoding: .utf8)
        let map = try TopicMap.load(path: filledFile.path)
        #expect(map.gateway.tls == TLSConfig(caFile: pki.caFile, certFile: pki.clientCertificateFile, keyFile: pki.clientKeyFile))
        // Without the client certificate the broker refuses the handshake.
        let refused = try EdgeQBinary.run(["init", "--broker", broker.url, "--topics", "site/#", "--seconds", "1", "--connect-timeout", "1",
                                           "--tls-ca", pki.caFile], timeout: 60)
        #expect(refused.code == 69, "\(refused.stderr)")
    }

    /// SIGINT ends the window early: the draft is made from what was heard until then.
    @Test func sigintDraftsFromWhatWasHeard() throws {
        let broker = try MosquittoBroker()
        let dir = try TempDir()
        let stop = try Self.publishBoiler(try MQTTConfiguration(url: broker.url, clientID: "plant-int"))
        defer { stop.set() }
        let out = dir.url.appendingPathComponent("boiler.yaml")
        let log = dir.url.appendingPathComponent("init.log")
        let p = try ChildProcess(EdgeQBinary.path, ["init", "--broker", broker.url, "--topics", "site/boiler/#", "--seconds", "600", "--out", out.path],
                                 stderrPath: log.path)
        defer { p.signal(SIGKILL) }
        #expect(eventually(timeout: 20) { Self.text(log).contains("listening") }, "\(Self.text(log))")
        usleep(1_000_000)
        p.signal(SIGINT)
        let code = p.wait(timeout: 30)
        #expect(code == 0, "\(Self.text(log))")
        let drafted = Self.text(out)
        #expect(drafted.contains("{name: temp, topic: site/boiler/temp, range: ["), "\(drafted)")
        #expect(!drafted.contains("from 600 s of traffic"), "\(drafted)")
    }

    /// A broker with passwords: init listens with --username/--password (env:) and the draft
    /// names the password by reference and leaves the gateway's user name as a TODO; a raw
    /// payload becomes a signal without `json`; without credentials the broker refuses (69).
    /// --force replaces an existing --out.
    @Test func listensWithCredentialsAndKeepsThemByReference() throws {
        let broker = try MosquittoBroker(auth: .passwords(["plant": "pw-plant", "eng": "pw-eng"]))
        let dir = try TempDir()
        var cfg = try MQTTConfiguration(url: broker.url, clientID: "plant-raw")
        cfg.username = "plant"
        cfg.password = Secret("pw-plant")
        let stop = try Self.publishBoiler(cfg)
        defer { stop.set() }

        let out = dir.url.appendingPathComponent("boiler.yaml")
        try "old\n".write(to: out, atomically: true, encoding: .utf8)
        let r = try ChildProcess.run(EdgeQBinary.path, ["init", "--broker", broker.url, "--topics", "site/boiler/+", "--seconds", "1.5",
                                                       "--username", "eng", "--password", "env:INIT_TEST_PW", "--out", out.path, "--force"],
                                     timeout: 60, environment: ["INIT_TEST_PW": "pw-eng"])
        #expect(r.code == 0, "\(r.stderr)")
        let drafted = Self.text(out)
        #expect(drafted.contains("  password: {env: INIT_TEST_PW}"), "\(drafted)")
        #expect(drafted.contains("  username: TODO   # the gateway's broker user"), "\(drafted)")
        #expect(drafted.contains("{name: temp, topic: site/boiler/temp, range: ["), "\(drafted)")
        #expect(drafted.contains("{name: burner_on, topic: site/boiler/status, json: burner.on, type: bool}"), "\(drafted)")
        #expect(drafted.contains("{name: mode, topic: site/boiler/status, json: mode, type: enum, values: {"), "\(drafted)")
        // No incumbent in this traffic: a period tick from the rates.
        #expect(drafted.contains("  period: "), "\(drafted)")
        let check = try EdgeQBinary.run(["check", out.path])
        #expect(check.code == 65)
        #expect(check.stderr.contains("gateway.username is still TODO"), "\(check.stderr)")

        let refused = try EdgeQBinary.run(["init", "--broker", broker.url, "--topics", "site/#", "--seconds", "1", "--connect-timeout", "1"], timeout: 60)
        #expect(refused.code == 69, "\(refused.stderr)")
    }
}

/// A stop request shared with a publishing thread.
final class StopFlag: Sendable {
    private let flag = Mutex(false)
    var isSet: Bool { flag.withLock { $0 } }
    func set() { flag.withLock { $0 = true } }
}
