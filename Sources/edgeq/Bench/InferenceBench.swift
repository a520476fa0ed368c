import EdgeQCore
import EdgeQLab
import EdgeQLearner
import EdgeQNet
import EdgeQSystem
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `edgeq bench inference`: single-state decision time (normalise → network → masked argmax),
/// fp32 and int8, nets 8-64-64-5 and 32-256-256-9, against the plain-C floor
/// (`mlp_floor`, built with each net's sizes as constants) and onnxruntime / numpy
/// (`gateway/infer_micro.py`), all measured in this run.
///
/// Method as the C floor's: inputs cycle through 256 random vectors, warm-up, then every call
/// is timed alone with clock_gettime (timer cost included); p50 and p99 over the calls.
/// `Precision.mixed` (int8, fp32 on int8's near-ties) is timed the same way; on random nets
/// and inputs it seldom asks fp32, so it is also measured on a trained cart-pole network,
/// where action gaps are fine and agreement is the hard part.
///
/// EdgeQ and the anchors alternate in rounds (EdgeQ, C floor, Python, EdgeQ, …: 5 rounds,
/// 2 with `--quick`), so that load drift on a shared machine hits both sides of a ratio;
/// each figure's ratio is the median of the per-round ratios, with their min and max.
enum InferenceBench {
    static let nets = [Architecture(inputCount: 8, hidden: [64, 64], actionCount: 5),
                       Architecture(inputCount: 32, hidden: [256, 256], actionCount: 9)]

    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        let calls = context.quick ? 20_000 : 100_000
        let rounds = context.quick ? 2 : 5
        var figures: [BenchFigure] = []
        let anchors = context.withAnchors ? try Anchors.prepare(context) : nil
        for arch in nets {
            let net = "\(arch.inputCount)-\(arch.hidden.map(String.init).joined(separator: "-"))-\(arch.actionCount)"
            let subject = try Subject.random(arch)
            var edgeq: [Timing] = [], c: [[String: Double]?] = [], py: [[String: Double]?] = []
            var cMissing = anchors == nil ? "not measured: --no-anchors" : "not measured"
            var pyMissing = anchors == nil ? "not measured: --no-anchors" : "not measured: no Python venv for the anchors (make bench-setup)"
            for round in 0..<rounds {
                context.progress("net \(net), round \(round + 1) of \(rounds): EdgeQ fp32, int8 and mixed, \(calls) single calls each")
                let t = subject.time(calls: calls)
                edgeq.append(t)
                context.progress(String(format: "  EdgeQ p50 fp32 %.3f, int8 %.3f, mixed %.3f us", t.fp32p50, t.int8p50, t.mixedP50))
                var cRound: [String: Double]?, pyRound: [String: Double]?
                if let anchors {
                    context.progress("  C floor (mlp_floor)")
                    do { cRound = try cFloor(anchors, net: net, quick: context.quick) } catch {
                        cMissing = "not measured: \(error)"
                        context.progress("  mlp_floor failed: \(error)")
                    }
                    if let python = anchors.python {
                        context.progress("  onnxruntime and numpy (infer_micro.py)")
                        do { pyRound = try pythonMicro(anchors, python: python, net: net, quick: context.quick) } catch {
                            pyMissing = "not measured: \(error)"
                            context.progress("  infer_micro.py failed: \(error)")
                        }
                    }
                }
                c.append(cRound)
                py.append(pyRound)
            }
            func fig(_ name: String, _ mine: KeyPath<Timing, Double>, _ anchor: String, _ theirs: [Double?], _ missing: String) {
                figures.append(.rounds(bench: "inference", figure: "\(net) \(name)", unit: "us", anchor: anchor,
                                       pairs: zip(edgeq, theirs).map { ($0[keyPath: mine], $1) }, better: .lower, anchorMissing: missing))
            }
            let cInt8p50 = c.map { $0?["c_int8/infer_p50"] }, cInt8p99 = c.map { $0?["c_int8/infer_p99"] }
            let ort = py.map { $0?["onnxruntime/infer_p50"] }
            fig("int8 p50", \.int8p50, "c_int8 p50", cInt8p50, cMissing)
            fig("int8 p99", \.int8p99, "c_int8 p99", cInt8p99, cMissing)
            fig("int8 p50", \.int8p50, "onnxruntime p50", ort, pyMissing)
            fig("fp32 p50", \.fp32p50, "c_sgemv p50", c.map { $0?["c_sgemv/infer_p50"] }, cMissing)
            fig("fp32 p99", \.fp32p99, "c_sgemv p99", c.map { $0?["c_sgemv/infer_p99"] }, cMissing)
            fig("fp32 p50", \.fp32p50, "onnxruntime p50", ort, pyMissing)
            fig("int8 p50", \.int8p50, "numpy p50", py.map { $0?["numpy/infer_p50"] }, pyMissing)
            fig("int8 p50", \.int8p50, "EdgeQ fp32 p50", edgeq.map(\.fp32p50), "")
            let cAgreement = c.compactMap { $0?["c_int8/agree_with_fp32"] }.last
            figures.append(BenchFigure(bench: "inference", figure: "\(net) int8 agreement", value: subject.report.agreement,
                                       unit: "fraction", anchor: "c_int8 agreement", anchorValue: cAgreement, better: .higher,
                                       reason: cAgreement == nil ? cMissing : nil))
            fig("mixed p50", \.mixedP50, "c_int8 p50", cInt8p50, cMissing)
            fig("mixed p99", \.mixedP99, "c_int8 p99", cInt8p99, cMissing)
            fig("mixed p50", \.mixedP50, "onnxruntime p50", ort, pyMissing)
            figures.append(BenchFigure(bench: "inference", figure: "\(net) mixed agreement", value: subject.report.mixedAgreement,
                                       unit: "fraction", anchor: "c_int8 agreement", anchorValue: cAgreement, better: .higher,
                                       reason: cAgreement == nil ? cMissing : nil))
            figures.append(BenchFigure(bench: "inference", figure: "\(net) mixed: share decided by fp32", value: subject.report.mixedFP32Share,
                                       unit: "fraction", better: .lower))
        }
        context.progress("trained cart-pole 4-64-64-2: DQN for 6,000 steps, then int8 / mixed / fp32 on 3,000 held-out states")
        let trained = try Subject.trainedCartPole()
        let t = (0..<rounds).map { _ in trained.time(calls: calls) }
        func tfig(_ name: String, _ mine: KeyPath<Timing, Double>, _ theirs: KeyPath<Timing, Double>, _ anchor: String) {
            figures.append(.rounds(bench: "inference", figure: "cartpole 4-64-64-2 trained \(name)", unit: "us", anchor: anchor,
                                   pairs: t.map { ($0[keyPath: mine], $0[keyPath: theirs]) }, better: .lower))
        }
        let r = trained.report
        figures.append(BenchFigure(bench: "inference", figure: "cartpole 4-64-64-2 trained int8 agreement", value: r.agreement,
                                   unit: "fraction", better: .higher))
        figures.append(BenchFigure(bench: "inference", figure: "cartpole 4-64-64-2 trained mixed agreement", value: r.mixedAgreement,
                                   unit: "fraction", anchor: "int8 agreement", anchorValue: r.agreement, better: .higher))
        figures.append(BenchFigure(bench: "inference", figure: "cartpole 4-64-64-2 trained mixed: share decided by fp32", value: r.mixedFP32Share,
                                   unit: "fraction", better: .lower))
        tfig("mixed p50", \.mixedP50, \.fp32p50, "EdgeQ fp32 p50")
        tfig("mixed p99", \.mixedP99, \.fp32p99, "EdgeQ fp32 p99")
        tfig("int8 p50", \.int8p50, \.fp32p50, "EdgeQ fp32 p50")
        return figures
    }

    /// Per-call p50 and p99 of each precision, in µs (one round).
    struct Timing { var fp32p50, fp32p99, int8p50, int8p99, mixedP50, mixedP99: Double }

    /// A model to time, the states it is timed on, and its agreement report.
    struct Subject {
        let model: QModel
        let inputs: [Float]
        let report: QuantizationReport

        /// A seeded random network (same shape as the anchors'), calibrated on 256 random
        /// inputs and compared on 10,000 others.
        static func random(_ arch: Architecture) throws -> Subject {
            let network = try MLP(arch, seed: 42)
            var rng = SeededGenerator(seed: 7)
            let n = arch.inputCount
            let inputs = (0..<(256 * n)).map { _ in Float(rng.nextUnit() * 2 - 1) }
            let model = try QModel(network: network, actionNames: (0..<arch.actionCount).map { "a\($0)" },
                                   normalization: .identity(n), calibrationStates: inputs)
            let heldOut = (0..<(10_000 * n)).map { _ in Float(rng.nextUnit() * 2 - 1) }
            return Subject(model: model, inputs: inputs, report: model.quantizationReport(heldOut: heldOut))
        }

        /// A cart-pole DQN trained for 6,000 steps (seed 2), quantized with 2,000 visited
        /// states, compared and timed on 3,000 others.
        static func trainedCartPole() throws -> Subject {
            setBLASThreads(1)
            let learner = try DQNLearner(config: .cartPole, architecture: Architecture(inputCount: 4, hidden: [64, 64], actionCount: 2), seed: 2)
            var env = CartPoleEnvironment(seed: 21), evalEnv = CartPoleEnvironment(seed: 22)
            var loop = OnlineTraining()
            loop.evaluationInterval = 0
            _ = loop.run(learner, environment: &env, evaluationEnvironment: &evalEnv, steps: 6_000)
            let calibration = CartPoleEnvironment.rollout(learner.online, seed: 31, steps: 2_000, epsilon: 0.2)
            let heldOut = CartPoleEnvironment.rollout(learner.online, seed: 32, steps: 3_000, epsilon: 0.2)
            let model = try QModel(network: learner.online, actionNames: ["left", "right"], normalization: .identity(4),
                                   calibrationStates: calibration)
            return Subject(model: model, inputs: heldOut, report: model.quantizationReport(heldOut: heldOut))
        }

        /// Each precision timed on single calls cycling through the first 256 states of `inputs`.
        func time(calls: Int) -> Timing {
            let n = model.inputCount
            let arch = model.architecture
            setBLASThreads(1)
            func time(_ engine: QEngine) -> (Double, Double) {
                var samples = [Double](repeating: 0, count: calls)
                var sink = 0
                var q = [Float](repeating: 0, count: arch.actionCount)
                inputs.withUnsafeBufferPointer { all in
                    q.withUnsafeMutableBufferPointer { out in
                        for k in 0..<5_000 {
                            let s = UnsafeBufferPointer(rebasing: all[((k & 255) * n)..<((k & 255) * n + n)])
                            sink &+= engine.bestAction(state: s, mask: nil, qValues: out) ?? 0
                        }
                        var t0 = timespec(), t1 = timespec()
                        for k in 0..<calls {
                            let s = UnsafeBufferPointer(rebasing: all[((k & 255) * n)..<((k & 255) * n + n)])
                            clock_gettime(CLOCK_MONOTONIC, &t0)
                            sink &+= engine.bestAction(state: s, mask: nil, qValues: out) ?? 0
                            clock_gettime(CLOCK_MONOTONIC, &t1)
                            samples[k] = Double(t1.tv_sec - t0.tv_sec) * 1e6 + Double(t1.tv_nsec - t0.tv_nsec) / 1e3
                        }
                    }
                }
                if sink == -1 { print("") }
                samples.sort()
                return (samples[calls / 2], samples[calls * 99 / 100])
            }
            let (f50, f99) = time(model.makeFloatEngine())
            let (i50, i99) = time(model.makeInt8Engine())
            let (m50, m99) = time(model.makeEngine(.mixed))
            return Timing(fp32p50: f50, fp32p99: f99, int8p50: i50, int8p99: i99, mixedP50: m50, mixedP99: m99)
        }
    }

    /// The C floor, built with the net's sizes as constants.
    static func cFloor(_ anchors: Anchors, net: String, quick: Bool) throws -> [String: Double] {
        var program = anchors.program("mlp_floor")
        if net != "8-64-64-5" {
            let make = try ChildProcess.run("make", ["-s", "floor", "NET=\(net)", "BIN=\(anchors.bin.path)"], timeout: 300,
                                            workingDirectory: anchors.directory.path)
            guard make.code == 0 else { throw BenchError.anchorMissing("make floor NET=\(net): \(make.stderr)") }
            program = anchors.program("mlp_floor_\(net)")
        }
        let r = try ChildProcess.run(program, ["--json"] + (quick ? ["--quick"] : []), timeout: 600)
        guard r.code == 0 else { throw BenchError.failed("mlp_floor: \(r.stderr)") }
        return anchorFigures(r.stdout)
    }

    /// onnxruntime and numpy in process (Python).
    static func pythonMicro(_ anchors: Anchors, python: String, net: String, quick: Bool) throws -> [String: Double] {
        let script = anchors.directory.appendingPathComponent("gateway/infer_micro.py").path
        let r = try ChildProcess.run(python, [script, "--backends", "numpy,onnxruntime", "--net", net, "--json"] + (quick ? ["--quick"] : []),
                                     timeout: 900, workingDirectory: anchors.directory.path)
        guard r.code == 0 else { throw BenchError.failed("infer_micro.py: \(r.stderr.suffix(500))") }
        return anchorFigures(r.stdout)
    }
}

/// The anchors' JSON lines as "anchor/figure" → value (the last line wins); lines that carry
/// a `blas_env` (flops_limit.py: the machine's OPENBLAS_* settings as is, or unset) are keyed
/// "anchor[env]/figure" or "anchor[unset]/figure".
func anchorFigures(_ stdout: String) -> [String: Double] {
    var out: [String: Double] = [:]
    for line in stdout.split(separator: "\n") {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let anchor = obj["anchor"] as? String, let figure = obj["figure"] as? String,
              let value = (obj["value"] as? NSNumber)?.doubleValue else { continue }
        let env = (obj["blas_env"] as? String).map { "[\($0)]" } ?? ""
        out["\(anchor)\(env)/\(figure)"] = value
    }
    return out
}
