import EdgeQLab
import EdgeQTopicMap
import Foundation
import Testing

@Suite struct CartPoleRetrainingTests {
    /// Issue 6: cart-pole with periodic retraining in control mode (ε exploration on) reaches
    /// a mean return ≥ 400 within 40,000 steps — with the shipped `topics/cartpole.yaml`
    /// (its `learning:` section sets the retraining period, updates and hyper-parameters),
    /// every retraining through the `Retrainer` and the mapping file's checks, one fixed seed.
    /// `edgeq bench retrain` runs the same loop on 5 seeds.
    @Test func periodicRetrainingInControlReaches400Within40000Steps() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let map = try TopicMap.load(path: root.appendingPathComponent("topics/cartpole.yaml").path)
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let loop = CartPoleRetraining()
        let curve = try loop.run(map: map, seed: 1, directory: dir)
        let summary = curve.map { "\($0.steps): \(Int($0.meanReturn))\($0.passed ? "" : " (failed: \($0.reasons.joined(separator: "; ")))")" }
        let hit = try #require(curve.first { $0.meanReturn >= 400 }, "curve: \(summary)")
        #expect(hit.steps <= 40_000)
        // The loop ran as the mapping says: a retraining every `retrain.every_transitions` steps.
        let every = try #require(map.learning.retrainEveryTransitions)
        let expected = (1...curve.count).map { $0 * every }
        #expect(curve.map(\.steps) == expected, "curve: \(summary)")
        // What reached 400 was served, i.e. some retraining passed every check.
        #expect(curve.contains { $0.passed })
        let last = curve.last?.meanReturn ?? 0
        #expect(last >= 400)
    }
}
