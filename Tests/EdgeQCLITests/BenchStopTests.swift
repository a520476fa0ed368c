import EdgeQSystem
import EdgeQTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A benchmark stopped by an operator takes the processes it started down with it.
@Suite struct BenchStopTests {
    /// The children of `pid` (every thread's list in /proc).
    static func children(of pid: pid_t) -> [pid_t] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        var out: [pid_t] = []
        for t in tasks {
            let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(t)/children", encoding: .utf8)) ?? ""
            out += text.split(separator: " ").compactMap { pid_t(String($0)) }
        }
        return out
    }

    /// Whether `pid` is still a running process (a zombie nobody reaped counts as gone).
    static func alive(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).prefix(1)
        return state != "Z" && state != "X"
    }

    @Test func aGeneralizeBenchStoppedWithSIGTERMLeavesNoGatewaySimulatorOrBroker() throws {
        let dir = try TempDir()
        let bench = try ChildProcess(EdgeQBinary.path, ["bench", "generalize", "--plants", "cartpole", "--seeds", "1", "--json"],
                                     stdoutPath: dir.url.path + "/out", stderrPath: dir.url.path + "/err",
                                     workingDirectory: PackageRoot.url.path)  // it reads topics/
        // Wait for the broker and the gateway (the simulator runs in the bench itself), at most 60 s.
        var kids: [pid_t] = []
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, bench.isRunning {
            kids = Self.children(of: bench.pid)
            if kids.count >= 2 { break }
            usleep(100_000)
        }
        let err = (try? String(contentsOfFile: dir.url.path + "/err", encoding: .utf8)) ?? ""
        #expect(kids.count >= 2, "the bench started \(kids.count) children; its stderr: \(err.suffix(2000))")
        bench.signal(SIGTERM)
        let code = bench.wait(timeout: 30)
        #expect(code == 128 + SIGTERM)
        // terminateAll waits for them (3 s grace, then SIGKILL) before the bench exits.
        let left = kids.filter(Self.alive)
        #expect(left.isEmpty, "still running after the bench stopped: \(left)")
        for p in left { kill(p, SIGKILL) }
    }
}
