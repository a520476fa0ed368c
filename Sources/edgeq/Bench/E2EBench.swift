import EdgeQCore
import EdgeQGateway
import EdgeQMQTT
import EdgeQNet
import EdgeQSystem
import EdgeQTopicMap
import EdgeQTrust
import Foundation

/// `edgeq bench e2e`: the whole gateway, end to end through mosquitto on loopback.
///
/// `edgeq run --config topics/bench.yaml --mode control` runs as its own process with a
/// random int8 8-64-64-5 model installed in a temporary data directory: every
/// `{"id":N,"x":[8 numbers]}` on `bench/a` is a tick whose state is the 8 numbers, and the
/// chosen action is published as `{"id":N,"a":K}` on `bench/b`, where the anchors'
/// `bench_client` times the round trip. The anchors, in the same run and driven the same
/// way, each behind its own broker with the same settings: the C echo floor `echo_c`
/// (libmosquitto, no work) and the Python gateway `gateway/gateway_py.py` (paho + numpy,
/// the same 8-64-64-5 shape).
///
/// Method (the `mqtt` bench's helpers): latency = 3 × 1,000 round trips one at a time after
/// 200 warm-up ones (median of the runs' p50 and p99); rate = window sweep K in
/// {1, 4, 16, 64, 256, 1024}, 4 s each, then the best lossless K again for 30 s (a lower
/// lossless K when that loses messages). Every run alternates between the three processes.
/// CPU: `cpu_per_decision` is the CPU time (user + system, all threads) each process used per
/// message over each latency run (1,200 messages one at a time), EdgeQ's against echo_c's and
/// gateway_py's in the same round: time spent waiting for a core does not count, so the
/// machine's load moves it less than latency (contention still inflates it).
/// Latency and CPU ratios are medians of the per-round ratios (each latency run is a round).
/// Memory, from /proc/PID/status: the peak resident set (VmHWM) of each process after the
/// runs above, and the gateway's resident set after start and after the runs, both in total
/// (VmRSS: mostly pages of the binary and the shared libraries it touches) and its
/// own anonymous memory (RssAnon: heap, stacks, SQLite's cache), to see it stay flat.
/// The retraining comes after, and its peak is reported on its own (`peak_rss_with_retraining`).
/// Retraining: p99 while a retraining (`cmd/retrain`) runs on the gateway's own log,
/// against p99 just before it, in the same run.
/// `--quick`: 1 latency run, K in {64, 256} for 2 s, 5 s confirmation.
/// `$EDGEQ_BENCH_E2E_AB=1`: a second gateway with `--no-inline-decisions` as one more subject
/// (the A/B of the threading option in one run); `$EDGEQ_BENCH_E2E_RUNS=N`: N latency runs.
enum E2EBench {
    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        let anchors = try Anchors.prepare(context)
        let benchClient = anchors.program("bench_client")
        let selfPath = try MQTTBench.selfExecutable()
        let mapping = Anchors.packageRoot().appendingPathComponent("topics/bench.yaml")
        let map: TopicMap
        do {
            map = try TopicMap.load(path: mapping.path)
        } catch {
            throw BenchError.failed("cannot load \(mapping.path): \(error)")
        }

        let data = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-e2e-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        // $EDGEQ_BENCH_KEEP=1 keeps the data directory (model, log) for a look afterwards.
        let keep = ProcessInfo.processInfo.environment["EDGEQ_BENCH_KEEP"] == "1"
        defer {
            if keep { context.progress("data directory kept: \(data.path)") } else { try? FileManager.default.removeItem(at: data) }
        }
        try installBenchModel(for: map, in: data)
        // The retraining figure's cmd/retrain is signed, as an operator's (the gateway obeys
        // only signed commands).
        let operatorKey = try localOperatorKey(name: "bench-operator", dataDirectory: data)
        // The gateway runs from its own copy of the binary, as installed on a plant: when it
        // shares this (bench) process's file, the kernel keeps the start-up pages it hands
        // back (`--release-startup-pages`) because they are still mapped here.
        let edgeq = data.appendingPathComponent("edgeq").path
        do {
            try FileManager.default.copyItem(atPath: selfPath, toPath: edgeq)
        } catch {
            throw BenchError.failed("cannot copy \(selfPath) to \(edgeq): \(error)")
        }

        let gateway = try MQTTBench.Echo(name: "EdgeQ", benchClient: benchClient) { port in
            (edgeq, ["run", "--config", mapping.path, "--broker", "mqtt://127.0.0.1:\(port)", "--data", data.path,
                     "--mode", "control", "--log-level", "warning"])
        }
        var subjects = [gateway]
        defer { for s in subjects { s.close() } }
        let startRSS = memory(of: gateway.child.pid)
        // $EDGEQ_BENCH_E2E_AB=1 adds a second gateway with the hand-off to the decision thread
        // (`--no-inline-decisions`, its own data directory) as one more subject of every run:
        // the A/B of docs/benchmarks.md in one run.
        if ProcessInfo.processInfo.environment["EDGEQ_BENCH_E2E_AB"] == "1" {
            let dataB = data.appendingPathComponent("handoff")
            try FileManager.default.createDirectory(at: dataB, withIntermediateDirectories: true)
            try installBenchModel(for: map, in: dataB)
            subjects.append(try MQTTBench.Echo(name: "EdgeQ hand-off", benchClient: benchClient) { port in
                (edgeq, ["run", "--config", mapping.path, "--broker", "mqtt://127.0.0.1:\(port)", "--data", dataB.path,
                         "--mode", "control", "--log-level", "warning", "--no-inline-decisions"])
            })
        }
        if context.withAnchors {
            subjects.append(try MQTTBench.Echo(name: "echo_c", benchClient: benchClient) { port in
                (anchors.program("echo_c"), [String(port), "0"])
            })
            let python = try anchors.requirePython()
            let script = anchors.directory.appendingPathComponent("gateway/gateway_py.py").path
            subjects.append(try MQTTBench.Echo(name: "gateway_py", benchClient: benchClient) { port in
                (python, [script, String(port), "0", "numpy"])
            })
        }

        // Latency, one at a time, alternating (once every process has finished starting).
        for s in subjects { waitUntilIdle(s.child.pid, context: context) }
        // $EDGEQ_BENCH_E2E_RUNS: more alternating latency runs (for an A/B on a noisy machine).
        let latencyRuns = ProcessInfo.processInfo.environment["EDGEQ_BENCH_E2E_RUNS"].flatMap { Int($0) } ?? (context.quick ? 1 : 3)
        try MQTTBench.latencyRuns(subjects, runs: max(1, latencyRuns), context: context)

        // Rate: the sweep, then the best lossless window for the long run (30 s).
        try MQTTBench.rateSweep(subjects, windows: context.quick ? [64, 256] : [1, 4, 16, 64, 256, 1024],
                                seconds: context.quick ? 2 : 4, context: context)
        let longSeconds = context.quick ? 5 : 30
        var sustained: [String: (window: Int, rate: Double)] = [:]
        for s in subjects {
            // Best first; a window that loses messages over the long run is not the answer.
            for (window, _) in s.lossless.sorted(by: { $0.rate > $1.rate }) {
                let r = try s.drive(["--duration", String(longSeconds), "--window", String(window)])
                let rate = r["rate_msg_s"] ?? 0
                let ok = (r["lost"] ?? 1) == 0 && (r["stalled"] ?? 1) == 0
                context.progress(String(format: "%@ %d s at window %d: %.0f msg/s, lost %.0f", s.name, longSeconds, window,
                                        rate, r["lost"] ?? -1))
                if ok {
                    sustained[s.name] = (window, rate)
                    break
                }
            }
        }

        // Memory after the load, before the retraining (which holds its replay buffer).
        let endRSS = memory(of: gateway.child.pid)
        let anchorMemory = subjects.dropFirst().map { ($0.name, memory(of: $0.child.pid)) }

        // Decision latency while a retraining runs on the gateway's log.
        let retrain = try retrainLatency(gateway, map: map, operatorKey: operatorKey, context: context)
        let retrainRSS = memory(of: gateway.child.pid)

        // Figures.
        var figures: [BenchFigure] = []
        let missing = context.withAnchors ? "not measured" : "not measured: --no-anchors"
        func add(_ name: String, _ value: Double?, _ unit: String, _ better: BenchFigure.Better, reason: String? = nil,
                 _ anchorValue: (Echo) -> Double?) {
            if subjects.count == 1 {
                figures.append(BenchFigure(bench: "e2e", figure: name, value: value, unit: unit, better: better, reason: reason))
            }
            for a in subjects.dropFirst() {
                figures.append(BenchFigure(bench: "e2e", figure: name, value: value, unit: unit, anchor: a.name,
                                           anchorValue: anchorValue(a), better: better, reason: reason))
            }
        }
        /// Per-round figures: the latency runs alternated every subject, so run i of each is round i.
        func addRounds(_ name: String, _ unit: String, _ better: BenchFigure.Better, _ values: (Echo) -> [Double]) {
            let mine = values(gateway)
            if subjects.count == 1 {
                figures.append(.rounds(bench: "e2e", figure: name, unit: unit, anchor: nil, pairs: mine.map { ($0, nil) }, better: better))
            }
            for a in subjects.dropFirst() {
                let theirs = values(a)
                figures.append(.rounds(bench: "e2e", figure: name, unit: unit, anchor: a.name,
                                       pairs: mine.enumerated().map { i, v in (v, i < theirs.count ? theirs[i] : nil) },
                                       better: better, anchorMissing: missing))
            }
        }
        addRounds("rtt_p50", "us", .lower) { $0.p50s }
        addRounds("rtt_p99", "us", .lower) { $0.p99s }
        // CPU time of the process per message over the latency runs (1,200 messages each,
        // one at a time): waiting for a core does not count, so load moves it less than latency.
        addRounds("cpu_per_decision", "us/msg", .lower) { $0.cpuPerMessage }
        add("rate_no_loss_\(longSeconds)s", sustained[gateway.name]?.rate, "msg/s", .higher) { sustained[$0.name]?.rate }
        func mb(_ kB: Int?) -> Double? { kB.map { Double($0) / 1024 } }
        let anchorPeak = Dictionary(uniqueKeysWithValues: anchorMemory.map { ($0.0, mb($0.1?.hwmKB)) })
        // The resident set counts the pages of the shared libraries a process touches: a binary
        // that loads the Swift runtime, Foundation and ICU as shared libraries (a plain `swift
        // build`) is ~15 MB above the shipped one, which links them in (`make release`). Its
        // totals would be a figure of another program: not measured, said why.
        let shared = sharedSwiftRuntime(of: gateway.child.pid)
        let sharedReason: String? = shared
            ? "not measured: this edgeq loads the Swift runtime as shared libraries (libswiftCore.so), ~15 MB more resident than the shipped build; run the bench from `make release` (--static-swift-stdlib)"
            : nil
        if let sharedReason { context.progress("memory: \(sharedReason)") }
        func total(_ kB: Int?) -> Double? { shared ? nil : mb(kB) }
        add("peak_rss", total(endRSS?.hwmKB), "MB", .lower, reason: sharedReason) { anchorPeak[$0.name] ?? nil }
        figures.append(BenchFigure(bench: "e2e", figure: "rss_start", value: total(startRSS?.rssKB), unit: "MB", better: .lower,
                                   reason: sharedReason))
        figures.append(BenchFigure(bench: "e2e", figure: "rss_after_load", value: total(endRSS?.rssKB), unit: "MB",
                                   anchor: "rss_start", anchorValue: total(startRSS?.rssKB), better: .lower, reason: sharedReason))
        figures.append(BenchFigure(bench: "e2e", figure: "anon_rss_start", value: mb(startRSS?.anonKB), unit: "MB", better: .lower))
        figures.append(BenchFigure(bench: "e2e", figure: "anon_rss_after_load", value: mb(endRSS?.anonKB), unit: "MB",
                                   anchor: "anon_rss_start", anchorValue: mb(startRSS?.anonKB), better: .lower))
        let retrainMissing = "not measured: the retraining did not run during the latency runs (see the progress lines)"
        figures.append(BenchFigure(bench: "e2e", figure: "peak_rss_with_retraining", value: retrain == nil ? nil : total(retrainRSS?.hwmKB),
                                   unit: "MB", better: .lower, reason: retrain == nil ? retrainMissing : sharedReason))
        figures.append(BenchFigure(bench: "e2e", figure: "rtt_p99_during_retrain", value: retrain?.during, unit: "us",
                                   anchor: "EdgeQ without retraining", anchorValue: retrain?.before, better: .lower,
                                   reason: retrain == nil ? retrainMissing : nil))
        return figures
    }

    typealias Echo = MQTTBench.Echo

    /// A random (untrained) int8-ready model 8-64-64-5 for the bench mapping, installed in
    /// the data directory's model store and made current: the latency of a decision does not
    /// depend on the weights.
    static func installBenchModel(for map: TopicMap, in data: URL) throws {
        do {
            let arch = Architecture(inputCount: map.stateWidth, hidden: [64, 64], actionCount: map.actions.count)
            let net = try MLP(arch, seed: 1)
            var rng = SeededBenchGenerator(seed: 42)
            let calibration = (0..<(map.stateWidth * 512)).map { _ in Float.random(in: -1...1, using: &rng) }
            let model = try QModel(network: net, actionNames: map.actions.map(\.name),
                                   normalization: .identity(map.stateWidth), calibrationStates: calibration)
            _ = try install(model, for: map, in: data, report: Data(#"{"verdict":"passed","note":"edgeq bench e2e: random weights"}"#.utf8),
                            reason: "edgeq bench e2e")
        } catch {
            throw BenchError.failed("cannot install the bench model in \(data.path): \(error)")
        }
    }

    /// Stores `model` in the data directory `data` (signed with its device key, with `report`)
    /// and makes it the served version, as a gateway started there will serve it.
    ///
    /// - Returns: the version.
    static func install(_ model: QModel, for map: TopicMap, in data: URL, report: Data, reason: String) throws -> Int {
        let file = data.appendingPathComponent("incoming.safetensors")
        try model.save(to: file)
        let store = try ModelStore(dataDirectory: data)
        let v = try store.add(files: ["model.safetensors": file, "model.safetensors.sha256": QModel.checksumURL(for: file)],
                              report: report, signer: try ModelSigner.device(dataDirectory: data, map: map))
        try store.setCurrent(v, reason: reason)
        return v
    }

    /// Waits (at most 60 s) until `pid` uses less than 4 % of a core over half a second, from
    /// /proc/PID/stat: a process still starting, or a gateway whose log writer still commits
    /// the backlog of a rate run, would otherwise load the next latency run.
    static func waitUntilIdle(_ pid: pid_t, context: BenchContext) {
        func cpuTicks() -> Int? {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = text.lastIndex(of: ")") else { return nil }
            // Fields after the command name: state is field 3, utime 14, stime 15.
            let fields = text[text.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else { return nil }
            return user + system
        }
        let ticksPerSecond = max(sysconf(Int32(_SC_CLK_TCK)), 1)
        let start = Date()
        guard var last = cpuTicks() else { return }
        while Date().timeIntervalSince(start) < 60 {
            usleep(500_000)
            guard let now = cpuTicks() else { return }
            defer { last = now }
            if Double(now - last) / Double(ticksPerSecond) < 0.02 { return }
        }
        context.progress("process \(pid) still busy after 60 s; measuring anyway")
    }

    /// Whether the process maps the Swift runtime as a shared library (`libswiftCore.so` in
    /// /proc/PID/maps): a binary built without `--static-swift-stdlib`.
    static func sharedSwiftRuntime(of pid: pid_t) -> Bool {
        ProcFile.read("/proc/\(pid)/maps")?.contains("/libswiftCore.so") ?? false
    }

    /// Resident memory of a process from /proc/PID/status, in kB: VmRSS, VmHWM, RssAnon.
    static func memory(of pid: pid_t) -> (rssKB: Int, hwmKB: Int, anonKB: Int)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        var rss: Int?
        var hwm: Int?
        var anon: Int?
        for line in text.split(separator: "\n") {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard parts.count >= 2 else { continue }
            if parts[0] == "VmRSS:" { rss = Int(parts[1]) }
            if parts[0] == "VmHWM:" { hwm = Int(parts[1]) }
            if parts[0] == "RssAnon:" { anon = Int(parts[1]) }
        }
        guard let rss, let hwm, let anon else { return nil }
        return (rss, hwm, anon)
    }

    /// p99 of one-at-a-time round trips just before and then during a retraining of the
    /// gateway on its own log (`cmd/retrain` with a step and time budget, on the last
    /// 50,000 rows). The runs during the retraining count only if it was still training
    /// when they ended. Nil (with a note on standard error) when it could not be measured.
    static func retrainLatency(_ gateway: Echo, map: TopicMap, operatorKey: SigningPrivateKey, context: BenchContext) throws -> (before: Double, during: Double)? {
        let prefix = map.gateway.prefix
        let observer: MQTTClient
        do {
            observer = try MQTTClient(try MQTTConfiguration(url: gateway.broker.url, clientID: "e2e-observer"))
            try observer.subscribe("\(prefix)/retrain", qos: .atLeastOnce)
            try observer.subscribe("\(prefix)/reply/retrain", qos: .atLeastOnce)
            observer.start()
            try observer.waitUntilConnected(timeout: 10)
        } catch {
            context.progress("retraining figure skipped: observer: \(error)")
            return nil
        }
        defer { observer.stop() }
        let runs = context.quick ? 1 : 3

        // The echo's own figures are kept aside: these runs are a separate pair.
        let kept = (gateway.p50s, gateway.p99s, gateway.cpuPerMessage)
        defer { (gateway.p50s, gateway.p99s, gateway.cpuPerMessage) = kept }
        gateway.p99s = []
        // After the rate runs the log writer still commits their backlog for a while.
        waitUntilIdle(gateway.child.pid, context: context)
        try MQTTBench.latencyRuns([gateway], runs: runs, label: "latency before retraining", context: context)
        let before = gateway.p99s

        // Start it and wait for training proper (past reading the log).
        let seconds = context.quick ? 15 : 40
        let command = #"{"id":"e2e","steps":100000000,"seconds":\#(seconds),"window":50000}"#
        let signed = try CommandEnvelope.sign(command: command, topic: CommandEnvelope.topic(prefix: prefix, verb: "retrain"),
                                              gatewayID: map.gateway.id, keyName: "bench-operator", privateKey: operatorKey)
        _ = try? observer.publish("\(prefix)/cmd/retrain", signed, qos: .atLeastOnce)
        var training = false
        var ended = false
        let deadline = Date().addingTimeInterval(30)
        while !training, !ended, Date() < deadline {
            guard let m = observer.receive(timeout: 0.1) else { continue }
            let o = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any] ?? [:]
            if m.topic.hasSuffix("/reply/retrain"), o["ok"] as? Bool == false {
                context.progress("retraining figure skipped: \(String(decoding: m.payload, as: UTF8.self))")
                return nil
            }
            if let updates = o["updates"] as? Double, updates > 0 { training = true }
            if let phase = o["phase"] as? String, phase == "done" || phase == "failed" { ended = true }
        }
        guard training, !ended else {
            context.progress("retraining figure skipped: the retraining did not reach its training phase in time")
            return nil
        }
        context.progress("retraining is running")
        gateway.p99s = []
        try MQTTBench.latencyRuns([gateway], runs: runs, label: "latency during retraining", context: context)
        let during = gateway.p99s
        while let m = observer.receive(timeout: 0) {
            let o = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any] ?? [:]
            if let phase = o["phase"] as? String, phase == "done" || phase == "failed" { ended = true }
        }
        if ended {
            context.progress("retraining figure skipped: the retraining ended before the latency runs did")
            return nil
        }
        return (MQTTBench.median(before), MQTTBench.median(during))
    }
}

/// SplitMix64: reproducible calibration states for the bench model.
struct SeededBenchGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
