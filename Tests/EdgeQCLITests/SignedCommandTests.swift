import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQTestSupport
import EdgeQTrust
import Foundation
import Synchronization
import Testing

/// Signed commands against the real `edgeq run` behind a real mosquitto (issue 12). Before,
/// every state-changing command was obeyed: an anonymous `cmd/mode {"mode":"control"}`, the same
/// payload replayed, a garbage `auth`, and a retained `cmd/mode` delivered after a client took
/// over the gateway's client id. Each exchange below: the attacker's message, the gateway's
/// reply on `reply/<verb>` with its reason, the metric and the audit row; the mode never changes.
@Suite struct SignedCommandTests {
    /// A gateway process with an operator (alice) and a trainer (tom) trusted in its data
    /// directory, an observer on `edgeq/<id>/#`, and a metrics port.
    final class Fixture: @unchecked Sendable {
        // @unchecked Sendable: used by one test thread; the process and clients are thread-safe.
        let id: String
        let dir: TempDir
        let broker: MosquittoBroker
        let data: URL
        let file: String
        let alice: TestKey
        let tom: TestKey
        let mallory: TestKey
        let observer: MQTTClient
        var gateway: ChildProcess?
        var metricsPort: UInt16 = 0
        var runs = 0

        init(id: String, yamlExtra: String = "", observe: String? = nil) throws {
            self.id = id
            dir = try TempDir()
            broker = try MosquittoBroker()
            data = dir.url.appendingPathComponent("data")
            let keys = dir.url.appendingPathComponent("private")
            alice = try TestKey("alice", in: keys, data: data)
            tom = try TestKey("tom", in: keys, trustedAs: .trainer, data: data)
            mallory = try TestKey("mallory", in: keys, trustedAs: nil, data: data)
            file = dir.url.appendingPathComponent("\(id).yaml").path
            try (processMapping(id: id, plant: id, learning: "  retrain: {every_transitions: none}") + yamlExtra)
                .write(toFile: file, atomically: true, encoding: .utf8)
            observer = try plantClient(broker, observe ?? "edgeq/\(id)/#")
        }

        deinit {
            observer.stop()
            if let g = gateway, g.isRunning { g.signal(SIGKILL); _ = g.wait(timeout: 10) }
        }

        /// Starts `edgeq run` and waits for its online status.
        func start() throws {
            runs += 1
            metricsPort = try FreePort.find()
            gateway = try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url, "--data", data.path,
                                                          "--metrics-port", String(metricsPort)],
                                       stderrPath: dir.url.appendingPathComponent("gw\(runs).log").path)
            let online = status { $0["state"] as? String == "online" }
            #expect(online != nil, "the gateway did not come online: \(log())")
        }

        /// SIGTERM and wait (exit 0).
        func stop() {
            guard let g = gateway else { return }
            g.signal(SIGTERM)
            #expect(g.wait(timeout: 30) == 0)
            gateway = nil
        }

        func log() -> String { (try? String(contentsOf: dir.url.appendingPathComponent("gw\(runs).log"), encoding: .utf8)) ?? "" }

        func json(_ m: MQTTMessage) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any] ?? [:]
        }

        /// Messages received and not yet taken by `next`.
        var backlog: [MQTTMessage] = []

        /// The first message (kept from before, or arriving within `timeout`) satisfying `match`;
        /// the others stay in the backlog.
        func next(timeout: Double, _ match: (MQTTMessage) -> Bool) -> MQTTMessage? {
            if let i = backlog.firstIndex(where: match) { return backlog.remove(at: i) }
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                guard let m = observer.receive(timeout: 0.1) else { continue }
                if match(m) { return m }
                backlog.append(m)
            }
            return nil
        }

        /// The next status satisfying `match`.
        func status(timeout: Double = 20, _ match: ([String: Any]) -> Bool) -> [String: Any]? {
            next(timeout: timeout) { $0.topic == "edgeq/\(id)/status" && match(json($0)) }.map(json)
        }

        /// Publishes `payload` on `cmd/<verb>` and returns the reply whose id is `requestID`.
        func send(_ verb: String, _ payload: [UInt8], id requestID: String, retain: Bool = false) throws -> [String: Any] {
            _ = try observer.publish("edgeq/\(id)/cmd/\(verb)", payload, qos: .atLeastOnce, retain: retain)
            return try reply(verb, id: requestID)
        }

        func reply(_ verb: String, id requestID: String?, timeout: Double = 10) throws -> [String: Any] {
            let found = next(timeout: timeout) { m in
                m.topic == "edgeq/\(id)/reply/\(verb)" && (requestID == nil || json(m)["id"] as? String == requestID)
            }
            if let found { return json(found) }
            throw TestFailure("no reply on edgeq/\(id)/reply/\(verb) with id \(requestID ?? "any") within \(timeout) s; log:\n\(log())")
        }

        /// The gateway's Prometheus text.
        func metrics() throws -> String {
            try ChildProcess.run("curl", ["-s", "http://127.0.0.1:\(metricsPort)/metrics"], timeout: 10).stdout
        }

        func metric(_ line: String) throws -> Double {
            for l in try metrics().split(separator: "\n") where l.hasPrefix(line + " ") {
                return Double(l.dropFirst(line.count + 1)) ?? -1
            }
            return -1
        }
    }

    @Test func everyAttackIsRefusedWithItsReasonAndASignedCommandWorks() throws {
        let f = try Fixture(id: "s1")
        try f.start()
        defer { f.stop() }

        // Unsigned, as before issue 12.
        let unsigned = try f.send("mode", Array(#"{"id":"u","mode":"control"}"#.utf8), id: "u")
        #expect(unsigned["ok"] as? Bool == false && unsigned["reason"] as? String == "unsigned", "\(unsigned)")
        #expect((unsigned["error"] as? String)?.contains("edgeq cmd") == true, "the reply says how to sign: \(unsigned)")
        // A garbage auth field.
        let garbage = try f.send("mode", Array(#"{"cmd":"{\"id\":\"g\",\"mode\":\"control\"}","auth":"let me in"}"#.utf8), id: "g")
        #expect(garbage["reason"] as? String == "malformed", "\(garbage)")
        // A key the gateway does not trust.
        let unknown = try f.send("mode", try f.mallory.signed("s1", "mode", #"{"id":"m","mode":"control"}"#), id: "m")
        #expect(unknown["reason"] as? String == "unknown_key" && unknown["key"] as? String == "mallory", "\(unknown)")
        // A trainer key on mode.
        let wrongRole = try f.send("mode", try f.tom.signed("s1", "mode", #"{"id":"t","mode":"control"}"#), id: "t")
        #expect(wrongRole["reason"] as? String == "wrong_role" && wrongRole["key"] as? String == "tom", "\(wrongRole)")
        // The trainer key may retrain (accepted; the log is too small to train on, so it fails later).
        let retrain = try f.send("retrain", try f.tom.signed("s1", "retrain", #"{"id":"r","steps":10}"#), id: "r")
        #expect(retrain["by"] as? String == "tom" && retrain["reason"] == nil, "\(retrain)")
        // A bad signature: alice's signed shadow command altered to control.
        let genuine = String(decoding: try f.alice.signed("s1", "mode", #"{"id":"b","mode":"shadow"}"#), as: UTF8.self)
        let forged = genuine.replacingOccurrences(of: #"\"mode\":\"shadow\""#, with: #"\"mode\":\"control\""#)
        #expect(forged != genuine)
        let bad = try f.send("mode", Array(forged.utf8), id: "b")
        #expect(bad["reason"] as? String == "bad_signature" && bad["key"] as? String == "alice", "\(bad)")
        // Signed for another gateway.
        let other = try CommandEnvelope.sign(command: #"{"id":"o","mode":"control"}"#, topic: "edgeq/s1/cmd/mode", gatewayID: "s2",
                                             keyName: "alice", privateKey: f.alice.privateKey)
        #expect(try f.send("mode", other, id: "o")["reason"] as? String == "bad_signature")
        // A stale timestamp (signed a minute ago).
        let stale = try f.send("mode", try f.alice.signed("s1", "mode", #"{"id":"st","mode":"control"}"#, timestampMs: CommandEnvelope.nowMs() - 60_000), id: "st")
        #expect(stale["reason"] as? String == "stale", "\(stale)")

        // A correctly signed command from `edgeq cmd` works, and says who.
        let cmd = try EdgeQBinary.run(["cmd", "mode", "--config", f.file, "--broker", f.broker.url, "--key", f.alice.keyFile.path,
                                       "--set", "mode=shadow", "--id", "ok1"], timeout: 60)
        #expect(cmd.code == 0, "\(cmd)")
        #expect(cmd.stdout.contains(#""ok":true"#) && cmd.stdout.contains(#""by":"alice""#), "\(cmd.stdout)")
        let byAlice = f.status { $0["by"] as? String == "alice" }
        #expect(byAlice?["mode"] as? String == "shadow" && byAlice?["auth"] as? String == "signed", "\(String(describing: byAlice))")
        #expect(byAlice?["at"] is Double)
        let state = try GatewayState.load(from: f.data)
        #expect(state?.by == "alice" && state?.reason == "command by alice", "\(String(describing: state))")

        // A Python-signed command works (the `cryptography` package, docs/security.md's script).
        let py = try ChildProcess.run("python3", [PackageRoot.url.appendingPathComponent("Tests/EdgeQTrustTests/python/sign_command.py").path,
                                                  "sign", f.alice.keyFile.path, "s1", "edgeq/s1", "mode", #"{"id":"py","mode":"shadow"}"#], timeout: 60)
        let lines = py.stdout.split(separator: "\n").map(String.init)
        #expect(py.code == 0 && lines.count == 2, "\(py)")
        if lines.count == 2 {
            let r = try f.send("mode", Array(lines[1].utf8), id: "py")
            #expect(r["ok"] as? Bool == true && r["by"] as? String == "alice", "\(r)")
        }

        // A replay of an accepted command.
        let once = try f.alice.signed("s1", "mode", #"{"id":"rp","mode":"shadow"}"#)
        #expect(try f.send("mode", once, id: "rp")["ok"] as? Bool == true)
        let replay = try f.send("mode", once, id: "rp")
        #expect(replay["reason"] as? String == "replayed", "\(replay)")

        // The metrics: one series per reason, zeros included.
        let text = try f.metrics()
        for reason in RefusalReason.allCases {
            #expect(text.contains("edgeq_commands_refused_total{reason=\"\(reason.rawValue)\"} "), "no series for \(reason)")
        }
        #expect(try f.metric(#"edgeq_commands_refused_total{reason="unsigned"}"#) == 1)
        #expect(try f.metric(#"edgeq_commands_refused_total{reason="bad_signature"}"#) == 2)
        #expect(try f.metric(#"edgeq_commands_refused_total{reason="replayed"}"#) == 1)
        #expect(try f.metric(#"edgeq_commands_refused_total{reason="retained"}"#) == 0)
        #expect(try f.metric(#"edgeq_commands_total{result="accepted"}"#) == 4)   // retrain, edgeq cmd, python, once

        // The replay is refused after a restart too (the nonce file), and nothing above changed the mode.
        f.stop()
        try f.start()
        let afterRestart = try f.send("mode", once, id: "rp")
        #expect(afterRestart["reason"] as? String == "replayed", "\(afterRestart)")
        #expect(f.status { $0["state"] as? String == "online" }?["mode"] as? String == "shadow")
        f.stop()

        // The audit table holds every command, accepted or refused, with the key and the reason.
        let log = try ExperienceLog.open(dataDirectory: f.data.path, create: false)
        let audit = try log.auditRecords().map(\.record)
        let reasons = audit.compactMap(\.reason)
        for r in ["unsigned", "malformed", "unknown_key", "wrong_role", "bad_signature", "stale", "replayed"] {
            #expect(reasons.contains(r), "no audit row for \(r): \(audit)")
        }
        #expect(audit.filter { $0.result == .accepted }.map { $0.key ?? "" }.sorted() == ["alice", "alice", "alice", "tom"], "\(audit)")
        let accepted = try #require(audit.first { $0.result == .accepted && $0.command?.contains("ok1") == true })
        #expect(accepted.verb == "mode" && accepted.ok == true && accepted.command == #"{"id":"ok1","mode":"shadow"}"#)
        #expect(audit.count == 13, "\(audit.count) audit rows")
        let export = try EdgeQBinary.run(["export", "--data", f.data.path, "--table", "audit", "--format", "csv"])
        #expect(export.code == 0, "\(export.stderr)")
        #expect(export.stdout.hasPrefix("id,gateway_id,time,key,verb,command,result,reason,ok,error\n"))
        #expect(export.stdout.contains(",mallory,mode,") && export.stdout.contains(",refused,unknown_key,"), "\(export.stdout)")
        let jsonl = try EdgeQBinary.run(["export", "--data", f.data.path, "--table", "audit", "--format", "jsonl"])
        let first = try JSONSerialization.jsonObject(with: Data((jsonl.stdout.split(separator: "\n").first ?? "").utf8)) as? [String: Any]
        #expect(first?["reason"] as? String == "unsigned" && first?["command"] as? String == #"{"id":"u","mode":"control"}"#, "\(jsonl.stdout)")
    }

    @Test func aRetainedCommandIsRefusedEvenWhenSignedAndIsCleared() throws {
        let f = try Fixture(id: "s2")
        // Waiting at the broker before the gateway starts: validly signed, fresh, retained.
        _ = try f.observer.publish("edgeq/s2/cmd/mode", try f.alice.signed("s2", "mode", #"{"id":"ret","mode":"control"}"#),
                                   qos: .atLeastOnce, retain: true)
        usleep(200_000)
        try f.start()
        defer { f.stop() }
        let r = try f.reply("mode", id: "ret")
        #expect(r["ok"] as? Bool == false && r["reason"] as? String == "retained", "\(r)")
        #expect(f.status { $0["state"] as? String == "online" }?["mode"] as? String == "shadow")
        #expect(try f.metric(#"edgeq_commands_refused_total{reason="retained"}"#) == 1)
        // Cleared: a new subscriber gets no retained command.
        #expect(try retainedCommand(f, "s2") == nil, "the retained command is still at the broker")
    }

    @Test func aClientIDTakeoverPlusARetainedCommandDoesNotHandOverControl() throws {
        let f = try Fixture(id: "s3")
        try f.start()
        defer { f.stop() }
        // The attacker leaves an unsigned control command retained (refused live as unsigned) …
        let attack = Array(#"{"id":"take","mode":"control"}"#.utf8)
        _ = try f.observer.publish("edgeq/s3/cmd/mode", attack, qos: .atLeastOnce, retain: true)
        #expect(try f.reply("mode", id: "take")["reason"] as? String == "unsigned")
        // … and connects with the gateway's client id and a clean session: the broker drops the
        // gateway's session; the gateway reconnects without one and subscribes anew, so the broker
        // sends it the retained command.
        var cfg = try MQTTConfiguration(url: f.broker.url, clientID: "edgeq-s3")
        cfg.session = .clean
        let thief = try MQTTClient(cfg)
        thief.start()
        try thief.waitUntilConnected(timeout: 10)
        thief.stop()
        let r = try f.reply("mode", id: "take", timeout: 30)
        #expect(r["ok"] as? Bool == false && r["reason"] as? String == "retained", "\(r)")
        #expect(f.status { $0["state"] as? String == "online" }?["mode"] as? String == "shadow")
        #expect(try GatewayState.load(from: f.data)?.mode != .control)
        // The clear follows the reply on the gateway's connection, which the takeover has just
        // cut and re-made (the gateway clears once more 2 s later for that reason): look again
        // for a while before calling it kept.
        var kept = try retainedCommand(f, "s3")
        for _ in 0..<8 where kept != nil {
            usleep(1_000_000)
            kept = try retainedCommand(f, "s3")
        }
        #expect(kept == nil, "the retained command is still at the broker")
    }

    struct TestFailure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    /// The retained message on `edgeq/<id>/cmd/mode`, if the broker still holds one.
    func retainedCommand(_ f: Fixture, _ id: String) throws -> MQTTMessage? {
        let probe = try plantClient(f.broker, "edgeq/\(id)/cmd/mode")
        defer { probe.stop() }
        let deadline = Date().addingTimeInterval(1.5)
        while Date() < deadline {
            if let m = probe.receive(timeout: 0.1), m.retain, !m.payload.isEmpty { return m }
        }
        return nil
    }

    @Test func withoutTrustedKeysCommandsAreRefusedWithHowToAddOne() throws {
        let dir = try TempDir()
        let broker = try MosquittoBroker()
        let file = dir.url.appendingPathComponent("s4.yaml").path
        try processMapping(id: "s4", plant: "s4", learning: "  retrain: {every_transitions: none}").write(toFile: file, atomically: true, encoding: .utf8)
        let obs = try plantClient(broker, "edgeq/s4/#")
        defer { obs.stop() }
        let gw = try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url, "--data", dir.url.appendingPathComponent("data").path],
                                  stderrPath: dir.url.appendingPathComponent("gw.log").path)
        defer { gw.signal(SIGTERM); _ = gw.wait(timeout: 30) }
        var reply: [String: Any]?
        let deadline = Date().addingTimeInterval(20)
        while reply == nil && Date() < deadline {
            _ = try obs.publish("edgeq/s4/cmd/mode", #"{"id":"n","mode":"control"}"#, qos: .atLeastOnce)
            let until = Date().addingTimeInterval(1)
            while Date() < until, reply == nil {
                if let m = obs.receive(timeout: 0.1), m.topic == "edgeq/s4/reply/mode" {
                    reply = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any]
                }
            }
        }
        #expect(reply?["reason"] as? String == "no_trusted_keys", "\(String(describing: reply))")
        #expect((reply?["error"] as? String)?.contains("edgeq keys generate") == true)
        let log = (try? String(contentsOf: dir.url.appendingPathComponent("gw.log"), encoding: .utf8)) ?? ""
        #expect(log.contains("no key is trusted for commands"), "no warning at start: \(log)")
    }

    @Test func authNoneObeysUnsignedCommandsAndSaysSo() throws {
        let f = try Fixture(id: "s5", yamlExtra: "\ncontrol_plane:\n  auth: none\n")
        try f.start()
        defer { f.stop() }
        let r = try f.send("mode", Array(#"{"id":"lab","mode":"shadow"}"#.utf8), id: "lab")
        #expect(r["ok"] as? Bool == true && r["by"] as? String == "none", "\(r)")
        let s = f.status { $0["by"] as? String == "none" }
        #expect(s?["auth"] as? String == "none", "\(String(describing: s))")
        #expect(f.log().contains("control_plane.auth is none"), "no warning at start: \(f.log())")
    }

    /// 20,000 forged commands (alice's name, fresh timestamps and nonces, signatures that verify
    /// for nothing) against a gateway deciding on a steady sensor stream: decisions keep flowing
    /// during the flood, nothing is obeyed, the checks are rate-limited, the mode does not
    /// change, and every command is refused and accounted for (refused, or dropped unread). The
    /// flood comes in 16 half-second rounds of 2,500 commands a second, each right after a
    /// baseline of the same length; the p99 of the plant's round trip (state message → the
    /// gateway's decision report) with and without the flood is printed (the 1.5× bound is a
    /// figure for a benchmark, not a test on a shared machine).
    @Test func aFloodOfForgedCommandsDoesNotDelayDecisions() throws {
        let f = try Fixture(id: "fl", observe: "edgeq/fl/status")
        try f.start()
        defer { f.stop() }
        func client(_ name: String) throws -> MQTTClient {
            var c = try MQTTConfiguration(url: f.broker.url, clientID: "\(name)-\(UUID().uuidString.prefix(6))")
            c.inboundCapacity = 100_000
            let m = try MQTTClient(c)
            return m
        }
        let plant = try client("plant")
        defer { plant.stop() }
        try plant.subscribe("edgeq/fl/shadow", qos: .atMostOnce)
        plant.start()
        try plant.waitUntilConnected(timeout: 10)
        let flooder = try client("flooder")
        defer { flooder.stop() }
        flooder.start()
        try flooder.waitUntilConnected(timeout: 10)
        usleep(300_000)

        var step = 0
        var lastTick = -1
        /// Round trips for `seconds`: publish a state, wait for the decision report of its tick.
        func sample(seconds: Double, into out: inout [Double]) throws {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                let t0 = MonotonicClock.nanoseconds()
                _ = try plant.publish("plant/fl/state", "{\"step\":\(step),\"x\":\(Double(step % 9) - 4)}", qos: .atMostOnce)
                step += 1
                var got = false
                while !got, let m = plant.receive(timeout: 1) {
                    let tick = ((try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any])?["tick"] as? Int ?? -1
                    if lastTick >= 0 && tick == lastTick + 1 { out.append(Double(MonotonicClock.nanoseconds() - t0) / 1e3) }
                    lastTick = tick
                    got = tick >= 0
                }
                usleep(1_000)
            }
        }
        let badSignature = Data(repeating: 7, count: 64).base64EncodedString()
        let sent = Atomic<Int>(0)
        /// `count` forged commands spread over `seconds` (a chunk every 2 ms), on another thread.
        /// Made before the round starts (fresh timestamps and nonces), so the flooder only sends.
        func flood(count: Int, seconds: Double) -> DispatchSemaphore {
            let ts = CommandEnvelope.nowMs()
            let payloads: [[UInt8]] = (0..<count).map { i in
                let cmd = #"{\"id\":\"f\#(i)\",\"mode\":\"control\"}"#
                return Array(#"{"cmd":"\#(cmd)","auth":{"key":"alice","ts_ms":\#(ts),"nonce":"\#(CommandEnvelope.makeNonce())","sig":"\#(badSignature)"}}"#.utf8)
            }
            let done = DispatchSemaphore(value: 0)
            let thread = Thread {
                let chunks = max(1, Int(seconds / 0.002))
                let start = Date()
                var i = 0
                for c in 0..<chunks {
                    let upTo = count * (c + 1) / chunks
                    while i < upTo {
                        if (try? flooder.publish("edgeq/fl/cmd/mode", payloads[i], qos: .atMostOnce)) != nil { sent.add(1, ordering: .relaxed) }
                        i += 1
                    }
                    let wait = start.addingTimeInterval(Double(c + 1) * seconds / Double(chunks)).timeIntervalSinceNow
                    if wait > 0 { usleep(UInt32(wait * 1e6)) }
                }
                done.signal()
            }
            thread.start()
            return done
        }
        /// Refused + dropped (every reason's series summed) + accepted.
        func accounted() throws -> Int {
            var n = 0.0
            for l in try f.metrics().split(separator: "\n")
            where l.hasPrefix("edgeq_commands_refused_total{") || l.hasPrefix("edgeq_commands_dropped_total ") || l.hasPrefix("edgeq_commands_total{") {
                n += Double(l.split(separator: " ").last ?? "0") ?? 0
            }
            return Int(n)
        }

        // 16 pairs of half-second segments, each pair a baseline and then a flood of 1,250
        // commands (2,500 a second): load that drifts over the run hits both sides of a pair.
        func p99(_ v: [Double]) -> Double { v.isEmpty ? .nan : v.sorted()[Int(0.99 * Double(v.count - 1))] }
        var warmUp: [Double] = []
        try sample(seconds: 1, into: &warmUp)
        /// The gateway's own decision histogram (cumulative counts by bound).
        func histogram() throws -> [Double] {
            try f.metrics().split(separator: "\n").filter { $0.hasPrefix("edgeq_decision_seconds_bucket") }
                .map { Double($0.split(separator: " ").last ?? "0") ?? 0 }
        }
        var hb: [Double] = [], hf: [Double] = []
        func add(_ a: inout [Double], _ from: [Double], _ to: [Double]) {
            if a.isEmpty { a = [Double](repeating: 0, count: to.count) }
            for i in to.indices where i < from.count { a[i] += to[i] - from[i] }
        }
        var baseline: [Double] = [], flooded: [Double] = [], ratios: [Double] = []
        for _ in 0..<16 {
            var b: [Double] = [], fl: [Double] = []
            let h0 = try histogram()
            try sample(seconds: 0.5, into: &b)
            let h1 = try histogram()
            let done = flood(count: 1_250, seconds: 0.5)
            try sample(seconds: 0.5, into: &fl)
            let h2 = try histogram()
            add(&hb, h0, h1)
            add(&hf, h1, h2)
            #expect(done.wait(timeout: .now() + 30) == .success)
            // Let the gateway work off the round before the next baseline.
            let target = sent.load(ordering: .relaxed)
            #expect(eventually(timeout: 30) { ((try? accounted()) ?? 0) >= target },
                    "not every forged command was accounted for: \((try? accounted()) ?? -1) of \(target) sent; the gateway's command series: \(((try? f.metrics()) ?? "").split(separator: "\n").filter { $0.hasPrefix("edgeq_commands_") })")
            baseline += b
            flooded += fl
            if b.count >= 50 && fl.count >= 50 { ratios.append(p99(fl) / p99(b)) }
        }
        #expect(sent.load(ordering: .relaxed) == 20_000)
        // Decisions kept flowing during the flood (a stuck or starved decision path would leave
        // the flooded segments without round trips).
        #expect(baseline.count >= 200 && flooded.count >= 200,
                "too few round trips: \(baseline.count) without, \(flooded.count) with the flood")
        // The latency figure is printed, not asserted: speed is judged by benchmarks, and this
        // suite runs beside others on two cores (docs/security.md, "Flood"). In isolation it
        // measured 0.88–1.26× against the bound of 1.5×.
        guard !baseline.isEmpty, !flooded.isEmpty else { return }
        let ratio = p99(flooded) / p99(baseline)
        let pairs = ratios.isEmpty ? Double.nan : ratios.sorted()[ratios.count / 2]
        let text = "decision round trip p99 during the flood / without: \(String(format: "%.2f", ratio)) (\(Int(p99(flooded))) / \(Int(p99(baseline))) µs over \(flooded.count) / \(baseline.count) round trips; median of \(ratios.count) pairs \(String(format: "%.2f", pairs)))"
        // Nothing was obeyed; the checks were rate-limited; the mode did not change.
        #expect(try f.metric(#"edgeq_commands_total{result="accepted"}"#) == 0)
        #expect(try f.metric(#"edgeq_commands_refused_total{reason="rate_limited"}"#) > 10_000)
        #expect(try f.metric(#"edgeq_commands_refused_total{reason="bad_signature"}"#) >= 1)
        #expect(f.status { $0["state"] as? String == "online" }?["mode"] as? String == "shadow")
        print("flood: histogram without \(hb) with \(hf)")
        print("flood: \(text); dropped \(try f.metric("edgeq_commands_dropped_total"))")
    }
}
