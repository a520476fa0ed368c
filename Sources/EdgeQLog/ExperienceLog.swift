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

    private let reader: Locked<SQLiteConnection>

    private init(path: String, gatewayID: String, schemaVersion: Int, reader: SQLiteConnection) {
        self.path = path
        self.gatewayID = gatewayID
        self.schemaVersion = schemaVersion
        self.reader = Locked(reader)
    }

    /// Opens the log at `path`, creating the file and its schema when missing.
    ///
    /// - Parameters:
    ///   - path: the SQLite file (its folder must exist).
    ///   - gatewayID: recorded in the `meta` table of a new file; an existing file keeps the
    ///     id it was created with (see `gatewayID`). Nil: "unknown" for a new file.
    ///   - create: false to refuse a missing file (readers such as `edgeq export`).
    /// - Throws: `LogError` `.open` when the file cannot be opened or created; `.schema` when
    ///   it is not an EdgeQ log or was written by a newer schema version.
    public static func open(path: String, gatewayID: String? = nil, create: Bool = true) throws(LogError) -> ExperienceLog {
        if !create && !FileManager.default.fileExists(atPath: path) {
            throw LogError(.open, path: path, message: "no such file (is --data the gateway's data directory?)")
        }
        let db = try SQLiteConnection(path: path, create: create)
        try db.execute("BEGIN IMMEDIATE")
        do throws(LogError) {
            let hasTransitions = try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='transitions'") ?? 0
            let hasMeta = try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='meta'") ?? 0
            let tables = try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE type='table'") ?? 0
            if tables > 0 && (hasMeta == 0 || hasTransitions == 0) {
                throw LogError(.schema, path: path, message: "this SQLite file is not an EdgeQ experience log")
            }
            try db.execute(Schema.create)
            let insert = try db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)")
            // Date.ISO8601FormatStyle (FoundationEssentials), not ISO8601DateFormatter: the same
            // text, without loading ICU's locale and time-zone data (≈ 3 MB of resident memory
            // in `edgeq run`, docs/benchmarks.md e2e).
            let now = Date().formatted(.iso8601)
            for (k, v) in [("schema_version", String(Schema.version)), ("gateway_id", gatewayID ?? "unknown"),
                           ("created_at", now), ("state_encoding", "float32-le")] {
                insert.reset()
                insert.bind(1, k)
                insert.bind(2, v)
                _ = try insert.step()
            }
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
        let versionText = try db.scalarText("SELECT value FROM meta WHERE key='schema_version'") ?? "0"
        guard let version = Int(versionText), version >= 1 else {
            throw LogError(.schema, path: path, message: "meta.schema_version is '\(versionText)', not a version number")
        }
        guard version <= Schema.version else {
            throw LogError(.schema, path: path, message: "schema version \(version) is newer than this build's \(Schema.version): upgrade edgeq")
        }
        let id = try db.scalarText("SELECT value FROM meta WHERE key='gateway_id'") ?? "unknown"
        return ExperienceLog(path: path, gatewayID: id, schemaVersion: version, reader: db)
    }

    /// Opens `DIR/experience.sqlite` (see `open(path:gatewayID:create:)`).
    public static func open(dataDirectory: String, gatewayID: String? = nil, create: Bool = true) throws(LogError) -> ExperienceLog {
        try open(path: (dataDirectory as NSString).appendingPathComponent(defaultFileName), gatewayID: gatewayID, create: create)
    }

    /// Starts the writer thread on its own connection. Make one writer per log.
    ///
    /// - Throws: `LogError` `.open` when the second connection cannot be opened.
    public func makeWriter(options: TransitionWriter.Options = .init(), logger: Logger = Logger(label: "edgeq.log")) throws(LogError) -> TransitionWriter {
        try TransitionWriter(path: path, options: options, logger: logger)
    }

    // MARK: Reading

    private func withReader<R: Sendable>(_ body: (SQLiteConnection) throws(LogError) -> R) throws(LogError) -> R {
        try reader.withLock { (db: inout SQLiteConnection) throws(LogError) -> R in
            try body(db)
        }
    }

    /// The transitions in `window`, oldest first, for a replay buffer.
    ///
    /// - Throws: `LogError` `.query` when SQLite fails (e.g. `SQLITE_BUSY` after 5 s).
    public func transitions(window: LogWindow) throws(LogError) -> [LoggedTransition] {
        try withReader { db throws(LogError) in
            let s = try db.prepare(Schema.windowed(window))
            var out: [LoggedTransition] = []
            while try s.step() { out.append(Schema.read(s)) }
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
