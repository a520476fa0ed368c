#if canImport(Glibc)
import Glibc
#endif
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq run` under systemd's notification protocol, as a real process against a real
/// mosquitto: the test binds the datagram socket systemd would (NOTIFY_SOCKET, a path or an
/// `@abstract` name) and reads what the gateway says.
///
/// Expected exchange: `READY=1` once the gateway is connected (its retained status is already
/// `online`), then `WATCHDOG=1` every half WATCHDOG_USEC while plant messages are decided,
/// then `STOPPING=1` after SIGTERM, and exit 0.
@Suite struct ServiceNotifyProcessTests {
    @Test(arguments: [false, true])
    func readyThenWatchdogThenStopping(abstractSocket: Bool) throws {
        let broker = try MosquittoBroker()
        let dir = try TempDir()
        let id = abstractSocket ? "sda" : "sdp"
        let file = dir.url.appendingPathComponent("p.yaml").path
        try processMapping(id: id, plant: id, learning: "  retrain: {every_transitions: 1000000}")
            .write(toFile: file, atomically: true, encoding: .utf8)
        let listener = abstractSocket
            ? try NotifyListener(abstractName: "edgeq-test-\(UUID().uuidString.prefix(12))")
            : try NotifyListener(path: dir.url.appendingPathComponent("notify").path)
        let log = dir.url.appendingPathComponent("gw.log")
        let gw = try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url,
                                                     "--data", dir.url.appendingPathComponent("data").path],
                                  stderrPath: log.path,
                                  environment: ["NOTIFY_SOCKET": listener.socketName, "WATCHDOG_USEC": "1000000"])
        defer { gw.stop(grace: 10) }
        let gwLog = { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        // READY=1 comes first: nothing before it, and no watchdog ping before the gateway is ready.
        let first = listener.receive(timeout: 60)
        try #require(first != nil, "no notification from edgeq run within 60 s; log:\n\(gwLog())")
        #expect(first?.split(separator: "\n").first == "READY=1", "first notification: \(first ?? "")")

        // Ready means connected: the retained status says online.
        let status = try plantClient(broker, "edgeq/\(id)/status")
        defer { status.stop() }
        var online = false
        let statusDeadline = Date().addingTimeInterval(15)
        while !online && Date() < statusDeadline {
            if let m = status.receive(timeout: 0.2) { online = String(decoding: m.payload, as: UTF8.self).contains(#""state":"online""#) }
        }
        #expect(online, "READY=1 was sent but the gateway's status is not online")

        // The plant runs; the decision loop stays alive and systemd hears it.
        let plant = try plantClient(broker, "plant/\(id)/none")
        defer { plant.stop() }
        for step in 0..<100 {
            _ = try plant.publish("plant/\(id)/state", "{\"step\":\(step),\"x\":\(Double(step % 9) - 4)}", qos: .atLeastOnce)
            _ = try plant.publish("plant/\(id)/cmd", "{\"a\":\(step % 2)}", qos: .atLeastOnce)
        }
        var pings = 0
        let pingDeadline = Date().addingTimeInterval(30)
        while pings < 2 && Date() < pingDeadline {
            guard let n = listener.receive(timeout: 1) else { continue }
            #expect(!n.contains("READY=1"), "READY=1 sent twice")
            if n == "WATCHDOG=1" { pings += 1 }
        }
        #expect(pings == 2, "\(pings) WATCHDOG=1 after READY=1 (WATCHDOG_USEC 1 s: one every 0.5 s); log:\n\(gwLog())")

        // SIGTERM: STOPPING=1, then an orderly exit.
        gw.signal(SIGTERM)
        var stopping = false
        let stopDeadline = Date().addingTimeInterval(30)
        while !stopping && Date() < stopDeadline {
            guard let n = listener.receive(timeout: 1) else { continue }
            stopping = n.split(separator: "\n").contains("STOPPING=1")
        }
        #expect(stopping, "no STOPPING=1 after SIGTERM; log:\n\(gwLog())")
        let code = gw.wait(timeout: 30)
        #expect(code == 0, "edgeq run exited \(String(describing: code)); log:\n\(gwLog())")
    }

    /// A stuck decision stops the pings: with EDGEQ_FAULT=decision-hang-on-command a command
    /// message hangs the thread holding the decision lock; the decision loop then cannot go
    /// round, the gateway says so in its log, and no WATCHDOG=1 follows (systemd would restart it).
    @Test func aStuckDecisionStopsTheWatchdogPings() throws {
        let broker = try MosquittoBroker()
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("p.yaml").path
        try processMapping(id: "sdh", plant: "sdh", learning: "  retrain: {every_transitions: 1000000}")
            .write(toFile: file, atomically: true, encoding: .utf8)
        let listener = try NotifyListener(path: dir.url.appendingPathComponent("notify").path)
        let log = dir.url.appendingPathComponent("gw.log")
        let gw = try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url,
                                                     "--data", dir.url.appendingPathComponent("data").path],
                                  stderrPath: log.path,
                                  environment: ["NOTIFY_SOCKET": listener.socketName, "WATCHDOG_USEC": "1000000",
                                                "EDGEQ_FAULT": "decision-hang-on-command"])
        defer {
            gw.signal(SIGKILL)   // its decision thread hangs for good: SIGTERM cannot end it
            gw.wait(timeout: 10)
        }
        let gwLog = { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        // Healthy first: READY=1, then a ping.
        var ready = false
        var pinged = false
        let startDeadline = Date().addingTimeInterval(60)
        while !(ready && pinged) && Date() < startDeadline {
            guard let n = listener.receive(timeout: 1) else { continue }
            if n.hasPrefix("READY=1") { ready = true }
            if ready && n == "WATCHDOG=1" { pinged = true }
        }
        try #require(ready && pinged, "no READY=1 and WATCHDOG=1 from a healthy gateway; log:\n\(gwLog())")

        // A command: the decision under the lock hangs.
        let operatorClient = try plantClient(broker, "edgeq/sdh/reply/+")
        defer { operatorClient.stop() }
        _ = try operatorClient.publish("edgeq/sdh/cmd/mode", #"{"mode":"shadow"}"#, qos: .atLeastOnce)

        // The gateway notices its loop stopped and stops pinging systemd.
        let noticed = eventually(timeout: 60) {
            while listener.receive(timeout: 0) != nil {}   // pings sent before the hang showed
            return gwLog().contains("no WATCHDOG=1 to systemd")
        }
        #expect(noticed, "the gateway did not report its stuck loop; log:\n\(gwLog())")
        #expect(gwLog().contains("EDGEQ_FAULT: hanging this thread at decision-hang-on-command"))
        // Once it said so, no ping may follow: the loop stays stuck for good.
        var late: [String] = []
        let quietUntil = Date().addingTimeInterval(3)
        while Date() < quietUntil {
            if let n = listener.receive(timeout: 0.5) { late.append(n) }
        }
        #expect(!late.contains("WATCHDOG=1"), "WATCHDOG=1 after the loop was reported stuck: \(late)")
    }

    /// A NOTIFY_SOCKET that cannot be used is a start failure with a message, not a silent run
    /// that systemd would kill for never saying READY.
    @Test func aRelativeNotifySocketIsRefused() throws {
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("p.yaml").path
        try processMapping(id: "sdr", plant: "sdr", learning: "  retrain: {every_transitions: 1000000}")
            .write(toFile: file, atomically: true, encoding: .utf8)
        let r = try ChildProcess.run(EdgeQBinary.path, ["run", "--config", file, "--broker", "mqtt://127.0.0.1:1",
                                                        "--data", dir.url.appendingPathComponent("data").path],
                                     timeout: 60, environment: ["NOTIFY_SOCKET": "relative/notify"])
        #expect(r.code == 69, "exit \(r.code): \(r.stderr)")
        #expect(r.stderr.contains("NOTIFY_SOCKET=relative/notify"), "\(r.stderr)")
    }
}

/// A socket the test could not make.
struct ListenerError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// A datagram socket bound where systemd's notification socket would be.
final class NotifyListener {
    /// The value for NOTIFY_SOCKET (`/path` or `@name`).
    let socketName: String
    private let fd: Int32
    private let path: String?

    /// Binds a socket file at `path`.
    convenience init(path: String) throws {
        try self.init(name: path, bytes: Array(path.utf8), path: path)
    }

    /// Binds an abstract socket `@name` (Linux: no file, a leading NUL in the address).
    convenience init(abstractName: String) throws {
        try self.init(name: "@" + abstractName, bytes: [0] + Array(abstractName.utf8), path: nil)
    }

    private init(name: String, bytes: [UInt8], path: String?) throws {
        socketName = name
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw ListenerError(message: "socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let offset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path) ?? 2
        let length = socklen_t(offset + bytes.count + (path == nil ? 0 : 1))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard rc == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw ListenerError(message: "bind \(name): \(e)")
        }
    }

    deinit {
        close(fd)
        if let path { unlink(path) }
    }

    /// The next datagram, or nil after `timeout` seconds.
    func receive(timeout: Double) -> String? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(timeout * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }
}
