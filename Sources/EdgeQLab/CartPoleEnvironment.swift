import EdgeQCore
import EdgeQLearner
import EdgeQNet
import EdgeQPlants

/// The cart-pole of EdgeQPlants (Gymnasium v1 physics, 500-step limit) as a learner
/// environment: for the learning smoke test and `edgeq bench learn|inference`.
public struct CartPoleEnvironment: Environment {
    /// The plant.
    public var plant: CartPole

    /// A plant seeded with `seed`.
    public init(seed: UInt64) { plant = CartPole(seed: seed) }

    public mutating func reset() -> [Float] { plant.reset().map(Float.init) }

    public mutating func step(_ action: Int) -> (state: [Float], reward: Float, terminal: Bool, truncated: Bool) {
        let s = plant.step(action)
        return (s.observation.map(Float.init), Float(s.reward), s.terminal, s.truncated)
    }

    /// The states an ε-greedy rollout of `net` visits ((steps, 4) row-major, raw), across
    /// as many episodes as it takes: calibration and held-out states for quantization.
    public static func rollout(_ net: MLP, seed: UInt64, steps: Int, epsilon: Double) -> [Float] {
        var env = CartPoleEnvironment(seed: seed)
        var rng = SeededGenerator(seed: seed)
        var s = env.reset()
        var out: [Float] = []
        out.reserveCapacity(steps * 4)
        for _ in 0..<steps {
            out += s
            var a = s.withUnsafeBufferPointer { net.greedyAction($0.baseAddress!, mask: nil) } ?? 0
            if rng.nextUnit() < epsilon { a = Int(rng.next() % 2) }
            let r = env.step(a)
            s = (r.terminal || r.truncated) ? env.reset() : r.state
        }
        return out
    }
}
