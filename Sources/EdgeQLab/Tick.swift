import EdgeQLog
import EdgeQTopicMap

/// The gateway's per-tick bookkeeping without MQTT or threads: assemble the state, take the
/// reward and episode flags from the mapping, close the open transition (t → t+1), open the
/// next one. Mirrors `Gateway.decide` / `closeTransition` line by line (see the report in
/// docs/learning.md, "The lab": the gateway could call this type instead of its own copy).
public struct Tick: Sendable {
    /// The mapping file.
    public let map: TopicMap
    /// The signal table the decoder fills.
    public var table: SignalTable
    /// The runtime that assembles states and evaluates expressions.
    public var runtime: TopicMapRuntime
    /// This tick's state (`map.stateWidth`).
    public private(set) var state: [Float]
    /// This tick's action mask.
    public private(set) var mask: [Bool]
    /// This tick's state status.
    public private(set) var stateStatus: StateStatus = .ok
    /// This tick's state ended an episode (terminal or truncated): no decision.
    public private(set) var episodeEnded = false
    /// Ticks so far.
    public private(set) var tick: Int64 = 0
    /// Episodes begun before this one.
    public private(set) var episode: Int64 = 0

    struct Open {
        var tick: Int64
        var state: [Float]
        var applied: Int?
        var actor: Actor
        var mode: ControlMode
        var modelVersion: String?
        var modelAction: Int?
    }
    var openTransition: Open?
    var pendingIncumbent: Int?

    /// A tick for `map` with empty history.
    public init(map: TopicMap) {
        self.map = map
        table = SignalTable(for: map)
        runtime = TopicMapRuntime(map: map)
        state = [Float](repeating: 0, count: map.stateWidth)
        mask = [Bool](repeating: true, count: map.actions.count)
    }

    /// Whether a transition is open (waiting for the next tick).
    public var hasOpen: Bool { openTransition != nil }

    /// The state can be decided on or logged (ok, or out of the expected range).
    public var stateUsable: Bool {
        if stateStatus == .ok { return true }
        if case .outOfDistribution = stateStatus { return true }
        return false
    }

    /// The incumbent's command as the gateway observes it (the mapping's `incumbent` topic).
    public mutating func observeIncumbent(topic: String, payload: UnsafeRawBufferPointer) {
        if let a = map.incumbentAction(topic: topic, payload: payload) { pendingIncumbent = a }
    }

    /// Starts a tick after the trigger message was decoded into `table`: assembles the state,
    /// and returns the transition it closes (nil when none was open or this state or reward
    /// is not usable, as the gateway skips it).
    public mutating func beginTick(now: UInt64, wallClock: Double) -> Transition? {
        tick += 1
        stateStatus = state.withUnsafeMutableBufferPointer {
            runtime.assembleState(from: table, now: now, wallClock: wallClock, into: $0)
        }
        let reward = runtime.reward()
        let terminal = runtime.terminal() ?? false
        let truncated = runtime.truncated() ?? false
        _ = mask.withUnsafeMutableBufferPointer { runtime.actionMask(into: $0) }
        let closed = close(reward: reward, terminal: terminal, truncated: truncated)
        episodeEnded = terminal || truncated
        if episodeEnded {
            episode += 1
            runtime.resetHistory()
            openTransition = nil
            pendingIncumbent = nil
        }
        return closed
    }

    private mutating func close(reward: Double?, terminal: Bool, truncated: Bool) -> Transition? {
        guard let o = openTransition else { return nil }
        openTransition = nil
        guard stateUsable, let reward else { return nil }
        var action = o.applied
        var actor = o.actor
        if o.mode == .shadow {
            // The behaviour is the incumbent's command observed between tick t and t+1.
            action = pendingIncumbent
            actor = .incumbent
        }
        var bits: UInt64 = 0
        for (i, ok) in mask.enumerated() where ok && i < 64 { bits |= 1 << UInt64(i) }
        return Transition(
            time: Double(o.tick), tick: o.tick, episode: episode, state: o.state, action: action, actor: actor,
            reward: reward, nextState: state, nextMask: bits, terminal: terminal, truncated: truncated,
            mode: o.mode, modelVersion: o.modelVersion, qValues: nil, modelAction: o.modelAction)
    }

    /// Opens this tick's transition (only from a usable state) with the action applied (nil:
    /// hold, or shadow) and who chose it; records the applied action for `min_dwell` in control.
    public mutating func open(applied: Int?, actor: Actor, mode: ControlMode, modelVersion: String?, modelAction: Int?) {
        if mode == .control { runtime.recordApplied(action: applied) }
        if stateUsable && !episodeEnded {
            openTransition = Open(tick: tick, state: state, applied: applied, actor: actor, mode: mode,
                                  modelVersion: modelVersion, modelAction: modelAction)
        } else {
            openTransition = nil
        }
        pendingIncumbent = nil
    }
}
