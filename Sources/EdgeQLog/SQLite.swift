import CSQLite

/// A SQLite result code with the library's own message, so callers can match on the
/// code and people can read what went wrong (after GRDB's `ResultCode`).
public struct SQLiteResultCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The primary or extended result code (`SQLITE_BUSY`, `SQLITE_FULL` …).
    public let rawValue: Int32

    /// A result code from its numeric value.
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The primary code (the low 8 bits of an extended code).
    public var primary: SQLiteResultCode { SQLiteResultCode(rawValue: rawValue & 0xff) }

    /// `sqlite3_errstr`: the generic English text for this code.
    public var description: String { String(cString: sqlite3_errstr(rawValue)) + " (\(rawValue))" }

    /// The database is locked by another connection (after the busy timeout).
    public static let busy = SQLiteResultCode(rawValue: SQLITE_BUSY)
    /// The disk is full.
    public static let full = SQLiteResultCode(rawValue: SQLITE_FULL)
    /// The file is not a database or is corrupt.
    public static let corrupt = SQLiteResultCode(rawValue: SQLITE_CORRUPT)
    /// The file cannot be opened.
    public static let cantOpen = SQLiteResultCode(rawValue: SQLITE_CANTOPEN)
    /// The file is not a database (or its header is damaged).
    public static let notADatabase = SQLiteResultCode(rawValue: SQLITE_NOTADB)
    /// A disk I/O error.
    public static let ioError = SQLiteResultCode(rawValue: SQLITE_IOERR)
    /// An attempt to write a read-only database.
    public static let readOnlyDB = SQLiteResultCode(rawValue: SQLITE_READONLY)
    /// Access permission denied.
    public static let permission = SQLiteResultCode(rawValue: SQLITE_PERM)
    /// The operation was interrupted (e.g. by a progress handler's time limit).
    public static let interrupt = SQLiteResultCode(rawValue: SQLITE_INTERRUPT)
}

/// One SQLite connection, used by one thread at a time (opened `SQLITE_OPEN_NOMUTEX`).
/// Owns the `sqlite3 *` and closes it in `deinit`; statements it prepared are finalized
/// before (they hold a strong reference to it).
final class SQLiteConnection {
    let handle: OpaquePointer
    let path: String

    /// Opens (and creates when `create`) the database file at `path`, in WAL mode with
    /// `synchronous=NORMAL` and a busy timeout.
    init(path: String, create: Bool, readOnly: Bool = false) throws(LogError) {
        var db: OpaquePointer?
        var flags = SQLITE_OPEN_NOMUTEX
        flags |= readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE
        if create && !readOnly { flags |= SQLITE_OPEN_CREATE }
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            // "unable to open database file" says nothing about why: a read-only folder is the
            // usual reason, and the one an operator can fix.
            if !readOnly, let problem = WriteAccess.problem(forFileAt: path) {
                throw LogError(.readOnly, path: path, code: SQLiteResultCode(rawValue: rc), message: problem)
            }
            throw LogError(.open, path: path, code: SQLiteResultCode(rawValue: rc), message: message)
        }
        handle = db
        self.path = path
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, 5_000)
        do throws(LogError) {
            // SQLite opens an existing file read-only, without an error, when it may not write it.
            if !readOnly && sqlite3_db_readonly(db, "main") == 1 {
                throw LogError(.readOnly, path: path, message: WriteAccess.problem(forFileAt: path)
                               ?? "SQLite could open the log only read-only: make the file and its folder writable for this user")
            }
            if !readOnly {
                // WAL: readers (training, export) never block the writer and vice versa.
                // NORMAL: a commit is in the WAL file when COMMIT returns (a kill -9 keeps it);
                // the WAL is fsynced at checkpoints, so a power loss may lose the last commits.
                try execute("PRAGMA journal_mode=WAL")
                // 512 KiB of page cache instead of SQLite's 2 MiB: the writer appends (its pages
                // are written once), readers scan; resident memory of the gateway matters more.
                try execute("PRAGMA cache_size=-512")
            }
            try execute("PRAGMA synchronous=NORMAL")
        } catch {
            // The WAL and shared-memory files are created beside the log: a read-only folder
            // shows up here when the file itself is writable.
            if !readOnly, let c = error.code?.primary, c == .readOnlyDB || c == .cantOpen || c == .permission,
               let problem = WriteAccess.problem(forFileAt: path) {
                throw LogError(.readOnly, path: path, code: error.code, message: problem)
            }
            throw error
        }
    }

    deinit {
        sqlite3_close_v2(handle)
    }

    /// The connection's latest error message (`sqlite3_errmsg`).
    var lastMessage: String { String(cString: sqlite3_errmsg(handle)) }

    func error(_ kind: LogError.Kind, _ rc: Int32) -> LogError {
        LogError(kind, path: path, code: SQLiteResultCode(rawValue: rc), message: lastMessage)
    }

    /// Runs one or more statements that return no rows we need.
    func execute(_ sql: String) throws(LogError) {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(.query, rc) }
    }

    /// Prepares `sql` (one statement).
    func prepare(_ sql: String) throws(LogError) -> SQLiteStatement {
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(.query, rc) }
        return SQLiteStatement(connection: self, handle: stmt)
    }

    /// The first column of the first row of `sql` as an integer (nil when no row or NULL).
    func scalarInt(_ sql: String) throws(LogError) -> Int64? {
        let s = try prepare(sql)
        guard try s.step() else { return nil }
        return s.isNull(0) ? nil : s.int64(0)
    }

    /// The first column of the first row as text.
    func scalarText(_ sql: String) throws(LogError) -> String? {
        let s = try prepare(sql)
        guard try s.step() else { return nil }
        return s.isNull(0) ? nil : s.text(0)
    }
}

/// A prepared statement; finalized in `deinit`. Keeps its connection alive.
final class SQLiteStatement {
    let connection: SQLiteConnection
    let handle: OpaquePointer

    init(connection: SQLiteConnection, handle: OpaquePointer) {
        self.connection = connection
        self.handle = handle
    }

    deinit { sqlite3_finalize(handle) }

    /// Resets the statement and clears its bindings, ready for new values.
    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    /// Steps once: true when a row is available, false when done.
    func step() throws(LogError) -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw connection.error(.query, rc)
    }

    func bind(_ index: Int32, _ value: Int64?) {
        if let value { sqlite3_bind_int64(handle, index, value) } else { sqlite3_bind_null(handle, index) }
    }

    func bind(_ index: Int32, _ value: Double?) {
        if let value { sqlite3_bind_double(handle, index, value) } else { sqlite3_bind_null(handle, index) }
    }

    func bind(_ index: Int32, _ value: String?) {
        if let value { sqlite3_bind_text(handle, index, value, -1, edgeq_sqlite_transient) } else { sqlite3_bind_null(handle, index) }
    }

    /// Binds `values` as a little-endian float32 BLOB (nil binds NULL).
    func bind(_ index: Int32, floats values: [Float]?) {
        guard let values else { sqlite3_bind_null(handle, index); return }
        let bytes = FloatBlob.encode(values)
        bytes.withUnsafeBytes { raw in
            // A zero-length blob must still be a BLOB, not NULL: pass a non-nil pointer.
            _ = sqlite3_bind_blob(handle, index, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1),
                                  Int32(raw.count), edgeq_sqlite_transient)
        }
    }

    /// Binds `values` as a little-endian float64 BLOB (nil binds NULL).
    func bind(_ index: Int32, doubles values: [Double]?) {
        guard let values else { sqlite3_bind_null(handle, index); return }
        let bytes = DoubleBlob.encode(values)
        bytes.withUnsafeBytes { raw in
            _ = sqlite3_bind_blob(handle, index, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1),
                                  Int32(raw.count), edgeq_sqlite_transient)
        }
    }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }
    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
    func double(_ column: Int32) -> Double { sqlite3_column_double(handle, column) }
    func text(_ column: Int32) -> String {
        guard let p = sqlite3_column_text(handle, column) else { return "" }
        return String(cString: p)
    }

    /// Decodes a little-endian float32 BLOB column (nil when NULL).
    func floats(_ column: Int32) -> [Float]? {
        if isNull(column) { return nil }
        let count = Int(sqlite3_column_bytes(handle, column))
        guard let p = sqlite3_column_blob(handle, column), count > 0 else { return [] }
        return FloatBlob.decode(UnsafeRawBufferPointer(start: p, count: count))
    }
}

extension SQLiteStatement {
    /// A float64 BLOB column (nil for NULL).
    func doubles(_ column: Int32) -> [Double]? {
        if isNull(column) { return nil }
        let count = Int(sqlite3_column_bytes(handle, column))
        guard let p = sqlite3_column_blob(handle, column), count > 0 else { return [] }
        return DoubleBlob.decode(UnsafeRawBufferPointer(start: p, count: count))
    }
}

/// Raw signal values (`signals`, `next_signals`) are stored as little-endian IEEE-754 float64,
/// 8 bytes each (`numpy.frombuffer(b, "<f8")`): a sensor value such as 23.4375 or a price with
/// many digits comes back exactly as it was decoded, which float32 would not guarantee.
enum DoubleBlob {
    static func encode(_ values: [Double]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(values.count * 8)
        for v in values {
            let bits = v.bitPattern.littleEndian
            withUnsafeBytes(of: bits) { out.append(contentsOf: $0) }
        }
        return out
    }

    static func decode(_ raw: UnsafeRawBufferPointer) -> [Double] {
        let n = raw.count / 8
        var out = [Double]()
        out.reserveCapacity(n)
        for i in 0..<n {
            let bits = raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)
            out.append(Double(bitPattern: UInt64(littleEndian: bits)))
        }
        return out
    }
}

/// States and Q-values are stored as little-endian IEEE-754 float32, 4 bytes each, so a
/// log file reads the same on every machine of a fleet (`numpy.frombuffer(b, "<f4")`).
enum FloatBlob {
    static func encode(_ values: [Float]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(values.count * 4)
        for v in values {
            let bits = v.bitPattern.littleEndian
            withUnsafeBytes(of: bits) { out.append(contentsOf: $0) }
        }
        return out
    }

    static func decode(_ raw: UnsafeRawBufferPointer) -> [Float] {
        let n = raw.count / 4
        var out = [Float]()
        out.reserveCapacity(n)
        for i in 0..<n {
            let bits = raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)
            out.append(Float(bitPattern: UInt32(littleEndian: bits)))
        }
        return out
    }
}
