import EdgeQCore
import Foundation

/// The log's on-disk schema (docs/log.md describes every column).
enum Schema {
    /// Bumped on any incompatible change; readers refuse a newer file.
    /// 2: the `flags` column (a version-1 file gets it at open, `migrate`).
    /// 3: the raw signal values (`signals`, `next_signals`, `signal_set`) and the table of their
    /// names (`signal_sets`); older files get them at open, old rows NULL.
    static let version = 3

    static let create = """
        CREATE TABLE IF NOT EXISTS meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS transitions (
            id            INTEGER PRIMARY KEY,
            time          REAL    NOT NULL,
            tick          INTEGER NOT NULL,
            episode       INTEGER NOT NULL,
            state         BLOB    NOT NULL,
            state_width   INTEGER NOT NULL,
            action        INTEGER,
            actor         TEXT    NOT NULL CHECK (actor IN ('model','incumbent','exploration','fallback')),
            reward        REAL    NOT NULL,
            next_state    BLOB    NOT NULL,
            next_mask     INTEGER,
            terminal      INTEGER NOT NULL CHECK (terminal IN (0,1)),
            truncated     INTEGER NOT NULL CHECK (truncated IN (0,1)),
            mode          TEXT    NOT NULL CHECK (mode IN ('shadow','control')),
            model_version TEXT,
            q_values      BLOB,
            model_action  INTEGER,
            flags         INTEGER NOT NULL DEFAULT 0,
            signals       BLOB,
            next_signals  BLOB,
            signal_set    INTEGER
        );
        CREATE TABLE IF NOT EXISTS signal_sets (
            id     INTEGER PRIMARY KEY,
            names  TEXT NOT NULL UNIQUE
        );
        CREATE INDEX IF NOT EXISTS transitions_time ON transitions(time);
        CREATE TABLE IF NOT EXISTS audit (
            id       INTEGER PRIMARY KEY,
            time     REAL    NOT NULL,
            key      TEXT,
            verb     TEXT    NOT NULL,
            command  TEXT,
            result   TEXT    NOT NULL CHECK (result IN ('accepted','refused','dropped')),
            reason   TEXT,
            ok       INTEGER CHECK (ok IN (0,1)),
            error    TEXT
        );
        """

    /// The columns in the order `insert` binds and `select` reads them (id excluded).
    static let columns = "time, tick, episode, state, state_width, action, actor, reward, next_state, next_mask, terminal, truncated, mode, model_version, q_values, model_action, flags, signals, next_signals, signal_set"

    static let insert = "INSERT INTO transitions (\(columns)) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"

    static let select = "SELECT id, \(columns) FROM transitions"

    /// Upgrades an older file in place, one `ALTER TABLE` per missing column: version 1 gets
    /// `flags` (old rows 0), versions 1 and 2 get `signals`, `next_signals` and `signal_set`
    /// (old rows NULL: no raw values known); `create` has made `signal_sets`. Call inside a
    /// write transaction, after `create`.
    static func migrate(_ db: SQLiteConnection) throws(LogError) {
        let s = try db.prepare("PRAGMA table_info(transitions)")
        var present: Set<String> = []
        while try s.step() { present.insert(s.text(1)) }
        let added = [("flags", "INTEGER NOT NULL DEFAULT 0"), ("signals", "BLOB"), ("next_signals", "BLOB"), ("signal_set", "INTEGER")]
        for (name, type) in added where !present.contains(name) {
            try db.execute("ALTER TABLE transitions ADD COLUMN \(name) \(type)")
        }
    }

    /// The text stored in `signal_sets.names` for `names`: a JSON array of strings.
    static func encodeNames(_ names: [String]) -> String {
        "[" + names.map(jsonString).joined(separator: ",") + "]"
    }

    /// The names in a `signal_sets.names` text; nil when it is not a JSON array of strings.
    static func decodeNames(_ text: String) -> [String]? {
        try? JSONDecoder().decode([String].self, from: Data(text.utf8))
    }

    /// The id of the signal set `names` in the file, added when missing.
    static func signalSetID(_ db: SQLiteConnection, names: [String]) throws(LogError) -> Int64 {
        let text = encodeNames(names)
        let add = try db.prepare("INSERT OR IGNORE INTO signal_sets (names) VALUES (?)")
        add.bind(1, text)
        _ = try add.step()
        let find = try db.prepare("SELECT id FROM signal_sets WHERE names = ?")
        find.bind(1, text)
        guard try find.step() else {
            throw LogError(.query, path: db.path, message: "the signal set \(text) was added but cannot be read back")
        }
        return find.int64(0)
    }

    /// Every signal set in the file, by id (sets whose names cannot be read are left out: their
    /// rows read without signals, never with the wrong names).
    static func signalSets(_ db: SQLiteConnection) throws(LogError) -> [Int64: [String]] {
        let s = try db.prepare("SELECT id, names FROM signal_sets")
        var out: [Int64: [String]] = [:]
        while try s.step() {
            if let names = decodeNames(s.text(1)) { out[s.int64(0)] = names }
        }
        return out
    }

    /// Binds `t` to the 20 parameters of `insert`. `signalSet` is the writer's set of signal
    /// names (nil: none): a row's `signals`/`next_signals` are stored only when there is a set
    /// and they have exactly its count of values; otherwise both are NULL, so no value can ever
    /// be read under another signal's name.
    static func bind(_ t: Transition, to s: SQLiteStatement, signalSet: (id: Int64, count: Int)? = nil) {
        s.bind(1, t.time)
        s.bind(2, t.tick)
        s.bind(3, t.episode)
        s.bind(4, floats: t.state)
        s.bind(5, Int64(t.state.count))
        s.bind(6, t.action.map(Int64.init))
        s.bind(7, t.actor.rawValue)
        s.bind(8, t.reward)
        s.bind(9, floats: t.nextState)
        s.bind(10, t.nextMask.map { Int64(bitPattern: $0) })
        s.bind(11, Int64(t.terminal ? 1 : 0))
        s.bind(12, Int64(t.truncated ? 1 : 0))
        s.bind(13, t.mode.rawValue)
        s.bind(14, t.modelVersion)
        s.bind(15, floats: t.qValues)
        s.bind(16, t.modelAction.map(Int64.init))
        s.bind(17, t.flags.rawValue)
        let fits: ([Double]?) -> Bool = { v in v.map { $0.count == signalSet?.count } ?? true }
        if let set = signalSet, t.signals != nil || t.nextSignals != nil, fits(t.signals), fits(t.nextSignals) {
            s.bind(18, doubles: t.signals)
            s.bind(19, doubles: t.nextSignals)
            s.bind(20, set.id)
        } else {
            s.bind(18, doubles: nil)
            s.bind(19, doubles: nil)
            s.bind(20, nil as Int64?)
        }
    }

    /// Reads the current row of a statement made from `select`; `signalSets` (from
    /// `signalSets(_:)`) names the raw signal values. A row whose set is unknown, or whose
    /// values do not match its set's count, reads without signals.
    static func read(_ s: SQLiteStatement, signalSets: [Int64: [String]] = [:]) -> LoggedTransition {
        var signals: [Double]?
        var nextSignals: [Double]?
        var names: [String]?
        if !s.isNull(20), let set = signalSets[s.int64(20)] {
            let a = s.doubles(18), b = s.doubles(19)
            if a.map({ $0.count == set.count }) ?? true, b.map({ $0.count == set.count }) ?? true, a != nil || b != nil {
                signals = a
                nextSignals = b
                names = set
            }
        }
        let t = Transition(
            time: s.double(1),
            tick: s.int64(2),
            episode: s.int64(3),
            state: s.floats(4) ?? [],
            action: s.isNull(6) ? nil : Int(s.int64(6)),
            actor: Actor(rawValue: s.text(7)) ?? .fallback,
            reward: s.double(8),
            nextState: s.floats(9) ?? [],
            nextMask: s.isNull(10) ? nil : UInt64(bitPattern: s.int64(10)),
            terminal: s.int64(11) != 0,
            truncated: s.int64(12) != 0,
            mode: ControlMode(rawValue: s.text(13)) ?? .shadow,
            modelVersion: s.isNull(14) ? nil : s.text(14),
            qValues: s.floats(15),
            modelAction: s.isNull(16) ? nil : Int(s.int64(16)),
            flags: TransitionFlags(rawValue: s.int64(17)),
            signals: signals,
            nextSignals: nextSignals
        )
        return LoggedTransition(id: s.int64(0), transition: t, signalNames: names)
    }

    /// A query over `window` with an optional extra condition, rows in id order.
    /// `columns` is what to select (a subquery keeps `lastRows` in ascending order).
    static func windowed(_ window: LogWindow, where extra: String? = nil, select: String = Schema.select) -> String {
        var conditions: [String] = []
        if let extra { conditions.append(extra) }
        switch window {
        case .all, .lastRows:
            break
        case .since(let t):
            // A non-finite instant would not be valid SQL: NaN and −∞ mean "everything".
            conditions.append(t.isFinite ? "time >= \(t)" : (t > 0 ? "0" : "1"))
        case .afterID(let id):
            conditions.append("id > \(id)")
        }
        let whereClause = conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ")
        if case .lastRows(let n) = window {
            return "SELECT * FROM (\(select)\(whereClause) ORDER BY id DESC LIMIT \(max(0, n))) ORDER BY id"
        }
        return "\(select)\(whereClause) ORDER BY id"
    }
}
