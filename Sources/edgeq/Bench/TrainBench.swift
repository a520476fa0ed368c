import EdgeQCore
import EdgeQLearner
import EdgeQNet
import EdgeQPlants
import EdgeQSystem
import Foundation

/// `edgeq bench train`: Double DQN gradient updates per second (sample a batch of 64 from
/// replay, targets, forward, backward, clip, Adam, target sync), one BLAS thread, nets
/// 4-64-64-2 and 4-256-256-2, against Stable-Baselines3's `train()` on the same net and batch
/// (`train/sb3_updates.py`) and the limit OpenBLAS's sgemm throughput implies
/// (`sgemm_peak` measured in this run, then `train/flops_limit.py`, "shaped" figure).
///
/// EdgeQ and the anchors alternate in rounds (EdgeQ, SB3, sgemm, EdgeQ, SB3, sgemm, …:
/// 3 rounds, 2 with `--quick`), so that load drift on a shared machine hits both sides of a
/// ratio; each figure's ratio is the median of the per-round ratios, with their min and max.
enum TrainBench {
    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        setBLASThreads(1)
        let anchors = context.withAnchors ? try Anchors.prepare(context) : nil
        var figures: [BenchFigure] = []
        let rounds = context.quick ? 2 : 3
        for hidden in [64, 256] {
            let net = "4-\(hidden)-\(hidden)-2"
            let updates = context.quick ? 2_000 : 10_000
            var sb3Pairs: [(Double, Double?)] = [], envPairs: [(Double, Double?)] = [], unsetPairs: [(Double, Double?)] = []
            var sb3Missing = context.withAnchors ? "not measured: no Python venv for the anchors (make bench-setup)" : "not measured: --no-anchors"
            var limitMissing = context.withAnchors ? "not measured" : "not measured: --no-anchors"
            for round in 0..<rounds {
                context.progress("net \(net), round \(round + 1) of \(rounds): EdgeQ, \(updates) updates")
                let edgeq = try updatesPerSecond(hidden: hidden, updates: updates, seed: UInt64(round))
                context.progress(String(format: "  EdgeQ %.0f updates/s", edgeq))
                var sb3: Double?, limitEnv: Double?, limitUnset: Double?
                if let anchors {
                    if let python = anchors.python {
                        context.progress("  SB3 train() (sb3_updates.py, 1 repetition)")
                        let script = anchors.directory.appendingPathComponent("train/sb3_updates.py").path
                        let r = try ChildProcess.run(python, [script, "--threads", "1", "--only", "train_call", "--reps", "1", "--json", "--net", net]
                                                     + (context.quick ? ["--quick"] : []),
                                                     timeout: 1_200, workingDirectory: anchors.directory.path)
                        if r.code == 0, let v = anchorFigures(r.stdout)["sb3/updates_per_s"] {
                            sb3 = v
                        } else {
                            sb3Missing = "not measured: sb3_updates.py exited \(r.code): \(lastLine(r.stderr))"
                            context.progress("  sb3_updates.py failed: \(r.stderr.suffix(300))")
                        }
                    }
                    context.progress("  sgemm limit (sgemm_peak, OPENBLAS env and unset; flops_limit.py)")
                    do {
                        let l = try anchors.sgemmLimit(net: net, context: context)
                        limitEnv = l["flops_limit[env]/shaped_updates_per_s"]
                        limitUnset = l["flops_limit[unset]/shaped_updates_per_s"]
                    } catch {
                        limitMissing = "not measured: \(error)"
                        context.progress("  sgemm limit failed: \(error)")
                    }
                    context.progress("  SB3 \(sb3.map { String(format: "%.0f", $0) } ?? "—")/s, sgemm limit env \(limitEnv.map { String(format: "%.0f", $0) } ?? "—")/s, unset \(limitUnset.map { String(format: "%.0f", $0) } ?? "—")/s")
                }
                sb3Pairs.append((edgeq, sb3))
                envPairs.append((edgeq, limitEnv))
                unsetPairs.append((edgeq, limitUnset))
            }
            figures.append(.rounds(bench: "train", figure: "\(net) updates/s", unit: "1/s", anchor: "sb3 train()",
                                   pairs: sb3Pairs, better: .higher, anchorMissing: sb3Missing))
            // The limit sgemm's throughput, measured in this run, implies: with the machine's
            // OPENBLAS_* settings ("env") and with them unset.
            figures.append(.rounds(bench: "train", figure: "\(net) updates/s", unit: "1/s", anchor: "sgemm limit (OPENBLAS env)",
                                   pairs: envPairs, better: .higher, anchorMissing: limitMissing))
            figures.append(.rounds(bench: "train", figure: "\(net) updates/s", unit: "1/s", anchor: "sgemm limit (OPENBLAS unset)",
                                   pairs: unsetPairs, better: .higher, anchorMissing: limitMissing))
        }
        return figures
    }

    /// Fills replay with 10,000 random cart-pole transitions, then times `updates` updates.
    static func updatesPerSecond(hidden: Int, updates: Int, seed: UInt64) throws -> Double {
        var config = DQNConfig()
        config.batchSize = 64
        config.nStep = 1
        config.cqlWeight = 0
        config.targetUpdateInterval = 10   // as SB3's CartPole settings: a hard copy every 10 updates
        let learner = try DQNLearner(config: config, architecture: Architecture(inputCount: 4, hidden: [hidden, hidden], actionCount: 2), seed: seed)
        var plant = CartPole(seed: seed)
        var rng = SeededGenerator(seed: seed)
        var s = plant.reset().map(Float.init)
        for _ in 0..<10_000 {
            let a = Int(rng.next() % 2)
            let r = plant.step(a)
            let next = r.observation.map(Float.init)
            learner.observe(Transition(state: s, action: a, reward: Float(r.reward), nextState: next, terminal: r.terminal, truncated: r.truncated))
            s = (r.terminal || r.truncated) ? plant.reset().map(Float.init) : next
        }
        for _ in 0..<200 { learner.update() }  // warm-up
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<updates { learner.update() }
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return Double(updates) / dt
    }
}
