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
    private var starts = 0

    /// Errors from starting the broker.
    public struct Error: Swift.Error, CustomStringConvertible {
        public let description: String
    }

    /// Writes the configuration and starts the broker; returns when it accepts connections.
    ///
    /// - Parameters:
    ///   - auth: anonymous (default) or a password file.
    ///   - tls: TLS on the listener (see `TestCertificates`); nil for plain TCP.
    ///   - extraConfig: more lines for mosquitto.conf.
    /// - Throws: `MosquittoBroker.Error` when mosquitto is missing (run scripts/setup.sh)
    ///   or does not accept connections within 10 s (its log is quoted).
    public init(auth: Auth = .anonymous, tls: TLS? = nil, extraConfig: [String] = []) throws {
        self.tls = tls
        port = try FreePort.find()
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("edgeq-broker-\(port)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var lines = [
            "listener \(port) 127.0.0.1",
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
                let r = try ChildProcess.run("mosquitto_passwd", ["-b", file, user, password], timeout: 30)
                guard r.code == 0 else {
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
        let config = directory.appendingPathComponent("mosquitto.conf")
        try (lines.joined(separator: "\n") + "\n").write(to: config, atomically: true, encoding: .utf8)
        try start()
    }

    /// Starts a broker from a configuration file of ours (e.g. deploy/mosquitto-demo.conf)
    /// with one line added: a loopback listener on a free port, before the file's lines.
    ///
    /// - Parameter replacing: text replaced in the file before it is used (e.g. the file's own
    ///   listeners, certificate and password file paths); each must occur in the file.
    /// - Throws: `MosquittoBroker.Error` when the file cannot be read, a text to replace is not
    ///   in it, or the broker does not accept connections within 10 s.
    public init(configFile: String, replacing: [(String, String)] = []) throws {
        tls = nil
        port = try FreePort.find()
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("edgeq-broker-\(port)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
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
        let text = "listener \(port) 127.0.0.1\n" + edited
        try text.write(to: directory.appendingPathComponent("mosquitto.conf"), atomically: true, encoding: .utf8)
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Starts the broker (again) on the same port; returns when it accepts connections.
    public func start() throws {
        lock.lock()
        defer { lock.unlock() }
        if let child, child.isRunning { return }
        starts += 1
        let config = directory.appendingPathComponent("mosquitto.conf").path
        let log = directory.appendingPathComponent("mosquitto-\(starts).log").path
        let c = try ChildProcess("mosquitto", ["-c", config], stderrPath: log)
        child = c
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if FreePort.accepts(port) { return }
            if !c.isRunning { break }
            usleep(10_000)
        }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        c.signal(SIGKILL)
        throw Error(description: "mosquitto did not accept connections on port \(port) within 10 s; its log:\n\(text)")
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
