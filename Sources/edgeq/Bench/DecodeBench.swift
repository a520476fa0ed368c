import EdgeQRetrain
import EdgeQSystem
import EdgeQTopicMap
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `edgeq bench decode`: one 200-byte JSON payload with 8 fields decoded into signals, and an
/// 8-feature state (6 signals + 2 derived expressions) assembled from them, per message.
///
/// Figures:
/// - `decode_state_ns`: decode + state, wall-clock ns per message (goal < 2,000 ns); median of blocks.
/// - `decode_state_cpu_ns`: the same in this thread's CPU time (preemption by other work on a
///   shared machine does not count).
/// - `decode_state_reply_ns`: the same plus rendering the reply payload `{"id":…,"a":…}`,
///   compared with the Python gateway's handler minus its inference (`json.loads` →
///   `np.asarray` → `json.dumps`; `gateway/infer_micro.py --backends numpy`, handler_p50 −
///   infer_p50, measured in the same run). EdgeQ and the anchor alternate in rounds (3, 2
///   with `--quick`); the ratio is the median of the per-round ratios.
/// - `allocs_per_message`: heap allocations per message in the steady state, counted by
///   re-running this benchmark in a child process with a malloc-counting shim preloaded
///   (`LD_PRELOAD`; malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign are counted).
enum DecodeBench {
    static let mapping = """
    gateway: {id: bench-decode}
    signals:
      - {name: id,       topic: plant/zone7/state, json: id}
      - {name: temp,     topic: plant/zone7/state, json: zone.temp,     range: [-40, 80]}
      - {name: setpoint, topic: plant/zone7/state, json: zone.setpoint, range: [0, 40]}
      - {name: humidity, topic: plant/zone7/state, json: zone.humidity, range: [0, 100]}
      - {name: outdoor,  topic: plant/zone7/state, json: outdoor,       range: [-50, 60]}
      - {name: valve,    topic: plant/zone7/state, json: "valve[1]",    range: [0, 100]}
      - {name: flow,     topic: plant/zone7/state, json: flow,          range: [0, 10]}
      - {name: power,    topic: plant/zone7/state, json: power,         range: [0, 20]}
    state:
      features:
        - {signal: temp, normalize: [10, 30]}
        - {signal: humidity, normalize: [0, 100]}
        - {signal: outdoor, normalize: [-20, 40]}
        - {signal: valve, normalize: [0, 100]}
        - {signal: flow, normalize: [0, 5]}
        - {signal: power, normalize: [0, 10]}
        - {name: error, expr: temp - setpoint, normalize: [-10, 10]}
        - {name: load, expr: power * 0.25 + abs(flow - 1), normalize: [0, 5]}
    tick: {trigger: plant/zone7/state}
    reward: -abs(error)
    actions:
      list:
        - {name: a0, publish: {topic: plant/zone7/cmd, payload: '{"id":{{id}},"a":{{action}}}'}}
        - {name: a1, publish: {topic: plant/zone7/cmd, payload: '{"id":{{id}},"a":{{action}}}'}}
    safety: {ood_margin: none}
    """

    static let topic = "plant/zone7/state"

    /// 64 different 200-byte payloads with 8 numeric fields among others.
    static func payloads() -> [[UInt8]] {
        var g = SystemRandomNumberGenerator()
        return (0..<64).map { i in
            func r(_ lo: Double, _ hi: Double) -> String { String(format: "%.2f", Double.random(in: lo...hi, using: &g)) }
            var s = "{\"id\":\(100_000 + i),\"ts\":\"2026-11-29T05:00:00Z\",\"zone\":{\"temp\":\(r(15, 25)),\"setpoint\":\(r(19, 22)),"
                + "\"humidity\":\(r(30, 60))},\"outdoor\":\(r(-10, 20)),\"valve\":[0,\(r(0, 100))],"
                + "\"flow\":\(r(0, 3)),\"power\":\(r(0, 6)),\"status\":\"ok\"}"
            while s.utf8.count < 200 { s += " " }
            return Array(s.utf8)
        }
    }

    struct Loop {
        let map: TopicMap
        var table: SignalTable
        var runtime: TopicMapRuntime
        var state: [Float]
        var reply: [UInt8]
        let payloads: [[UInt8]]
        var sink: Float = 0

        init() throws {
            map = try TopicMap.parse(yaml: DecodeBench.mapping, file: "decode-bench")
            table = SignalTable(for: map)
            runtime = TopicMapRuntime(map: map)
            state = [Float](repeating: 0, count: map.stateWidth)
            reply = []
            reply.reserveCapacity(256)
            payloads = DecodeBench.payloads()
        }

        /// `count` messages; returns the number of states that were not ok (should be 0).
        mutating func run(_ count: Int, reply withReply: Bool) -> Int {
            var bad = 0
            for i in 0..<count {
                let p = payloads[i & 63]
                p.withUnsafeBytes { _ = map.decode(topic: DecodeBench.topic, payload: $0, time: UInt64(i), into: &table) }
                let status = state.withUnsafeMutableBufferPointer {
                    runtime.assembleState(from: table, now: UInt64(i), wallClock: 0, into: $0)
                }
                if status != .ok { bad += 1 }
                sink += state[6]
                if withReply {
                    reply.removeAll(keepingCapacity: true)
                    if !runtime.render(action: i & 1, write: 0, into: &reply) { bad += 1 }
                }
            }
            return bad
        }
    }

    /// CPU time of this thread in ns: on a machine shared with other work, time this thread
    /// spent preempted does not count.
    static func cpuNs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Monotonic wall-clock time in ns.
    static func wallNs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Median wall-clock and median thread-CPU ns per message over `blocks` blocks of `count` messages.
    static func measure(_ loop: inout Loop, blocks: Int, count: Int, reply: Bool) throws -> (wall: Double, cpu: Double) {
        _ = loop.run(10_000, reply: reply)
        var wall: [Double] = []
        var cpu: [Double] = []
        for _ in 0..<blocks {
            let w0 = wallNs(), c0 = cpuNs()
            let bad = loop.run(count, reply: reply)
            let c1 = cpuNs(), w1 = wallNs()
            guard bad == 0 else { throw BenchError.failed("\(bad) of \(count) states were not ok") }
            wall.append(Double(w1 - w0) / Double(count))
            cpu.append(Double(c1 - c0) / Double(count))
        }
        return (wall.sorted()[wall.count / 2], cpu.sorted()[cpu.count / 2])
    }

    /// Thread-CPU ns per message of each part alone (for the progress output).
    static func split(_ loop: inout Loop, count: Int) -> [Double] {
        var c0 = cpuNs()
        for i in 0..<count {
            loop.payloads[i & 63].withUnsafeBytes { _ = loop.map.decode(topic: DecodeBench.topic, payload: $0, time: UInt64(i), into: &loop.table) }
        }
        let decode = Double(cpuNs() - c0) / Double(count)
        c0 = cpuNs()
        for i in 0..<count {
            _ = loop.state.withUnsafeMutableBufferPointer { loop.runtime.assembleState(from: loop.table, now: UInt64(i), wallClock: 0, into: $0) }
        }
        let state = Double(cpuNs() - c0) / Double(count)
        c0 = cpuNs()
        for i in 0..<count {
            loop.reply.removeAll(keepingCapacity: true)
            _ = loop.runtime.render(action: i & 1, write: 0, into: &loop.reply)
        }
        let reply = Double(cpuNs() - c0) / Double(count)
        return [decode, state, reply]
    }

    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        // Child mode: count allocations under the preloaded shim and report only that.
        if ProcessInfo.processInfo.environment["EDGEQ_DECODE_ALLOC_PROBE"] != nil {
            return [try allocationProbe()]
        }
        var loop = try Loop()
        let blocks = context.quick ? 3 : 7
        let count = context.quick ? 50_000 : 300_000
        context.progress("decode + state, \(blocks) × \(count) messages of \(loop.payloads[0].count) bytes")
        let decodeState = try measure(&loop, blocks: blocks, count: count, reply: false)
        context.progress(String(format: "split (thread CPU, ns/msg): decode %.0f, state %.0f, reply %.0f", arguments: split(&loop, count: count)))

        var figures = [
            BenchFigure(bench: "decode", figure: "decode_state_ns", value: decodeState.wall, unit: "ns/msg", better: .lower),
            BenchFigure(bench: "decode", figure: "decode_state_cpu_ns", value: decodeState.cpu, unit: "ns/msg", better: .lower),
        ]
        // decode + state + reply against the Python anchor, alternating in rounds (EdgeQ,
        // Python, EdgeQ, Python, …): the ratio is the median of the per-round ratios.
        let rounds = context.quick ? 2 : 3
        var pairs: [(Double, Double?)] = []
        var missing = context.withAnchors ? "not measured" : "not measured: --no-anchors"
        for round in 0..<rounds {
            context.progress("round \(round + 1) of \(rounds): decode + state + reply payload")
            let withReply = try measure(&loop, blocks: blocks, count: count, reply: true)
            var anchorValue: Double?
            if context.withAnchors {
                context.progress("  anchor: gateway/infer_micro.py --backends numpy (handler − infer); may wait for a quiet machine")
                do { anchorValue = try pythonHandlerMinusInfer(context) } catch {
                    missing = "not measured: \(error)"
                    context.progress("  anchor failed: \(error)")
                }
            }
            context.progress(String(format: "  EdgeQ %.0f ns/msg, anchor %@", withReply.wall, anchorValue.map { String(format: "%.0f ns/msg", $0) } ?? "—"))
            pairs.append((withReply.wall, anchorValue))
        }
        figures.append(.rounds(bench: "decode", figure: "decode_state_reply_ns", unit: "ns/msg",
                               anchor: "python json.loads+asarray+json.dumps (infer_micro numpy handler−infer p50)",
                               pairs: pairs, better: .lower, anchorMissing: missing))
        context.progress("allocations: child process with a malloc-counting shim")
        figures.append(try allocationsViaChild(context))
        return figures
    }

    /// Runs `gateway/infer_micro.py --backends numpy --json` and returns handler_p50 − infer_p50 in ns.
    static func pythonHandlerMinusInfer(_ context: BenchContext) throws -> Double {
        let anchors = try Anchors.prepare(context)
        let python = try anchors.requirePython()
        var args = [anchors.directory.appendingPathComponent("gateway/infer_micro.py").path, "--backends", "numpy", "--json"]
        if context.quick { args.append("--quick") }
        let r = try ChildProcess.run(python, args, timeout: 900, workingDirectory: anchors.directory.path)
        guard r.code == 0 else { throw BenchError.failed("infer_micro.py exited \(r.code): \(r.stderr.suffix(500))") }
        var figures: [String: Double] = [:]
        for line in r.stdout.split(separator: "\n") {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let f = obj["figure"] as? String, let v = obj["value"] as? Double else { continue }
            figures[f] = v
        }
        guard let h = figures["handler_p50"], let i = figures["infer_p50"] else {
            throw BenchError.failed("infer_micro.py printed no handler_p50/infer_p50:\n\(r.stdout.prefix(500))")
        }
        return (h - i) * 1000
    }

    static let shimSource = """
    // Counts heap allocations (edgeq bench decode). Preloaded with LD_PRELOAD.
    #include <stddef.h>
    #include <errno.h>
    extern void *__libc_malloc(size_t);
    extern void *__libc_calloc(size_t, size_t);
    extern void *__libc_realloc(void *, size_t);
    extern void *__libc_memalign(size_t, size_t);
    static unsigned long long edgeq_count;
    unsigned long long edgeq_alloc_count(void) { return __atomic_load_n(&edgeq_count, __ATOMIC_RELAXED); }
    static void bump(void) { __atomic_fetch_add(&edgeq_count, 1, __ATOMIC_RELAXED); }
    void *malloc(size_t n) { bump(); return __libc_malloc(n); }
    void *calloc(size_t a, size_t b) { bump(); return __libc_calloc(a, b); }
    void *realloc(void *p, size_t n) { bump(); return __libc_realloc(p, n); }
    void *memalign(size_t a, size_t n) { bump(); return __libc_memalign(a, n); }
    void *aligned_alloc(size_t a, size_t n) { bump(); return __libc_memalign(a, n); }
    int posix_memalign(void **p, size_t a, size_t n) {
        bump();
        void *q = __libc_memalign(a, n);
        if (!q) return ENOMEM;
        *p = q;
        return 0;
    }
    """

    /// Builds the shim, runs this benchmark again with it preloaded, and reads the child's figure.
    static func allocationsViaChild(_ context: BenchContext) throws -> BenchFigure {
        let dir = Anchors.packageRoot().appendingPathComponent(".build-anchors/alloc-count")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let src = dir.appendingPathComponent("alloc_count.c").path
        let lib = dir.appendingPathComponent("alloc_count.so").path
        try shimSource.write(toFile: src, atomically: true, encoding: .utf8)
        let cc = try ChildProcess.run("cc", ["-O2", "-shared", "-fPIC", "-o", lib, src], timeout: 120)
        guard cc.code == 0 else { throw BenchError.failed("building the malloc-counting shim failed: \(cc.stderr)") }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var args = ["bench", "decode", "--json", "--no-anchors"]
        if context.quick { args.append("--quick") }
        let r = try ChildProcess.run(exe, args, timeout: 300, environment: ["LD_PRELOAD": lib, "EDGEQ_DECODE_ALLOC_PROBE": "1"])
        guard r.code == 0 else { throw BenchError.failed("allocation probe exited \(r.code): \(r.stderr.suffix(500))") }
        for line in r.stdout.split(separator: "\n") {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  obj["figure"] as? String == "allocs_per_message", let v = obj["value"] as? Double else { continue }
            return BenchFigure(bench: "decode", figure: "allocs_per_message", value: v, unit: "allocs/msg", better: .lower)
        }
        throw BenchError.failed("the allocation probe printed no figure:\n\(r.stdout.prefix(500))")
    }

    /// In the child: steady-state allocations per message (decode + state + reply payload).
    static func allocationProbe() throws -> BenchFigure {
        typealias CountFn = @convention(c) () -> UInt64
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "edgeq_alloc_count") else {
            throw BenchError.failed("EDGEQ_DECODE_ALLOC_PROBE is set but the malloc-counting shim is not preloaded")
        }
        let count = unsafeBitCast(sym, to: CountFn.self)
        var loop = try Loop()
        _ = loop.run(10_000, reply: true)
        let n = 100_000
        let before = count()
        let bad = loop.run(n, reply: true)
        let after = count()
        guard bad == 0 else { throw BenchError.failed("\(bad) states were not ok") }
        // Where they come from, for whoever has to remove them (standard error).
        let m = 10_000
        var c0 = count()
        for i in 0..<m {
            loop.payloads[i & 63].withUnsafeBytes { _ = loop.map.decode(topic: DecodeBench.topic, payload: $0, time: UInt64(i), into: &loop.table) }
        }
        let decodeOnly = count() - c0
        c0 = count()
        for i in 0..<m {
            _ = loop.state.withUnsafeMutableBufferPointer { loop.runtime.assembleState(from: loop.table, now: UInt64(i), wallClock: 0, into: $0) }
        }
        let stateOnly = count() - c0
        c0 = count()
        for i in 0..<m {
            loop.reply.removeAll(keepingCapacity: true)
            _ = loop.runtime.render(action: i & 1, write: 0, into: &loop.reply)
        }
        let replyOnly = count() - c0
        // The switchback trial's exogenous baseline, run on every tick of an adjusted trial
        // (thermal's size: 9 exogenous signals, products, filters at two time constants).
        let k = 9, kM = 2 * k, width = k + k * (k + 1) / 2 + 2 * kM
        let names = (0..<k).map { "s\($0)" }
        var evaluator = try BaselineEvaluator(
            model: ExogenousBaseline.Model(signals: names, timeConstants: [2, 8], pairs: true,
                                           valueMean: [Double](repeating: 1, count: k), valueScale: [Double](repeating: 2, count: k),
                                           absChangeScale: [Double](repeating: 1, count: kM), changeScale: [Double](repeating: 1, count: kM),
                                           featureMean: [Double](repeating: 0, count: width), weights: [Double](repeating: 0.01, count: width),
                                           intercept: -1),
            loggedSignalNames: names)
        var values = [Double](repeating: 0, count: k)
        var sink = 0.0
        c0 = count()
        for i in 0..<m {
            values[i % k] = Double(i & 7)
            sink += evaluator.advance(values)
        }
        let baselineOnly = count() - c0
        FileHandle.standardError.write(Data("[decode] allocations per message: decode \(Double(decodeOnly) / Double(m)), state \(Double(stateOnly) / Double(m)), reply \(Double(replyOnly) / Double(m)); trial baseline per tick \(Double(baselineOnly) / Double(m)) (sum \(sink))\n".utf8))
        return BenchFigure(bench: "decode", figure: "allocs_per_message", value: Double(after - before) / Double(n),
                           unit: "allocs/msg", better: .lower)
    }
}
