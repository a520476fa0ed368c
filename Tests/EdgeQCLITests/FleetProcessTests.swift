import EdgeQLog
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

/// Fleet shipping end to end (docs/fleet.md): real mosquitto, real `edgeq run` gateways with a
/// `fleet` section, real `edgeq learner` processes, real SQLite files on both sides.
///
/// Each test's exchange: a plant publisher drives a gateway (one transition per state message
/// after the first); the gateway ships its log in batches on `fleet/t/experience/<id>`; the
/// learner stores them in `fleet.sqlite` and acknowledges on `fleet/t/ack/<id>`; the gateway's
/// cursor (`fleet-cursor.json`) follows the acknowledgements. The end state is compared row by
/// row with the gateway's own log, through a fault: a learner kill -9, a broker restart, a
/// gateway offline, two learners sharing one subscription.
@Suite(.serialized) struct FleetProcessTests {
    /// One broker, a plant publisher, gateways and learners, in one temporary folder.
    final class Rig: @unchecked Sendable {
        // @unchecked Sendable: used by one test thread; processes and clients are thread-safe.
        let dir: TempDir
        /// The gateways' broker (and the plant's).
        let broker: MosquittoBroker
        /// The learners' broker: the gateways' own, or the far end of a bridge.
        let learnerBroker: MosquittoBroker
        let plant: MQTTClient
        let learnerData: URL
        var gateways: [String: ChildProcess] = [:]
        var learners: [String: ChildProcess] = [:]
        var steps: [String: Int] = [:]
        var runs = 0
        var metricsPorts: [String: UInt16] = [:]

        /// One broker for everyone, or `gatewayBroker` for the gateways and the plant and
        /// `learnerBroker` for the learners (two brokers bridged).
        init(gatewayBroker: MosquittoBroker? = nil, learnerBroker: MosquittoBroker? = nil) throws {
            dir = try TempDir()
            broker = try gatewayBroker ?? MosquittoBroker()
            self.learnerBroker = learnerBroker ?? broker
            plant = try plantClient(broker, "edgeq/+/status")
            learnerData = dir.url.appendingPathComponent("learner")
        }

        deinit {
            plant.stop()
            for p in Array(gateways.values) + Array(learners.values) where p.isRunning {
                p.signal(SIGKILL)
                _ = p.wait(timeout: 10)
            }
        }

        func data(_ id: String) -> URL { dir.url.appendingPathComponent("data-\(id)") }
        var logs: String { dir.url.path }

        /// The process-test mapping with `x` recorded raw (role controlled) and a fleet section
        /// (`fleetKeys`: more keys of it, e.g. `priority: idle`).
        func mapping(_ id: String, batchRows: Int, ackTimeout: String, fleetKeys: String = "") -> String {
            processMapping(id: id, plant: id, learning: "  retrain: {every_transitions: none}")
                .replacingOccurrences(of: "range: [-10, 10]}", with: "range: [-10, 10], role: controlled}")
            + "\nfleet: {topic: fleet/t, batch_rows: \(batchRows), interval: 100ms, window: 4, ack_timeout: \(ackTimeout)"
            + (fleetKeys.isEmpty ? "" : ", \(fleetKeys)") + "}\n"
        }

        /// Starts `edgeq run` for gateway `id` and waits for its online status.
        func startGateway(_ id: String, batchRows: Int = 20, ackTimeout: String = "2s", fleetKeys: String = "") throws {
            runs += 1
            let file = dir.url.appendingPathComponent("\(id).yaml").path
            try mapping(id, batchRows: batchRows, ackTimeout: ackTimeout, fleetKeys: fleetKeys).write(toFile: file, atomically: true, encoding: .utf8)
            while plant.receive(timeout: 0) != nil {}
            metricsPorts[id] = try FreePort.find()
            gateways[id] = try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url, "--data", data(id).path,
                                                               "--metrics-port", String(metricsPorts[id] ?? 0)],
                                            stderrPath: "\(logs)/gw-\(id)-\(runs).log")
            try #require(waitOnline(id), "gateway \(id) never came online:\n\(processLogs())")
        }

        /// Waits for `edgeq/<id>/status` with state online (retained or fresh).
        func waitOnline(_ id: String, timeout: Double = 60) -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                guard let m = plant.receive(timeout: 0.2), m.topic == "edgeq/\(id)/status" else { continue }
                if String(decoding: m.payload, as: UTF8.self).contains(#""state":"online""#) { return true }
            }
            return false
        }

        func stopGateway(_ id: String) {
            let code = gateways[id]?.stop(grace: 30)
            #expect(code == 0, "gateway \(id) exited \(String(describing: code)):\n\(processLogs())")
        }

        /// Starts `edgeq learner` `name` in group `group` on the shared data directory.
        func startLearner(_ name: String, group: String = "g") throws {
            runs += 1
            let file = dir.url.appendingPathComponent("\(name).yaml").path
            try "fleet: fleet/t\ngroup: \(group)\nid: \(name)\nstatus_interval: 1s\n".write(toFile: file, atomically: true, encoding: .utf8)
            while plant.receive(timeout: 0) != nil {}
            let watcher = try plantClient(learnerBroker, "fleet/t/learner/\(name)/status")
            defer { watcher.stop() }
            metricsPorts[name] = try FreePort.find()
            learners[name] = try ChildProcess(EdgeQBinary.path, ["learner", "--config", file, "--broker", learnerBroker.url, "--data", learnerData.path,
                                                                 "--metrics-port", String(metricsPorts[name] ?? 0)],
                                              stderrPath: "\(logs)/learner-\(name)-\(runs).log")
            let online = eventually(timeout: 60) {
                guard let m = watcher.receive(timeout: 0.2) else { return false }
                return String(decoding: m.payload, as: UTF8.self).contains(#""state":"online""#)
            }
            try #require(online, "learner \(name) never came online:\n\(processLogs())")
        }

        /// Publishes `count` plant states for gateway `id` and waits until its log has grown by
        /// one row per state (the first state of a gateway run closes no transition).
        func drive(_ id: String, count: Int, firstOfRun: Bool = false) throws {
            let before = try gatewayRows(id).count
            let start = steps[id, default: 0]
            for i in 0..<count {
                let s = start + i
                let x = Double((s * 37) % 200) / 10 - 10
                _ = try plant.publish("plant/\(id)/state", #"{"step":\#(s),"x":\#(x)}"#, qos: .atLeastOnce)
                if i % 20 == 19 { usleep(2_000) }
            }
            steps[id] = start + count
            let expected = before + count - (firstOfRun ? 1 : 0)
            let logged = eventually(timeout: 60) { ((try? gatewayRows(id).count) ?? 0) >= expected }
            try #require(logged, "gateway \(id) logged \((try? gatewayRows(id).count) ?? -1) rows, expected \(expected):\n\(processLogs())")
        }

        func gatewayRows(_ id: String) throws -> [LoggedTransition] {
            let path = data(id).appendingPathComponent(ExperienceLog.defaultFileName).path
            guard FileManager.default.fileExists(atPath: path) else { return [] }
            return try LogTail(path: path).rows(after: 0, limit: 10_000_000)
        }

        func fleet() throws -> FleetLog { try FleetLog(dataDirectory: learnerData.path) }

        /// The identity of gateway `id`'s log file now.
        func currentLog(_ id: String) -> String {
            (try? LogTail(path: data(id).appendingPathComponent(ExperienceLog.defaultFileName).path).logID) ?? "?"
        }

        /// The fleet log's high-water mark for gateway `id`'s current log file.
        func acked(_ id: String) -> Int64 {
            let log = currentLog(id)
            return ((try? fleet().gateways()) ?? []).first { $0.gateway == id && $0.log == log }?.acked ?? -1
        }

        /// The gateway's durable cursor.
        func cursor(_ id: String) -> Int64? {
            guard let d = try? Data(contentsOf: data(id).appendingPathComponent("fleet-cursor.json")),
                  let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] else { return nil }
            return (o["acked"] as? NSNumber)?.int64Value
        }

        /// Waits until the fleet log and the gateway's cursor both reach the gateway's last row.
        func waitShipped(_ id: String, timeout: Double = 120) throws {
            let last = try gatewayRows(id).last?.id ?? 0
            let done = eventually(timeout: timeout) { acked(id) == last && cursor(id) == last }
            try #require(done, "gateway \(id): last row \(last), fleet log acked \(acked(id)), cursor \(String(describing: cursor(id))):\n\(processLogs())")
        }

        /// The fleet log's rows of `id` equal the gateway's log, row by row; returns the count.
        @discardableResult
        func expectSameRows(_ id: String) throws -> Int {
            let mine = try gatewayRows(id)
            let theirs = try fleet().transitions(gateway: id, log: currentLog(id))
            #expect(theirs.count == mine.count, "gateway \(id): \(mine.count) rows in its log, \(theirs.count) in the fleet log")
            #expect(Set(theirs.map(\.id)).count == theirs.count, "a row id twice in the fleet log")
            let firstDifference = zip(mine, theirs).first { $0.0 != $0.1 }
            #expect(firstDifference == nil, "first differing row: gateway \(String(describing: firstDifference?.0)) fleet \(String(describing: firstDifference?.1))")
            #expect(mine.allSatisfy { $0.signalNames == ["x"] && $0.transition.signals?.count == 1 }, "the test mapping should record x raw")
            return mine.count
        }

        /// The value of metric line `name` (exact, labels included) of process `who`.
        func metric(_ who: String, _ name: String) -> Double? {
            let text = (try? ChildProcess.run("curl", ["-s", "http://127.0.0.1:\(metricsPorts[who] ?? 0)/metrics"], timeout: 10).stdout) ?? ""
            for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
                return Double(line.dropFirst(name.count + 1))
            }
            return nil
        }

        func processLogs() -> String {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: logs).filter { $0.hasSuffix(".log") }.sorted()) ?? []
            return files.map { f in "--- \(f)\n" + ((try? String(contentsOfFile: "\(logs)/\(f)", encoding: .utf8)) ?? "").suffix(3000) }
                .joined(separator: "\n") + "\n--- broker\n" + broker.log().suffix(2000)
                + (learnerBroker === broker ? "" : "\n--- learners' broker\n" + learnerBroker.log().suffix(2000))
        }
    }

    @Test func everyLoggedRowReachesTheFleetLogOnce() throws {
        let rig = try Rig()
        try rig.startLearner("l1")
        try rig.startGateway("a")
        let n = 300
        try rig.drive("a", count: n + 1, firstOfRun: true)
        try rig.waitShipped("a")
        let rows = try rig.expectSameRows("a")
        #expect(rows == n)
        let summary = try #require(try rig.fleet().gateways().first { $0.gateway == "a" })
        #expect(summary.rows == Int64(n), "rows stored: \(summary.rows)")
        print("fleet: \(n) rows shipped once; duplicates dropped: \(summary.duplicates), batches: \(summary.batches)")
        // Both ends count it: the gateway's acknowledged rows and lag, the learner's rows and mark.
        #expect(eventually(timeout: 30) { rig.metric("a", "edgeq_fleet_rows_acked_total") == Double(n) })
        // The lag gauge is set at the end of the shipper's round, after the acknowledgement it
        // counted (a slow disk under the cursor's fsync widens the gap: 20 rows seen once).
        #expect(eventually(timeout: 30) { rig.metric("a", "edgeq_fleet_lag_rows") == 0 }, "lag \(rig.metric("a", "edgeq_fleet_lag_rows") ?? -1)")
        #expect((rig.metric("a", "edgeq_fleet_rows_shipped_total") ?? 0) >= Double(n))
        #expect(rig.metric("l1", "edgeq_learner_rows_ingested_total") == Double(n))
        #expect(rig.metric("l1", "edgeq_learner_duplicates_total") == Double(summary.duplicates))
        #expect(rig.metric("l1", #"edgeq_learner_gateway_acked{gateway="a"}"#) == Double(n))
        rig.stopGateway("a")
        #expect(rig.learners["l1"]?.stop(grace: 30) == 0, "the learner did not stop in order on SIGTERM:\n\(rig.processLogs())")
        // Its last word stays at the broker, retained: offline because it was stopped (sent and
        // acknowledged before its disconnect, not the Last Will's "connection lost").
        let late = try plantClient(rig.learnerBroker, "fleet/t/learner/l1/status")
        defer { late.stop() }
        let last = late.receive(timeout: 10).map { String(decoding: $0.payload, as: UTF8.self) }
        #expect(last?.contains(#""state":"offline""#) == true && last?.contains(#""reason":"stopped""#) == true,
                "the learner's retained status after its stop: \(last ?? "none")")
    }

    /// Each thread of process `pid`: its name, scheduling policy and nice value, as the kernel
    /// reports them (`/proc/<pid>/task/<tid>/comm` and `stat`: nice is field 19, policy 41).
    static func threads(_ pid: pid_t) -> [(tid: Int, name: String, policy: Int, nice: Int)] {
        let dir = "/proc/\(pid)/task"
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).compactMap { t in
            guard let tid = Int(t), let name = try? String(contentsOfFile: "\(dir)/\(t)/comm", encoding: .utf8),
                  let stat = try? String(contentsOfFile: "\(dir)/\(t)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return nil }
            let f = stat[stat.index(after: close)...].split(separator: " ")   // f[0] is field 3
            guard f.count > 38, let nice = Int(f[16]), let policy = Int(f[38]) else { return nil }
            return (tid, name.trimmingCharacters(in: .whitespacesAndNewlines), policy, nice)
        }
    }

    /// docs/fleet.md, "The shipper's priority": the shipper's loop and its connection's network
    /// thread are named; by default they run as the gateway's main thread; with the mapping's
    /// `fleet.priority: idle` in SCHED_IDLE (policy 5), with `low` at nice 10 — and none of
    /// the gateway's other threads (decisions, MQTT, log writer, …) is lowered (but the command
    /// thread, SCHED_IDLE itself, docs/operations.md "Threads"). Shipping works in all three, and
    /// with `deflate_level: 0` the batches go out uncompressed (flags 0) and arrive all the same.
    @Test func theShipperThreadsRunAtTheirPriorityAndTheDecisionThreadsDoNot() throws {
        let rig = try Rig()
        let batches = try plantClient(rig.broker, "fleet/t/experience/+")
        defer { batches.stop() }
        try rig.startLearner("l1")
        try rig.startGateway("n")
        try rig.startGateway("p", fleetKeys: "priority: idle, deflate_level: 9")
        try rig.startGateway("q", fleetKeys: "priority: low, deflate_level: 0")
        for id in ["n", "p", "q"] {
            try rig.drive(id, count: 41, firstOfRun: true)
            try rig.waitShipped(id)
            try rig.expectSameRows(id)
        }
        // The wire format's flags (bytes 6–7, bit 0: deflated) of every batch each gateway sent.
        var flags: [String: Set<UInt8>] = [:]
        while let m = batches.receive(timeout: 1) {
            guard m.payload.count > 7 else { continue }
            flags[String(m.topic.split(separator: "/").last ?? ""), default: []].insert(m.payload[6])
        }
        print("fleet batch flags by gateway: \(flags.mapValues { $0.sorted() })")
        #expect(flags["n"] == [1] && flags["p"] == [1] && flags["q"] == [0], "\(flags)")
        for (id, policy, nice) in [("n", nil, nil), ("p", 5, nil), ("q", 0, 10)] as [(String, Int?, Int?)] {
            let pid = try #require(rig.gateways[id]?.pid)
            let threads = Self.threads(pid)
            let main = try #require(threads.first { $0.tid == Int(pid) })
            #expect(main.policy == 0, "\(id): \(threads)")
            let fleet = threads.filter { $0.name.hasPrefix("edgeq-fleet") }
            #expect(fleet.map(\.name).sorted() == ["edgeq-fleet", "edgeq-fleet-net"], "\(id): \(threads)")
            #expect(fleet.allSatisfy { $0.policy == (policy ?? main.policy) && (policy == 5 || $0.nice == (nice ?? main.nice)) },
                    "\(id): \(fleet)")
            // None of the other threads is lowered (libdispatch raises one of its own to nice -4).
            let others = threads.filter { !$0.name.hasPrefix("edgeq-fleet") }
            #expect(others.filter { $0.policy == main.policy && $0.nice == main.nice }.count >= 3, "\(id): \(threads)")
            #expect(others.filter { $0.policy != 0 || $0.nice > main.nice }.count <= 1, "\(id): \(threads)")
        }
        for id in ["n", "p", "q"] { rig.stopGateway(id) }
    }

    @Test func aLearnerKilledMidStreamLosesNothingAndStoresNothingTwice() throws {
        let rig = try Rig()
        try rig.startLearner("l1")
        try rig.startGateway("k", batchRows: 10, ackTimeout: "1s")
        try rig.drive("k", count: 201, firstOfRun: true)
        // Killed after its first acknowledgement, while the gateway has rows still unacknowledged.
        #expect(eventually(timeout: 60) { rig.acked("k") > 0 })
        let learner = try #require(rig.learners["l1"])
        learner.signal(SIGKILL)
        #expect(learner.wait(timeout: 10) == 128 + SIGKILL)
        let ackedAtKill = rig.acked("k")
        try rig.drive("k", count: 200)
        let lastAtKill = try rig.gatewayRows("k").last?.id ?? 0
        #expect(ackedAtKill < lastAtKill, "nothing was left to ship after the kill")
        try rig.startLearner("l1")
        try rig.waitShipped("k")
        #expect(try rig.expectSameRows("k") == 400)
        let summary = try #require(try rig.fleet().gateways().first { $0.gateway == "k" })
        #expect(summary.rows == 400)
        print("fleet kill -9: acked \(ackedAtKill) of \(lastAtKill) at the kill; duplicates dropped: \(summary.duplicates)")
        #expect(rig.cursor("k") == lastAtKill)
        rig.stopGateway("k")
    }

    /// The learner frozen (SIGSTOP) past the gateway's ack timeout: the gateway sends its
    /// unacknowledged batches again; on SIGCONT the learner gets both copies, stores each row once
    /// and counts the copies.
    @Test func copiesSentBeforeTheAcknowledgementAreDroppedAndCounted() throws {
        let rig = try Rig()
        try rig.startLearner("l1")
        try rig.startGateway("d", batchRows: 10, ackTimeout: "500ms")
        let learner = try #require(rig.learners["l1"])
        learner.signal(SIGSTOP)
        try rig.drive("d", count: 101, firstOfRun: true)
        // The gateway has sent its window and, without acknowledgements, sent it again.
        let resent = eventually(timeout: 60) { rig.status("d")?.resends ?? 0 >= 2 }
        learner.signal(SIGCONT)
        #expect(resent, "the gateway never sent its unacknowledged batches again:\n\(rig.processLogs())")
        try rig.waitShipped("d")
        #expect(try rig.expectSameRows("d") == 100)
        let summary = try #require(try rig.fleet().gateways().first { $0.gateway == "d" })
        #expect(summary.rows == 100)
        #expect(summary.duplicates > 0, "no copy was received: the resend was not exercised")
        print("fleet resend: duplicates dropped \(summary.duplicates)")
        rig.stopGateway("d")
    }

    @Test func aBrokerRestartLosesNothing() throws {
        let rig = try Rig()
        try rig.startLearner("l1")
        try rig.startGateway("b", batchRows: 10, ackTimeout: "1s")
        try rig.drive("b", count: 151, firstOfRun: true)
        #expect(eventually(timeout: 60) { rig.acked("b") > 0 })
        rig.broker.stop()
        try rig.broker.start()
        // Everyone reconnects; the gateway announces itself again before the plant goes on.
        try #require(rig.waitOnline("b"), "the gateway did not come back after the broker restart:\n\(rig.processLogs())")
        try rig.plant.waitUntilConnected(timeout: 30)
        try rig.drive("b", count: 150)
        try rig.waitShipped("b")
        #expect(try rig.expectSameRows("b") == 300)
        rig.stopGateway("b")
    }

    @Test func aGatewayThatWasOfflineCatchesUpFromItsCursor() throws {
        let rig = try Rig()
        try rig.startLearner("l1")
        try rig.startGateway("o")
        try rig.drive("o", count: 101, firstOfRun: true)
        try rig.waitShipped("o")
        // The learner goes away; the gateway logs on, then stops with rows unacknowledged.
        #expect(rig.learners["l1"]?.stop(grace: 30) == 0)
        try rig.drive("o", count: 100)
        rig.stopGateway("o")
        let acknowledged = try #require(rig.cursor("o"))
        let last = try rig.gatewayRows("o").last?.id ?? 0
        #expect(acknowledged == 100 && last == 200, "cursor \(acknowledged), last row \(last)")
        // Both come back: the gateway sends from its cursor, the learner ends with every row once.
        try rig.startLearner("l1")
        try rig.startGateway("o")
        try rig.drive("o", count: 51, firstOfRun: true)
        try rig.waitShipped("o")
        #expect(try rig.expectSameRows("o") == 250)
        let summary = try #require(try rig.fleet().gateways().first { $0.gateway == "o" })
        #expect(summary.rows == 250)
        rig.stopGateway("o")
    }

    /// The gateway's log replaced while the cursor stays (the damaged-log path moves the file
    /// aside; here it is deleted while the gateway is stopped): the new file's rows count from 1
    /// again, and are shipped and stored as a new sequence beside the old one, none dropped.
    @Test func aReplacedLogIsShippedFromItsStartBesideTheOldOne() throws {
        let rig = try Rig()
        try rig.startLearner("l1")
        try rig.startGateway("r")
        try rig.drive("r", count: 101, firstOfRun: true)
        try rig.waitShipped("r")
        let oldLog = rig.currentLog("r")
        rig.stopGateway("r")
        #expect(rig.cursor("r") == 100)
        for suffix in ["", "-wal", "-shm"] {
            try? FileManager.default.removeItem(at: rig.data("r").appendingPathComponent(ExperienceLog.defaultFileName + suffix))
        }
        try rig.startGateway("r")
        try rig.drive("r", count: 61, firstOfRun: true)
        #expect(rig.currentLog("r") != oldLog)
        try rig.waitShipped("r")
        #expect(try rig.expectSameRows("r") == 60)
        let summaries = try rig.fleet().gateways().filter { $0.gateway == "r" }
        #expect(summaries.map(\.log) == [oldLog, rig.currentLog("r")])
        #expect(summaries.map(\.rows) == [100, 60])
        #expect(try rig.fleet().transitions(gateway: "r").count == 160)
        rig.stopGateway("r")
    }

    /// `edgeq check` says where the log is shipped, and refuses a bad fleet section with its line.
    @Test func checkShowsTheFleetSection() throws {
        let rig = try Rig()
        let file = rig.dir.url.appendingPathComponent("c.yaml").path
        try rig.mapping("c", batchRows: 50, ackTimeout: "3s").write(toFile: file, atomically: true, encoding: .utf8)
        let ok = try EdgeQBinary.run(["check", file], timeout: 60)
        #expect(ok.code == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("fleet      ships the log on fleet/t/experience/c (batches of ≤ 50 rows, window 4, QoS 1); acknowledgements on fleet/t/ack/c"), "\(ok.stdout)")
        #expect(ok.stdout.contains("fleet      takes models from fleet/t/model (≤ 16777216 bytes, signed by a key in keys/models/; then promotion trial); verdicts on fleet/t/verdict/c"), "\(ok.stdout)")
        try rig.mapping("c", batchRows: 50, ackTimeout: "3s")
            .replacingOccurrences(of: "window: 4", with: "window: 0").write(toFile: file, atomically: true, encoding: .utf8)
        let bad = try EdgeQBinary.run(["check", file], timeout: 60)
        #expect(bad.code == 65 && bad.stderr.contains("fleet window (batches in flight) must be in 1...64, found 0"), "\(bad.code): \(bad.stderr)")
    }

    /// A bad learner file is refused like a bad mapping: every problem with its line, exit 65.
    @Test func theLearnerRefusesABadFileWithItsLines() throws {
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("fleet.yaml").path
        try "fleet: fleet/t\ngroup: a/b\nid: l1\nstatus_intervall: 5s\n".write(toFile: file, atomically: true, encoding: .utf8)
        let r = try EdgeQBinary.run(["learner", "--config", file, "--data", dir.url.path, "--broker", "mqtt://127.0.0.1:1"], timeout: 60)
        #expect(r.code == 65, "\(r.code): \(r.stderr)")
        #expect(r.stderr.contains("\(file):2:8: group 'a/b' may contain only letters"), "\(r.stderr)")
        #expect(r.stderr.contains("\(file):4:1: unknown key 'status_intervall'") && r.stderr.contains("did you mean 'status_interval'?"), "\(r.stderr)")
        let noData = try EdgeQBinary.run(["learner", "--config", file], timeout: 60)
        #expect(noData.code == 65, "the file is checked before the data directory: \(noData.stderr)")
    }

    /// The learner's credentials by reference (a file and an environment variable), on a broker
    /// that refuses anonymous clients: it comes online; without its variable it exits 66.
    @Test func theLearnerConnectsWithItsCredentials() throws {
        let broker = try MosquittoBroker(auth: .passwords(["learner": "pw-learner", "watch": "pw-watch"]))
        let dir = try TempDir()
        let user = dir.url.appendingPathComponent("user").path
        try "learner\n".write(toFile: user, atomically: true, encoding: .utf8)
        let file = dir.url.appendingPathComponent("fleet.yaml").path
        try "fleet: fleet/t\ngroup: g\nid: l1\nusername: {file: \(user)}\npassword: {env: EDGEQ_TEST_LEARNER_PW}\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        var cfg = try MQTTConfiguration(url: broker.url, clientID: "watch-\(UUID().uuidString.prefix(6))")
        cfg.username = "watch"
        cfg.password = Secret("pw-watch")
        let watcher = try MQTTClient(cfg)
        try watcher.subscribe("fleet/t/learner/l1/status", qos: .atLeastOnce)
        watcher.start()
        defer { watcher.stop() }
        try watcher.waitUntilConnected(timeout: 10)
        let log = dir.url.appendingPathComponent("learner.log").path
        let learner = try ChildProcess(EdgeQBinary.path, ["learner", "--config", file, "--data", dir.url.appendingPathComponent("d").path, "--broker", broker.url],
                                       stderrPath: log, environment: ["EDGEQ_TEST_LEARNER_PW": "pw-learner"])
        defer { _ = learner.stop(grace: 10) }
        let online = eventually(timeout: 60) {
            guard let m = watcher.receive(timeout: 0.2) else { return false }
            return String(decoding: m.payload, as: UTF8.self).contains(#""state":"online""#)
        }
        #expect(online, "\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")\n\(broker.log())")
        #expect(learner.stop(grace: 30) == 0)
        let missing = try EdgeQBinary.run(["learner", "--config", file, "--data", dir.url.path, "--broker", broker.url], timeout: 60)
        #expect(missing.code == 66 && missing.stderr.contains("EDGEQ_TEST_LEARNER_PW"), "\(missing.code): \(missing.stderr)")
    }

    /// Two learners in one group on one fleet log file (SQLite serialises their commits): both
    /// store some batches, and the union is every row of both gateways, once.
    @Test func twoLearnersShareTheLoadWithNoDuplicateAndNoGap() throws {
        let rig = try Rig()
        try rig.startLearner("l1")
        try rig.startLearner("l2")
        try rig.startGateway("p", batchRows: 10)
        try rig.startGateway("q", batchRows: 10)
        try rig.drive("p", count: 201, firstOfRun: true)
        try rig.drive("q", count: 201, firstOfRun: true)
        try rig.waitShipped("p")
        try rig.waitShipped("q")
        #expect(try rig.expectSameRows("p") == 200)
        #expect(try rig.expectSameRows("q") == 200)
        let byLearner = try rig.fleet().rowsByLearner()
        #expect(byLearner.keys.sorted() == ["l1", "l2"], "rows by learner: \(byLearner)")
        #expect(byLearner.values.reduce(0, +) == 400)
        print("fleet two learners: rows by learner \(byLearner)")
        rig.stopGateway("p")
        rig.stopGateway("q")
    }
}

extension FleetProcessTests {
    /// The learner's ingest rate: 4 senders publish 20 batches of 500 rows each (made with the
    /// gateway's own encoder, deflated) as fast as the broker takes them; the learner process
    /// stores and acknowledges them all. Prints rows per second (this build: say which); asserts
    /// the exact counts only.
    @Test func learnerIngestRateMeasured() throws {
        let rig = try Rig()
        try rig.startLearner("l1")
        let acks = try plantClient(rig.broker, "fleet/t/ack/+")
        defer { acks.stop() }
        let gateways = ["r1", "r2", "r3", "r4"], batches = 20, perBatch = 500
        var payloads: [(String, [UInt8])] = []
        for g in gateways {
            for b in 0..<batches {
                let first = Int64(b * perBatch)
                let rows = (0..<perBatch).map { i -> LoggedTransition in
                    let k = Double(b * perBatch + i)
                    let s = (0..<12).map { Float(sin(k * 0.01 + Double($0))) }
                    let t = Transition(time: 1_790_000_000 + k, tick: Int64(k), episode: 0, state: s, action: Int(k) % 3, actor: .incumbent,
                                       reward: -abs(sin(k)), nextState: s.map { $0 * 0.99 }, mode: .shadow,
                                       signals: [21 + sin(k)], nextSignals: [21 + sin(k + 1)])
                    return LoggedTransition(id: first + Int64(i) + 1, transition: t, signalNames: ["zone_temp"])
                }
                payloads.append(("fleet/t/experience/\(g)", FleetBatch(gateway: g, origin: 0, after: first, last: first + Int64(perBatch), rows: rows).encode()))
            }
        }
        let total = Int64(batches * perBatch)
        let clock = ContinuousClock()
        let start = clock.now
        for (topic, p) in payloads { _ = try rig.plant.publish(topic, p, qos: .atLeastOnce) }
        var acked: [String: Int64] = [:]
        let done = eventually(timeout: 300) {
            while let m = acks.receive(timeout: 0.05) {
                if let o = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any],
                   let g = o["gateway"] as? String, let a = (o["acked"] as? NSNumber)?.int64Value {
                    acked[g] = max(acked[g] ?? 0, a)
                }
            }
            return gateways.allSatisfy { acked[$0] == total }
        }
        let elapsed = clock.now - start
        #expect(done, "acknowledged: \(acked):\n\(rig.processLogs())")
        let summaries = try rig.fleet().gateways()
        #expect(summaries.map(\.rows) == Array(repeating: total, count: gateways.count))
        #expect(summaries.allSatisfy { $0.duplicates == 0 })
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print(String(format: "fleet ingest (edgeq learner, this build; 4 gateways × %d rows, batches of %d): %.0f rows/s, %.1f s", Int(total), perBatch,
                     Double(total) * Double(gateways.count) / seconds, seconds))
    }
}

extension FleetProcessTests.Rig {
    struct FleetStatus { var resends: Int; var lag: Int }

    /// The `fleet` object of the gateway's latest status (published every few seconds).
    func status(_ id: String) -> FleetStatus? {
        var latest: FleetStatus?
        while let m = plant.receive(timeout: 0.2) {
            guard m.topic == "edgeq/\(id)/status",
                  let o = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any],
                  let f = o["fleet"] as? [String: Any] else { continue }
            latest = FleetStatus(resends: (f["resends"] as? NSNumber)?.intValue ?? 0, lag: (f["lag_rows"] as? NSNumber)?.intValue ?? 0)
        }
        return latest
    }
}
