#if canImport(Glibc)
import Glibc
#endif
import EdgeQLog
import EdgeQTestSupport
import Foundation
import Testing

/// Damage, old files and read-only folders, on real SQLite files.
///
/// - random bytes written into the middle of a log: the bounded check finds them, the file is
///   moved aside with its WAL, a fresh log takes its place and takes rows;
/// - a version-1 file (no `flags` column) is upgraded in place (to version 3) and keeps its rows;
/// - a read-only data directory is reported as read-only, not "unable to open database file".
@Suite struct DamageTests {
    /// A closed log of `rows` rows (about 100 bytes each) at `path`.
    func makeLog(_ path: String, rows: Int) throws {
        let log = try ExperienceLog.open(path: path, gatewayID: "gw-d")
        let writer = try log.makeWriter()
        for k in 0..<rows { writer.submit(sample(k, width: 8)) }
        try writer.close()
    }

    /// Overwrites `count` bytes in the middle of the file with seeded random bytes (the probe's fault).
    func scribble(_ path: String, count: Int = 8192, seed: UInt64 = 11) throws {
        // Everything in the main file first: a page still in the WAL would supersede the
        // damaged one on the next open (under load the last close may leave its WAL behind),
        // and the damage would not be seen.
        try sqlScript(path, "PRAGMA wal_checkpoint(TRUNCATE);")
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
        try #require(size > 4 * count, "the log is too small to damage its middle (\(size) bytes)")
        var x = seed
        let bytes = (0..<count).map { _ -> UInt8 in
            x = x &* 6364136223846793005 &+ 1442695040888963407   // a seeded LCG: the same bytes every run
            return UInt8(truncatingIfNeeded: x >> 33)
        }
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try h.seek(toOffset: UInt64(size / 2))
        try h.write(contentsOf: Data(bytes))
        try h.close()
    }

    @Test func quickCheckFindsRandomBytesInTheMiddle() throws {
        let dir = try TempDir()
        try makeLog(dir.logPath, rows: 5_000)
        #expect(try ExperienceLog.quickCheck(path: dir.logPath, timeLimit: 30) == .ok)
        try scribble(dir.logPath)
        guard case .damaged(let problem) = try ExperienceLog.quickCheck(path: dir.logPath, timeLimit: 30) else {
            Issue.record("quick_check did not see 8 KiB of random bytes in the middle of the log")
            return
        }
        #expect(!problem.isEmpty)
    }

    @Test func aDamagedLogIsMovedAsideAndAFreshOneTakesRows() throws {
        let dir = try TempDir()
        try makeLog(dir.logPath, rows: 5_000)
        try scribble(dir.logPath)
        let (log, check) = try ExperienceLog.openForAppending(path: dir.logPath, gatewayID: "gw-d", checkSeconds: 30)
        guard case .damaged = check else {
            Issue.record("the damaged log was taken as \(check)")
            return
        }
        #expect(log.recoveries.count == 1)
        let moved = try #require(log.recoveries.first?.movedTo)
        #expect(moved.hasPrefix(dir.logPath + ".corrupt-"))
        #expect(FileManager.default.fileExists(atPath: moved), "the damaged file is kept for inspection")
        // The fresh log is empty, sound, and takes rows.
        #expect(try log.rowCount() == 0)
        let writer = try log.makeWriter()
        for k in 0..<100 { writer.submit(sample(k, width: 8)) }
        try writer.flush()
        try writer.close()
        #expect(try log.rowCount() == 100)
        #expect(try log.integrityCheck() == "ok")
        #expect(log.gatewayID == "gw-d")
        // A sound log is left alone.
        let (again, check2) = try ExperienceLog.openForAppending(path: dir.logPath, gatewayID: "gw-d", checkSeconds: 30)
        #expect(check2 == .ok)
        #expect(again.recoveries.isEmpty)
        #expect(try again.rowCount() == 100)
    }

    @Test func aFileThatIsNotADatabaseIsMovedAsideToo() throws {
        let dir = try TempDir()
        try Data(repeating: 0x5a, count: 20_000).write(to: URL(fileURLWithPath: dir.logPath))
        let (log, check) = try ExperienceLog.openForAppending(path: dir.logPath, gatewayID: "gw-d", checkSeconds: 30)
        guard case .damaged = check else {
            Issue.record("a file of garbage was taken as \(check)")
            return
        }
        #expect(log.recoveries.count == 1)
        #expect(try log.rowCount() == 0)
    }

    @Test func aVersionOneLogGetsTheFlagsColumnAndKeepsItsRows() throws {
        let dir = try TempDir()
        // The version-1 schema, as the previous release wrote it.
        try sqlScript(dir.logPath, """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE transitions (id INTEGER PRIMARY KEY, time REAL NOT NULL, tick INTEGER NOT NULL,
              episode INTEGER NOT NULL, state BLOB NOT NULL, state_width INTEGER NOT NULL, action INTEGER,
              actor TEXT NOT NULL, reward REAL NOT NULL, next_state BLOB NOT NULL, next_mask INTEGER,
              terminal INTEGER NOT NULL, truncated INTEGER NOT NULL, mode TEXT NOT NULL, model_version TEXT,
              q_values BLOB, model_action INTEGER);
            CREATE INDEX transitions_time ON transitions(time);
            INSERT INTO meta VALUES ('schema_version','1'),('gateway_id','old-gw'),('created_at','2026-01-01T00:00:00Z'),('state_encoding','float32-le');
            INSERT INTO transitions (time,tick,episode,state,state_width,action,actor,reward,next_state,terminal,truncated,mode)
              VALUES (1.5, 7, 0, x'0000803f', 1, 1, 'incumbent', -0.25, x'00000040', 0, 0, 'shadow');
            """)
        let log = try ExperienceLog.open(path: dir.logPath)
        #expect(log.schemaVersion == 3)
        #expect(log.gatewayID == "old-gw")
        let old = try log.transitions(window: .all)
        #expect(old.count == 1)
        #expect(old.first?.transition.flags == [])
        #expect(old.first?.transition.state == [1])
        let writer = try log.makeWriter()
        var t = sample(1, width: 1)
        t.flags = [.gap, .appliedMismatch]
        writer.submit(t)
        try writer.close()
        #expect(try log.transitions(window: .all).last?.transition.flags == [.gap, .appliedMismatch])
        #expect(try log.integrityCheck() == "ok")
    }

    /// A read-only folder, made read-only in a way root cannot ignore: a read-only tmpfs mount
    /// (root), an immutable folder (root, when mounting is not allowed), or mode 0555 (not root).
    @Test func aReadOnlyDataDirectoryIsReportedAsReadOnly() throws {
        let dir = try TempDir()
        let data = dir.path + "/data"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        var undo: () -> Void = {}
        if getuid() != 0 {
            chmod(data, 0o555)
            undo = { chmod(data, 0o755) }
        } else if (try? ChildProcess.run("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", data], timeout: 10).code) == 0 {
            undo = { _ = try? ChildProcess.run("umount", [data], timeout: 10) }
        } else if (try? ChildProcess.run("chattr", ["+i", data], timeout: 10).code) == 0 {
            undo = { _ = try? ChildProcess.run("chattr", ["-i", data], timeout: 10) }
        } else {
            // Root that can neither mount nor set attributes: nothing makes a folder read-only.
            print("SKIPPED aReadOnlyDataDirectoryIsReportedAsReadOnly: running as root without mount or chattr rights")
            return
        }
        defer { undo() }
        do {
            _ = try ExperienceLog.open(path: data + "/experience.sqlite", gatewayID: "ro")
            Issue.record("a log was created in a read-only directory")
        } catch {
            #expect(error.kind == .readOnly, "\(error)")
            #expect(error.message.contains("read-only"), "\(error.message)")
            #expect(!error.description.contains("unable to open database file") || error.message.contains("read-only"))
        }
    }
}
