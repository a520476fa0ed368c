import EdgeQCore
import EdgeQPlants
import Testing

@Suite struct CartPoleTests {
    @Test func sameSeedSameEpisode() {
        var a = CartPole(seed: 7)
        var b = CartPole(seed: 7)
        #expect(a.observation == b.observation)
        for i in 0..<50 {
            let sa = a.step(i % 3 == 0 ? 1 : 0)
            let sb = b.step(i % 3 == 0 ? 1 : 0)
            #expect(sa.observation == sb.observation)
        }
    }

    @Test func alwaysPushingRightFallsWithinAFewDozenSteps() {
        var env = CartPole(seed: 1)
        var steps = 0
        while true {
            let s = env.step(1)
            steps += 1
            if s.terminal || s.truncated {
                #expect(s.terminal)
                break
            }
        }
        // A constant push tips the pole past 12° quickly (Gymnasium: ~9–10 steps).
        #expect(steps > 5 && steps < 40)
    }

    @Test func firstStepMatchesTheEulerEquations() {
        var env = CartPole(seed: 3)
        let (x, xd, th, thd) = env.state
        let s = env.step(1)
        // x and θ advance by τ·velocity (explicit Euler, as in Gymnasium).
        #expect(abs(s.observation[0] - (x + 0.02 * xd)) < 1e-12)
        #expect(abs(s.observation[2] - (th + 0.02 * thd)) < 1e-12)
        // Pushing right accelerates the cart right.
        #expect(s.observation[1] > xd)
    }

    @Test func generatorIsDeterministicAndUniform() {
        var g = SeededGenerator(seed: 42)
        var h = SeededGenerator(seed: 42)
        var sum = 0.0
        for _ in 0..<10_000 {
            let u = g.nextUnit()
            #expect(u == h.nextUnit())
            #expect(u >= 0 && u < 1)
            sum += u
        }
        #expect(abs(sum / 10_000 - 0.5) < 0.02)
    }
}
