#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CEdgeQProcess
import Foundation

/// A child process started with `posix_spawn`, with an empty signal mask, default signal
/// dispositions and no file descriptor of ours beyond standard input, output and error.
///
/// Why not `Foundation.Process`: a process it starts from a Swift Testing test inherits a
/// blocked signal mask and then ignores SIGTERM forever (TOOLCHAIN-NOTES.md). Every wait
/// here is bounded. The child is killed with SIGKILL when this object is released while
/// it still runs, so no test or benchmark leaves a process behind.
public final class ChildProcess: @unchecked Sendable {
    // @unchecked Sendable: `pid` is immutable; the mutable exit state is guarded by `lock`.

    /// The child's process id.
    public let pid: pid_t
    /// The command line, for messages.
    public let commandLine: [String]

    private let lock = NSLock()
    private var exitStatus: Int32?

    /// Errors from starting or waiting for a child process.
    public struct Error: Swift.Error, CustomStringConvertible {
        public let description: String
    }

    /// Starts `executable` with `arguments`.
    ///
    /// - Parameters:
    ///   - executable: a path, or a bare name looked up on `PATH` (and in /usr/sbin, /sbin,
    ///     where Debian puts mosquitto, which is not on a non-root `PATH`).
    ///   - stdoutPath: a file that receives standard output (created or truncated); nil
    ///     inherits ours. `stderrPath` likewise. The same path for both: one file that gets
    ///     both streams in the order written (a child's stray output — a library's warning on
    ///     standard output — stays in its log rather than in ours).
    ///   - environment: extra variables on top of ours.
    /// - Throws: `ChildProcess.Error` when the executable is not found or cannot start.
    public init(
        _ executable: String,
        _ arguments: [String] = [],
        stdoutPath: String? = nil,
        stderrPath: String? = nil,
        environment: [String: String] = [:],
        workingDirectory: String? = nil
    ) throws {
        guard let path = ChildProcess.resolve(executable) else {
            throw Error(description: "\(executable): not found on PATH, /usr/sbin or /sbin (run scripts/setup.sh)")
        }
        commandLine = [path] + arguments
        // posix_spawn_file_actions_addchdir_np is not visible to Swift on this glibc:
        // a working directory is set by `env -C DIR` (coreutils) in front of the command.
        var spawnArgs = commandLine
        var spawnPath = path
        if let workingDirectory {
            spawnPath = "/usr/bin/env"
            spawnArgs = [spawnPath, "-C", workingDirectory] + commandLine
        }

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if let stdoutPath, stdoutPath != stderrPath {
            posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        }
        if let stderrPath {
            posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            if stdoutPath == stderrPath { posix_spawn_file_actions_adddup2(&actions, 2, 1) }
        }
        // Nothing but 0, 1 and 2 goes to the child: descriptors opened here without O_CLOEXEC
        // (Foundation's and SQLite's files, sockets) would otherwise stay open in a broker or
        // gateway that outlives this process's use of them.
        let closing = edgeq_spawn_close_from(&actions, 3)
        guard closing == 0 else {
            throw Error(description: "\(path): cannot start: closing inherited descriptors: \(String(cString: strerror(closing)))")
        }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let envStrings = env.map { "\($0.key)=\($0.value)" }

        var child: pid_t = 0
        let rc = ChildProcess.withCStrings(spawnArgs) { argv in
            ChildProcess.withCStrings(envStrings) { envp in
                posix_spawn(&child, spawnPath, &actions, &attr, argv, envp)
            }
        }
        guard rc == 0 else {
            throw Error(description: "\(path): cannot start: \(String(cString: strerror(rc)))")
        }
        pid = child
        ChildProcess.live.withLock { _ = $0.insert(child) }
        ChildProcess.stopAtExit
    }

    /// Registered once, with the first child: when this process exits normally (`exit`, the
    /// end of `main`, the end of a test run), every child still running is stopped. Without
    /// it a child nobody released — a broker held by a test that leaked its harness — outlives
    /// the process and keeps its inherited descriptors open, and `swift test`, which waits for
    /// the end of its test process's output, hangs without a word.
    private static let stopAtExit: Void = {
        atexit { ChildProcess.terminateAll(grace: 1) }
    }()

    /// The children started here that have not been reaped yet (for `terminateAll`).
    private static let live = LockedPIDs()

    /// Stops every child this process started that still runs: SIGTERM, then SIGKILL after
    /// `grace` seconds. For a command that is told to stop (SIGINT, SIGTERM) while its
    /// children run: `deinit` cannot help then, the process exits without releasing them, and
    /// a benchmark killed mid-run used to leave its gateway, simulator and broker running.
    public static func terminateAll(grace: Double = 3) {
        let pids = live.withLock { Array($0) }
        guard !pids.isEmpty else { return }
        for p in pids { kill(p, SIGTERM) }
        let deadline = Date().addingTimeInterval(grace)
        var left = pids
        while !left.isEmpty, Date() < deadline {
            // kill(pid, 0) fails once the child is gone; an unreaped zombie still counts, so
            // reap what exited (these are our own children).
            left = left.filter { p in
                var status: Int32 = 0
                return waitpid(p, &status, WNOHANG) == 0
            }
            if !left.isEmpty { usleep(10_000) }
        }
        for p in left { kill(p, SIGKILL) }
        live.withLock { $0.removeAll() }
    }

    deinit {
        if isRunning {
            kill(pid, SIGKILL)
            _ = wait(timeout: 5)
        }
    }

    /// True until the child has exited and been reaped.
    public var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        if exitStatus != nil { return false }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid {
            exitStatus = status
            ChildProcess.live.withLock { _ = $0.remove(pid) }
            return false
        }
        return r == 0
    }

    /// Sends `signal` to the child (SIGTERM by default).
    public func signal(_ signal: Int32 = SIGTERM) {
        lock.lock()
        let done = exitStatus != nil
        lock.unlock()
        if !done { kill(pid, signal) }
    }

    /// Waits at most `timeout` seconds for the child to exit.
    ///
    /// - Returns: the exit code (128 + signal number when a signal ended it), or nil when
    ///   the child still runs after `timeout`.
    @discardableResult
    public func wait(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if !isRunning { return exitCode }
            usleep(2_000)
        } while Date() < deadline
        return isRunning ? nil : exitCode
    }

    /// Stops the child: SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code.
    @discardableResult
    public func stop(grace: Double = 5) -> Int32? {
        guard isRunning else { return exitCode }
        signal(SIGTERM)
        if let code = wait(timeout: grace) { return code }
        signal(SIGKILL)
        return wait(timeout: 5)
    }

    /// The exit code once the child has exited: its status, or 128 + signal number.
    public var exitCode: Int32? {
        lock.lock()
        defer { lock.unlock() }
        guard let s = exitStatus else { return nil }
        // WIFEXITED / WEXITSTATUS are macros Swift does not import.
        let sig = s & 0x7f
        return sig == 0 ? (s >> 8) & 0xff : 128 + sig
    }

    /// Runs a command to completion and returns its exit code and standard output.
    ///
    /// - Throws: `ChildProcess.Error` when it cannot start or runs longer than `timeout`
    ///   seconds (it is then killed).
    public static func run(
        _ executable: String, _ arguments: [String], timeout: Double = 600,
        environment: [String: String] = [:], workingDirectory: String? = nil
    ) throws -> (code: Int32, stdout: String, stderr: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("out").path
        let err = dir.appendingPathComponent("err").path
        let child = try ChildProcess(executable, arguments, stdoutPath: out, stderrPath: err,
                                     environment: environment, workingDirectory: workingDirectory)
        guard let code = child.wait(timeout: timeout) else {
            child.signal(SIGKILL)
            child.wait(timeout: 5)
            throw Error(description: "\(executable) \(arguments.joined(separator: " ")): still running after \(timeout) s, killed")
        }
        let stdout = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        return (code, stdout, stderr)
    }

    /// Finds an executable: a path as given, else on PATH, /usr/sbin, /sbin.
    public static func resolve(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
            let candidate = dir + "/" + name
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    private static func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for p in pointers { free(p) } }
        return body(pointers)
    }
}

/// A set of process ids behind a lock (the registry of live children).
final class LockedPIDs: @unchecked Sendable {
    // @unchecked Sendable: `pids` is only read or written inside `lock`.
    private let lock = NSLock()
    private var pids = Set<pid_t>()

    func withLock<T>(_ body: (inout Set<pid_t>) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(&pids)
    }
}
