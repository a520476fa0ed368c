import EdgeQLog
import EdgeQTestSupport
import Foundation
import Testing

/// Exit statuses of the real `edgeq` process: 64 and the usage for usage errors only;
/// sysexits statuses, a one-line message and no usage for failures while running.
@Suite struct ExitCodeTests {
    static func noUsage(_ r: (code: Int32, stdout: String, stderr: String)) -> Bool {
        !r.stderr.contains("Usage:") && !r.stdout.contains("Usage:")
    }

    @Test func aMissingMappingFileExits66WithoutUsage() throws {
        let r = try EdgeQBinary.run(["run", "--config", "/nonexistent/\(UUID().uuidString).yaml"])
        #expect(r.code == 66, "\(r.stderr)")
        #expect(Self.noUsage(r), "\(r.stderr)")
    }

    @Test func exportOfAMissingDataDirectoryExits66WithoutUsage() throws {
        let r = try EdgeQBinary.run(["export", "--data", "/nonexistent/\(UUID().uuidString)"])
        #expect(r.code == 66, "\(r.stderr)")
        #expect(Self.noUsage(r), "\(r.stderr)")
        #expect(r.stderr.hasPrefix("edgeq: no experience log at "), "\(r.stderr)")
    }

    @Test func trainOnAMissingDataDirectoryExits66WithoutUsage() throws {
        let dir = try TempDir()
        let map = dir.url.appendingPathComponent("p.yaml").path
        try processMapping(id: "p1", plant: "p", learning: "  hidden: [8]").write(toFile: map, atomically: true, encoding: .utf8)
        let r = try EdgeQBinary.run(["train", "--data", dir.url.appendingPathComponent("nothing").path, "--config", map])
        #expect(r.code == 66, "\(r.stderr)")
        #expect(Self.noUsage(r), "\(r.stderr)")
    }

    @Test func exportOfAFileThatIsNotADatabaseExits65() throws {
        let dir = try TempDir()
        try Data(repeating: 0x5A, count: 8192).write(to: dir.url.appendingPathComponent("experience.sqlite"))
        let r = try EdgeQBinary.run(["export", "--data", dir.url.path])
        #expect(r.code == 65, "\(r.stderr)")
        #expect(Self.noUsage(r), "\(r.stderr)")
    }

    @Test func trainWithTooFewRowsExits65() throws {
        let dir = try TempDir()
        let map = dir.url.appendingPathComponent("p.yaml").path
        try processMapping(id: "p1", plant: "p", learning: "  hidden: [8]").write(toFile: map, atomically: true, encoding: .utf8)
        try writeTestLog(dataDirectory: dir.url.path, rows: 20)
        let r = try EdgeQBinary.run(["train", "--data", dir.url.path, "--config", map])
        #expect(r.code == 65, "\(r.stderr)")
        #expect(r.stderr.contains("usable transitions"), "\(r.stderr)")
        #expect(Self.noUsage(r), "\(r.stderr)")
    }

    @Test func runWithAMissingSecretExits66AndAnUnusableDataDirectory74() throws {
        let dir = try TempDir()
        let map = dir.url.appendingPathComponent("p.yaml").path
        try processMapping(id: "p1", plant: "p", learning: "  hidden: [8]")
            .replacingOccurrences(of: "  mode: shadow\n", with: "  mode: shadow\n  password: {env: EDGEQ_TEST_NO_SUCH_VARIABLE}\n")
            .write(toFile: map, atomically: true, encoding: .utf8)
        let secret = try EdgeQBinary.run(["run", "--config", map, "--data", dir.url.appendingPathComponent("data").path,
                                          "--broker", "mqtt://127.0.0.1:1"])
        #expect(secret.code == 66, "\(secret.stderr)")
        #expect(secret.stderr.contains("EDGEQ_TEST_NO_SUCH_VARIABLE") && Self.noUsage(secret), "\(secret.stderr)")
        // A data directory that cannot be created (under /proc, even for root).
        let plain = dir.url.appendingPathComponent("q.yaml").path
        try processMapping(id: "p1", plant: "p", learning: "  hidden: [8]").write(toFile: plain, atomically: true, encoding: .utf8)
        let io = try EdgeQBinary.run(["run", "--config", plain, "--data", "/proc/edgeq-\(UUID().uuidString)", "--broker", "mqtt://127.0.0.1:1"])
        #expect(io.code == 74, "\(io.stderr)")
        #expect(Self.noUsage(io), "\(io.stderr)")
    }

    @Test func aBadMappingStillExits65() throws {
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("bad.yaml").path
        try "gateway: {id: t}\nrewards: 1\n".write(toFile: file, atomically: true, encoding: .utf8)
        let r = try EdgeQBinary.run(["check", file])
        #expect(r.code == 65, "\(r.stderr)")
    }

    @Test func anUnknownOptionStillExits64WithUsage() throws {
        let r = try EdgeQBinary.run(["export", "--data", "/tmp", "--no-such-option"])
        #expect(r.code == 64, "\(r.stderr)")
        #expect(r.stderr.contains("Usage:"), "\(r.stderr)")
    }

    /// A seed the status could not show exactly is a usage error that says the limit.
    @Test func runWithASeedBeyond2To53Exits64AndSaysTheLimit() throws {
        let r = try EdgeQBinary.run(["run", "--config", "/nonexistent.yaml", "--seed", "9007199254740992"])
        #expect(r.code == 64, "\(r.stderr)")
        #expect(r.stderr.contains("--seed must be at most 9007199254740991"), "\(r.stderr)")
    }
}

/// A real experience log for the one-signal test plant (`processMapping`): state x in
/// [-1, 1], the incumbent's action = sign of x, rewards 0 … −4 (max |r| = 4). Rows from
/// `modelFrom` on are logged as the model's (control mode).
func writeTestLog(dataDirectory: String, rows: Int, modelFrom: Int? = nil) throws {
    let log = try ExperienceLog.open(dataDirectory: dataDirectory, gatewayID: "p1")
    let writer = try log.makeWriter()
    for k in 0..<rows {
        let x = Float(sin(Double(k) * 0.7)), nx = Float(sin(Double(k + 1) * 0.7))
        let model = modelFrom.map { k >= $0 } ?? false
        _ = writer.submit(Transition(time: 1_800_000_000 + Double(k), tick: Int64(k), episode: 0, state: [x],
                                 action: x > 0 ? 1 : 0, actor: model ? .model : .incumbent, reward: -Double(k % 5),
                                 nextState: [nx], nextMask: 0b11, mode: model ? .control : .shadow))
    }
    try writer.flush()
    try writer.close()
}
