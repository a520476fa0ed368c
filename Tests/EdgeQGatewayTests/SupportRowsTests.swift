@testable import EdgeQGateway
import EdgeQLog
import EdgeQNet
import EdgeQRetrain
import EdgeQTestSupport
import Foundation
import Testing

/// Which rows widen a candidate's support (`SupportRows`): a model the gateway does not trust
/// (never served, or removed) takes the plant further than its support; its rows must not
/// license the next candidate to go further still (docs/learning.md, "The support widens from
/// candidate to candidate").
@Suite struct SupportRowsTests {
    static func row(_ i: Int, x: Float, mode: ControlMode, version: String?) -> EdgeQLog.Transition {
        Transition(time: Double(i), tick: Int64(i), episode: 0, state: [x], action: 0, actor: mode == .control ? .model : .incumbent,
                   reward: 0, nextState: [x], mode: mode, modelVersion: version)
    }

    /// An untrusted model's control rows, the hand-backs naming it right after them and the
    /// settle rows after its last row are left out; a trusted model's rows, the incumbent's, and
    /// shadow rows naming a model that was only shadowed are kept.
    @Test func anUntrustedModelsStretchInChargeAndItsSettleRowsAreLeftOut() {
        let rule = SupportRows(trusted: ["1"], settleRows: 2)
        let plan: [(ControlMode, String?)] = [
            (.shadow, nil), (.shadow, "5"),            // 0, 1: incumbent; a model only shadowed
            (.control, "5"), (.shadow, "5"),           // 2, 3: v5 in charge, then a hand-back in its block
            (.control, "5"),                           // 4: v5 again
            (.shadow, nil), (.shadow, nil),            // 5, 6: settle rows (the reference's burn-in)
            (.shadow, nil),                            // 7: kept
            (.control, "1"), (.shadow, "1"),           // 8, 9: the trusted v1 and its shadow
            (.control, "6"), (.control, "1"),          // 10: v6 for a tick; 11, 12: settle
            (.control, "1"), (.control, "1"),          // 13: kept
        ]
        let rows = plan.enumerated().map { Self.row($0.offset, x: Float($0.offset), mode: $0.element.0, version: $0.element.1) }
        #expect(rule.kept(rows) == [0, 1, 7, 8, 9, 13])
        // Nothing left: every row counts (a support from no row would check nothing).
        let all = (0..<3).map { Self.row($0, x: 0, mode: .control, version: "9") }
        #expect(rule.kept(all) == [0, 1, 2])
        // Negative settle rows are none.
        #expect(SupportRows(trusted: [], settleRows: -4).settleRows == 0)
    }
}

extension RetrainingTests {
    /// On a running gateway against a real broker: the incumbent keeps x within ±1; v2, served
    /// and then rolled back from (quarantined), takes it to ±6 in control; the plant is still at
    /// 5 for a few ticks after it; v1, served, keeps it within ±1.5. The next candidate's support
    /// is that of the incumbent's and v1's rows only, and its report counts the rows left out;
    /// the same log's every row would have reached 6.
    @Test func aModelRolledBackFromDoesNotWidenTheNextCandidatesSupport() throws {
        let learning = """
              checks: {quantization_agreement: 0, max_unsupported: 1, min_rows: 100}
              promotion: {policy: manual, min_agreement: 0, control_share: 0}
            """
        let h = try GatewayHarness(yaml: testMapping(extraLearning: learning))
        defer { h.stop() }
        try logShadow(h, ticks: 200)   // x = sin: within ±1
        let v1 = try storeModel(favouring: 1, for: h.map, in: h.dir.url, seed: 1)
        let v2 = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: 2)
        #expect(try h.ask("promote", "{\"version\":\(v1)}")["ok"] as? Bool == true)
        #expect(try h.ask("promote", "{\"version\":\(v2)}")["ok"] as? Bool == true)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        func feed(_ range: Range<Int>, x: (Int) -> Double) throws {
            for i in range { try h.send("plant/t/state", state(i, x: x(i), y: cos(Double(i) * 0.3))) }
            let deadline = Date().addingTimeInterval(20)
            while h.metric("edgeq_ticks_total") < Double(range.upperBound) && Date() < deadline { _ = h.drain(0.02) }
            usleep(400_000)
        }
        try feed(200..<300) { 6 * sin(Double($0) * 0.7) }
        #expect(try h.ask("rollback", "{}")["version"] as? Int == v1)
        try feed(300..<400) { $0 < 304 ? 5 : 1.5 * sin(Double($0) * 0.7) }
        try h.command("retrain", #"{"id":"r","steps":300}"#)
        let r = try h.retrainResult(timeout: 120)
        #expect(r["verdict"] as? String == "passed", "\(r)")
        let version = try #require(r["version"] as? Int, "\(r)")
        let store = try ModelStore(dataDirectory: h.dir.url)
        let box = try #require(try QModel.load(from: store.modelURL(version)).support)
        // Normalised x (normalize: [-10, 10]): the incumbent's ±1 and v1's ±1.5 are ±0.15 at most.
        #expect(box.max[0] <= 0.15 + 1e-4 && box.min[0] >= -0.15 - 1e-4, "support of x: \(box.min[0]) … \(box.max[0])")
        #expect(box.max[0] > 0.1, "v1's rows widen it (\(box.max[0]))")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: store.reportURL(version))) as? [String: Any])
        let excluded = try #require((report["figures"] as? [String: Any])?["support_rows_excluded"] as? Double, "\(report)")
        // v2's 100 rows (less the one the rollback may take) and 8 settle rows (the trial's burn-in).
        #expect(excluded >= 100 && excluded <= 110, "\(excluded)")
        // Every row of the same log would have reached 6 (0.6 normalised).
        let rows = try ExperienceLog.open(path: h.dir.url.appendingPathComponent("experience.sqlite").path, create: false)
            .transitions(window: .all).map(\.transition)
        let wide = try #require(StateSupport.fit(rows: rows.flatMap { [$0.state, $0.nextState] }, inputCount: 2))
        #expect(wide.max[0] > 0.55, "\(wide.max[0])")
    }
}
