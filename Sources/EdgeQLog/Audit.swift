import Foundation

/// What became of a control-plane command (the audit row's `result`).
public enum AuditResult: String, Sendable, CaseIterable {
    /// Its signature (or the lab's `auth: none`) was accepted and the command was acted on;
    /// `ok` and `error` say what the gateway answered.
    case accepted
    /// Refused before it was acted on; `reason` says why (docs/security.md lists the reasons).
    case refused
    /// Not even looked at: the gateway's queue of commands waiting for verification was full
    /// (a flood). One row stands for many: `command` is `{"count":N}`.
    case dropped
}

/// One row of the audit table: a command the gateway received and what it did with it.
public struct AuditRecord: Sendable, Equatable {
    /// Wall time the gateway handled it, seconds since 1970-01-01 UTC.
    public var time: Double
    /// The key that signed it (`none` under `auth: none`); for a refusal the name the payload
    /// claimed, unverified, or nil when it named none.
    public var key: String?
    /// The verb (the topic's last level).
    public var verb: String
    /// The command object's JSON text (its `id` and fields) as received; nil when none was found.
    public var command: String?
    /// Accepted, refused or dropped.
    public var result: AuditResult
    /// The refusal reason (`unsigned`, `bad_signature`, …), `queue_full` for dropped rows, else nil.
    public var reason: String?
    /// For an accepted command: whether the reply said `ok` (nil otherwise).
    public var ok: Bool?
    /// The reply's `error` text, if any.
    public var error: String?

    /// A row.
    public init(time: Double, key: String?, verb: String, command: String?, result: AuditResult,
                reason: String? = nil, ok: Bool? = nil, error: String? = nil) {
        self.time = time
        self.key = key
        self.verb = verb
        self.command = command
        self.result = result
        self.reason = reason
        self.ok = ok
        self.error = error
    }
}

/// An audit row as stored, with its id.
public struct LoggedAuditRecord: Sendable, Equatable {
    /// Row id, increasing in the order the rows were written.
    public var id: Int64
    /// The row.
    public var record: AuditRecord
}

// The audit table (docs/log.md, "Audit"): every control-plane command the gateway received,
// accepted or refused. Written by the gateway's control queue through a connection of its own
// (never the decision path, never the transition writer's connection), a batch per
// transaction. The oldest rows beyond `auditKeepRows` are deleted as new ones come, so a flood
// of forged commands cannot fill the disk.
extension ExperienceLog {
    /// Rows the audit table keeps (the oldest beyond are deleted).
    public static let auditKeepRows: Int64 = 100_000

    static let auditColumns = "time, key, verb, command, result, reason, ok, error"

    /// Appends `records` in one transaction and drops the oldest rows beyond `keep`.
    ///
    /// - Throws: `LogError` `.open` when the audit connection cannot be opened, `.query` when
    ///   SQLite fails (e.g. `SQLITE_BUSY` after 5 s, a full disk); nothing of the batch is
    ///   written then.
    public func appendAudit(_ records: [AuditRecord], keep: Int64 = auditKeepRows) throws(LogError) {
        guard !records.isEmpty else { return }
        try auditConnection.withLock { (slot: inout SQLiteConnection?) throws(LogError) in
            let db: SQLiteConnection
            if let open = slot {
                db = open
            } else {
                db = try SQLiteConnection(path: path, create: false)
                // A log created by an older build lacks the table until the gateway reopens it.
                try db.execute("CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, time REAL NOT NULL, key TEXT, verb TEXT NOT NULL, command TEXT, result TEXT NOT NULL CHECK (result IN ('accepted','refused','dropped')), reason TEXT, ok INTEGER CHECK (ok IN (0,1)), error TEXT)")
                slot = db
            }
            try db.execute("BEGIN IMMEDIATE")
            do throws(LogError) {
                let s = try db.prepare("INSERT INTO audit (\(Self.auditColumns)) VALUES (?,?,?,?,?,?,?,?)")
                for r in records {
                    s.reset()
                    s.bind(1, r.time)
                    s.bind(2, r.key)
                    s.bind(3, r.verb)
                    s.bind(4, r.command)
                    s.bind(5, r.result.rawValue)
                    s.bind(6, r.reason)
                    s.bind(7, r.ok.map { Int64($0 ? 1 : 0) })
                    s.bind(8, r.error)
                    _ = try s.step()
                }
                try db.execute("DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - \(max(keep, 1))")
                try db.execute("COMMIT")
            } catch {
                try? db.execute("ROLLBACK")
                throw error
            }
        }
    }

    /// The audit rows in `window` (`.all`, `.lastRows`, `.since`, `.afterID`), oldest first.
    ///
    /// - Throws: `LogError` `.query`.
    public func auditRecords(window: LogWindow = .all) throws(LogError) -> [LoggedAuditRecord] {
        let db = try SQLiteConnection(path: path, create: false)
        let s = try db.prepare(Schema.windowed(window, select: "SELECT id, \(Self.auditColumns) FROM audit"))
        var out: [LoggedAuditRecord] = []
        while try s.step() { out.append(Self.readAudit(s)) }
        return out
    }

    static func readAudit(_ s: SQLiteStatement) -> LoggedAuditRecord {
        LoggedAuditRecord(id: s.int64(0), record: AuditRecord(
            time: s.double(1), key: s.isNull(2) ? nil : s.text(2), verb: s.text(3),
            command: s.isNull(4) ? nil : s.text(4), result: AuditResult(rawValue: s.text(5)) ?? .refused,
            reason: s.isNull(6) ? nil : s.text(6), ok: s.isNull(7) ? nil : s.int64(7) != 0,
            error: s.isNull(8) ? nil : s.text(8)))
    }
}
