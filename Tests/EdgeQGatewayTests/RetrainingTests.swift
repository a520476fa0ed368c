@testable import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQNet
import EdgeQTestSupport
import EdgeQTrust
@testable import EdgeQTopicMap
import Foundation
import Testing

/// Retraining on the device, checks, promotion, rollback and the live guard, against a
/// real broker and real files.
@Suite struct RetrainingTests {
    /// Checks that let a small synthetic candidate through: these tests are about the
    /// mechanism; the thermal learning tests are about quality.
    static let lenient = """
          checks: {quantization_agreement: 0, max_unsupported: 1, min_rows: 100}
          promotion: {policy: manual, min_agreement: 0, rollback_margin: 0.05, guard_window: 20}
        """

    func state(_ step: Int, x: Double, y: Double = 0) -> String { "{\"step\":\(step),\"x\":\(x),\"y\":\(y)}" }

    /// Shadow ticks with an incumbent whose action follows the sign of x.
    func logShadow(_ h: GatewayHarness, ticks: Int, from: Int = 0, scale: Double = 1) throws {
        for i in from..<(from + ticks) {
            let x = scale * sin(Double(i) * 0.7)
            try h.send("plant/t/state", state(i, x: x, y: cos(Double(i) * 0.3)))
            try h.send("plant/t/cmd", "{\"a\":\(x > 0 ? 1 : 0),\"step\":\(i)}")
        }
        let deadline = Date().addingTimeInterval(20)
        while h.metric("edgeq_ticks_total") < Double(from + ticks) && Date() < deadline { _ = h.drain(0.02) }
        // Let the log writer commit (group commit ≤ 100 ms).
        usleep(400_000)
    }

    func retrainResult(_ h: GatewayHarness, timeout: Double = 60) throws -> [String: Any] {
        let m = try h.waitFor(topic: "edgeq/t1/retrain", timeout: timeout) {
            let phase = GatewayHarness.json($0)["phase"] as? String
            return phase == "done" || phase == "failed"
        }
        return GatewayHarness.json(m)
    }

    @Test func retrainStoresAVersionWhileDecisionsKeepFlowing() throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.lenient))
        defer { h.stop() }
        try logShadow(h, ticks: 300)
        try h.command("retrain", #"{"id":"r1","steps":30000}"#)
        let reply = GatewayHarness.json(try h.waitFor(topic: "edgeq/t1/reply/retrain"))
        #expect(reply["ok"] as? Bool == true && reply["id"] as? String == "r1")
        // A second trigger while it runs: busy.
        try h.command("retrain", #"{"id":"r2"}"#)
        let busy = GatewayHarness.json(try h.waitFor(topic: "edgeq/t1/reply/retrain") { GatewayHarness.json($0)["id"] as? String == "r2" })
        #expect(busy["ok"] as? Bool == false)
        #expect((busy["error"] as? String)?.hasPrefix("busy") == true)

        // Ticks every 10 ms while it trains: every one is answered on <prefix>/shadow.
        var sent = 0
        var shadowTimes: [Date] = []
        var result: [String: Any]?
        var sawProgress = false
        let deadline = Date().addingTimeInterval(120)
        while result == nil && Date() < deadline {
            try h.send("plant/t/state", state(1000 + sent, x: 0.5))
            sent += 1
            for m in h.drain(0.01) {
                if m.topic == "edgeq/t1/shadow" { shadowTimes.append(Date()) }
                if m.topic == "edgeq/t1/retrain" {
                    let o = GatewayHarness.json(m)
                    if o["phase"] as? String == "training", (o["updates"] as? Int ?? 0) > 0 { sawProgress = true }
                    if o["phase"] as? String == "done" || o["phase"] as? String == "failed" { result = o }
                }
            }
        }
        for m in h.drain(0.3) where m.topic == "edgeq/t1/shadow" { shadowTimes.append(Date()) }
        let r = try #require(result)
        #expect(sawProgress)
        #expect(r["verdict"] as? String == "passed", "\(r)")
        let version = try #require(r["version"] as? Int)
        #expect(FileManager.default.fileExists(atPath: h.dir.url.appendingPathComponent("models/v\(version)/model.safetensors").path))
        #expect(FileManager.default.fileExists(atPath: h.dir.url.appendingPathComponent("models/v\(version)/report.json").path))
        // Signed with the device key, for this mapping, as the version it is stored as.
        let device = try DeviceKey.loadOrCreate(dataDirectory: h.dir.url)
        let verified = try ModelSignature.verify(modelFile: h.dir.url.appendingPathComponent("models/v\(version)/model.safetensors"),
                                                 expectedVersion: version, expectedMapping: h.map.fingerprint,
                                                 trust: TrustStore(keys: []).adding(device))
        #expect(verified.signature.key == "device")
        // Manual promotion: stored, not served.
        #expect(h.gateway.servedVersion == nil)
        // The decision path was never paused: every tick was decided, none waited for training.
        #expect(shadowTimes.count == sent, "\(shadowTimes.count) decisions for \(sent) ticks during training")
        let gaps = zip(shadowTimes.dropFirst(), shadowTimes).map { $0.timeIntervalSince($1) }
        #expect((gaps.max() ?? 0) < 0.5, "a gap of \(gaps.max() ?? 0) s between two decisions during training")
    }

    @Test func aCandidateThatFailsItsChecksIsNotServedAndSaysWhy() throws {
        // A Q bound no candidate can meet: |Q| ≤ 1e-6 × max|r| / (1 − γ).
        let strict = "  checks: {q_bound_slack: 0.000001, quantization_agreement: 0, max_unsupported: 1, min_rows: 100}\n  promotion: {policy: auto, min_agreement: 0}"
        let h = try GatewayHarness(yaml: testMapping(extraLearning: strict))
        defer { h.stop() }
        try logShadow(h, ticks: 200)
        try h.command("retrain", #"{"steps":500}"#)
        let r = try retrainResult(h)
        #expect(r["verdict"] as? String == "failed")
        let reasons = (r["reasons"] as? [String]) ?? []
        #expect(reasons.contains { $0.hasPrefix("q_within_bound") }, "\(reasons)")
        #expect(r["promoted"] as? Bool == false)
        #expect(h.gateway.servedVersion == nil)
        #expect(try ModelStore(dataDirectory: h.dir.url).versions().isEmpty)
        let status = try h.waitFor(topic: "edgeq/t1/status") { String(decoding: $0.payload, as: UTF8.self).contains("q_within_bound") }
        #expect(String(decoding: status.payload, as: UTF8.self).contains(#""model":null"#))
    }

    @Test func rollbackRestoresThePreviousVersionsActionsExactly() throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.lenient))
        defer { h.stop() }
        try installModel(for: h.map, in: h.dir.url, seed: 1)
        try installModel(for: h.map, in: h.dir.url, seed: 2)
        func qAt(_ step: Int) throws -> [Double] {
            try h.send("plant/t/state", state(step, x: 0.3, y: -0.7))
            let m = try h.waitFor(topic: "edgeq/t1/shadow") { GatewayHarness.json($0)["q"] is [Any] }
            return (GatewayHarness.json(m)["q"] as? [NSNumber] ?? []).map(\.doubleValue)
        }
        #expect(try h.ask("promote", #"{"version":1}"#)["ok"] as? Bool == true)
        let q1 = try qAt(1)
        #expect(try h.ask("promote", #"{"version":2}"#)["ok"] as? Bool == true)
        let q2 = try qAt(2)
        #expect(q1 != q2)
        let back = try h.ask("rollback", #"{"id":"rb"}"#)
        #expect(back["ok"] as? Bool == true)
        #expect(back["version"] as? Int == 1)
        #expect(try qAt(3) == q1)
        #expect(h.gateway.servedVersion == 1)
    }

    @Test func theLiveGuardRollsBackWhenControlDoesWorseThanTheIncumbent() throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.lenient))
        defer { h.stop() }
        try installModel(for: h.map, in: h.dir.url, seed: 1)
        try installModel(for: h.map, in: h.dir.url, seed: 2)
        #expect(try h.ask("promote", #"{"version":1}"#)["ok"] as? Bool == true)
        #expect(try h.ask("promote", #"{"version":2}"#)["ok"] as? Bool == true)
        // The incumbent's baseline: |x| ≈ 0.64 on average, reward ≈ −0.64 per tick.
        try logShadow(h, ticks: 60)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        // In control the plant does much worse (|x| = 5): within the 20-tick window the guard trips.
        var tripped: [String: Any]?
        var i = 0
        while tripped == nil && i < 200 {
            try h.send("plant/t/state", state(5000 + i, x: 5))
            i += 1
            for m in h.drain(0.005) where m.topic == "edgeq/t1/retrain" {
                let o = GatewayHarness.json(m)
                if o["phase"] as? String == "guard" { tripped = o }
            }
        }
        let event = try #require(tripped, "the guard did not trip in \(i) control ticks")
        #expect(i <= 40, "tripped only after \(i) control ticks (window 20)")
        #expect((event["reason"] as? String)?.contains("rolled back from version 2 to 1") == true, "\(event)")
        #expect(event["verdict"] as? String == "rolled_back")
        #expect(event["from"] as? Int == 2 && event["to"] as? Int == 1 && event["quarantined"] as? Int == 2, "\(event)")
        #expect(h.gateway.servedVersion == 1)
        #expect(h.gateway.mode == .control)
        let status = try h.waitFor(topic: "edgeq/t1/status") { String(decoding: $0.payload, as: UTF8.self).contains("live guard") }
        #expect(String(decoding: status.payload, as: UTF8.self).contains(#""trips":1"#))
    }

    @Test func withoutAnEarlierModelTheGuardReturnsToShadow() throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.lenient), withModel: true)
        defer { h.stop() }
        try logShadow(h, ticks: 60)
        try h.command("mode", #"{"mode":"control"}"#)
        _ = try h.waitFor(topic: "edgeq/t1/reply/mode")
        var i = 0
        while h.gateway.mode == .control && i < 200 {
            try h.send("plant/t/state", state(7000 + i, x: 6))
            i += 1
            _ = h.drain(0.005)
        }
        #expect(h.gateway.mode == .shadow)
        #expect(try GatewayState.load(from: h.dir.url)?.reason.contains("live guard") == true)
        // The event says what happened: nothing was rolled back (it said "rolled_back" before).
        func isGuard(_ m: MQTTMessage) -> Bool { m.topic == "edgeq/t1/retrain" && GatewayHarness.json(m)["phase"] as? String == "guard" }
        let event = GatewayHarness.json(try h.received.last(where: isGuard) ?? h.waitFor(topic: "edgeq/t1/retrain", isGuard))
        #expect(event["verdict"] as? String == "fallback_to_shadow", "\(event)")
        #expect(event["from"] as? Int == 1 && event["to"] is NSNull && event["quarantined"] is NSNull, "\(event)")
        #expect(h.gateway.servedVersion == 1)
        #expect(!(try ModelStore(dataDirectory: h.dir.url).isQuarantined(1)))
    }

    /// The mapping loader refuses `policy: shadow-first` now (replaced by `trial`); the gateway
    /// code for it stays until the decision core replaces it, so these tests set it in code
    /// (`learning` is settable only inside EdgeQTopicMap, hence `@testable`).
    static func shadowFirst(_ o: inout GatewayOptions) {
        o.map.learning.promotion = .shadowFirst
        o.map.learning.shadowTicks = 30
    }

    @Test func shadowFirstComparesTheCandidateWithTheLiveDecisionsBeforePromotion() throws {
        let learning = """
              checks: {quantization_agreement: 0, max_unsupported: 1, min_rows: 100}
              promotion: {policy: manual, min_agreement: 0}
            """
        let h = try GatewayHarness(yaml: testMapping(extraLearning: learning), configure: Self.shadowFirst)
        defer { h.stop() }
        try logShadow(h, ticks: 250)
        try h.command("retrain", #"{"steps":2000}"#)
        let result = try retrainResult(h)
        #expect(result["verdict"] as? String == "passed", "\(result)")
        let version = try #require(result["version"] as? Int)
        #expect(result["promoted"] as? Bool == false)
        // The comparison started when the candidate was stored (announced before the result).
        #expect(h.received.contains { $0.topic == "edgeq/t1/retrain" && GatewayHarness.json($0)["phase"] as? String == "shadow-compare" })
        // 40 more shadow ticks with the incumbent: after 30 compared ticks the verdict comes.
        try logShadow(h, ticks: 40, from: 1000)
        func isCompared(_ m: MQTTMessage) -> Bool {
            m.topic == "edgeq/t1/retrain" && GatewayHarness.json(m)["phase"] as? String == "shadow-compared"
        }
        // (It may have arrived while the ticks were being sent.)
        let message = try h.received.first(where: isCompared) ?? h.waitFor(topic: "edgeq/t1/retrain", timeout: 10, isCompared)
        let compared = GatewayHarness.json(message)
        #expect(compared["version"] as? Int == version)
        #expect(compared["ticks"] as? Int == 30)
        let agreement = try #require(compared["agreement"] as? Double)
        #expect((0...1).contains(agreement))
        let margin = try #require(compared["margin"] as? Double)
        let standardError = try #require(compared["margin_standard_error"] as? Double)
        #expect(standardError >= 0)
        #expect(compared["claimed_advantage"] as? Double != nil)
        // Promoted exactly when the live outcomes did not beat its promises.
        let promotes = margin + 2 * standardError >= 0
        #expect(compared["promoted"] as? Bool == promotes)
        #expect((h.gateway.servedVersion == version) == promotes)
    }

    /// Stores a candidate for the test mapping whose values are (about) `headBias` in every
    /// state: a random 16-16 network with `headBias` added to the Q head's biases.
    func storeCandidate(_ h: GatewayHarness, headBias: Float) throws -> Int {
        let arch = Architecture(inputCount: h.map.stateWidth, hidden: [16, 16], actionCount: h.map.actions.count)
        let seeded = try MLP(arch, seed: 3)
        var parameters = seeded.parameterArray
        let head = try #require(arch.slices.last)
        for k in 0..<head.outputs { parameters[head.bias + k] += headBias }
        let net = try MLP(arch, parameters: parameters)
        var rng = SystemRandomNumberGenerator()
        let calibration = (0..<(h.map.stateWidth * 256)).map { _ in Float.random(in: -1...1, using: &rng) }
        let model = try QModel(network: net, actionNames: h.map.actions.map(\.name), normalization: .identity(h.map.stateWidth),
                               calibrationStates: calibration)
        let file = h.dir.url.appendingPathComponent("candidate.safetensors")
        try model.save(to: file)
        return try ModelStore(dataDirectory: h.dir.url).add(
            files: ["model.safetensors": file, "model.safetensors.sha256": QModel.checksumURL(for: file)],
            report: Data(#"{"verdict":"passed"}"#.utf8), signer: try ModelSigner.device(dataDirectory: h.dir.url, map: h.map))
    }

    /// Compares `version` beside the live (incumbent) decisions for the mapping's
    /// `shadow_ticks` and returns the `shadow-compared` message.
    func compare(_ h: GatewayHarness, _ version: Int, from: Int) throws -> [String: Any] {
        try h.gateway.control.sync { try h.gateway.startComparison(version) }
        try logShadow(h, ticks: 50, from: from, scale: 0.1)
        func isCompared(_ m: MQTTMessage) -> Bool {
            let o = GatewayHarness.json(m)
            return m.topic == "edgeq/t1/retrain" && o["phase"] as? String == "shadow-compared" && o["version"] as? Int == version
        }
        return GatewayHarness.json(try h.received.first(where: isCompared) ?? h.waitFor(topic: "edgeq/t1/retrain", timeout: 10, isCompared))
    }

    /// A candidate built to be worse: its values say every tick is worth about −1,000, i.e.
    /// it promises (1 − γ) × −1,000 = −10 per tick, while the live controller's ticks gave
    /// rewards in [−0.1, 0] (reward −|x|, x within ±0.1 here). The live outcomes beat its
    /// promises: not promoted. The comparison its predecessor made (the candidate's own
    /// Q(a_cand) − Q(a_live) ≥ 0) promoted every candidate, this one included.
    @Test func shadowFirstRefusesACandidateWhosePromisesTheLiveOutcomesBeat() throws {
        let learning = """
              promotion: {policy: manual, min_agreement: 0}
            """
        let h = try GatewayHarness(yaml: testMapping(extraLearning: learning), configure: Self.shadowFirst)
        defer { h.stop() }
        try logShadow(h, ticks: 10, scale: 0.1)
        let worse = try storeCandidate(h, headBias: -1_000)
        let refused = try compare(h, worse, from: 100)
        let margin = try #require(refused["margin"] as? Double)
        #expect(margin < -5, "\(refused)")
        #expect(refused["promoted"] as? Bool == false, "\(refused)")
        #expect(h.gateway.servedVersion != worse)
        // Its claimed advantage over the live actions is ≥ 0 all the same: it cannot decide.
        #expect((refused["claimed_advantage"] as? Double ?? -1) >= 0)

        // The same network promising +10 per tick passes the same comparison: the check is
        // one-sided (docs/operations.md: a candidate that overrates every action passes; the
        // live guard stays on).
        let rosy = try storeCandidate(h, headBias: 1_000)
        let passed = try compare(h, rosy, from: 300)
        #expect(passed["promoted"] as? Bool == true, "\(passed)")
        #expect(h.gateway.servedVersion == rosy)
    }
}
