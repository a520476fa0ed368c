import EdgeQCore
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
        var engine: QEngine?
        var epsilon: (Int) -> Double = { _ in 0 }
        var dither: Dither?
        let policyModel: QModel?
        switch policy {
        case .incumbent(let p):
            dither = Dither(probability: p, levelCount: plant.actionCount, seed: seed &+ 0x5EED)
            policyModel = nil
        case .model(let model, let eps):
            policyModel = model
            epsilon = { _ in eps }
        case let .exploring(model, start, end, decay, after):
            policyModel = model
            epsilon = { k in
                let f = decay > 0 ? min(Double(after + k) / Double(decay), 1) : 1
                return start + f * (end - start)
            }
        }
        if let model = policyModel {
            guard model.inputCount == map.stateWidth, model.actionCount == map.actions.count else {
                throw LabError.modelDoesNotFit(inputs: model.inputCount, actions: model.actionCount,
                                               stateWidth: map.stateWidth, mapActions: map.actions.count)
            }
            engine = model.makeEngine(precision)
        }
        var controlDecisions = 0
        var writer: TransitionWriter?
        if let logPath {
            do {
                let log = try ExperienceLog.open(path: logPath, gatewayID: map.gateway.id)
                writer = try log.makeWriter()
            } catch {
                throw LabError.log("\(logPath): \(error)")
            }
        }
        var tick = Tick(map: map)
        var rng = SeededGenerator(seed: seed &+ 0xE95)
        var result = LabResult(score: LabScore())
        var counts = [Int](repeating: 0, count: map.actions.count)
        var clock: UInt64 = 1_000_000_000
        let stepNanos: UInt64 = 1_000_000_000
        let modelVersion = engine == nil ? nil : "lab"

        // One state message: decode it, run the tick; returns the decision for the plant.
        func deliver(_ plant: inout P, decide: Bool) -> (action: Int?, opened: Bool) {
            clock += stepNanos
            let bytes = plant.stateJSON()
            bytes.withUnsafeBytes { _ = map.decode(topic: plant.stateTopic, payload: $0, time: clock, into: &tick.table) }
            let closed = tick.beginTick(now: clock, wallClock: Double(clock) / 1e9)
            if let t = closed, let w = writer {
                switch w.submit(t) {
                case .queued, .queuedOverCapacity: result.rowsLogged += 1
                case .dropped, .closed: break
                }
            }
            if let t = closed { result.mappingReward += t.reward }
            guard decide, !tick.episodeEnded else { return (nil, false) }
            var choice: Int?
            var greedy: Int?
            var actor: Actor = engine == nil ? .incumbent : .model
            if tick.stateUsable && tick.stateStatus == .ok, let engine {
                greedy = tick.state.withUnsafeBufferPointer { engine.bestAction(state: $0, mask: tick.mask) }
                choice = greedy
                // Exploration as the gateway does it: a uniformly random allowed action,
                // logged `actor: exploration` beside the model's own pick.
                let eps = epsilon(controlDecisions)
                controlDecisions += 1
                if greedy != nil, eps > 0, rng.nextUnit() < eps {
                    let allowed = (0..<map.actions.count).filter { tick.mask[$0] }
                    if !allowed.isEmpty {
                        choice = allowed[Int(rng.next() % UInt64(allowed.count))]
                        actor = .exploration
                    }
                }
            }
            if engine != nil && choice == nil {
                actor = .fallback
                result.fallbacks += 1
            }
            tick.open(applied: choice, actor: actor, mode: engine == nil ? .shadow : .control,
                      modelVersion: modelVersion, modelAction: greedy)
            return (choice, tick.hasOpen)
        }

        var decision = deliver(&plant, decide: true)
        for _ in 0..<steps {
            var action: Int
            if let a = decision.action {
                action = a
                result.modelDecisions += 1
                _ = plant.incumbentAction()  // keeps the incumbent's integrator where a plant would (it runs beside)
            } else {
                action = plant.incumbentAction()
                if var d = dither { action = d.apply(action).level; dither = d }
                // Shadow: the gateway observes the incumbent's command on its topic.
                if engine == nil {
                    let payload = Array("{\"\(plant.commandKey)\":\(action)}".utf8)
                    payload.withUnsafeBytes { tick.observeIncumbent(topic: plant.commandTopic, payload: $0) }
                }
            }
            if decision.opened { result.decisions += 1 }
            counts[action] += 1
            plant.step(action)
            onStep?(plant, action)
            decision = deliver(&plant, decide: true)
            if plant.startNextEpisodeIfEnded() {
                decision = deliver(&plant, decide: true)
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
