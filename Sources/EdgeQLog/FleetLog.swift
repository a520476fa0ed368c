import CSQLite
import Foundation

/// A read-only view of a gateway's experience log for the fleet shipper: its own SQLite
/// connection opened `SQLITE_OPEN_READONLY`, so it can never write the log and never takes the
/// writer's lock (WAL readers do not block the writer).
///
/// Use from one thread (the shipper's); not Sendable.
public final class LogTail {
    private let db: SQLiteConnection
    private var sets: [Int64: [String]] = [:]
    private let select: SQLiteStatement
    /// The log file's identity (`meta.log_id`; empty for a file no current build has opened).
    public let logID: String

    /// Opens `path` read-only.
    ///
    /// - Throws: `LogError` `.open` when the file does not exist or cannot be opened.
    public init(path: String) throws(LogError) {
        guard FileManager.default.fileExists(atPath: path) else {
            throw LogError(.open, path: path, message: "no experience log here yet (the gateway creates it at start)")
        }
        db = try SQLiteConnection(path: path, create: false, readOnly: true)
        select = try db.prepare("\(Schema.select) WHERE id > ? ORDER BY id LIMIT ?")
        logID = try db.scalarText("SELECT value FROM meta WHERE key='log_id'") ?? ""
    }

    /// The rows with id greater than `after`, oldest first, at most `limit` of them, each with
    /// its signal names.
    ///
    /// - Throws: `LogError` `.query`.
    public func rows(after: Int64, limit: Int) throws(LogError) -> [LoggedTransition] {
        try db.execute("BEGIN")
        defer { try? db.execute("COMMIT") }
        select.reset()
        select.bind(1, after)
        select.bind(2, Int64(max(0, limit)))
        var out: [LoggedTransition] = []
        var refreshed = false
        while try select.step() {
            if !select.isNull(20), sets[select.int64(20)] == nil, !refreshed {
                sets = try Schema.signalSets(db)   // a set added since the last read
                refreshed = true
            }
            out.append(Schema.read(select, signalSets: sets))
        }
        select.reset()
        return out
    }

    /// The largest row id in the log (0 when it is empty).
    ///
    /// - Throws: `LogError` `.query`.
    public func lastID() throws(LogError) -> Int64 {
        try db.scalarInt("SELECT max(id) FROM transitions") ?? 0
    }
}

/// What `FleetLog.ingest` did with one batch.
public struct FleetIngestResult: Sendable, Equatable {
    /// Rows stored now.
    public var inserted: Int
    /// Rows the fleet log already held (a batch sent again before its acknowledgement arrived).
    public var duplicates: Int
    /// The gateway's high-water mark after the commit: every row of its log with an id up to
    /// this one is in the fleet log (the value the learner acknowledges).
    public var acked: Int64

    /// A result.
    public init(inserted: Int, duplicates: Int, acked: Int64) {
        self.inserted = inserted
        self.duplicates = duplicates
        self.acked = acked
    }
}

/// The fleet learner's log: every gateway's shipped transitions in one SQLite file (WAL),
/// keyed by (gateway, log file identity, row id) so that a batch received twice is stored once
/// and a replaced gateway log's new rows are never taken for the old ones.
///
/// Several learner processes on one host may open the same file: each batch is one
/// `BEGIN IMMEDIATE` transaction (SQLite serialises them; the busy timeout is 5 s), and the
/// per-gateway high-water mark is computed inside it from the shared tables, so whichever
/// learner acknowledges, it acknowledges what the file holds (docs/fleet.md, "Two learners").
///
/// Use one `FleetLog` per thread; not Sendable.
public final class FleetLog {
    /// The file name inside a learner's data directory.
    public static let defaultFileName = "fleet.sqlite"
    /// The schema version of the fleet log.
    public static let schemaVersion = 1

    /// The database file.
    public let path: String
    private let db: SQLiteConnection
    private let insert: SQLiteStatement
    private let readGateway: SQLiteStatement
    private let addGateway: SQLiteStatement
    private let updateGateway: SQLiteStatement
    private let addPending: SQLiteStatement
    private let nextPending: SQLiteStatement
    private let dropPending: SQLiteStatement
    private var setIDs: [[String]: Int64] = [:]

    static let create = """
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS fleet_transitions (
            gateway       TEXT    NOT NULL,
            log           TEXT    NOT NULL,
            row_id        INTEGER NOT NULL,
            learner       TEXT    NOT NULL,
            time          REAL    NOT NULL,
            tick          INTEGER NOT NULL,
            episode       INTEGER NOT NULL,
            state         BLOB    NOT NULL,
            state_width   INTEGER NOT NULL,
            action        INTEGER,
            actor         TEXT    NOT NULL,
            reward        REAL    NOT NULL,
            next_state    BLOB    NOT NULL,
            next_mask     INTEGER,
            terminal      INTEGER NOT NULL,
            truncated     INTEGER NOT NULL,
            mode          TEXT    NOT NULL,
            model_version TEXT,
            q_values      BLOB,
            model_action  INTEGER,
            flags         INTEGER NOT NULL DEFAULT 0,
            signals       BLOB,
            next_signals  BLOB,
            signal_set    INTEGER,
            PRIMARY KEY (gateway, log, row_id)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS signal_sets (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE);
        CREATE TABLE IF NOT EXISTS fleet_gateways (
            gateway    TEXT    NOT NULL,
            log        TEXT    NOT NULL,
            first_seen REAL    NOT NULL,
            acked      INTEGER NOT NULL,
            rows       INTEGER NOT NULL DEFAULT 0,
            duplicates INTEGER NOT NULL DEFAULT 0,
            batches    INTEGER NOT NULL DEFAULT 0,
            updated    REAL    NOT NULL,
            PRIMARY KEY (gateway, log)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS fleet_pending (
            gateway  TEXT    NOT NULL,
            log      TEXT    NOT NULL,
            after_id INTEGER NOT NULL,
            last_id  INTEGER NOT NULL,
            PRIMARY KEY (gateway, log, after_id, last_id)
        ) WITHOUT ROWID;
        """

    /// Opens (creating when missing) the fleet log at `path`.
    ///
    /// - Throws: `LogError` `.open`/`.readOnly` when the file cannot be opened or created;
    ///   `.schema` when it is another kind of SQLite file or a newer fleet log version.
    public init(path: String) throws(LogError) {
        self.path = path
        db = try SQLiteConnection(path: path, create: true)
        try db.execute("BEGIN IMMEDIATE")
        do throws(LogError) {
            let tables = try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE type='table'") ?? 0
            let ours = try db.scalarInt("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='fleet_transitions'") ?? 0
            if tables > 0 && ours == 0 {
                throw LogError(.schema, path: path, message: "this SQLite file is not an EdgeQ fleet log (is --data the learner's own directory?)")
            }
            try db.execute(Self.create)
            if let v = try db.scalarText("SELECT value FROM meta WHERE key='fleet_schema_version'"), let n = Int(v), n > Self.schemaVersion {
                throw LogError(.schema, path: path, message: "fleet log schema version \(n) is newer than this build's \(Self.schemaVersion): upgrade edgeq")
            }
            try db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('fleet_schema_version', '\(Self.schemaVersion)')")
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
        // The 20 log columns bound by `Schema.bind` at 1…20, then gateway, row id, learner, log.
        insert = try db.prepare("INSERT OR IGNORE INTO fleet_transitions (\(Schema.columns), gateway, row_id, learner, log) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
        readGateway = try db.prepare("SELECT acked FROM fleet_gateways WHERE gateway = ? AND log = ?")
        addGateway = try db.prepare("INSERT INTO fleet_gateways (gateway, log, acked, first_seen, updated) VALUES (?, ?, ?, ?, ?)")
        updateGateway = try db.prepare("UPDATE fleet_gateways SET acked = ?, rows = rows + ?, duplicates = duplicates + ?, batches = batches + 1, updated = ? WHERE gateway = ? AND log = ?")
        addPending = try db.prepare("INSERT OR IGNORE INTO fleet_pending (gateway, log, after_id, last_id) VALUES (?, ?, ?, ?)")
        nextPending = try db.prepare("SELECT max(last_id) FROM fleet_pending WHERE gateway = ? AND log = ? AND after_id <= ?")
        dropPending = try db.prepare("DELETE FROM fleet_pending WHERE gateway = ? AND log = ? AND last_id <= ?")
    }

    /// Opens `DIR/fleet.sqlite`.
    public convenience init(dataDirectory: String) throws(LogError) {
        try self.init(path: (dataDirectory as NSString).appendingPathComponent(Self.defaultFileName))
    }

    /// Stores a batch in one transaction and returns the gateway's new high-water mark.
    ///
    /// Rows already present (same gateway and row id) are counted as duplicates and left as they
    /// are. The high-water mark moves over this batch when it starts at or below it, then over
    /// any batches that arrived early (out of order, or through another learner) and now join
    /// on; a gateway seen for the first time starts at the batch's `origin`.
    ///
    /// - Parameter learner: recorded with each row stored (which learner process stored it).
    /// - Throws: `LogError` `.query` (e.g. `SQLITE_BUSY` when another learner held the file for
    ///   over 5 s, `SQLITE_FULL`): nothing of the batch is stored, nothing is acknowledged.
    public func ingest(_ batch: FleetBatch, learner: String) throws(LogError) -> FleetIngestResult {
        try db.execute("BEGIN IMMEDIATE")
        do throws(LogError) {
            let now = Date().timeIntervalSince1970
            readGateway.reset()
            readGateway.bind(1, batch.gateway)
            readGateway.bind(2, batch.log)
            var acked: Int64
            if try readGateway.step() {
                acked = readGateway.int64(0)
                readGateway.reset()
            } else {
                readGateway.reset()
                acked = batch.origin
                addGateway.reset()
                addGateway.bind(1, batch.gateway)
                addGateway.bind(2, batch.log)
                addGateway.bind(3, acked)
                addGateway.bind(4, now)
                addGateway.bind(5, now)
                _ = try addGateway.step()
            }
            // The shipper's cursor only moves on an acknowledgement of this file's mark; one
            // beyond it means rows were acknowledged elsewhere: they are not ours to wait for.
            acked = max(acked, batch.origin)
            var inserted = 0, duplicates = 0
            for r in batch.rows {
                insert.reset()
                Schema.bind(r.transition, to: insert, signalSet: try signalSet(r.signalNames))
                insert.bind(21, batch.gateway)
                insert.bind(22, r.id)
                insert.bind(23, learner)
                insert.bind(24, batch.log)
                _ = try insert.step()
                if sqlite3_changes(db.handle) > 0 { inserted += 1 } else { duplicates += 1 }
            }
            insert.reset()
            if batch.after <= acked {
                acked = max(acked, batch.last)
            } else {
                addPending.reset()
                addPending.bind(1, batch.gateway)
                addPending.bind(2, batch.log)
                addPending.bind(3, batch.after)
                addPending.bind(4, batch.last)
                _ = try addPending.step()
            }
            while true {
                nextPending.reset()
                nextPending.bind(1, batch.gateway)
                nextPending.bind(2, batch.log)
                nextPending.bind(3, acked)
                guard try nextPending.step(), !nextPending.isNull(0), nextPending.int64(0) > acked else { break }
                acked = nextPending.int64(0)
            }
            nextPending.reset()
            dropPending.reset()
            dropPending.bind(1, batch.gateway)
            dropPending.bind(2, batch.log)
            dropPending.bind(3, acked)
            _ = try dropPending.step()
            updateGateway.reset()
            updateGateway.bind(1, acked)
            updateGateway.bind(2, Int64(inserted))
            updateGateway.bind(3, Int64(duplicates))
            updateGateway.bind(4, now)
            updateGateway.bind(5, batch.gateway)
            updateGateway.bind(6, batch.log)
            _ = try updateGateway.step()
            try db.execute("COMMIT")
            return FleetIngestResult(inserted: inserted, duplicates: duplicates, acked: acked)
        } catch {
            try? db.execute("ROLLBACK")
            setIDs = [:]   // a set added in the rolled-back transaction is gone
            throw error
        }
    }

    private func signalSet(_ names: [String]?) throws(LogError) -> (id: Int64, count: Int)? {
        guard let names else { return nil }
        if let id = setIDs[names] { return (id, names.count) }
        let id = try Schema.signalSetID(db, names: names)
        setIDs[names] = id
        return (id, names.count)
    }

    /// One gateway log's figures in the fleet log (a gateway whose log was replaced has one
    /// entry per log file).
    public struct GatewaySummary: Sendable, Equatable {
        /// The gateway id.
        public var gateway: String
        /// The identity of the gateway's log file (`meta.log_id` there).
        public var log: String
        /// Its high-water mark (acknowledged row id).
        public var acked: Int64
        /// Rows stored, by every learner sharing the file.
        public var rows: Int64
        /// Rows received again and dropped.
        public var duplicates: Int64
        /// Batches ingested.
        public var batches: Int64
    }

    /// Every gateway log's figures, by gateway id, then the order its logs were first seen.
    ///
    /// - Throws: `LogError` `.query`.
    public func gateways() throws(LogError) -> [GatewaySummary] {
        let s = try db.prepare("SELECT gateway, log, acked, rows, duplicates, batches FROM fleet_gateways ORDER BY gateway, first_seen")
        var out: [GatewaySummary] = []
        while try s.step() {
            out.append(GatewaySummary(gateway: s.text(0), log: s.text(1), acked: s.int64(2), rows: s.int64(3), duplicates: s.int64(4), batches: s.int64(5)))
        }
        return out
    }

    /// The transition columns (`Schema.columns`) of `fleet_transitions t`, for the reads below.
    static let transitionColumns = Schema.columns.split(separator: ",").map { "t." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", ")

    /// The rows of `gateway` (of its log `log`, or of all its logs in the order they were first
    /// seen), in row-id order within a log (`id` is the row id in the gateway's log file).
    ///
    /// - Throws: `LogError` `.query`.
    public func transitions(gateway: String, log: String? = nil) throws(LogError) -> [LoggedTransition] {
        let sets = try Schema.signalSets(db)
        let s = try db.prepare("""
            SELECT t.row_id, \(Self.transitionColumns) FROM fleet_transitions t JOIN fleet_gateways g ON g.gateway = t.gateway AND g.log = t.log
            WHERE t.gateway = ?1 AND (?2 IS NULL OR t.log = ?2) ORDER BY g.first_seen, t.log, t.row_id
            """)
        s.bind(1, gateway)
        s.bind(2, log)
        var out: [LoggedTransition] = []
        while try s.step() { out.append(Schema.read(s, signalSets: sets)) }
        return out
    }

    /// The newest `count` rows of `gateway` (across its logs, newest log first), oldest first —
    /// what `transitions(gateway:)` would return, cut to its last `count` rows. Reads each log
    /// backwards by its primary key, so a training window costs the rows it returns, not the log.
    ///
    /// - Throws: `LogError` `.query`.
    public func transitions(gateway: String, newest count: Int) throws(LogError) -> [LoggedTransition] {
        guard count > 0 else { return [] }
        let sets = try Schema.signalSets(db)
        let logs = try db.prepare("SELECT log FROM fleet_gateways WHERE gateway = ?1 ORDER BY first_seen DESC, log DESC")
        logs.bind(1, gateway)
        var names: [String] = []
        while try logs.step() { names.append(logs.text(0)) }
        let s = try db.prepare("""
            SELECT t.row_id, \(Self.transitionColumns) FROM fleet_transitions t WHERE t.gateway = ?1 AND t.log = ?2 ORDER BY t.row_id DESC LIMIT ?3
            """)
        var parts: [[LoggedTransition]] = []
        var left = count
        for log in names where left > 0 {
            s.reset()
            s.bind(1, gateway)
            s.bind(2, log)
            s.bind(3, Int64(left))
            var part: [LoggedTransition] = []
            while try s.step() { part.append(Schema.read(s, signalSets: sets)) }
            left -= part.count
            parts.append(part.reversed())
        }
        return parts.reversed().flatMap { $0 }
    }

    /// How many rows each learner stored (the `learner` column), by learner id.
    ///
    /// - Throws: `LogError` `.query`.
    public func rowsByLearner() throws(LogError) -> [String: Int] {
        let s = try db.prepare("SELECT learner, count(*) FROM fleet_transitions GROUP BY learner")
        var out: [String: Int] = [:]
        while try s.step() { out[s.text(0)] = Int(s.int64(1)) }
        return out
    }
}
