/// The log's on-disk schema (docs/log.md describes every column).
enum Schema {
    /// Bumped on any incompatible change; readers refuse a newer file.
    /// 2: the `flags` column (a version-1 file gets it at open, `migrate`).
    static let version = 2

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
            flags         INTEGER NOT NULL DEFAULT 0
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
    static let columns = "time, tick, episode, state, state_width, action, actor, reward, next_state, next_mask, terminal, truncated, mode, model_version, q_values, model_action, flags"

    static let insert = "INSERT INTO transitions (\(columns)) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"

    static let select = "SELECT id, \(columns) FROM transitions"

    /// Upgrades a version-1 file (no `flags` column) in place: one `ALTER TABLE`, old rows get
    /// flags 0. Call inside a write transaction, after `create`.
    static func migrate(_ db: SQLiteConnection) throws(LogError) {
        let s = try db.prepare("PRAGMA table_info(transitions)")
        var hasFlags = false
        while try s.step() { if s.text(1) == "flags" { hasFlags = true } }
        if !hasFlags {
            try db.execute("ALTER TABLE transitions ADD COLUMN flags INTEGER NOT NULL DEFAULT 0")
        }
    }

    /// Binds `t` to the 17 parameters of `insert`.
    static func bind(_ t: Transition, to s: SQLiteStatement) {
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
    }

    /// Reads the current row of a statement made from `select`.
    static func read(_ s: SQLiteStatement) -> LoggedTransition {
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
            flags: TransitionFlags(rawValue: s.int64(17))
        )
        return LoggedTransition(id: s.int64(0), transition: t)
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
