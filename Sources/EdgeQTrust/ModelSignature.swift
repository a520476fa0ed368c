#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Crypto
import EdgeQCore
import EdgeQTopicMap
import Foundation

extension TopicMap {
    /// The mapping fingerprint a model's signature covers: SHA-256 (hex) of
    /// `canonicalDefinition` (the state's features, signals they read, history, and the actions'
    /// names in order). Two mappings with the same fingerprint feed a network the same inputs
    /// and read its outputs the same way.
    public var fingerprint: String { hexDigest(Array(canonicalDefinition.utf8)) }
}

/// SHA-256 of `bytes` as 64 lowercase hex digits (swift-crypto).
public func hexDigest(_ bytes: some DataProtocol) -> String {
    let digits: [Character] = Array("0123456789abcdef")
    var out = ""
    out.reserveCapacity(64)
    for b in SHA256.hash(data: bytes) {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0xf)])
    }
    return out
}

/// The gateway's own model-signing key: `<data>/keys/device.key` (mode 0600), made at first
/// start; its public half is written beside it as `device.pub` (to trust this device's models
/// elsewhere). Models the device trains are signed with it and trusted as key `device`.
public struct DeviceKey: Sendable {
    /// The name models signed by the device carry: `device`.
    public static let name = "device"
    /// The private key's 32-byte seed (never published; bytes because swift-crypto's key type
    /// is not `Sendable` on Linux).
    let seed: [UInt8]
    /// Its public key's 32 raw bytes.
    public let rawPublicKey: [UInt8]
    /// The private key file.
    public let file: URL

    init(privateKey: Curve25519.Signing.PrivateKey, file: URL) {
        seed = Array(privateKey.rawRepresentation)
        rawPublicKey = Array(privateKey.publicKey.rawRepresentation)
        self.file = file
    }

    /// The private key.
    /// - Throws: `KeyFileError` if the seed does not make a key (it was read and checked, so only
    ///   memory corruption could cause it).
    public func privateKey() throws(KeyFileError) -> Curve25519.Signing.PrivateKey {
        do {
            return try Curve25519.Signing.PrivateKey(rawRepresentation: seed)
        } catch {
            throw KeyFileError(path: file.path, problem: "the device key does not load (\(error))", remedy: "move the file away; the gateway makes a new one at its next start")
        }
    }

    /// The public key.
    public var publicKey: Curve25519.Signing.PublicKey? { try? Curve25519.Signing.PublicKey(rawRepresentation: rawPublicKey) }

    /// Reads `<data>/keys/device.key`, or makes it (and `device.pub`) when missing.
    /// - Throws: `KeyFileError` when the file is malformed, readable by others, or cannot be
    ///   written.
    public static func loadOrCreate(dataDirectory: URL) throws(KeyFileError) -> DeviceKey {
        let dir = TrustStore.keysDirectory(dataDirectory: dataDirectory)
        let keyURL = dir.appendingPathComponent("device.key")
        if FileManager.default.fileExists(atPath: keyURL.path) {
            return DeviceKey(privateKey: try KeyFile.readPrivateKey(keyURL), file: keyURL)
        }
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KeyFileError(path: dir.path, problem: "cannot create the keys folder (\(error.localizedDescription))", remedy: "check the data directory's permissions")
        }
        let key = Curve25519.Signing.PrivateKey()
        // Written under a temporary name and renamed: a crash never leaves a half-written key.
        let temp = dir.appendingPathComponent(".device.key.tmp-\(getpid())")
        unlink(temp.path)
        try KeyFile.writeExclusive(temp, KeyFile.text(key.rawRepresentation), mode: 0o600)
        guard rename(temp.path, keyURL.path) == 0 else {
            unlink(temp.path)
            throw KeyFileError(path: keyURL.path, problem: "cannot rename the new key into place (\(String(cString: strerror(errno))))", remedy: "check the keys folder's permissions")
        }
        let pubURL = dir.appendingPathComponent("device.pub")
        unlink(pubURL.path)
        try? KeyFile.writeExclusive(pubURL, KeyFile.text(key.publicKey.rawRepresentation), mode: 0o644)
        return DeviceKey(privateKey: key, file: keyURL)
    }
}

/// Why a model's signature was refused.
public enum ModelRefusalReason: String, Sendable, CaseIterable, CustomStringConvertible {
    /// No `.sig` file beside the model.
    case missingSignature = "missing_signature"
    /// The `.sig` file is not the expected JSON.
    case malformed
    /// The signing key is not trusted under `keys/models/` (nor the device key).
    case unknownKey = "unknown_key"
    /// The signature does not verify over the `.sig` file's fields (they were altered).
    case badSignature = "bad_signature"
    /// The model file's SHA-256 is not the signed one (the model was altered).
    case tampered
    /// The model was signed for another mapping (its state or actions differ).
    case otherMapping = "other_mapping"
    /// The signed version is not the version it is stored as.
    case versionMismatch = "version_mismatch"

    /// The label value.
    public var description: String { rawValue }
}

/// A refused model signature: the reason and a sentence saying what to do.
public struct ModelRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    /// Why.
    public let reason: ModelRefusalReason
    /// What was found and what to do.
    public let message: String

    /// A refusal for `reason`, with a sentence saying what was found and what to do.
    public init(reason: ModelRefusalReason, message: String) {
        self.reason = reason
        self.message = message
    }
    /// `reason: message`.
    public var description: String { "\(reason): \(message)" }
}

/// A model signature: Ed25519 by a trusted key over the model's SHA-256, its version and the
/// mapping fingerprint, stored as JSON beside the model (`<model file>.sig`):
/// ```
/// {"key":"device","sha256":"<64 hex>","version":3,"mapping":"<64 hex>","sig":"<base64>"}
/// ```
/// The signed bytes are the UTF-8 of
/// `edgeq-model-v1\n<key>\n<sha256>\n<version>\n<mapping>` (version in decimal).
public struct ModelSignature: Sendable, Equatable {
    /// The first line of the signed text.
    public static let version = "edgeq-model-v1"
    /// The signing key's name (`device` for the gateway's own key).
    public let key: String
    /// SHA-256 (hex) of the model file.
    public let sha256: String
    /// The model version it is signed as.
    public let modelVersion: Int
    /// The mapping fingerprint (`TopicMap.fingerprint`).
    public let mapping: String
    /// The 64-byte Ed25519 signature.
    public let signature: [UInt8]

    /// The signature file of `modelFile`: `<modelFile>.sig`.
    public static func url(for modelFile: URL) -> URL { modelFile.appendingPathExtension("sig") }

    /// The bytes the signature covers.
    public static func signedBytes(key: String, sha256: String, version: Int, mapping: String) -> [UInt8] {
        Array([Self.version, key, sha256, String(version), mapping].joined(separator: "\n").utf8)
    }

    /// Signs `modelBytes` as `version` for the mapping with fingerprint `mapping`.
    public static func sign(modelBytes: some DataProtocol, version: Int, mapping: String,
                            keyName: String, privateKey: Curve25519.Signing.PrivateKey) throws(KeyFileError) -> ModelSignature {
        let sha = hexDigest(modelBytes)
        do {
            let sig = try privateKey.signature(for: signedBytes(key: keyName, sha256: sha, version: version, mapping: mapping))
            return ModelSignature(key: keyName, sha256: sha, modelVersion: version, mapping: mapping, signature: Array(sig))
        } catch {
            throw KeyFileError(path: keyName, problem: "signing failed (\(error))", remedy: "generate a new key")
        }
    }

    /// Signs with the device key.
    public static func sign(modelBytes: some DataProtocol, version: Int, mapping: String, device: DeviceKey) throws(KeyFileError) -> ModelSignature {
        try sign(modelBytes: modelBytes, version: version, mapping: mapping, keyName: DeviceKey.name, privateKey: try device.privateKey())
    }

    /// The `.sig` file's JSON text.
    public var jsonText: String {
        "{\"key\":\(jsonString(key)),\"sha256\":\(jsonString(sha256)),\"version\":\(modelVersion),\"mapping\":\(jsonString(mapping)),\"sig\":\(jsonString(Data(signature).base64EncodedString()))}\n"
    }

    /// Writes the `.sig` file for `modelFile` (temporary file, fsync, rename).
    public func write(for modelFile: URL) throws(KeyFileError) {
        let target = Self.url(for: modelFile)
        let temp = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).tmp-\(getpid())")
        unlink(temp.path)
        try KeyFile.writeExclusive(temp, jsonText, mode: 0o644)
        guard rename(temp.path, target.path) == 0 else {
            unlink(temp.path)
            throw KeyFileError(path: target.path, problem: "cannot rename the signature into place (\(String(cString: strerror(errno))))", remedy: "check the folder's permissions")
        }
    }

    /// Parses a `.sig` file's contents.
    public static func parse(_ data: Data) throws(ModelRefusal) -> ModelSignature {
        func bad(_ what: String) -> ModelRefusal {
            ModelRefusal(reason: .malformed, message: "the signature file \(what); expected {\"key\",\"sha256\",\"version\",\"mapping\",\"sig\"}: sign the model again")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { throw bad("is not a JSON object") }
        guard let key = object["key"] as? String, KeyName.problem(key) == nil else { throw bad("has no valid 'key'") }
        guard let sha = object["sha256"] as? String, sha.utf8.count == 64, sha.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || ($0 >= 0x41 && $0 <= 0x46) }) else { throw bad("has no 64-digit hex 'sha256'") }
        guard let v = object["version"] as? NSNumber, String(cString: v.objCType) != "c",
              v.doubleValue == v.doubleValue.rounded(), v.doubleValue >= 0, v.doubleValue < 1e15 else { throw bad("has no whole-number 'version'") }
        guard let mapping = object["mapping"] as? String, !mapping.isEmpty else { throw bad("has no 'mapping'") }
        guard let sigText = object["sig"] as? String, let sig = Data(base64Encoded: sigText), sig.count == 64 else { throw bad("has no base64 64-byte 'sig'") }
        return ModelSignature(key: key, sha256: sha.lowercased(), modelVersion: v.intValue, mapping: mapping, signature: Array(sig))
    }

    /// Verifies the model bytes against their signature (read the model once and decode the
    /// same bytes, so that what was verified is what is served).
    ///
    /// Checks, in order: the key is trusted (`keys/models/` or the device key); the signature
    /// covers the `.sig` fields; the bytes' SHA-256 is the signed one; the signed mapping is
    /// `expectedMapping`; the signed version is `expectedVersion`.
    /// - Returns: the verified signature (its `key` says who signed).
    /// - Throws: `ModelRefusal` with the first failing check.
    public static func verify(modelBytes: some DataProtocol, signature: ModelSignature, expectedVersion: Int,
                              expectedMapping: String, trust: TrustStore) throws(ModelRefusal) -> ModelSignature {
        guard let key = trust.modelKey(named: signature.key) else {
            throw ModelRefusal(reason: .unknownKey, message: "the model is signed by '\(signature.key)', which is not trusted for models: put \(signature.key).pub in <data>/keys/models/ if you trust it")
        }
        let message = signedBytes(key: signature.key, sha256: signature.sha256, version: signature.modelVersion, mapping: signature.mapping)
        guard key.isValidSignature(signature.signature, for: message) else {
            throw ModelRefusal(reason: .badSignature, message: "the signature by '\(signature.key)' does not verify over the signature file's fields: the file was altered; restore the model and its .sig from a trusted copy")
        }
        let actual = hexDigest(modelBytes)
        guard actual == signature.sha256 else {
            throw ModelRefusal(reason: .tampered, message: "the model's sha256 is \(actual) but \(signature.sha256) was signed: the model file was altered; restore it from a trusted copy")
        }
        guard signature.mapping == expectedMapping else {
            throw ModelRefusal(reason: .otherMapping, message: "the model was signed for the mapping \(signature.mapping.prefix(12))…, this gateway's is \(expectedMapping.prefix(12))… (its state or actions differ): train a model for this mapping")
        }
        guard signature.modelVersion == expectedVersion else {
            throw ModelRefusal(reason: .versionMismatch, message: "the model was signed as version \(signature.modelVersion) but is stored as version \(expectedVersion): an old version cannot be passed off as a new one")
        }
        return signature
    }

    /// Reads `modelFile` and `signatureFile` (default `<modelFile>.sig`) and verifies them.
    /// - Returns: the model's bytes (decode these, not a second read) and the signature.
    /// - Throws: `ModelRefusal` (`missingSignature` when the `.sig` file is absent; `malformed`
    ///   also when the model cannot be read), else as `verify(modelBytes:…)`.
    public static func verify(modelFile: URL, signatureFile: URL? = nil, expectedVersion: Int,
                              expectedMapping: String, trust: TrustStore) throws(ModelRefusal) -> (bytes: [UInt8], signature: ModelSignature) {
        let sigURL = signatureFile ?? url(for: modelFile)
        guard let sigData = FileManager.default.contents(atPath: sigURL.path) else {
            throw ModelRefusal(reason: .missingSignature, message: "\(sigURL.path) is missing: a model is served only with a valid signature (the device signs what it trains; import others with their .sig)")
        }
        let signature = try parse(sigData)
        guard let model = FileManager.default.contents(atPath: modelFile.path) else {
            throw ModelRefusal(reason: .malformed, message: "cannot read \(modelFile.path)")
        }
        let bytes = Array(model)
        let verified = try verify(modelBytes: bytes, signature: signature, expectedVersion: expectedVersion, expectedMapping: expectedMapping, trust: trust)
        return (bytes, verified)
    }
}
