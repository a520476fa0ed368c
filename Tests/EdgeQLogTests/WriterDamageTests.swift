import EdgeQLog
import EdgeQTestSupport
import Foundation
import Testing

/// Damage found while the gateway runs: the log was sound at start, then a page the writer
/// needs is overwritten (a failing disk, a stray process). The writer's insert fails with
/// SQLITE_CORRUPT; the bounded check after that error finds the damage, the file is moved
/// aside, and the rows still queued go to a fresh log (never appended to the damaged file).
@Suite struct WriterDamageTests {
    /// The page number of the transitions table's root and the file's page size.
    func rootPage(_ path: String) throws -> (page: Int, size: Int) {
        let r = try ChildProcess.run("python3", ["-c", """
            import sqlite3,sys
            c=sqlite3.connect(sys.argv[1])
            print(c.execute("select rootpage from sqlite_master where name='transitions'").fetchone()[0], c.execute('pragma page_size').fetchone()[0])
            """, path], timeout: 60)
        let parts = r.stdout.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        try #require(r.code == 0 && parts.count == 2, "could not read the root page: \(r.stderr)")
        return (parts[0], parts[1])
    }

    @Test func damageFoundAfterAWriteErrorMovesTheLogAsideAndTheQueuedRowsGoToAFreshOne() throws {
        let dir = try TempDir()
        do {
            let log = try ExperienceLog.open(path: dir.logPath, gatewayID: "gw-w")
            let writer = try log.makeWriter()
            for k in 0..<3_000 { writer.submit(sample(k, width: 8)) }
            try writer.close()
        }
        let (log, check) = try ExperienceLog.openForAppending(path: dir.logPath, gatewayID: "gw-w", checkSeconds: 30)
        #expect(check == .ok, "the log is sound at start")
        let writer = try log.makeWriter()
        // Now the root page of the transitions table is overwritten under the running writer
        // (it has read no page of that table yet, so its next insert reads the damage).
        let (page, size) = try rootPage(dir.logPath)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.logPath))
        try h.seek(toOffset: UInt64((page - 1) * size))
        try h.write(contentsOf: Data((0..<size).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }))
        try h.close()

        for k in 3_000..<3_100 { writer.submit(sample(k, width: 8)) }
        // The first batch fails, the check moves the file aside, the retry lands in the fresh log.
        let landed = eventually(timeout: 30) { (try? log.rowCount()) == 100 }
        #expect(landed, "rows in the log: \((try? log.rowCount()).map(String.init) ?? "unreadable"), writer: \(writer.metrics)")
        #expect(writer.metrics.recoveries == 1)
        #expect(writer.metrics.writeErrors >= 1)
        try writer.close()
        let moved = try #require(log.recoveries.last?.movedTo, "the recovery is listed on the log")
        #expect(moved.hasPrefix(dir.logPath + ".corrupt-"))
        #expect(FileManager.default.fileExists(atPath: moved), "the damaged file is kept for inspection")
        #expect(try log.integrityCheck() == "ok")
        #expect(try log.rowCount() == 100, "exactly the queued rows, none lost, none twice")
    }
}
