/// One step of experience: (s_t, a_t, r_{t+1}, s_{t+1}) with how the episode went on.
///
/// Semantics (docs/learning.md): `terminal` → no bootstrap from `nextState`; `truncated`
/// (time limit, outside reset) → bootstrap as usual; no transition links two episodes.
public struct Transition: Sendable, Equatable {
    /// The raw state at tick t, (inputCount).
    public var state: [Float]
    /// The action taken at t (the incumbent's when `fromIncumbent`).
    public var action: Int
    /// The reward observed at t + 1.
    public var reward: Float
    /// The raw state at t + 1, (inputCount).
    public var nextState: [Float]
    /// The plant reached an end state: the target does not bootstrap.
    public var terminal: Bool
    /// The episode was cut (time limit, reset from outside): the target bootstraps as usual.
    public var truncated: Bool
    /// Actions allowed in `nextState` (nil = all); the bootstrap's argmax respects it. A mask
    /// that allows nothing counts as nil: it does not stop the bootstrap (only `terminal` does).
    public var nextMask: [Bool]?
    /// The incumbent controller chose `action` (learned with the CQL term).
    public var fromIncumbent: Bool

    /// A transition; see the properties for each argument.
    public init(state: [Float], action: Int, reward: Float, nextState: [Float], terminal: Bool, truncated: Bool = false,
                nextMask: [Bool]? = nil, fromIncumbent: Bool = false) {
        self.state = state
        self.action = action
        self.reward = reward
        self.nextState = nextState
        self.terminal = terminal
        self.truncated = truncated
        self.nextMask = nextMask
        self.fromIncumbent = fromIncumbent
    }
}

/// A minibatch of n-step transitions, flat and row-major, as the update reads it.
public struct Batch: Sendable {
    /// (B, inputCount) states, already normalised.
    public var states: [Float]
    /// (B) actions.
    public var actions: [Int]
    /// (B) discounted n-step returns Σ_k γ^k r_{t+k+1}.
    public var returns: [Float]
    /// (B, inputCount) the state n steps later (or where the episode ended), normalised.
    public var nextStates: [Float]
    /// (B) γ^k for k steps to `nextStates`; 0 when the episode ended terminal (no bootstrap).
    public var discounts: [Float]
    /// (B, A) allowed actions in `nextStates`.
    public var nextMasks: [Bool]
    /// (B) learned with the CQL term.
    public var fromIncumbent: [Bool]
    /// (B) importance weights (1 for uniform replay).
    public var weights: [Float]
    /// (B) replay slots, to update priorities.
    public var indices: [Int]

    /// An empty batch of `size` rows.
    public init(size: Int, inputCount: Int, actionCount: Int) {
        states = .init(repeating: 0, count: size * inputCount)
        actions = .init(repeating: 0, count: size)
        returns = .init(repeating: 0, count: size)
        nextStates = .init(repeating: 0, count: size * inputCount)
        discounts = .init(repeating: 0, count: size)
        nextMasks = .init(repeating: true, count: size * actionCount)
        fromIncumbent = .init(repeating: false, count: size)
        weights = .init(repeating: 1, count: size)
        indices = .init(repeating: 0, count: size)
    }

    /// Number of rows.
    public var count: Int { actions.count }
}
