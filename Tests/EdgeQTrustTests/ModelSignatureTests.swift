// Model signatures over real files: the device key, a trusted models/ key, and each refusal.
import EdgeQTestSupport
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Testing

@Suite struct ModelSignatureTests {
    /// A model file (any bytes: the signature does not read the format) in `dir`.
    func modelFile(_ dir: URL, bytes: [UInt8] = Array("safetensors-bytes-\(UUID())".utf8)) throws -> URL {
        let url = dir.appendingPathComponent("v3/model.safetensors")
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(bytes).write(to: url)
        return url
    }

    /// The refusal's reason, or nil when `body` verified.
    func refusal(_ body: () throws -> Void) -> ModelRefusalReason? {
        do {
            try body()
            return nil
        } catch let e as ModelRefusal {
            return e.reason
        } catch {
            Issue.record("not a refusal: \(error)")
            return nil
        }
    }

    @Test func deviceKeyIsMadeOnceWithMode0600() throws {
        let f = try TrustFixture()
        let a = try DeviceKey.loadOrCreate(dataDirectory: f.data)
        let attrs = try FileManager.default.attributesOfItem(atPath: a.file.path)
        #expect((attrs[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        #expect(a.file.path == f.data.appendingPathComponent("keys/device.key").path)
        let b = try DeviceKey.loadOrCreate(dataDirectory: f.data)
        #expect(a.rawPublicKey == b.rawPublicKey)
        // The device key file does not make the trust store trust anything by itself.
        #expect(try f.trust().modelKey(named: "device") == nil)
    }

    @Test func deviceSignedModelVerifies() throws {
        let f = try TrustFixture()
        let device = try DeviceKey.loadOrCreate(dataDirectory: f.data)
        let trust = try f.trust().adding(device)
        let fingerprint = try TrustFixture.mapping().fingerprint
        let model = try modelFile(f.data)
        let sig = try ModelSignature.sign(modelBytes: try Data(contentsOf: model), version: 3, mapping: fingerprint, device: device)
        try sig.write(for: model)
        let verified = try ModelSignature.verify(modelFile: model, expectedVersion: 3, expectedMapping: fingerprint, trust: trust)
        #expect(verified.signature.key == "device")
        #expect(verified.bytes == Array(try Data(contentsOf: model)))
        // Without adding the device key, its signature is not trusted.
        #expect(refusal { _ = try ModelSignature.verify(modelFile: model, expectedVersion: 3, expectedMapping: fingerprint, trust: try f.trust()) } == .unknownKey)
    }

    @Test func modelsKeySignedModelVerifiesAndOthersAreUnknown() throws {
        let f = try TrustFixture()
        let fingerprint = try TrustFixture.mapping().fingerprint
        let model = try modelFile(f.data)
        try ModelSignature.sign(modelBytes: try Data(contentsOf: model), version: 3, mapping: fingerprint, keyName: "mo", privateKey: try f.privateKey("mo")).write(for: model)
        #expect(refusal { _ = try ModelSignature.verify(modelFile: model, expectedVersion: 3, expectedMapping: fingerprint, trust: try f.trust()) } == nil)
        // An operator key is not a model key, nor is an untrusted one.
        for (name, key) in [("alice", try f.privateKey("alice")), ("zed", try f.untrustedKey("zed"))] {
            try ModelSignature.sign(modelBytes: try Data(contentsOf: model), version: 3, mapping: fingerprint, keyName: name, privateKey: key).write(for: model)
            #expect(refusal { _ = try ModelSignature.verify(modelFile: model, expectedVersion: 3, expectedMapping: fingerprint, trust: try f.trust()) } == .unknownKey)
        }
    }

    @Test func tamperedModelIsRefusedEvenWithRewrittenChecksums() throws {
        let f = try TrustFixture()
        let device = try DeviceKey.loadOrCreate(dataDirectory: f.data)
        let trust = try f.trust().adding(device)
        let fingerprint = try TrustFixture.mapping().fingerprint
        let model = try modelFile(f.data, bytes: Array(repeating: 7, count: 4096))
        try ModelSignature.sign(modelBytes: try Data(contentsOf: model), version: 3, mapping: fingerprint, device: device).write(for: model)

        // Change one byte (a head bias) and rewrite the sha256sum file beside it, as the attacker did.
        var bytes = Array(try Data(contentsOf: model))
        bytes[2000] ^= 0x40
        try Data(bytes).write(to: model)
        try Data((hexDigest(bytes) + "  model.safetensors\n").utf8).write(to: model.appendingPathExtension("sha256"))
        #expect(refusal { _ = try ModelSignature.verify(modelFile: model, expectedVersion: 3, expectedMapping: fingerprint, trust: trust) } == .tampered)

        // Rewrite the sha256 inside the .sig too: now the signature itself fails.
        let sigURL = ModelSignature.url(for: model)
        var sig = try JSONSerialization.jsonObject(with: Data(contentsOf: sigURL)) as? [String: Any] ?? [:]
        sig["sha256"] = hexDigest(bytes)
        try JSONSerialization.data(withJSONObject: sig).write(to: sigURL)
        #expect(refusal { _ = try ModelSignature.verify(modelFile: model, expectedVersion: 3, expectedMapping: fingerprint, trust: trust) } == .badSignature)
    }

    @Test func modelForAnotherMappingIsRefused() throws {
        let f = try TrustFixture()
        let device = try DeviceKey.loadOrCreate(dataDirectory: f.data)
        let trust = try f.trust().adding(device)
        let ours = try TrustFixture.mapping().fingerprint
        let theirs = try TrustFixture.mapping(TrustFixture.mappingText(actions: ["off", "low", "high"])).fingerprint
        #expect(ours != theirs)
        let model = try modelFile(f.data)
        try ModelSignature.sign(modelBytes: try Data(contentsOf: model), version: 3, mapping: theirs, device: device).write(for: model)
        #expect(refusal { _ = try ModelSignature.verify(modelFile: model, expectedVersion: 3, expectedMapping: ours, trust: trust) } == .otherMapping)
    }

    @Test func versionMismatchMissingAndMalformedSignatures() throws {
        let f = try TrustFixture()
        let device = try DeviceKey.loadOrCreate(dataDirectory: f.data)
        let trust = try f.trust().adding(device)
        let fp = try TrustFixture.mapping().fingerprint
        let model = try modelFile(f.data)
        #expect(refusal { _ = try ModelSignature.verify(modelFile: model, expectedVersion: 3, expectedMapping: fp, trust: trust) } == .missingSignature)
        try ModelSignature.sign(modelBytes: try Data(contentsOf: model), version: 2, mapping: fp, device: device).write(for: model)
        #expect(refusal { _ = try ModelSignature.verify(modelFile: model, expectedVersion: 3, expectedMapping: fp, trust: trust) } == .versionMismatch)
        try Data("{\"key\":\"device\"}".utf8).write(to: ModelSignature.url(for: model))
        #expect(refusal { _ = try ModelSignature.verify(modelFile: model, expectedVersion: 3, expectedMapping: fp, trust: trust) } == .malformed)
    }

    @Test func fingerprintFollowsStateAndActionsOnly() throws {
        let base = try TrustFixture.mapping()
        // Other broker: same fingerprint.
        #expect(try TrustFixture.mapping(TrustFixture.mappingText(broker: "mqtt://10.0.0.1:1883")).fingerprint == base.fingerprint)
        // Other normalisation, other action names: different.
        #expect(try TrustFixture.mapping(TrustFixture.mappingText(normalize: "[0, 50]")).fingerprint != base.fingerprint)
        #expect(try TrustFixture.mapping(TrustFixture.mappingText(actions: ["on", "off"])).fingerprint != base.fingerprint)
        #expect(base.fingerprint.count == 64)
        // The canonical text lists the read signal only (power feeds the reward, not the state).
        #expect(base.canonicalDefinition.contains("signal \"temp\" number scale 1.0 offset 0.0"))
        #expect(!base.canonicalDefinition.contains("power"))
        // Every shipped mapping has one (and they differ).
        let prints = try PackageRoot.topicFiles.map { try TopicMap.load(path: $0).fingerprint }
        #expect(Set(prints).count == prints.count)
    }
}
