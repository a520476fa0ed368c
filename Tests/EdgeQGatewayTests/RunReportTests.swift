import EdgeQCore
@testable import EdgeQGateway
@testable import EdgeQLog
import EdgeQReport
import EdgeQSystem
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Testing

/// The run report (`edgeq report`) of a real gateway run: a gateway on a real broker with a
/// served model logs a closed-loop plant in shadow mode, retrains on a command (real checks),
/// runs the candidate's switchback trial in control mode, and goes on in control. The report's
/// figures must equal what the log and the model store say, computed here independently in SQL
/// and from the files; then a real headless Chromium (Playwright for Python, the system's
/// browser) opens the page and checks it against the directory by itself.
@Suite struct RunReportTests {
    static let learning = """
          promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, min_pairs: 2, max_pairs: 20}, control_share: 0}
        """

    /// A data directory with a shadow stretch, a retraining, a decided trial and a control
    /// stretch, and a metrics scrape saved from the running gateway (`metrics.prom`).
    static func realRun() throws -> GatewayHarness {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: learning), withModel: true)
        let plant = ClosedLoop(h, incumbent: TrialGatewayTests.randomIncumbent(seed: 31), dynamics: TrialGatewayTests.noisyPlant(seed: 32))
        try plant.run(600)
        usleep(400_000)  // the writer's group commit
        try h.command("retrain", #"{"id":"report-retrain","steps":2000}"#)
        let result = GatewayHarness.json(try h.waitFor(topic: "edgeq/t1/retrain", timeout: 120) {
            let phase = GatewayHarness.json($0)["phase"] as? String
            return phase == "done" || phase == "failed"
        })
        let trialEvents = { h.received.filter { $0.topic == "edgeq/t1/retrain" }.map(GatewayHarness.json).filter { $0["phase"] as? String == "trial" } }
        if !trialEvents().contains(where: { $0["event"] as? String == "started" }) {
            // The retrained candidate did not go to a trial (it failed a check): give the trial a
            // candidate built to be better, so that the report has a trial to show either way.
            Issue.record("the retrained candidate went to no trial: \(result)")
            let v = try storeModel(favouring: 0, for: h.map, in: h.dir.url)
            try h.gateway.control.sync { try h.gateway.startTrial(v) }
        }
        #expect(try h.ask("mode", #"{"id":"report-mode","mode":"control"}"#)["ok"] as? Bool == true)
        try plant.run(until: { trialEvents().contains { $0["event"] as? String == "verdict" } }, atMost: 120)
        try plant.run(80)
        usleep(400_000)
        try h.gateway.renderMetrics().write(to: h.dir.url.appendingPathComponent("metrics.prom"), atomically: true, encoding: .utf8)
        h.stop()
        return h
    }

    @Test func theReportOfARealRunSaysWhatTheLogSaysAndOpensCleanInAHeadlessBrowser() throws {
        let h = try Self.realRun()
        let dir = h.dir.url
        let metrics = try String(contentsOf: dir.appendingPathComponent("metrics.prom"), encoding: .utf8)
        let report = try RunReport(dataDirectory: dir, metricsText: metrics)
        let page = dir.appendingPathComponent("report.html")
        try report.write(to: page)

        // (a) The figures against the log, in SQL written here.
        let db = try SQLiteConnection(path: dir.appendingPathComponent("experience.sqlite").path, create: false)
        #expect(report.aggregates.rows == Int(try db.scalarInt("SELECT count(*) FROM transitions") ?? -1))
        let g = try db.prepare("SELECT mode, actor, count(*), avg(reward) FROM transitions GROUP BY mode, actor")
        var groups: [String: (Int, Double)] = [:]
        while try g.step() { groups["\(g.text(0))/\(g.text(1))"] = (Int(g.int64(2)), g.double(3)) }
        #expect(Set(report.groups.map { "\($0.mode)/\($0.actor)" }) == Set(groups.keys))
        for r in report.groups {
            let sql = try #require(groups["\(r.mode)/\(r.actor)"])
            #expect(r.rows == sql.0, "\(r.mode)/\(r.actor)")
            #expect(abs(r.meanReward - sql.1) <= 1e-9 * max(1, abs(sql.1)), "\(r.mode)/\(r.actor): \(r.meanReward) vs \(sql.1)")
        }
        #expect(groups["shadow/incumbent"] != nil && groups["control/model"] != nil, "the run must have both: \(groups)")
        let a = try db.prepare("SELECT count(*), total(action = model_action) FROM transitions WHERE mode = 'shadow' AND action IS NOT NULL AND model_action IS NOT NULL")
        _ = try a.step()
        #expect(report.agreement.compared == Int(a.int64(0)) && report.agreement.agreed == Int(a.double(1)))
        #expect(report.agreement.compared > 0)
        let means = try db.prepare("SELECT (SELECT avg(reward) FROM transitions WHERE mode = 'control' AND actor != 'incumbent'), (SELECT avg(reward) FROM transitions WHERE actor = 'incumbent')")
        _ = try means.step()
        #expect(abs((report.ticks.edgeqMean ?? .nan) - means.double(0)) <= 1e-9)
        #expect(abs((report.ticks.incumbentMean ?? .nan) - means.double(1)) <= 1e-9)
        let fallbackRows = Int(try db.scalarInt("SELECT count(*) FROM transitions WHERE actor = 'fallback'") ?? -1)
        #expect(report.fallbackKinds.reduce(0) { $0 + $1.rows } == fallbackRows)
        let accepted = Int(try db.scalarInt("SELECT count(*) FROM audit WHERE result = 'accepted' AND verb IN ('mode','promote','rollback','retrain')") ?? -1)
        #expect(report.aggregates.auditEvents.count == accepted && accepted >= 2)

        // The trial (v2 against the served v1) is between two models: the header's verdict is the
        // per-tick comparison with the incumbent, and says where the trial is.
        let store = try ModelStore(dataDirectory: dir)
        let trialFiles = store.versions().compactMap { v -> [String: Any]? in
            guard let d = FileManager.default.contents(atPath: store.trialURL(v).path) else { return nil }
            return try? JSONSerialization.jsonObject(with: d) as? [String: Any]
        }
        let decided = try #require(trialFiles.last { $0["verdict"] as? String != "abandoned" && $0["ci_low"] is Double }, "\(trialFiles)")
        #expect(decided["reference"] as? String == "v1", "\(decided)")
        #expect(report.verdict.source == .perTick)
        #expect(abs((report.verdict.difference ?? .nan) - (means.double(0) - means.double(1))) <= 1e-9)
        let lo = try #require(report.verdict.low), hi = try #require(report.verdict.high)
        #expect(lo <= report.verdict.difference ?? .nan && report.verdict.difference ?? .nan <= hi)
        #expect(report.verdict.answer == (lo > 0 ? .better : (hi < 0 ? .worse : .notShown)))
        #expect(report.verdict.method.contains("1 decided trial between models"), "\(report.verdict.method)")
        // The trial's blocks as logged: from the candidate's first to its last control row up to
        // the verdict, in SQL here.
        let version = try #require(decided["version"] as? Int)
        let runs = try #require(report.trialRuns[version])
        let w = try db.prepare("""
            SELECT count(*), total(reward) FROM transitions WHERE id BETWEEN
              (SELECT min(id) FROM transitions WHERE mode = 'control' AND model_version = ?1 AND time <= ?2) AND
              (SELECT max(id) FROM transitions WHERE mode = 'control' AND model_version = ?1 AND time <= ?2)
            """)
        w.bind(1, String(version))
        w.bind(2, try #require(decided["time"] as? Double))
        _ = try w.step()
        #expect(runs.reduce(0) { $0 + $1.rows } == Int(w.int64(0)) && w.int64(0) > 0)
        #expect(abs(runs.reduce(0) { $0 + $1.rewardSum } - w.double(1)) <= 1e-9 * max(1, abs(w.double(1))))
        let reference = try #require(decided["reference"] as? String)
        #expect(runs.first?.arm == "v\(version)" && runs.last?.arm == "v\(version)", "\(runs.map(\.arm))")
        #expect(runs.allSatisfy { $0.arm == "v\(version)" || $0.arm == reference }, "\(runs.map(\.arm))")
        #expect(zip(runs, runs.dropFirst()).allSatisfy { $0.arm != $1.arm })
        // The retraining and its checks, from report.json.
        let retrained = try #require(report.history.retrainings.first { !$0.checks.isEmpty })
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: store.reportURL(retrained.version))) as? [String: Any])
        #expect(retrained.checks.map(\.name) == (json["checks"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String })
        #expect(report.history.switches.count == (try String(contentsOf: store.directory.appendingPathComponent("served.log"), encoding: .utf8)).split(separator: "\n").count)
        // The metrics scrape's latency histogram counts every decision it saw.
        let m = try #require(report.metrics)
        #expect(m.decisionBuckets.reduce(0) { $0 + $1.count } == m.decisionCount)
        #expect((m.decisionCount ?? 0) > 0)

        // (b) A real headless browser, against the directory.
        let python = Self.browserPython
        #expect(FileManager.default.isExecutableFile(atPath: python), "no \(python): run scripts/setup.sh (it makes the venv with Playwright)")
        // The screenshot lands in the test's directory; EDGEQ_UPDATE_SCREENSHOT=1 writes README's
        // docs/report.png instead (a test run must not change the checkout).
        let screenshot = ProcessInfo.processInfo.environment["EDGEQ_UPDATE_SCREENSHOT"] == "1"
            ? PackageRoot.url.appendingPathComponent("docs/report.png")
            : dir.appendingPathComponent("report.png")
        let run = try ChildProcess.run(python, [PackageRoot.url.appendingPathComponent("scripts/report-browser-check.py").path,
                                                "--page", page.path, "--data", dir.path, "--screenshot", screenshot.path], timeout: 180)
        #expect(run.code == 0, "browser check failed (\(run.code)): \(run.stdout) \(run.stderr)")
        let out = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stdout) \(run.stderr)")
        #expect(out["ok"] as? Bool == true, "\(out["failures"] ?? "")")
        let plots = (out["plots"] as? [[String: Any]] ?? []).compactMap { $0["plot"] as? String }
        #expect(Set(plots).isSuperset(of: ["reward", "agreement", "timeline", "trials", "trial-runs-v\(version)", "latency", "fallbacks", "fallback-reasons"]), "\(plots)")
        #expect(FileManager.default.fileExists(atPath: screenshot.path))
    }

    /// A trial against the incumbent (control mode with no model served: the candidate and the
    /// incumbent take turns) makes the header's verdict: the trial's own interval, from its file.
    @Test func aDecidedTrialAgainstTheIncumbentIsTheHeadersVerdict() throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: TrialGatewayTests.trial))
        defer { h.stop() }
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        let candidate = try storeModel(favouring: 0, for: h.map, in: h.dir.url)
        try h.gateway.control.sync { try h.gateway.startTrial(candidate) }
        let plant = ClosedLoop(h, incumbent: TrialGatewayTests.randomIncumbent(seed: 41), dynamics: TrialGatewayTests.noisyPlant(seed: 42))
        let verdictSeen = { h.received.contains { $0.topic == "edgeq/t1/retrain" && GatewayHarness.json($0)["event"] as? String == "verdict" } }
        try plant.run(until: verdictSeen, atMost: 120)
        h.stop()
        let report = try RunReport(dataDirectory: h.dir.url)
        let store = try ModelStore(dataDirectory: h.dir.url)
        let trial = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: store.trialURL(candidate))) as? [String: Any])
        #expect(trial["reference"] as? String == "incumbent", "\(trial)")
        #expect(report.verdict.source == .trial)
        #expect(report.verdict.difference == trial["mean_difference"] as? Double)
        #expect(report.verdict.low == trial["ci_low"] as? Double)
        #expect(report.verdict.high == trial["ci_high"] as? Double)
        #expect(report.verdict.confidence == trial["confidence"] as? Double)
        let lo = try #require(trial["ci_low"] as? Double), hi = try #require(trial["ci_high"] as? Double)
        #expect(report.verdict.answer == (lo > 0 ? .better : (hi < 0 ? .worse : .notShown)))
        // Built to be better (x → 0.5 against the random incumbent's mix of 0.5 and 4): promoted.
        #expect(trial["verdict"] as? String == "promote" && report.verdict.answer == .better, "\(trial)")
        let html = report.html()
        #expect(html.contains("data-answer=\"better\" data-source=\"trial\""))
        #expect(html.contains("data-low=\"\(lo)\" data-high=\"\(hi)\""))
        // Its blocks as logged: the candidate and the incumbent take turns.
        let runs = try #require(report.trialRuns[candidate])
        #expect(Set(runs.map(\.arm)) == ["v\(candidate)", "incumbent"], "\(runs.map(\.arm))")
    }

    /// The model store's history as the real store writes it: a promotion, an operator's
    /// promotion, a guard's rollback with its quarantine — each on the timeline in its lane.
    @Test func theTimelineShowsTheStoresSwitchesAndQuarantinesInTheirLanes() throws {
        let dir = try TempDir()
        let map = try TopicMap.parse(yaml: testMapping(), file: "test.yaml")
        let log = try ExperienceLog.open(dataDirectory: dir.url.path, gatewayID: "t1")
        let writer = try log.makeWriter()
        for k in 0..<20 {
            writer.submit(Transition(time: Date().timeIntervalSince1970, tick: Int64(k), episode: 0, state: [0, 0], action: 0,
                                     actor: .incumbent, reward: -1, nextState: [0, 0], mode: .shadow))
        }
        try writer.flush()
        try writer.close()
        let v1 = try storeModel(favouring: 0, for: map, in: dir.url, seed: 3)
        let v2 = try storeModel(favouring: 1, for: map, in: dir.url, seed: 4)
        let store = try ModelStore(dataDirectory: dir.url)
        try store.setCurrent(v1, reason: "test")
        try store.setCurrent(v2, reason: "promote by alice")
        try store.rollBack(from: v2, to: v1, reason: "guard: worse than its control group")

        let report = try RunReport(dataDirectory: dir.url)
        #expect(report.history.switches.map(\.version) == [v1, v2, v1])
        #expect(report.history.switches.map(\.kind) == ["promotion", "promotion", "guard trip"])
        #expect(report.history.quarantines.map(\.version) == [v2])
        #expect(report.history.quarantines.first?.reason == "guard: worse than its control group: rolled back to version \(v1)")
        let html = report.html()
        // 3 switches and 1 quarantine (its guard trip is the switch's, not drawn twice).
        #expect(html.contains("data-plot=\"timeline\" data-points=\"4\""), "\(html)")
        #expect(html.contains("guard trip: serve v\(v1) — guard: worse than its control group"))
        #expect(html.contains("v\(v2) quarantined: guard: worse than its control group"))
    }

    /// The Python of the browser test's venv (scripts/setup.sh makes it).
    static var browserPython: String {
        let env = ProcessInfo.processInfo.environment
        let venv = env["EDGEQ_BROWSER_VENV"] ?? ((env["HOME"] ?? "/root") + "/.cache/edgeq/browser-venv")
        return venv + "/bin/python"
    }
}
