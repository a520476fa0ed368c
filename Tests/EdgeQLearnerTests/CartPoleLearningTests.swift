import EdgeQCore
import EdgeQLearner
import EdgeQNet
import EdgeQPlants
import Testing

/// The cart-pole of EdgeQPlants (Gymnasium v1 physics, 500-step limit) as a learner environment.
struct CartPoleEnv: Environment {
    var plant: CartPole
    init(seed: UInt64) { plant = CartPole(seed: seed) }
    mutating func reset() -> [Float] { plant.reset().map(Float.init) }
    mutating func step(_ action: Int) -> (state: [Float], reward: Float, terminal: Bool, truncated: Bool) {
        let s = plant.step(action)
        return (s.observation.map(Float.init), Float(s.reward), s.terminal, s.truncated)
    }
}

/// The cart-pole settings used by the smoke test (and documented in docs/learning.md).
func cartPoleConfig() -> DQNConfig {
    var c = DQNConfig()
    c.learningRate = 1e-3
    c.batchSize = 64
    c.nStep = 3
    c.epsilonDecaySteps = 5_000
    c.epsilonEnd = 0.02
    c.learningStarts = 500
    c.polyakTau = 0.01
    c.cqlWeight = 0
    return c
}

@Suite struct CartPoleLearningTests {
    @Test func reachesMeanReturn195Within20000Steps() throws {
        setBLASThreads(1)
        let learner = try DQNLearner(config: cartPoleConfig(), architecture: Architecture(inputCount: 4, hidden: [64, 64], actionCount: 2), seed: 1)
        var env = CartPoleEnv(seed: 11), evalEnv = CartPoleEnv(seed: 12)
        var loop = OnlineTraining()
        loop.evaluationInterval = 1_000
        loop.evaluationEpisodes = 10
        loop.stopAtReturn = 195
        let curve = loop.run(learner, environment: &env, evaluationEnvironment: &evalEnv, steps: 20_000)
        print("cart-pole curve:", curve.map { "\($0.step):\(Int($0.meanReturn))" }.joined(separator: " "))
        #expect((curve.last?.meanReturn ?? 0) >= 195)
    }
}
