/// Who chose the action of a transition.
public enum Actor: String, Sendable, Hashable, CaseIterable, Codable {
    /// The Q-network (control mode).
    case model
    /// The plant's own controller (shadow mode, or control mode when the gateway handed back).
    case incumbent
    /// An exploration choice (dither or exploration budget), not the greedy one.
    case exploration
    /// The safety fallback (stale, invalid or out-of-range input).
    case fallback
}

/// The gateway's mode when the transition was recorded.
public enum ControlMode: String, Sendable, Hashable, CaseIterable, Codable {
    /// EdgeQ decides and reports; the incumbent is in charge.
    case shadow
    /// EdgeQ's commands drive the plant.
    case control
}

/// Marks on a logged transition (the `flags` column, a bitmask). docs/log.md lists the bits.
public struct TransitionFlags: OptionSet, Sendable, Hashable, Codable {
    /// The bits as stored.
    public let rawValue: Int64
    /// Flags from their stored bits.
    public init(rawValue: Int64) { self.rawValue = rawValue }

    /// Ticks were missed between `state` and `nextState` (the mapping's `tick.sequence` skipped,
    /// or more time passed than `tick.max_gap` allows): not one step, never learned from as one.
    public static let gap = TransitionFlags(rawValue: 1)
    /// In control, the plant reported (on the mapping's `applied` topic) an action other than
    /// the one the gateway published; `action` is the reported one.
    public static let appliedMismatch = TransitionFlags(rawValue: 2)
}

/// One transition: the state at tick t, the action applied at t, the reward observed at
/// t+1 and the state at t+1 (DESIGN.md, learning semantics).
public struct Transition: Sendable, Equatable {
    /// Wall time of tick t, seconds since 1970-01-01 UTC.
    public var time: Double
    /// Tick number t (monotonic within a gateway run).
    public var tick: Int64
    /// Episode number; no transition links two episodes.
    public var episode: Int64
    /// The normalised state vector at t.
    public var state: [Float]
    /// The action applied at t; nil when it was not observed (shadow mode, the incumbent's
    /// command did not arrive): such a row must not be learned from as if it were known.
    public var action: Int?
    /// Who chose `action`.
    public var actor: Actor
    /// The reward observed at t+1 for this transition.
    public var reward: Double
    /// The normalised state vector at t+1 (same width as `state`).
    public var nextState: [Float]
    /// Actions allowed in `nextState`, bit i for action i; nil: all allowed. The learner's
    /// bootstrap takes its max over these only.
    public var nextMask: UInt64?
    /// The plant reached an end state at t+1: do not bootstrap.
    public var terminal: Bool
    /// The episode was cut at t+1 (time limit, outside reset): bootstrap as usual.
    public var truncated: Bool
    /// The gateway's mode at t.
    public var mode: ControlMode
    /// The version of the model that produced `qValues` (nil when none was loaded).
    public var modelVersion: String?
    /// The model's Q-values at `state`, one per action (nil when the model was not run).
    public var qValues: [Float]?
    /// The model's greedy (masked) choice at t, which in shadow mode may differ from `action`.
    public var modelAction: Int?
    /// Marks (missed ticks, a plant that applied something else); empty for an ordinary row.
    public var flags: TransitionFlags
    /// The raw values at t of the mapping's signals that have a role (`role: controlled` or
    /// `exogenous`), in the writer's order (`TransitionWriter.Options.signalNames`): decoded
    /// values in the signals' units, NaN for one missing, invalid or stale. Nil: not recorded.
    public var signals: [Double]?
    /// The same signals at t+1 (same order and count as `signals`).
    public var nextSignals: [Double]?

    /// A transition; the optional fields default to "not available".
    public init(
        time: Double, tick: Int64, episode: Int64, state: [Float], action: Int?, actor: Actor,
        reward: Double, nextState: [Float], nextMask: UInt64? = nil, terminal: Bool = false,
        truncated: Bool = false, mode: ControlMode, modelVersion: String? = nil,
        qValues: [Float]? = nil, modelAction: Int? = nil, flags: TransitionFlags = [],
        signals: [Double]? = nil, nextSignals: [Double]? = nil
    ) {
        self.time = time
        self.tick = tick
        self.episode = episode
        self.state = state
        self.action = action
        self.actor = actor
        self.reward = reward
        self.nextState = nextState
        self.nextMask = nextMask
        self.terminal = terminal
        self.truncated = truncated
        self.mode = mode
        self.modelVersion = modelVersion
        self.qValues = qValues
        self.modelAction = modelAction
        self.flags = flags
        self.signals = signals
        self.nextSignals = nextSignals
    }
}

/// A transition read back from the log, with its row id (increasing in the order the
/// rows were submitted).
public struct LoggedTransition: Sendable, Equatable {
    /// The row id (`transitions.id`).
    public var id: Int64
    /// The transition.
    public var transition: Transition
    /// The names of `transition.signals` and `transition.nextSignals`, in their order (from the
    /// log's `signal_sets` table); nil when the row has no signal values.
    public var signalNames: [String]? = nil

    /// A row: its id, the transition, the names of its signal values.
    public init(id: Int64, transition: Transition, signalNames: [String]? = nil) {
        self.id = id
        self.transition = transition
        self.signalNames = signalNames
    }
}

/// Which rows to read or export.
public enum LogWindow: Sendable, Equatable {
    /// Every row.
    case all
    /// The last `n` rows (by id).
    case lastRows(Int)
    /// Rows whose `time` is at or after this instant (seconds since 1970).
    case since(Double)
    /// Rows whose id is greater than this one (for incremental readers).
    case afterID(Int64)
}
