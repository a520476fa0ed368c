@testable import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQNet
import EdgeQTestSupport
import EdgeQTrust
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
}
