import CSQLite
import Foundation
import Logging

/// The experience log: one SQLite file (WAL) holding every transition the gateway saw,
/// for retraining on the device and for export.
///
/// `ExperienceLog` is the reading side (training, the live guard's baseline, export) and
/// the factory of the one `TransitionWriter` that appends rows off the decision path.
/// Reads use their own connection and never block the writer (WAL).
///
/// ```swift
/// let log = try ExperienceLog.open(path: dir + "/experience.sqlite", gatewayID: "plant-7")
/// let writer = try log.makeWriter()
/// writer.submit(transition)            // decision path: never blocks, never touches disk
/// let rows = try log.transitions(window: .lastRows(50_000))
/// try writer.flush()                   // on SIGTERM
/// try writer.close()
/// ```
public final class ExperienceLog: Sendable {
    /// The file name used inside a data directory (`edgeq run --data DIR`).
    public static let defaultFileName = "experience.sqlite"

    /// The database file.
    public let path: String
    /// The gateway that wrote this log (from the `meta` table).
    public let gatewayID: String
    /// The schema version of the file.
    public let schemaVersion: Int

    /// The reading connection; nil only while a damaged file is being moved aside.
    private let reader: Locked<SQLiteConnection?>
    private let recoveryList: Locked<[LogRecovery]>
    /// The connection that appends audit rows (opened at the first append; see Audit.swift).
    let auditConnection = Locked<SQLiteConnection?>(nil)

    private init(path: String, gatewayID: String, schemaVersion: Int, reader: SQLiteConnection, recoveries: [LogRecovery] = []) {
        self.path = path
        self.gatewayID = gatewayID
        self.schemaVersion = schemaVersion
        self.reader = Locked(reader)
        self.recoveryList = Locked(recoveries)
    }

    /// Damaged files this log moved aside since it was opened (at start, or after SQLite
    /// reported damage while writing), oldest first.
    public var recoveries: [LogRecovery] { recoveryList.withLock { $0 } }

    /// Opens the log at `path`, creating the file and its schema when missing. An older file is
    /// upgraded in place at once (version 1 gets `flags`; versions 1 and 2 get the raw signal
    /// columns and `signal_sets`, old rows without signal values).
    ///
    /// - Parameters:
    ///   - path: the SQLite file (its folder must exist).
    ///   - gatewayID: recorded in the `meta` table of a new file; an existing file keeps the
    ///     id it was created with (see `gatewayID`). Nil: "unknown" for a new file.
    ///   - create: false to refuse a missing file (readers such as `edgeq export`).
    /// - Throws: `LogError` `.open` when the file cannot be opened or created; `.readOnly`
    ///   when its folder or the file cannot be written (the message says why: a read-only
    ///   mount, permissions, an immutable folder); `.schema` when it is not an EdgeQ log or
    ///   was written by a newer schema version.
    public static func open(path: String, gatewayID: String? = nil, create: Bool = true) throws(LogError) -> ExperienceLog {
        if !create && !FileManager.default.fileExists(atPath: path) {
            throw LogError(.open, path: path, message: "no such file (is --data the gateway's data directory?)")
        }
        let db = try SQLiteConnection(path: path, create: create)
        let (version, id) = try initialize(db, path: path, gatewayID: gatewayID)
        return ExperienceLog(path: path, gatewayID: id, schemaVersion: version, reader: db)
    }

    /// Opens the log the gateway appends to: like `open(path:gatewayID:create:)`, after a
    /// bounded `PRAGMA quick_check` of an existing file (`quickCheck(path:timeLimit:)`). A file
    /// SQLite finds damaged — or cannot read as a database at all — is never appended to: it
    /// is moved aside (`moveAside`, listed in `recoveries`) and a fresh log is started.
    ///
    /// - Parameter checkSeconds: the check's time limit; a check that does not finish in time
    ///   leaves the file in use (nothing was found in the part checked).
    /// - Returns: the log and what the check found.
    /// - Throws: as `open(path:gatewayID:create:)`; `.open` when a damaged file cannot be moved.
    public static func openForAppending(path: String, gatewayID: String?, checkSeconds: Double = 5) throws(LogError) -> (log: ExperienceLog, check: QuickCheckResult) {
        var check = QuickCheckResult.ok
        var recoveries: [LogRecovery] = []
        if FileManager.default.fileExists(atPath: path) {
            check = try quickCheck(path: path, timeLimit: checkSeconds)
            if case .damaged(let problem) = check {
                recoveries.append(try moveAside(path: path, problem: problem))
            }
        }
        let db: SQLiteConnection
        let version: Int, id: String
        do throws(LogError) {
            db = try SQLiteConnection(path: path, create: true)
            (version, id) = try initialize(db, path: path, gatewayID: gatewayID)
        } catch {
            // Damage the check did not reach (it ran out of time) but opening met.
            guard recoveries.isEmpty, let c = error.code?.primary, c == .corrupt || c == .notADatabase else { throw error }
            check = .damaged(error.message)
            recoveries.append(try moveAside(path: path, problem: error.message))
            let fresh = try SQLiteConnection(path: path, create: true)
            let (v, i) = try initialize(fresh, path: path, gatewayID: gatewayID)
            return (ExperienceLog(path: path, gatewayID: i, schemaVersion: v, reader: fresh, recoveries: recoveries), check)
        }
        return (ExperienceLog(path: path, gatewayID: id, schemaVersion: version, reader: db, recoveries: recoveries), check)
    }

    /// Creates or upgrades the schema and reads the file's version and gateway id.
    private static func initialize(_ db: SQLiteConnection, path: String, gatewayID: String?) throws(LogError) -> (Int, String) {
        try db.execute("BEGIN IMMEDIATE")
        do throws(LogError) {
            let hasTransitions = try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='transitions'") ?? 0
            let hasMeta = try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='meta'") ?? 0
            let tables = try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE type='table'") ?? 0
            if tables > 0 && (hasMeta == 0 || hasTransitions == 0) {
                throw LogError(.schema, path: path, message: "this SQLite file is not an EdgeQ experience log")
            }
            if hasMeta > 0 {
                // Refuse a newer file before changing anything in it.
                let text = try db.scalarText("SELECT value FROM meta WHERE key='schema_version'") ?? "0"
                guard let v = Int(text), v >= 1 else {
                    throw LogError(.schema, path: path, message: "meta.schema_version is '\(text)', not a version number")
                }
                guard v <= Schema.version else {
                    throw LogError(.schema, path: path, message: "schema version \(v) is newer than this build's \(Schema.version): upgrade edgeq")
                }
            }
            try db.execute(Schema.create)
            try Schema.migrate(db)
            let insert = try db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)")
            // Date.ISO8601FormatStyle (FoundationEssentials), not ISO8601DateFormatter: the same
            // text, without loading ICU's locale and time-zone data (≈ 3 MB of resident memory
            // in `edgeq run`, docs/benchmarks.md e2e).
            let now = Date().formatted(.iso8601)
            for (k, v) in [("schema_version", String(Schema.version)), ("gateway_id", gatewayID ?? "unknown"),
                           ("created_at", now), ("state_encoding", "float32-le"),
                           // This file's identity (kept once set; a file from before gets one at its next
                           // open): a fleet learner tells a replaced log's rows from the old ones by it.
                           ("log_id", UUID().uuidString.lowercased())] {
                insert.reset()
                insert.bind(1, k)
                insert.bind(2, v)
                _ = try insert.step()
            }
            try db.execute("UPDATE meta SET value='\(Schema.version)' WHERE key='schema_version'")
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
        let id = try db.scalarText("SELECT value FROM meta WHERE key='gateway_id'") ?? "unknown"
        return (Schema.version, id)
    }

    /// Moves this log's damaged file aside and starts a fresh one in its place (the writer
    /// thread calls it, with its own connection closed, when SQLite reported damage while
    /// writing). The reading connection is closed meanwhile: reads throw `.closed`.
    ///
    /// - Throws: `LogError` when the file cannot be moved or the fresh one cannot be created.
    func replaceDamagedFile(problem: String) throws(LogError) -> LogRecovery {
        try reader.withLock { (db: inout SQLiteConnection?) throws(LogError) -> LogRecovery in
            db = nil   // closes it: no connection of ours stays on the damaged file
            auditConnection.withLock { $0 = nil }   // reopened on the fresh file at the next append
            let record = try Self.moveAside(path: path, problem: problem)
            let fresh = try SQLiteConnection(path: path, create: true)
            _ = try Self.initialize(fresh, path: path, gatewayID: gatewayID)
            db = fresh
            recoveryList.withLock { $0.append(record) }
            return record
        }
    }

    /// Opens `DIR/experience.sqlite` (see `open(path:gatewayID:create:)`).
    public static func open(dataDirectory: String, gatewayID: String? = nil, create: Bool = true) throws(LogError) -> ExperienceLog {
        try open(path: (dataDirectory as NSString).appendingPathComponent(defaultFileName), gatewayID: gatewayID, create: create)
    }

    /// Starts the writer thread on its own connection. Make one writer per log.
    ///
    /// - Throws: `LogError` `.open` when the second connection cannot be opened.
    public func makeWriter(options: TransitionWriter.Options = .init(), logger: Logger = Logger(label: "edgeq.log")) throws(LogError) -> TransitionWriter {
        try TransitionWriter(log: self, options: options, logger: logger)
    }

    // MARK: Reading

    func withReader<R: Sendable>(_ body: (SQLiteConnection) throws(LogError) -> R) throws(LogError) -> R {
        try reader.withLock { (db: inout SQLiteConnection?) throws(LogError) -> R in
            guard let db else { throw LogError(.closed, path: path, message: "the log is being replaced (a damaged file was moved aside): try again") }
            return try body(db)
        }
    }

    /// The transitions in `window`, oldest first, for a replay buffer.
    ///
    /// - Throws: `LogError` `.query` when SQLite fails (e.g. `SQLITE_BUSY` after 5 s).
    public func transitions(window: LogWindow) throws(LogError) -> [LoggedTransition] {
        try withReader { db throws(LogError) in
            let sets = try Schema.signalSets(db)
            let s = try db.prepare(Schema.windowed(window))
            var out: [LoggedTransition] = []
            while try s.step() { out.append(Schema.read(s, signalSets: sets)) }
            return out
        }
    }

    /// How many rows in `window` each actor chose (actors with no row are absent).
    ///
    /// - Throws: `LogError` `.query`.
    public func countsByActor(window: LogWindow = .all) throws(LogError) -> [Actor: Int] {
        try withReader { db throws(LogError) in
            let s = try db.prepare("SELECT actor, count(*) FROM (\(Schema.windowed(window, select: "SELECT id, actor FROM transitions"))) GROUP BY actor")
            var out: [Actor: Int] = [:]
            while try s.step() {
                if let a = Actor(rawValue: s.text(0)) { out[a] = Int(s.int64(1)) }
            }
            return out
        }
    }

    /// The incumbent's baseline for the live guard: the mean reward per tick over the
    /// shadow-mode rows in `window` (the incumbent was in charge), and how many rows that is.
    /// `window: .lastRows(n)` counts the last n *shadow* rows.
    ///
    /// - Returns: nil when the window holds no shadow row.
    /// - Throws: `LogError` `.query`.
    public func incumbentBaseline(window: LogWindow = .all) throws(LogError) -> (meanReward: Double, rows: Int)? {
        try withReader { db throws(LogError) -> (meanReward: Double, rows: Int)? in
            let inner = Schema.windowed(window, where: "mode = 'shadow'", select: "SELECT id, reward FROM transitions")
            let s = try db.prepare("SELECT avg(reward), count(*) FROM (\(inner))")
            guard try s.step(), !s.isNull(0) else { return nil }
            return (s.double(0), Int(s.int64(1)))
        }
    }

    /// The number of rows in the log.
    ///
    /// - Throws: `LogError` `.query`.
    public func rowCount() throws(LogError) -> Int {
        try withReader { db throws(LogError) in Int(try db.scalarInt("SELECT count(*) FROM transitions") ?? 0) }
    }

    /// The smallest and largest row id (nil when the log is empty).
    ///
    /// - Throws: `LogError` `.query`.
    public func idRange() throws(LogError) -> ClosedRange<Int64>? {
        try withReader { db throws(LogError) -> ClosedRange<Int64>? in
            guard let lo = try db.scalarInt("SELECT min(id) FROM transitions"),
                  let hi = try db.scalarInt("SELECT max(id) FROM transitions") else { return nil }
            return lo...hi
        }
    }

    /// `PRAGMA integrity_check`: "ok", or SQLite's list of problems.
    ///
    /// - Throws: `LogError` `.query`.
    public func integrityCheck() throws(LogError) -> String {
        try withReader { db throws(LogError) in
            let s = try db.prepare("PRAGMA integrity_check")
            var lines: [String] = []
            while try s.step() { lines.append(s.text(0)) }
            return lines.joined(separator: "\n")
        }
    }
}
