import EdgeQLog
import EdgeQTestSupport
import Foundation
import Testing

/// Fault test: a writer process is killed with SIGKILL in the middle of writing.
///
/// Exchange: `edgeq log-stress --data DIR` submits ~10 rows per millisecond (row k has
/// tick k and a state encoding k) and prints `submitted=N committed=M` every 20 ms, where
/// M counts rows whose COMMIT had returned. We wait for M ≥ 3,000, SIGKILL it, reopen:
/// the file passes `PRAGMA integrity_check`, the rows present are ticks 0…n−1 with no gap
/// and intact contents, and n ≥ the last committed count it printed (nothing committed
/// is lost; what is missing was at most the uncommitted window).
@Suite struct DurabilityTests {
    @Test func killDashNineLosesNothingCommitted() throws {
        let dir = try TempDir()
        let out = dir.path + "/stress.out"
        let child = try ChildProcess(EdgeQBinary.path, ["log-stress", "--data", dir.path], stdoutPath: out,
                                     stderrPath: dir.path + "/stress.err")
        var lastCommitted = 0
        var lastSubmitted = 0
        let deadline = Date().addingTimeInterval(60)
        while lastCommitted < 3_000 && Date() < deadline && child.isRunning {
            usleep(20_000)
            let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ").compactMap { Int($0.split(separator: "=").last ?? "") }
                if fields.count == 2 {
                    lastSubmitted = fields[0]
                    lastCommitted = fields[1]
                }
            }
        }
        try #require(lastCommitted >= 3_000, "the stress writer did not get going: \(lastCommitted) committed")
        child.signal(SIGKILL)
        #expect(child.wait(timeout: 10) == 128 + SIGKILL)

        let log = try ExperienceLog.open(path: dir.logPath, create: false)
        #expect(try log.integrityCheck() == "ok")
        let rows = try log.transitions(window: .all)
        #expect(rows.count >= lastCommitted, "\(rows.count) rows after kill, \(lastCommitted) reported committed")
        #expect(rows.count >= lastSubmitted - 50_000) // a sanity bound, not a timing claim
        print("kill -9: \(rows.count) rows on disk; last report before the kill: submitted \(lastSubmitted), committed \(lastCommitted)")
        for (i, row) in rows.enumerated() {
            let intact = row.id == Int64(i + 1) && row.transition.tick == Int64(i)
                && row.transition.state.first == Float(i) && row.transition.nextState.first == Float(i + 1)
            if !intact {
                Issue.record("gap, disorder or damage at row \(i): id \(row.id), tick \(row.transition.tick)")
                break
            }
        }
        // The log stays writable after the crash: a new writer appends after the prefix.
        let writer = try log.makeWriter()
        writer.submit(sample(0))
        try writer.flush()
        try writer.close()
        #expect(try log.rowCount() == rows.count + 1)
    }
}

/// Export streams CSV and JSON lines that other tools parse back (Python's csv and json).
@Suite struct ExportTests {
    static let checker = #"""
    import csv, json, sys
    fmt, path = sys.argv[1], sys.argv[2]
    out = []
    if fmt == "csv":
        with open(path, newline="") as f:
            r = csv.DictReader(f)
            header = r.fieldnames
            for row in r:
                w = sum(1 for h in header if h.startswith("s") and h[1:].isdigit())
                q = sum(1 for h in header if h.startswith("q") and h[1:].isdigit())
                out.append({
                    "id": int(row["id"]), "tick": int(row["tick"]), "gateway_id": row["gateway_id"],
                    "action": None if row["action"] == "" else int(row["action"]),
                    "actor": row["actor"], "reward": float(row["reward"]),
                    "terminal": row["terminal"] == "1", "truncated": row["truncated"] == "1",
                    "mode": row["mode"], "model_version": row["model_version"] or None,
                    "next_mask": None if row["next_mask"] == "" else int(row["next_mask"]),
                    "flags": int(row["flags"]),
                    "state": [float(row[f"s{i}"]) for i in range(w) if row[f"s{i}"] != ""],
                    "next_state": [float(row[f"ns{i}"]) for i in range(w) if row[f"ns{i}"] != ""],
                    "q_values": [float(row[f"q{i}"]) for i in range(q) if row[f"q{i}"] != ""] or None,
                })
    else:
        with open(path) as f:
            for line in f:
                o = json.loads(line)
                out.append({k: o[k] for k in ["id", "tick", "gateway_id", "action", "actor", "reward", "terminal",
                    "truncated", "mode", "model_version", "next_mask", "flags", "state", "next_state", "q_values"]})
    print(json.dumps(out))
    """#

    struct Parsed: Decodable, Equatable {
        var id: Int64
        var tick: Int64
        var gateway_id: String
        var action: Int?
        var actor: String
        var reward: Double
        var terminal: Bool
        var truncated: Bool
        var mode: String
        var model_version: String?
        var next_mask: UInt64?
        var flags: Int64
        var state: [Float]
        var next_state: [Float]
        var q_values: [Float]?
    }

    @Test(arguments: [ExportFormat.csv, .jsonl])
    func exportParsesBack(format: ExportFormat) throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath, gatewayID: "plant,7")
        let writer = try log.makeWriter()
        let rows = (0..<150).map { sample($0, width: 3) }
        for r in rows { writer.submit(r) }
        try writer.close()

        let file = dir.path + "/out." + format.rawValue
        #expect(try log.export(format: format, window: .afterID(20), to: .file(file)) == 130)
        let r = try ChildProcess.run("python3", ["-c", Self.checker, format.rawValue, file], timeout: 60)
        try #require(r.code == 0, "python3: \(r.stderr)")
        let parsed = try JSONDecoder().decode([Parsed].self, from: Data(r.stdout.utf8))
        #expect(parsed.count == 130)
        for (p, t) in zip(parsed, rows.dropFirst(20)) {
            let expected = Parsed(
                id: t.tick + 1, tick: t.tick, gateway_id: "plant,7", action: t.action, actor: t.actor.rawValue,
                reward: t.reward, terminal: t.terminal, truncated: t.truncated, mode: t.mode.rawValue,
                model_version: t.modelVersion, next_mask: t.nextMask, flags: t.flags.rawValue, state: t.state, next_state: t.nextState,
                q_values: t.qValues)
            #expect(p == expected)
        }
    }

    @Test func theExportCommandWritesCSVWithAHeader() throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath, gatewayID: "gw")
        let writer = try log.makeWriter()
        for k in 0..<10 { writer.submit(sample(k, width: 2)) }
        try writer.close()
        let r = try ChildProcess.run(EdgeQBinary.path, ["export", "--data", dir.path, "--last", "4"], timeout: 60)
        #expect(r.code == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 5)
        #expect(lines.first?.hasPrefix("id,gateway_id,time,tick,episode,action,actor,reward,terminal,truncated,mode,model_version,model_action,next_mask,flags,s0,s1,ns0,ns1,q0,q1,q2") == true)
        #expect(lines.last?.hasPrefix("10,gw,") == true)
        let jsonl = try ChildProcess.run(EdgeQBinary.path, ["export", "--data", dir.path, "--format", "jsonl", "--since", "1h"], timeout: 60)
        #expect(jsonl.code == 0 && jsonl.stdout.isEmpty) // sample times are in 2026-09, older than an hour
        let bad = try ChildProcess.run(EdgeQBinary.path, ["export", "--data", dir.path, "--since", "yesterday"], timeout: 60)
        #expect(bad.code == 64 && bad.stderr.contains("--since"))
    }
}
