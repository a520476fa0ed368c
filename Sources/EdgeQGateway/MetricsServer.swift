#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// A minimal HTTP/1.0 server for Prometheus scrapes: `GET /metrics` (text exposition) and
/// `GET /healthz`. One thread, blocking sockets, one request per connection.
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

    private func serve(_ render: @Sendable () -> String) {
        var pfd = pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)
        while !stopping.load(ordering: .acquiring) {
            let ready = poll(&pfd, 1, 200)
            if ready <= 0 { continue }
            let client = accept(listenFD, nil, nil)
            if client < 0 { continue }
            handle(client, render)
            close(client)
        }
    }

    private func handle(_ fd: Int32, _ render: @Sendable () -> String) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 4096)
        var used = 0
        // Read until the end of the request head (or 4 KiB, or the timeout).
        while used < buffer.count {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + used, $0.count - used) }
            if n <= 0 { break }
            used += n
            if buffer[0..<used].lastIndex(of: 10) != nil,
               String(decoding: buffer[0..<used], as: UTF8.self).contains("\r\n\r\n") || String(decoding: buffer[0..<used], as: UTF8.self).contains("\n\n") {
                break
            }
        }
        let head = String(decoding: buffer[0..<used], as: UTF8.self)
        let requestLine = head.split(separator: "\r\n", maxSplits: 1).first.map(String.init) ?? ""
        let parts = requestLine.split(separator: " ")
        let status: String
        let body: String
        var contentType = "text/plain; charset=utf-8"
        if parts.count >= 2, parts[0] == "GET" {
            switch parts[1] {
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
            status = "405 Method Not Allowed"
            body = "only GET /metrics and /healthz\n"
        }
        let bodyBytes = Array(body.utf8)
        let response = "HTTP/1.0 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(bodyBytes.count)\r\nConnection: close\r\n\r\n"
        let bytes = Array(response.utf8) + bodyBytes
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
