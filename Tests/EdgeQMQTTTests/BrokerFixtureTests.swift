#if canImport(Glibc)
import Glibc
#endif
@testable import EdgeQSystem
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

/// The broker fixture itself: a real mosquitto on a free port, killed and restarted; a broker
/// that cannot start says why (its exit status and log), and a free port taken by another
/// process before the broker binds it is chosen again.
@Suite struct BrokerFixtureTests {
    @Test func startsKillsAndRestartsOnTheSamePort() throws {
        let broker = try MosquittoBroker()
        #expect(FreePort.accepts(broker.port))
        broker.kill9()
        #expect(!FreePort.accepts(broker.port))
        try broker.start()
        #expect(FreePort.accepts(broker.port))
        broker.stop()
        #expect(!FreePort.accepts(broker.port))
    }

    /// A child started here inherits standard input, output and error only: not a file or a
    /// listening socket this process opened without O_CLOEXEC (a broker started by a bench
    /// used to keep the bench's sockets and files open).
    @Test func aChildInheritsNoDescriptorButTheStandardThree() throws {
        let held = try HeldPort()
        let file = open("/dev/null", O_RDONLY)   // no O_CLOEXEC
        try #require(file >= 0)
        defer { close(file) }
        let flags = fcntl(held.fd, F_GETFD)
        #expect(flags >= 0 && flags & FD_CLOEXEC == 0, "the held socket is meant to be inheritable")
        // ls lists the child's own descriptors (its /proc/self is ls itself): 0, 1, 2 and the
        // one it opened to read the directory.
        let r = try ChildProcess.run("/bin/ls", ["/proc/self/fd"], timeout: 30)
        #expect(r.code == 0, "\(r.stderr)")
        let fds = Set(r.stdout.split(whereSeparator: \.isNewline).compactMap { Int32($0) })
        #expect(fds.isSuperset(of: [0, 1, 2]) && fds.count <= 4, "the child had \(fds.sorted())")
        #expect(!fds.contains(file) && !fds.contains(held.fd), "the child inherited \(file) or \(held.fd): \(fds.sorted())")
    }

    /// One path for standard output and error: one file with both streams in the order the
    /// child wrote them — a benchmark's gateway that printed a library's warning on standard
    /// output put it among the benchmark's figure lines (`BLAS : Bad memory unallocation!`).
    @Test func oneFileForBothStreamsKeepsTheirOrder() throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-child-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = try ChildProcess("/bin/sh", ["-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"],
                                     stdoutPath: log, stderrPath: log)
        #expect(child.wait(timeout: 30) == 0)
        #expect(try String(contentsOfFile: log, encoding: .utf8) == "out1\nerr1\nout2\nerr2\n")
    }

    /// The broker's standard output and error are files, never its starter's: a broker a test
    /// forgot to stop used to keep the test process's output pipe open, and `swift test`
    /// waited for its end forever, printing nothing.
    @Test func aBrokerHoldsNoneOfItsStartersOutput() throws {
        let broker = try MosquittoBroker()
        defer { broker.stop() }
        let pid = try #require(broker.pid)
        let out = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/1")
        let err = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/2")
        #expect(out == "/dev/null")
        #expect(URL(fileURLWithPath: err).resolvingSymlinksInPath().path
                == URL(fileURLWithPath: broker.logPath).resolvingSymlinksInPath().path)
    }

    /// A process that ends while a broker it started still runs (a harness nobody stopped)
    /// takes the broker with it: every child still running is stopped at exit. The exit test
    /// runs in a process of its own, starts a broker, leaks it, writes the broker's pid and
    /// exits normally; the broker must be gone after.
    @Test func aProcessThatExitsTakesTheBrokerItLeakedWithIt() async throws {
        let result = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            guard let broker = try? MosquittoBroker(), let pid = broker.pid else { exit(3) }
            _ = Unmanaged.passRetained(broker)   // leaked: never stopped, never released
            print("broker pid \(pid)")
            fflush(nil)
            exit(0)
        }
        let out = String(decoding: result?.standardOutputContent ?? [], as: UTF8.self)
        let line = try #require(out.split(whereSeparator: \.isNewline).first { $0.hasPrefix("broker pid ") }, "the exit test printed: \(out)")
        let pid = try #require(pid_t(line.dropFirst("broker pid ".count)))
        // Once killed, the orphaned broker is reaped by init and kill(pid, 0) fails.
        var alive = kill(pid, 0) == 0
        for _ in 0..<200 where alive { usleep(10_000); alive = kill(pid, 0) == 0 }
        #expect(!alive, "the broker \(pid) outlived the process that started it")
    }

    @Test func passwordBrokerStarts() throws {
        let broker = try MosquittoBroker(auth: .passwords(["plant": "s3cret"]))
        #expect(FreePort.accepts(broker.port))
    }

    /// A TCP socket of the test's own listening on 127.0.0.1 (another process's broker, say),
    /// closed when released.
    final class HeldPort {
        let fd: Int32
        let port: UInt16

        init() throws {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            self.fd = fd
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = 0
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = fd >= 0
                && withUnsafePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }) == 0
                && listen(fd, 8) == 0
                && withUnsafeMutablePointer(to: &addr, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }) == 0
            guard ok else { throw FreePort.Error(description: "cannot hold a port: \(String(cString: strerror(errno)))") }
            port = UInt16(bigEndian: addr.sin_port)
        }

        deinit { close(fd) }
    }

    /// Before: the fixture saw something accept on the port (the test's socket) and returned a
    /// "broker" that had exited. Now: the broker's exit, its status and its log's reason.
    @Test func aBrokerWhosePortIsTakenSaysItExitedAndWhy() throws {
        let held = try HeldPort()
        #expect(FreePort.accepts(held.port))
        do {
            let broker = try MosquittoBroker(port: held.port)
            Issue.record("a broker started on port \(broker.port), which the test's socket holds")
        } catch let e as MosquittoBroker.Error {
            #expect(e.portInUse, "\(e)")
            #expect(e.exitStatus.map { $0 != 0 } == true, "\(e)")
            #expect(e.description.contains("exited with status") && e.description.contains("Address already in use"), "\(e)")
        }
    }

    /// A configuration mosquitto refuses: it exits at once, and the error quotes its status and log.
    @Test func aBrokerThatExitsAtStartQuotesItsStatusAndLog() throws {
        do {
            let broker = try MosquittoBroker(extraConfig: ["no_such_option 1"])
            Issue.record("a broker with an unknown option started on port \(broker.port)")
        } catch let e as MosquittoBroker.Error {
            #expect(!e.portInUse, "\(e)")
            #expect(e.exitStatus.map { $0 != 0 } == true, "\(e)")
            #expect(e.description.contains("exited with status") && e.description.contains("no_such_option"), "\(e)")
        }
    }

    /// The race: the port chosen free is taken before the broker binds it. The broker exits
    /// ("Address already in use"), and the fixture starts it on another free port.
    @Test func aFreePortTakenBeforeTheBindIsChosenAgain() throws {
        let held = try HeldPort()
        var offered: [UInt16] = []
        let broker = try MosquittoBroker(auth: .anonymous, tls: nil, extraConfig: [], choosingPort: {
            let p = offered.isEmpty ? held.port : try FreePort.find()
            offered.append(p)
            return p
        }, attempts: MosquittoBroker.portAttempts)
        #expect(offered.count == 2 && offered.first == held.port, "\(offered)")
        #expect(broker.port == offered.last && broker.port != held.port)
        // A real MQTT session with it on the new port.
        let client = try connected(try configuration(broker))
        client.stop()
    }
}
