#if canImport(Glibc)
import Glibc
#endif
import EdgeQLog
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq run` as a real process on a damaged log and on a read-only data directory.
///
/// Damage (the probe's reproduction): 8 KiB of random bytes written into the middle of
/// `experience.sqlite`. Expected: the gateway starts, moves the file aside
/// (`experience.sqlite.corrupt-<time>`), says so at critical level, in its status
/// (`log.recovered_from_corruption`) and in `edgeq_log_corruptions_total`, keeps deciding, and
/// the fresh log takes every transition and passes `PRAGMA integrity_check`.
@Suite struct LogDamageTests {
    static let mapping = processMapping(id: "d1", plant: "d", learning: "  retrain: {every_transitions: 1000000}")

    func waitFor(_ c: MQTTClient, topic: String, contains text: String, timeout: Double = 20) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let m = c.receive(timeout: 0.1), m.topic == topic else { continue }
            let s = String(decoding: m.payload, as: UTF8.self)
            if s.contains(text) { return s }
        }
        return nil
    }

    @Test func aLogDamagedInTheMiddleIsMovedAsideAndAFreshOneTakesTheRows() throws {
        let broker = try MosquittoBroker()
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("d.yaml").path
        try Self.mapping.write(toFile: file, atomically: true, encoding: .utf8)
        let data = dir.url.appendingPathComponent("data").path
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let logPath = data + "/experience.sqlite"

        // A real log of 5,000 rows, then 8 KiB of random bytes in its middle.
        do {
            let log = try ExperienceLog.open(path: logPath, gatewayID: "d1")
            let writer = try log.makeWriter()
            for k in 0..<5_000 {
                writer.submit(Transition(time: 1_790_000_000 + Double(k), tick: Int64(k), episode: 0, state: [Float(k % 7)],
                                         action: k % 2, actor: .incumbent, reward: -1, nextState: [Float((k + 1) % 7)], mode: .shadow))
            }
            try writer.close()
        }
        let size = try FileManager.default.attributesOfItem(atPath: logPath)[.size] as? Int ?? 0
        try #require(size > 100_000)
        var x: UInt64 = 3
        let junk = (0..<8192).map { _ -> UInt8 in
            x = x &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: x >> 33)
        }
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        try h.seek(toOffset: UInt64(size / 2))
        try h.write(contentsOf: Data(junk))
        try h.close()
        // Nothing holds the file now (the writer's close() let its connections go), so no WAL
        // shadows the scribbled pages.
        #expect(!FileManager.default.fileExists(atPath: logPath + "-wal"), "a WAL outlived the writer")
        let verdict = try ExperienceLog.quickCheck(path: logPath, timeLimit: 30)
        guard case .damaged = verdict else {
            Issue.record("the scribbled log is not seen as damaged (\(verdict)); the test proves nothing")
            return
        }

        let port = try FreePort.find()
        let stderrPath = dir.url.appendingPathComponent("gw.log").path
        let obs = try plantClient(broker, "edgeq/d1/status")
        defer { obs.stop() }
        let gw = try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url, "--data", data,
                                                     "--metrics-port", String(port)], stderrPath: stderrPath)
        defer { _ = gw.stop(grace: 10) }
        let status = waitFor(obs, topic: "edgeq/d1/status", contains: #""state":"online""#)
        let gwLog = { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
        try #require(status != nil, "the gateway did not come online; its log:\n\(gwLog())")
        #expect(status?.contains("recovered_from_corruption") == true, "status: \(status ?? "")")
        #expect(status?.contains("experience.sqlite.corrupt-") == true)

        // It keeps deciding and logging: 30 plant steps, each with the incumbent's command.
        let plant = try plantClient(broker, "plant/d/none")
        defer { plant.stop() }
        for k in 0..<30 {
            _ = try plant.publish("plant/d/state", "{\"step\":\(k),\"x\":\(Double(k % 9) - 4)}", qos: .atLeastOnce)
            _ = try plant.publish("plant/d/cmd", "{\"a\":\(k % 2)}", qos: .atLeastOnce)
            usleep(2_000)
        }
        usleep(500_000)
        let metrics = try ChildProcess.run("curl", ["-s", "http://127.0.0.1:\(port)/metrics"], timeout: 10)
        #expect(metrics.stdout.contains("edgeq_log_corruptions_total 1"), "metrics:\n\(metrics.stdout.prefix(400))")
        gw.signal(SIGTERM)
        #expect(gw.wait(timeout: 30) == 0, "edgeq run did not exit 0; its log:\n\(gwLog())")

        let text = gwLog()
        #expect(text.contains("critical") && text.contains("damaged"), "no critical line about the damage:\n\(text)")
        let files = try FileManager.default.contentsOfDirectory(atPath: data)
        let moved = files.filter { $0.hasPrefix("experience.sqlite.corrupt-") && !$0.hasSuffix("-wal") && !$0.hasSuffix("-shm") }
        #expect(moved.count == 1, "files in the data directory: \(files)")
        let fresh = try ExperienceLog.open(path: logPath, create: false)
        let count = try fresh.rowCount()
        #expect(count == 29, "the fresh log holds \(count) rows for 30 ticks")
        #expect(try fresh.integrityCheck() == "ok")
    }

    /// A read-only data directory: a read-only tmpfs mount as root (root ignores mode bits),
    /// mode 0555 otherwise. The message must say read-only and what to do.
    @Test func aReadOnlyDataDirectoryIsReportedAsReadOnly() throws {
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("d.yaml").path
        try Self.mapping.write(toFile: file, atomically: true, encoding: .utf8)
        let data = dir.url.appendingPathComponent("ro").path
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        var undo: () -> Void = {}
        if getuid() != 0 {
            chmod(data, 0o555)
            undo = { chmod(data, 0o755) }
        } else if (try? ChildProcess.run("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", data], timeout: 10).code) == 0 {
            undo = { _ = try? ChildProcess.run("umount", [data], timeout: 10) }
        } else {
            print("SKIPPED aReadOnlyDataDirectoryIsReportedAsReadOnly (CLI): root without the right to mount a read-only tmpfs")
            return
        }
        defer { undo() }
        let r = try ChildProcess.run(EdgeQBinary.path, ["run", "--config", file, "--broker", "mqtt://127.0.0.1:1", "--data", data], timeout: 30)
        #expect(r.code != 0)
        #expect(r.stderr.contains("read-only"), "stderr: \(r.stderr)")
        #expect(!r.stderr.contains("unable to open database file"), "stderr: \(r.stderr)")
    }
}
