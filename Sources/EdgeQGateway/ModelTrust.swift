import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Synchronization

/// How `ModelStore.add` signs a version: with the device key (what this device trains), or by
/// checking the signature a model came with (`edgeq models import`).
public struct ModelSigner: Sendable {
    /// The version the signature fixes (an imported model), or nil: the store's next number.
    public let version: Int?
    let make: @Sendable (_ modelBytes: [UInt8], _ version: Int) throws -> ModelSignature

    /// Signs the stored bytes as the version the store gives them, for the mapping with
    /// fingerprint `mapping`, with the device key.
    public static func device(_ key: DeviceKey, mapping: String) -> ModelSigner {
        ModelSigner(version: nil) { bytes, version in
            try ModelSignature.sign(modelBytes: bytes, version: version, mapping: mapping, device: key)
        }
    }

    /// The device key of `dataDirectory` (made when missing, as the gateway does at its first
    /// start) signing for `map`: what `edgeq train`, the benchmarks and tests store with.
    /// - Throws: `KeyFileError` when the device key cannot be read or made.
    public static func device(dataDirectory: URL, map: TopicMap) throws(KeyFileError) -> ModelSigner {
        .device(try DeviceKey.loadOrCreate(dataDirectory: dataDirectory), mapping: map.fingerprint)
    }

    /// A model signed elsewhere: the stored bytes must verify against `signature` (a key
    /// trusted in `trust`, the mapping `mapping`), and the version is the signed one.
    public static func imported(_ signature: ModelSignature, trust: TrustStore, mapping: String) -> ModelSigner {
        ModelSigner(version: signature.modelVersion) { bytes, version in
            try ModelSignature.verify(modelBytes: bytes, signature: signature, expectedVersion: version,
                                      expectedMapping: mapping, trust: trust)
        }
    }

    /// The signature of `modelBytes` stored as `version`.
    /// - Throws: `KeyFileError` (device key) or `ModelRefusal` (imported signature).
    public func sign(_ modelBytes: [UInt8], _ version: Int) throws -> ModelSignature { try make(modelBytes, version) }
}

/// Why a stored model version was not served, as the gateway reports it (status field
/// `model_refusals`, metric `edgeq_model_refusals_total{reason}`, `<prefix>/retrain` event).
struct ModelRefusalRecord: Sendable {
    let version: Int
    /// A `ModelRefusalReason` raw value, `failed_checks` or `unrecorded_switch`.
    let reason: String
    let message: String
    let time: Double

    var json: JSONValue {
        .object(["version": .number(Double(version)), "reason": .string(reason), "error": .string(message),
                 "time": .number((time * 1000).rounded() / 1000)])
    }
}

/// The gateway's model trust: its device key, the keys trusted for models (`keys/models/` and
/// the device key), the mapping fingerprint every served model must be signed for, and the
/// refusals since start. Immutable but for the refusal list (behind a mutex).
final class ModelTrust: Sendable {
    /// Reasons beyond the signature's: a signed model that does not decode or fails its
    /// reference set, and a `current` pointer no recorded switch chose (anti-rollback).
    static let failedChecks = "failed_checks"
    static let unrecordedSwitch = "unrecorded_switch"
    static let reasons = ModelRefusalReason.allCases.map(\.rawValue) + [failedChecks, unrecordedSwitch]
    /// At most this many refusals are listed in the status (the newest).
    static let listed = 16

    let device: DeviceKey
    let trust: TrustStore
    let fingerprint: String
    let signer: ModelSigner
    let counters: [String: Counter]
    private let state = Mutex<(refusals: [ModelRefusalRecord], unannounced: [ModelRefusalRecord], live: Bool)>(([], [], false))

    /// Model signatures with the gateway's device key and its trusted keys (the `models` role
    /// serves here), both loaded once at start (`GatewayTrust.load`).
    init(device: DeviceKey, trust: TrustStore, map: TopicMap, registry: MetricsRegistry) {
        self.device = device
        self.trust = trust
        fingerprint = map.fingerprint
        signer = .device(device, mapping: fingerprint)
        var c: [String: Counter] = [:]
        for r in Self.reasons {
            c[r] = registry.counter("edgeq_model_refusals_total", help: "Stored model versions refused (not served), by reason: a missing, untrusted or bad signature, a tampered file, another mapping, a version mismatch, failed load checks, or a current pointer no recorded switch chose.", labels: [("reason", r)])
        }
        counters = c
    }

    /// Records a refusal. Returns whether it can be published now (the gateway is running);
    /// else it waits for `takeUnannounced()`.
    func record(_ r: ModelRefusalRecord) -> Bool {
        counters[r.reason]?.increment()
        return state.withLock { s in
            s.refusals.append(r)
            if s.refusals.count > Self.listed { s.refusals.removeFirst(s.refusals.count - Self.listed) }
            if !s.live { s.unannounced.append(r) }
            return s.live
        }
    }

    /// The refusals made before the gateway was running (to publish once connected); from
    /// now on each is published when it happens.
    func takeUnannounced() -> [ModelRefusalRecord] {
        state.withLock { s in
            s.live = true
            defer { s.unannounced = [] }
            return s.unannounced
        }
    }

    /// The newest refusals, oldest first.
    var refusals: [ModelRefusalRecord] { state.withLock { $0.refusals } }
}
