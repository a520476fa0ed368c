/// An error from the experience log: what went wrong, on which file, SQLite's own code
/// and message when SQLite reported it, and what to do.
public struct LogError: Error, Sendable, CustomStringConvertible {
    /// What kind of operation failed. New kinds may be added: match on the ones you handle.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private enum Code: Hashable, Sendable { case open, schema, query, write, closed, timeout, export, badArgument, readOnly }
        private let code: Code
        private init(_ code: Code) { self.code = code }

        /// The database file could not be opened or created (check the path and permissions).
        public static let open = Kind(.open)
        /// The file is not an EdgeQ log, or its schema version is newer than this build.
        public static let schema = Kind(.schema)
        /// A query failed (see the SQLite code; `SQLITE_BUSY` means another process holds a lock).
        public static let query = Kind(.query)
        /// A batch could not be committed (disk full, I/O error); the writer keeps the rows and retries.
        public static let write = Kind(.write)
        /// The writer was closed; nothing more can be submitted or flushed.
        public static let closed = Kind(.closed)
        /// `flush` did not finish within its timeout (the disk is very slow or failing).
        public static let timeout = Kind(.timeout)
        /// The export output could not be written.
        public static let export = Kind(.export)
        /// An argument was out of range (the message says which).
        public static let badArgument = Kind(.badArgument)
        /// The log (or its folder) cannot be written: a read-only file system, missing write
        /// permission, an immutable folder. The message says which and what to do.
        public static let readOnly = Kind(.readOnly)

        /// A short phrase for messages.
        public var description: String {
            switch code {
            case .open: "cannot open the log"
            case .schema: "not a usable EdgeQ log"
            case .query: "query failed"
            case .write: "write failed"
            case .closed: "writer closed"
            case .timeout: "timed out"
            case .export: "export failed"
            case .badArgument: "bad argument"
            case .readOnly: "cannot write the log"
            }
        }
    }

    /// What failed.
    public let kind: Kind
    /// The database file (or export target).
    public let path: String
    /// SQLite's result code when SQLite reported the error.
    public let code: SQLiteResultCode?
    /// SQLite's message (`sqlite3_errmsg`) or ours.
    public let message: String

    init(_ kind: Kind, path: String, code: SQLiteResultCode? = nil, message: String) {
        self.kind = kind
        self.path = path
        self.code = code
        self.message = message
    }

    /// `PATH: kind: message [SQLite code]`.
    public var description: String {
        var s = "\(path): \(kind): \(message)"
        if let code { s += " [\(code)]" }
        return s
    }
}
