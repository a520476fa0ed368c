import EdgeQLog
import EdgeQMQTT
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Logging
import Synchronization

/// Who changed the mode last, and when (status `by` and `at`).
struct ModeChange: Sendable {
    /// The key that signed the command (`none` under `auth: none`); nil when no command did it
    /// (start, the live guard, …: `mode_reason` says what).
    var by: String?
    /// Unix seconds.
    var at: Double
}

/// Audit rows waiting for the next batch (control queue).
struct AuditBuffer {
    var records: [AuditRecord] = []
    var flushScheduled = false
}

/// When refused commands were last logged (control queue): at most one log line a second,
/// with the number of refusals not logged since.
struct RefusalLogState {
    var lastNanos: UInt64 = 0
    var suppressed = 0
}

/// The trust part of a gateway, set up at start (Gateway.init).
struct GatewayTrust {
    let device: DeviceKey
    let trust: TrustStore
    let verifier: CommandVerifier

    /// The device key (made at the first start), the trusted keys of `DATA/keys/<role>/` plus
    /// the device's own, and the command verifier with the mapping's `control_plane.auth`.
    ///
    /// - Throws: `GatewayError` for a key file that cannot be used (the message names the file
    ///   and what to do) or a nonce file that cannot be read or repaired.
    static func load(map: TopicMap, dataDirectory: URL, logger: Logger) throws -> GatewayTrust {
        let device: DeviceKey
        let trust: TrustStore
        do {
            device = try DeviceKey.loadOrCreate(dataDirectory: dataDirectory)
            trust = try TrustStore.load(dataDirectory: dataDirectory).adding(device)
        } catch {
            throw GatewayError("\(error)")
        }
        for w in trust.warnings { logger.warning("\(w)") }
        var configuration = CommandVerifier.Configuration()
        configuration.auth = map.controlPlane.auth == .none ? .none : .signed
        let verifier: CommandVerifier
        do {
            verifier = try CommandVerifier(gatewayID: map.gateway.id, dataDirectory: dataDirectory, trust: trust, configuration: configuration)
        } catch {
            throw GatewayError("\(error)")
        }
        let keysFolder = TrustStore.keysDirectory(dataDirectory: dataDirectory).path
        if configuration.auth == .none {
            logger.warning("control_plane.auth is none: unsigned commands are obeyed (a lab setting; anyone who can publish on \(map.gateway.prefix)/cmd/# can switch this gateway to control)")
        } else if !trust.hasCommandKeys {
            logger.warning("no key is trusted for commands: every command will be refused until one is installed (edgeq keys generate NAME --dir DIR; copy NAME.pub to \(keysFolder)/operator/; restart)")
        } else {
            let names = trust.keys.filter { $0.role != .models }.map { "\($0.name) (\($0.role))" }
            logger.info("commands must be signed", metadata: ["trust.command_keys": "\(names.joined(separator: ", "))"])
        }
        return GatewayTrust(device: device, trust: trust, verifier: verifier)
    }
}

// The control plane's commands, from the message to the reply (docs/security.md, "Signed
// commands"; docs/operations.md, "Control plane"). The decision thread only recognises a
// command topic and hands the raw message to the control queue (bounded: at most
// `maxPendingCommands` messages and `maxPendingCommandBytes` bytes wait; beyond, a message is
// dropped and counted). There the verifier checks it (signature, key, role, time, nonce,
// retained, rate), the inner command is parsed and answered, and every command is audited.
extension Gateway {
    /// Commands that may wait for verification at once; more are dropped (a flood).
    static let maxPendingCommands = 1024
    /// Bytes of command payloads that may wait at once (a flood of large payloads).
    static let maxPendingCommandBytes = 8 << 20
    /// Seconds between two log lines about refused commands (the rest are counted).
    static let refusalLogInterval: UInt64 = 1_000_000_000

    /// Decision thread (with `decisionLock`): hands a command message to the control queue
    /// without looking inside it. Never blocks; beyond the bounds the message is dropped.
    func enqueueCommand(_ m: MQTTMessage) {
        let size = m.payload.count
        let n = pendingCommands.wrappingAdd(1, ordering: .relaxed).newValue
        let bytes = pendingCommandBytes.wrappingAdd(size, ordering: .relaxed).newValue
        if n > Self.maxPendingCommands || bytes > Self.maxPendingCommandBytes {
            pendingCommands.wrappingSubtract(1, ordering: .relaxed)
            pendingCommandBytes.wrappingSubtract(size, ordering: .relaxed)
            metrics.commandsDropped.increment()
            droppedCommands.wrappingAdd(1, ordering: .relaxed)
            return
        }
        let topic = m.topic, payload = m.payload, retained = m.retain
        control.async { [self] in
            defer {
                pendingCommands.wrappingSubtract(1, ordering: .relaxed)
                pendingCommandBytes.wrappingSubtract(size, ordering: .relaxed)
            }
            handleCommand(topic: topic, payload: payload, retained: retained)
        }
    }

    /// Control queue: verifies one command message, answers it on `<prefix>/reply/<verb>`,
    /// and audits it. A refused retained command is also cleared on the broker.
    func handleCommand(topic: String, payload: [UInt8], retained: Bool) {
        guard let verb = controlPlane.verb(ofCommandTopic: topic) else { return }
        let now = Date().timeIntervalSince1970
        switch verifier.verify(topic: topic, verb: verb, payload: payload, retained: retained) {
        case .refused(let r):
            metrics.commandsRefused[r.reason]?.increment()
            let id = r.command.flatMap(ControlPlane.requestID(in:))
            let extra: [String: JSONValue] = ["reason": .string(r.reason.rawValue), "key": r.key.map { .string($0) } ?? .null]
            publish(controlPlane.replyTopic(verb), ControlPlane.reply(id: id, ok: false, error: r.message, extra: extra), qos: 1, retain: false)
            if r.reason == .retained {
                // Delete it from the broker, so no later session-less connect receives it again
                // (needs the broker's permission to publish there: docs/operations.md).
                publish(topic, [], qos: 1, retain: true)
            }
            logRefusal(verb: verb, refusal: r)
            audit(AuditRecord(time: now, key: r.key, verb: verb, command: r.command.map { String(decoding: $0, as: UTF8.self) },
                              result: .refused, reason: r.reason.rawValue, ok: false, error: r.message))
        case .accepted(let a):
            metrics.commandsAccepted.increment()
            let request = controlPlane.parse(topic: topic, payload: a.command)
                ?? ControlRequest(verb: verb, id: nil, command: .failure(ControlError("not a command topic")))
            let outcome = answer(request, by: a.key)
            audit(AuditRecord(time: now, key: a.key, verb: verb, command: String(decoding: a.command, as: UTF8.self),
                              result: .accepted, ok: outcome.ok, error: outcome.error))
        }
    }

    /// Control queue: logs a refusal, at most one line per `refusalLogInterval` (a flood of
    /// forged commands must not flood the log; the metrics and the audit table count all).
    func logRefusal(verb: String, refusal r: RefusedCommand) {
        let now = Self.now()
        let suppressed: Int? = refusalLog.withLock { s in
            guard now &- s.lastNanos >= Self.refusalLogInterval || s.lastNanos == 0 else {
                s.suppressed += 1
                return nil
            }
            s.lastNanos = now
            defer { s.suppressed = 0 }
            return s.suppressed
        }
        guard let suppressed else { return }
        logger.warning("command refused", metadata: [
            "control.verb": "\(verb)", "control.reason": "\(r.reason)", "control.key": "\(r.key ?? "")",
            "control.error": "\(r.message)", "control.refusals_not_logged": "\(suppressed)",
        ])
    }

    /// Control queue: adds a row to the audit table's next batch. The batch is written by a
    /// task queued behind the commands already waiting, so a flood is written in few
    /// transactions, and never by the decision thread.
    func audit(_ record: AuditRecord) {
        let schedule = auditBuffer.withLock { b -> Bool in
            b.records.append(record)
            defer { b.flushScheduled = true }
            return !b.flushScheduled
        }
        if schedule { control.async { [self] in flushAudit() } }
    }

    /// Control queue: writes the waiting audit rows (and one row for the commands dropped since
    /// the last batch) in one transaction.
    func flushAudit() {
        var records = auditBuffer.withLock { b -> [AuditRecord] in
            b.flushScheduled = false
            defer { b.records.removeAll(keepingCapacity: true) }
            return b.records
        }
        let dropped = droppedCommands.exchange(0, ordering: .relaxed)
        if dropped > 0 {
            records.append(AuditRecord(time: Date().timeIntervalSince1970, key: nil, verb: "*", command: "{\"count\":\(dropped)}",
                                       result: .dropped, reason: "queue_full",
                                       error: "\(dropped) command message(s) dropped unread: more than \(Self.maxPendingCommands) waited for verification"))
        }
        do {
            try log.appendAudit(records)
        } catch {
            metrics.auditFailures.increment()
            logger.error("cannot write the audit table; these commands are not audited", metadata: [
                "audit.rows": "\(records.count)", "error": "\(error)",
            ])
        }
    }

    /// Status fields of the control plane: `auth`, and who changed the mode last, when.
    func commandStatus() -> [String: JSONValue] {
        let change = modeChange.withLock { $0 }
        return [
            "auth": .string(verifier.configuration.auth.rawValue),
            "by": change.by.map { .string($0) } ?? .null,
            "at": .number((change.at * 1000).rounded() / 1000),
        ]
    }
}
