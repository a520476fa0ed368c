import EdgeQSystem
import Foundation

/// `edgeq bench mqtt`: an MQTT echo built on EdgeQ's client (`edgeq mqtt-echo`, its own
/// process) against the anchors' C libmosquitto echo `echo_c`, both driven by the anchors'
/// load generator `bench_client`, each against a fresh broker with the same settings
/// (the test fixture: loopback, `set_tcp_nodelay true`), QoS 0, in one run.
///
/// Method copied from the anchors' `mqtt/run_mqtt.py`: latency = 3 runs × 1,000 round
/// trips one at a time after 200 warm-up round trips (median of the runs' p50 and p99);
/// rate = closed loop with K round trips outstanding, K in {1, 4, 16, 64, 256, 1024},
/// 4 s each, then the best K with zero loss run twice more for 5 s (median of three).
/// `--quick`: 1 latency run, K in {64, 256} for 2 s, no repeats.
enum MQTTBench {
    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        // bench_client (the driver) comes from the anchors even with --no-anchors.
        let anchors = try Anchors.prepare(context)
        let benchClient = anchors.program("bench_client")
        let edgeq = try selfExecutable()

        context.progress("EdgeQ echo (edgeq mqtt-echo)")
        let ours = try measure(context, benchClient: benchClient, reportsHandoff: true) { port in
            (edgeq, ["mqtt-echo", "--broker", "mqtt://127.0.0.1:\(port)", "--qos", "0"])
        }
        var theirs: Result?
        if context.withAnchors {
            context.progress("anchor echo_c (libmosquitto, C)")
            theirs = try measure(context, benchClient: benchClient) { port in
                (anchors.program("echo_c"), [String(port), "0"])
            }
        }
        func figure(_ name: String, _ value: Double, _ anchor: Double?, _ unit: String, _ better: BenchFigure.Better) -> BenchFigure {
            BenchFigure(bench: "mqtt", figure: name, value: value, unit: unit,
                        anchor: anchor == nil ? nil : "echo_c", anchorValue: anchor, better: better)
        }
        var figures = [
            figure("rtt_p50_qos0", ours.p50, theirs?.p50, "us", .lower),
            figure("rtt_p99_qos0", ours.p99, theirs?.p99, "us", .lower),
            figure("rate_no_loss_qos0", ours.rate, theirs?.rate, "msg/s", .higher),
        ]
        // The hand-off alone (network thread → consumer thread), inside the echo during
        // the latency runs; echo_c has no hand-off, so no anchor.
        if let h = ours.handoff {
            figures.append(figure("handoff_p50", h.p50, nil, "us", .lower))
            figures.append(figure("handoff_p99", h.p99, nil, "us", .lower))
        }
        return figures
    }

    struct Result {
        var p50: Double
        var p99: Double
        var rate: Double
        var handoff: (p50: Double, p99: Double)?
    }

    /// The running executable (for `edgeq mqtt-echo`).
    static func selfExecutable() throws -> String {
        let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw BenchError.failed("cannot find the edgeq executable (\(path))")
        }
        return path
    }

    /// Starts a broker and the echo, then drives it with bench_client.
    static func measure(_ context: BenchContext, benchClient: String, reportsHandoff: Bool = false,
                        echo: (UInt16) -> (String, [String])) throws -> Result {
        let broker = try MosquittoBroker()
        defer { broker.stop() }
        let (exe, args) = echo(broker.port)
        let log = broker.directory.appendingPathComponent("echo.log").path
        let child = try ChildProcess(exe, args, stdoutPath: broker.directory.appendingPathComponent("echo.out").path,
                                     stderrPath: log)
        defer { child.stop(grace: 5) }
        // Ready when a short probe run gets its round trips back (as run_mqtt.py waits 1.5 s).
        var ready = false
        for _ in 0..<20 where !ready {
            usleep(250_000)
            guard child.isRunning else { break }
            if let r = try? drive(benchClient, broker.port, ["--n", "20", "--warmup", "0"]),
               (r["samples"] ?? 0) >= 20 { ready = true }
        }
        guard ready else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw BenchError.failed("the echo \(exe) did not answer: \(text)\(broker.log())")
        }

        if reportsHandoff { child.signal(SIGUSR1) }  // forget the probe's samples
        let latencyRuns = context.quick ? 1 : 3
        var p50s: [Double] = []
        var p99s: [Double] = []
        for i in 0..<latencyRuns {
            let r = try drive(benchClient, broker.port, ["--n", "1000", "--warmup", "200"])
            guard let p50 = r["p50_us"], let p99 = r["p99_us"], (r["samples"] ?? 0) >= 1000 else {
                throw BenchError.failed("bench_client latency run \(i + 1) incomplete: \(r)")
            }
            context.progress(String(format: "  latency run %d: p50 %.1f us, p99 %.1f us", i + 1, p50, p99))
            p50s.append(p50)
            p99s.append(p99)
        }

        var handoff: (p50: Double, p99: Double)?
        if reportsHandoff {
            usleep(300_000)
            child.signal(SIGUSR1)
            usleep(500_000)
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").last(where: { $0.hasPrefix("handoff ") }) {
                var v: [String: Double] = [:]
                for pair in line.split(separator: " ") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    if kv.count == 2, let x = Double(kv[1]) { v[String(kv[0])] = x }
                }
                if let p50 = v["p50_ns"], let p99 = v["p99_ns"] {
                    handoff = (p50 / 1000, p99 / 1000)
                    context.progress(String(format: "  hand-off in the echo: p50 %.1f us, p99 %.1f us (%.0f samples)",
                                            p50 / 1000, p99 / 1000, v["samples"] ?? 0))
                }
            }
        }

        let windows = context.quick ? [64, 256] : [1, 4, 16, 64, 256, 1024]
        let sweepSeconds = context.quick ? "2" : "4"
        var best: (window: Int, rate: Double)?
        for w in windows {
            let r = try drive(benchClient, broker.port, ["--duration", sweepSeconds, "--window", String(w)])
            let lost = r["lost"] ?? 1
            let stalled = r["stalled"] ?? 1
            let rate = r["rate_msg_s"] ?? 0
            context.progress(String(format: "  window %4d: %.0f msg/s, lost %.0f%@", w, rate, lost, stalled > 0 ? " (stalled)" : ""))
            if lost == 0, stalled == 0, rate > (best?.rate ?? 0) { best = (w, rate) }
        }
        guard let best else { throw BenchError.failed("no window ran without loss") }
        var rates = [best.rate]
        if !context.quick {
            for _ in 0..<2 {
                let r = try drive(benchClient, broker.port, ["--duration", "5", "--window", String(best.window)])
                if (r["lost"] ?? 1) == 0, (r["stalled"] ?? 1) == 0, let rate = r["rate_msg_s"] { rates.append(rate) }
            }
            context.progress("  best window \(best.window): \(rates.map { String(format: "%.0f", $0) }.joined(separator: ", ")) msg/s")
        }
        return Result(p50: median(p50s), p99: median(p99s), rate: median(rates), handoff: handoff)
    }

    /// Runs bench_client once and parses its key=value line (numbers only).
    static func drive(_ benchClient: String, _ port: UInt16, _ extra: [String]) throws -> [String: Double] {
        let args = ["--port", String(port), "--qos", "0", "--pub", "bench/a", "--sub", "bench/b"] + extra
        let r = try ChildProcess.run(benchClient, args, timeout: 120)
        guard r.code == 0 || r.code == 3, let line = r.stdout.split(separator: "\n").last(where: { $0.contains("=") }) else {
            throw BenchError.failed("bench_client \(args.joined(separator: " ")) exited \(r.code): \(r.stderr)")
        }
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
