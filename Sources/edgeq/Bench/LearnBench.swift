import EdgeQCore
import EdgeQLab
import EdgeQLearner
import EdgeQNet
import EdgeQPlants
import EdgeQSystem
import Foundation

/// `edgeq bench learn`: sample efficiency on the in-process cart-pole (Gymnasium v1 physics,
/// 500-step limit). Per seed: environment steps until the mean greedy return over 20
/// evaluation episodes first reaches 475, the mean return at 50,000 steps, and wall time.
/// Anchor: the tuned Stable-Baselines3 DQN of rl-zoo3 (`zoo/zoo_cartpole.py`), run in this
/// run for 1 seed with --quick, 3 otherwise, alternating with EdgeQ's seeds (EdgeQ seed 0,
/// zoo seed 0, EdgeQ seed 1, …). When the anchor cannot run (no venv, a failure, 300 s
/// without finishing), its figures are printed as not measured, with the reason.
enum LearnBench {
    /// The settings EdgeQ uses (docs/learning.md, "cart-pole").
    static func config() -> DQNConfig { .cartPole }

    typealias CartPoleEnv = CartPoleEnvironment

    struct SeedResult { var firstStep475: Int?; var finalReturn: Double; var wallSeconds: Double }

    static func runSeed(_ seed: UInt64, steps: Int) throws -> SeedResult {
        setBLASThreads(1)
        let learner = try DQNLearner(config: config(), architecture: Architecture(inputCount: 4, hidden: [64, 64], actionCount: 2), seed: seed)
        var env = CartPoleEnv(seed: seed &+ 1_000), evalEnv = CartPoleEnv(seed: seed &+ 2_000)
        var loop = OnlineTraining()
        loop.evaluationInterval = 2_500
        loop.evaluationEpisodes = 20
        let t0 = DispatchTime.now().uptimeNanoseconds
        let curve = loop.run(learner, environment: &env, evaluationEnvironment: &evalEnv, steps: steps)
        let wall = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return SeedResult(firstStep475: curve.first { $0.meanReturn >= 475 }?.step, finalReturn: curve.last?.meanReturn ?? 0, wallSeconds: wall)
    }

    /// One rl-zoo3 seed: final mean return and learn() wall time, or why it did not run.
    static func zooSeed(_ seed: Int, python: String, anchors: Anchors) -> Result<(ret: Double, wall: Double), ZooFailure> {
        let script = anchors.directory.appendingPathComponent("zoo/zoo_cartpole.py").path
        let timeout = 300.0
        let r: (code: Int32, stdout: String, stderr: String)
        do {
            r = try ChildProcess.run(python, [script, "--seed", String(seed)], timeout: timeout, workingDirectory: anchors.directory.path)
        } catch {
            let text = "\(error)"
            return .failure(ZooFailure(text.contains("still running")
                ? "zoo_cartpole.py --seed \(seed) did not finish within \(Int(timeout)) s (killed)"
                : "zoo_cartpole.py --seed \(seed) did not start: \(text)"))
        }
        guard r.code == 0, let line = r.stdout.split(separator: "\n").last(where: { $0.contains("eval_mean_return=") }) else {
            return .failure(ZooFailure("zoo_cartpole.py --seed \(seed) exited \(r.code): \(lastLine(r.stderr))"))
        }
        func field(_ name: String) -> Double? {
            line.split(separator: " ").first { $0.hasPrefix(name + "=") }.flatMap { Double($0.dropFirst(name.count + 1)) }
        }
        guard let m = field("eval_mean_return"), let w = field("learn_wall_s") else {
            return .failure(ZooFailure("zoo_cartpole.py --seed \(seed) printed no eval_mean_return / learn_wall_s: \(line)"))
        }
        return .success((m, w))
    }

    /// Why an rl-zoo3 seed gave no figures.
    struct ZooFailure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        let seeds: [UInt64] = context.quick ? [0, 1] : [0, 1, 2, 3, 4]
        let zooSeeds = context.quick ? 1 : 3
        var anchors: Anchors?, python: String?
        var zooMissing: String?
        if !context.withAnchors {
            zooMissing = "not measured: --no-anchors"
        } else {
            do {
                anchors = try Anchors.prepare(context)
                python = try anchors?.requirePython()
            } catch {
                zooMissing = "not measured: \(error)"
            }
        }
        var results: [SeedResult] = []
        var zooReturns: [Double] = [], wallPairs: [(Double, Double?)] = []
        for (i, s) in seeds.enumerated() {
            let r = try runSeed(s, steps: 50_000)
            context.progress("EdgeQ seed \(s): first ≥ 475 at \(r.firstStep475.map(String.init) ?? "never"), return at 50,000 steps \(r.finalReturn), \(String(format: "%.1f", r.wallSeconds)) s")
            results.append(r)
            var zooWall: Double?
            if i < zooSeeds, zooMissing == nil, let anchors, let python {
                context.progress("rl-zoo3 SB3 DQN seed \(i) (~30 s on a quiet machine; given up after 300 s)")
                switch zooSeed(i, python: python, anchors: anchors) {
                case .success(let z):
                    zooReturns.append(z.ret)
                    zooWall = z.wall
                    context.progress(String(format: "rl-zoo3 seed %d: return %.1f, %.1f s", i, z.ret, z.wall))
                case .failure(let e):
                    // The anchor is what it is in this run: no recorded figures instead.
                    zooMissing = "not measured: \(e)"
                    context.progress("rl-zoo3 did not finish; its figures are not measured in this run: \(e)")
                }
            }
            wallPairs.append((r.wallSeconds, zooWall))
        }
        // A zoo seed that failed after others ran: the measured ones stand, the name says how many.
        let zooName = zooReturns.isEmpty ? "rl-zoo3 DQN" : "rl-zoo3 DQN (\(zooReturns.count) seed\(zooReturns.count == 1 ? "" : "s") in this run)"
        let missing = zooReturns.isEmpty ? (zooMissing ?? "not measured") : nil
        let n = Double(results.count)
        let reached = Double(results.filter { $0.finalReturn >= 475 }.count)
        let steps475 = results.compactMap { $0.firstStep475 }.map(Double.init)
        var figures = [
            BenchFigure(bench: "learn", figure: "seeds ≥ 475 at 50k steps (fraction)", value: reached / n, unit: "fraction",
                        anchor: zooName, anchorValue: zooReturns.isEmpty ? nil : Double(zooReturns.filter { $0 >= 475 }.count) / Double(zooReturns.count),
                        better: .higher, reason: missing),
            BenchFigure(bench: "learn", figure: "mean return at 50k steps", value: results.map(\.finalReturn).reduce(0, +) / n, unit: "return",
                        anchor: zooName, anchorValue: zooReturns.isEmpty ? nil : zooReturns.reduce(0, +) / Double(zooReturns.count),
                        better: .higher, reason: missing),
            // Wall time: EdgeQ seed i and zoo seed i ran one after the other (a round).
            .rounds(bench: "learn", figure: "wall time per seed (50k steps)", unit: "s", anchor: zooName, pairs: wallPairs,
                    better: .lower, anchorMissing: missing),
        ]
        if let m = BenchFigure.median(steps475) {
            figures.append(BenchFigure(bench: "learn", figure: "median steps to first eval ≥ 475 (\(steps475.count)/\(results.count) seeds)", value: m, unit: "steps", better: .lower))
        }
        return figures
    }
}
