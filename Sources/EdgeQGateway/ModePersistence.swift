import Foundation

/// The mode as it should be on disk, while it is not (the data directory is full or failing).
struct PendingState {
    /// The state still to write; nil when the file says what the gateway does.
    var state: GatewayState?
    /// The last error writing it.
    var lastError: String?
    /// Failed attempts since the last success.
    var failures = 0
    /// A retry is scheduled on the control queue.
    var retryScheduled = false
}

// Recording the mode (`DATA/gateway-state.json`). Leaving control happens in memory at once;
// writing it down is best effort: on failure the gateway says so (log, status
// `state_persisted: false` and `state_persist_error`, `edgeq_state_persist_failures_total`)
// and retries on the control queue every `statePersistRetrySeconds` until the write succeeds.
// Everything here runs on the control queue (or in `shutdown`, after it is drained).
extension Gateway {
    /// Seconds between two attempts to write a state that could not be written.
    static let statePersistRetrySeconds = 1.0

    /// Control queue: records `state`, now or later (never throws, never blocks the caller).
    func persistState(_ state: GatewayState) {
        pendingState.withLock { $0.state = state }
        attemptPersist()
    }

    /// Control queue: `state` is on disk (written by `enterControl`); nothing is pending.
    func statePersisted(_ state: GatewayState) {
        let recovered = pendingState.withLock { p -> Bool in
            let failing = p.lastError != nil
            p.state = nil
            p.lastError = nil
            p.failures = 0
            return failing
        }
        if recovered { logger.notice("the gateway state is recorded again", metadata: ["gateway.mode": "\(state.mode.rawValue)"]) }
    }

    /// Control queue: one attempt to write the pending state; on failure, schedules the next.
    func attemptPersist() {
        guard let state = pendingState.withLock({ $0.state }) else { return }
        do {
            try state.save(to: dataDirectory)
            let failures = pendingState.withLock { p -> Int in
                let n = p.failures
                // A newer state may have been asked for meanwhile (it is written next).
                if p.state == state { p.state = nil }
                p.lastError = nil
                p.failures = 0
                return n
            }
            if failures > 0 {
                logger.notice("the gateway state is recorded again after \(failures) failed attempts",
                              metadata: ["gateway.mode": "\(state.mode.rawValue)"])
                publishStatus()
            }
            if pendingState.withLock({ $0.state != nil }) { attemptPersist() }
        } catch {
            metrics.statePersistFailures.increment()
            let (first, schedule) = pendingState.withLock { p -> (Bool, Bool) in
                let first = p.lastError == nil
                p.lastError = "\(error)"
                p.failures += 1
                let schedule = !p.retryScheduled
                p.retryScheduled = true
                return (first, schedule)
            }
            if first {
                logger.error("the mode is in effect but cannot be recorded; retrying every \(Self.statePersistRetrySeconds) s",
                             metadata: ["gateway.mode": "\(state.mode.rawValue)", "error": "\(error)"])
                if state.mode == .shadow { removeStaleControlState() }
            }
            if schedule && !stopping.load(ordering: .relaxed) {
                control.asyncAfter(deadline: .now() + Self.statePersistRetrySeconds) { [self] in
                    pendingState.withLock { $0.retryScheduled = false }
                    attemptPersist()
                }
            } else if schedule {
                pendingState.withLock { $0.retryScheduled = false }
            }
        }
    }

    /// A state file that still says control while the gateway has left it would bring control
    /// back at the next start: remove it (unlinking needs no free space). Until the new one is
    /// written, a restart starts in the command line's or the mapping file's mode.
    func removeStaleControlState() {
        guard (try? GatewayState.load(from: dataDirectory))??.mode == .control else { return }
        let url = GatewayState.url(in: dataDirectory)
        do {
            try FileManager.default.removeItem(at: url)
            try DurableFile.syncDirectory(dataDirectory)
            logger.warning("removed the state file that still said control; until the mode is recorded, a restart starts in the mapping file's mode",
                           metadata: ["file": "\(url.path)"])
        } catch {
            logger.critical("the state file still says control and cannot be removed: a restart would start in control",
                            metadata: ["file": "\(url.path)", "error": "\(error)"])
        }
    }

    /// At shutdown (control queue drained): a last attempt; says loudly what a restart will do.
    func persistStateAtShutdown() {
        guard let state = pendingState.withLock({ $0.state }) else { return }
        do {
            try state.save(to: dataDirectory)
            pendingState.withLock { $0 = PendingState() }
        } catch {
            metrics.statePersistFailures.increment()
            logger.critical("stopping with the mode not recorded; the next start uses --mode, else the state file if any, else the mapping file's mode",
                            metadata: ["gateway.mode": "\(state.mode.rawValue)", "error": "\(error)"])
        }
    }

    /// Status fields: whether the mode is recorded, and why not.
    func persistenceStatus() -> [String: JSONValue] {
        let p = pendingState.withLock { $0 }
        var o: [String: JSONValue] = ["state_persisted": .bool(p.state == nil)]
        if p.state != nil, let e = p.lastError { o["state_persist_error"] = .string(e) }
        return o
    }
}
