import CSQLite
import Dispatch
import Foundation
import Logging
import Synchronization

/// Appends transitions to the log from a writer thread, in group commits, so the decision
/// path never waits for the disk.
///
/// The decision path calls `submit(_:)`: it appends to an in-memory queue under a lock held
/// for a few instructions (no disk, no allocation while the queue is under its capacity)
/// and returns. The writer thread wakes every `commitInterval` (100 ms by default) or as
/// soon as `maxBatchRows` rows wait, and writes everything waiting in transactions of at
/// most `maxBatchRows` rows. A kill -9 therefore loses at most what was submitted since the
/// last commit: one commit window.
///
/// **Nothing logged is dropped silently.** The queue's `queueCapacity` is preallocated and
/// generous (about 11 minutes at 100 ticks/s). If the disk stalls and it fills, `submit`
/// still accepts rows (the queue grows; this allocates) and counts an *overflow*; the
/// writer logs an error with the counts. Only past `hardLimit` rows (memory protection
/// when the disk is gone for good) is a row refused: `submit` returns `.dropped`, counts
/// it in `Metrics.dropped`, and the writer logs it as critical.
public final class TransitionWriter: Sendable {
    /// Tuning of the writer.
    public struct Options: Sendable {
        /// The longest a submitted row waits before its commit starts, in seconds.
        public var commitInterval: Double = 0.1
        /// The most rows in one transaction; reaching it wakes the writer early.
        public var maxBatchRows: Int = 1_000
        /// Rows preallocated in the queue; beyond it `submit` allocates and counts an overflow.
        public var queueCapacity: Int = 65_536
        /// Rows beyond which `submit` refuses (and counts) a row.
        public var hardLimit: Int = 4_194_304
        /// Retention applied by the writer thread.
        public var retention: RetentionPolicy = .init()
        /// How often retention runs, in seconds.
        public var retentionInterval: Double = 10
        /// The names of the raw signal values the rows carry (`Transition.signals`, the
        /// mapping's signals with a role, in order). Recorded once in the file's `signal_sets`
        /// table; each row points at its set, so a later run with other signals never has its
        /// values read under these names. Empty: rows are stored without signal values.
        public var signalNames: [String] = []
        /// Defaults (100 ms / 1,000 rows, 65,536 queued rows, no retention, no signal names).
        public init() {}
    }

    /// What `submit` did with a row.
    public enum SubmitResult: Sendable, Equatable {
        /// Queued.
        case queued
        /// Queued beyond `queueCapacity` (allocated; counted in `Metrics.overflows`).
        case queuedOverCapacity
        /// Refused: the queue holds `hardLimit` rows (counted in `Metrics.dropped`).
        case dropped
        /// Refused: the writer was closed.
        case closed
    }

    /// Counters for the status topic and tests.
    public struct Metrics: Sendable, Equatable {
        /// Rows accepted by `submit`.
        public var rowsSubmitted: Int = 0
        /// Rows committed to the file.
        public var rowsWritten: Int = 0
        /// Group commits made by the writer.
        public var batches: Int = 0
        /// Transactions SQLite committed on the writer's connection (a commit hook counts
        /// them; includes retention deletes).
        public var commits: Int = 0
        /// Seconds the last batch took (BEGIN … COMMIT).
        public var lastWriteLatency: Double = 0
        /// The longest batch so far, in seconds.
        public var maxWriteLatency: Double = 0
        /// Rows waiting in the queue.
        public var queueDepth: Int = 0
        /// Rows accepted while the queue was over `queueCapacity`.
        public var overflows: Int = 0
        /// Rows refused because the queue held `hardLimit` rows. Should always be 0.
        public var dropped: Int = 0
        /// Batches that failed to commit (retried).
        public var writeErrors: Int = 0
        /// Rows deleted by retention.
        public var rowsDeletedByRetention: Int = 0
        /// Rows older than the age limit kept at the last retention run because the policy's
        /// hold has not released them (a fleet learner has not acknowledged them yet).
        public var rowsHeldBack: Int = 0
        /// Damaged files moved aside after SQLite reported damage while writing (the rows
        /// waiting then went to the fresh file).
        public var recoveries: Int = 0
    }

    private let shared: WriterShared
    /// The database file.
    public let path: String

    init(log: ExperienceLog, options: Options, logger: Logger) throws(LogError) {
        let path = log.path
        guard options.maxBatchRows > 0, options.queueCapacity > 0, options.hardLimit >= options.queueCapacity,
              options.commitInterval > 0 else {
            throw LogError(.badArgument, path: path, message: "writer options need maxBatchRows, queueCapacity, commitInterval > 0 and hardLimit ≥ queueCapacity")
        }
        self.path = path
        let worker = try WriterWorker(log: log, options: options, logger: logger)
        shared = WriterShared(options: options)
        let shared = self.shared
        let body = WriterThreadBody(worker)
        let thread = Thread { body.run(shared) }
        thread.name = "edgeq-log-writer"
        thread.start()
    }

    deinit {
        // Let the thread write what is queued and stop; it owns its connection.
        shared.state.withLock { $0.closing = true }
        shared.wake.signal()
    }

    /// Queues `transition` for the next group commit. Never blocks on the disk and never
    /// waits for the writer (the queue's lock is held for an append).
    ///
    /// - Returns: what happened to the row; `.dropped` and `.closed` mean it is not logged.
    @discardableResult
    public func submit(_ transition: Transition) -> SubmitResult {
        let limit = shared.options.maxBatchRows
        let (result, wake) = shared.state.withLock { s -> (SubmitResult, Bool) in
            if s.closing { return (.closed, false) }
            if s.pending.count >= shared.options.hardLimit {
                s.dropped += 1
                return (.dropped, false)
            }
            var result = SubmitResult.queued
            if s.pending.count >= shared.options.queueCapacity {
                s.overflows += 1
                result = .queuedOverCapacity
            }
            s.pending.append(transition)
            s.submitted += 1
            return (result, s.pending.count == limit)
        }
        if wake { shared.wake.signal() }
        return result
    }

    /// Returns when every row submitted before the call is committed and the WAL is
    /// checkpointed (fsynced: durable against power loss too). For SIGTERM and tests.
    ///
    /// - Throws: `LogError` `.timeout` after `timeout` seconds (the disk is failing);
    ///   `.closed` when the writer is closed and rows are still unwritten.
    public func flush(timeout: Double = 30) throws(LogError) {
        let target = shared.state.withLock { s -> Int in
            s.flushTarget = max(s.flushTarget, s.submitted)
            return s.submitted
        }
        shared.wake.signal()
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let (durable, stopped) = shared.state.withLock { ($0.durable, $0.stopped) }
            if durable >= target { return }
            if stopped {
                throw LogError(.closed, path: path, message: "the writer stopped with \(target - durable) rows not durable")
            }
            if Date() > deadline {
                throw LogError(.timeout, path: path, message: "flush: \(target - durable) rows not durable after \(timeout) s")
            }
            usleep(1_000)
        }
    }

    /// Writes everything queued, checkpoints, stops the writer thread and closes its
    /// connection. Later `submit` calls return `.closed`. If the last batch cannot be
    /// committed (disk full), the thread stops anyway and logs the lost rows as critical
    /// rather than hold shutdown forever.
    ///
    /// - Throws: `LogError` `.timeout` when the thread has not finished after `timeout` seconds.
    public func close(timeout: Double = 30) throws(LogError) {
        shared.state.withLock { s in
            s.closing = true
            s.flushTarget = max(s.flushTarget, s.submitted)
        }
        shared.wake.signal()
        let deadline = Date().addingTimeInterval(timeout)
        while !shared.state.withLock({ $0.stopped }) {
            if Date() > deadline {
                throw LogError(.timeout, path: path, message: "close: the writer thread did not finish within \(timeout) s")
            }
            usleep(1_000)
        }
    }

    /// A snapshot of the counters.
    public var metrics: Metrics {
        shared.state.withLock { s in
            var m = s.metrics
            m.rowsSubmitted = s.submitted
            m.queueDepth = s.pending.count
            m.overflows = s.overflows
            m.dropped = s.dropped
            return m
        }
    }
}

/// What to delete, oldest rows first, in small batches on the writer thread.
public struct RetentionPolicy: Sendable, Equatable {
    /// Keep at most this many rows (nil: no limit).
    public var maxRows: Int?
    /// Delete rows whose `time` is older than this many seconds (nil: no limit).
    public var maxAge: Double?
    /// Rows deleted per statement (each its own short transaction).
    public var batchRows: Int
    /// Rows someone still has to read (the fleet shipper's rows no learner acknowledged): the
    /// age limit deletes only rows at or below `RetentionHold.releasedThrough`; the older rows
    /// above it wait (counted in `Metrics.rowsHeldBack`). nil: no hold. The row limit ignores it
    /// (it bounds the file).
    public var hold: RetentionHold?
    /// A policy; nil limits mean keep everything.
    public init(maxRows: Int? = nil, maxAge: Double? = nil, batchRows: Int = 2_000, hold: RetentionHold? = nil) {
        self.maxRows = maxRows
        self.maxAge = maxAge
        self.batchRows = batchRows
        self.hold = hold
    }

    /// Equal limits and the same hold (the same object, not an equal release).
    public static func == (a: RetentionPolicy, b: RetentionPolicy) -> Bool {
        a.maxRows == b.maxRows && a.maxAge == b.maxAge && a.batchRows == b.batchRows && a.hold === b.hold
    }
}

/// How far age retention may delete: the rows up to a row id a reader is done with. Made by the
/// reader's owner (the gateway, for its fleet shipper), moved by the reader, read by the log
/// writer at each retention run.
public final class RetentionHold: Sendable {
    private let through: Atomic<Int64>

    /// A hold releasing the rows through `id` (0: none yet, every row is kept from age retention).
    public init(releasedThrough id: Int64 = 0) { through = Atomic(max(0, id)) }

    /// Rows with ids at or below `id` may be deleted by age; the ones above are kept.
    public func release(through id: Int64) { through.store(max(0, id), ordering: .releasing) }

    /// The highest row id age retention may delete.
    public var releasedThrough: Int64 { through.load(ordering: .acquiring) }
}

/// State shared between `submit` (decision path), `flush`/`close` and the writer thread.
final class WriterShared: Sendable {
    struct State {
        var pending: [Transition]
        var submitted = 0
        var overflows = 0
        var dropped = 0
        var closing = false
        var stopped = false
        var flushTarget = 0
        var durable = 0
        var metrics = TransitionWriter.Metrics()
    }

    let options: TransitionWriter.Options
    let state: Locked<State>
    let wake = DispatchSemaphore(value: 0)

    init(options: TransitionWriter.Options) {
        self.options = options
        var pending: [Transition] = []
        pending.reserveCapacity(options.queueCapacity)
        state = Locked(State(pending: pending))
    }
}

/// Counts commits on the writer's connection (SQLite calls the hook on that thread).
private final class CommitCounter {
    var count = 0
}

/// What the writer thread runs: the worker's loop, then the worker let go *before* the writer
/// counts as stopped. Its connection (and its reference to the log, whose reading connection
/// may be the file's last) is closed when `close()` returns: a caller may move, copy or check
/// the file next, and while any connection is open the WAL's pages are what every reader sees
/// (once a damage test scribbled on the file and the check read the WAL's clean copies).
final class WriterThreadBody: @unchecked Sendable {
    // @unchecked Sendable: made on the caller's thread and handed to the writer thread, the only
    // one that calls `run` (once) and so the only one that touches `worker` afterwards.
    private var worker: WriterWorker?

    init(_ worker: WriterWorker) { self.worker = worker }

    func run(_ shared: WriterShared) {
        worker?.run(shared)
        worker = nil
        shared.state.withLock { $0.stopped = true }
    }
}

/// The writer thread's side: its connection, cached statements and loop.
final class WriterWorker: @unchecked Sendable {
    // @unchecked Sendable: created on the caller's thread, then handed to the writer thread,
    // which is the only one that touches it afterwards (`run`). No other reference escapes.
    private let log: ExperienceLog
    private var db: SQLiteConnection
    private var insert: SQLiteStatement
    /// This file's id of `options.signalNames` and its count (nil: no names, rows stored
    /// without signal values).
    private var signalSet: (id: Int64, count: Int)?
    /// When the last bounded check ran after a write error (nil: none since the last success).
    private var lastDamageCheck: UInt64?
    private let options: TransitionWriter.Options
    private let logger: Logger
    private let counter = CommitCounter()
    private var spare: [Transition] = []
    private var lastRetention = Date.distantPast
    /// Whether the last retention run held rows back, and when it last warned of it.
    private var holding = false
    private var lastHeldWarning = Date.distantPast
    private var reportedOverflows = 0
    private var reportedDropped = 0

    init(log: ExperienceLog, options: TransitionWriter.Options, logger: Logger) throws(LogError) {
        self.log = log
        db = try SQLiteConnection(path: log.path, create: false)
        insert = try db.prepare(Schema.insert)
        self.options = options
        self.logger = logger
        spare.reserveCapacity(options.queueCapacity)
        try registerSignalNames()
        hookCommits()
    }

    /// Records `options.signalNames` in the file (once per distinct list) and keeps its id.
    private func registerSignalNames() throws(LogError) {
        let names = options.signalNames
        signalSet = names.isEmpty ? nil : (try Schema.signalSetID(db, names: names), names.count)
    }

    /// Counts real commits (the group-commit test checks them). `counter` lives as long
    /// as `db` (both owned by self), so an unretained pointer is safe.
    private func hookCommits() {
        sqlite3_commit_hook(db.handle, { ctx in
            if let ctx { Unmanaged<CommitCounter>.fromOpaque(ctx).takeUnretainedValue().count += 1 }
            return 0
        }, Unmanaged.passUnretained(counter).toOpaque())
    }

    /// After a failed batch whose error may mean damage (corrupt, not a database, I/O error):
    /// a bounded quick_check (5 s, at most once a minute while errors go on); when SQLite
    /// finds the file damaged, it is moved aside, a fresh log takes its place and the rows
    /// still queued go there. Never appends to a file known to be damaged.
    private func checkForDamage(after error: LogError, _ shared: WriterShared) {
        guard let c = error.code?.primary, c == .corrupt || c == .notADatabase || c == .ioError else { return }
        let now = monotonicNanos()
        if let last = lastDamageCheck, now &- last < 60_000_000_000 { return }
        lastDamageCheck = now
        let verdict: QuickCheckResult
        do throws(LogError) {
            verdict = try ExperienceLog.quickCheck(path: db.path, timeLimit: 5)
        } catch {
            logger.error("log check after a write error failed", metadata: ["log.path": "\(db.path)", "log.error": "\(error)"])
            return
        }
        guard case .damaged(let problem) = verdict else { return }
        logger.critical("the experience log is damaged: moving it aside and starting a fresh log", metadata: [
            "log.path": "\(db.path)", "log.problem": "\(problem)",
        ])
        sqlite3_commit_hook(db.handle, nil, nil)
        // Close our connection (the statement holds it) before the file is moved.
        do throws(LogError) {
            let placeholder = try SQLiteConnection(path: ":memory:", create: true, readOnly: false)
            insert = try placeholder.prepare("SELECT 1")
            db = placeholder
            let record = try log.replaceDamagedFile(problem: problem)
            db = try SQLiteConnection(path: log.path, create: false)
            insert = try db.prepare(Schema.insert)
            try registerSignalNames()
            hookCommits()
            shared.state.withLock { $0.metrics.recoveries += 1 }
            lastDamageCheck = nil
            logger.critical("the damaged experience log was moved aside; logging goes on in a fresh file", metadata: [
                "log.path": "\(log.path)", "log.moved_to": "\(record.movedTo)",
            ])
        } catch {
            logger.critical("the damaged experience log could not be replaced; rows stay queued in memory", metadata: [
                "log.path": "\(log.path)", "log.error": "\(error)",
            ])
        }
    }

    deinit {
        sqlite3_commit_hook(db.handle, nil, nil)
    }

    func run(_ shared: WriterShared) {
        while true {
            _ = shared.wake.wait(timeout: .now() + options.commitInterval)
            // Take everything queued; give the queue our empty buffer (capacity kept).
            var batch = spare
            let closing = shared.state.withLock { s -> Bool in
                swap(&s.pending, &batch)
                return s.closing
            }
            var failed = false
            var start = 0
            while start < batch.count {
                let end = min(start + options.maxBatchRows, batch.count)
                if !write(batch[start..<end], shared) {
                    // Put the unwritten rows back in front of what arrived meanwhile.
                    let rest = Array(batch[start...])
                    shared.state.withLock { s in s.pending.insert(contentsOf: rest, at: 0) }
                    failed = true
                    break
                }
                start = end
            }
            batch.removeAll(keepingCapacity: true)
            spare = batch
            reportQueueTrouble(shared)
            if !failed { retentionIfDue(shared) }
            let (target, committed) = shared.state.withLock { ($0.flushTarget, $0.metrics.rowsWritten) }
            if target > 0 && committed >= target && !failed {
                checkpoint()
                shared.state.withLock { $0.durable = max($0.durable, committed) }
            }
            if closing {
                let empty = shared.state.withLock { $0.pending.isEmpty }
                if empty || failed {
                    if !empty { logger.critical("log writer closing with unwritten rows", metadata: ["log.path": "\(db.path)"]) }
                    if empty { checkpoint() }
                    return
                }
            }
            if failed { usleep(UInt32(options.commitInterval * 1_000_000)) }
        }
    }

    /// One transaction for `rows`; true when committed.
    private func write(_ rows: ArraySlice<Transition>, _ shared: WriterShared) -> Bool {
        let clock = ContinuousClock()
        let t0 = clock.now
        do throws(LogError) {
            try db.execute("BEGIN IMMEDIATE")
            do throws(LogError) {
                for t in rows {
                    insert.reset()
                    Schema.bind(t, to: insert, signalSet: signalSet)
                    _ = try insert.step()
                }
                insert.reset()
                try db.execute("COMMIT")
            } catch {
                insert.reset()
                try? db.execute("ROLLBACK")
                throw error
            }
        } catch {
            logger.error("log batch failed; rows kept for retry", metadata: [
                "log.path": "\(db.path)", "log.rows": "\(rows.count)", "log.error": "\(error)",
            ])
            shared.state.withLock { $0.metrics.writeErrors += 1 }
            checkForDamage(after: error, shared)
            return false
        }
        lastDamageCheck = nil
        let elapsed = clock.now - t0
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        let commits = counter.count
        shared.state.withLock { s in
            s.metrics.rowsWritten += rows.count
            s.metrics.batches += 1
            s.metrics.commits = commits
            s.metrics.lastWriteLatency = seconds
            s.metrics.maxWriteLatency = max(s.metrics.maxWriteLatency, seconds)
        }
        return true
    }

    private func checkpoint() {
        var logFrames: Int32 = 0
        var checkpointed: Int32 = 0
        let rc = sqlite3_wal_checkpoint_v2(db.handle, nil, SQLITE_CHECKPOINT_PASSIVE, &logFrames, &checkpointed)
        if rc != SQLITE_OK {
            logger.warning("log checkpoint failed", metadata: ["log.path": "\(db.path)", "log.error": "\(db.lastMessage)"])
        }
    }

    private func reportQueueTrouble(_ shared: WriterShared) {
        let (overflows, dropped, depth) = shared.state.withLock { ($0.overflows, $0.dropped, $0.pending.count) }
        if overflows > reportedOverflows {
            logger.error("log queue over capacity: the disk is not keeping up (rows kept in memory)", metadata: [
                "log.overflows": "\(overflows)", "log.queue_depth": "\(depth)", "log.capacity": "\(options.queueCapacity)",
            ])
            reportedOverflows = overflows
        }
        if dropped > reportedDropped {
            logger.critical("log queue at its hard limit: transitions DROPPED", metadata: [
                "log.dropped": "\(dropped)", "log.hard_limit": "\(options.hardLimit)",
            ])
            reportedDropped = dropped
        }
    }

    private func retentionIfDue(_ shared: WriterShared) {
        let policy = options.retention
        guard policy.maxRows != nil || policy.maxAge != nil else { return }
        guard Date().timeIntervalSince(lastRetention) >= options.retentionInterval else { return }
        lastRetention = Date()
        var deleted = 0
        var held = 0
        do throws(LogError) {
            let batch = max(1, policy.batchRows)
            // Age first, so the row limit never deletes fresh rows that old ones outlive.
            if let maxAge = policy.maxAge, maxAge.isFinite {
                let cutoff = Date().timeIntervalSince1970 - maxAge
                // Rows a reader has not released stay, however old.
                let released = policy.hold?.releasedThrough
                let within = released.map { " AND id <= \($0)" } ?? ""
                while true {
                    try db.execute("DELETE FROM transitions WHERE id IN (SELECT id FROM transitions WHERE time < \(cutoff)\(within) ORDER BY id LIMIT \(batch))")
                    let n = Int(sqlite3_changes(db.handle))
                    deleted += n
                    if n < batch { break }
                }
                if let released {
                    held = Int(try db.scalarInt("SELECT count(*) FROM transitions WHERE time < \(cutoff) AND id > \(released)") ?? 0)
                }
            }
            if let maxRows = policy.maxRows {
                let count = Int(try db.scalarInt("SELECT count(*) FROM transitions") ?? 0)
                var excess = count - max(0, maxRows)
                while excess > 0 {
                    let n = min(batch, excess)
                    try db.execute("DELETE FROM transitions WHERE id IN (SELECT id FROM transitions ORDER BY id LIMIT \(n))")
                    deleted += n
                    excess -= n
                }
            }
        } catch {
            logger.error("log retention failed", metadata: ["log.path": "\(db.path)", "log.error": "\(error)"])
        }
        if deleted > 0 {
            let commits = counter.count
            shared.state.withLock { s in
                s.metrics.rowsDeletedByRetention += deleted
                s.metrics.commits = commits
            }
        }
        shared.state.withLock { $0.metrics.rowsHeldBack = held }
        // Said when rows start being held, and then at most once an hour while they are.
        if held > 0, !holding || Date().timeIntervalSince(lastHeldWarning) >= 3600 {
            logger.warning("log retention keeps rows older than the retention: the fleet learner has not acknowledged them yet; they are deleted once it has", metadata: [
                "log.path": "\(db.path)", "log.rows_held": "\(held)",
                "log.released_through": "\(policy.hold?.releasedThrough ?? 0)",
            ])
            lastHeldWarning = Date()
        }
        holding = held > 0
    }
}
