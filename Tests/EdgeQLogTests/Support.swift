import EdgeQLog
import EdgeQTestSupport
import Foundation

/// A fresh folder per test (tests run in parallel), removed when released.
final class TempDir {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-log-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    var logPath: String { path + "/experience.sqlite" }
}

/// A transition whose every field depends on `k`, with optional fields present or absent.
func sample(_ k: Int, width: Int = 4, time: Double? = nil) -> Transition {
    let s = (0..<width).map { Float(k) * 0.5 - Float($0) * 0.25 }
    let actors = Actor.allCases
    return Transition(
        time: time ?? (1_790_000_000 + Double(k) * 0.1),
        tick: Int64(k), episode: Int64(k / 100), state: s,
        action: k % 5 == 4 ? nil : k % 3,
        actor: actors[k % actors.count],
        reward: -Double(k) / 7,
        nextState: s.map { $0 + 1 },
        nextMask: k % 2 == 0 ? nil : (k % 3 == 0 ? UInt64(1) << 63 | 0b101 : 0b011),
        terminal: k % 11 == 10, truncated: k % 13 == 12,
        mode: k % 4 == 0 ? .control : .shadow,
        modelVersion: k % 3 == 0 ? nil : "v\(k % 7),\"q\"",
        qValues: k % 2 == 0 ? [Float(k), -Float(k) / 3, 1e-7] : nil,
        modelAction: k % 2 == 0 ? k % 3 : nil,
        flags: TransitionFlags(rawValue: Int64(k % 4))
    )
}

/// Runs SQL on a file through Python's sqlite3 (another program, like a user's script).
func sqlScript(_ path: String, _ sql: String) throws {
    let r = try ChildProcess.run("python3", ["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()", path, sql], timeout: 60)
    guard r.code == 0 else { throw ScriptFailed(message: r.stderr) }
}

/// A helper script failed (its standard error).
struct ScriptFailed: Error { let message: String }
