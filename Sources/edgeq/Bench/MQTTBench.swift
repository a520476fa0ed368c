import EdgeQSystem
import Foundation

/// `edgeq bench mqtt`: an MQTT echo built on EdgeQ's client (`edgeq mqtt-echo`, its own
/// process) against the anchors' C libmosquitto echo `echo_c`, both driven by the anchors'
/// load generator `bench_client`, each behind its own broker with the same settings (the
/// test fixture: loopback, `set_tcp_nodelay true`), QoS 0, in one run.
///
/// Method from the anchors' `mqtt/run_mqtt.py`: latency = 3 runs × 1,000 round trips one
/// at a time after 200 warm-up round trips (median of the runs' p50 and p99); rate = closed
/// loop with K round trips outstanding, K in {1, 4, 16, 64, 256, 1024}, 4 s each, then the
/// best K with zero loss run twice more for 5 s (median of three).
///
/// Two echoes of EdgeQ's client run: `EdgeQ` hands every message to another thread and
/// publishes from there (`receive`, as control messages go), `EdgeQ inline` republishes inside
/// libmosquitto's message callback on the network thread (`start(handler:)`, the gateway's
/// decision path). Figures with `_inline` are the second's.
///
/// One difference, for a shared machine whose load drifts within minutes: both echoes run
/// side by side and every run alternates between them (EdgeQ, echo_c, EdgeQ, …), so a load
/// change hits both sides of a ratio alike. Only one is driven at a time; the other idles.
/// `--quick`: 1 latency run, K in {64, 256} for 2 s, no repeats.
enum MQTTBench {
    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        // bench_client (the driver) comes from the anchors even with --no-anchors.
        let anchors = try Anchors.prepare(context)
        let benchClient = anchors.program("bench_client")
        let edgeq = try selfExecutable()

        var echoes = [try Echo(name: "EdgeQ", benchClient: benchClient) { port in
            (edgeq, ["mqtt-echo", "--broker", "mqtt://127.0.0.1:\(port)", "--qos", "0"])
        }, try Echo(name: "EdgeQ inline", benchClient: benchClient) { port in
            (edgeq, ["mqtt-echo", "--broker", "mqtt://127.0.0.1:\(port)", "--qos", "0", "--inline"])
        }]
        if context.withAnchors {
            echoes.append(try Echo(name: "echo_c", benchClient: benchClient) { port in
                (anchors.program("echo_c"), [String(port), "0"])
            })
        }
        defer { for e in echoes { e.close() } }
        let ours = echoes[0], inline = echoes[1]
        let theirs = echoes.count > 2 ? echoes[2] : nil

        // Latency, alternating.
        ours.child.signal(SIGUSR1)  // forget the readiness probe's hand-off samples
        try latencyRuns(echoes, runs: context.quick ? 1 : 3, context: context)
        let handoff = ours.handoff()
        if let h = handoff {
            context.progress(String(format: "EdgeQ hand-off inside the echo: p50 %.1f us, p99 %.1f us", h.p50, h.p99))
        }

        // Rate: the window sweep, alternating, then the best window of each again.
        try rateSweep(echoes, windows: context.quick ? [64, 256] : [1, 4, 16, 64, 256, 1024],
                      seconds: context.quick ? 2 : 4, context: context)
        // Round 1 of the rate is the sweep's best of each (the sweep alternates window by window).
        var ratePairs: [(Double, Double?)] = [(ours.rates.first ?? .nan, theirs?.rates.first)]
        var inlineRatePairs: [(Double, Double?)] = [(inline.rates.first ?? .nan, theirs?.rates.first)]
        if !context.quick {
            for _ in 0..<2 {
                var round: [Double?] = []
                for e in echoes {
                    guard let best = e.best else { round.append(nil); continue }
                    let r = try e.drive(["--duration", "5", "--window", String(best.window)])
                    if (r["lost"] ?? 1) == 0, (r["stalled"] ?? 1) == 0, let rate = r["rate_msg_s"] {
                        e.rates.append(rate)
                        round.append(rate)
                    } else {
                        round.append(nil)
                    }
                }
                let anchorRate = round.count > 2 ? round[2] : nil
                if let mine = round[0] { ratePairs.append((mine, anchorRate)) }
                if let mine = round[1] { inlineRatePairs.append((mine, anchorRate)) }
            }
            for e in echoes {
                context.progress("\(e.name) best window \(e.best?.window ?? 0): \(e.rates.map { String(format: "%.0f", $0) }.joined(separator: ", ")) msg/s")
            }
        }

        // Each latency run alternated EdgeQ and echo_c: run i of each is round i.
        func pairs(_ mine: [Double], _ other: [Double]?) -> [(Double, Double?)] {
            mine.enumerated().map { i, v in (v, other.flatMap { i < $0.count ? $0[i] : nil }) }
        }
        let missing = context.withAnchors ? "not measured" : "not measured: --no-anchors"
        func figure(_ name: String, _ value: Double, _ unit: String, _ better: BenchFigure.Better) -> BenchFigure {
            BenchFigure(bench: "mqtt", figure: name, value: value, unit: unit, better: better)
        }
        var figures: [BenchFigure] = [
            .rounds(bench: "mqtt", figure: "rtt_p50_qos0", unit: "us", anchor: "echo_c", pairs: pairs(ours.p50s, theirs?.p50s),
                    better: .lower, anchorMissing: missing),
            .rounds(bench: "mqtt", figure: "rtt_p99_qos0", unit: "us", anchor: "echo_c", pairs: pairs(ours.p99s, theirs?.p99s),
                    better: .lower, anchorMissing: missing),
            .rounds(bench: "mqtt", figure: "rate_no_loss_qos0", unit: "msg/s", anchor: "echo_c", pairs: ratePairs,
                    better: .higher, anchorMissing: missing),
            // The same client answering inside libmosquitto's callback, as the gateway decides.
            .rounds(bench: "mqtt", figure: "rtt_p50_qos0_inline", unit: "us", anchor: "echo_c", pairs: pairs(inline.p50s, theirs?.p50s),
                    better: .lower, anchorMissing: missing),
            .rounds(bench: "mqtt", figure: "rtt_p99_qos0_inline", unit: "us", anchor: "echo_c", pairs: pairs(inline.p99s, theirs?.p99s),
                    better: .lower, anchorMissing: missing),
            .rounds(bench: "mqtt", figure: "rate_no_loss_qos0_inline", unit: "msg/s", anchor: "echo_c", pairs: inlineRatePairs,
                    better: .higher, anchorMissing: missing),
            .rounds(bench: "mqtt", figure: "cpu_per_message", unit: "us/msg", anchor: "echo_c",
                    pairs: pairs(ours.cpuPerMessage, theirs?.cpuPerMessage), better: .lower, anchorMissing: missing),
            .rounds(bench: "mqtt", figure: "cpu_per_message_inline", unit: "us/msg", anchor: "echo_c",
                    pairs: pairs(inline.cpuPerMessage, theirs?.cpuPerMessage), better: .lower, anchorMissing: missing),
        ]
        // The hand-off alone (network thread → consumer thread), inside the echo during
        // the latency runs; echo_c has no hand-off, so no anchor.
        if let h = handoff {
            figures.append(figure("handoff_p50", h.p50, "us", .lower))
            figures.append(figure("handoff_p99", h.p99, "us", .lower))
        }
        return figures
    }

    /// Latency: `runs` × (1,000 round trips one at a time after 200 warm-up), alternating
    /// between the echoes; appends each run's p50 and p99 to the echo's `p50s` / `p99s`.
    ///
    /// - Throws: `BenchError.failed` when a run does not bring back its 1,000 samples.
    ///
    /// Each run also records the echo process's CPU time per message (user + system, all its
    /// threads, over the run's 1,200 messages, read 0.2 s after the last reply so that work
    /// the message left behind — a gateway's log commit — is counted) in `cpuPerMessage`, µs.
    static func latencyRuns(_ echoes: [Echo], runs: Int, label: String = "latency", context: BenchContext) throws {
        let measured = 1_000, warmup = 200
        for i in 0..<runs {
            for e in echoes {
                let cpu0 = processCPUSeconds(e.child.pid)
                let r = try e.drive(["--n", String(measured), "--warmup", String(warmup)])
                usleep(200_000)
                let cpu1 = processCPUSeconds(e.child.pid)
                guard let p50 = r["p50_us"], let p99 = r["p99_us"], (r["samples"] ?? 0) >= Double(measured) else {
                    throw BenchError.failed("\(e.name): \(label) run \(i + 1) incomplete: \(r)")
                }
                var cpuNote = ""
                if let cpu0, let cpu1 {
                    let perMessage = (cpu1 - cpu0) / Double(measured + warmup) * 1e6
                    e.cpuPerMessage.append(perMessage)
                    cpuNote = String(format: ", CPU %.1f us/msg", perMessage)
                }
                context.progress(String(format: "%@ %@ run %d: p50 %.1f us, p99 %.1f us%@", e.name, label, i + 1, p50, p99, cpuNote))
                e.p50s.append(p50)
                e.p99s.append(p99)
            }
        }
    }

    /// CPU time (user + system, every thread, exited threads included) a process has used so
    /// far, in seconds: its CPU-time clock (`clock_getcpuclockid`, ns resolution), else
    /// /proc/PID/stat's utime + stime (clock ticks). Nil when the process is gone.
    static func processCPUSeconds(_ pid: pid_t) -> Double? {
        var clock = clockid_t()
        if clock_getcpuclockid(pid, &clock) == 0 {
            var ts = timespec()
            if clock_gettime(clock, &ts) == 0 { return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9 }
        }
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // Fields after the command name: state is field 3, utime 14, stime 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(max(sysconf(Int32(_SC_CLK_TCK)), 1))
    }

    /// Rate: a closed-loop run of `seconds` per window (round trips outstanding), alternating
    /// between the echoes; records every window without loss in `lossless` and the best in
    /// `best`, and sets `rates` to the best rate.
    ///
    /// - Throws: `BenchError.failed` when an echo loses messages at every window.
    static func rateSweep(_ echoes: [Echo], windows: [Int], seconds: Int, context: BenchContext) throws {
        for w in windows {
            for e in echoes {
                let r = try e.drive(["--duration", String(seconds), "--window", String(w)])
                let lost = r["lost"] ?? 1
                let stalled = r["stalled"] ?? 1
                let rate = r["rate_msg_s"] ?? 0
                context.progress(String(format: "%@ window %4d: %.0f msg/s, lost %.0f%@", e.name, w, rate, lost,
                                        stalled > 0 ? " (stalled)" : ""))
                if lost == 0, stalled == 0 {
                    e.lossless.append((w, rate))
                    if rate > (e.best?.rate ?? 0) { e.best = (w, rate) }
                }
            }
        }
        for e in echoes {
            guard let best = e.best else { throw BenchError.failed("\(e.name): no window ran without loss") }
            e.rates = [best.rate]
        }
    }

    /// One echo process behind its own broker, and what was measured on it.
    final class Echo {
        let name: String
        let broker: MosquittoBroker
        let child: ChildProcess
        let benchClient: String
        let log: String
        var p50s: [Double] = []
        var p99s: [Double] = []
        /// CPU time of the echo process per message of each latency run, µs.
        var cpuPerMessage: [Double] = []
        var rates: [Double] = []
        var best: (window: Int, rate: Double)?
        /// The windows of the sweep that ran without loss, with their rates.
        var lossless: [(window: Int, rate: Double)] = []

        init(name: String, benchClient: String, command: (UInt16) -> (String, [String])) throws {
            self.name = name
            self.benchClient = benchClient
            broker = try MosquittoBroker()
            let (exe, args) = command(broker.port)
            log = broker.directory.appendingPathComponent("echo.log").path
            child = try ChildProcess(exe, args, stdoutPath: broker.directory.appendingPathComponent("echo.out").path,
                                     stderrPath: log)
            // Ready when a short probe run gets its round trips back (run_mqtt.py waits 1.5 s).
            var ready = false
            for _ in 0..<20 where !ready {
                usleep(250_000)
                guard child.isRunning else { break }
                if let r = try? drive(["--n", "20", "--warmup", "0"]), (r["samples"] ?? 0) >= 20 { ready = true }
            }
            guard ready else {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                child.stop(grace: 2)
                throw BenchError.failed("the echo \(exe) did not answer: \(text)\(broker.log())")
            }
        }

        func close() {
            child.stop(grace: 5)
            broker.stop()
        }

        /// Runs bench_client once against this echo and parses its key=value line.
        func drive(_ extra: [String]) throws -> [String: Double] {
            let args = ["--port", String(broker.port), "--qos", "0", "--pub", "bench/a", "--sub", "bench/b"] + extra
            let r = try ChildProcess.run(benchClient, args, timeout: 120)
            guard r.code == 0 || r.code == 3, let line = r.stdout.split(separator: "\n").last(where: { $0.contains("=") }) else {
                throw BenchError.failed("bench_client \(args.joined(separator: " ")) exited \(r.code): \(r.stderr)")
            }
            return MQTTBench.keyValues(line)
        }

        /// Asks `edgeq mqtt-echo` (SIGUSR1) for its hand-off percentiles since the last ask.
        func handoff() -> (p50: Double, p99: Double)? {
            child.signal(SIGUSR1)
            for _ in 0..<20 {
                usleep(100_000)
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                let lines = text.split(separator: "\n").filter { $0.hasPrefix("handoff ") }
                // The first line answers the probe reset; the second is the latency runs'.
                if lines.count >= 2, let line = lines.last {
                    let v = MQTTBench.keyValues(line)
                    if let p50 = v["p50_ns"], let p99 = v["p99_ns"] { return (p50 / 1000, p99 / 1000) }
                }
            }
            return nil
        }
    }

    /// The running executable (for `edgeq mqtt-echo`).
    static func selfExecutable() throws -> String {
        let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw BenchError.failed("cannot find the edgeq executable (\(path))")
        }
        return path
    }

    /// `key=value` pairs with numeric values.
    static func keyValues(_ line: Substring) -> [String: Double] {
        var values: [String: Double] = [:]
        for pair in line.split(separator: " ") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            if kv.count == 2, let v = Double(kv[1]) { values[String(kv[0])] = v }
        }
        return values
    }

    static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        guard !s.isEmpty else { return .nan }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
