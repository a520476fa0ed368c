/// The cart-pole state message (`plant/cartpole/state`, docs/simulators.md). `reward`,
/// `terminal` and `truncated` describe the step that led to this state; the first state of
/// an episode has reward 0.
public struct CartPoleState: Sendable, Equatable, Codable {
    /// Steps taken in this episode.
    public var step: Int
    /// Episode number.
    public var episode: Int
    /// Cart position, m.
    public var x: Double
    /// Cart velocity, m/s.
    public var xDot: Double
    /// Pole angle, rad (0 upright).
    public var theta: Double
    /// Pole angular velocity, rad/s.
    public var thetaDot: Double
    /// Reward of the last step (1 per step, 0 at an episode's start).
    public var reward: Double
    /// The pole fell or the cart left the track.
    public var terminal: Bool
    /// The 500-step limit was reached.
    public var truncated: Bool

    /// A message from a cart-pole observation (x, ẋ, θ, θ̇); missing entries read as 0.
    public init(step: Int, episode: Int, observation: [Double], reward: Double = 0,
                terminal: Bool = false, truncated: Bool = false) {
        func at(_ i: Int) -> Double { i < observation.count ? observation[i] : 0 }
        self.step = step
        self.episode = episode
        x = at(0)
        xDot = at(1)
        theta = at(2)
        thetaDot = at(3)
        self.reward = reward
        self.terminal = terminal
        self.truncated = truncated
    }

    enum CodingKeys: String, CodingKey {
        case step, episode, x, xDot = "x_dot", theta, thetaDot = "theta_dot", reward, terminal, truncated
    }
}

/// Cart-pole run episode after episode with its weak rule as incumbent: the state message
/// to publish, the returns, and a new episode after the state that ended one was published.
/// Shared by `edgeq sim cartpole` and the lab.
public struct CartPoleEpisodes: Sendable {
    /// The plant.
    public private(set) var env: CartPole
    /// The incumbent.
    public var rule = CartPoleRule()
    /// The current state message.
    public private(set) var message: CartPoleState
    /// Episode returns.
    public private(set) var returns = EpisodeReturns()
    /// Episodes begun before the current one.
    public private(set) var episode = 0
    var pendingReset = false

    /// A cart-pole drawing from `seed`.
    public init(seed: UInt64) {
        env = CartPole(seed: seed)
        message = CartPoleState(step: 0, episode: 0, observation: env.observation)
    }

    /// The weak rule's action for the current state.
    public func incumbentAction() -> Int { rule.decide(env.observation) }

    /// Applies `action`; the message then says how the step ended.
    public mutating func step(_ action: Int) {
        let s = env.step(action)
        returns.add(reward: s.reward, ended: s.terminal || s.truncated)
        message = CartPoleState(step: env.steps, episode: episode, observation: s.observation,
                                reward: s.reward, terminal: s.terminal, truncated: s.truncated)
        // The next message starts a new episode; the one just built says how this one ended.
        if s.terminal || s.truncated { pendingReset = true }
    }

    /// After the state that ended an episode was published: starts the next one (true).
    public mutating func startNextEpisodeIfEnded() -> Bool {
        guard pendingReset else { return false }
        pendingReset = false
        episode += 1
        let obs = env.reset()
        message = CartPoleState(step: 0, episode: episode, observation: obs)
        return true
    }
}
