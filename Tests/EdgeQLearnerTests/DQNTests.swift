import EdgeQCore
@testable import EdgeQLearner
import EdgeQNet
import Foundation
import Testing

/// Targets, n-step windows, masks, replay sampling and CQL on hand-made data.
@Suite struct DQNTests {
    /// A learner whose networks are single linear layers with hand-set weights:
    /// online Q(s) = (s0, s1, (s0 + s1)/2), target Q(s) = (2 s0, 3 s1, s0 + s1).
    func linearLearner(doubleDQN: Bool = true) throws -> DQNLearner {
        var c = DQNConfig()
        c.gamma = 0.9
        c.batchSize = 5
        c.doubleDQN = doubleDQN
        let learner = try DQNLearner(config: c, architecture: Architecture(inputCount: 2, hidden: [], actionCount: 3), seed: 1)
        try learner.online.load([1, 0, 0, 1, 0.5, 0.5, 0, 0, 0])
        try learner.target.load([2, 0, 0, 3, 1, 1, 0, 0, 0])
        return learner
    }

    func handBatch() -> Batch {
        var b = Batch(size: 5, inputCount: 2, actionCount: 3)
        b.nextStates = [1, 0, 1, 0.8, 1, 0.8, 5, 5, 1, 0.8]
        b.returns = [1, 0.5, 0.5, -1, 0.5]
        // rows 0–2 bootstrap with γ = 0.9; row 3 ended terminal (discount 0); row 4 was
        // truncated after two steps (bootstraps with γ² = 0.81).
        b.discounts = [0.9, 0.9, 0.9, 0, 0.81]
        b.nextMasks = [true, true, true, true, true, true, false, true, true, true, true, true, true, true, true]
        return b
    }

    @Test func doubleDQNTargetsOnAHandMadeBatch() throws {
        let y = try linearLearner().targets(for: handBatch())
        // row 0: online picks a0 (1 > .5 > 0), target values it 2: 1 + .9·2
        // row 1: online (1, .8, .9) picks a0; target (2, 2.4, 1.8) values it 2: .5 + .9·2
        // row 2: mask forbids a0; online picks a2 (.9 > .8); target 1.8: .5 + .9·1.8
        // row 3: terminal: the return alone, whatever Q(s') says
        // row 4: truncated: bootstraps as usual, .5 + .81·2
        let expected: [Float] = [2.8, 2.3, 2.12, -1, 2.12]
        for (a, b) in zip(y, expected) { #expect(abs(a - b) < 1e-5) }
    }

    /// A next state where the mask allows no action is not an end (only `terminal` is): the
    /// target bootstraps over all actions, as without a mask (docs/learning.md).
    @Test func aMaskThatAllowsNothingStillBootstraps() throws {
        var b = handBatch()
        // row 1: nothing allowed in s' = (1, .8); online (1, .8, .9) picks a0, target values it 2.
        for a in 0..<3 { b.nextMasks[3 + a] = false }
        let y = try linearLearner().targets(for: b)
        #expect(abs(y[1] - 2.3) < 1e-5, "target \(y[1]): .5 + .9·2 expected, not the return alone")
        // Through observe and replay too: a Transition whose mask allows nothing.
        var c = DQNConfig()
        c.gamma = 0.9
        c.batchSize = 1
        c.nStep = 1
        let learner = try DQNLearner(config: c, architecture: Architecture(inputCount: 2, hidden: [], actionCount: 3), seed: 1)
        try learner.online.load([1, 0, 0, 1, 0.5, 0.5, 0, 0, 0])
        try learner.target.load([2, 0, 0, 3, 1, 1, 0, 0, 0])
        learner.observe(Transition(state: [0, 0], action: 0, reward: 0.5, nextState: [1, 0.8], terminal: false,
                                   nextMask: [false, false, false]))
        var one = Batch(size: 1, inputCount: 2, actionCount: 3)
        var rng = SeededGenerator(seed: 3)
        learner.replay.sample(into: &one, beta: 1, rng: &rng)
        #expect(abs(learner.targets(for: one)[0] - 2.3) < 1e-5)
    }

    @Test func vanillaTargetTakesTheTargetNetworksMax() throws {
        let y = try linearLearner(doubleDQN: false).targets(for: handBatch())
        // row 1: max of target (2, 2.4, 1.8) = 2.4: .5 + .9·2.4; row 2 (a0 masked): 2.4 too.
        #expect(abs(y[1] - 2.66) < 1e-5)
        #expect(abs(y[2] - 2.66) < 1e-5)
        #expect(y[3] == -1)
    }

    func step(_ k: Int, reward: Float, terminal: Bool = false, truncated: Bool = false) -> Transition {
        Transition(state: [Float(k)], action: 0, reward: reward, nextState: [Float(k + 1)], terminal: terminal, truncated: truncated)
    }

    @Test func nStepReturnsStopAtTerminal() {
        var nb = NStepBuilder(n: 3, gamma: 0.5)
        #expect(nb.push(step(0, reward: 1)).isEmpty)
        #expect(nb.push(step(1, reward: 2)).isEmpty)
        let first = nb.push(step(2, reward: 3))
        #expect(first.count == 1)
        #expect(first[0].nStepReturn == 2.75)          // 1 + .5·2 + .25·3
        #expect(first[0].nextState == [3] && first[0].discount == 0.125)
        let rest = nb.push(step(3, reward: 4, terminal: true))
        #expect(rest.map(\.first.state) == [[1], [2], [3]])
        #expect(rest.map(\.nStepReturn) == [4.5, 5, 4])  // 2 + 1.5 + 1; 3 + 2; 4
        #expect(rest.map(\.discount) == [0, 0, 0])       // terminal: never bootstrap
        #expect(rest.allSatisfy { $0.nextState == [4] })
    }

    @Test func nStepReturnsBootstrapAfterTruncation() {
        var nb = NStepBuilder(n: 3, gamma: 0.5)
        _ = nb.push(step(0, reward: 1))
        _ = nb.push(step(1, reward: 1))
        let out = nb.push(step(2, reward: 1, truncated: true))
        #expect(out.map(\.discount) == [0.125, 0.25, 0.5])
        #expect(out.map(\.nStepReturn) == [1.75, 1.5, 1])
    }

    @Test func nStepNeverLinksTwoEpisodes() {
        var nb = NStepBuilder(n: 3, gamma: 0.5)
        _ = nb.push(step(0, reward: 1))
        // The next transition does not start where the last ended: a new episode.
        let out = nb.push(Transition(state: [10], action: 0, reward: 5, nextState: [11], terminal: false))
        #expect(out.count == 1)
        #expect(out[0].nStepReturn == 1 && out[0].nextState == [1] && out[0].discount == 0.5)
    }

    @Test func epsilonGreedyStaysInsideTheMask() throws {
        let learner = try linearLearner()
        for _ in 0..<200 {
            #expect(learner.act(state: [1, 0], mask: [false, true, false], epsilon: 1) == 1)
            let a = try #require(learner.act(state: [1, 0], mask: [false, true, true], epsilon: 0.5))
            #expect(a == 1 || a == 2)
        }
        #expect(learner.act(state: [1, 0], mask: [true, true, true], epsilon: 0) == 0)
        #expect(learner.act(state: [1, 0], mask: [false, true, true], epsilon: 0) == 2)
        #expect(learner.act(state: [1, 0], mask: [false, false, false], epsilon: 0.3) == nil)
        #expect(learner.act(state: [1, 0, 7], mask: nil, epsilon: 0) == nil)
        learner.observe(Transition(state: [1], action: 0, reward: 0, nextState: [1, 2], terminal: true))
        learner.observe(Transition(state: [1, 2], action: 9, reward: 0, nextState: [1, 2], terminal: true))
        #expect(learner.rejectedTransitions == 2)
        #expect(learner.replay.count == 0)
    }

    /// Sampling frequencies follow p_i^α / Σ p^α (chi-square, 7 degrees of freedom).
    @Test func prioritizedSamplerFollowsPriorities() {
        var replay = ReplayBuffer(capacity: 8, inputCount: 1, actionCount: 2, prioritizedAlpha: 0.6)
        for k in 0..<8 {
            replay.add(state: [Float(k)], action: 0, nStepReturn: 0, nextState: [0], discount: 0, nextMask: nil, fromIncumbent: false)
        }
        let td: [Float] = [0.1, 0.5, 1, 2, 4, 0.05, 3, 1.5]
        replay.updatePriorities(Array(0..<8), tdErrors: td)
        let p = td.map { Double($0 + 1e-6).power(0.6) }
        let total = p.reduce(0, +)
        var rng = SeededGenerator(seed: 99)
        var batch = Batch(size: 32, inputCount: 1, actionCount: 2)
        var counts = [Double](repeating: 0, count: 8)
        let rounds = 500
        for _ in 0..<rounds {
            replay.sample(into: &batch, beta: 0.5, rng: &rng)
            for (b, i) in batch.indices.enumerated() {
                counts[i] += 1
                #expect(batch.states[b] == Float(i))
            }
            // Importance weights: (N·P(i))^−β / max in batch, so w_i / w_j = (P_i / P_j)^−β.
            let iMax = batch.indices.enumerated().max { batch.weights[$0.offset] < batch.weights[$1.offset] }!.element
            #expect(abs(batch.weights.max()! - 1) < 1e-6)
            for (b, i) in batch.indices.enumerated() {
                let expected = (p[i] / p[iMax]).power(-0.5)
                #expect(abs(Double(batch.weights[b]) - expected) < 1e-4)
            }
        }
        let n = Double(rounds * 32)
        let chi2 = (0..<8).reduce(0.0) { acc, i in
            let e = n * p[i] / total
            return acc + (counts[i] - e) * (counts[i] - e) / e
        }
        #expect(chi2 < 24.3, "chi-square \(chi2) above the p = 0.001 critical value for 7 dof")
        #expect(abs(replay.probability(4) - p[4] / total) < 1e-6)
    }

    @Test func uniformSamplerHasUnitWeights() {
        var replay = ReplayBuffer(capacity: 4, inputCount: 1, actionCount: 2)
        for k in 0..<4 { replay.add(state: [Float(k)], action: 1, nStepReturn: 0, nextState: [0], discount: 0.9, nextMask: [true, false], fromIncumbent: true) }
        var rng = SeededGenerator(seed: 1)
        var batch = Batch(size: 16, inputCount: 1, actionCount: 2)
        replay.sample(into: &batch, beta: 0.4, rng: &rng)
        #expect(batch.weights.allSatisfy { $0 == 1 })
        #expect(batch.nextMasks == Array(repeating: [true, false], count: 16).flatMap { $0 })
        #expect(batch.fromIncumbent.allSatisfy { $0 })
    }

    /// Logged incumbent data that never shows action 1: with a strong CQL weight the learned
    /// policy keeps to the incumbent's actions; the unseen action is pushed down.
    @Test func cqlKeepsThePolicyOnLoggedActions() throws {
        var rng = SeededGenerator(seed: 3)
        var log: [Transition] = []
        for _ in 0..<2_000 {
            let s = Float(rng.nextUnit() * 2 - 1)
            let a = s > 0 ? 2 : 0
            // The incumbent is right: a2 pays for s > 0, a0 for s ≤ 0.
            let r: Float = (a == 2) == (s > 0) ? 1 : -1
            log.append(Transition(state: [s], action: a, reward: r, nextState: [s], terminal: true, fromIncumbent: true))
        }
        var c = DQNConfig()
        c.cqlWeight = 1
        c.nStep = 1
        let arch = Architecture(inputCount: 1, hidden: [32, 32], actionCount: 3)
        let result = try DQNLearner.train(from: log, config: c, architecture: arch, updates: 1_500, seed: 4)
        var agree = 0
        for k in 0..<200 {
            let s = Float(k) / 100 - 0.995
            let x = [(s - result.normalization.mean[0]) / result.normalization.std[0]]
            let a = x.withUnsafeBufferPointer { result.network.greedyAction($0.baseAddress!, mask: nil) }
            if a == (s > 0 ? 2 : 0) { agree += 1 }
        }
        #expect(agree >= 190, "agreement \(agree)/200")
    }

    @Test func offlinePipelineRejectsMisfitTransitions() throws {
        let bad = [Transition(state: [1, 2], action: 5, reward: 0, nextState: [1, 2], terminal: true)]
        #expect(throws: LearnerError.self) {
            _ = try DQNLearner.train(from: bad, config: DQNConfig(), architecture: Architecture(inputCount: 2, actionCount: 3), updates: 1, seed: 1)
        }
    }
}

extension DQNTests {
    /// `bootstrapRange` clips the bootstrap value, not the return: on the hand-made batch with
    /// Q_target values 2, 2, 1.8, ·, 2 and the range [0, 1.5], the bootstrap is 1.5 everywhere;
    /// with [1.9, 3] only row 2 (1.8) moves up; a terminal row keeps its return alone.
    @Test func bootstrapValuesAreClippedToTheRange() throws {
        var c = DQNConfig()
        c.gamma = 0.9
        c.batchSize = 5
        c.bootstrapRange = 0...1.5
        let learner = try DQNLearner(config: c, architecture: Architecture(inputCount: 2, hidden: [], actionCount: 3), seed: 1)
        try learner.online.load([1, 0, 0, 1, 0.5, 0.5, 0, 0, 0])
        try learner.target.load([2, 0, 0, 3, 1, 1, 0, 0, 0])
        let y = learner.targets(for: handBatch())
        let expected: [Float] = [1 + 0.9 * 1.5, 0.5 + 0.9 * 1.5, 0.5 + 0.9 * 1.5, -1, 0.5 + 0.81 * 1.5]
        for (a, b) in zip(y, expected) { #expect(abs(a - b) < 1e-5, "\(y) against \(expected)") }
        c.bootstrapRange = 1.9...3
        let raised = try DQNLearner(config: c, architecture: Architecture(inputCount: 2, hidden: [], actionCount: 3), seed: 1)
        try raised.online.load([1, 0, 0, 1, 0.5, 0.5, 0, 0, 0])
        try raised.target.load([2, 0, 0, 3, 1, 1, 0, 0, 0])
        let z = raised.targets(for: handBatch())
        let unclipped: [Float] = [2.8, 2.3, 0.5 + 0.9 * 1.9, -1, 2.12]
        for (a, b) in zip(z, unclipped) { #expect(abs(a - b) < 1e-5, "\(z) against \(unclipped)") }
    }
}
