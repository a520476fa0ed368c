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
