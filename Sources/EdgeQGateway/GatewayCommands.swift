#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
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

/// Command messages waiting for the command thread: a fixed ring, bounded by count and bytes,
/// that neither side waits on. The decision side never takes a lock the command thread holds:
/// that thread runs at idle priority, and a lock it held while preempted would hold the
/// decision up until the CPU is otherwise idle.
///
/// One producer at a time (`push` is called only with `Gateway.decisionLock` held), one
/// consumer (`pop`, the command thread).
final class CommandInbox: @unchecked Sendable {
    // @unchecked Sendable: `slots` is shared without a lock, safely by the single-producer /
    // single-consumer protocol: the producer writes slot `tail % capacity` only while
    // `tail - head < capacity` (the consumer is done with it: it moved `head` past it with a
    // releasing store after taking the message, and the producer loaded `head` acquiring),
    // and publishes it by storing `tail + 1` releasing; the consumer reads slot
    // `head % capacity` only while `head < tail` (loaded acquiring). Producers are
    // serialised by the gateway's decision lock. Everything else is atomic.
    let capacity: Int
    let maxBytes: Int
    private let slots: UnsafeMutablePointer<MQTTMessage?>
    private let head = Atomic<Int>(0)
    private let tail = Atomic<Int>(0)
    private let bytes = Atomic<Int>(0)
    /// Messages dropped since `takeDropped` (full, or closed).
    private let dropped = Atomic<Int>(0)
    private let closedFlag = Atomic<Bool>(false)

    init(capacity: Int, maxBytes: Int) {
        self.capacity = capacity
        self.maxBytes = maxBytes
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: nil, count: capacity)
    }

    deinit {
        slots.deinitialize(count: capacity)
        slots.deallocate()
    }

    /// Messages waiting now.
    var count: Int { tail.load(ordering: .acquiring) - head.load(ordering: .acquiring) }

    /// Producer: queues `m`. Returns nil when it was dropped (full, too many bytes, closed),
    /// else whether the inbox was empty before (the consumer may be asleep: wake it).
    func push(_ m: MQTTMessage) -> Bool? {
        let t = tail.load(ordering: .relaxed)
        let h = head.load(ordering: .acquiring)
        let size = m.payload.count
        guard !closedFlag.load(ordering: .relaxed), t - h < capacity, bytes.load(ordering: .relaxed) + size <= maxBytes else {
            dropped.wrappingAdd(1, ordering: .relaxed)
            return nil
        }
        slots[t % capacity] = m
        bytes.wrappingAdd(size, ordering: .relaxed)
        tail.store(t + 1, ordering: .releasing)
        return t == h
    }

    /// Consumer: the oldest waiting message, or nil.
    func pop() -> MQTTMessage? {
        let h = head.load(ordering: .relaxed)
        guard h < tail.load(ordering: .acquiring) else { return nil }
        let m = slots[h % capacity].take()
        head.store(h + 1, ordering: .releasing)
        if let m { bytes.wrappingSubtract(m.payload.count, ordering: .relaxed) }
        return m
    }

    /// Consumer: the number of messages dropped since the last call.
    func takeDropped() -> Int { dropped.exchange(0, ordering: .relaxed) }

    /// Refuses every later message (each counted as dropped).
    func close() { closedFlag.store(true, ordering: .relaxed) }

    /// Whether `close` was called.
    var isClosed: Bool { closedFlag.load(ordering: .relaxed) }
}

/// The command thread's own state: audit rows waiting for the next batch, when refusals were
/// last logged and answered. Only the command thread touches it.
struct CommandThreadState {
    var audit: [AuditRecord] = []
    var lastAuditNanos: UInt64 = 0
    var lastLogNanos: UInt64 = 0
    var refusalsNotLogged = 0
    /// Token bucket of replies to refused commands.
    var replyTokens = Double(Gateway.refusalRepliesPerSecond)
    var lastReplyNanos: UInt64 = 0
    var repliesNotSent = 0
    /// Dropped command messages not yet in an audit row.
    var droppedNotAudited = 0
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
// command topic and hands the raw message (topic, payload, retain flag) to the command inbox,
// bounded: at most `maxPendingCommands` messages and `maxPendingCommandBytes` bytes wait;
// beyond, a message is dropped and counted. The command thread (idle priority: every other
// thread of the machine comes first) verifies each one (signature,
// key, role, time, nonce, retained, rate), answers a refusal itself, hands an accepted command
// to the control queue (where every state change happens) and waits for its answer, and
// writes the audit rows in batches.
extension Gateway {
    /// Commands that may wait for verification at once; more are dropped (a flood).
    static let maxPendingCommands = 1024
    /// Bytes of command payloads that may wait at once (a flood of large payloads).
    static let maxPendingCommandBytes = 8 << 20
    /// Seconds between two log lines about refused commands (the rest are counted).
    static let refusalLogInterval: UInt64 = 1_000_000_000
    /// Refused commands answered per second (a token bucket with this burst): a flood of
    /// forged commands is not answered one reply each (the metrics and the audit count all).
    static let refusalRepliesPerSecond = 20
    /// Audit rows are written when this many wait, when the inbox is empty, or after 0.5 s.
    static let auditBatchRows = 512

    /// Decision thread (with `decisionLock`): hands a command message to the command thread
    /// without looking inside it. Takes no lock and never waits; beyond the bounds the message
    /// is dropped and counted.
    func enqueueCommand(_ m: MQTTMessage) {
        switch commandInbox.push(m) {
        case nil: metrics.commandsDropped.increment()
        case true?: commandSignal.signal()   // it sleeps only on an empty inbox
        case false?: break                     // awake: it takes this one after the ones before
        }
    }

    /// Starts the command thread (from `run()`).
    func startCommandThread() {
        let thread = Thread { [self] in
            // SCHED_IDLE: the thread runs only when no other thread wants the CPU, and any
            // waking thread preempts it at once (a nice value does not promise that: the
            // kernel's scheduler lets a running task finish its slice, ~1 ms). It takes no lock
            // the network or decision thread takes (the inbox is lock-free; replies are
            // published from the control queue), so its being preempted holds nothing up.
            var param = sched_param()
            if sched_setscheduler(0, Self.schedIdle, &param) != 0 {
                setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)   // per thread on Linux
            }
            var state = CommandThreadState()
            while true {
                if commandInbox.isClosed {
                    while commandInbox.pop() != nil { state.droppedNotAudited += 1 }   // stopping: not acted on
                    break
                }
                if let m = commandInbox.pop() {
                    handleCommand(m, &state)
                    if state.audit.count >= Self.auditBatchRows { flushAudit(&state) }
                    continue
                }
                if !state.audit.isEmpty || droppedSinceAudit(&state) { flushAudit(&state) }
                _ = commandSignal.wait(timeout: .now() + 0.5)
            }
            flushAudit(&state)
            commandThreadDone.signal()
        }
        thread.name = "edgeq.commands"
        thread.start()
    }

    /// `SCHED_IDLE` (linux/sched.h; not exported by Glibc's module).
    static let schedIdle: Int32 = 5

    /// Whether messages were dropped since the last audit batch (peeks without resetting).
    func droppedSinceAudit(_ state: inout CommandThreadState) -> Bool {
        state.droppedNotAudited += commandInbox.takeDropped()
        return state.droppedNotAudited > 0
    }

    /// Stops the command thread (from `shutdown`): what still waits is dropped (and audited
    /// as dropped), then the thread writes its last audit rows and ends.
    func stopCommandThread() {
        commandInbox.close()
        commandSignal.signal()
        _ = commandThreadDone.wait(timeout: .now() + 30)
    }

    /// Command thread: verifies one command message, answers it on `<prefix>/reply/<verb>`,
    /// and audits it. A refused retained command is also cleared on the broker.
    func handleCommand(_ m: MQTTMessage, _ state: inout CommandThreadState) {
        let topic = m.topic
        guard let verb = controlPlane.verb(ofCommandTopic: topic) else { return }
        let now = Date().timeIntervalSince1970
        switch verifier.verify(topic: topic, verb: verb, payload: m.payload, retained: m.retain) {
        case .refused(let r) where r.reason == .storage && r.key != nil && leavesControl(topic: topic, command: r.command):
            // Verified, but its nonce could not be recorded (a full disk). Leaving control never
            // fails: obeyed anyway. The nonce is remembered in memory (a replay is refused until
            // a restart), and the only replay possible after one is this same move to shadow.
            let key = r.key ?? "?"
            metrics.commandsAccepted.increment()
            logger.warning("a command to leave control is obeyed although its nonce could not be recorded", metadata: [
                "control.by": "\(key)", "error": "\(r.message)",
            ])
            let command = r.command ?? []
            let outcome = obey(topic: topic, verb: verb, command: command, by: key)
            state.audit.append(AuditRecord(time: now, key: key, verb: verb, command: String(decoding: command, as: UTF8.self),
                                           result: .accepted, reason: RefusalReason.storage.rawValue, ok: outcome.ok, error: outcome.error ?? r.message))
        case .refused(let r):
            metrics.commandsRefused[r.reason]?.increment()
            // Published from the control queue: libmosquitto's locks are shared with the network
            // thread, and this thread must hold none of them (see `startCommandThread`).
            if mayAnswerRefusal(&state) {
                let id = r.command.flatMap(ControlPlane.requestID(in:))
                let extra: [String: JSONValue] = ["reason": .string(r.reason.rawValue), "key": r.key.map { .string($0) } ?? .null]
                let reply = ControlPlane.reply(id: id, ok: false, error: r.message, extra: extra)
                let replyTopic = controlPlane.replyTopic(verb)
                control.async { [self] in publish(replyTopic, reply, qos: 1, retain: false) }
            }
            if r.reason == .retained {
                // Delete it from the broker, so no later session-less connect receives it again
                // (needs the broker's permission to publish there: docs/operations.md).
                control.async { [self] in publish(topic, [], qos: 1, retain: true) }
                // Once more a little later: a client-id takeover (the way a session-less connect
                // gets the gateway the retained command) can cut the connection again before the
                // first clear leaves, and a lost clear would stay lost until the next reconnect.
                // Clearing twice is harmless (commands are never retained legitimately).
                control.asyncAfter(deadline: .now() + 2) { [self] in publish(topic, [], qos: 1, retain: true) }
            }
            logRefusal(verb: verb, refusal: r, &state)
            state.audit.append(AuditRecord(time: now, key: r.key, verb: verb, command: r.command.map { String(decoding: $0, as: UTF8.self) },
                                           result: .refused, reason: r.reason.rawValue, ok: false, error: r.message))
        case .accepted(let a):
            metrics.commandsAccepted.increment()
            let outcome = obey(topic: topic, verb: verb, command: a.command, by: a.key)
            state.audit.append(AuditRecord(time: now, key: a.key, verb: verb, command: String(decoding: a.command, as: UTF8.self),
                                           result: .accepted, ok: outcome.ok, error: outcome.error))
            flushAudit(&state)   // an accepted command is on disk at once
        }
    }

    /// Command thread: parses a verified command and answers it on the control queue (where
    /// every state change happens, one at a time); waits for the answer.
    func obey(topic: String, verb: String, command: [UInt8], by key: String) -> (ok: Bool, error: String?) {
        let request = controlPlane.parse(topic: topic, payload: command)
            ?? ControlRequest(verb: verb, id: nil, command: .failure(ControlError("not a command topic")))
        return control.sync { answer(request, by: key) }
    }

    /// Whether `command` (verified) asks for shadow mode.
    func leavesControl(topic: String, command: [UInt8]?) -> Bool {
        guard let command, let request = controlPlane.parse(topic: topic, payload: command),
              case .success(.mode(.shadow)) = request.command else { return false }
        return true
    }

    /// Command thread: whether a refusal may be answered now (a token bucket of
    /// `refusalRepliesPerSecond`); the ones not answered are counted in the log line.
    func mayAnswerRefusal(_ state: inout CommandThreadState) -> Bool {
        let now = Self.now()
        let rate = Double(Self.refusalRepliesPerSecond)
        if state.lastReplyNanos != 0 {
            state.replyTokens = min(rate, state.replyTokens + Double(now &- state.lastReplyNanos) / 1e9 * rate)
        }
        state.lastReplyNanos = now
        guard state.replyTokens >= 1 else {
            state.repliesNotSent += 1
            return false
        }
        state.replyTokens -= 1
        return true
    }

    /// Command thread: logs a refusal, at most one line per `refusalLogInterval` (a flood of
    /// forged commands must not flood the log; the metrics and the audit table count all).
    func logRefusal(verb: String, refusal r: RefusedCommand, _ state: inout CommandThreadState) {
        let now = Self.now()
        guard state.lastLogNanos == 0 || now &- state.lastLogNanos >= Self.refusalLogInterval else {
            state.refusalsNotLogged += 1
            return
        }
        state.lastLogNanos = now
        logger.warning("command refused", metadata: [
            "control.verb": "\(verb)", "control.reason": "\(r.reason)", "control.key": "\(r.key ?? "")",
            "control.error": "\(r.message)", "control.refusals_not_logged": "\(state.refusalsNotLogged)",
            "control.refusals_not_answered": "\(state.repliesNotSent)",
        ])
        state.refusalsNotLogged = 0
        state.repliesNotSent = 0
    }

    /// Command thread: writes the waiting audit rows (and one row for the command messages
    /// dropped since the last batch) in one transaction.
    func flushAudit(_ state: inout CommandThreadState) {
        var records = state.audit
        state.audit.removeAll(keepingCapacity: true)
        state.lastAuditNanos = Self.now()
        _ = droppedSinceAudit(&state)
        let dropped = state.droppedNotAudited
        state.droppedNotAudited = 0
        if dropped > 0 {
            records.append(AuditRecord(time: Date().timeIntervalSince1970, key: nil, verb: "*", command: "{\"count\":\(dropped)}",
                                       result: .dropped, reason: "queue_full",
                                       error: "\(dropped) command message(s) dropped unread: more than \(Self.maxPendingCommands) waited for verification"))
        }
        guard !records.isEmpty else { return }
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
