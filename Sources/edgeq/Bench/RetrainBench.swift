import EdgeQGateway
import EdgeQLab
import EdgeQLearner
import EdgeQNet
import EdgeQSystem
import EdgeQTopicMap
import Foundation
import EdgeQRetrain

/// `edgeq bench retrain`:
///
/// 1. Retraining time: the gateway's `Retrainer` (read the SQLite log, build the replay,
///    10,000 Double DQN updates at batch 64 on a 2 × 64 net, quantize, every check) on
///    100,000 transitions the lab logged from the thermal plant, one BLAS thread. Anchor:
///    Stable-Baselines3's `train()` updates/s on the same net and batch
///    (`train/sb3_updates.py --net 12-64-64-5`), scaled to 10,000 updates; and the same for
///    the training loop alone, against the sgemm limit (`sgemm_peak` measured in this run,
///    then `train/flops_limit.py`, shaped, OPENBLAS env as is). EdgeQ, SB3 and sgemm
///    alternate in rounds (3, 1 with `--quick`); ratios are medians of the per-round ratios.
/// 2. Learning quality: `ThermalExperiment` (6 weeks of shadow logging with the dithered PI,
///    retraining with `topics/thermal.yaml`, the candidate in control on fresh weeks beside the
///    plain PI on the same weather) over 5 logging seeds × 3 evaluation seeds of 2 weeks:
///    cost improvement over the incumbent, mean / min / max, and the extra comfort violation,
///    of what would have been served: a candidate that failed its checks is not served, so
///    for its seed the PI stays in control (improvement 0, no extra violation). The
///    candidates' own figures, refused ones included, are printed on their own lines.
///    Anchor: the incumbent itself (improvement 0).
/// 3. Cart-pole with periodic retraining in control (`CartPoleRetraining` with
///    `topics/cartpole.yaml`: shadow first, then retrain every `retrain.every_transitions`
///    steps through the `Retrainer` and its checks, serve what passes, ε exploration):
///    seeds whose served model reaches a greedy mean return ≥ 400 within 40,000 steps, and
///    the steps it took (5 seeds, `--quick` 2). No anchor in the same run: the online learner's
///    figure is `edgeq bench learn`.
///
/// 4. `model_latency` (`RetrainLatencyBench`): a retraining with the model steps (plant model,
///    distillation, pre-trial estimate) on 100,000 thermal rows in a gateway that controls a
///    thermal plant in closed loop — its wall time, and the decision round trip's p99 during it
///    against before and after.
///
/// `EDGEQ_BENCH_RETRAIN_PARTS` (e.g. `cartpole` or `speed,thermal,model_latency`) runs only some parts;
/// `EDGEQ_BENCH_CARTPOLE_MAP` and `EDGEQ_BENCH_CARTPOLE_SEEDS` (e.g. `1,2,3`) let an
/// experiment try another mapping file or seeds.
enum RetrainBench {
    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        setBLASThreads(1)
        let anchors = context.withAnchors ? try Anchors.prepare(context) : nil
        let root = Anchors.packageRoot()
        let mapPath = root.appendingPathComponent("topics/thermal.yaml").path
        let yaml: String
        do {
            yaml = try String(contentsOfFile: mapPath, encoding: .utf8)
        } catch {
            throw BenchError.failed("cannot read \(mapPath): \(error)")
        }
        let map = try TopicMap.parse(yaml: yaml, file: mapPath)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-bench-retrain-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var figures: [BenchFigure] = []
        let env = ProcessInfo.processInfo.environment
        let known = ["speed", "thermal", "cartpole", "model_latency"]
        let parts = Set((env["EDGEQ_BENCH_RETRAIN_PARTS"] ?? known.joined(separator: ",")).split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) })
        if let unknown = parts.subtracting(known).sorted().first {
            throw BenchError.failed("unknown part '\(unknown)' in EDGEQ_BENCH_RETRAIN_PARTS; available: \(known.joined(separator: ", "))")
        }
        if parts.contains("speed") {
            figures += try speed(context, yaml: yaml, map: map, mapPath: mapPath, dir: dir, anchors: anchors)
        }
        if parts.contains("thermal") {
            figures += try thermal(context, map: map, dir: dir)
        }
        if parts.contains("cartpole") {
            figures += try cartPole(context, root: root, dir: dir, env: env)
        }
        if parts.contains("model_latency") {
            figures += try RetrainLatencyBench.run(context, yaml: yaml, mapPath: mapPath, dir: dir)
        }
        return figures
    }

    static func cartPole(_ context: BenchContext, root: URL, dir: URL, env: [String: String]) throws -> [BenchFigure] {
        let path = env["EDGEQ_BENCH_CARTPOLE_MAP"] ?? root.appendingPathComponent("topics/cartpole.yaml").path
        let map = try TopicMap.load(path: path)
        let seeds: [UInt64] = env["EDGEQ_BENCH_CARTPOLE_SEEDS"].map { $0.split(separator: ",").compactMap { UInt64($0) } }
            ?? (context.quick ? [1, 2] : [1, 2, 3, 4, 5])
        var experiment = CartPoleRetraining()
        if let g = env["EDGEQ_BENCH_CARTPOLE_GOAL"].flatMap(Double.init) { experiment.goal = g }
        var reached: [Double] = []
        for s in seeds {
            context.progress("cart-pole retraining, seed \(s) (\(path))")
            let t0 = Date()
            let curve = try experiment.run(map: map, seed: s, directory: dir)
            for p in curve {
                let f = p.figures
                context.progress(String(format: "  %6d steps: mean return %6.1f, %@ (max|Q| %.1f, int8 agreement %.3f, unsupported %.2f, td %.3f)%@",
                                        p.steps, p.meanReturn, p.passed ? "passed" : "FAILED", f["max_abs_q"] ?? .nan,
                                        f["quantization_agreement_within_tie"] ?? .nan, f["unsupported_action_share"] ?? .nan,
                                        f["train_td_loss"] ?? .nan, p.passed ? "" : " " + p.reasons.joined(separator: "; ")))
            }
            let hit = curve.first { $0.meanReturn >= experiment.goal && $0.controlDecisions > 0 }
            context.progress(String(format: "  seed %d: %@ (%.0f s)", s, hit.map { "≥ \(Int(experiment.goal)) at \($0.steps) steps" } ?? "not reached", Date().timeIntervalSince(t0)))
            if let hit { reached.append(Double(hit.steps)) }
        }
        let sorted = reached.sorted()
        return [
            BenchFigure(bench: "retrain", figure: "cart-pole retraining: seeds reaching 400 within \(experiment.maxSteps) steps", value: Double(reached.count),
                        unit: "of \(seeds.count)", better: .higher),
            BenchFigure(bench: "retrain", figure: "cart-pole retraining: median steps to 400 (seeds that reached it)",
                        value: sorted.isEmpty ? nil : sorted[sorted.count / 2], unit: "steps", better: .lower,
                        reason: sorted.isEmpty ? "no seed reached 400" : nil),
            BenchFigure(bench: "retrain", figure: "cart-pole retraining: most steps to 400 (seeds that reached it)",
                        value: sorted.last, unit: "steps", better: .lower, reason: sorted.isEmpty ? "no seed reached 400" : nil),
        ]
    }

    static func speed(_ context: BenchContext, yaml: String, map: TopicMap, mapPath: String, dir: URL, anchors: Anchors?) throws -> [BenchFigure] {
        var figures: [BenchFigure] = []
        let rows = context.quick ? 20_000 : 100_000
        let updates = context.quick ? 2_000 : 10_000
        let speedYAML = yaml.replacingOccurrences(of: "batch_size: 256", with: "batch_size: 64")
        let speedMap = try TopicMap.parse(yaml: speedYAML, file: mapPath)
        context.progress("logging \(rows) thermal transitions with the lab")
        let logPath = dir.appendingPathComponent("speed.sqlite").path
        var plant = ThermalLabPlant(seed: 42)
        _ = try Lab(map: speedMap).run(&plant, steps: rows, policy: .incumbent(dither: 0.1), seed: 42, logPath: logPath)
        var policy = CheckPolicy()
        policy.fqeUpdates = 0
        let retrainer = Retrainer(map: speedMap, policy: policy)
        let net = "\(map.stateWidth)-64-64-\(map.actions.count)"
        let rounds = context.quick ? 1 : 3
        var totalPairs: [(Double, Double?)] = [], loopPairs: [(Double, Double?)] = []
        var sb3Missing = anchors == nil ? "not measured: --no-anchors" : "not measured: no Python venv for the anchors (make bench-setup)"
        var limitMissing = anchors == nil ? "not measured: --no-anchors" : "not measured"
        for round in 0..<rounds {
            context.progress("round \(round + 1) of \(rounds): EdgeQ retraining, \(updates) updates at batch 64 on \(rows) rows")
            var loop = 0.0
            var started: Date?
            let t0 = Date()
            let (report, _) = try retrainer.train(logPath: logPath, limits: RetrainLimits(steps: updates), warmStart: nil, progress: { p in
                if p.phase == "training" && p.updates == 0 { started = Date() }
                if p.phase == "checking", let s = started { loop = Date().timeIntervalSince(s) }
            })
            let total = Date().timeIntervalSince(t0)
            context.progress(String(format: "  total %.2f s (training loop %.2f s), %d rows", total, loop, report.rows))
            var sb3Seconds: Double?, limitSeconds: Double?
            if let anchors {
                if let python = anchors.python {
                    context.progress("  SB3 train() on \(net) (sb3_updates.py, 1 repetition)")
                    let script = anchors.directory.appendingPathComponent("train/sb3_updates.py").path
                    let r = try ChildProcess.run(python, [script, "--threads", "1", "--only", "train_call", "--reps", "1", "--json", "--net", net]
                                                 + (context.quick ? ["--quick"] : []),
                                                 timeout: 1_200, workingDirectory: anchors.directory.path)
                    if r.code == 0, let rate = anchorFigures(r.stdout)["sb3/updates_per_s"], rate > 0 {
                        sb3Seconds = Double(updates) / rate
                    } else {
                        sb3Missing = "not measured: sb3_updates.py exited \(r.code): \(lastLine(r.stderr))"
                        context.progress("  sb3_updates.py failed: \(r.stderr.suffix(300))")
                    }
                }
                context.progress("  sgemm limit for \(net) (sgemm_peak; flops_limit.py)")
                do {
                    // flops_limit.py keys its figures by the OPENBLAS settings: "env" is the
                    // machine's as is, the settings this process (and its retraining) runs with.
                    if let rate = try anchors.sgemmLimit(net: net, context: context)["flops_limit[env]/shaped_updates_per_s"], rate > 0 {
                        limitSeconds = Double(updates) / rate
                    } else {
                        limitMissing = "not measured: flops_limit.py printed no shaped_updates_per_s for OPENBLAS env"
                    }
                } catch {
                    limitMissing = "not measured: \(error)"
                    context.progress("  sgemm limit failed: \(error)")
                }
            }
            totalPairs.append((total, sb3Seconds))
            loopPairs.append((loop, limitSeconds))
        }
        figures.append(.rounds(bench: "retrain", figure: "retrain \(updates) updates, \(rows) rows, \(net) b64 (total)", unit: "s",
                               anchor: "sb3 train() × \(updates)", pairs: totalPairs, better: .lower, anchorMissing: sb3Missing))
        figures.append(.rounds(bench: "retrain", figure: "retrain \(updates) updates, \(net) b64 (training loop)", unit: "s",
                               anchor: "sgemm limit (OPENBLAS env) × \(updates)", pairs: loopPairs, better: .lower, anchorMissing: limitMissing))
        return figures
    }

    /// Learning quality on the thermal plant, as served: a seed whose candidate failed its
    /// checks keeps the PI (improvement 0, no extra comfort violation in its periods).
    static func thermal(_ context: BenchContext, map: TopicMap, dir: URL) throws -> [BenchFigure] {
        var figures: [BenchFigure] = []
        let seeds: [UInt64] = context.quick ? [1] : [1, 2, 3, 4, 5]
        var experiment = ThermalExperiment()
        experiment.evaluationSeeds = context.quick ? [1001] : [1001, 1002, 1003]
        // What would have been served, and the candidates' own figures (refused ones included).
        var served: [Double] = [], servedPeriods: [Double] = [], servedComfort: [Double] = []
        var candidates: [Double] = [], candidateComfort: [Double] = [], passed = 0
        for s in seeds {
            context.progress("quality: logging seed \(s), \(experiment.logWeeks) weeks, dither \(experiment.dither)")
            let o = try experiment.run(map: map, seed: s, directory: dir)
            candidates.append(o.costImprovement)
            candidateComfort += o.periods.map(\.extraComfortViolationPerWeek)
            if o.report.passed {
                passed += 1
                served.append(o.costImprovement)
                servedPeriods += o.periods.map(\.costImprovement)
                servedComfort += o.periods.map(\.extraComfortViolationPerWeek)
            } else {
                // Not served: the PI stays in control on every evaluation period of this seed.
                served.append(0)
                servedPeriods += o.periods.map { _ in 0 }
                servedComfort += o.periods.map { _ in 0 }
            }
            context.progress(String(format: "  seed %d: candidate %+.2f%% (periods %@; extra comfort violation K·h/week %@), checks %@ %@, fqe %+.2f%%%@", s, o.costImprovement * 100,
                                    o.periods.map { String(format: "%+.2f%%", $0.costImprovement * 100) }.joined(separator: " "),
                                    o.periods.map { String(format: "%.2f", $0.extraComfortViolationPerWeek) }.joined(separator: " "),
                                    o.report.verdict, o.report.reasons.joined(separator: "; "), (o.report.figures["fqe_improvement"] ?? .nan) * 100,
                                    o.report.passed ? "" : " — not served, the PI stays"))
        }
        let mean = served.reduce(0, +) / Double(served.count)
        let sd = (served.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(max(served.count - 1, 1))).squareRoot()
        let q = "thermal cost improvement over the PI, as served"
        figures.append(BenchFigure(bench: "retrain", figure: "\(q), mean of \(seeds.count) seeds", value: mean * 100, unit: "%",
                                   anchor: "incumbent PI", anchorValue: 0, better: .higher))
        figures.append(BenchFigure(bench: "retrain", figure: "\(q), std over seeds", value: sd * 100, unit: "%", better: .lower))
        figures.append(BenchFigure(bench: "retrain", figure: "\(q), worst 2-week period", value: servedPeriods.min().map { $0 * 100 }, unit: "%",
                                   anchor: "incumbent PI", anchorValue: 0, better: .higher))
        figures.append(BenchFigure(bench: "retrain", figure: "\(q), best 2-week period", value: servedPeriods.max().map { $0 * 100 }, unit: "%",
                                   anchor: "incumbent PI", anchorValue: 0, better: .higher))
        figures.append(BenchFigure(bench: "retrain", figure: "extra comfort violation per week, worst period, as served", value: servedComfort.max(), unit: "K·h",
                                   anchor: "incumbent PI", anchorValue: 0, better: .lower))
        figures.append(BenchFigure(bench: "retrain", figure: "candidates that passed their checks (served)", value: Double(passed), unit: "of \(seeds.count)", better: .higher))
        // The candidates' own quality, refused ones included (what the learning produced, not
        // what a plant would have run).
        figures.append(BenchFigure(bench: "retrain", figure: "thermal cost improvement over the PI, every candidate (refused included), mean",
                                   value: candidates.reduce(0, +) / Double(candidates.count) * 100, unit: "%",
                                   anchor: "incumbent PI", anchorValue: 0, better: .higher))
        figures.append(BenchFigure(bench: "retrain", figure: "extra comfort violation per week, worst period, every candidate (refused included)",
                                   value: candidateComfort.max(), unit: "K·h", anchor: "incumbent PI", anchorValue: 0, better: .lower))
        return figures
    }
}
