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
/// (`train/flops_limit.py`, "shaped" figure).
enum TrainBench {
    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        setBLASThreads(1)
        let anchors = context.withAnchors ? try Anchors.prepare(context) : nil
        var figures: [BenchFigure] = []
        for hidden in [64, 256] {
            let net = "4-\(hidden)-\(hidden)-2"
            let updates = context.quick ? 2_000 : 10_000
            let runs = context.quick ? 1 : 3
            context.progress("net \(net): EdgeQ, \(updates) updates (\(runs) run\(runs > 1 ? "s, median" : ""))")
            var rates: [Double] = []
            for run in 0..<runs { rates.append(try updatesPerSecond(hidden: hidden, updates: updates, seed: UInt64(run))) }
            let edgeq = rates.sorted()[rates.count / 2]
            var sb3: Double?, limitEnv: Double?, limitUnset: Double?
            if let anchors, let python = anchors.python {
                context.progress("net \(net): SB3 train() (sb3_updates.py)")
                let script = anchors.directory.appendingPathComponent("train/sb3_updates.py").path
                let r = try ChildProcess.run(python, [script, "--threads", "1", "--only", "train_call", "--json", "--net", net] + (context.quick ? ["--quick"] : []),
                                             timeout: 1_200, workingDirectory: anchors.directory.path)
                if r.code == 0 { sb3 = anchorFigures(r.stdout)["sb3/updates_per_s"] } else { context.progress("sb3_updates.py failed: \(r.stderr.suffix(300))") }
                let f = try ChildProcess.run(python, [anchors.directory.appendingPathComponent("train/flops_limit.py").path, "--json", "--net", net],
                                             timeout: 120, workingDirectory: anchors.directory.path)
                if f.code == 0 {
                    let l = anchorFigures(f.stdout)
                    limitEnv = l["flops_limit[env]/shaped_updates_per_s"]
                    limitUnset = l["flops_limit[unset]/shaped_updates_per_s"]
                }
            }
            figures.append(BenchFigure(bench: "train", figure: "\(net) updates/s", value: edgeq, unit: "1/s",
                                       anchor: "sb3 train()", anchorValue: sb3, better: .higher))
            // The limit sgemm's measured throughput implies (anchors README), with the machine's
            // OPENBLAS_* settings ("env", the README's ≈ 43,000/s) and with them unset.
            figures.append(BenchFigure(bench: "train", figure: "\(net) updates/s", value: edgeq, unit: "1/s",
                                       anchor: "sgemm limit (OPENBLAS env)", anchorValue: limitEnv, better: .higher))
            figures.append(BenchFigure(bench: "train", figure: "\(net) updates/s", value: edgeq, unit: "1/s",
                                       anchor: "sgemm limit (OPENBLAS unset)", anchorValue: limitUnset, better: .higher))
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
