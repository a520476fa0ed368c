import EdgeQMQTT
import EdgeQSimulators
import EdgeQSystem
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Logging

/// One real gateway process (`edgeq run`) under a bench, with its plant (`edgeq sim`'s simulator
/// and its evaluation twin, run in this process) and a client that follows the gateway's status,
/// `<prefix>/retrain` events and command replies: what `edgeq bench generalize` runs per plant
/// and seed, and `edgeq bench fleet --parts learn` per gateway.
///
/// An operator key of the bench's own is trusted in the gateway's data directory, so its commands
/// are signed as `edgeq cmd` signs them. Control follows `learning.promotion.policy` as the mapping
/// says (see `GeneralizeBench`): `trial` — a signed `cmd/mode control` at the start; `auto`,
/// `shadow-first` — once the status names a served model; `manual` — never.
///
/// Use: `init` (the gateway is online, control asked for when the plan says so), `startPlant()`,
/// `poll(timeout:)` until it returns false (the plant finished or the gateway exited) or
/// `stopPlant()`, then `finish()` for the outcome, and `close()` (idempotent) to stop the gateway.
/// Not thread-safe: one thread drives it.
final class BenchGatewayRun {
    /// How progress lines name this run (e.g. `cartpole seed 1`).
    let label: String
    let plant: PlantKind
    let seed: UInt64
    let map: TopicMap
    /// The gateway's control-plane prefix.
    let prefix: String
    let gateway: ChildProcess
    /// The gateway's standard error (its log).
    let gatewayLog: String
    let sim: Simulator

    private let observer: MQTTClient
    private let operatorName = "bench-operator"
    private let operatorKey: SigningPrivateKey
    private let context: BenchContext
    private let plan: ControlPlan
    private let evalTopic: String?
    private let box = ResultBox()
    private let done = DispatchSemaphore(value: 0)
    private var plantEnded = false
    private var closed = false
    private var controlSent = false
    private var guardEvents = 0
    /// Per served version, the most pairs its control-group guard had compared in any status seen.
    private var guardPairs: [Int: Int] = [:]
    /// The control-group guards' `switching` figures, the newest seen (status or guard event) of
    /// the guard watching now, and those of the guards before it (`noteGuardSwitching`).
    private var guardSwitchingNow: GeneralizeBench.GuardSwitchingSeen?
    private var guardSwitchingEnded: [GeneralizeBench.GuardSwitchingSeen] = []

    /// What was measured so far (completed by `finish()`).
    private(set) var outcome: GeneralizeBench.Outcome
    /// The gateway's newest status.
    private(set) var status: [String: Any]?
    /// With `followWindows`: the evaluation windows as they closed (the plant's `<base>/eval`),
    /// each with the wall time it arrived here.
    private(set) var liveWindows: [(window: EvaluationWindow, at: Date)] = []
    /// Per model version, the plant step at which the gateway's status first named it served.
    private(set) var servedFrom: [Int: Int] = [:]

    enum ControlPlan { case atStart, onFirstModel, never }

    /// Starts the gateway on `data` (created by the caller) with `mappingPath`, waits until its
    /// retained status says online (60 s), prepares the plant and, under `promotion: trial`, asks
    /// for control.
    ///
    /// - Parameters:
    ///   - steps: plant steps to run; nil runs until `stopPlant()`.
    ///   - topicBase: the plant's topic prefix (nil: `plant/<name>`); the mapping must use it.
    ///   - pauseOnRetrain: hold plant time still while the gateway retrains (`Simulator.pause`).
    ///   - followWindows: subscribe to the plant's evaluation topic and keep `liveWindows`.
    ///   - clientID: the bench client's MQTT client id (one per run on a shared broker).
    /// - Throws: `BenchError.failed` when the gateway does not come online; process, key and
    ///   MQTT errors as they come.
    init(label: String, plant: PlantKind, seed: UInt64, steps: Int?, map: TopicMap, mappingPath: String,
         executable: String, broker: MosquittoBroker, data: URL, topicBase: String? = nil,
         pauseOnRetrain: Bool = true, followWindows: Bool = false, clientID: String = "generalize-operator",
         context: BenchContext) throws {
        self.label = label
        self.plant = plant
        self.seed = seed
        self.map = map
        self.context = context
        prefix = map.gateway.prefix
        operatorKey = try localOperatorKey(name: operatorName, dataDirectory: data)
        gatewayLog = data.appendingPathComponent("gateway.log").path
        let child = try ChildProcess(executable, ["run", "--config", mappingPath, "--broker", broker.url, "--data", data.path,
                                                  "--mode", "shadow", "--log-level", "warning",
                                                  // The plant's seed seeds the gateway's draws too (trial order,
                                                  // exploration, control group): a run can be replayed.
                                                  "--seed", String(seed)],
                                     stdoutPath: gatewayLog, stderrPath: gatewayLog)
        gateway = child
        do {
            var cfg = try MQTTConfiguration(url: broker.url, clientID: clientID)
            cfg.inboundCapacity = 10_000
            observer = try MQTTClient(cfg)
        } catch {
            _ = child.stop(grace: 10)
            throw error
        }
        let base = topicBase ?? "plant/\(plant.rawValue)"
        evalTopic = followWindows ? "\(base)/eval" : nil
        outcome = GeneralizeBench.Outcome(seed: seed, policy: map.learning.promotion.rawValue, windows: [], changes: [])
        switch outcome.policy {
        case "trial": plan = .atStart
        case "auto", "shadow-first": plan = .onFirstModel
        case "manual":
            plan = .never
            outcome.notes.append("promotion.policy manual: nothing is promoted without an operator, and the bench does not promote by hand")
        default:
            plan = .never
            outcome.notes.append("promotion.policy \(outcome.policy) is unknown to this bench: the gateway stays in shadow")
        }
        sim = Simulator({
            var o = SimulatorOptions(plant: plant, broker: broker.url)
            o.seed = seed
            o.steps = steps
            o.rate = GeneralizeBench.rate
            o.dither = context.generalize.dither
            o.gatewayPrefix = map.gateway.prefix
            o.keepStepWithGateway = true
            o.commandTimeout = 0.5
            o.evaluation = EvaluationOptions()
            o.topicBase = topicBase
            return o
        }(), logger: Logger(label: "edgeq.bench.generalize.sim"))
        self.pauseOnRetrain = pauseOnRetrain
        do {
            try observer.subscribe("\(prefix)/status", qos: .atLeastOnce)
            try observer.subscribe("\(prefix)/retrain", qos: .atLeastOnce)
            try observer.subscribe("\(prefix)/reply/+", qos: .atLeastOnce)
            if let evalTopic { try observer.subscribe(evalTopic, qos: .atLeastOnce) }
            observer.start()
            try observer.waitUntilConnected(timeout: 10)
            // The gateway is up when its retained status says online.
            let upBy = Date().addingTimeInterval(60)
            while Date() < upBy, status?["state"] as? String != "online" {
                guard gateway.isRunning else { break }
                if let m = observer.receive(timeout: 0.2), m.topic == "\(prefix)/status" { status = Self.object(m) }
            }
            guard status?["state"] as? String == "online" else {
                let log = (try? String(contentsOfFile: gatewayLog, encoding: .utf8)) ?? ""
                throw BenchError.failed("the gateway for \(label) did not come online within 60 s: \(lastLine(log))")
            }
            if plan == .atStart {
                try command("mode", #"{"id":"generalize-start","mode":"control"}"#)
                let reply = awaitReply("mode")
                controlSent = reply?["ok"] as? Bool == true
                if !controlSent {
                    // The gateway refuses control without a model that passed its checks: ask
                    // again once its status names a served model or a candidate.
                    outcome.notes.append("cmd/mode control at the start was refused (\(reply?["error"] ?? "no reply within 15 s")); asked again once a model or candidate appeared")
                }
            }
        } catch {
            close()
            throw error
        }
    }

    private let pauseOnRetrain: Bool

    deinit { close() }

    private static func object(_ m: MQTTMessage) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any] ?? [:]
    }

    private func command(_ verb: String, _ body: String) throws {
        let signed = try CommandEnvelope.sign(command: body, topic: CommandEnvelope.topic(prefix: prefix, verb: verb),
                                              gatewayID: map.gateway.id, keyName: operatorName, privateKey: operatorKey)
        _ = try observer.publish("\(prefix)/cmd/\(verb)", signed, qos: .atLeastOnce)
    }

    /// Waits for the reply to `verb` (other messages are handled as they come).
    private func awaitReply(_ verb: String) -> [String: Any]? {
        let until = Date().addingTimeInterval(15)
        while Date() < until {
            guard let m = observer.receive(timeout: 0.2) else { continue }
            if m.topic == "\(prefix)/reply/\(verb)" { return Self.object(m) }
            handle(m)
        }
        return nil
    }

    private func handle(_ m: MQTTMessage) {
        if let evalTopic, m.topic == evalTopic {
            if let w = EvaluationWindow(json: m.payload) { liveWindows.append((w, Date())) }
            return
        }
        let o = Self.object(m)
        if m.topic == "\(prefix)/status" {
            status = o
            if let v = ((o["model"] as? [String: Any])?["version"] as? NSNumber)?.intValue {
                if servedFrom[v] == nil { servedFrom[v] = sim.stepsDone }
                if let pairs = ((o["guard"] as? [String: Any])?["pairs"] as? NSNumber)?.intValue {
                    guardPairs[v] = max(guardPairs[v] ?? 0, pairs)
                }
            }
            noteGuardSwitching((o["guard"] as? [String: Any])?["switching"])
        } else if m.topic == "\(prefix)/retrain" {
            let phase = o["phase"] as? String ?? ""
            // Plant time stands still while the gateway retrains (see `Simulator.pause`).
            if pauseOnRetrain {
                if phase == "started" { sim.pause(true) }
                if phase == "done" || phase == "failed" { sim.pause(false) }
            }
            if phase == "done" || phase == "failed" {
                outcome.retrainings += 1
                if o["promoted"] as? Bool == true { outcome.promotionSteps.append(sim.stepsDone) }
                if phase == "done" {
                    let d = o["distill"] as? [String: Any]
                    // A refused candidate's line names the checks that refused it.
                    let failedChecks = o["verdict"] as? String == "passed" ? nil
                        : (o["reasons"] as? [String]).map { $0.map { String($0.prefix { $0 != ":" }) }.joined(separator: ", ") }
                    outcome.candidates.append(((o["version"] as? NSNumber)?.intValue, o["verdict"] as? String ?? "?",
                                               d?["chosen"] as? String, d?["why"] as? String ?? failedChecks))
                }
                if let p = o["pretrial"] as? [String: Any], let v = (o["version"] as? NSNumber)?.intValue {
                    outcome.pretrials.append((v, p["verdict"] as? String ?? "?", (p["mean_difference"] as? NSNumber)?.doubleValue))
                }
                if o["verdict"] as? String != "passed" {
                    let why = (o["reasons"] as? [String])?.joined(separator: "; ") ?? (o["error"] as? String) ?? "no reason given"
                    let version = (o["version"] as? NSNumber).map { "v\($0)" } ?? "candidate"
                    outcome.lastRefusal = "\(version): \(why)"
                }
            } else if phase == "guard" {
                guardEvents += 1
                noteGuardSwitching(o["switching"])
            } else if phase == "guard_watch" {
                outcome.novelConditions.append((sim.stepsDone, o["signal"] as? String ?? "?", (o["value"] as? NSNumber)?.doubleValue ?? .nan))
            } else if phase.hasPrefix("trial") {
                outcome.trialEvents.append((sim.stepsDone, o))
            }
        } else if m.topic == "\(prefix)/reply/mode", o["ok"] as? Bool == false {
            outcome.notes.append("cmd/mode was refused at plant step \(sim.stepsDone): \(o["error"] ?? "no reason given")")
        }
    }

    /// A guard's `switching` figures (`{"switches", "switching_cost", "rewards", …}`) as a status
    /// or a guard event carried them. They only grow while one guard watches; fewer switches than
    /// the newest seen means a new guard began (a promotion, or the guard tripped and another model
    /// is served), so the one before ended with the figures last seen of it — a lower bound when it
    /// switched again in the ≤ 5 s before it ended (the status comes every 5 s and on every change).
    private func noteGuardSwitching(_ json: Any?) {
        guard let j = json as? [String: Any], let cost = (j["switching_cost"] as? NSNumber)?.doubleValue,
              let rewards = (j["rewards"] as? NSNumber)?.doubleValue,
              let switches = (j["switches"] as? NSNumber)?.intValue else { return }
        let seen = GeneralizeBench.GuardSwitchingSeen(cost: cost, rewards: rewards, switches: switches)
        if let now = guardSwitchingNow, switches < now.switches { guardSwitchingEnded.append(now) }
        guardSwitchingNow = seen
    }

    /// Starts the plant on its own thread.
    func startPlant() {
        let box = self.box, done = self.done, sim = self.sim
        let thread = Thread {
            box.set(Result { try sim.run() })
            done.signal()
        }
        thread.start()
    }

    /// Asks the plant to finish after its current step (`finish()` waits for it).
    func stopPlant() { sim.stop() }

    /// Handles what arrived (waiting up to `timeout` for a message), asks for control when the
    /// plan says so, and checks the gateway is alive. False once the plant finished, or when the
    /// gateway exited (the plant is then stopped, and the outcome's notes say why).
    @discardableResult
    func poll(timeout: Double) throws -> Bool {
        if plantEnded { return false }
        if done.wait(timeout: .now()) == .success {
            plantEnded = true
            return false
        }
        if let m = observer.receive(timeout: timeout) { handle(m) }
        let model = (status?["model"] as? [String: Any])?["version"]
        let candidate = plan == .atStart && status?["candidate"] is [String: Any]
        if plan != .never, !controlSent, model != nil || candidate {
            controlSent = true
            try command("mode", #"{"id":"generalize-control","mode":"control"}"#)
            let what = model.map { "model v\($0) served" } ?? "a candidate announced"
            context.progress("\(label): \(what) at step \(sim.stepsDone): cmd/mode control")
        }
        if !gateway.isRunning {
            sim.stop()
            let log = (try? String(contentsOfFile: gatewayLog, encoding: .utf8)) ?? ""
            outcome.notes.append("the gateway exited during the run: \(lastLine(log))")
            _ = done.wait(timeout: .now() + 30)
            plantEnded = true
            return false
        }
        return true
    }

    /// Waits for the plant's result (up to 60 s after `stopPlant()` or its last step), takes the
    /// last status and events (1 s), and completes the outcome.
    ///
    /// - Throws: `BenchError.failed` when the plant did not finish or failed.
    func finish() throws -> GeneralizeBench.Outcome {
        if !plantEnded {
            guard done.wait(timeout: .now() + 60) == .success else {
                throw BenchError.failed("the \(label) plant did not finish within 60 s of its end")
            }
            plantEnded = true
        }
        let result: SimulatorResult
        do {
            result = try box.get()
        } catch {
            throw BenchError.failed("the \(plant.rawValue) plant (seed \(seed)) did not finish: \(error)")
        }
        // The last status and events (published every 5 s and on every change).
        let settle = Date().addingTimeInterval(1)
        while Date() < settle { if let m = observer.receive(timeout: 0.1) { handle(m) } }
        outcome.windows = result.evaluations
        outcome.changes = result.gatewayChanges
        if plan != .never, !controlSent {
            outcome.notes.append("no model was served, so the bench never switched the gateway to control")
        }
        if let counters = status?["counters"] as? [String: Any], let n = (counters["support_handbacks"] as? NSNumber)?.intValue {
            outcome.supportHandbacks = n
        }
        outcome.guardPairs = guardPairs
        outcome.guardSwitching = guardSwitchingEnded + (guardSwitchingNow.map { [$0] } ?? [])
        if let g = status?["guard"] as? [String: Any], let trips = (g["trips"] as? NSNumber)?.intValue {
            outcome.guardTrips = trips
        } else if status != nil || guardEvents > 0 {
            outcome.guardTrips = guardEvents
        }
        // Messages the gateway dropped (its inbound queue full): the plant ran too fast for it.
        if let counters = status?["counters"] as? [String: Any],
           let dropped = (counters["messages_dropped"] as? NSNumber)?.intValue, dropped > 0 {
            outcome.notes.append("the gateway dropped \(dropped) messages (its inbound queue was full)")
            context.progress("\(label): the gateway dropped \(dropped) messages")
        }
        if let q = status?["quarantined"] as? [Any] {
            outcome.quarantined = q.compactMap { ($0 as? NSNumber)?.intValue }
        }
        return outcome
    }

    /// Stops the plant (when still running), the observer and the gateway (10 s grace). Idempotent.
    func close() {
        guard !closed else { return }
        closed = true
        if !plantEnded {
            sim.stop()
            if done.wait(timeout: .now() + 30) == .success { plantEnded = true }
        }
        observer.stop()
        _ = gateway.stop(grace: 10)
    }
}
