import EdgeQLog
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

/// The real `edgeq run` on topics/thermal.yaml under its own credential (user `thermal`) on a
/// mosquitto with the shipped deploy/mosquitto-acl.conf: the ACL grants the gateway all it needs
/// (its status, the sensors and the incumbent's commands, its command replies), and an
/// operator's `edgeq cmd` with the operator's own credential (`--username op-alice`) reaches it.
@Suite struct BrokerACLProcessTests {
    static let users = ["thermal", "plant-thermal", "incumbent-thermal", "op-alice"]

    static func client(_ broker: MosquittoBroker, _ user: String, subscribing filters: [String] = []) throws -> MQTTClient {
        var cfg = try MQTTConfiguration(url: broker.url, clientID: "\(user)-\(UUID().uuidString.prefix(6))")
        cfg.username = user
        cfg.password = Secret("pw-\(user)")
        cfg.inboundCapacity = 100_000
        let c = try MQTTClient(cfg)
        for f in filters { try c.subscribe(f, qos: .atLeastOnce) }
        c.start()
        try c.waitUntilConnected(timeout: 10)
        return c
    }

    static func waitFor(_ c: MQTTClient, topic: String, contains text: String, timeout: Double = 20) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let m = c.receive(timeout: 0.1), m.topic == topic else { continue }
            let s = String(decoding: m.payload, as: UTF8.self)
            if s.contains(text) { return s }
        }
        return nil
    }

    @Test func theGatewayRunsUnderItsOwnCredentialAndTheOperatorCommandsWithTheirs() throws {
        let acl = PackageRoot.url.appendingPathComponent("deploy/mosquitto-acl.conf").path
        let broker = try MosquittoBroker(auth: .passwords(Dictionary(uniqueKeysWithValues: Self.users.map { ($0, "pw-\($0)") })),
                                         extraConfig: ["acl_file \(acl)"])
        let dir = try TempDir()
        let secrets = dir.url.appendingPathComponent("secrets")
        try FileManager.default.createDirectory(at: secrets, withIntermediateDirectories: true)
        try "thermal".write(to: secrets.appendingPathComponent("user"), atomically: true, encoding: .utf8)
        try "pw-thermal\n".write(to: secrets.appendingPathComponent("gw.pw"), atomically: true, encoding: .utf8)
        try "pw-op-alice\n".write(to: secrets.appendingPathComponent("op.pw"), atomically: true, encoding: .utf8)

        // topics/thermal.yaml as shipped, with the gateway's credential added.
        let shipped = try PackageRoot.topicsFile("thermal")
        let credentials = "  id: thermal\n  username: {file: \(secrets.path)/user}\n  password: {file: \(secrets.path)/gw.pw}\n"
        try #require(shipped.contains("  id: thermal\n"))
        let mapping = dir.url.appendingPathComponent("thermal.yaml").path
        try shipped.replacingOccurrences(of: "  id: thermal\n", with: credentials)
            .write(toFile: mapping, atomically: true, encoding: .utf8)

        // The operator's key, trusted by the gateway (commands must be signed once the gateway
        // verifies them; harmless before).
        let keys = dir.url.appendingPathComponent("keys").path
        let gen = try EdgeQBinary.run(["keys", "generate", "alice", "--dir", keys])
        try #require(gen.code == 0, "edgeq keys generate: \(gen.stderr)")
        let data = dir.url.appendingPathComponent("data")
        let trusted = data.appendingPathComponent("keys/operator")
        try FileManager.default.createDirectory(at: trusted, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: keys + "/alice.pub", toPath: trusted.appendingPathComponent("alice.pub").path)

        let watcher = try Self.client(broker, "op-alice", subscribing: ["edgeq/#"])
        defer { watcher.stop() }
        let log = dir.url.appendingPathComponent("gw.log").path
        let gwLog = { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        let gw = try ChildProcess(EdgeQBinary.path, ["run", "--config", mapping, "--broker", broker.url, "--data", data.path],
                                  stderrPath: log)
        defer { gw.stop(grace: 10) }
        let online = Self.waitFor(watcher, topic: "edgeq/thermal/status", contains: #""state":"online""#)
        try #require(online != nil, "the gateway's status never came (ACL or credential refused?); its log:\n\(gwLog())\nbroker:\n\(broker.log())")

        // The plant's sensor side and the incumbent, each with its own credential, publish 20
        // steps; the gateway (shadow, no model yet) logs a transition per step after the first.
        let plant = try Self.client(broker, "plant-thermal")
        defer { plant.stop() }
        let incumbent = try Self.client(broker, "incumbent-thermal")
        defer { incumbent.stop() }
        let steps = 20
        for step in 0..<steps {
            let state = """
                {"step":\(step),"episode":0,"hour":8,"weekday":1,"zone_temp":21,"outdoor_temp":5,"occupied":1,\
                "occupied_next_2h":1,"price":0.2,"price_next_2h":0.2,"comfort_low":20,"comfort_high":24,"level":2,\
                "power_kw":3,"energy_cost":0.05,"comfort_violation":0,"reward":-0.05,"truncated":false}
                """
            _ = try plant.publish("plant/thermal/state", state, qos: .atLeastOnce)
            _ = try incumbent.publish("plant/thermal/cmd", #"{"level":2,"step":\#(step)}"#, qos: .atLeastOnce)
            usleep(20_000)
        }

        // The operator's command, signed with the operator's key and sent with the operator's own
        // credential: the broker lets it through (only operators may write edgeq/+/cmd/#) and the
        // gateway answers on edgeq/thermal/reply/mode. (Until the gateway verifies signed commands
        // it answers this envelope with ok:false and without the id, and `edgeq cmd` waits in vain:
        // the test asserts what holds either way — published, delivered, answered.)
        let cmd = try EdgeQBinary.run(["cmd", "mode", "--config", mapping, "--key", keys + "/alice.key", "--set", "mode=shadow",
                                       "--id", "op-1", "--broker", broker.url, "--username", "op-alice",
                                       "--password", "file:\(secrets.path)/op.pw", "--timeout", "3"], timeout: 60)
        #expect(cmd.code != 69, "edgeq cmd could not connect with the operator's credential: \(cmd.stderr)")
        // The same tool with the plant's credential: connected, but the broker drops the command.
        try "pw-plant-thermal\n".write(to: secrets.appendingPathComponent("plant.pw"), atomically: true, encoding: .utf8)
        let refused = try EdgeQBinary.run(["cmd", "mode", "--config", mapping, "--key", keys + "/alice.key", "--set", "mode=shadow",
                                           "--id", "plant-1", "--broker", broker.url, "--username", "plant-thermal",
                                           "--password", "file:\(secrets.path)/plant.pw", "--timeout", "3"], timeout: 60)
        #expect(refused.code == 75, "edgeq cmd with the plant's credential exited \(refused.code): \(refused.stdout) \(refused.stderr)")

        // What the operator's watcher saw: the operator's command, a reply to it, not the plant's command.
        var commands: [String] = []
        var replies = 0
        let drainUntil = Date().addingTimeInterval(10)
        while Date() < drainUntil, let m = watcher.receive(timeout: 0.5) {
            if m.topic == "edgeq/thermal/cmd/mode" { commands.append(String(decoding: m.payload, as: UTF8.self)) }
            if m.topic == "edgeq/thermal/reply/mode" { replies += 1 }
        }
        #expect(commands.contains { $0.contains("op-1") }, "the watcher did not see the operator's command: \(commands)")
        #expect(!commands.contains { $0.contains("plant-1") }, "the plant's credential published a command: \(commands)")
        #expect(replies == 1, "\(replies) replies on edgeq/thermal/reply/mode; the gateway's log:\n\(gwLog())")

        gw.signal(SIGTERM)
        #expect(gw.wait(timeout: 30) == 0, "edgeq run did not exit 0; its log:\n\(gwLog())")
        let offline = Self.waitFor(watcher, topic: "edgeq/thermal/status", contains: #""state":"offline""#, timeout: 5)
        #expect(offline != nil, "no offline status from the stopped gateway")
        let rows = try ExperienceLog.open(dataDirectory: data.path, create: false).transitions(window: .all)
        #expect(rows.count == steps - 1, "\(rows.count) transitions logged for \(steps) plant steps; the gateway's log:\n\(gwLog())")
    }

    /// `--username` needs `--password`, and `--password` takes a source, never the password (which
    /// is not echoed back); an unreadable password file is 66 like an unreadable key.
    @Test func cmdCredentialOptionsAreChecked() throws {
        let dir = try TempDir()
        let keys = dir.url.appendingPathComponent("keys").path
        #expect(try EdgeQBinary.run(["keys", "generate", "alice", "--dir", keys]).code == 0)
        let mapping = PackageRoot.url.appendingPathComponent("topics/thermal.yaml").path
        let base = ["cmd", "mode", "--config", mapping, "--key", keys + "/alice.key", "--set", "mode=shadow",
                    "--broker", "mqtt://127.0.0.1:1", "--timeout", "1"]
        let alone = try EdgeQBinary.run(base + ["--username", "op-alice"])
        #expect(alone.code == 64, "\(alone.stderr)")
        let literal = try EdgeQBinary.run(base + ["--username", "op-alice", "--password", "s3cret-pw"])
        #expect(literal.code == 64)
        #expect(!literal.stderr.contains("s3cret-pw") && !literal.stdout.contains("s3cret-pw"), "the password was echoed: \(literal.stderr)")
        let missing = try EdgeQBinary.run(base + ["--username", "op-alice", "--password", "file:\(dir.url.path)/no-such-file"])
        #expect(missing.code == 66, "\(missing.code): \(missing.stderr)")
    }
}
