import EdgeQLog
import EdgeQTestSupport
import Foundation
import Testing

/// Schema 3: the raw values of the mapping's role signals (`signals`, `next_signals`, float64)
/// and their names (`signal_sets`, one per distinct list, pointed at by each row's
/// `signal_set`). Expected:
/// - a version-2 file is upgraded in place: old rows read back without signals, new rows with
///   their exact values and names;
/// - rows written under two different lists of names read back each under its own names, and a
///   row whose values do not fit its writer's names is stored without them;
/// - another program (Python) reads the values as little-endian float64 and the names as JSON;
/// - CSV export names the columns `signal.NAME` and `next_signal.NAME`.
@Suite struct SignalColumnTests {
    static let versionTwo = """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
        CREATE TABLE transitions (id INTEGER PRIMARY KEY, time REAL NOT NULL, tick INTEGER NOT NULL,
          episode INTEGER NOT NULL, state BLOB NOT NULL, state_width INTEGER NOT NULL, action INTEGER,
          actor TEXT NOT NULL CHECK (actor IN ('model','incumbent','exploration','fallback')), reward REAL NOT NULL,
          next_state BLOB NOT NULL, next_mask INTEGER, terminal INTEGER NOT NULL CHECK (terminal IN (0,1)),
          truncated INTEGER NOT NULL CHECK (truncated IN (0,1)), mode TEXT NOT NULL CHECK (mode IN ('shadow','control')),
          model_version TEXT, q_values BLOB, model_action INTEGER, flags INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX transitions_time ON transitions(time);
        CREATE TABLE audit (id INTEGER PRIMARY KEY, time REAL NOT NULL, key TEXT, verb TEXT NOT NULL, command TEXT,
          result TEXT NOT NULL CHECK (result IN ('accepted','refused','dropped')), reason TEXT,
          ok INTEGER CHECK (ok IN (0,1)), error TEXT);
        INSERT INTO meta VALUES ('schema_version','2'),('gateway_id','v2-gw'),('created_at','2026-06-01T00:00:00Z'),('state_encoding','float32-le');
        INSERT INTO transitions (time,tick,episode,state,state_width,action,actor,reward,next_state,terminal,truncated,mode,flags)
          VALUES (1.5, 7, 0, x'0000803f', 1, 1, 'incumbent', -0.25, x'00000040', 0, 0, 'shadow', 1);
        """

    /// A plain row carrying signal values.
    static func row(_ k: Int, signals: [Double]?, next: [Double]?) -> Transition {
        Transition(time: 1_790_000_000 + Double(k), tick: Int64(k), episode: 0, state: [Float(k)], action: k % 2,
                   actor: .incumbent, reward: -1, nextState: [Float(k + 1)], mode: .shadow,
                   signals: signals, nextSignals: next)
    }

    @Test func aVersionTwoLogIsUpgradedAndOldRowsHaveNoSignals() throws {
        let dir = try TempDir()
        try sqlScript(dir.logPath, Self.versionTwo)
        let log = try ExperienceLog.open(path: dir.logPath)
        #expect(log.schemaVersion == 3)
        #expect(log.gatewayID == "v2-gw")
        let old = try #require(try log.transitions(window: .all).first)
        #expect(old.transition.signals == nil && old.transition.nextSignals == nil && old.signalNames == nil)
        #expect(old.transition.flags == [.gap] && old.transition.state == [1])

        var options = TransitionWriter.Options()
        options.signalNames = ["temp", "ambient_temp"]
        let writer = try log.makeWriter(options: options)
        let values: [[Double]] = [[23.4375, -3.1], [23.5, -3.0000000000000004], [1e-300, 0.1 + 0.2]]
        for k in 0..<2 { writer.submit(Self.row(k, signals: values[k], next: values[k + 1])) }
        try writer.close()

        let rows = try log.transitions(window: .all)
        #expect(rows.count == 3)
        #expect(rows[0].signalNames == nil)
        for k in 0..<2 {
            #expect(rows[k + 1].signalNames == ["temp", "ambient_temp"])
            #expect(rows[k + 1].transition.signals == values[k])
            #expect(rows[k + 1].transition.nextSignals == values[k + 1])
        }
        #expect(try log.integrityCheck() == "ok")

        // Another program reads the same: meta version 3, the names as JSON, the values as
        // little-endian float64 (printed with float.hex: bit for bit, parsed back by Double).
        let py = """
            import sqlite3, struct, json, sys
            c = sqlite3.connect(sys.argv[1])
            print(c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            for s, n, names in c.execute("SELECT t.signals, t.next_signals, s.names FROM transitions t LEFT JOIN signal_sets s ON s.id = t.signal_set ORDER BY t.id"):
                if s is None:
                    print("none")
                    continue
                f = lambda b: ",".join(x.hex() for x in struct.unpack('<%dd' % (len(b) // 8), b))
                print(",".join(json.loads(names)) + "|" + f(s) + "|" + f(n))
            """
        let r = try ChildProcess.run("python3", ["-c", py, dir.logPath], timeout: 60)
        try #require(r.code == 0, "python3: \(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines == ["3", "none"] + (0..<2).map { k in
            "temp,ambient_temp|" + values[k].map(Self.hex).joined(separator: ",") + "|" + values[k + 1].map(Self.hex).joined(separator: ",")
        }, "\(lines)")
    }

    /// A double as Python's `float.hex()` writes it (`0x1.7700000000000p+4`), from its bits.
    static func hex(_ x: Double) -> String {
        if x == 0 { return x.sign == .minus ? "-0x0.0p+0" : "0x0.0p+0" }
        let sign = x.sign == .minus ? "-" : ""
        let bits = x.bitPattern
        let e = Int((bits >> 52) & 0x7ff)
        let mantissa = bits & ((1 << 52) - 1)
        let lead = e == 0 ? 0 : 1
        let exponent = e == 0 ? -1022 : e - 1023
        var m = String(mantissa, radix: 16)
        m = String(repeating: "0", count: 13 - m.count) + m
        return "\(sign)0x\(lead).\(m)p\(exponent >= 0 ? "+" : "")\(exponent)"
    }

    @Test func twoRunsWithOtherSignalsNeverShareNames() throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath, gatewayID: "gw")
        var first = TransitionWriter.Options()
        first.signalNames = ["a", "b"]
        let w1 = try log.makeWriter(options: first)
        w1.submit(Self.row(0, signals: [1, 2], next: [3, 4]))
        w1.submit(Self.row(1, signals: [5, 6, 7], next: [8, 9, 10]))   // does not fit ["a","b"]
        w1.submit(Self.row(2, signals: nil, next: nil))
        try w1.close()

        var second = TransitionWriter.Options()
        second.signalNames = ["b", "c", "d"]
        let w2 = try log.makeWriter(options: second)
        w2.submit(Self.row(3, signals: [11, 12, 13], next: [14, 15, 16]))
        try w2.close()

        // A third writer with the first list again reuses its set.
        let w3 = try log.makeWriter(options: first)
        w3.submit(Self.row(4, signals: [17, 18], next: [19, 20]))
        try w3.close()

        let rows = try log.transitions(window: .all)
        #expect(rows.map(\.signalNames) == [["a", "b"], nil, nil, ["b", "c", "d"], ["a", "b"]])
        #expect(rows.map(\.transition.signals) == [[1, 2], nil, nil, [11, 12, 13], [17, 18]])
        #expect(rows.map(\.transition.nextSignals) == [[3, 4], nil, nil, [14, 15, 16], [19, 20]])
        for r in rows {
            if let names = r.signalNames { #expect(r.transition.signals?.count == names.count) }
        }

        // A set edited from outside so that it no longer fits its rows, or is no JSON list:
        // those rows read without signals, never under names that are not theirs.
        try sqlScript(dir.logPath, """
            UPDATE signal_sets SET names = '["only"]' WHERE names = '["a","b"]';
            UPDATE signal_sets SET names = 'b, c, d' WHERE names = '["b","c","d"]';
            """)
        let edited = try log.transitions(window: .all)
        #expect(edited.map(\.signalNames) == [nil, nil, nil, nil, nil])
        #expect(edited.allSatisfy { $0.transition.signals == nil && $0.transition.nextSignals == nil })
    }

    @Test func csvExportNamesTheSignalColumns() throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath, gatewayID: "gw")
        var first = TransitionWriter.Options()
        first.signalNames = ["temp", "ambient_temp"]
        let w1 = try log.makeWriter(options: first)
        w1.submit(Self.row(0, signals: [23.4375, -3.5], next: [23.5, .nan]))
        w1.submit(Self.row(1, signals: nil, next: nil))
        try w1.close()
        var second = TransitionWriter.Options()
        second.signalNames = ["ambient_temp", "price"]
        let w2 = try log.makeWriter(options: second)
        w2.submit(Self.row(2, signals: [-4, 0.31], next: [-4.25, 0.32]))
        try w2.close()

        let file = dir.path + "/out.csv"
        #expect(try log.export(format: .csv, to: .file(file)) == 3)
        let text = try String(contentsOfFile: file, encoding: .utf8)
        let lines = text.split(separator: "\n").map(String.init)
        try #require(lines.count == 4)
        #expect(lines[0].hasSuffix(",s0,ns0,signal.temp,signal.ambient_temp,signal.price,next_signal.temp,next_signal.ambient_temp,next_signal.price"), "\(lines[0])")
        #expect(lines[1].hasSuffix(",0.0,1.0,23.4375,-3.5,,23.5,,"), "\(lines[1])")
        #expect(lines[2].hasSuffix(",1.0,2.0,,,,,,"), "\(lines[2])")
        #expect(lines[3].hasSuffix(",2.0,3.0,,-4.0,0.31,,-4.25,0.32"), "\(lines[3])")

        // `edgeq export` (the real process) writes the same.
        let cli = try ChildProcess.run(EdgeQBinary.path, ["export", "--data", dir.path], timeout: 60)
        #expect(cli.code == 0, "\(cli.stderr)")
        #expect(cli.stdout == text)

        // JSON lines carry the values as objects by name.
        let jsonl = dir.path + "/out.jsonl"
        #expect(try log.export(format: .jsonl, window: .lastRows(1), to: .file(jsonl)) == 1)
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: jsonl))) as? [String: Any]
        #expect(object?["signals"] as? [String: Double] == ["ambient_temp": -4, "price": 0.31])
        #expect(object?["next_signals"] as? [String: Double] == ["ambient_temp": -4.25, "price": 0.32])
    }
}
