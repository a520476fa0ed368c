import EdgeQLog
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct WriterTests {
    @Test func everyFieldRoundTrips() throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath, gatewayID: "gw-1")
        let writer = try log.makeWriter()
        let rows = (0..<200).map { sample($0) } + [sample(200, width: 0)]
        for r in rows { #expect(writer.submit(r) == .queued) }
        try writer.flush()
        let back = try log.transitions(window: .all)
        #expect(back.map(\.transition) == rows)
        #expect(back.map(\.id) == Array(1...Int64(rows.count)))
        try writer.close()

        // Reopened by another handle: same rows, same gateway id, schema version 3.
        let again = try ExperienceLog.open(path: dir.logPath, gatewayID: "ignored", create: false)
        #expect(again.gatewayID == "gw-1")
        #expect(again.schemaVersion == 3)
        #expect(try again.transitions(window: .lastRows(3)).map(\.transition) == Array(rows.suffix(3)))
        #expect(try again.transitions(window: .afterID(198)).count == 3)
        #expect(try again.transitions(window: .since(rows[150].time)).count == 51)
    }

    @Test func manyRowsGoInFewTransactions() throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath)
        var options = TransitionWriter.Options()
        options.maxBatchRows = 500
        options.commitInterval = 0.05
        let writer = try log.makeWriter(options: options)
        for k in 0..<5_000 { writer.submit(sample(k)) }
        try writer.flush()
        let m = writer.metrics
        #expect(m.rowsSubmitted == 5_000)
        #expect(m.rowsWritten == 5_000)
        // At most 500 rows per transaction, so at least 10; one per row would be 5,000.
        #expect(m.batches >= 10)
        #expect(m.commits >= 10 && m.commits <= 60, "\(m.commits) commits for 5,000 rows")
        #expect(m.queueDepth == 0 && m.overflows == 0 && m.dropped == 0 && m.writeErrors == 0)
        #expect(try log.rowCount() == 5_000)
        try writer.close()
    }

    @Test func flushMakesEverythingVisibleToAnotherConnection() throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath)
        var options = TransitionWriter.Options()
        options.commitInterval = 60 // no timed commit during the test: flush must do it
        options.maxBatchRows = 100_000
        let writer = try log.makeWriter(options: options)
        for k in 0..<1_234 { writer.submit(sample(k)) }
        try writer.flush()
        let other = try ExperienceLog.open(path: dir.logPath, create: false)
        #expect(try other.rowCount() == 1_234)
        #expect(try other.integrityCheck() == "ok")
        try writer.close()
    }

    /// `close()` returns with the writer's connection closed and its reference to the log gone:
    /// once the caller lets the log go too, nothing holds the file. A caller may move, copy or
    /// check the file next, and while any connection is open its WAL still holds the newest
    /// pages every reader sees (a damage test scribbled on the file and the check read the
    /// WAL's clean copies). Checked by the process's open file descriptors, 20 times over: the
    /// old order (stopped, then the connections closed on the thread's way out) lost a race
    /// only now and then.
    @Test func closeReturnsWithTheWritersConnectionClosed() throws {
        let dir = try TempDir()
        func openFiles() -> [String] {
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
            return fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0) }
                .filter { $0.hasPrefix(dir.path) }
        }
        for round in 0..<20 {
            do {
                let log = try ExperienceLog.open(path: dir.logPath)
                let writer = try log.makeWriter()
                for k in 0..<50 { writer.submit(sample(round * 50 + k)) }
                try writer.close()
            }
            #expect(openFiles().isEmpty, "round \(round): still open after close(): \(openFiles())")
            #expect(!FileManager.default.fileExists(atPath: dir.logPath + "-wal"), "round \(round): the WAL outlived close()")
        }
        #expect(try ExperienceLog.open(path: dir.logPath, create: false).rowCount() == 1_000)
    }

    @Test func aFullQueueGrowsAndCountsThenRefusesAtTheHardLimit() throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath)
        var options = TransitionWriter.Options()
        options.commitInterval = 60
        options.queueCapacity = 10
        options.hardLimit = 20
        let writer = try log.makeWriter(options: options)
        let results = (0..<25).map { writer.submit(sample($0)) }
        #expect(results.filter { $0 == .queued }.count == 10)
        #expect(results.filter { $0 == .queuedOverCapacity }.count == 10)
        #expect(results.filter { $0 == .dropped }.count == 5)
        #expect(writer.metrics.overflows == 10 && writer.metrics.dropped == 5 && writer.metrics.queueDepth == 20)
        try writer.close()
        #expect(writer.submit(sample(99)) == .closed)
        #expect(try log.transitions(window: .all).map(\.transition) == (0..<20).map { sample($0) })
    }

    @Test func retentionKeepsTheNewestRowsAndDropsOldOnes() throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath)
        let writer = try Self.retainingWriter(log, RetentionPolicy(maxRows: 300, maxAge: 86_400, batchRows: 64))
        let now = Date().timeIntervalSince1970
        // 200 rows two days old, then 1,000 fresh ones.
        for k in 0..<200 { writer.submit(sample(k, time: now - 2 * 86_400)) }
        for k in 200..<1_200 { writer.submit(sample(k, time: now)) }
        try writer.flush()
        let rows = try log.transitions(window: .all)
        #expect(rows.count == 300)
        #expect(rows.map(\.transition.tick) == Array(900..<1_200).map(Int64.init))
        #expect(writer.metrics.rowsDeletedByRetention == 900)

        // Age alone: old rows go even under the row limit.
        for k in 1_200..<1_250 { writer.submit(sample(k, time: now - 3 * 86_400)) }
        try writer.flush()
        #expect(try log.transitions(window: .all).allSatisfy { $0.transition.time >= now - 86_400 })
        #expect(try log.rowCount() == 300)
        try writer.close()
    }

    /// A writer on `log` that applies `policy` after every commit.
    static func retainingWriter(_ log: ExperienceLog, _ policy: RetentionPolicy) throws -> TransitionWriter {
        var options = TransitionWriter.Options()
        options.retention = policy
        options.retentionInterval = 0
        return try log.makeWriter(options: options)
    }

    /// A hold (the fleet shipper's: rows no learner acknowledged) keeps rows from age retention,
    /// however old, until it releases them; the row limit is not held (it bounds the file).
    @Test func ageRetentionKeepsTheRowsAHoldHasNotReleased() throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath)
        let hold = RetentionHold()
        let writer = try Self.retainingWriter(log, RetentionPolicy(maxAge: 86_400, batchRows: 64, hold: hold))
        let now = Date().timeIntervalSince1970
        // 200 rows two days old (ids 1…200), then 100 fresh ones; nothing released yet.
        for k in 0..<200 { writer.submit(sample(k, time: now - 2 * 86_400)) }
        for k in 200..<300 { writer.submit(sample(k, time: now)) }
        try writer.flush()
        #expect(try log.rowCount() == 300)
        #expect(writer.metrics.rowsDeletedByRetention == 0 && writer.metrics.rowsHeldBack == 200)

        // Released through id 120: the old rows up to it go, the 80 old ones after it stay.
        hold.release(through: 120)
        writer.submit(sample(300, time: now))
        try writer.flush()
        #expect(try log.transitions(window: .all).map(\.transition.tick).first == 120)
        #expect(try log.rowCount() == 181)
        #expect(writer.metrics.rowsDeletedByRetention == 120 && writer.metrics.rowsHeldBack == 80)

        // Released past them all: every old row goes, the fresh ones stay.
        hold.release(through: 1_000)
        writer.submit(sample(301, time: now))
        try writer.flush()
        #expect(try log.transitions(window: .all).map(\.transition.tick) == Array(200..<302).map(Int64.init))
        #expect(writer.metrics.rowsDeletedByRetention == 200 && writer.metrics.rowsHeldBack == 0)

        // The row limit is not held back.
        try writer.close()
        let second = try Self.retainingWriter(log, RetentionPolicy(maxRows: 50, maxAge: 86_400, batchRows: 64, hold: RetentionHold()))
        second.submit(sample(302, time: now))
        try second.flush()
        #expect(try log.rowCount() == 50)
        try second.close()
    }

    @Test func aReaderTrainsWhileTheWriterWrites() async throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath)
        var options = TransitionWriter.Options()
        options.commitInterval = 0.01
        options.maxBatchRows = 200
        let writer = try log.makeWriter(options: options)
        let total = 20_000
        let producer = Task.detached {
            for k in 0..<total {
                writer.submit(sample(k))
                if k % 500 == 499 { try? await Task.sleep(for: .milliseconds(2)) }
            }
        }
        var reads = 0
        var nonEmpty = 0
        while try log.rowCount() < total {
            let window = try log.transitions(window: .lastRows(300))
            let ticks = window.map(\.transition.tick)
            // A consistent snapshot: consecutive rows, in order, never a torn row.
            #expect(ticks == Array(ticks.first.map { $0..<($0 + Int64(ticks.count)) } ?? 0..<0))
            for row in window { #expect(row.transition == sample(Int(row.transition.tick))) }
            reads += 1
            if !window.isEmpty { nonEmpty += 1 }
            if writer.metrics.rowsSubmitted == total { try writer.flush() }
        }
        await producer.value
        #expect(reads > 1 && nonEmpty > 0)
        #expect(try log.rowCount() == total)
        try writer.close()
    }
}

@Suite struct ReadingTests {
    @Test func countsByActorAndTheIncumbentBaseline() throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath)
        let writer = try log.makeWriter()
        var rows: [Transition] = []
        for k in 0..<100 {
            var t = sample(k)
            t.mode = k < 60 ? .shadow : .control
            t.actor = k < 60 ? (k % 10 == 0 ? .exploration : .incumbent) : .model
            t.reward = k < 60 ? Double(k % 3) : -5
            rows.append(t)
            writer.submit(t)
        }
        try writer.flush()
        #expect(try log.countsByActor() == [.incumbent: 54, .exploration: 6, .model: 40])
        #expect(try log.countsByActor(window: .lastRows(10)) == [.model: 10])
        let baseline = try #require(try log.incumbentBaseline())
        #expect(baseline.rows == 60)
        #expect(abs(baseline.meanReward - rows.prefix(60).map(\.reward).reduce(0, +) / 60) < 1e-12)
        // The last 30 shadow rows (30…59), even though the last rows overall are control rows.
        let recent = try #require(try log.incumbentBaseline(window: .lastRows(30)))
        #expect(recent.rows == 30)
        #expect(abs(recent.meanReward - rows[30..<60].map(\.reward).reduce(0, +) / 30) < 1e-12)
        #expect(try log.incumbentBaseline(window: .afterID(60)) == nil)
        try writer.close()
    }

    @Test func refusesAFileThatIsNotALogAndANewerSchema() throws {
        let dir = try TempDir()
        let other = dir.path + "/other.sqlite"
        try sqlScript(other, "CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        #expect(throws: LogError.self) { _ = try ExperienceLog.open(path: other) }
        do {
            _ = try ExperienceLog.open(path: other)
        } catch {
            #expect(error.kind == .schema)
        }

        _ = try ExperienceLog.open(path: dir.logPath)
        try sqlScript(dir.logPath, "UPDATE meta SET value='99' WHERE key='schema_version';")
        do {
            _ = try ExperienceLog.open(path: dir.logPath)
            Issue.record("a schema version 99 file was accepted")
        } catch {
            #expect(error.kind == .schema)
            #expect(error.message.contains("upgrade"))
        }
        do {
            _ = try ExperienceLog.open(path: dir.path + "/missing.sqlite", create: false)
            Issue.record("a missing file was opened")
        } catch {
            #expect(error.kind == .open)
        }
    }
}
