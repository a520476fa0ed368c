import EdgeQCore
import EdgeQGateway
import EdgeQLog
import EdgeQNet
import EdgeQPlants
import EdgeQTopicMap
import Foundation

/// Who acts in a lab run.
public enum LabPolicy: Sendable {
    /// The plant's incumbent, each decision moved by ±1 level with probability `dither`
    /// (shadow mode: the gateway observes it, the log says `actor: incumbent`).
    case incumbent(dither: Double)
    /// A model's int8 greedy action among the allowed ones (control mode: `actor: model`);
    /// with probability `epsilon` a uniformly random allowed action instead (`actor: exploration`).
    case model(QModel, epsilon: Double = 0)
    /// A model in control with the gateway's exploration schedule: ε moves linearly from
    /// `start` to `end` over `decaySteps` control decisions, counted from `after` decisions
    /// already made (`learning.exploration`: ε at the gateway's `after + k`-th decision).
    case exploring(QModel, start: Double, end: Double, decaySteps: Int, after: Int)
}

/// Errors of a lab run: what went wrong and what to do.
public enum LabError: Error, Sendable, CustomStringConvertible {
    /// The model does not fit the mapping file (state width or action count).
    case modelDoesNotFit(inputs: Int, actions: Int, stateWidth: Int, mapActions: Int)
    /// The plant's actions and the mapping file's do not match.
    case actionCountMismatch(plant: Int, map: Int)
    /// The experience log could not be written.
    case log(String)

    public var description: String {
        switch self {
        case let .modelDoesNotFit(i, a, w, m):
            return "the model has \(i) inputs and \(a) actions, the mapping file \(w) and \(m): retrain it for this mapping"
        case let .actionCountMismatch(p, m):
            return "the plant has \(p) actions, the mapping file lists \(m): use the plant's mapping file"
        case .log(let s):
            return "the experience log could not be written: \(s)"
        }
    }
}

/// What one lab run did.
public struct LabResult: Sendable, Codable {
    /// The plant's own score (cost, comfort, returns).
    public var score: LabScore
    /// Sum of the mapping file's reward over the logged transitions.
    public var mappingReward = 0.0
    /// Decisions (ticks that opened a transition).
    public var decisions = 0
    /// Decisions by the model (control) / by the incumbent (shadow or fallback).
    public var modelDecisions = 0
    /// Decisions where the safety policy took over (state not usable, no allowed action).
    public var fallbacks = 0
    /// Ticks where the incumbent acted because the state was outside the model's support
    /// (`safety.on_unsupported: incumbent`).
    public var supportHeldTicks = 0
    /// Transitions written to the log.
    public var rowsLogged = 0
    /// Share of each action among the applied actions.
    public var actionShare: [Double] = []
}

/// Runs a plant with a policy through a mapping file, the way the gateway sees it, without
/// MQTT: each state message is decoded with `TopicMap.decode`, each tick assembles the state
/// with `TopicMapRuntime`, the reward and the episode flags come from the mapping, and the
/// transitions go to a real `ExperienceLog` with the gateway's semantics (docs/learning.md,
/// "The lab"):
///
/// - a transition is (state at tick t, action at t, reward at t+1, state at t+1); the
///   tick whose state ends an episode (terminal or truncated) closes the open transition and
///   opens none; the first state of the next episode starts afresh (history reset);
/// - shadow (`.incumbent`): the action logged is the incumbent's command observed between
///   the two ticks (decoded with the mapping's `incumbent` section), `actor: incumbent`;
/// - control (`.model`, `.exploring`): the model's int8 greedy action among allowed ones,
///   `actor: model`; with probability ε a uniformly random allowed one, `actor: exploration`
///   (the model's pick is logged beside it as `model_action`);
///   when the state is not usable or nothing is allowed, the safety fallback (`hold`: the
///   plant's incumbent acts) with `actor: fallback`.
public struct Lab: Sendable {
    /// The mapping file.
    public let map: TopicMap
    /// The precision models decide with (`edgeq run`'s default: mixed).
    public var precision: Precision = .mixed
    /// The log's time (seconds since 1970) of the run's first tick; each tick is one second
    /// later. Default 2, the lab's own clock: a log for a gateway that prunes by age
    /// (`learning.retention`) needs times near now, or the gateway deletes its rows at once.
    public var firstWallClock: Double = 2

    /// A lab for `map`.
    public init(map: TopicMap) { self.map = map }

    /// Runs `plant` for `steps` plant steps under `policy`.
    ///
    /// - Parameters:
    ///   - seed: seeds the dither and the ε draws.
    ///   - logPath: the SQLite log to append the transitions to (created when missing); nil
    ///     logs nothing.
    ///   - onStep: called after each plant step with the plant and the action applied (for
    ///     diagnostics: where a policy loses comfort, what it does at which hour).
    /// - Returns: the plant's score and what was decided and logged.
    /// - Throws: `LabError` for a model or plant that does not fit the mapping, or a log
    ///   that cannot be written.
    public func run<P: LabPlant>(_ plant: inout P, steps: Int, policy: LabPolicy, seed: UInt64 = 1,
                                 logPath: String? = nil, onStep: ((P, Int) -> Void)? = nil) throws(LabError) -> LabResult {
        guard plant.actionCount == map.actions.count else {
            throw LabError.actionCountMismatch(plant: plant.actionCount, map: map.actions.count)
        }
        // The gateway's own decision core: the same tick logic `edgeq run` ships.
        var core = DecisionCore(map: map, explorationSeed: seed &+ 0xE95)
        var engine: QEngine?
        var dither: Dither?
        let policyModel: QModel?
        switch policy {
        case .incumbent(let p):
            dither = Dither(probability: p, levelCount: plant.actionCount, seed: seed &+ 0x5EED)
            policyModel = nil
        case .model(let model, let eps):
            policyModel = model
            core.exploration = .init(start: eps, end: eps, decaySteps: 0, budget: 1)
        case let .exploring(model, start, end, decay, after):
            policyModel = model
            core.exploration = .init(start: start, end: end, decaySteps: decay, budget: 1)
            core.setControlDecisions(after)
        }
        if let model = policyModel {
            guard model.inputCount == map.stateWidth, model.actionCount == map.actions.count else {
                throw LabError.modelDoesNotFit(inputs: model.inputCount, actions: model.actionCount,
                                               stateWidth: map.stateWidth, mapActions: map.actions.count)
            }
            engine = model.makeEngine(precision)
        }
        let mode: ControlMode = engine == nil ? .shadow : .control
        var writer: TransitionWriter?
        if let logPath {
            do {
                let log = try ExperienceLog.open(path: logPath, gatewayID: map.gateway.id)
                var options = TransitionWriter.Options()
                options.signalNames = map.loggedSignalNames
                writer = try log.makeWriter(options: options)
            } catch {
                throw LabError.log("\(logPath): \(error)")
            }
        }
        var result = LabResult(score: LabScore())
        var counts = [Int](repeating: 0, count: map.actions.count)
        var clock: UInt64 = 1_000_000_000
        let stepNanos: UInt64 = 1_000_000_000
        let modelVersion = engine == nil ? nil : "lab"

        // One state message: decode it, run the tick; returns the action the gateway applied
        // (nil: the plant's incumbent acts) and whether a transition was opened.
        func deliver(_ plant: inout P) -> (action: Int?, opened: Bool, byModel: Bool, incumbentActs: Bool) {
            clock += stepNanos
            let bytes = plant.stateJSON()
            _ = bytes.withUnsafeBytes { core.receive(topic: plant.stateTopic, payload: $0, time: clock) }
            let out = core.tick(now: clock, wallClock: firstWallClock + Double(clock - 2_000_000_000) / 1e9, mode: mode, engine: engine,
                                modelVersion: modelVersion)
            if let t = out.closed {
                result.mappingReward += t.reward
                if let w = writer {
                    switch w.submit(t) {
                    case .queued, .queuedOverCapacity: result.rowsLogged += 1
                    case .dropped, .closed: break
                    }
                }
            }
            if out.episodeEnded { return (nil, false, false, mode == .shadow) }
            if out.mode == .control && out.fallback != nil { result.fallbacks += 1 }
            if out.supportHeld { result.supportHeldTicks += 1 }
            let applied = out.mode == .control ? out.applied : nil
            return (applied, core.hasOpen, applied != nil && out.fallback == nil, out.mode == .shadow)
        }

        var decision = deliver(&plant)
        for _ in 0..<steps {
            var action: Int
            if let a = decision.action {
                action = a
                if decision.byModel { result.modelDecisions += 1 }
                _ = plant.incumbentAction()  // keeps the incumbent's integrator where a plant would (it runs beside)
            } else {
                action = plant.incumbentAction()
                if var d = dither { action = d.apply(action).level; dither = d }
                // Shadow (or the incumbent in charge outside the model's support): the gateway
                // observes the incumbent's command on its topic.
                if decision.incumbentActs {
                    let payload = Array("{\"\(plant.commandKey)\":\(action)}".utf8)
                    _ = payload.withUnsafeBytes { core.receive(topic: plant.commandTopic, payload: $0, time: clock) }
                }
            }
            if decision.opened { result.decisions += 1 }
            counts[action] += 1
            plant.step(action)
            onStep?(plant, action)
            decision = deliver(&plant)
            if plant.startNextEpisodeIfEnded() {
                decision = deliver(&plant)
            }
        }
        if let w = writer {
            do {
                try w.flush(timeout: 60)
                try w.close(timeout: 60)
            } catch {
                throw LabError.log("\(error)")
            }
        }
        result.score = plant.score
        let total = Double(max(counts.reduce(0, +), 1))
        result.actionShare = counts.map { Double($0) / total }
        return result
    }
}
