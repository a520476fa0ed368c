#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// A minimal HTTP/1.0 server for Prometheus scrapes: `GET /metrics` (text exposition) and
/// `GET /healthz` (`HEAD` too; a query string is ignored). One thread multiplexing the
/// listening socket and its clients with `poll`, one request per connection; a client has
/// 2 s to send its request head (8 KiB at most), so slow or silent clients delay nobody.
///
/// Why not an HTTP framework: the gateway serves one tiny page a few times a minute, and
/// SwiftNIO-based servers add minutes to every clean build on two cores (CI builds from
/// scratch each run). This server is ~150 lines with no dependencies.
public final class MetricsServer: Sendable {
    /// Errors from starting the server.
    public struct Error: Swift.Error, CustomStringConvertible {
        public let description: String
    }

    /// The port actually bound (useful when 0 was asked for).
    public let port: UInt16
    private let listenFD: Int32
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    /// Binds `host:port` (port 0: any free port) and starts serving `render()`'s text.
    ///
    /// - Throws: `MetricsServer.Error` when the address cannot be bound (in use, or not an
    ///   IPv4 address of this machine). Choose another `metrics.port` in the mapping file.
    public init(host: String = "127.0.0.1", port: UInt16, render: @escaping @Sendable () -> String) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Error(description: "metrics: socket(): \(String(cString: strerror(errno)))") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
            close(fd)
            throw Error(description: "metrics: '\(host)' is not an IPv4 address")
        }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let msg = String(cString: strerror(errno))
            close(fd)
            throw Error(description: "metrics: cannot listen on \(host):\(port): \(msg) (choose another metrics port)")
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        self.port = UInt16(bigEndian: addr.sin_port)
        listenFD = fd
        let t = Thread { [self] in
            serve(render)
            finished.signal()
        }
        t.name = "edgeq-metrics"
        t.start()
    }

    /// A connection whose request head is still arriving.
    private struct Pending {
        var fd: Int32
        var bytes: [UInt8] = []
        var deadline: UInt64
    }

    /// Longest time a client may take to send its request head; then it is closed unanswered.
    static let headDeadlineNanoseconds: UInt64 = 2_000_000_000
    /// Longest request head read (bytes); longer heads are answered 431 and closed.
    static let maxHeadBytes = 8192
    /// Connections waiting for their head at once; beyond this the oldest is closed.
    static let maxPending = 16

    /// One thread multiplexes the listening socket and up to `maxPending` clients with `poll`,
    /// so a client that connects and dribbles (or never speaks) delays nobody: each has
    /// its own deadline, and a scrape is answered as soon as its own head is in.
    private func serve(_ render: @Sendable () -> String) {
        var pending: [Pending] = []
        var fds: [pollfd] = []
        while !stopping.load(ordering: .acquiring) {
            fds.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0))
            for p in pending { fds.append(pollfd(fd: p.fd, events: Int16(POLLIN), revents: 0)) }
            let ready = poll(&fds, nfds_t(fds.count), 200)
            let now = DispatchTime.now().uptimeNanoseconds
            if ready > 0 {
                // Clients first (indices shift as they finish, so walk from the end).
                for i in stride(from: pending.count - 1, through: 0, by: -1) where fds[i + 1].revents != 0 {
                    if readHead(&pending[i]) {
                        respond(pending[i].fd, head: pending[i].bytes, render)
                        close(pending[i].fd)
                        pending.remove(at: i)
                    }
                }
                if fds[0].revents & Int16(POLLIN) != 0 {
                    let client = accept(listenFD, nil, nil)
                    if client >= 0 {
                        if pending.count >= Self.maxPending {
                            close(pending[0].fd)
                            pending.removeFirst()
                        }
                        pending.append(Pending(fd: client, deadline: now + Self.headDeadlineNanoseconds))
                    }
                }
            }
            // Clients past their deadline are closed without an answer.
            pending.removeAll { p in
                guard now >= p.deadline else { return false }
                close(p.fd)
                return true
            }
        }
        for p in pending { close(p.fd) }
    }

    /// Reads what is there; true when the connection is done reading (head complete, too
    /// long, closed by the client or failed) and should be answered and closed.
    private func readHead(_ p: inout Pending) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 4096)
        let n = chunk.withUnsafeMutableBytes { recv(p.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n < 0 { return errno != EAGAIN && errno != EWOULDBLOCK }
        if n == 0 { return true }
        p.bytes.append(contentsOf: chunk[0..<n])
        return p.bytes.count >= Self.maxHeadBytes || Self.headComplete(p.bytes)
    }

    /// The head ends at an empty line (CRLF CRLF, or LF LF from lenient clients).
    static func headComplete(_ b: [UInt8]) -> Bool {
        var i = 0
        while i + 1 < b.count {
            if b[i] == 10 && b[i + 1] == 10 { return true }
            if i + 3 < b.count && b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return true }
            i += 1
        }
        return false
    }

    private func respond(_ fd: Int32, head bytes: [UInt8], _ render: @Sendable () -> String) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // The request line: up to the first LF, CR dropped, split on spaces.
        let lineEnd = bytes.firstIndex(of: 10) ?? bytes.count
        let requestLine = String(decoding: bytes[0..<lineEnd].filter { $0 != 13 }, as: UTF8.self)
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: true)
        let status: String
        var body: String
        var contentType = "text/plain; charset=utf-8"
        var withBody = true
        if bytes.count >= Self.maxHeadBytes && !Self.headComplete(bytes) {
            status = "431 Request Header Fields Too Large"
            body = "request head longer than \(Self.maxHeadBytes) bytes\n"
        } else if parts.count >= 2, parts[0] == "GET" || parts[0] == "HEAD" {
            withBody = parts[0] == "GET"
            // The path without a query string ("/metrics?x=1" is "/metrics").
            let path = parts[1].split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            switch path {
            case "/metrics":
                status = "200 OK"
                body = render()
                contentType = "text/plain; version=0.0.4; charset=utf-8"
            case "/healthz", "/":
                status = "200 OK"
                body = "ok\n"
            default:
                status = "404 Not Found"
                body = "not found: try /metrics\n"
            }
        } else {
            status = parts.isEmpty ? "400 Bad Request" : "405 Method Not Allowed"
            body = "only GET /metrics and /healthz\n"
        }
        let bodyBytes = Array(body.utf8)
        let response = "HTTP/1.0 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(bodyBytes.count)\r\nConnection: close\r\n\r\n"
        let bytes = Array(response.utf8) + (withBody ? bodyBytes : [])
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            sent += n
        }
    }

    /// Stops serving, joins the thread and closes the socket. Idempotent.
    public func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        finished.wait()
        close(listenFD)
    }

    deinit { stop() }
}
