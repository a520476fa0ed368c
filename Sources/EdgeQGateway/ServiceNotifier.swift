#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// systemd's service notification protocol (`sd_notify(3)`) without libsystemd: newline-separated
/// `KEY=VALUE` lines in one datagram to the AF_UNIX socket named by `NOTIFY_SOCKET`.
///
/// `edgeq run` under a `Type=notify` unit (deploy/edgeq@.service) sends `READY=1` once the
/// gateway is connected and deciding, `WATCHDOG=1` every half `WATCHDOG_USEC` while the decision
/// thread is alive (Gateway.swift, `startServiceWatchdog`), and `STOPPING=1` when it shuts down.
/// Sending never blocks (`MSG_DONTWAIT`) and runs on no decision: a full or missing socket costs
/// one failed system call, counted by the caller if it cares.
public final class ServiceNotifier: Sendable {
    /// The socket named by `NOTIFY_SOCKET`, as given (`/run/…` or `@abstract`).
    public let socketName: String
    /// Half of `WATCHDOG_USEC`, in seconds: how often `WATCHDOG=1` is due; nil when systemd
    /// asked for no watchdog (or asked another process: `WATCHDOG_PID`).
    public let watchdogInterval: Double?
    private let fd: Int32
    /// The bytes of a `sockaddr_un` and the length to pass to `sendto` (an abstract name has no
    /// terminating NUL and its length counts exactly its bytes).
    private let address: [UInt8]
    private let addressLength: socklen_t

    /// Errors of the notification socket; each says what to check.
    public struct Error: Swift.Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// The notifier systemd asked for through the environment, or nil when `NOTIFY_SOCKET` is
    /// unset or empty (not started by systemd, or not as `Type=notify`).
    ///
    /// - Throws: `ServiceNotifier.Error` when `NOTIFY_SOCKET` is set but unusable (a name
    ///   longer than a socket address holds, a relative path, or no socket could be made).
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ServiceNotifier? {
        guard let name = environment["NOTIFY_SOCKET"], !name.isEmpty else { return nil }
        var interval: Double?
        if let usec = environment["WATCHDOG_USEC"].flatMap({ UInt64($0) }), usec > 0 {
            // WATCHDOG_PID, when set, names the process the watchdog is meant for (sd_watchdog_enabled(3)).
            let pid = environment["WATCHDOG_PID"].flatMap { Int32($0) }
            if pid == nil || pid == getpid() { interval = Double(usec) / 2e6 }
        }
        return try ServiceNotifier(socket: name, watchdogInterval: interval)
    }

    /// A notifier for the socket `name`: a filesystem path, or `@name` for an abstract socket.
    ///
    /// - Parameter watchdogInterval: how often `WATCHDOG=1` is due (nil: no watchdog).
    /// - Throws: `ServiceNotifier.Error` for a name that is neither an absolute path nor
    ///   `@…`, a name too long for `sockaddr_un`, or a socket that cannot be created.
    public init(socket name: String, watchdogInterval: Double? = nil) throws {
        socketName = name
        self.watchdogInterval = watchdogInterval
        var path = Array(name.utf8)
        let abstract = path.first == UInt8(ascii: "@")
        guard abstract || path.first == UInt8(ascii: "/") else {
            throw Error(description: "NOTIFY_SOCKET=\(name): expected an absolute path or an @abstract name; start edgeq from systemd or unset NOTIFY_SOCKET")
        }
        if abstract { path[0] = 0 }
        var addr = sockaddr_un()
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        // A path needs room for its terminating NUL; an abstract name does not.
        guard path.count + (abstract ? 0 : 1) <= capacity else {
            throw Error(description: "NOTIFY_SOCKET=\(name): longer than a socket address holds (\(capacity - 1) bytes)")
        }
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.enumerated() { raw[i] = b }
        }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path) ?? 2
        addressLength = socklen_t(pathOffset + path.count + (abstract ? 0 : 1))
        address = withUnsafeBytes(of: &addr) { Array($0) }
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw Error(description: "NOTIFY_SOCKET=\(name): cannot create a datagram socket: \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(fd) }

    /// Sends one notification (`READY=1`, `WATCHDOG=1`, `STATUS=…`; several lines allowed).
    ///
    /// - Returns: false when the datagram was not sent (no listener, socket full): systemd then
    ///   sees nothing, as if the process had not said it (the watchdog tick after retries).
    @discardableResult
    public func send(_ state: String) -> Bool {
        let bytes = Array(state.utf8)
        let sent = address.withUnsafeBytes { a in
            bytes.withUnsafeBytes { b in
                sendto(fd, b.baseAddress, b.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT),
                       a.baseAddress?.assumingMemoryBound(to: sockaddr.self), addressLength)
            }
        }
        return sent == bytes.count
    }
}
