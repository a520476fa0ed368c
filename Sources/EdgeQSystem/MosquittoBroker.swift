import EdgeQCore
import Foundation

/// A real `mosquitto` broker on a free loopback port, with a generated configuration,
/// for tests, benchmarks and the demo. Always stopped: `stop()` or release.
///
/// The configuration follows TOOLCHAIN-NOTES.md: loopback listener, no persistence,
/// log to stderr (into `logPath`), and `set_tcp_nodelay true` (without it QoS 1 round
/// trips take ~44 ms).
public final class MosquittoBroker: @unchecked Sendable {
    // @unchecked Sendable: `port`, `directory` and the paths are immutable; `child` is
    // guarded by `lock`.

    /// How clients authenticate.
    public enum Auth: Sendable {
        /// Anonymous clients allowed.
        case anonymous
        /// Only these users (a password file made with `mosquitto_passwd`).
        case passwords([String: String])
    }

    /// TLS on the listener, with certificates made by `TestCertificates`.
    public struct TLS: Sendable {
        /// The certificates (the broker uses the CA, the server certificate and key).
        public var certificates: TestCertificates
        /// Refuse clients without a certificate signed by the CA.
        public var requireClientCertificate: Bool

        /// TLS with `certificates`; client certificates optional unless required.
        public init(certificates: TestCertificates, requireClientCertificate: Bool = false) {
            self.certificates = certificates
            self.requireClientCertificate = requireClientCertificate
        }
    }

    /// The port the broker listens on (127.0.0.1).
    public let port: UInt16
    /// A scratch folder holding the configuration and the broker's log.
    public let directory: URL
    /// The broker's log (its stderr) since its latest start (`log()` has every start's).
    public var logPath: String { directory.appendingPathComponent("mosquitto-\(lock.withLock { max(starts, 1) }).log").path }
    /// `mqtt://127.0.0.1:PORT`, or `mqtts://…` with TLS.
    public var url: String { "\(tls == nil ? "mqtt" : "mqtts")://127.0.0.1:\(port)" }
    /// The TLS settings, when the listener uses TLS.
    public let tls: TLS?

    private let lock = NSLock()
    private var child: ChildProcess?

    /// The broker process's id while it runs (tests look at its descriptors).
    var pid: pid_t? { lock.withLock { child?.isRunning == true ? child?.pid : nil } }
    private var starts = 0

    /// Errors from starting the broker: what happened, and the broker's log when it ran.
    public struct Error: Swift.Error, CustomStringConvertible {
        /// What happened and what to do.
        public let description: String
        /// The broker's exit status when it exited before accepting connections.
        public let exitStatus: Int32?
        /// The broker exited because its port was in use ("Address already in use" in its log).
        public let portInUse: Bool

        init(description: String, exitStatus: Int32? = nil, portInUse: Bool = false) {
            self.description = description
            self.exitStatus = exitStatus
            self.portInUse = portInUse
        }
    }

    /// Writes the configuration and starts the broker; returns when it accepts connections.
    ///
    /// - Parameters:
    ///   - auth: anonymous (default) or a password file.
    ///   - tls: TLS on the listener (see `TestCertificates`); nil for plain TCP.
    ///   - extraConfig: more lines for mosquitto.conf.
    ///   - port: a port of the caller's on 127.0.0.1; nil (default): a free one (`FreePort`),
    ///     chosen again, up to `portAttempts` times, when another process takes it between the
    ///     choice and the broker's bind.
    /// - Throws: `MosquittoBroker.Error` when mosquitto is missing (run scripts/setup.sh),
    ///   exits before accepting connections (its exit status and log are quoted, and whether
    ///   the port was in use), or does not accept connections within 10 s.
    public convenience init(auth: Auth = .anonymous, tls: TLS? = nil, extraConfig: [String] = [], port: UInt16? = nil) throws {
        let choose: () throws -> UInt16
        if let port { choose = { port } } else { choose = FreePort.find }
        try self.init(auth: auth, tls: tls, extraConfig: extraConfig, choosingPort: choose, attempts: port == nil ? Self.portAttempts : 1)
    }

    /// `init(auth:tls:extraConfig:port:)` with the port chosen by `choosingPort` (tests give it a
    /// port they hold, then free ones) and at most `attempts` ports tried.
    init(auth: Auth, tls: TLS?, extraConfig: [String], choosingPort: () throws -> UInt16, attempts: Int) throws {
        self.tls = tls
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("edgeq-broker-\(UUID().uuidString.prefix(8))")
        self.directory = directory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var lines = [
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
        ]
        switch auth {
        case .anonymous:
            lines.append("allow_anonymous true")
        case .passwords(let users):
            let file = directory.appendingPathComponent("passwd").path
            _ = FileManager.default.createFile(atPath: file, contents: Data())
            for (user, password) in users {
                let r: (code: Int32, stdout: String, stderr: String)
                do {
                    r = try ChildProcess.run("mosquitto_passwd", ["-b", file, user, password], timeout: 30)
                } catch {
                    try? FileManager.default.removeItem(at: directory)
                    throw error
                }
                guard r.code == 0 else {
                    try? FileManager.default.removeItem(at: directory)
                    throw Error(description: "mosquitto_passwd failed (\(r.code)): \(r.stderr)")
                }
            }
            lines.append("allow_anonymous false")
            lines.append("password_file \(file)")
        }
        if let tls {
            lines += [
                "cafile \(tls.certificates.caFile)",
                "certfile \(tls.certificates.serverCertificateFile)",
                "keyfile \(tls.certificates.serverKeyFile)",
                "require_certificate \(tls.requireClientCertificate)",
            ]
        }
        lines += extraConfig
        let body = lines.joined(separator: "\n") + "\n"
        do {
            let (p, c) = try Self.launchOnFreePort(directory: directory, body: body, choosingPort: choosingPort, attempts: attempts)
            port = p
            child = c
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        starts = 1
    }

    /// Starts a broker from a configuration file of ours (e.g. deploy/mosquitto-demo.conf)
    /// with one line added: a loopback listener on a free port, before the file's lines.
    ///
    /// - Parameter replacing: text replaced in the file before it is used (e.g. the file's own
    ///   listeners, certificate and password file paths); each must occur in the file.
    /// - Throws: `MosquittoBroker.Error` when the file cannot be read, a text to replace is not
    ///   in it, or the broker exits before accepting connections or does not accept them within
    ///   10 s (a free port taken by another process before the bind is chosen again, as above).
    public init(configFile: String, replacing: [(String, String)] = []) throws {
        tls = nil
        guard let template = try? String(contentsOfFile: configFile, encoding: .utf8) else {
            throw Error(description: "cannot read the broker configuration \(configFile)")
        }
        var edited = template
        for (text, replacement) in replacing {
            guard edited.contains(text) else {
                throw Error(description: "\(configFile) does not contain '\(text)' (the text to replace)")
            }
            edited = edited.replacingOccurrences(of: text, with: replacement)
        }
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("edgeq-broker-\(UUID().uuidString.prefix(8))")
        self.directory = directory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        do {
            let (p, c) = try Self.launchOnFreePort(directory: directory, body: edited, choosingPort: FreePort.find,
                                                   attempts: Self.portAttempts)
            port = p
            child = c
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        starts = 1
    }

    /// How many free ports a broker tries when each is taken before its bind (a race with
    /// other processes binding or connecting at the same time; seen once in the test suite).
    public static let portAttempts = 5

    /// Writes `listener PORT 127.0.0.1` + `body` as mosquitto.conf and starts the broker, on a
    /// port from `choosingPort`; again on another one when the broker exits because its port is
    /// in use, at most `attempts` ports in all. The log of this first start is mosquitto-1.log.
    private static func launchOnFreePort(directory: URL, body: String, choosingPort: () throws -> UInt16,
                                         attempts: Int) throws -> (UInt16, ChildProcess) {
        var taken: [UInt16] = []
        while true {
            let port = try choosingPort()
            try ("listener \(port) 127.0.0.1\n" + body).write(to: directory.appendingPathComponent("mosquitto.conf"),
                                                              atomically: true, encoding: .utf8)
            do {
                return (port, try launch(directory: directory, start: 1, port: port))
            } catch let e as Error where e.portInUse && taken.count + 1 < attempts {
                taken.append(port)
            } catch let e as Error where e.portInUse && !taken.isEmpty {
                throw Error(description: "mosquitto found each of \(taken.count + 1) free ports taken by another process before it could bind it (\((taken + [port]).map(String.init).joined(separator: ", "))); the last attempt: \(e.description)",
                            exitStatus: e.exitStatus, portInUse: true)
            }
        }
    }

    /// Starts mosquitto with `directory`/mosquitto.conf, its stderr in mosquitto-`start`.log,
    /// and returns it once it accepts connections on 127.0.0.1:`port` itself (not another
    /// process that holds the port).
    ///
    /// - Throws: `Error` when it exits first (with its exit status, how long it ran, its log's
    ///   tail, and `portInUse` when its log says the address was in use), or when it does not
    ///   accept connections within 10 s (it is then killed).
    private static func launch(directory: URL, start: Int, port: UInt16) throws -> ChildProcess {
        let config = directory.appendingPathComponent("mosquitto.conf").path
        let log = directory.appendingPathComponent("mosquitto-\(start).log").path
        // Standard output to /dev/null (mosquitto logs to stderr, into `log`): a broker never
        // holds its starter's output open, so a test process cannot leave `swift test`
        // waiting on a broker it forgot to stop.
        let c = try ChildProcess("mosquitto", ["-c", config], stdoutPath: "/dev/null", stderrPath: log)
        let started = Date()
        let limit = 10.0
        while Date().timeIntervalSince(started) < limit {
            if !c.isRunning { break }
            // Someone accepts on the port: it must be this broker (another process may hold the
            // port, and then this broker fails its bind and exits, maybe a moment later).
            if FreePort.accepts(port) && listens(pid: c.pid, port: port) { return c }
            usleep(10_000)
        }
        let elapsed = String(format: "%.2f", Date().timeIntervalSince(started))
        if !c.isRunning || c.wait(timeout: 0.05) != nil {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            let inUse = text.contains("Address already in use")
            let status = c.exitCode ?? -1
            throw Error(description: "mosquitto exited with status \(status) after \(elapsed) s, before accepting connections on 127.0.0.1:\(port)"
                        + (inUse ? " (the port is in use by another process)" : "") + "; its log:\n\(tail(text))",
                        exitStatus: status, portInUse: inUse)
        }
        c.signal(SIGKILL)
        c.wait(timeout: 5)
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        throw Error(description: "mosquitto ran for \(elapsed) s without accepting connections on 127.0.0.1:\(port) (killed); its log:\n\(tail(text))")
    }

    /// The last 20 lines of a log.
    private static func tail(_ text: String) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        return (lines.count > 20 ? ["…"] + Array(lines.suffix(20)) : lines).joined(separator: "\n")
    }

    /// Whether process `pid` has a socket of its own listening on 127.0.0.1:`port`: the socket's
    /// inode in /proc/net/tcp among the process's descriptors (/proc/PID/fd) and not among ours
    /// (/proc/self/fd: a listening socket of this process shared with the broker is not the
    /// broker's; `ChildProcess` no longer passes ours on, so this only guards a broker started
    /// some other way). True where /proc
    /// cannot tell (no /proc): then accepting connections is taken as the broker's.
    static func listens(pid: pid_t, port: UInt16) -> Bool {
        // Whole: Foundation reads a /proc file only up to 4 KB, about 27 sockets of this table.
        guard let table = ProcFile.read("/proc/net/tcp") else { return true }
        // "sl local_address rem_address st … inode": 127.0.0.1 as the kernel prints it (a
        // little-endian word in hex), the port in hex; st 0A is LISTEN.
        let local = "0100007F:" + String(format: "%04X", UInt32(port))
        var inodes = Set<Substring>()
        for line in table.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ")
            if f.count > 9, f[1] == local, f[3] == "0A" { inodes.insert(f[9]) }
        }
        guard !inodes.isEmpty else { return false }
        guard let theirs = sockets(of: "\(pid)") else { return true }
        let ours = sockets(of: "self") ?? []
        return !inodes.intersection(theirs).subtracting(ours).isEmpty
    }

    /// The inodes of the sockets process `pid` ("self" for this one) has open; nil when its
    /// descriptors cannot be listed.
    private static func sockets(of pid: String) -> Set<Substring>? {
        guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return nil }
        var out = Set<Substring>()
        for fd in fds {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                  target.hasPrefix("socket:[") else { continue }
            out.insert(Substring(target.dropFirst("socket:[".count).dropLast()))
        }
        return out
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Starts the broker again on the same port (its clients know it); returns when it accepts
    /// connections.
    ///
    /// - Throws: `MosquittoBroker.Error` when it exits first (its exit status and log; when
    ///   another process took the port meanwhile, `portInUse`) or does not accept connections
    ///   within 10 s.
    public func start() throws {
        lock.lock()
        defer { lock.unlock() }
        if let child, child.isRunning { return }
        starts += 1
        child = try Self.launch(directory: directory, start: starts, port: port)
    }

    /// Kills the broker with SIGKILL (a crash, for fault tests).
    public func kill9() {
        lock.lock()
        defer { lock.unlock() }
        child?.signal(SIGKILL)
        child?.wait(timeout: 5)
        child = nil
    }

    /// Stops the broker with SIGTERM (then SIGKILL after 5 s).
    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        child?.stop(grace: 5)
        child = nil
    }

    /// The broker's log of every start so far, for failure messages.
    public func log() -> String {
        (1...max(starts, 1)).compactMap {
            try? String(contentsOfFile: directory.appendingPathComponent("mosquitto-\($0).log").path, encoding: .utf8)
        }.joined(separator: "\n")
    }
}
