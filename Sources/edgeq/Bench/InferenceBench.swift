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
enum InferenceBench {
    static let nets = [Architecture(inputCount: 8, hidden: [64, 64], actionCount: 5),
                       Architecture(inputCount: 32, hidden: [256, 256], actionCount: 9)]

    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        let calls = context.quick ? 20_000 : 100_000
        var figures: [BenchFigure] = []
        let anchors = context.withAnchors ? try Anchors.prepare(context) : nil
        for arch in nets {
            let net = "\(arch.inputCount)-\(arch.hidden.map(String.init).joined(separator: "-"))-\(arch.actionCount)"
            context.progress("net \(net): EdgeQ fp32 and int8, \(calls) single calls each")
            let edgeq = try measure(arch, calls: calls)
            var c: [String: Double] = [:], py: [String: Double] = [:]
            if let anchors {
                context.progress("net \(net): C floor (mlp_floor)")
                c = try cFloor(anchors, net: net, quick: context.quick)
                if let python = anchors.python {
                    context.progress("net \(net): onnxruntime and numpy (infer_micro.py)")
                    py = try pythonMicro(anchors, python: python, net: net, quick: context.quick)
                } else {
                    context.progress("no Python venv for the anchors: onnxruntime/numpy skipped")
                }
            }
            func fig(_ name: String, _ value: Double, _ anchor: String?, _ anchorValue: Double?) {
                figures.append(BenchFigure(bench: "inference", figure: "\(net) \(name)", value: value, unit: "us",
                                           anchor: anchor, anchorValue: anchorValue, better: .lower))
            }
            fig("int8 p50", edgeq.int8p50, "c_int8 p50", c["c_int8/infer_p50"])
            fig("int8 p99", edgeq.int8p99, "c_int8 p99", c["c_int8/infer_p99"])
            fig("int8 p50", edgeq.int8p50, "onnxruntime p50", py["onnxruntime/infer_p50"])
            fig("fp32 p50", edgeq.fp32p50, "c_sgemv p50", c["c_sgemv/infer_p50"])
            fig("fp32 p99", edgeq.fp32p99, "c_sgemv p99", c["c_sgemv/infer_p99"])
            fig("fp32 p50", edgeq.fp32p50, "onnxruntime p50", py["onnxruntime/infer_p50"])
            fig("int8 p50", edgeq.int8p50, "numpy p50", py["numpy/infer_p50"])
            fig("int8 p50", edgeq.int8p50, "EdgeQ fp32 p50", edgeq.fp32p50)
            figures.append(BenchFigure(bench: "inference", figure: "\(net) int8 agreement", value: edgeq.agreement,
                                       unit: "fraction", anchor: "c_int8 agreement", anchorValue: c["c_int8/agree_with_fp32"], better: .higher))
            fig("mixed p50", edgeq.mixedP50, "c_int8 p50", c["c_int8/infer_p50"])
            fig("mixed p99", edgeq.mixedP99, "c_int8 p99", c["c_int8/infer_p99"])
            fig("mixed p50", edgeq.mixedP50, "onnxruntime p50", py["onnxruntime/infer_p50"])
            figures.append(BenchFigure(bench: "inference", figure: "\(net) mixed agreement", value: edgeq.mixedAgreement,
                                       unit: "fraction", anchor: "c_int8 agreement", anchorValue: c["c_int8/agree_with_fp32"], better: .higher))
            figures.append(BenchFigure(bench: "inference", figure: "\(net) mixed: share decided by fp32", value: edgeq.fp32Share,
                                       unit: "fraction", anchor: nil, anchorValue: nil, better: .lower))
        }
        context.progress("trained cart-pole 4-64-64-2: DQN for 6,000 steps, then int8 / mixed / fp32 on 3,000 held-out states")
        let t = try trainedCartPole(calls: calls)
        func tfig(_ name: String, _ value: Double, _ unit: String, _ anchor: String?, _ anchorValue: Double?, _ better: BenchFigure.Better) {
            figures.append(BenchFigure(bench: "inference", figure: "cartpole 4-64-64-2 trained \(name)", value: value, unit: unit,
                                       anchor: anchor, anchorValue: anchorValue, better: better))
        }
        tfig("int8 agreement", t.agreement, "fraction", nil, nil, .higher)
        tfig("mixed agreement", t.mixedAgreement, "fraction", "int8 agreement", t.agreement, .higher)
        tfig("mixed: share decided by fp32", t.fp32Share, "fraction", nil, nil, .lower)
        tfig("mixed p50", t.mixedP50, "us", "EdgeQ fp32 p50", t.fp32p50, .lower)
        tfig("mixed p99", t.mixedP99, "us", "EdgeQ fp32 p99", t.fp32p99, .lower)
        tfig("int8 p50", t.int8p50, "us", "EdgeQ fp32 p50", t.fp32p50, .lower)
        return figures
    }

    struct Result { var fp32p50, fp32p99, int8p50, int8p99, agreement, mixedP50, mixedP99, mixedAgreement, fp32Share: Double }

    /// A cart-pole DQN trained for 6,000 steps (seed 2), quantized with 2,000 visited states,
    /// compared and timed on 3,000 others.
    static func trainedCartPole(calls: Int) throws -> Result {
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
        return time(model, inputs: heldOut, heldOut: heldOut, calls: calls)
    }

    /// Times EdgeQ's engines on a seeded random network (same shape as the anchors').
    static func measure(_ arch: Architecture, calls: Int) throws -> Result {
        let network = try MLP(arch, seed: 42)
        var rng = SeededGenerator(seed: 7)
        let n = arch.inputCount
        let inputs = (0..<(256 * n)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        let model = try QModel(network: network, actionNames: (0..<arch.actionCount).map { "a\($0)" },
                               normalization: .identity(n), calibrationStates: inputs)
        let heldOut = (0..<(10_000 * n)).map { _ in Float(rng.nextUnit() * 2 - 1) }
        return time(model, inputs: inputs, heldOut: heldOut, calls: calls)
    }

    /// Agreement on `heldOut`, then each precision timed on single calls cycling through
    /// the first 256 states of `inputs`.
    static func time(_ model: QModel, inputs: [Float], heldOut: [Float], calls: Int) -> Result {
        let report = model.quantizationReport(heldOut: heldOut)
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
        return Result(fp32p50: f50, fp32p99: f99, int8p50: i50, int8p99: i99, agreement: report.agreement,
                      mixedP50: m50, mixedP99: m99, mixedAgreement: report.mixedAgreement, fp32Share: report.mixedFP32Share)
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
