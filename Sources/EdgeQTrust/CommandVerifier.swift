import Crypto
import Foundation
import Synchronization

/// Why a command was refused. `rawValue` is the reply's `reason`, the audit row's reason and
/// the metric label (`edgeq_commands_refused_total{reason=…}`).
public enum RefusalReason: String, Sendable, CaseIterable, CustomStringConvertible {
    /// A retained message: a command must be fresh (checked first, in every auth mode).
    case retained
    /// No key is trusted for commands and the mapping did not opt out (`auth: none`).
    case noTrustedKeys = "no_trusted_keys"
    /// No `auth` in the payload.
    case unsigned
    /// Not JSON, or the envelope's fields are missing, of the wrong type or out of shape.
    case malformed
    /// The key named in `auth.key` is not trusted.
    case unknownKey = "unknown_key"
    /// The key is trusted, but not for this verb (a trainer key on `mode`, a model key).
    case wrongRole = "wrong_role"
    /// `ts_ms` is outside the window around the gateway's clock.
    case stale
    /// The nonce was used by an accepted command inside the window.
    case replayed
    /// Too many signature checks per second: refused without checking.
    case rateLimited = "rate_limited"
    /// The signature does not verify (tampered, other gateway or verb, wrong key).
    case badSignature = "bad_signature"
    /// The nonce could not be recorded durably, so replay protection cannot be promised.
    case storage

    /// The label value.
    public var description: String { rawValue }
}

/// A command that passed verification.
public struct AcceptedCommand: Sendable, Equatable {
    /// The signing key's name (`none` under `auth: none`).
    public let key: String
    /// The key's role (nil under `auth: none`).
    public let role: KeyRole?
    /// The command object's JSON text (the envelope's `cmd`, or the whole payload when
    /// unsigned under `auth: none`): parse it as the unsigned command used to be parsed.
    public let command: [UInt8]
    /// The signed timestamp (ms since the epoch), nil when unsigned.
    public let timestampMs: Int64?
}

/// A command that was refused, with why.
public struct RefusedCommand: Error, Sendable, Equatable, CustomStringConvertible {
    /// The reason (reply, audit, metric label).
    public let reason: RefusalReason
    /// A sentence for the reply's `error`: what was wrong and what to do.
    public let message: String
    /// The key name the payload claimed, if any (unverified unless the reason says otherwise).
    public let key: String?
    /// The command object's JSON text as received, unverified, if one could be found: for
    /// echoing its `id` in the reply and for the audit. Never act on it.
    public let command: [UInt8]?

    /// `reason: message`.
    public var description: String { "\(reason): \(message)" }
}

/// The outcome of `CommandVerifier.verify`.
public enum CommandVerdict: Sendable, Equatable {
    /// Obey the command (after the usual checks of its fields).
    case accepted(AcceptedCommand)
    /// Do not obey it; answer with the reason.
    case refused(RefusedCommand)
}

/// Wall and monotonic time for the verifier (tests may give their own).
public struct TrustClock: Sendable {
    /// Milliseconds since the Unix epoch (for timestamps).
    public var wallMs: @Sendable () -> Int64
    /// Monotonic nanoseconds (for the rate limiter).
    public var monotonicNs: @Sendable () -> UInt64

    /// A clock from two functions.
    public init(wallMs: @escaping @Sendable () -> Int64, monotonicNs: @escaping @Sendable () -> UInt64) {
        self.wallMs = wallMs
        self.monotonicNs = monotonicNs
    }

    /// The system's clocks (`CLOCK_REALTIME`, `CLOCK_MONOTONIC`).
    public static let system = TrustClock(wallMs: { CommandEnvelope.nowMs() },
                                          monotonicNs: { DispatchTime.now().uptimeNanoseconds })
}

/// Checks the signed commands of the control plane (docs/security.md): each state-changing
/// command must carry an Ed25519 signature by a key trusted for its verb, over the gateway id,
/// the topic, a timestamp inside the window, a nonce never used within it (remembered across
/// restarts), the key name and the command. Retained messages are refused. Signature checks
/// are rate-limited by a token bucket so that a flood of forged commands costs little: beyond
/// the rate they are refused as `rate_limited` without being checked.
///
/// Runs on the control queue, never on the decision path. Thread-safe; calls are serialised
/// inside (the signature check runs outside the lock).
///
/// Checks, in order (the cheap ones first): retained; (auth none: accept); any trusted key;
/// envelope shape (unsigned, malformed); key known; role; timestamp; nonce; rate limit;
/// signature; record the nonce.
public final class CommandVerifier: Sendable {
    /// How commands are checked.
    public struct Configuration: Sendable, Equatable {
        /// Signed commands (default) or none (a lab: unsigned commands accepted as key `none`).
        public enum Auth: String, Sendable, CaseIterable { case signed, none }
        /// Whether commands must be signed. Default `.signed`.
        public var auth: Auth = .signed
        /// A command's timestamp may differ from the gateway's clock by at most this many
        /// seconds either way. Default 30.
        public var windowSeconds: Double = 30
        /// Signature checks per second, sustained. Default 50.
        public var checksPerSecond: Double = 50
        /// Signature checks allowed at once before the rate applies. Default 50.
        public var burst: Double = 50
        /// Payloads larger than this are refused as malformed without parsing. Default 65536.
        public var maxPayloadBytes = 65536

        /// The defaults.
        public init() {}
    }

    /// The file that remembers used nonces: `<data>/command-nonces`.
    public static func nonceFile(dataDirectory: URL) -> URL { dataDirectory.appendingPathComponent("command-nonces") }

    /// The gateway's id (covered by every signature).
    public let gatewayID: String
    /// The trusted keys.
    public let trust: TrustStore
    /// The settings.
    public let configuration: Configuration
    let keysDirectory: String
    let clock: TrustClock
    let windowMs: Int64
    let state: Mutex<State>

    struct State {
        var nonces: NonceStore
        var tokens: Double
        var lastRefillNs: UInt64
        var accepted = 0
        var refused: [RefusalReason: Int] = [:]
    }

    /// A verifier for the gateway `gatewayID` with data directory `dataDirectory` (where the
    /// nonce file lives and `keys/` is named in messages).
    /// - Throws: `NonceStoreError` when the nonce file exists but cannot be read or repaired.
    public init(gatewayID: String, dataDirectory: URL, trust: TrustStore,
                configuration: Configuration = Configuration(), clock: TrustClock = .system) throws(NonceStoreError) {
        self.gatewayID = gatewayID
        self.trust = trust
        self.configuration = configuration
        self.clock = clock
        keysDirectory = TrustStore.keysDirectory(dataDirectory: dataDirectory).path
        windowMs = Int64((max(configuration.windowSeconds, 0) * 1000).rounded())
        let nonces = try NonceStore(url: Self.nonceFile(dataDirectory: dataDirectory), windowMs: windowMs, nowMs: clock.wallMs())
        state = Mutex(State(nonces: nonces, tokens: max(configuration.burst, 1), lastRefillNs: clock.monotonicNs()))
    }

    /// Commands accepted since start.
    public var acceptedCount: Int { state.withLock { $0.accepted } }

    /// Commands refused since start, by reason (every reason present, zeros included).
    public var refusedCounts: [RefusalReason: Int] {
        state.withLock { s in Dictionary(uniqueKeysWithValues: RefusalReason.allCases.map { ($0, s.refused[$0] ?? 0) }) }
    }

    /// Checks the message on `topic` (`<prefix>/cmd/<verb>`) with `payload`.
    ///
    /// - Parameters:
    ///   - retained: the message's retain flag as delivered (a retained command is refused).
    /// - Returns: `.accepted` with the key and the command to parse, or `.refused` with the reason.
    public func verify(topic: String, verb: String, payload: [UInt8], retained: Bool) -> CommandVerdict {
        let verdict = check(topic: topic, verb: verb, payload: payload, retained: retained)
        state.withLock { s in
            switch verdict {
            case .accepted: s.accepted += 1
            case .refused(let r): s.refused[r.reason, default: 0] += 1
            }
        }
        return verdict
    }

    private func check(topic: String, verb: String, payload: [UInt8], retained: Bool) -> CommandVerdict {
        func refuse(_ reason: RefusalReason, _ message: String, key: String? = nil, command: [UInt8]? = nil) -> CommandVerdict {
            .refused(RefusedCommand(reason: reason, message: message, key: key, command: command))
        }
        if retained {
            // Unverified, for the reply's id and the audit only.
            var claimedKey: String?, claimedCommand: [UInt8]? = payload
            if payload.count <= configuration.maxPayloadBytes,
               let object = (try? JSONSerialization.jsonObject(with: Data(payload))) as? [String: Any], object["auth"] != nil || object["cmd"] != nil {
                claimedKey = (object["auth"] as? [String: Any])?["key"] as? String
                claimedCommand = (object["cmd"] as? String).map { Array($0.utf8) }
            }
            return refuse(.retained, "a retained command is never obeyed (a command must be fresh); publish it without the retain flag, and clear the retained one: mosquitto_pub -r -n -t \(topic)",
                          key: claimedKey, command: claimedCommand)
        }
        guard payload.count <= configuration.maxPayloadBytes else {
            return refuse(.malformed, "the payload is \(payload.count) bytes, more than \(configuration.maxPayloadBytes)")
        }

        // The envelope, if any.
        let isBlank = payload.allSatisfy { $0 == 32 || $0 == 9 || $0 == 10 || $0 == 13 }
        var object: [String: Any] = [:]
        if !isBlank {
            guard let parsed = try? JSONSerialization.jsonObject(with: Data(payload)), let dict = parsed as? [String: Any] else {
                if configuration.auth == .none { return .accepted(AcceptedCommand(key: "none", role: nil, command: payload, timestampMs: nil)) }
                return refuse(.malformed, "the payload is not a JSON object; sign commands with `edgeq cmd \(verb) --key KEYFILE` (docs/security.md)")
            }
            object = dict
        }
        let isEnvelope = object["auth"] != nil || object["cmd"] != nil

        if configuration.auth == .none {
            let command = isEnvelope ? (object["cmd"] as? String).map { Array($0.utf8) } ?? payload : payload
            return .accepted(AcceptedCommand(key: "none", role: nil, command: command, timestampMs: nil))
        }
        guard trust.hasCommandKeys else {
            return refuse(.noTrustedKeys, "no key is trusted for commands: run `edgeq keys generate NAME --dir DIR`, copy NAME.pub to \(keysDirectory)/operator/ (every verb) or \(keysDirectory)/trainer/ (retrain only), restart the gateway, and sign with `edgeq cmd \(verb) --key DIR/NAME.key`",
                          command: isEnvelope ? (object["cmd"] as? String).map { Array($0.utf8) } : payload)
        }
        guard isEnvelope else {
            return refuse(.unsigned, "unsigned command: sign it with `edgeq cmd \(verb) --config FILE --key KEYFILE` (docs/security.md)", command: payload)
        }

        // The envelope's shape.
        let cmdText = object["cmd"] as? String
        let commandBytes = cmdText.map { Array($0.utf8) }
        let claimedKey = (object["auth"] as? [String: Any])?["key"] as? String
        func malformed(_ what: String) -> CommandVerdict {
            refuse(.malformed, "\(what); the envelope is {\"cmd\":\"<command JSON as a string>\",\"auth\":{\"key\",\"ts_ms\",\"nonce\",\"sig\"}} (docs/security.md)",
                   key: claimedKey, command: commandBytes)
        }
        guard let cmdText else { return malformed("'cmd' must be a string holding the command's JSON") }
        let extra = Set(object.keys).subtracting(["cmd", "auth"])
        guard extra.isEmpty else { return malformed("unexpected key\(extra.count > 1 ? "s" : "") \(extra.sorted().map { "'\($0)'" }.joined(separator: ", ")) beside cmd and auth") }
        guard let auth = object["auth"] as? [String: Any] else { return malformed("'auth' must be an object") }
        let authExtra = Set(auth.keys).subtracting(["key", "ts_ms", "nonce", "sig"])
        guard authExtra.isEmpty else { return malformed("unexpected key\(authExtra.count > 1 ? "s" : "") \(authExtra.sorted().map { "'\($0)'" }.joined(separator: ", ")) in auth") }
        guard let keyName = claimedKey, KeyName.problem(keyName) == nil else { return malformed("'auth.key' must be a key name (letters, digits, '.', '_', '-')") }
        guard let tsNumber = auth["ts_ms"] as? NSNumber, String(cString: tsNumber.objCType) != "c",
              tsNumber.doubleValue == tsNumber.doubleValue.rounded(), tsNumber.doubleValue > 0, tsNumber.doubleValue < 1e15 else {
            return malformed("'auth.ts_ms' must be a whole number of milliseconds since 1970")
        }
        let ts = tsNumber.int64Value
        guard let nonce = auth["nonce"] as? String, let nonceBytes = Data(base64Encoded: nonce), (16...64).contains(nonceBytes.count) else {
            return malformed("'auth.nonce' must be standard base64 of 16 to 64 random bytes")
        }
        guard let sigText = auth["sig"] as? String, let signature = Data(base64Encoded: sigText), signature.count == 64 else {
            return malformed("'auth.sig' must be standard base64 of a 64-byte Ed25519 signature")
        }

        // Who signed, and may they?
        guard let key = trust.commandKey(named: keyName) else {
            if trust.modelKey(named: keyName) != nil {
                return refuse(.wrongRole, "the key '\(keyName)' is trusted for signing models only, not commands", key: keyName, command: commandBytes)
            }
            return refuse(.unknownKey, "no key named '\(keyName)' is trusted: copy \(keyName).pub to \(keysDirectory)/operator/ (every verb) or \(keysDirectory)/trainer/ (retrain only) and restart the gateway", key: keyName, command: commandBytes)
        }
        guard key.role.mayCommand(verb) else {
            return refuse(.wrongRole, "the key '\(keyName)' is a \(key.role) key and may not sign '\(verb)' (a trainer key signs retrain only; use an operator key)", key: keyName, command: commandBytes)
        }

        // Fresh?
        let now = clock.wallMs()
        let skew = now - ts
        guard abs(skew) <= windowMs else {
            let seconds = String(format: "%.1f", Double(skew) / 1000)
            return refuse(.stale, "the command's timestamp is \(seconds) s \(skew > 0 ? "old" : "ahead"), outside ±\(configuration.windowSeconds) s: sign it anew, and check the clocks (NTP) of the gateway and of the signer", key: keyName, command: commandBytes)
        }

        // Seen before? Worth a signature check?
        let gate: RefusalReason? = state.withLock { s in
            if s.nonces.contains(nonce) { return .replayed }
            let nowNs = clock.monotonicNs()
            let elapsed = Double(nowNs &- s.lastRefillNs) / 1e9
            s.lastRefillNs = nowNs
            s.tokens = min(max(configuration.burst, 1), s.tokens + elapsed * configuration.checksPerSecond)
            guard s.tokens >= 1 else { return .rateLimited }
            s.tokens -= 1
            return nil
        }
        if gate == .replayed {
            return refuse(.replayed, "this nonce was already used by an accepted command: a replay is never obeyed; sign the command anew (a fresh nonce)", key: keyName, command: commandBytes)
        }
        if gate == .rateLimited {
            return refuse(.rateLimited, "more than \(configuration.checksPerSecond) signed commands per second: refused unchecked; send it again in a moment", key: keyName, command: commandBytes)
        }

        // The signature (outside the lock).
        let message = CommandEnvelope.signedBytes(gatewayID: gatewayID, topic: topic, timestampMs: ts, nonce: nonce, key: keyName, command: cmdText)
        guard key.isValidSignature(signature, for: message) else {
            return refuse(.badSignature, "the signature does not verify with the trusted key '\(keyName)' for gateway '\(gatewayID)' and topic \(topic): the command was altered, signed for another gateway or verb, or with another key", key: keyName, command: commandBytes)
        }

        // Remember the nonce before obeying (durably: a restart must not make it usable again).
        let recorded: Result<Bool, NonceStoreError> = state.withLock { s in
            if s.nonces.contains(nonce) { return .success(false) }   // a concurrent twin got there first
            do throws(NonceStoreError) {
                try s.nonces.record(nonce, timestampMs: ts, nowMs: now)
                return .success(true)
            } catch {
                return .failure(error)
            }
        }
        switch recorded {
        case .success(true):
            return .accepted(AcceptedCommand(key: keyName, role: key.role, command: commandBytes ?? [], timestampMs: ts))
        case .success(false):
            return refuse(.replayed, "this nonce was already used by an accepted command: a replay is never obeyed; sign the command anew (a fresh nonce)", key: keyName, command: commandBytes)
        case .failure(let e):
            return refuse(.storage, "the command verified but its nonce could not be recorded, so it is not obeyed: \(e)", key: keyName, command: commandBytes)
        }
    }
}
