#if canImport(Glibc)
import Glibc
#endif
import EdgeQTestSupport
import Foundation
import Testing

/// The metrics endpoint of `edgeq run` listens on the loopback unless told otherwise
/// (`--metrics-host`): the kernel's socket table shows 127.0.0.1 for its port, and a connection
/// to the machine's other address is refused. With `--metrics-host 0.0.0.0` the same checks see
/// the wildcard address and the connection succeeds (they can tell the difference).
@Suite struct MetricsBindTests {
    static let mapping = processMapping(id: "m1", plant: "m", learning: "  retrain: {every_transitions: 1000000}")

    /// The local addresses (hex, as the kernel writes them: 0100007F is 127.0.0.1) of the
    /// sockets listening on TCP `port`, from /proc/net/tcp and /proc/net/tcp6.
    static func listeningAddresses(port: UInt16) -> [String] {
        let hexPort = String(format: "%04X", port)
        var found: [String] = []
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                guard f.count > 3, f[3] == "0A" else { continue }   // 0A: LISTEN
                let local = f[1].split(separator: ":")
                if local.count == 2, local[1] == hexPort { found.append(String(local[0])) }
            }
        }
        return found
    }

    /// An IPv4 address of this machine other than the loopback (nil when it has none).
    static func otherAddress() -> String? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return nil }
        defer { freeifaddrs(list) }
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let a = p {
            defer { p = a.pointee.ifa_next }
            guard let sa = a.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            var addr = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            guard inet_ntop(AF_INET, &addr, &buffer, socklen_t(buffer.count)) != nil else { continue }
            let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if !text.hasPrefix("127.") { return text }
        }
        return nil
    }

    /// The HTTP status of GET http://host:port/healthz ("000" when the connection fails).
    static func healthz(_ host: String, _ port: UInt16) throws -> String {
        try ChildProcess.run("curl", ["-s", "-o", "/dev/null", "--max-time", "5", "-w", "%{http_code}",
                                      "http://\(host):\(port)/healthz"], timeout: 15).stdout
    }

    /// Runs `edgeq run` with `--metrics-port` (and `extra` arguments) until its port listens,
    /// then hands the port to `check`.
    static func withGateway(_ extra: [String], _ check: (UInt16) throws -> Void) throws {
        let broker = try MosquittoBroker()
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("m.yaml").path
        try mapping.write(toFile: file, atomically: true, encoding: .utf8)
        let port = try FreePort.find()
        let log = dir.url.appendingPathComponent("gw.log").path
        let gw = try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url,
                                                     "--data", dir.url.appendingPathComponent("data").path,
                                                     "--metrics-port", String(port)] + extra, stderrPath: log)
        defer { gw.stop(grace: 10) }
        let listening = eventually(timeout: 20) { !listeningAddresses(port: port).isEmpty }
        try #require(listening, "edgeq run's metrics port \(port) never listened; its log:\n\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        try check(port)
    }

    @Test func metricsListenOnTheLoopbackByDefault() throws {
        try Self.withGateway([]) { (port: UInt16) throws -> Void in
            #expect(Self.listeningAddresses(port: port) == ["0100007F"], "listening on \(Self.listeningAddresses(port: port))")
            let loopback = try Self.healthz("127.0.0.1", port)
            #expect(loopback == "200")
            if let other = Self.otherAddress() {
                let answer = try Self.healthz(other, port)
                #expect(answer == "000", "the metrics endpoint answered on \(other) with \(answer)")
            } else {
                print("metricsListenOnTheLoopbackByDefault: this machine has no other IPv4 address; checked the socket table only")
            }
        }
    }

    @Test func metricsHostWidensItWhenToldTo() throws {
        try Self.withGateway(["--metrics-host", "0.0.0.0"]) { (port: UInt16) throws -> Void in
            #expect(Self.listeningAddresses(port: port) == ["00000000"], "listening on \(Self.listeningAddresses(port: port))")
            if let other = Self.otherAddress() {
                let answer = try Self.healthz(other, port)
                #expect(answer == "200")
            }
        }
    }
}
