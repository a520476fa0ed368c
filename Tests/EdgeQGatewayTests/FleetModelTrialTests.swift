import EdgeQCore
@testable import EdgeQGateway
import EdgeQMQTT
import EdgeQTestSupport
import EdgeQTrust
import Foundation
import Testing

/// A fleet model's own trial on the gateway (docs/fleet.md, "Models on the gateway"): a model
/// published on `fleet/t/model`, signed by a key the gateway trusts for models, is stored and,
/// under `promotion: trial`, goes through the gateway's switchback trial against the closed-loop
/// plant (`ClosedLoop`, real broker, real model files); the verdict on `fleet/t/verdict/t1`
/// carries the trial's outcome and figures.
@Suite struct FleetModelTrialTests {
    static let yaml = testMapping(extraLearning: TrialGatewayTests.trial) + "\nfleet: {topic: fleet/t, interval: 100ms}\n"

    /// A harness whose gateway trusts the key `fleet-t` for models; returns its private half.
    func harness(_ keys: TempDir) throws -> (GatewayHarness, SigningPrivateKey) {
        let files = try KeyFile.generate(name: "fleet-t", directory: keys.url)
        let h = try GatewayHarness(yaml: Self.yaml) { o in
            let models = TrustStore.keysDirectory(dataDirectory: URL(fileURLWithPath: o.dataDirectory ?? "")).appendingPathComponent("models")
            try? FileManager.default.createDirectory(at: models, withIntermediateDirectories: true)
            try? FileManager.default.copyItem(at: files.publicKey, to: models.appendingPathComponent("fleet-t.pub"))
        }
        #expect(FileManager.default.fileExists(atPath: h.dir.url.appendingPathComponent("keys/models/fleet-t.pub").path))
        return (h, try KeyFile.readPrivateKey(files.privateKey))
    }

    /// Publishes a model favouring `action` as fleet model `version`, signed with `key`, in chunks.
    func publishFleetModel(_ h: GatewayHarness, favouring action: Int, seed: UInt64, version: Int, key: SigningPrivateKey) throws {
        let scratch = try TempDir()
        let v = try storeModel(favouring: action, for: h.map, in: scratch.url, seed: seed)
        let bytes = Array(try Data(contentsOf: try ModelStore(dataDirectory: scratch.url).modelURL(v)))
        let sig = try ModelSignature.sign(modelBytes: bytes, version: version, mapping: h.map.fingerprint, keyName: "fleet-t", privateKey: key)
        let (manifest, chunks) = FleetModelChunk.split(modelBytes: bytes, signature: sig, maxMessage: 2048, learner: "test", rows: 0, gateways: [:])
        #expect(chunks.count > 1)
        for c in chunks { _ = try h.observer.publish("fleet/t/model/chunk/\(c.index)", c.encode(), qos: .atLeastOnce, retain: true) }
        _ = try h.observer.publish("fleet/t/model", manifest.jsonText, qos: .atLeastOnce, retain: true)
    }

    func verdicts(_ h: GatewayHarness) -> [[String: Any]] {
        h.received.filter { $0.topic == "fleet/t/verdict/t1" }.map(GatewayHarness.json)
    }

    @Test func aFleetModelBuiltToBeBetterWinsItsOwnTrialAndTheVerdictSaysPromoted() throws {
        let keys = try TempDir()
        let (h, key) = try harness(keys)
        defer { h.stop() }
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        try publishFleetModel(h, favouring: 0, seed: 12, version: 100, key: key)
        _ = try h.waitFor(topic: "fleet/t/verdict/t1", timeout: 20) { String(decoding: $0.payload, as: UTF8.self).contains("trial_started") }
        let plant = ClosedLoop(h, incumbent: TrialGatewayTests.randomIncumbent(seed: 11), dynamics: TrialGatewayTests.noisyPlant(seed: 12))
        try plant.run(until: { verdicts(h).contains { $0["verdict"] as? String == "promoted" || $0["verdict"] as? String == "rejected" } })
        let v = try #require(verdicts(h).last, "no verdict in \(plant.acted.count) ticks")
        #expect(v["verdict"] as? String == "promoted" && v["version"] as? Int == 100 && v["gateway"] as? String == "t1", "\(v)")
        let trial = try #require(v["trial"] as? [String: Any], "\(v)")
        #expect(trial["verdict"] as? String == "promote" && (trial["pairs"] as? Int ?? 0) >= 2 && (trial["mean_difference"] as? Double ?? 0) > 0, "\(trial)")
        #expect(h.gateway.servedVersion == 100)
        #expect(h.metric("edgeq_fleet_models_stored_total") == 1)
    }

    @Test func aFleetModelBuiltToBeWorseLosesItsTrialAndTheVerdictSaysRejectedWithTheFigures() throws {
        let keys = try TempDir()
        let (h, key) = try harness(keys)
        defer { h.stop() }
        let served = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: 1)
        #expect(try h.ask("promote", "{\"version\":\(served)}")["ok"] as? Bool == true)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        try publishFleetModel(h, favouring: 1, seed: 2, version: 200, key: key)
        let plant = ClosedLoop(h, incumbent: TrialGatewayTests.randomIncumbent(seed: 21), dynamics: TrialGatewayTests.noisyPlant(seed: 22))
        try plant.run(until: { verdicts(h).contains { $0["verdict"] as? String == "promoted" || $0["verdict"] as? String == "rejected" } })
        let all = verdicts(h)
        #expect(all.contains { $0["verdict"] as? String == "trial_started" && $0["version"] as? Int == 200 }, "\(all)")
        let v = try #require(all.last, "no verdict in \(plant.acted.count) ticks")
        #expect(v["verdict"] as? String == "rejected" && v["version"] as? Int == 200, "\(v)")
        #expect((v["reason"] as? String)?.contains("reject") == true, "\(v)")
        let trial = try #require(v["trial"] as? [String: Any], "\(v)")
        #expect(trial["verdict"] as? String == "reject" && (trial["mean_difference"] as? Double ?? 0) < 0 && trial["reference"] as? String == "v\(served)", "\(trial)")
        #expect(h.gateway.servedVersion == served)
    }
}
