import EdgeQGateway
import EdgeQLearner
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Logging
import Synchronization
import Testing
import EdgeQRetrain

/// What one log record carried.
struct CapturedRecord: Sendable {
    var level: Logger.Level
    var message: String
    var metadata: [String: String]
}

/// A swift-log handler that keeps every record in memory, for a test to read. Passed to one
/// gateway's `Logger`; the process's global logging is left alone.
struct CapturingLogHandler: LogHandler {
    final class Store: Sendable {
        let records = Mutex<[CapturedRecord]>([])
        var all: [CapturedRecord] { records.withLock { $0 } }
    }

    let store: Store
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    var metadataProvider: Logger.MetadataProvider?

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var m: [String: String] = [:]
        for (k, v) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) { m[k] = "\(v)" }
        let record = CapturedRecord(level: event.level, message: "\(event.message)", metadata: m)
        store.records.withLock { $0.append(record) }
    }
}

/// The retraining report: the learner's settings from the mapping, the one meaning of a
/// next-state mask, and the results in the gateway's own log.
@Suite struct RetrainReportTests {
    @Test func everyLearnerSettingComesFromTheMapping() throws {
        var l = LearningConfig()
        l.gamma = 0.95
        l.learningRate = 0.002
        l.batchSize = 32
        l.nStep = 3
        l.targetUpdate = 77
        l.doubleDQN = false
        l.polyakTau = 0.02
        l.huberDelta = 3
        l.maxGradNorm = 0.5
        l.prioritizedAlpha = 0.7
        l.prioritizedBeta = 0.2
        l.betaAnnealUpdates = 999
        l.cqlWeight = 0.3
        l.cqlOnAllTransitions = true
        let c = Retrainer.learnerConfig(l, rows: 1000)
        #expect(c.gamma == 0.95 && c.learningRate == 0.002 && c.batchSize == 32 && c.bufferSize == 1000 && c.nStep == 3)
        #expect(c.targetUpdateInterval == 77 && !c.doubleDQN && c.polyakTau == 0.02 && c.huberDelta == 3 && c.maxGradNorm == 0.5)
        #expect(c.prioritizedAlpha == 0.7 && c.prioritizedBeta == 0.2 && c.betaAnnealUpdates == 999)
        #expect(c.cqlWeight == 0.3 && c.cqlOnAllTransitions)
        #expect(c.epsilonStart == 0 && c.epsilonEnd == 0 && c.learningStarts == 0)
    }

    /// The mapping's defaults are the learner's defaults (the topic map cannot import the
    /// learner, so they are written twice; this keeps them equal).
    @Test func theMappingsDefaultsAreTheLearnersDefaults() {
        let c = Retrainer.learnerConfig(LearningConfig(), rows: 100_000)
        let d = DQNConfig()
        #expect(c.doubleDQN == d.doubleDQN)
        #expect(c.polyakTau == d.polyakTau)
        #expect(c.huberDelta == d.huberDelta)
        #expect(c.maxGradNorm == d.maxGradNorm)
        #expect(c.prioritizedAlpha == d.prioritizedAlpha)
        #expect(c.prioritizedBeta == d.prioritizedBeta)
        #expect(c.betaAnnealUpdates == d.betaAnnealUpdates)
        #expect(c.cqlOnAllTransitions == d.cqlOnAllTransitions)
    }

    /// A logged next mask with no bit set means what it means to the learner: not an end, the
    /// bootstrap goes over all actions.
    @Test func aLoggedMaskThatAllowsNothingBootstrapsOverAllActions() {
        #expect(Retrainer.bootstrapMask(nil, actionCount: 3) == nil)
        #expect(Retrainer.bootstrapMask(0, actionCount: 3) == nil)
        #expect(Retrainer.bootstrapMask(0b100, actionCount: 3) == [false, false, true])
        #expect(Retrainer.bootstrapMask(0b111, actionCount: 3) == [true, true, true])
    }

    @Test func limitsAndValuesAreRoundedForReading() {
        // 4 / (1 − 0.99) × 1.5 in binary floating point.
        let raw = 4 / (1 - 0.99) * 1.5
        #expect(raw != 600)
        #expect(roundedForReading(raw) == 600)
        #expect("\(roundedForReading(0.1 + 0.2))" == "0.3")
        let c = RetrainReport.Check.judged("x", value: 0.1 + 0.2, limit: raw, passed: true, note: "")
        #expect(c.value == 0.3 && c.limit == 600)
    }

    @Test func aCheckWithNothingToJudgeNeitherPassesNorFails() throws {
        var r = RetrainReport()
        r.checks = [.judged("a", value: 1, limit: 0.5, passed: true, note: "ok"),
                    .notApplicable("incumbent_agreement", limit: 0.5, note: "no held-out row from the incumbent")]
        Retrainer.judge(&r)
        #expect(r.verdict == "passed")
        #expect(r.notJudged == ["incumbent_agreement: no held-out row from the incumbent"])
        #expect(r.checks[1].passed == nil)
        // In JSON: "passed": null and "status": "not_applicable"; a report reads back.
        let json = try #require(JSONSerialization.jsonObject(with: r.json()) as? [String: Any])
        let checks = try #require(json["checks"] as? [[String: Any]])
        #expect(checks[1]["passed"] is NSNull && checks[1]["status"] as? String == "not_applicable")
        let back = try JSONDecoder().decode(RetrainReport.self, from: r.json())
        #expect(back.checks[1].status == .notApplicable && back.notJudged == r.notJudged)
        // Nothing judged at all: not a pass.
        var none = RetrainReport()
        none.checks = [.notApplicable("a", limit: 1, note: "")]
        Retrainer.judge(&none)
        #expect(none.verdict == "failed")
        // A report written before `status` existed still reads.
        let old = #"{"verdict":"passed","checks":[{"name":"q_finite","value":1,"limit":1,"passed":true,"note":""}],"figures":{}}"#
        let decoded = try JSONDecoder().decode(RetrainReport.self, from: Data(old.utf8))
        #expect(decoded.checks.first?.status == .passed)
    }

    /// JSON has no NaN: a figure that could not be computed is left out, not the whole report.
    @Test func aFigureThatIsNotANumberDoesNotEmptyTheReport() throws {
        var r = RetrainReport()
        r.checks = [.judged("q_finite", value: 1, limit: 1, passed: true, note: "")]
        r.figures = ["train_td_loss": .nan, "max_abs_q": 2.5]
        Retrainer.judge(&r)
        let json = try #require(JSONSerialization.jsonObject(with: r.json()) as? [String: Any])
        #expect(json["verdict"] as? String == "passed")
        #expect((json["figures"] as? [String: Double]) == ["max_abs_q": 2.5])
    }

    /// docs/operations.md ("Logs"): the retraining's checks and verdict reach the gateway's log.
    @Test func retrainingResultsReachTheGatewaysLog() throws {
        let store = CapturingLogHandler.Store()
        let logger = Logger(label: "edgeq.gateway.test") { _ in CapturingLogHandler(store: store) }
        let lenient = """
              checks: {quantization_agreement: 0, max_unsupported: 1, min_rows: 100}
              promotion: {policy: auto, min_agreement: 0}
            """
        let h = try GatewayHarness(yaml: testMapping(extraLearning: lenient), logger: logger)
        defer { h.stop() }
        for i in 0..<200 {
            let x = sin(Double(i) * 0.7)
            try h.send("plant/t/state", "{\"step\":\(i),\"x\":\(x),\"y\":\(cos(Double(i) * 0.3))}")
            try h.send("plant/t/cmd", "{\"a\":\(x > 0 ? 1 : 0),\"step\":\(i)}")
        }
        let deadline = Date().addingTimeInterval(20)
        while h.metric("edgeq_ticks_total") < 200 && Date() < deadline { _ = h.drain(0.02) }
        usleep(400_000)
        try h.command("retrain", #"{"steps":300}"#)
        let m = try h.waitFor(topic: "edgeq/t1/retrain", timeout: 120) { GatewayHarness.json($0)["phase"] as? String == "done" }
        let published = GatewayHarness.json(m)
        #expect(eventually(timeout: 5) { store.all.contains { $0.message == "retraining done" } })
        let records = store.all
        let done = try #require(records.first { $0.message == "retraining done" })
        #expect(done.level == .notice)
        #expect(done.metadata["retrain.verdict"] == published["verdict"] as? String)
        #expect(done.metadata["retrain.version"] == (published["version"] as? Int).map(String.init))
        #expect(done.metadata["retrain.promoted"] == "\(published["promoted"] as? Bool ?? false)")
        let checks = records.filter { $0.metadata["retrain.check"] != nil }
        let names = Set(checks.compactMap { $0.metadata["retrain.check"] })
        let publishedNames = Set(((published["checks"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String })
        #expect(!publishedNames.isEmpty && names == publishedNames, "logged \(names), published \(publishedNames)")
        for c in checks {
            #expect(["passed", "failed", "not_applicable"].contains(c.metadata["retrain.check.status"] ?? ""))
            #expect(c.metadata["retrain.check.limit"] != nil)
        }
    }
}
