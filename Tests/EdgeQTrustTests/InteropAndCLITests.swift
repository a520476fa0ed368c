// The envelope across languages (Python's `cryptography` signs, Swift verifies, and back) and
// the real `edgeq` process: `keys generate`, `cmd --print-only`, and `cmd` against a real
// mosquitto with a responder that verifies like the gateway and answers on reply/<verb>.
import EdgeQMQTT
import EdgeQTestSupport
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Logging
import Testing

@Suite struct InteropTests {
    @Test func pythonSignedCommandVerifiesInSwift() throws {
        let f = try TrustFixture()
        let v = try f.verifier()
        let command = #"{"id": "prüfung ✓ 😀", "mode": "control"}"#
        let r = try PythonSigner.run(["sign", f.keyFile("alice"), TrustFixture.gatewayID, TrustFixture.prefix, "mode", command])
        #expect(r.code == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 2)
        guard lines.count == 2 else { return }
        #expect(lines[0] == TrustFixture.topic("mode"))
        let verdict = v.verify(topic: lines[0], verb: "mode", payload: Array(lines[1].utf8), retained: false)
        guard case .accepted(let a) = verdict else { Issue.record("refused: \(verdict)"); return }
        #expect(a.key == "alice")
        let parsed = try JSONSerialization.jsonObject(with: Data(a.command)) as? [String: Any]
        #expect(parsed?["id"] as? String == "prüfung ✓ 😀")
        #expect(parsed?["mode"] as? String == "control")
        // And Python's old timestamp is refused like Swift's.
        let old = try PythonSigner.run(["sign", f.keyFile("alice"), TrustFixture.gatewayID, TrustFixture.prefix, "mode", "{}", String(CommandEnvelope.nowMs() - 60_000)])
        let oldLines = old.stdout.split(separator: "\n").map(String.init)
        if oldLines.count == 2, case .refused(let why) = v.verify(topic: oldLines[0], verb: "mode", payload: Array(oldLines[1].utf8), retained: false) {
            #expect(why.reason == .stale)
        } else {
            Issue.record("an old Python-signed command was not refused: \(old)")
        }
    }

    @Test func swiftSignedCommandVerifiesInPython() throws {
        let f = try TrustFixture()
        let cmd = #"{"id":"ünï \"x\" 😀","steps":2000}"#
        let p = try f.signed("retrain", cmd)
        let r = try PythonSigner.run(["verify", f.publicKeyFile("alice"), TrustFixture.gatewayID, TrustFixture.topic("retrain"), String(decoding: p, as: UTF8.self)])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout.contains("ünï"))
        // Python refuses it for another gateway (the check in Python can fail too).
        let other = try PythonSigner.run(["verify", f.publicKeyFile("alice"), "gw2", TrustFixture.topic("retrain"), String(decoding: p, as: UTF8.self)])
        #expect(other.code == 1)
        #expect(other.stderr.contains("InvalidSignature"))
    }
}

@Suite struct TrustCLITests {
    func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }

    @Test func keysGenerateWritesMode0600AndRefusesToOverwrite() throws {
        let dir = try TempDir()
        let keys = dir.url.appendingPathComponent("keys").path
        let r = try EdgeQBinary.run(["keys", "generate", "alice", "--dir", keys])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(try mode(keys + "/alice.key") == 0o600)
        #expect(try mode(keys + "/alice.pub") == 0o644)
        let key = try String(contentsOfFile: keys + "/alice.key", encoding: .utf8)
        #expect(Data(base64Encoded: key.trimmingCharacters(in: .newlines))?.count == 32)
        let again = try EdgeQBinary.run(["keys", "generate", "alice", "--dir", keys])
        #expect(again.code == 73)
        #expect(again.stderr.contains("alice.key: the file exists"))
        #expect(try String(contentsOfFile: keys + "/alice.key", encoding: .utf8) == key)
        #expect(try EdgeQBinary.run(["keys", "generate", "none", "--dir", keys]).code == 64)
    }

    @Test func cmdPrintOnlyOutputVerifies() throws {
        let f = try TrustFixture()
        let mapping = f.root.url.appendingPathComponent("gw1.yaml")
        try TrustFixture.mappingText().write(to: mapping, atomically: true, encoding: .utf8)
        let r = try EdgeQBinary.run(["cmd", "mode", "--config", mapping.path, "--key", f.keyFile("alice"),
                                     "--set", "mode=control", "--id", "op-1", "--print-only"])
        #expect(r.code == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        guard lines.count == 2 else { Issue.record("expected topic and payload: \(r.stdout)"); return }
        #expect(lines[0] == "edgeq/gw1/cmd/mode")
        let verdict = try f.verifier().verify(topic: lines[0], verb: "mode", payload: Array(lines[1].utf8), retained: false)
        guard case .accepted(let a) = verdict else { Issue.record("refused: \(verdict)"); return }
        #expect(String(decoding: a.command, as: UTF8.self) == #"{"id":"op-1","mode":"control"}"#)
        // Typed fields: numbers stay numbers.
        let n = try EdgeQBinary.run(["cmd", "retrain", "--config", mapping.path, "--key", f.keyFile("tom"),
                                     "--set", "steps=2000", "--set", "seconds=1.5", "--id", "t", "--print-only"])
        #expect(n.stdout.contains(#"{\"id\":\"t\",\"steps\":2000,\"seconds\":1.5}"#), "\(n.stdout)")
        // Python verifies what edgeq printed.
        let py = try PythonSigner.run(["verify", f.publicKeyFile("alice"), "gw1", lines[0], lines[1]])
        #expect(py.code == 0, "\(py.stderr)")
    }

    @Test func cmdBrokerUnreachableExits69() throws {
        let f = try TrustFixture()
        let port = try FreePort.find()   // nobody listens there
        let mapping = f.root.url.appendingPathComponent("gw1.yaml")
        try TrustFixture.mappingText(broker: "mqtt://127.0.0.1:\(port)").write(to: mapping, atomically: true, encoding: .utf8)
        let r = try EdgeQBinary.run(["cmd", "mode", "--config", mapping.path, "--key", f.keyFile("alice"), "--set", "mode=shadow", "--timeout", "2"])
        #expect(r.code == 69, "\(r.stdout) \(r.stderr)")
        #expect(r.stderr.contains("cannot reach the broker"))
    }

    /// A responder standing in for the gateway's control plane (the real one: SignedCommandTests): verifies with
    /// `CommandVerifier` and answers `{"id", "ok", "by"|"error", "reason"}` on reply/<verb>.
    final class Responder: Sendable {
        let client: MQTTClient
        init(broker: MosquittoBroker, user: String, password: String, verifier: CommandVerifier) throws {
            var c = try MQTTConfiguration(url: broker.url, clientID: "responder-\(UUID().uuidString.prefix(6))")
            c.username = user
            c.password = Secret(password)
            var logger = Logger(label: "responder")
            logger.logLevel = .warning
            let client = try MQTTClient(c, logger: logger)
            self.client = client
            client.start { message in
                let verb = String(message.topic.split(separator: "/").last ?? "")
                var reply: [String: Any] = [:]
                switch verifier.verify(topic: message.topic, verb: verb, payload: message.payload, retained: message.retain) {
                case .accepted(let a):
                    let cmd = (try? JSONSerialization.jsonObject(with: Data(a.command))) as? [String: Any] ?? [:]
                    reply = ["id": cmd["id"] ?? NSNull(), "ok": verb == "mode", "by": a.key]
                case .refused(let r):
                    let cmd = r.command.flatMap { try? JSONSerialization.jsonObject(with: Data($0)) } as? [String: Any] ?? [:]
                    reply = ["id": cmd["id"] ?? NSNull(), "ok": false, "error": r.message, "reason": r.reason.rawValue]
                }
                if let data = try? JSONSerialization.data(withJSONObject: reply) {
                    _ = try? client.publish("edgeq/gw1/reply/\(verb)", Array(data), qos: .atLeastOnce)
                }
                return true
            }
            try client.waitUntilConnected(timeout: 10)
            try client.subscribe("edgeq/gw1/cmd/+", qos: .atLeastOnce)
        }
        deinit { client.stop() }
    }

    @Test func cmdSendsWithTheMappingsCredentialsAndPrintsTheReply() throws {
        let f = try TrustFixture()
        let broker = try MosquittoBroker(auth: .passwords(["gw": "gw-pw", "ops": "ops-pw"]))
        let responder = try Responder(broker: broker, user: "gw", password: "gw-pw", verifier: try f.verifier())
        _ = responder
        let secret = f.root.url.appendingPathComponent("ops.pw")
        try "ops-pw\n".write(to: secret, atomically: true, encoding: .utf8)
        let mapping = f.root.url.appendingPathComponent("gw1.yaml")
        let text = TrustFixture.mappingText(broker: broker.url)
            .replacingOccurrences(of: "  brokers: [\(broker.url)]", with: "  brokers: [\(broker.url)]\n  username: {env: EDGEQ_TEST_USER}\n  password: {file: \(secret.path)}")
        try text.write(to: mapping, atomically: true, encoding: .utf8)
        func cmd(_ args: [String]) throws -> (code: Int32, stdout: String, stderr: String) {
            try ChildProcess.run(EdgeQBinary.path, ["cmd"] + args + ["--config", mapping.path, "--timeout", "10"],
                                 timeout: 60, environment: ["EDGEQ_TEST_USER": "ops"])
        }

        let ok = try cmd(["mode", "--key", f.keyFile("alice"), "--set", "mode=control", "--id", "a1"])
        #expect(ok.code == 0, "\(ok.stdout) \(ok.stderr)")
        #expect(ok.stdout.contains("\"by\":\"alice\""), "\(ok.stdout)")
        #expect(ok.stdout.contains("\"id\":\"a1\""))

        // A reply with ok:false exits 1 (here: the responder's verb it does not support).
        let notOK = try cmd(["promote", "--key", f.keyFile("alice"), "--id", "p1"])
        #expect(notOK.code == 1, "\(notOK.stdout) \(notOK.stderr)")
        #expect(notOK.stdout.contains("\"ok\":false"))

        // A trainer key on mode: refused with its reason, exit 1.
        let wrong = try cmd(["mode", "--key", f.keyFile("tom"), "--set", "mode=control", "--id", "t1"])
        #expect(wrong.code == 1)
        #expect(wrong.stdout.contains("wrong_role"), "\(wrong.stdout)")
    }

    @Test func cmdWithoutAnAnswerExits75() throws {
        let f = try TrustFixture()
        let broker = try MosquittoBroker()
        let mapping = f.root.url.appendingPathComponent("gw1.yaml")
        try TrustFixture.mappingText(broker: broker.url).write(to: mapping, atomically: true, encoding: .utf8)
        let r = try EdgeQBinary.run(["cmd", "mode", "--config", mapping.path, "--key", f.keyFile("alice"), "--set", "mode=shadow", "--timeout", "1"])
        #expect(r.code == 75, "\(r.stdout) \(r.stderr)")
        #expect(r.stderr.contains("no reply"))
    }
}
