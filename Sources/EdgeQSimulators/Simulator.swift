import EdgeQMQTT
import EdgeQPlants
import Foundation
import Logging

/// The built-in plants.
public enum PlantKind: String, Sendable, CaseIterable {
    case cartpole, thermal, tank, heater, mountaincar
}

/// How a simulator runs (the options of `edgeq sim`).
public struct SimulatorOptions: Sendable {
    /// Which plant.
    public var plant: PlantKind
    /// The broker URL.
    public var broker: String
    /// Seed of the plant's randomness and of the dither.
    public var seed: UInt64 = 0
    /// Steps to run; nil runs until `stop()`.
    public var steps: Int?
    /// Steps per second of wall time; 0 runs as fast as the broker allows.
    public var rate: Double = 50
    /// Share of the incumbent's decisions moved by ±1 level (exploration with limits).
    public var dither: Double = 0
    /// The gateway's control-plane prefix (`edgeq/<id>`): when its retained status says
    /// `"mode":"control"`, the incumbent is silent and the gateway's commands are applied
    /// (until a message on the plant's mode topic, `plant/<name>/mode`, says who is in charge:
    /// from then on the mode topic alone decides).
    public var gatewayPrefix: String?
    /// How long (wall seconds) to wait for the gateway's command in control before applying
    /// the incumbent's.
    public var commandTimeout: Double = 0.5
    /// The incumbent's name (only `default` exists for each plant today).
    public var incumbent: String = "default"
    /// Evaluate against an incumbent twin on the same exogenous randomness and report per
    /// window (`EvaluationOptions`); nil (the default) runs the plant exactly as without it.
    /// With it, an episodic plant's episode k starts from (seed, k) instead of the seed's
    /// running sequence.
    public var evaluation: EvaluationOptions?
    /// Without a rate (`rate` 0) and with `gatewayPrefix`: while the gateway is in control mode
    /// but its incumbent is in charge (a trial's or the guard's incumbent blocks), wait for the
    /// gateway's shadow report of each step (up to `commandTimeout`) before the next one, so that
    /// a plant run faster than real time never runs ahead of the gateway's ticks. For benches
    /// and the demo; a plant in real time has no need of it. Default false.
    public var keepStepWithGateway = false
    /// The plant's topic prefix instead of `plant/<name>`: its state, command, mode, evaluation
    /// and score topics go under it (`<base>/state`, `<base>/cmd` …). Several plants of one
    /// kind on one broker need one each (a fleet on one site broker). Nil (the default):
    /// `plant/<name>`.
    public var topicBase: String?

    public init(plant: PlantKind, broker: String) {
        self.plant = plant
        self.broker = broker
    }
}

/// What a simulator run did.
public struct SimulatorResult: Sendable {
    /// The plant's score line for people.
    public var scoreText: String
    /// The score as JSON (also published retained on `plant/<name>/score`).
    public var scoreJSON: [UInt8]
    /// Steps run.
    public var steps: Int
    /// Steps decided by the incumbent / applied from the gateway.
    public var incumbentSteps: Int
    public var gatewaySteps: Int
    /// Steps in control where the gateway's command did not come in time (incumbent applied).
    public var commandTimeouts: Int
    /// Commands ignored because they named another step.
    public var staleCommands: Int
    /// The evaluation windows that closed during the run, in order (empty without
    /// `SimulatorOptions.evaluation`). A window or episode cut short by the end of the run is
    /// not reported.
    public var evaluations: [EvaluationWindow] = []
    /// Every change of the gateway's mode or served model version its status announced while
    /// the plant ran (with `gatewayPrefix`), in order.
    public var gatewayChanges: [GatewayChange] = []
}

/// The gateway's mode and served model as its retained status announced them, and the plant
/// step at which the plant saw the change.
public struct GatewayChange: Sendable, Equatable {
    /// Steps the plant had run when it saw the status.
    public var step: Int
    /// `control` (online and in control) or `shadow` (anything else, offline included).
    public var mode: String
    /// The served model version, nil when the status named none.
    public var servedVersion: Int?

    /// A change from its parts.
    public init(step: Int, mode: String, servedVersion: Int?) {
        self.step = step
        self.mode = mode
        self.servedVersion = servedVersion
    }
}

/// Errors of a simulator run.
public struct SimulatorError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// A plant on a broker (docs/simulators.md): publishes its state after every step, applies
/// the incumbent's command in shadow (and publishes it, so the gateway can observe it) or
/// the gateway's in control, and publishes its score at the end.
public final class Simulator: @unchecked Sendable {
    // @unchecked Sendable: `stopRequested` (written by `stop()`) and `stepsRun` (read by
    // `stepsDone`) are the only state touched from other threads, and both are read and
    // written only under `stopLock`; everything else is used by the thread that calls
    // `run()` only.

    private let options: SimulatorOptions
    private let logger: Logger
    private let stopLock = NSLock()
    private var stopRequested = false
    private var pausedFlag = false
    private var stepsRun = 0

    public init(_ options: SimulatorOptions, logger: Logger = Logger(label: "edgeq.sim")) {
        self.options = options
        self.logger = logger
    }

    /// Asks `run()` to finish after the current step (it then publishes the score).
    public func stop() {
        stopLock.lock()
        stopRequested = true
        stopLock.unlock()
    }

    /// Steps run so far (read from any thread, e.g. to place another client's events on the
    /// plant's time line).
    public var stepsDone: Int {
        stopLock.lock()
        defer { stopLock.unlock() }
        return stepsRun
    }

    /// Holds the plant's time still (no step is taken) while `paused` is true: a bench that runs
    /// a plant far faster than real time pauses it while the gateway retrains, as a retraining of
    /// a minute is a fraction of one tick on a plant with minute-long ticks.
    public func pause(_ paused: Bool) {
        stopLock.lock()
        pausedFlag = paused
        stopLock.unlock()
    }

    private var isPaused: Bool {
        stopLock.lock()
        defer { stopLock.unlock() }
        return pausedFlag
    }

    private var shouldStop: Bool {
        stopLock.lock()
        defer { stopLock.unlock() }
        return stopRequested
    }

    /// Runs until `options.steps` steps are done or `stop()` is called.
    ///
    /// - Throws: `SimulatorError` when the broker cannot be reached within 10 s, or
    ///   `MQTTError` for an invalid broker URL.
    public func run() throws -> SimulatorResult {
        var plant: any SimPlant
        let evaluated = options.evaluation != nil
        switch options.plant {
        case .cartpole: plant = evaluated ? SeededCartPoleSim(seed: options.seed) : CartPoleSim(seed: options.seed)
        case .thermal: plant = ThermalSim(seed: options.seed)
        case .tank: plant = TankSim(seed: options.seed)
        case .heater: plant = HeaterSim(seed: options.seed)
        case .mountaincar: plant = evaluated ? SeededMountainCarSim(seed: options.seed) : MountainCarSim(seed: options.seed)
        }
        var evaluator = options.evaluation.map { Evaluator(plant: options.plant, seed: options.seed, options: $0) }
        let base = options.topicBase ?? "plant/\(plant.name)"
        let evalTopic = "\(base)/eval"
        var evalFile: FileHandle?
        if let path = options.evaluation?.file {
            if !FileManager.default.fileExists(atPath: path) {
                guard FileManager.default.createFile(atPath: path, contents: nil) else {
                    throw SimulatorError(description: "cannot create the evaluation file \(path): check the folder exists and is writable")
                }
            }
            guard let h = FileHandle(forWritingAtPath: path) else {
                throw SimulatorError(description: "cannot open the evaluation file \(path) for writing: check its permissions")
            }
            h.seekToEndOfFile()
            evalFile = h
        }
        defer { try? evalFile?.close() }
        var dither = Dither(probability: options.dither, levelCount: plant.actionCount, seed: options.seed &+ 0x5EED)
        let stateTopic = "\(base)/state"
        let cmdTopic = "\(base)/cmd"
        let statusTopic = options.gatewayPrefix.map { "\($0)/status" }
        // With `keepStepWithGateway` and no rate (as fast as the gateway answers), the plant keeps step with the gateway
        // also while its incumbent is in charge and the gateway in control mode (a trial's or
        // the guard's incumbent blocks): it waits for the gateway's shadow report of the step, so
        // that it never runs ahead of the gateway's ticks and the gateway's next take.
        let shadowTopic = options.keepStepWithGateway && options.rate <= 0 ? options.gatewayPrefix.map { "\($0)/shadow" } : nil
        // Who is in charge, as the gateway's handover says it (docs/simulators.md).
        let modeTopic = "\(base)/mode"

        var config = try MQTTConfiguration(url: options.broker, clientID: "edgeq-sim-\(plant.name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        config.inboundCapacity = 4096
        let client = try MQTTClient(config, logger: logger)
        defer { client.stop() }
        try client.subscribe(cmdTopic, qos: .atLeastOnce)
        if let statusTopic { try client.subscribe(statusTopic, qos: .atLeastOnce) }
        if let shadowTopic { try client.subscribe(shadowTopic, qos: .atMostOnce) }
        try client.subscribe(modeTopic, qos: .atLeastOnce)
        client.start()
        do {
            try client.waitUntilConnected(timeout: 10)
        } catch {
            throw SimulatorError(description: "cannot reach the broker at \(options.broker): \(error)")
        }

        var gatewayInControl = false
        var modeTopicHeard = false
        var gatewayModeControl = false
        var shadowSeen = false
        var servedVersion: Int?
        var result = SimulatorResult(scoreText: "", scoreJSON: [], steps: 0, incumbentSteps: 0, gatewaySteps: 0,
                                     commandTimeouts: 0, staleCommands: 0)
        var pendingCommand: Int?
        // Who chose the pending command, when it says (`"model"` in the payload: the mapping's
        // `{{model}}`): its version, or nil for a fallback. Absent: the status's served version.
        var pendingModel: Int??
        var step = 0
        // Who decided the step being run: "incumbent", "vN" or "gateway" (evaluation).
        var controller = "incumbent"
        let period = options.rate > 0 ? 1 / options.rate : 0
        var nextDue = Date()

        // Handles one inbound message: mode changes and commands for the current step.
        func absorb(_ m: MQTTMessage, currentStep: Int) {
            if m.topic == modeTopic {
                guard let controller = Self.controller(in: m.payload) else {
                    logger.warning("ignored a mode message that names no controller", metadata: [
                        "sim.topic": "\(modeTopic)", "sim.payload": "\(String(decoding: m.payload.prefix(200), as: UTF8.self))",
                    ])
                    return
                }
                modeTopicHeard = true
                let control = controller == "gateway"
                if control != gatewayInControl {
                    gatewayInControl = control
                    logger.info("handover", metadata: ["sim.controller": "\(controller)"])
                }
                return
            }
            if let shadowTopic, m.topic == shadowTopic {
                shadowSeen = true
                return
            }
            if let statusTopic, m.topic == statusTopic {
                if let o = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any] {
                    let control = (o["mode"] as? String) == "control" && (o["state"] as? String ?? "online") == "online"
                    gatewayModeControl = control
                    let version = ((o["model"] as? [String: Any])?["version"] as? NSNumber)?.intValue
                    // Once the handover's mode topic was heard, it alone says who is in charge.
                    if !modeTopicHeard && control != gatewayInControl {
                        gatewayInControl = control
                        logger.info("gateway mode changed", metadata: ["sim.gateway_in_control": "\(control)"])
                    }
                    let change = GatewayChange(step: step, mode: control ? "control" : "shadow", servedVersion: version)
                    let last = result.gatewayChanges.last
                    if last?.mode != change.mode || last?.servedVersion != change.servedVersion {
                        result.gatewayChanges.append(change)
                    }
                    servedVersion = version
                }
                return
            }
            guard m.topic == cmdTopic, gatewayInControl else { return }  // in shadow: our own echo
            guard let o = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any],
                  let a = (o[plant.commandKey] as? NSNumber)?.intValue, a >= 0, a < plant.actionCount else { return }
            if let s = (o["step"] as? NSNumber)?.intValue, s != currentStep {
                result.staleCommands += 1
                return
            }
            pendingCommand = a
            pendingModel = o.keys.contains("model") ? .some((o["model"] as? NSNumber)?.intValue) : nil
        }

        // Let the retained status and mode arrive before the first step.
        do {
            let until = Date().addingTimeInterval(0.3)
            while Date() < until, let m = client.receive(timeout: 0.05) { absorb(m, currentStep: -1) }
        }

        _ = try client.publish(stateTopic, plant.stateJSON(), qos: .atLeastOnce)
        while !shouldStop && (options.steps.map { step < $0 } ?? true) {
            while let m = client.receive(timeout: 0) { absorb(m, currentStep: plant.stepIndex) }
            if shadowTopic != nil && gatewayModeControl && !gatewayInControl {
                // Keep step with the gateway: its tick of this state (a shadow report), or a take
                // (then it commands this step).
                let deadline = Date().addingTimeInterval(options.commandTimeout)
                while !shadowSeen, !gatewayInControl, Date() < deadline {
                    if let m = client.receive(timeout: max(0, deadline.timeIntervalSinceNow)) {
                        absorb(m, currentStep: plant.stepIndex)
                    }
                }
            }
            shadowSeen = false
            var action: Int
            if gatewayInControl {
                let deadline = Date().addingTimeInterval(options.commandTimeout)
                while pendingCommand == nil, gatewayInControl, Date() < deadline {
                    if let m = client.receive(timeout: max(0, deadline.timeIntervalSinceNow)) {
                        absorb(m, currentStep: plant.stepIndex)
                    }
                }
                if let c = pendingCommand {
                    action = c
                    result.gatewaySteps += 1
                    // The model that chose it when the command says (a trial's candidate, a guard's
                    // control model), else the one the status names as served.
                    if let said = pendingModel {
                        controller = said.map { "v\($0)" } ?? "gateway"
                    } else {
                        controller = servedVersion.map { "v\($0)" } ?? "gateway"
                    }
                } else {
                    action = dither.apply(plant.incumbentAction()).level
                    result.incumbentSteps += 1
                    controller = "incumbent"
                    if gatewayInControl { result.commandTimeouts += 1 }
                }
            } else {
                action = dither.apply(plant.incumbentAction()).level
                result.incumbentSteps += 1
                controller = "incumbent"
                let payload = "{\"\(plant.commandKey)\":\(action),\"step\":\(plant.stepIndex)}"
                _ = try client.publish(cmdTopic, payload, qos: .atLeastOnce)
            }
            pendingCommand = nil
            pendingModel = nil
            plant.step(action)
            step += 1
            stopLock.withLock { stepsRun = step }
            var closed: [EvaluationWindow] = []
            if let w = evaluator?.afterStep(reward: plant.lastReward, controller: controller) { closed.append(w) }
            if period > 0 {
                nextDue.addTimeInterval(period)
                let wait = nextDue.timeIntervalSinceNow
                if wait > 0 { usleep(UInt32(wait * 1e6)) } else if wait < -1 { nextDue = Date() }
            }
            if isPaused {
                while isPaused && !shouldStop { usleep(10_000) }
                nextDue = Date()
            }
            _ = try client.publish(stateTopic, plant.stateJSON(), qos: .atLeastOnce)
            if plant.startNextEpisodeIfEnded() {
                _ = try client.publish(stateTopic, plant.stateJSON(), qos: .atLeastOnce)
                if let w = evaluator?.episodeEnded() { closed.append(w) }
            }
            for w in closed {
                let line = w.json()
                if options.evaluation?.publish == true { _ = try client.publish(evalTopic, line, qos: .atLeastOnce) }
                evalFile?.write(Data(line + [0x0A]))
            }
        }
        result.evaluations = evaluator?.windows ?? []
        result.steps = step
        result.scoreText = plant.scoreText()
        result.scoreJSON = try plant.scoreJSON()
        _ = try client.publish("\(base)/score", result.scoreJSON, qos: .atLeastOnce, retain: true)
        // Every state, evaluation and the score acknowledged before disconnecting: at rate 0 a
        // run publishes hundreds of QoS 1 messages in a burst, libmosquitto keeps only 20 in
        // flight, and what is still queued at stop() is dropped (on a loaded machine a short
        // pause lost nearly all of a mountain car run's states).
        if !client.waitUntilSent(timeout: 10) {
            logger.warning("not every message was acknowledged by the broker within 10 s before disconnecting")
        }
        return result
    }

    /// The controller a message on the mode topic names: `gateway` or `incumbent`, as the raw
    /// payload (quotes and white space allowed) or as `{"controller": "..."}`; nil otherwise.
    static func controller(in payload: [UInt8]) -> String? {
        var text = String(decoding: payload, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.hasPrefix("{") {
            guard let o = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any],
                  let c = o["controller"] as? String else { return nil }
            text = c
        } else if text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\"") {
            text = String(text.dropFirst().dropLast())
        }
        return text == "gateway" || text == "incumbent" ? text : nil
    }
}
