import EdgeQCore
import EdgeQLog
import EdgeQNet
import EdgeQTopicMap
import Foundation

/// The logic of one tick, once, for every caller: the gateway (`edgeq run`), the lab, the
/// simulators' experiments and the benchmarks all run their ticks through this type, so a
/// learning figure measured in the lab is a figure of the code the gateway ships.
///
/// A tick: assemble the state from the signal table, close the open transition (its reward
/// and next state are this tick's), decide (the model's greedy allowed action, or the safety
/// policy's fallback), explore within limits (control), render the chosen action's writes
/// (all or nothing), and open this tick's transition. What the core does not do is I/O: the
/// caller decodes messages into it (`receive`), publishes the rendered writes
/// (`writeBuffers`), submits the closed transition to its log, and counts the outcome.
///
/// No allocation per tick beyond the transition handed to the log (its state vectors and, when
/// the mapping gives signals a role, its raw signal vectors): the state, signal values, mask,
/// Q-values and write buffers are reused.
public struct DecisionCore: Sendable {
    /// The mapping file.
    public let map: TopicMap
    /// The runtime that assembles states and evaluates the mapping's expressions.
    public var runtime: TopicMapRuntime
    /// The signal table the decoder fills.
    public var table: SignalTable
    /// This tick's state (`map.stateWidth`).
    public private(set) var state: [Float]
    /// Per state input, the margin the support check uses (`TopicMap.stateSupportMargins`;
    /// nil: no input is checked). Built once: the check allocates nothing per tick.
    let supportMargins: [Float]?
    /// This tick's raw values of the signals with a role (`map.loggedSignals`, in order; NaN for
    /// one missing, invalid or stale): the log's `signals` of the transition opened now and
    /// `next_signals` of the one closed now. Empty when no signal has a role.
    public private(set) var signals: [Double]
    /// This tick's Q-values (valid when the outcome says `ranModel`).
    public private(set) var qValues: [Float]
    /// This tick's action mask.
    public private(set) var mask: [Bool]
    /// Ticks so far.
    public private(set) var tick: Int64 = 0
    /// Episodes begun before the current one.
    public private(set) var episode: Int64 = 0
    /// The incumbent's command observed since the last tick (the mapping's `incumbent` section).
    public var pendingIncumbent: Int?
    /// The action the plant reported applying since the last tick (the mapping's `applied` section).
    public var pendingApplied: Int?
    /// The incumbent command that closed the previous shadow transition (the shadow report's
    /// `incumbent_previous`).
    public private(set) var lastIncumbentReported: Int?
    /// The rendered payloads of the applied action's writes (`map.actions[applied].writes`, in
    /// order): the caller publishes them when the outcome has an `applied` action in control.
    public private(set) var writeBuffers: [[UInt8]]
    /// Exploration in control (`learning.exploration` by default).
    public var exploration: ExplorationSchedule
    /// Control decisions so far (the exploration schedule's clock).
    public private(set) var controlDecisions = 0
    /// Explorative decisions so far.
    public private(set) var explorations = 0
    /// With `safety.on_unsupported: incumbent`, after a state outside the served model's
    /// support: ticks in a row inside it still needed before the model takes the plant back
    /// (0: not holding).
    public private(set) var supportHold = 0
    /// The incumbent is in charge because the state left the model's support (control mode
    /// asked; the caller's handover tells the plant).
    public var supportHolding: Bool { supportHold > 0 }

    var open: OpenTransition?
    var gaps: TickGapDetector
    var exploreRNG: SeededGenerator

    /// The decision of tick t, waiting for the reward and state of tick t+1.
    struct OpenTransition: Sendable {
        var time: Double
        var tick: Int64
        /// The `tick.sequence` signal's value at t (nil: none or not valid).
        var sequence: Double?
        var state: [Float]
        /// The raw signal values at t (nil: the mapping gives no signal a role).
        var signals: [Double]?
        var applied: Int?
        var actor: Actor
        var mode: ControlMode
        var modelVersion: String?
        var qValues: [Float]?
        var modelAction: Int?
    }

    /// Exploration with limits: with probability ε (from `start` to `end` over `decaySteps`
    /// control decisions) a uniformly random allowed action instead of the greedy one, as long
    /// as explorative decisions stay within `budget` (a share of all control decisions).
    public struct ExplorationSchedule: Sendable {
        /// ε at the first control decision.
        public var start: Double
        /// ε after `decaySteps` control decisions.
        public var end: Double
        /// Control decisions over which ε moves from `start` to `end` (0: `end` at once).
        public var decaySteps: Int
        /// Explorative decisions allowed, as a share of all control decisions (0: none).
        public var budget: Double

        /// A schedule; `budget` 1 puts no limit on the share.
        public init(start: Double, end: Double, decaySteps: Int, budget: Double) {
            self.start = start
            self.end = end
            self.decaySteps = decaySteps
            self.budget = budget
        }

        /// The mapping file's `learning.exploration` (off unless it sets a budget).
        public init(map: TopicMap) {
            let l = map.learning
            self.init(start: l.epsilonStart, end: l.epsilonEnd, decaySteps: l.epsilonDecaySteps, budget: l.explorationBudget)
        }

        /// No exploration.
        public static let off = ExplorationSchedule(start: 0, end: 0, decaySteps: 0, budget: 0)
    }

    /// What one tick did; the caller publishes, logs and counts from it.
    public struct Outcome: Sendable {
        /// The state's status (`.ok`, stale, invalid, out of range, hand override).
        public var status: StateStatus = .ok
        /// The mode the tick ran in: the caller's, or shadow while the plant is in hand.
        public var mode: ControlMode = .shadow
        /// This tick's state ended an episode (terminal or truncated): no decision was made.
        public var episodeEnded = false
        /// The transition this tick closed (t → t+1), to be logged; nil when none was open or
        /// this tick's state or reward is not usable (`closeSkipped`).
        public var closed: Transition?
        /// A transition was open but could not be closed (unusable state or no reward).
        public var closeSkipped = false
        /// The closed transition was a shadow one without an observed incumbent command.
        public var incumbentMissing = false
        /// The closed shadow transition compared the model's choice with the incumbent's
        /// command, and whether they agreed.
        public var shadowCompared = false
        public var shadowAgreed = false
        /// The model ran (its Q-values are in `qValues`).
        public var ranModel = false
        /// The model's greedy choice among allowed actions (shadow and control).
        public var greedy: Int?
        /// The model's choice after exploration (control), or its greedy choice (shadow).
        public var choice: Int?
        /// The action applied in control (its writes are rendered in `writeBuffers`); nil: hold.
        public var applied: Int?
        /// Who chose the applied action (control), or the incumbent (shadow).
        public var actor: Actor = .incumbent
        /// Why no model choice was applied (nil: none needed).
        public var fallback: FallbackReason?
        /// The choice was an exploration.
        public var explored = false
        /// The engine broke an int8 near-tie with fp32 on this tick.
        public var fp32TieBreak = false
        /// The closed transition was flagged `gap` (missed ticks between its two states).
        public var gap = false
        /// The closed transition was flagged `appliedMismatch` (the plant applied something else).
        public var appliedMismatch = false
        /// The first state input outside the model's training support (`QEngine.support`
        /// widened by `safety.support_margin`); nil: inside, or no check.
        public var outsideSupport: Int?
        /// Control mode was asked, but the incumbent was in charge on this tick because the
        /// state left the model's support (`safety.on_unsupported: incumbent`): the tick ran
        /// in shadow.
        public var supportHeld = false
    }

    /// A core for `map` with empty history; `explorationSeed` seeds the exploration draws.
    public init(map: TopicMap, explorationSeed: UInt64) {
        self.map = map
        runtime = TopicMapRuntime(map: map)
        table = SignalTable(for: map)
        state = [Float](repeating: 0, count: map.stateWidth)
        supportMargins = map.stateSupportMargins
        signals = [Double](repeating: .nan, count: map.loggedSignals.count)
        qValues = [Float](repeating: 0, count: map.actions.count)
        mask = [Bool](repeating: true, count: map.actions.count)
        gaps = TickGapDetector(map: map)
        exploration = ExplorationSchedule(map: map)
        exploreRNG = SeededGenerator(seed: explorationSeed)
        writeBuffers = (0..<max(1, map.actions.map(\.writes.count).max() ?? 1)).map { _ in
            var b: [UInt8] = []
            b.reserveCapacity(1024)
            return b
        }
    }

    /// Whether a transition is open (waiting for the next tick).
    public var hasOpen: Bool { open != nil }

    /// What a message did on its way in.
    public struct Receipt: Sendable {
        /// Signals the message updated.
        public var routed = 0
        /// It carried the incumbent's command.
        public var incumbent = false
        /// It carried the plant's report of the action it applied.
        public var applied = false
        /// It triggers a tick (the mapping's trigger topic).
        public var triggers = false
    }

    /// Takes one plant message: the incumbent's command, the plant's applied report, and the
    /// signals it carries (decoded into `table`). Call `tick` after it when `triggers`.
    public mutating func receive(topic: String, payload: UnsafeRawBufferPointer, time: UInt64) -> Receipt {
        var r = Receipt()
        if let inc = map.incumbent, inc.topic == topic || inc.topic.utf8.contains(UInt8(ascii: "+")) {
            if let a = map.incumbentAction(topic: topic, payload: payload) {
                pendingIncumbent = a
                r.incumbent = true
            }
        }
        if map.applied != nil, map.isAppliedTopic(topic) {
            if let a = map.appliedAction(topic: topic, payload: payload) {
                pendingApplied = a
                r.applied = true
            }
        }
        r.routed = map.decode(topic: topic, payload: payload, time: time, into: &table)
        r.triggers = map.isTrigger(topic: topic)
        return r
    }

    /// One tick at monotonic time `now` (ns; missed ticks are found from it) and `wallClock`
    /// (seconds since 1970, the log's time).
    ///
    /// - Parameters:
    ///   - mode: who is in charge: `.control` (the model decides and its action is rendered),
    ///     or `.shadow` (the model is asked, the incumbent acts; the log records the
    ///     incumbent's command observed before the next tick).
    ///   - engine: the model to ask (nil: none; in control that is a fallback).
    ///   - modelVersion: the model's name in the log.
    ///
    /// In control every model's decision may explore (`exploration`): served, in a trial's arm
    /// or in a control group's block alike, so a trial judges each model as it would run served.
    public mutating func tick(now: UInt64, wallClock: Double, mode requested: ControlMode,
                              engine: QEngine?, modelVersion: String?) -> Outcome {
        tick += 1
        var out = Outcome()
        let status = state.withUnsafeMutableBufferPointer {
            runtime.assembleState(from: table, now: now, wallClock: wallClock, into: $0)
        }
        out.status = status
        // The raw values of the signals with a role, as of this tick (assembleState refreshed
        // them). Like `state`, the array is shared with the open transition, so writing it
        // copies once per tick: the transition's own vector, handed to the log.
        if !signals.isEmpty {
            signals.withUnsafeMutableBufferPointer { runtime.loggedSignalValues(into: $0) }
        }
        // While the plant is in hand (safety.hand_override), the gateway only shadows.
        var mode: ControlMode = status == .handOverride ? .shadow : requested
        let reward = runtime.reward()
        let terminal = runtime.terminal() ?? false
        let truncated = runtime.truncated() ?? false
        // A state the model was never trained near (its support box, widened by the margin):
        // what its network does there was not learned, and no check or trial saw it.
        if status == .ok, let margins = supportMargins, let box = engine?.support {
            out.outsideSupport = state.withUnsafeBufferPointer { s in margins.withUnsafeBufferPointer { box.firstOutside(s, margins: $0) } }
        }
        if requested == .shadow || terminal || truncated {
            supportHold = 0   // the incumbent is in charge anyway, or a new episode begins
        } else if mode == .control, map.safety.onUnsupported == .incumbent {
            if out.outsideSupport != nil {
                supportHold = max(1, map.safety.supportHold)
            } else if status == .ok, supportHold > 0 {
                supportHold -= 1
            }
            if supportHold > 0 {
                mode = .shadow
                out.supportHeld = true
            }
        }
        out.mode = mode
        let allowedCount = mask.withUnsafeMutableBufferPointer { runtime.actionMask(into: $0) }
        // Missed ticks since the previous one: by the clock, and by the plant's step counter.
        let clockGap = gaps.observe(now)
        var sequence: Double?
        if let si = map.sequenceSignal, table.status(of: si) == .valid { sequence = table.values[si] }
        let usable = status == .ok || status.isOOD

        close(&out, stateOK: usable, reward: reward, terminal: terminal, truncated: truncated,
              sequence: sequence, clockGap: clockGap)

        if terminal || truncated {
            // The end of an episode is not a decision point; the next state starts a new one.
            out.episodeEnded = true
            episode += 1
            runtime.resetHistory()
            open = nil
            pendingIncumbent = nil
            pendingApplied = nil
            return out
        }

        // Decide.
        out.actor = mode == .shadow ? .incumbent : .model
        if status != .ok {
            out.fallback = FallbackReason(status)
        } else if let engine {
            let asked = engine.fp32Decisions
            let best = state.withUnsafeBufferPointer { s in
                qValues.withUnsafeMutableBufferPointer { q in engine.bestAction(state: s, mask: mask, qValues: q) }
            }
            out.fp32TieBreak = engine.fp32Decisions != asked
            out.ranModel = true
            if !qValues.allSatisfy({ $0.isFinite }) {
                out.fallback = .nonFiniteQ
            } else if best == nil || allowedCount == 0 {
                out.fallback = .noAllowedAction
            } else {
                out.greedy = best
                out.choice = best
            }
        } else if mode == .control {
            out.fallback = .noModel
        }

        if mode == .control, out.fallback == nil, out.outsideSupport != nil {
            switch map.safety.onUnsupported {
            case .fallback, .hold: out.fallback = .outsideSupport
            case .none, .incumbent: break   // act anyway; or the incumbent is in charge (shadow)
            }
        }

        if mode == .control {
            if let reason = out.fallback {
                out.actor = .fallback
                let response: SafetyConfig.Response
                if status != .ok {
                    response = status.response(map.safety) ?? .fallback
                } else if reason == .outsideSupport, map.safety.onUnsupported == .hold {
                    response = .hold
                } else {
                    response = .fallback
                }
                // A fallback that cannot be rendered is not published: hold.
                if response == .fallback, let fb = map.fallbackAction, render(fb) { out.applied = fb }
                _ = reason
            } else if var choice = out.choice {
                if let explored = explore() {
                    choice = explored
                    out.choice = explored
                    out.actor = .exploration
                    out.explored = true
                }
                // `{{model}}`: the version of the model whose choice this is (its exploration too).
                if render(choice, model: modelVersion.flatMap { Int($0) }) {
                    out.applied = choice
                } else {
                    // One of the action's writes cannot be rendered (an invalid value): nothing of
                    // it goes out. Fall back, and log the row as the fallback it is.
                    out.fallback = .renderFailed
                    out.actor = .fallback
                    if let fb = map.fallbackAction, fb != choice, render(fb) { out.applied = fb }
                }
            }
            runtime.recordApplied(action: out.applied)
        }

        // Open the transition of this tick (only from a usable state).
        if usable {
            open = OpenTransition(
                time: wallClock, tick: tick, sequence: sequence, state: state,
                signals: signals.isEmpty ? nil : signals, applied: out.applied, actor: out.actor,
                mode: mode, modelVersion: modelVersion, qValues: out.ranModel ? qValues : nil, modelAction: out.choice)
        } else {
            open = nil
        }
        pendingIncumbent = nil
        pendingApplied = nil
        return out
    }

    /// Renders every write of `action` into `writeBuffers`, or reports that one cannot be
    /// rendered (nothing of it may be published then). `model`: the version `{{model}}` writes
    /// (nil, `null`, for a fallback).
    mutating func render(_ action: Int, model: Int? = nil) -> Bool {
        let writes = map.actions[action].writes
        for j in writes.indices {
            writeBuffers[j].removeAll(keepingCapacity: true)
            guard runtime.render(action: action, write: j, into: &writeBuffers[j], model: model) else { return false }
        }
        return true
    }

    /// Exploration with limits (control): see `ExplorationSchedule`.
    mutating func explore() -> Int? {
        let l = exploration
        controlDecisions += 1
        guard l.budget > 0, Double(explorations) < l.budget * Double(controlDecisions) else { return nil }
        let progress = l.decaySteps > 0 ? min(1, Double(controlDecisions) / Double(l.decaySteps)) : 1
        let epsilon = l.start + (l.end - l.start) * progress
        guard epsilon > 0, exploreRNG.nextUnit() < epsilon, let action = exploreRNG.randomAllowed(mask) else { return nil }
        explorations += 1
        return action
    }

    /// Starts the exploration schedule's clock at `decisions` control decisions already made
    /// (a lab run that continues a gateway's schedule).
    public mutating func setControlDecisions(_ decisions: Int) { controlDecisions = decisions }

    /// Closes the open transition with this tick's reward and state, flagged `gap` when ticks
    /// were missed between the two (`clockGap`, or `sequence` not the previous one + 1) and
    /// `appliedMismatch` when the plant reported applying another action than the one published.
    mutating func close(_ out: inout Outcome, stateOK: Bool, reward: Double?, terminal: Bool, truncated: Bool,
                        sequence: Double?, clockGap: Bool) {
        guard let o = open else { return }
        open = nil
        guard stateOK, let reward else {
            out.closeSkipped = true
            return
        }
        var action = o.applied
        var actor = o.actor
        if o.mode == .shadow {
            // The behaviour is the incumbent's command observed between tick t and t+1.
            action = pendingIncumbent
            actor = .incumbent
            lastIncumbentReported = pendingIncumbent
            if pendingIncumbent == nil { out.incumbentMissing = true }
            if let mine = o.modelAction, let theirs = pendingIncumbent {
                out.shadowCompared = true
                out.shadowAgreed = mine == theirs
            }
        }
        var flags: TransitionFlags = []
        if clockGap {
            flags.insert(.gap)
        } else if map.sequenceSignal != nil {
            // Unknown on either side: continuity cannot be shown, so the row is not one step.
            if let before = o.sequence, let after = sequence, after == before + 1 {} else { flags.insert(.gap) }
        }
        out.gap = flags.contains(.gap)
        if o.mode == .control, let reported = pendingApplied, reported != o.applied {
            // The plant applied something else than what was published (or published nothing):
            // the row records what the plant did, chosen by the plant.
            flags.insert(.appliedMismatch)
            out.appliedMismatch = true
            action = reported
            actor = .incumbent
        }
        var bits: UInt64 = 0
        for (i, ok) in mask.enumerated() where ok && i < 64 { bits |= 1 << UInt64(i) }
        out.closed = Transition(
            time: o.time, tick: o.tick, episode: episode, state: o.state, action: action, actor: actor,
            reward: reward, nextState: state, nextMask: bits, terminal: terminal, truncated: truncated,
            mode: o.mode, modelVersion: o.modelVersion, qValues: o.qValues, modelAction: o.modelAction, flags: flags,
            signals: o.signals, nextSignals: o.signals == nil ? nil : signals)
    }
}

extension StateStatus {
    /// The state can be logged and decided on with care (out of the expected range).
    var isOOD: Bool {
        if case .outOfDistribution = self { return true }
        return false
    }

    /// The state can be logged: ok, or out of the expected range.
    public var isUsable: Bool { self == .ok || isOOD }
}
