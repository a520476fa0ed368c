import EdgeQCore
import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQSystem
import EdgeQTopicMap
import Foundation
import Logging

/// What `edgeq bench fleet` runs: sizes from the flags (`--rows`, `--rounds`, `--quick`).
struct FleetOptions: Sendable {
    /// Shipping gateways for the ingest figure.
    var gateways = 8
    /// Rows in each gateway's pre-filled log.
    var rowsPerGateway = 50_000
    /// Rows per batch (the `fleet.batch_rows` default).
    var batchRows = 500
    /// Latency rounds (each: without shipping, then with).
    var rounds = 20
    /// Round trips measured per latency run (after `warmup`).
    var roundTrips = 1_000
    var warmup = 200
    /// Latency: decisions a second (`--pace`), each started on a fixed schedule; nil: one
    /// after another, as fast as they come back (the default: the shipper's worst case).
    var pace: Double?
}

/// `edgeq bench fleet`: the fleet data path (docs/fleet.md), in one run.
///
/// **Ingest.** `gateways` logs are filled beforehand with `rowsPerGateway` plant-like rows each
/// (a 12-wide state, two raw signals, three Q-values: the shape of docs/fleet.md's size
/// measurement) by the gateway's own log writer. Then, on one mosquitto, the gateway's own
/// `FleetShipper` — one per log, each with its own connection, as in `edgeq run` — ships them
/// to one `edgeq learner` process (this binary) at once. The figure is every row over the time
/// from the shippers' start until every shipper's cursor stands on its last row (the learner has
/// stored and acknowledged everything). Counted from both ends: the shippers' cursors and
/// counters (rows acknowledged, rows sent more than once) and the fleet log read back row by row
/// (rows stored, ids missing, ids twice, copies the learner dropped). And where the CPU went:
/// the learner process's CPU time per row (its ceiling on one core is the inverse) and this
/// process's (the 8 shippers'), since on this machine both share the same 2 cores.
///
/// **Decision latency while shipping.** Two `edgeq run` processes with the `e2e` bench's mapping
/// and model (topics/bench.yaml without its control group, a random int8 8-64-64-5 network,
/// control mode), each behind its own broker with the same settings; the second has a `fleet`
/// section (batches of 100 rows, interval 100 ms) and an `edgeq learner` on its broker (at niceness 19: on a site it runs
/// elsewhere), so the rows its decisions log go out while it decides. A client in this process
/// times round trips one at a time (publish a state on `bench/a`, wait for the decision on
/// `bench/b`): per run 200 warm-up then 1,000 measured;
/// rounds alternate without, with, without, with … (20 by default). The p99 figure pools each
/// side's round trips over all rounds (20,000 a side) and compares the pooled p99s, with a
/// bootstrap interval on their ratio that keeps the rounds' pairing (`PooledQuantileRatio`): a
/// 10 % goal can then be decided, which the median of five per-round ratios (each p99 resting on
/// 10 samples) could not. The p50, the CPU time each gateway process used per decision (all its
/// threads, the shipper's included) and the p99's per-round ratios are reported as medians of
/// per-round ratios, with their spread. At the end the shipping gateway's log and the fleet log
/// must hold the same rows.
///
/// **Model rollout** (`FleetRolloutBench`): 8 `edgeq run` gateways in shadow mode under
/// `promotion: manual` on one mosquitto; signed int8 32-256-256-9 models published one after
/// another as the learner publishes them (chunks, then the manifest); per model and gateway the
/// time from the start of the publication to its `stored` verdict on `<fleet>/verdict/<gateway>`:
/// p50, p99 (goal < 1 s), max, and every verdict counted.
///
/// **Learning** (`--parts learn`, `FleetLearnBench`): N cart-pole gateways learning through one
/// `edgeq learner` against one gateway retraining alone, in wall-clock seconds until every
/// gateway's served model reaches a 10-episode mean of 475. Not in the default parts (it takes
/// minutes to hours); without it its goal is printed as not measured. **Thermal** (`--parts
/// thermal`, `FleetThermalBench`): 4 gateways × 2 weeks of shadow data against 1 gateway × 6
/// weeks, in the lab through the shipped learning code; without it printed as not measured.
///
/// `--parts` chooses (default `ingest,latency,rollout`).
enum FleetBench {
    static let fleetTopic = "fleet/bench"

    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        let o = context.fleet
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-fleet-bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let keep = ProcessInfo.processInfo.environment["EDGEQ_BENCH_KEEP"] == "1"
        defer {
            if keep { context.progress("work directory kept: \(work.path)") } else { try? FileManager.default.removeItem(at: work) }
        }
        let edgeq = try MQTTBench.selfExecutable()
        let shipping = try ShippingSettings()
        let parts = context.fleetParts
        var figures: [BenchFigure] = []
        if parts.contains(.ingest) {
            figures += try ingest(o, shipping: shipping, work: work.appendingPathComponent("ingest"), edgeq: edgeq, context: context)
        }
        if parts.contains(.latency) {
            figures += try latency(o, shipping: shipping, work: work.appendingPathComponent("latency"), edgeq: edgeq, context: context)
        }
        if parts.contains(.rollout) {
            figures += try FleetRolloutBench.run(context.fleetRollout, work: work.appendingPathComponent("rollout"), edgeq: edgeq, context: context)
        }
        if parts.contains(.learn) {
            figures += try FleetLearnBench.run(context.fleetLearn, work: work.appendingPathComponent("learn"), edgeq: edgeq, context: context)
        } else {
            figures.append(BenchFigure(bench: "fleet", figure: "cart-pole: time until every gateway's model reaches 475, 4 gateways ÷ 1",
                                       value: nil, unit: "×", better: .lower,
                                       reason: "not measured: the learn part did not run (edgeq bench fleet --parts learn)"))
        }
        if parts.contains(.thermal) {
            figures += try FleetThermalBench.run(work: work.appendingPathComponent("thermal"), context: context)
        } else {
            figures.append(BenchFigure(bench: "fleet", figure: FleetThermalBench.headline, value: nil, unit: "% cheaper than the PI", better: .higher,
                                       reason: "not measured: the thermal part did not run (edgeq bench fleet --parts thermal)"))
        }
        return figures
    }

    // MARK: - The shipping settings

    /// The `fleet` keys of the shipping gateway in the latency rounds, and the shipper's
    /// priority and compression for the ingest's shippers too: the bench's default (batches of
    /// 100 rows every 100 ms), or `$EDGEQ_BENCH_FLEET_SHIPPING` for a comparison — any keys of
    /// the mapping's `fleet` section but its topic, e.g. `batch_rows: 500, interval: 1s` or
    /// `batch_rows: 100, interval: 100ms, priority: idle, deflate_level: 1`. Checked as the
    /// gateway checks its mapping (an unknown key or a bad value stops the bench at once).
    struct ShippingSettings {
        static let defaultKeys = "batch_rows: 100, interval: 100ms"
        /// The keys as given (the figures' names quote them when they are not the default).
        let keys: String
        /// The `fleet` section they make.
        let fleet: FleetConfig

        init() throws {
            keys = ProcessInfo.processInfo.environment["EDGEQ_BENCH_FLEET_SHIPPING"] ?? Self.defaultKeys
            let mapping = Anchors.packageRoot().appendingPathComponent("topics/bench.yaml")
            guard let text = try? String(contentsOf: mapping, encoding: .utf8) else {
                throw BenchError.failed("cannot read \(mapping.path) (run the bench from the package folder)")
            }
            do {
                guard let f = try TopicMap.parse(yaml: Self.shippingMapping(text, keys: keys), file: "EDGEQ_BENCH_FLEET_SHIPPING").fleet else {
                    throw BenchError.failed("the shipping mapping has no fleet section")
                }
                fleet = f
            } catch let e as BenchError {
                throw e
            } catch {
                throw BenchError.failed("$EDGEQ_BENCH_FLEET_SHIPPING='\(keys)' does not make a valid fleet section: \(error)")
            }
        }

        /// `mapping` with the shipping gateway's `fleet` section.
        static func shippingMapping(_ mapping: String, keys: String) -> String {
            mapping + "\nfleet: {topic: \(fleetTopic), \(keys), window: 4, ack_timeout: 10s}\n"
        }

        /// How the shipper's threads run and its batches are compressed, for the progress lines.
        var shipperSummary: String {
            "shipper priority \(fleet.priority.rawValue), deflate level \(fleet.deflateLevel)"
        }
    }

    // MARK: - Ingest

    static func ingest(_ o: FleetOptions, shipping: ShippingSettings, work: URL, edgeq: String, context: BenchContext) throws -> [BenchFigure] {
        let gateways = (1...o.gateways).map { "bench-\($0)" }
        let n = o.rowsPerGateway
        context.progress("filling \(gateways.count) logs with \(n) rows each")
        var logPaths: [String: String] = [:]
        for g in gateways {
            let dir = work.appendingPathComponent(g)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let path = dir.appendingPathComponent(ExperienceLog.defaultFileName).path
            try fill(path: path, gateway: g, rows: n, seed: gateways.firstIndex(of: g) ?? 0)
            logPaths[g] = path
        }

        let broker = try MosquittoBroker()
        defer { broker.stop() }
        let learnerData = work.appendingPathComponent("learner")
        let learner = try startLearner(edgeq: edgeq, broker: broker, data: learnerData, work: work)
        defer { _ = learner.stop(grace: 10) }

        var logger = Logger(label: "edgeq.bench.fleet") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .warning
        var config = FleetConfig(topic: fleetTopic)
        config.batchRows = o.batchRows
        config.interval = 0.1
        config.models = false   // shipping only: no fleet model subscription
        config.priority = shipping.fleet.priority
        config.deflateLevel = shipping.fleet.deflateLevel
        let shippers = try gateways.map { g -> FleetShipper in
            let base = try MQTTConfiguration(url: broker.url, clientID: "bench-\(g)")
            return try FleetShipper(config: config, gatewayID: g, dataDirectory: work.appendingPathComponent(g),
                                    logPath: logPaths[g] ?? "", base: base, fingerprint: "edgeq-bench-fleet",
                                    registry: MetricsRegistry(), logger: logger)
        }
        context.progress("shipping \(gateways.count) × \(n) rows to one learner (\(shipping.shipperSummary))")
        let learnerCPU0 = MQTTBench.processCPUSeconds(learner.pid), selfCPU0 = MQTTBench.processCPUSeconds(getpid())
        let clock = ContinuousClock()
        let start = clock.now
        for s in shippers { s.start() }
        let deadline = Date().addingTimeInterval(max(120, Double(n * gateways.count) / 2_000))
        var done = false
        while !done && Date() < deadline {
            usleep(2_000)
            done = shippers.allSatisfy { $0.current.acked == Int64(n) }
        }
        let elapsed = clock.now - start
        let learnerCPU1 = MQTTBench.processCPUSeconds(learner.pid), selfCPU1 = MQTTBench.processCPUSeconds(getpid())
        for s in shippers { s.stop() }
        guard done else {
            let where_ = zip(gateways, shippers).map { "\($0.0) acked \($0.1.current.acked)" }.joined(separator: ", ")
            throw BenchError.failed("fleet ingest did not finish in time: \(where_); learner log: \(lastLine(learnerLog(work)))")
        }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let total = gateways.count * n
        let rate = Double(total) / seconds
        context.progress(String(format: "ingest: %d rows in %.2f s: %.0f rows/s", total, seconds, rate))
        // Where the CPU went: the learner process, and this process (the shippers: reading the
        // logs, encoding, deflating, publishing; and the polling of their figures).
        var learnerPerRow: Double?, shippersPerRow: Double?
        if let a = learnerCPU0, let b = learnerCPU1 { learnerPerRow = (b - a) / Double(total) * 1e6 }
        if let a = selfCPU0, let b = selfCPU1 { shippersPerRow = (b - a) / Double(total) * 1e6 }
        context.progress(String(format: "ingest CPU per row: learner %.1f us, shippers %.1f us", learnerPerRow ?? .nan, shippersPerRow ?? .nan))

        // The shippers' end.
        let figures = shippers.map(\.current)
        let acked = figures.reduce(0) { $0 + Int($1.acked) }
        let sentAgain = figures.reduce(0) { $0 + Int($1.rowsShipped) } - total
        // The learner's end: the fleet log read back, row by row.
        let fleet: FleetLog
        do {
            fleet = try FleetLog(dataDirectory: learnerData.path)
        } catch {
            throw BenchError.failed("cannot read the fleet log: \(error)")
        }
        var stored = 0, twice = 0, missing = 0, dropped = 0
        for g in gateways {
            let rows = try fleet.transitions(gateway: g)
            let ids = Set(rows.map(\.id))
            stored += ids.count
            twice += rows.count - ids.count
            missing += (1...Int64(n)).reduce(0) { $0 + (ids.contains($1) ? 0 : 1) }
        }
        for s in try fleet.gateways() where gateways.contains(s.gateway) { dropped += Int(s.duplicates) }
        context.progress("ingest counts: acknowledged \(acked), stored \(stored), missing \(missing), stored twice \(twice), sent again \(sentAgain), copies dropped \(dropped)")

        let label = "ingest \(gateways.count) gateways → 1 learner"
        func count(_ name: String, _ v: Int, _ better: BenchFigure.Better, anchor: String? = nil, expected: Int? = nil) -> BenchFigure {
            BenchFigure(bench: "fleet", figure: "\(label): \(name)", value: Double(v), unit: "rows",
                        anchor: anchor, anchorValue: expected.map(Double.init), better: better)
        }
        return [
            BenchFigure(bench: "fleet", figure: "\(label): transitions stored and acknowledged per second (batches of \(o.batchRows))",
                        value: rate, unit: "rows/s", better: .higher),
            BenchFigure(bench: "fleet", figure: "\(label): learner process CPU time per row (decode, store, acknowledge)",
                        value: learnerPerRow, unit: "us", better: .lower),
            BenchFigure(bench: "fleet", figure: "\(label): rows per learner CPU-second (one learner's ceiling on one core)",
                        value: learnerPerRow.map { 1e6 / $0 }, unit: "rows/s", better: .higher),
            BenchFigure(bench: "fleet", figure: "\(label): shippers' CPU time per row (read, encode, deflate, publish; all 8 in the bench process)",
                        value: shippersPerRow, unit: "us", better: .lower),
            count("rows acknowledged (shippers' cursors)", acked, .higher, anchor: "rows logged", expected: total),
            count("rows stored (fleet log, read back)", stored, .higher, anchor: "rows logged", expected: total),
            count("rows lost (logged, not in the fleet log)", missing, .lower),
            count("rows stored twice", twice, .lower),
            count("rows sent more than once (shippers)", sentAgain, .lower),
            count("copies dropped by the learner", dropped, .lower),
        ]
    }

    /// Fills a gateway log at `path` with `rows` plant-like rows through the gateway's log writer.
    static func fill(path: String, gateway: String, rows: Int, seed: Int) throws {
        do {
            let log = try ExperienceLog.open(path: path, gatewayID: gateway)
            var options = TransitionWriter.Options()
            options.signalNames = ["zone_temp", "supply_temp"]
            options.maxBatchRows = 5_000
            let writer = try log.makeWriter(options: options)
            // The state moves from row to row (next becomes the following row's state), as on a plant:
            // a constant state would compress better than a plant's rows and flatter the ingest rate.
            var state = (0..<12).map { Float(sin(Double($0 + seed))) * 0.5 }
            for i in 0..<rows {
                let k = Double(i)
                let next = state.enumerated().map { j, v in max(-1, min(1, v * 0.98 + Float(sin(k * 0.013 + Double(j))) * 0.03)) }
                let t = Transition(time: 1_790_000_000 + k, tick: Int64(i), episode: 0, state: state, action: i % 3, actor: .incumbent,
                                   reward: -abs(sin(k * 0.01)), nextState: next, mode: .shadow, modelVersion: "3",
                                   qValues: [Float(sin(k)), Float(cos(k)), 0.5], modelAction: i % 3,
                                   signals: [21 + sin(k * 0.01), 35 + cos(k * 0.01)],
                                   nextSignals: [21 + sin((k + 1) * 0.01), 35 + cos((k + 1) * 0.01)])
                state = next
                switch writer.submit(t) {
                case .queued: break
                case .queuedOverCapacity:
                    // Queued; let the writer catch up before the next one.
                    while writer.metrics.queueDepth > options.queueCapacity / 2 { usleep(1_000) }
                default:
                    throw BenchError.failed("the log writer refused a row of \(path)")
                }
            }
            try writer.close(timeout: 300)
        } catch {
            throw BenchError.failed("cannot fill the log \(path): \(error)")
        }
    }

    /// Starts `edgeq learner` on `broker` and waits for its online status; `nice` runs it at that
    /// niceness (through /usr/bin/nice, which execs it: the child's pid is the learner's).
    /// `idle`: in `SCHED_IDLE` (through /usr/bin/chrt) instead.
    static func startLearner(edgeq: String, broker: MosquittoBroker, data: URL, work: URL, nice: Int = 0, idle: Bool = false) throws -> ChildProcess {
        let file = work.appendingPathComponent("learner.yaml").path
        try "fleet: \(fleetTopic)\ngroup: bench\nid: l1\nstatus_interval: 1s\n".write(toFile: file, atomically: true, encoding: .utf8)
        let watcher = try client(broker, subscribe: "\(fleetTopic)/learner/l1/status")
        defer { watcher.stop() }
        let args = ["learner", "--config", file, "--broker", broker.url, "--data", data.path, "--log-level", "warning"]
        let logPath = work.appendingPathComponent("learner.log").path
        let learner = try idle ? ChildProcess("/usr/bin/chrt", ["--idle", "0", edgeq] + args, stdoutPath: logPath, stderrPath: logPath)
            : nice == 0 ? ChildProcess(edgeq, args, stdoutPath: logPath, stderrPath: logPath)
            : ChildProcess("/usr/bin/nice", ["-n", String(nice), edgeq] + args, stdoutPath: logPath, stderrPath: logPath)
        return try awaitOnline(learner, watcher: watcher, work: work)
    }

    /// Waits up to 60 s for `learner`'s status on `watcher` (subscribed to it) to say online;
    /// kills it and throws with the last line of its log (work/learner.log) otherwise.
    static func awaitOnline(_ learner: ChildProcess, watcher: MQTTClient, work: URL) throws -> ChildProcess {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            guard let m = watcher.receive(timeout: 0.2) else {
                if !learner.isRunning { break }
                continue
            }
            if String(decoding: m.payload, as: UTF8.self).contains(#""state":"online""#) { return learner }
        }
        learner.signal(SIGKILL)
        throw BenchError.failed("the learner did not come online: \(lastLine(learnerLog(work)))")
    }

    static func learnerLog(_ work: URL) -> String {
        (try? String(contentsOf: work.appendingPathComponent("learner.log"), encoding: .utf8)) ?? ""
    }

    static func client(_ broker: MosquittoBroker, subscribe filter: String) throws -> MQTTClient {
        var cfg = try MQTTConfiguration(url: broker.url, clientID: "bench-\(UUID().uuidString.prefix(8))")
        cfg.inboundCapacity = 10_000
        var quiet = Logger(label: "edgeq.bench.fleet") { StreamLogHandler.standardError(label: $0) }
        quiet.logLevel = .warning
        let c = try MQTTClient(cfg, logger: quiet)
        try c.subscribe(filter, qos: .atLeastOnce)
        c.start()
        try c.waitUntilConnected(timeout: 10)
        return c
    }

    // MARK: - Decision latency while shipping

    /// One `edgeq run` process behind its own broker, with the client that times its decisions.
    final class Subject {
        let name: String
        let broker: MosquittoBroker
        let child: ChildProcess
        let driver: MQTTClient
        let log: String
        var nextID = 1
        /// The last payload received that was not the answer waited for (for a failure message).
        var stray = ""
        var p50s: [Double] = [], p99s: [Double] = [], cpu: [Double] = []
        /// Each run's round trips (µs), in the order measured: the pooled p99's samples.
        var samples: [[Double]] = []
        /// Per decision, per run (µs): CPU time of the shipper's threads, and the time the other
        /// threads of the gateway waited for a core (`/proc/<pid>/task/<tid>/schedstat`).
        var fleetCPU: [Double] = [], otherWait: [Double] = []

        init(name: String, edgeq: String, mapping: String, data: URL, broker: MosquittoBroker) throws {
            self.name = name
            self.broker = broker
            log = data.appendingPathComponent("gateway.log").path
            child = try ChildProcess(edgeq, ["run", "--config", mapping, "--broker", broker.url, "--data", data.path,
                                             "--mode", "control", "--log-level", "warning"], stdoutPath: log, stderrPath: log)
            driver = try FleetBench.client(broker, subscribe: "bench/b")
            // Ready when a decision comes back.
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline, child.isRunning {
                if roundTrip(timeout: 0.5) != nil { return }
            }
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            close()
            throw BenchError.failed("the gateway \(name) did not answer: \(lastLine(text))")
        }

        func close() {
            driver.stop()
            _ = child.stop(grace: 10)
        }

        /// One decision: a state on bench/a, its answer on bench/b; the round trip in µs (nil: none in time).
        func roundTrip(timeout: Double = 2) -> Double? {
            let id = nextID
            nextID += 1
            let x = (0..<8).map { String(format: "%.3f", sin(Double(id * 8 + $0) * 0.1)) }.joined(separator: ",")
            let clock = ContinuousClock()
            let start = clock.now
            do {
                try driver.publish("bench/a", #"{"id":\#(id),"x":[\#(x)]}"#, qos: .atMostOnce)
            } catch {
                stray = "publish: \(error)"
                return nil
            }
            let needle = Array(#"{"id":\#(id),"#.utf8)
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                guard let m = driver.receive(timeout: 0.1) else { continue }
                if m.payload.starts(with: needle) {
                    let d = clock.now - start
                    return Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
                }
                stray = String(decoding: m.payload.prefix(100), as: UTF8.self)
            }
            return nil
        }

        /// The gateway's retained status now (waits up to 6 s for a fresh one), for a failure message.
        func status() -> String {
            guard let c = try? FleetBench.client(broker, subscribe: "+/+/status") else { return "?" }
            defer { c.stop() }
            var last = ""
            let deadline = Date().addingTimeInterval(6)
            while Date() < deadline {
                if let m = c.receive(timeout: 0.2) { last = String(decoding: m.payload, as: UTF8.self) }
            }
            return last
        }

        /// Each thread of `pid`: its name, CPU time and time waiting on a run queue (ns).
        static func threadTimes(_ pid: pid_t) -> [Int: (name: String, run: Double, wait: Double)] {
            var out: [Int: (name: String, run: Double, wait: Double)] = [:]
            let dir = "/proc/\(pid)/task"
            for t in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
                guard let tid = Int(t),
                      let stat = try? String(contentsOfFile: "\(dir)/\(t)/schedstat", encoding: .utf8) else { continue }
                let f = stat.split(separator: " ")
                guard f.count >= 2, let run = Double(f[0]), let wait = Double(f[1]) else { continue }
                let name = (try? String(contentsOfFile: "\(dir)/\(t)/comm", encoding: .utf8))?
                    .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
                out[tid] = (name, run, wait)
            }
            return out
        }

        /// `warmup` then `count` round trips one at a time; appends p50, p99 and CPU per decision.
        /// With `pace`, the i-th decision starts at i / pace seconds after the first (never
        /// before the previous one came back): a plant's cadence, not back to back.
        func run(count: Int, warmup: Int, pace: Double? = nil) throws {
            let cpu0 = MQTTBench.processCPUSeconds(child.pid)
            let threads0 = Self.threadTimes(child.pid)
            let start = DispatchTime.now().uptimeNanoseconds
            var sent = 0
            func waitForSlot() {
                defer { sent += 1 }
                guard let pace else { return }
                let due = start + UInt64(Double(sent) / pace * 1e9)
                var now = DispatchTime.now().uptimeNanoseconds
                while due > now {
                    usleep(UInt32(min((due - now) / 1_000, 500_000)))
                    now = DispatchTime.now().uptimeNanoseconds
                }
            }
            var missed = 0
            for _ in 0..<warmup {
                waitForSlot()
                if roundTrip() == nil { missed += 1 }
            }
            var samples: [Double] = []
            samples.reserveCapacity(count)
            for _ in 0..<count {
                waitForSlot()
                guard let us = roundTrip() else {
                    throw BenchError.failed("\(name): decision \(nextID - 1) did not come back within 2 s (warm-up: \(missed) of \(warmup) missing; \(stray)); the gateway's status: \(status())")
                }
                samples.append(us)
            }
            usleep(200_000)   // the log commit (and the shipping) the decisions left behind counts
            if let cpu0, let cpu1 = MQTTBench.processCPUSeconds(child.pid) {
                cpu.append((cpu1 - cpu0) / Double(count + warmup) * 1e6)
            }
            var fleetRun = 0.0, wait = 0.0
            for (tid, t) in Self.threadTimes(child.pid) {
                let before = threads0[tid]
                if t.name.hasPrefix(FleetShipper.threadName) {
                    fleetRun += t.run - (before?.run ?? 0)
                } else {
                    wait += t.wait - (before?.wait ?? 0)
                }
            }
            fleetCPU.append(fleetRun / Double(count + warmup) / 1e3)
            otherWait.append(wait / Double(count + warmup) / 1e3)
            self.samples.append(samples)
            samples.sort()
            p50s.append(samples[samples.count / 2])
            p99s.append(samples[min(samples.count - 1, Int(Double(samples.count) * 0.99))])
        }
    }

    static func latency(_ o: FleetOptions, shipping shippingSettings: ShippingSettings, work: URL, edgeq: String,
                        context: BenchContext) throws -> [BenchFigure] {
        let mappingPath = Anchors.packageRoot().appendingPathComponent("topics/bench.yaml")
        guard let text = try? String(contentsOf: mappingPath, encoding: .utf8) else {
            throw BenchError.failed("cannot read \(mappingPath.path) (run the bench from the package folder)")
        }
        // topics/bench.yaml turns the control group off (`promotion: {control_share: 0}`): in its
        // blocks the incumbent (nobody, here) would be in charge and the gateway would publish
        // nothing, which a round-trip driver would take for lost decisions.
        guard text.contains("control_share: 0") else {
            throw BenchError.failed("\(mappingPath.path) must turn the control group off (learning.promotion.control_share: 0)")
        }
        let plain = text
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let plainMapping = work.appendingPathComponent("bench.yaml").path
        let shippingMapping = work.appendingPathComponent("bench-fleet.yaml").path
        // The shipping gateway's fleet keys ($EDGEQ_BENCH_FLEET_SHIPPING for a comparison).
        let env = ProcessInfo.processInfo.environment
        let shippingKeys = shippingSettings.keys
        let map: TopicMap
        do {
            try plain.write(toFile: plainMapping, atomically: true, encoding: .utf8)
            try ShippingSettings.shippingMapping(plain, keys: shippingKeys).write(toFile: shippingMapping, atomically: true, encoding: .utf8)
            map = try TopicMap.load(path: plainMapping)
        } catch {
            throw BenchError.failed("cannot write or load the bench mappings in \(work.path): \(error)")
        }
        let plainData = work.appendingPathComponent("without"), shippingData = work.appendingPathComponent("with")
        for d in [plainData, shippingData] {
            try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
            try E2EBench.installBenchModel(for: map, in: d)
        }

        let plainBroker = try MosquittoBroker(), shippingBroker = try MosquittoBroker()
        defer { plainBroker.stop(); shippingBroker.stop() }
        let learnerData = work.appendingPathComponent("learner")
        // On a site the learner runs on another machine; here it shares the cores, so it runs
        // at the lowest priority: the figure is the gateway's own shipper, not the learner.
        // $EDGEQ_BENCH_FLEET_LEARNER=idle: the learner in SCHED_IDLE instead (for a comparison).
        let learnerIdle = env["EDGEQ_BENCH_FLEET_LEARNER"] == "idle"
        let learner = try startLearner(edgeq: edgeq, broker: shippingBroker, data: learnerData, work: work, nice: 19, idle: learnerIdle)
        defer { _ = learner.stop(grace: 10) }
        context.progress("starting the two gateways (shipping: \(shippingKeys); \(shippingSettings.shipperSummary); learner: \(learnerIdle ? "SCHED_IDLE" : "nice 19"))")
        let without = try Subject(name: "without shipping", edgeq: edgeq, mapping: plainMapping, data: plainData, broker: plainBroker)
        defer { without.close() }
        let shipping = try Subject(name: "while shipping", edgeq: edgeq, mapping: shippingMapping, data: shippingData, broker: shippingBroker)
        defer { shipping.close() }
        E2EBench.waitUntilIdle(without.child.pid, context: context)
        E2EBench.waitUntilIdle(shipping.child.pid, context: context)

        for r in 1...o.rounds {
            for s in [without, shipping] {
                try s.run(count: o.roundTrips, warmup: o.warmup, pace: o.pace)
                context.progress(String(format: "round %d %@: p50 %.1f us, p99 %.1f us, CPU %.1f us/decision (shipper threads %.1f us; other threads waited %.1f us for a core)",
                                        r, s.name, s.p50s.last ?? .nan, s.p99s.last ?? .nan, s.cpu.last ?? .nan,
                                        s.fleetCPU.last ?? .nan, s.otherWait.last ?? .nan))
            }
        }

        // The shipping gateway's rows all reach the fleet log (its log commits within 0.1 s).
        let logPath = shippingData.appendingPathComponent(ExperienceLog.defaultFileName).path
        var logged = 0, stored = 0
        let deadline = Date().addingTimeInterval(60)
        repeat {
            usleep(100_000)
            logged = (try? LogTail(path: logPath).rows(after: 0, limit: 10_000_000).count) ?? -1
            stored = ((try? FleetLog(dataDirectory: learnerData.path).gateways()) ?? [])
                .filter { $0.gateway == map.gateway.id }.reduce(0) { $0 + Int($1.rows) }
        } while stored != logged && Date() < deadline
        context.progress("the shipping gateway logged \(logged) rows; the fleet log holds \(stored)")
        // Where the time goes (on stderr only; medians over the rounds, µs per decision).
        let m = BenchFigure.median
        context.progress(String(format: "per decision, medians of the rounds: shipper threads' CPU %.1f us; the other threads' wait for a core %.1f us while shipping, %.1f us without",
                                m(shipping.fleetCPU) ?? .nan, m(shipping.otherWait) ?? .nan, m(without.otherWait) ?? .nan))

        func pairs(_ mine: [Double], _ theirs: [Double]) -> [(Double, Double?)] {
            mine.enumerated().map { i, v in (v, i < theirs.count ? theirs[i] : nil) }
        }
        let paced = o.pace.map { String(format: "; decisions paced at %g a second", $0) } ?? ""
        let label = shippingKeys == ShippingSettings.defaultKeys ? "decision round trip while shipping (batches of 100, every 100 ms\(paced))"
            : "decision round trip while shipping (\(shippingKeys)\(paced))"
        // The p99 of every round's round trips pooled per side, with the bootstrap interval on
        // the ratio (rounds drawn in pairs, then round trips inside each drawn round).
        let goal = 1.1
        let anchor = "the same gateway without shipping"
        let p99Figure: BenchFigure
        if let p = PooledQuantileRatio(rounds: zip(shipping.samples, without.samples).map { (value: $0, anchor: $1) }, quantile: 0.99) {
            context.progress(String(format: "p99 pooled over %d rounds (%d round trips a side): %.1f us while shipping, %.1f us without: %.3f× (%.0f%% interval %.3f–%.3f; %d bootstrap resamples) — goal ≤ %.1f×: %@",
                                    p.rounds, p.samples.value, p.value, p.anchorValue, p.ratio, p.level * 100, p.low, p.high, p.resamples,
                                    goal, p.verdict(atMost: goal).rawValue))
            p99Figure = .pooled(bench: "fleet", figure: "\(label): p99 of all rounds pooled (goal ≤ 1.1×)", unit: "us", anchor: anchor, p, better: .lower)
        } else {
            p99Figure = BenchFigure(bench: "fleet", figure: "\(label): p99 of all rounds pooled (goal ≤ 1.1×)", value: nil, unit: "us",
                                    anchor: anchor, better: .lower, reason: "not measured: no round trips to pool")
        }
        return [
            .rounds(bench: "fleet", figure: "\(label): p50", unit: "us", anchor: anchor,
                    pairs: pairs(shipping.p50s, without.p50s), better: .lower),
            p99Figure,
            .rounds(bench: "fleet", figure: "\(label): p99, median of the per-round ratios", unit: "us", anchor: anchor,
                    pairs: pairs(shipping.p99s, without.p99s), better: .lower),
            .rounds(bench: "fleet", figure: "\(label): CPU per decision (all threads)", unit: "us", anchor: "the same gateway without shipping",
                    pairs: pairs(shipping.cpu, without.cpu), better: .lower),
            BenchFigure(bench: "fleet", figure: "\(label): rows in the fleet log", value: Double(stored), unit: "rows",
                        anchor: "rows the gateway logged", anchorValue: Double(logged), better: .higher),
        ]
    }
}
