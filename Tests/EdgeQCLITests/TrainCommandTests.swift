import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq train` as the real process on a real log: warm start from the served model, the
/// learner settings from the mapping in the report, checks that cannot be judged, and
/// limits that print as people write them.
@Suite struct TrainCommandTests {
    /// Checks lenient enough for a tiny synthetic log (these tests are about the report),
    /// and learner settings that differ from every default.
    static let learning = """
          hidden: [8]
          updates_per_retrain: 200
          huber_delta: 2
          max_grad_norm: 5
          polyak_tau: 0.01
          double_dqn: false
          cql_on_all_transitions: true
          prioritized_replay: {alpha: 0.5, beta: 0.3, beta_anneal_updates: 1000}
          checks: {quantization_agreement: 0, max_unsupported: 1, min_rows: 50}
          promotion: {min_agreement: 0}
        """

    func setUp(modelFrom: Int?) throws -> (TempDir, String) {
        let dir = try TempDir()
        let map = dir.url.appendingPathComponent("p.yaml").path
        try processMapping(id: "p1", plant: "p", learning: Self.learning).write(toFile: map, atomically: true, encoding: .utf8)
        try writeTestLog(dataDirectory: dir.url.path, rows: 300, modelFrom: modelFrom)
        return (dir, map)
    }

    func json(_ text: String) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not JSON: \(text)")
    }

    @Test func trainWarmStartsFromTheServedModelUnlessCold() throws {
        let (dir, map) = try setUp(modelFrom: nil)
        // No served model yet: fresh weights; --promote serves the result.
        let first = try EdgeQBinary.run(["train", "--data", dir.url.path, "--config", map, "--json", "--promote"])
        #expect(first.code == 0, "\(first.stderr)\n\(first.stdout)")
        #expect(try json(first.stdout)["warmStart"] as? Bool == false)
        // Now a model is served: the next train starts from it, like cmd/retrain.
        let second = try EdgeQBinary.run(["train", "--data", dir.url.path, "--config", map, "--json"])
        #expect(second.code == 0, "\(second.stderr)\n\(second.stdout)")
        #expect(try json(second.stdout)["warmStart"] as? Bool == true)
        let cold = try EdgeQBinary.run(["train", "--data", dir.url.path, "--config", map, "--json", "--cold"])
        #expect(cold.code == 0, "\(cold.stderr)\n\(cold.stdout)")
        #expect(try json(cold.stdout)["warmStart"] as? Bool == false)
    }

    @Test func theReportListsTheLearnerSettingsAndSaysWhichChecksWereNotJudged() throws {
        // The held-out 10 % (the newest 30 rows) are all the model's: no incumbent row to
        // measure agreement on.
        let (dir, map) = try setUp(modelFrom: 260)
        let r = try EdgeQBinary.run(["train", "--data", dir.url.path, "--config", map, "--json"])
        #expect(r.code == 0, "\(r.stderr)\n\(r.stdout)")
        let report = try json(r.stdout)
        let learner = try #require(report["learner"] as? [String: Any], "\(report)")
        #expect(learner["huberDelta"] as? Double == 2)
        #expect(learner["maxGradNorm"] as? Double == 5)
        #expect(learner["polyakTau"] as? Double == 0.01)
        #expect(learner["doubleDQN"] as? Bool == false)
        #expect(learner["cqlOnAllTransitions"] as? Bool == true)
        #expect(learner["prioritizedAlpha"] as? Double == 0.5)
        #expect(learner["prioritizedBeta"] as? Double == 0.3)
        #expect(learner["betaAnnealUpdates"] as? Int == 1000)
        #expect(learner["gamma"] as? Double == 0.99)
        // Rewards 0 … −4: every return lies in [−4 / (1 − γ), 0], and bootstrap values are clipped to it.
        #expect(learner["bootstrapRange"] as? [Double] == [-400, 0], "\(learner)")
        let checks = try #require(report["checks"] as? [[String: Any]])
        let agreement = try #require(checks.first { $0["name"] as? String == "incumbent_agreement" })
        #expect(agreement["status"] as? String == "not_applicable", "\(agreement)")
        #expect(agreement["passed"] is NSNull, "\(agreement)")
        #expect(agreement["value"] is NSNull, "\(agreement)")
        #expect((report["notJudged"] as? [String])?.contains { $0.hasPrefix("incumbent_agreement") } == true, "\(report)")
        // Judged checks pass or fail; the not-applicable one neither.
        for c in checks where c["name"] as? String != "incumbent_agreement" {
            #expect(c["status"] as? String == "passed" || c["status"] as? String == "failed", "\(c)")
        }
        // max|r| / (1 − γ) × 1.5 = 4 / 0.01 × 1.5: 600, not 599.9999999999995.
        let bound = try #require(checks.first { $0["name"] as? String == "q_within_bound" })
        #expect(bound["limit"] as? Double == 600, "\(bound)")
        #expect(!r.stdout.contains("99999999"), "\(r.stdout)")

        // The same report for people.
        let text = try EdgeQBinary.run(["train", "--data", dir.url.path, "--config", map])
        #expect(text.code == 0, "\(text.stderr)\n\(text.stdout)")
        #expect(text.stdout.contains("(limit 600)"), "\(text.stdout)")
        #expect(text.stdout.contains("n/a        incumbent_agreement"), "\(text.stdout)")
        #expect(text.stdout.contains("Huber δ 2, gradient clip 5"), "\(text.stdout)")
        #expect(text.stdout.contains("prioritized replay α 0.5, β 0.3 → 1 over 1000 updates"), "\(text.stdout)")
        #expect(text.stdout.contains("target Polyak τ 0.01"), "\(text.stdout)")
        #expect(text.stdout.contains("bootstrap values clipped to [-400, 0]"), "\(text.stdout)")
        #expect(!text.stdout.contains("99999999"), "\(text.stdout)")
    }
}
