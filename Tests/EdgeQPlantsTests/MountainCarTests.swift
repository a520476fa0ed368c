import EdgeQPlants
import Foundation
import Testing

/// MountainCar-v0 against trajectories computed from Gymnasium's published step function.
///
/// The reference values were computed independently with this Python (numpy 2.4), a
/// transcription of `MountainCarEnv.step` in gymnasium/envs/classic_control/mountain_car.py
/// (float64 state, `math.cos`, `np.clip`), and printed with `repr`:
///
///     def step(state, action):
///         position, velocity = state
///         velocity += (action - 1) * 0.001 + math.cos(3 * position) * (-0.0025)
///         velocity = np.clip(velocity, -0.07, 0.07)
///         position += velocity
///         position = np.clip(position, -1.2, 0.6)
///         if position == -1.2 and velocity < 0:
///             velocity = 0
///         return (position, velocity), bool(position >= 0.5 and velocity >= 0)
@Suite struct MountainCarTests {
    func run(from x: Double, _ v: Double, _ actions: [Int]) -> [MountainCar.Step] {
        var car = MountainCar(position: x, velocity: v)
        return actions.map { car.step($0) }
    }

    @Test func matchesTheReferenceTrajectory() {
        // From (−0.5, 0): right ×3, none, left ×3, none, right ×2.
        let expected: [(Double, Double)] = [
            (-0.49917684300416926, 0.0008231569958307428),
            (-0.49753668667935325, 0.0016401563248160246),
            (-0.4950917969323474, 0.002444889747005863),
            (-0.4928604490016134, 0.0022313479307339793),
            (-0.4918593119261084, 0.0010011370755050523),
            (-0.49209586128220034, -0.00023654935609193888),
            (-0.49356833092651015, -0.0014724696443098105),
            (-0.495265724353783, -0.0016973934272728768),
            (-0.496175359880034, -0.0009096355262509531),
            (-0.49629043908708975, -0.00011507920705576557),
        ]
        let got = run(from: -0.5, 0, [2, 2, 2, 1, 0, 0, 0, 1, 2, 2])
        for (g, e) in zip(got, expected) {
            #expect(g.position == e.0 && g.velocity == e.1, "\(g) vs \(e)")
            #expect(g.reward == -1 && !g.terminal && !g.truncated)
        }
    }

    @Test func theLeftWallStopsTheCar() {
        // From (−1.15, −0.06) pushing left: clipped at −1.2 with the velocity set to 0.
        let expected: [(Double, Double)] = [
            (-1.2, 0.0),
            (-1.1987581039591646, 0.0012418960408353682),
            (-1.196270205713714, 0.002487898245450696),
            (-1.190528173202872, 0.005742032510841903),
        ]
        let got = run(from: -1.15, -0.06, [0, 0, 0, 2])
        for (g, e) in zip(got, expected) {
            #expect(g.position == e.0 && g.velocity == e.1, "\(g) vs \(e)")
        }
    }

    @Test func energyPumpingReachesTheGoalAsTheReferenceDoes() {
        // Reference: from −0.5 the rule reaches the goal on step 124 at (0.53495…, 0.04819…);
        // from −0.4 on step 122 at (0.50660…, 0.03262…).
        for (x0, n, x, v) in [(-0.5, 124, 0.5349499825655736, 0.04819097792866507),
                              (-0.4, 122, 0.5065959513627183, 0.03262404769776248)] {
            var car = MountainCar(position: x0)
            let rule = MountainCarRule()
            var last: MountainCar.Step?
            var steps = 0
            while steps < 200 {
                let s = car.step(rule.decide(velocity: car.velocity))
                steps += 1
                last = s
                if s.terminal || s.truncated { break }
            }
            #expect(steps == n)
            #expect(last?.terminal == true && last?.truncated == false)
            #expect(last?.position == x && last?.velocity == v)
        }
    }

    @Test func coastingIsTruncatedAt200Steps() {
        // Reference: coasting from −0.5 ends step 200 at (−0.52159…, 0.00204…), not at the goal.
        var car = MountainCar(position: -0.5)
        var s = car.step(1)
        for _ in 1..<200 {
            #expect(!s.truncated && !s.terminal)
            s = car.step(1)
        }
        #expect(s.truncated && !s.terminal)
        #expect(s.position == -0.5215925933932505 && s.velocity == 0.002043422643203296)
    }

    @Test func startsAreUniformInTheirIntervalAndSeeded() {
        var a = MountainCarEpisodes(seed: 4)
        var b = MountainCarEpisodes(seed: 4)
        var c = MountainCarEpisodes(seed: 5)
        var starts: [Double] = []
        var other: [Double] = []
        for _ in 0..<400 {
            starts.append(a.env.position)
            other.append(c.env.position)
            #expect(a.env.velocity == 0)
            #expect(a.message == b.message)
            // One whole episode under the rule, then the next start.
            while !a.startNextEpisodeIfEnded() {
                a.step(a.incumbentAction())
                b.step(b.incumbentAction())
            }
            _ = b.startNextEpisodeIfEnded()
            while !c.startNextEpisodeIfEnded() { c.step(c.incumbentAction()) }
        }
        #expect(starts.allSatisfy { $0 >= -0.6 && $0 < -0.4 })
        #expect(starts != other)
        let mean = starts.reduce(0, +) / Double(starts.count)
        #expect(abs(mean - -0.5) < 0.01)                       // σ of the mean ≈ 0.003
        #expect(starts.filter { $0 < -0.5 }.count > 160 && starts.filter { $0 < -0.5 }.count < 240)
        // Every episode of the rule reached the goal: returns −125 … −113, −1 per step.
        #expect(a.returns.returns.count == 400)
        #expect(a.returns.returns.allSatisfy { $0 >= -125 && $0 <= -113 })
    }

    @Test func energyPumpingReachesTheGoalOnEveryStart() {
        // 201 starts evenly spread on [−0.6, −0.4]: every one reaches the goal; mean −119.4.
        var total = 0.0
        let rule = MountainCarRule()
        for i in 0...200 {
            var car = MountainCar(position: -0.6 + 0.2 * Double(i) / 200)
            var n = 0
            var s = car.step(rule.decide(velocity: car.velocity))
            n += 1
            while !s.terminal && !s.truncated {
                s = car.step(rule.decide(velocity: car.velocity))
                n += 1
            }
            #expect(s.terminal, "start \(i) not at the goal after \(n) steps")
            total -= Double(n)
        }
        #expect(abs(total / 201 - -119.40298507462687) < 1e-9)
    }
}
