import EdgeQCore
import EdgeQPlants
import Foundation
import Testing

@Suite struct TankTests {
    @Test func sameSeedSameRun() {
        func run(_ seed: UInt64) -> [TankStep] {
            var tank = Tank(seed: seed)
            var pi = TankPI(tank: tank)
            var obs = tank.observation
            var out: [TankStep] = []
            for _ in 0..<500 {
                obs = tank.step(valve: pi.decide(obs))
                out.append(obs)
            }
            return out
        }
        #expect(run(4) == run(4))
        #expect(run(4).map(\.inflow) != run(5).map(\.inflow))
    }

    @Test func closedValveFillsAndOverflowsOpenValveDrains() {
        var tank = Tank(seed: 0)
        var last = tank.level
        var overflowed = false
        for _ in 0..<600 {
            let s = tank.step(valve: 0)
            #expect(s.level >= last)
            last = s.level
            if s.overflow == 1 { overflowed = true }
        }
        #expect(overflowed && tank.level == 2.0)
        for _ in 0..<60 { _ = tank.step(valve: 4) }
        #expect(tank.level < 2.0)
    }

    @Test(arguments: [UInt64(0), 1, 2])
    func piHoldsTheLevelNearTheSetpoint(seed: UInt64) {
        var tank = Tank(seed: seed)
        var pi = TankPI(tank: tank)
        var obs = tank.observation
        var worst = 0.0
        for i in 0..<2000 {
            obs = tank.step(valve: pi.decide(obs))
            if i > 100 { worst = max(worst, abs(obs.level - obs.setpoint)) }
        }
        #expect(tank.score.meanAbsError < 0.04, "MAE \(tank.score.meanAbsError) m")
        #expect(worst < 0.2, "worst error \(worst) m")
        #expect(tank.score.overflows == 0)
        #expect(obs.truncated)
    }
}

@Suite struct CartPoleRuleTests {
    func meanReturn(episodes: Int, seed: UInt64, policy: (inout SeededGenerator, [Double]) -> Int) -> Double {
        var env = CartPole(seed: seed)
        var rng = SeededGenerator(seed: seed &+ 99)
        var returns = EpisodeReturns()
        var obs = env.observation
        while returns.returns.count < episodes {
            let s = env.step(policy(&rng, obs))
            returns.add(reward: s.reward, ended: s.terminal || s.truncated)
            obs = (s.terminal || s.truncated) ? env.reset() : s.observation
        }
        return returns.mean
    }

    @Test func ruleIsWeakButBetterThanRandom() {
        let rule = CartPoleRule()
        let ruled = meanReturn(episodes: 100, seed: 0) { _, o in rule.decide(o) }
        let random = meanReturn(episodes: 100, seed: 0) { rng, _ in rng.nextUnit() < 0.5 ? 1 : 0 }
        #expect(ruled < 150, "rule mean return \(ruled)")
        #expect(ruled > 1.5 * random, "rule \(ruled) vs random \(random)")
    }

    @Test func addingTheAngularVelocityBalancesFully() {
        // Why the default rule ignores θ̇: θ + θ̇/2 reaches the 500-step limit.
        let rule = CartPoleRule(velocityGain: 0.5)
        #expect(meanReturn(episodes: 10, seed: 1) { _, o in rule.decide(o) } == 500)
    }
}

@Suite struct DitherTests {
    @Test func changesByExactlyOneLevelAtAboutTheGivenShare() {
        var dither = Dither(probability: 0.1, levelCount: 5, seed: 9)
        var rng = SeededGenerator(seed: 10)
        var changed = 0
        let n = 20_000
        for _ in 0..<n {
            let level = Int(rng.next() % 5)
            let (out, dithered) = dither.apply(level)
            #expect((0..<5).contains(out))
            if dithered {
                changed += 1
                #expect(abs(out - level) == 1)
            } else {
                #expect(out == level)
            }
        }
        let share = Double(changed) / Double(n)
        #expect(abs(share - 0.1) < 0.01, "share \(share)")
    }

    @Test func offByDefaultAndDeterministic() {
        var off = Dither(probability: 0, levelCount: 5, seed: 1)
        for l in 0..<5 { #expect(off.apply(l) == (l, false)) }
        var a = Dither(probability: 0.3, levelCount: 5, seed: 2)
        var b = Dither(probability: 0.3, levelCount: 5, seed: 2)
        for i in 0..<1000 { #expect(a.apply(i % 5) == b.apply(i % 5)) }
    }
}

@Suite struct StateMessageTests {
    func keys<T: Encodable>(_ value: T) throws -> Set<String> {
        let object = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(value)) as? [String: Any]
        return Set(try #require(object).keys)
    }

    @Test func cartPoleAndTankMessagesHaveTheDocumentedFields() throws {
        var env = CartPole(seed: 0)
        let s = env.step(1)
        let message = CartPoleState(step: 1, episode: 0, observation: s.observation, reward: s.reward,
                                    terminal: s.terminal, truncated: s.truncated)
        #expect(message.theta == s.observation[2] && message.xDot == s.observation[1])
        #expect(try keys(message) == ["step", "episode", "x", "x_dot", "theta", "theta_dot", "reward", "terminal", "truncated"])
        #expect(try keys(Tank(seed: 0).observation) == ["step", "episode", "level", "setpoint", "inflow", "valve", "overflow", "reward", "truncated"])
    }
}
