import ArgumentParser
import EdgeQGateway
import EdgeQMQTT
import EdgeQReport
import EdgeQSimulators
import EdgeQSystem
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Logging

/// `edgeq demo`: the whole story on one machine, in a few minutes.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Broker, thermal plant with its PI incumbent, gateway in shadow; retrain, switch to control, compare.",
        discussion: """
            1. starts a local broker from deploy/mosquitto-demo.conf and the gateway (topics/thermal.yaml) in shadow mode;
            2. runs the thermal plant with its PI incumbent (20% ±1-level dither) for --shadow-weeks of 5-minute steps, \
            while the gateway logs every transition;
            3. sends cmd/retrain and follows <prefix>/retrain;
            4. when the candidate passes its checks: evaluates the PI alone for --eval-weeks on fresh weather, then \
            promotes the candidate, switches to control (cmd/mode) and runs the same weeks again with EdgeQ in charge;
            every command is signed with an operator key the demo generates for itself (DATA/demo-operator/demo-operator.key, \
            trusted as DATA/keys/operator/demo-operator.pub), as `edgeq cmd` signs;
            5. prints incumbent vs EdgeQ: energy cost, comfort violation, reward, and writes the run report (edgeq report) \
            and prints its path. Everything it started is stopped at the end.
            topics/ and deploy/ are found in $EDGEQ_SHARE, else ../share/edgeq beside the executable (make install, \
            the .deb), else the checkout; when none has them it exits 66 naming the places it looked.
            """
    )

    @Option(help: "The mapping file (default: topics/thermal.yaml of the installed files, $EDGEQ_SHARE, or this checkout).")
    var config: String?

    @Option(help: "Weeks of shadow logging before the retrain.")
    var shadowWeeks: Int = 6

    @Option(help: "Weeks of evaluation, for the incumbent and for EdgeQ each.")
    var evalWeeks: Int = 2

    @Option(help: "Seed of the logged weeks (the evaluation uses seed + 1000).")
    var seed: UInt64 = 1

    @Option(help: "Share of the incumbent's decisions moved ±1 level while logging.")
    var dither: Double = 0.2

    @Option(help: "Plant steps per second while logging (the gateway keeps up far beyond this).")
    var rate: Double = 2000

    @Option(help: "Gradient updates of the retrain (default: the mapping file's).")
    var updates: Int?

    @Option(help: "Keep the data directory here instead of a temporary one.")
    var data: String?

    func validate() throws {
        if shadowWeeks < 1 || evalWeeks < 1 { throw ValidationError("--shadow-weeks and --eval-weeks must be at least 1") }
        if !(0...1).contains(dither) { throw ValidationError("--dither must be between 0 and 1") }
        if let updates, updates < 1 { throw ValidationError("--updates must be at least 1") }
    }

    func run() throws {
        do {
            try runDemo()
        } catch let e as CLIFailure {
            throw e
        } catch let e as ExitCode {
            throw e
        } catch {
            // The broker, the gateway, the plant or an MQTT client could not start or run.
            throw CLIFailure(.unavailable, "demo: \(error)")
        }
    }

    func runDemo() throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .warning
            return h
        }
        // The shipped files, wherever edgeq is installed (SharedFiles.swift); a clear error
        // naming the places searched when they are nowhere.
        let configPath: String
        let brokerConfig: URL
        do {
            configPath = try config ?? SharedFiles.locate("topics/thermal.yaml").path
            brokerConfig = try SharedFiles.locate("deploy/mosquitto-demo.conf")
        } catch let e as SharedFiles.NotFound {
            throw CLIFailure(.noInput, "demo: \(e)")
        }
        let map = try loadMapping(configPath)
        let temp = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-demo-\(getpid())")
        let dataDir = data.map { URL(fileURLWithPath: $0) } ?? temp
        try? FileManager.default.removeItem(at: temp)
        defer { if data == nil { try? FileManager.default.removeItem(at: temp) } }
        let stepsPerWeek = 7 * 24 * 12

        say("EdgeQ demo: thermal zone, PI incumbent, \(shadowWeeks) weeks of shadow data, \(evalWeeks) weeks of evaluation")
        let broker = try MosquittoBroker(configFile: brokerConfig.path)
        defer { broker.stop() }
        say("broker      \(broker.url) (\(brokerConfig.path))")

        // An operator key of the demo's own: the gateway obeys only signed commands.
        let operatorKey = try Self.demoOperatorKey(dataDirectory: dataDir)
        say("operator    key '\(Self.operatorName)' (\(dataDir.path)/demo-operator/\(Self.operatorName).key, trusted in keys/operator/)")

        var options = GatewayOptions(map: map)
        options.broker = broker.url
        options.dataDirectory = dataDir.path
        options.mode = .shadow
        options.scheduleEnabled = false
        let gateway = try Gateway(options, logger: Logger(label: "edgeq.demo.gateway"))
        let gatewayDone = DispatchSemaphore(value: 0)
        let gatewayThread = Thread {
            do { try gateway.run() } catch { FileHandle.standardError.write(Data("gateway: \(error)\n".utf8)) }
            gatewayDone.signal()
        }
        gatewayThread.start()
        defer {
            gateway.stop(wait: false)
            _ = gatewayDone.wait(timeout: .now() + 30)
        }
        let watcher = SignalWatcher { _ in
            gateway.stop(wait: false)
            broker.stop()
            Foundation.exit(130)
        }
        defer { withExtendedLifetime(watcher) {} }

        let prefix = map.gateway.prefix
        var ccfg = try MQTTConfiguration(url: broker.url, clientID: "edgeq-demo-operator")
        ccfg.inboundCapacity = 10_000
        let operatorClient = try MQTTClient(ccfg)
        defer { operatorClient.stop() }
        try operatorClient.subscribe("\(prefix)/retrain", qos: .atLeastOnce)
        try operatorClient.subscribe("\(prefix)/reply/+", qos: .atLeastOnce)
        operatorClient.start()
        try operatorClient.waitUntilConnected(timeout: 10)
        say("gateway     \(map.gateway.id) in shadow mode, data in \(dataDir.path)")

        // 1. Shadow logging.
        let logged = try runPlant(broker: broker, seed: seed, steps: shadowWeeks * stepsPerWeek, dither: dither, rate: rate,
                                  prefix: prefix, label: "[1/4] shadow logging") {
            "\(gateway.logMetrics.rowsWritten) transitions logged"
        }
        let waitUntil = Date().addingTimeInterval(5)
        while gateway.logMetrics.queueDepth > 0 && Date() < waitUntil { usleep(50_000) }
        say("            PI incumbent while logging: \(logged.scoreText)")

        // 2. Retrain.
        var request = "{\"id\":\"demo-retrain\""
        if let updates { request += ",\"steps\":\(updates)" }
        request += "}"
        _ = try operatorClient.publish("\(prefix)/cmd/retrain", try signed(map: map, verb: "retrain", request, key: operatorKey), qos: .atLeastOnce)
        var result: [String: Any]?
        let deadline = Date().addingTimeInterval(600)
        while result == nil && Date() < deadline {
            guard let m = operatorClient.receive(timeout: 0.5) else { continue }
            let o = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any] ?? [:]
            if m.topic.hasSuffix("/reply/retrain"), o["ok"] as? Bool == false {
                throw CLIFailure(.unavailable, "demo: the gateway refused the retrain: \(o["error"] ?? "?")")
            }
            guard m.topic == "\(prefix)/retrain" else { continue }
            switch o["phase"] as? String {
            case "training":
                progress(String(format: "[2/4] retraining: %d / %d updates%@", (o["updates"] as? Int) ?? 0, (o["of"] as? Int) ?? 0,
                                (o["td_loss"] as? Double).map { String(format: ", TD loss %.4f", $0) } ?? ""))
            case "checking": progress("[2/4] retraining: checking the candidate")
            case "done", "failed": result = o
            default: break
            }
        }
        endProgress()
        guard let result else { throw CLIFailure(.unavailable, "demo: no retraining result within 10 minutes") }
        let verdict = result["verdict"] as? String ?? "failed"
        for c in result["checks"] as? [[String: Any]] ?? [] {
            let mark = ["passed": "pass", "failed": "FAIL", "not_applicable": "n/a ", "advisory": "adv "][c["status"] as? String ?? ""] ?? "?   "
            say("            \(mark)  \(c["name"] ?? ""): \(c["note"] ?? "")")
        }
        guard verdict == "passed", let version = result["version"] as? Int else {
            say("the candidate did not pass its checks (\(result["error"] ?? (result["reasons"] as? [String])?.joined(separator: "; ") ?? "")): the incumbent stays in charge.")
            throw ExitCode(1)
        }
        say("            candidate v\(version) passed its checks (\(result["rows"] ?? "?") rows, \(result["updates"] ?? "?") updates, \(result["seconds"] ?? "?") s)")

        // 3. The incumbent alone on fresh weather.
        let evalSeed = seed + 1000
        let evalSteps = evalWeeks * stepsPerWeek
        let incumbent = try runPlant(broker: broker, seed: evalSeed, steps: evalSteps, dither: 0, rate: 0, prefix: prefix,
                                     label: "[3/4] evaluating the PI incumbent") { "" }

        // 4. Promote, hand over control, the same weeks again.
        if gateway.servedVersion != version {
            try ask(operatorClient, map: map, key: operatorKey, verb: "promote", body: "{\"id\":\"demo-promote\",\"version\":\(version)}")
        }
        try ask(operatorClient, map: map, key: operatorKey, verb: "mode", body: #"{"id":"demo-mode","mode":"control"}"#)
        usleep(300_000)
        let edgeq = try runPlant(broker: broker, seed: evalSeed, steps: evalSteps, dither: 0, rate: 0, prefix: prefix,
                                 label: "[4/4] evaluating EdgeQ in control") { "" }
        try? ask(operatorClient, map: map, key: operatorKey, verb: "mode", body: #"{"id":"demo-back","mode":"shadow"}"#)

        // The table.
        func parse(_ r: SimulatorResult) -> [String: Double] {
            let o = (try? JSONSerialization.jsonObject(with: Data(r.scoreJSON))) as? [String: Any] ?? [:]
            return o.compactMapValues { ($0 as? NSNumber)?.doubleValue }
        }
        let a = parse(incumbent)
        let b = parse(edgeq)
        say("")
        say("\(evalWeeks) weeks, same weather and schedule (seed \(evalSeed)):")
        say("                          PI incumbent        EdgeQ    change")
        func row(_ name: String, _ key: String, _ fmt: String, absolute: Bool = false) {
            let x = a[key] ?? .nan, y = b[key] ?? .nan
            // A share of almost nothing says nothing: comfort violation changes are shown in K·h.
            let change = absolute ? String(format: "%+.3f", y - x) : (x != 0 ? String(format: "%+.1f%%", (y - x) / abs(x) * 100) : "—")
            say(name.padding(toLength: 24, withPad: " ", startingAt: 0)
                + String(format: fmt, x).leftPad(14) + String(format: fmt, y).leftPad(13) + change.leftPad(10))
        }
        row("energy cost", "energy_cost", "%.2f")
        row("comfort violation (K·h)", "comfort_violation", "%.3f", absolute: true)
        row("energy (kWh)", "energy_kwh", "%.1f")
        row("reward", "total_reward", "%.2f")
        say("steps decided by EdgeQ: \(edgeq.gatewaySteps) of \(edgeq.steps); by the incumbent in the guard's control blocks: "
            + "\(edgeq.incumbentSteps - edgeq.commandTimeouts); after a missed command: \(edgeq.commandTimeouts)")
        if let status = latestStatus(operatorClient, prefix: prefix, broker: broker) { say("gateway status: \(status)") }
        try writeReport(gateway: gateway, dataDirectory: dataDir)
    }

    /// The run report (`edgeq report`) of the demo's data directory, with the gateway's metrics
    /// as they are now: DATA/report.html with --data, else a file beside the temporary directory
    /// (which is removed at the end). Prints its path.
    func writeReport(gateway: Gateway, dataDirectory: URL) throws {
        let waitUntil = Date().addingTimeInterval(5)
        while gateway.logMetrics.queueDepth > 0 && Date() < waitUntil { usleep(50_000) }
        usleep(200_000)  // the writer's last group commit
        let target = data != nil ? dataDirectory.appendingPathComponent("report.html")
            : FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-demo-report-\(getpid()).html")
        do {
            try RunReport(dataDirectory: dataDirectory, metricsText: gateway.renderMetrics()).write(to: target)
        } catch {
            throw CLIFailure(.io, "demo: cannot write the run report \(target.path): \(error)")
        }
        say("run report  \(target.path)")
    }

    /// Runs the thermal plant on its own thread and shows progress until it ends.
    func runPlant(broker: MosquittoBroker, seed: UInt64, steps: Int, dither: Double, rate: Double, prefix: String,
                  label: String, extra: @escaping () -> String) throws -> SimulatorResult {
        var o = SimulatorOptions(plant: .thermal, broker: broker.url)
        o.seed = seed
        o.steps = steps
        o.dither = dither
        o.rate = rate
        o.gatewayPrefix = prefix
        o.keepStepWithGateway = true
        o.commandTimeout = 1
        let sim = Simulator(o, logger: Logger(label: "edgeq.demo.sim"))
        let box = ResultBox()
        let done = DispatchSemaphore(value: 0)
        let t = Thread {
            box.set(Result { try sim.run() })
            done.signal()
        }
        t.start()
        let started = Date()
        while done.wait(timeout: .now() + 0.5) == .timedOut {
            let e = extra()
            progress("\(label): \(Int(Date().timeIntervalSince(started))) s\(e.isEmpty ? "" : ", " + e)")
        }
        endProgress()
        let r = try box.get()
        say(String(format: "%@: %d steps in %.1f s", label, r.steps, Date().timeIntervalSince(started)))
        return r
    }

    /// The demo operator's name: its key signs the demo's commands.
    static let operatorName = "demo-operator"

    /// The demo's operator key: `DATA/demo-operator/demo-operator.key` (made on the first run,
    /// kept with `--data`), its public half trusted as `DATA/keys/operator/demo-operator.pub`.
    static func demoOperatorKey(dataDirectory: URL) throws -> SigningPrivateKey {
        try localOperatorKey(name: operatorName, dataDirectory: dataDirectory)
    }

    /// `body` signed by the demo operator for `<prefix>/cmd/<verb>` of `map`'s gateway.
    func signed(map: TopicMap, verb: String, _ body: String, key: SigningPrivateKey) throws -> [UInt8] {
        try CommandEnvelope.sign(command: body, topic: CommandEnvelope.topic(prefix: map.gateway.prefix, verb: verb),
                                 gatewayID: map.gateway.id, keyName: Self.operatorName, privateKey: key)
    }

    func ask(_ client: MQTTClient, map: TopicMap, key: SigningPrivateKey, verb: String, body: String) throws {
        let prefix = map.gateway.prefix
        _ = try client.publish("\(prefix)/cmd/\(verb)", try signed(map: map, verb: verb, body, key: key), qos: .atLeastOnce)
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            guard let m = client.receive(timeout: 0.2), m.topic == "\(prefix)/reply/\(verb)" else { continue }
            let o = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any] ?? [:]
            guard o["ok"] as? Bool == true else { throw CLIFailure(.unavailable, "demo: cmd/\(verb) refused: \(o["error"] ?? "?")") }
            say("            cmd/\(verb): ok")
            return
        }
        throw CLIFailure(.unavailable, "demo: no reply to cmd/\(verb) within 15 s")
    }

    func latestStatus(_ client: MQTTClient, prefix: String, broker: MosquittoBroker) -> String? {
        guard let c = try? MQTTClient(try MQTTConfiguration(url: broker.url, clientID: "edgeq-demo-status")) else { return nil }
        defer { c.stop() }
        try? c.subscribe("\(prefix)/status", qos: .atLeastOnce)
        c.start()
        guard let m = c.receive(timeout: 3),
              let o = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any] else { return nil }
        let model = (o["model"] as? [String: Any])?["version"].map { "v\($0)" } ?? "none"
        return "mode \(o["mode"] ?? "?"), model \(model), guard trips \(((o["guard"] as? [String: Any])?["trips"]) ?? 0)"
    }

    func say(_ s: String) { FileHandle.standardOutput.write(Data((s + "\n").utf8)) }
    func progress(_ s: String) { FileHandle.standardError.write(Data("\r\u{1B}[K\(s)".utf8)) }
    func endProgress() { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
}

/// A result handed from the plant's thread.
final class ResultBox: @unchecked Sendable {
    // @unchecked Sendable: `value` is only touched under `lock`.
    private let lock = NSLock()
    private var value: Result<SimulatorResult, any Error>?
    func set(_ r: Result<SimulatorResult, any Error>) { lock.withLock { value = r } }
    func get() throws -> SimulatorResult {
        guard let v = lock.withLock({ value }) else { throw CLIFailure(.software, "demo: the plant did not finish") }
        return try v.get()
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
