import CEdgeQKernels
import COpenBLAS

/// Which arithmetic a `QEngine` uses; chosen at run time.
public enum Precision: String, Sendable, Codable, CaseIterable {
    /// fp32 weights, `cblas_sgemv` per layer.
    case fp32
    /// int8 weights and activations, int32 accumulation (SIMD).
    case int8
    /// int8, and the fp32 network for the states where int8's best two allowed actions are
    /// closer than the model's measured quantization error (`Int8Network.tieMargin`): int8's
    /// speed on clear decisions, fp32's choice on near-ties. The default of `edgeq run`.
    case mixed
}

/// Single-state inference for the decision path: normalises the raw state, runs the
/// network in fp32 or int8, writes Q-values into the caller's buffer and picks the best
/// allowed action. Allocates nothing per call (all buffers are made in `init`).
///
/// Not thread-safe: make one engine per thread (`QModel.makeEngine`); engines are cheap.
public final class QEngine {
    /// The arithmetic in use.
    public let precision: Precision
    /// The network's shape.
    public let architecture: Architecture
    /// The model's training support (`QModel.support`): the decision path checks a state
    /// against it before it acts on the model's choice.
    public let support: StateSupport?
    /// Whether the int8 kernels use AVX2 on this CPU (else the portable C loops).
    public static var int8UsesAVX2: Bool { edgeq_kernels_use_avx2() != 0 }

    private let inputCount: Int
    private let actionCount: Int
    private let mean: UnsafeMutablePointer<Float>
    private let invStd: UnsafeMutablePointer<Float>
    private let std: UnsafeMutablePointer<Float>
    // fp32 path: per layer, weights transposed to (in, outPadded) for the C kernel.
    private let fLayers: UnsafeMutablePointer<edgeq_flayer>
    private let fWeights: [UnsafeMutablePointer<Float>]
    private let fBiases: [UnsafeMutablePointer<Float>]
    private let fAcc: UnsafeMutablePointer<Float>
    // int8 path: per layer, weights padded to a multiple of 16 inputs.
    private struct QLayer {
        var inputs: Int
        var paddedInputs: Int
        var outputs: Int
        var weights: UnsafeMutablePointer<Int16>    // (out, paddedIn)
        var bits: Int                               // 8, or 16 (the head)
        var combined: UnsafeMutablePointer<Float>   // (out): weightScale[o]
        var bias: UnsafeMutablePointer<Float>       // (out)
        var inverseInputScales: UnsafeMutablePointer<Float>  // (in): 1 / inputScales[i]
    }
    private let qlayers: [QLayer]
    /// The same layers for the fused C kernel, weights transposed to (in, out).
    private let cLayers: UnsafeMutablePointer<edgeq_qlayer>
    private let transposed: [UnsafeMutablePointer<Int16>]
    private let pairs: [UnsafeMutablePointer<Int16>]
    private let quads: [UnsafeMutablePointer<Int8>]
    private let acc: UnsafeMutablePointer<Int32>
    private let outBuf: UnsafeMutablePointer<Float>
    private let xq: UnsafeMutablePointer<Int8>        // (max padded width)
    private let bufA: UnsafeMutablePointer<Float>     // (max width)
    private let bufB: UnsafeMutablePointer<Float>
    private let maxWidth: Int
    private let scratchQ: UnsafeMutablePointer<Float>
    /// `Precision.mixed`: int8 margins below this are decided by fp32.
    public let tieMargin: Float
    /// `Precision.mixed`: how many decisions (calls) the fp32 network made because int8's
    /// margin was too small. Engine-local (one engine per thread); read it for metrics.
    public private(set) var fp32Decisions = 0

    init(model: QModel, precision: Precision) {
        self.precision = precision
        architecture = model.architecture
        support = model.support
        inputCount = architecture.inputCount
        actionCount = architecture.actionCount
        let widths = architecture.layerSizes
        maxWidth = (widths.max() ?? 1) + 16
        tieMargin = model.int8.tieMargin
        scratchQ = .allocate(capacity: model.architecture.actionCount)
        scratchQ.initialize(repeating: 0, count: model.architecture.actionCount)
        mean = .allocate(capacity: inputCount)
        std = .allocate(capacity: inputCount)
        invStd = .allocate(capacity: inputCount)
        for i in 0..<inputCount {
            mean[i] = model.normalization.mean[i]
            std[i] = model.normalization.std[i]
            invStd[i] = 1 / model.normalization.std[i]
        }
        let slices = architecture.slices
        fLayers = .allocate(capacity: max(slices.count, 1))
        var fw: [UnsafeMutablePointer<Float>] = [], fb: [UnsafeMutablePointer<Float>] = []
        for (l, s) in slices.enumerated() {
            let outPadded = (s.outputs + 7) / 8 * 8
            let w = UnsafeMutablePointer<Float>.allocate(capacity: s.inputs * outPadded)
            w.initialize(repeating: 0, count: s.inputs * outPadded)
            let b = UnsafeMutablePointer<Float>.allocate(capacity: outPadded)
            b.initialize(repeating: 0, count: outPadded)
            for o in 0..<s.outputs {
                b[o] = model.parameters[s.bias + o]
                for i in 0..<s.inputs { w[i * outPadded + o] = model.parameters[s.weight + o * s.inputs + i] }
            }
            fw.append(w)
            fb.append(b)
            fLayers[l] = edgeq_flayer(inputs: Int32(s.inputs), outputs: Int32(s.outputs), out_padded: Int32(outPadded), wt: w, bias: b)
        }
        fWeights = fw
        fBiases = fb
        var ql: [QLayer] = []
        for layer in model.int8.layers {
            let padded = (layer.inputs + 15) / 16 * 16
            let w = UnsafeMutablePointer<Int16>.allocate(capacity: layer.outputs * padded)
            w.initialize(repeating: 0, count: layer.outputs * padded)
            for o in 0..<layer.outputs {
                for i in 0..<layer.inputs { w[o * padded + i] = layer.weights[o * layer.inputs + i] }
            }
            let c = UnsafeMutablePointer<Float>.allocate(capacity: layer.outputs)
            let b = UnsafeMutablePointer<Float>.allocate(capacity: layer.outputs)
            for o in 0..<layer.outputs {
                c[o] = layer.weightScales[o]
                b[o] = layer.bias[o]
            }
            let inv = UnsafeMutablePointer<Float>.allocate(capacity: layer.inputs)
            for i in 0..<layer.inputs { inv[i] = 1 / layer.inputScales[i] }
            ql.append(QLayer(inputs: layer.inputs, paddedInputs: padded, outputs: layer.outputs, weights: w, bits: layer.bits,
                             combined: c, bias: b, inverseInputScales: inv))
        }
        qlayers = ql
        cLayers = .allocate(capacity: max(ql.count, 1))
        var tr: [UnsafeMutablePointer<Int16>] = []
        var pr: [UnsafeMutablePointer<Int16>] = []
        var qu: [UnsafeMutablePointer<Int8>] = []
        for (l, q) in ql.enumerated() {
            let t = UnsafeMutablePointer<Int16>.allocate(capacity: q.inputs * q.outputs)
            for i in 0..<q.inputs { for o in 0..<q.outputs { t[i * q.outputs + o] = q.weights[o * q.paddedInputs + i] } }
            tr.append(t)
            let outPadded = (q.outputs + 7) / 8 * 8
            // The AVX2 kernel's layout (edgeq_kernels.h): int8 quads (vpmaddubsw), fed the
            // inputs as they are where they can never be negative -- after a ReLU, with
            // positive input steps -- else as |x| with the signs moved onto the weights, which
            // needs weights above -128; int16 pairs (vpmaddwd) for a layer that has both, and
            // for a 16-bit layer (the head).
            let nonNegativeInputs = l > 0 && (0..<q.inputs).allSatisfy { q.inverseInputScales[$0] > 0 }
            let noMinus128 = (0..<q.outputs).allSatisfy { o in (0..<q.inputs).allSatisfy { q.weights[o * q.paddedInputs + $0] != -128 } }
            var wp: UnsafeMutablePointer<Int16>? = nil
            var wq: UnsafeMutablePointer<Int8>? = nil
            if q.bits == 8 && (nonNegativeInputs || noMinus128) {
                let count = (q.inputs + 3) / 4 * outPadded * 4   // (ceil(in / 4), outPadded, 4)
                let w = UnsafeMutablePointer<Int8>.allocate(capacity: count)
                w.initialize(repeating: 0, count: count)
                for i in 0..<q.inputs { for o in 0..<q.outputs { w[(i / 4) * outPadded * 4 + o * 4 + (i & 3)] = Int8(truncatingIfNeeded: q.weights[o * q.paddedInputs + i]) } }
                qu.append(w)
                wq = w
            } else {
                let count = (q.inputs + 1) / 2 * outPadded * 2   // (ceil(in / 2), outPadded, 2)
                let w = UnsafeMutablePointer<Int16>.allocate(capacity: count)
                w.initialize(repeating: 0, count: count)
                for i in 0..<q.inputs { for o in 0..<q.outputs { w[(i / 2) * outPadded * 2 + o * 2 + (i & 1)] = q.weights[o * q.paddedInputs + i] } }
                pr.append(w)
                wp = w
            }
            cLayers[l] = edgeq_qlayer(inputs: Int32(q.inputs), outputs: Int32(q.outputs), wt: t, scale: q.combined,
                                      bias: q.bias, inv_in: q.inverseInputScales, wpairs: wp, out_padded: Int32(outPadded),
                                      wquads: wq, quad_inputs_signed: nonNegativeInputs ? 0 : 1)
        }
        transposed = tr
        pairs = pr
        quads = qu
        // 32-byte aligned: the AVX2 kernel keeps its accumulators here as __m256i.
        // The kernels also list the nonzero inputs here (see edgeq_kernels.h).
        acc = UnsafeMutableRawPointer.allocate(byteCount: 4 * (3 * maxWidth) + 64, alignment: 32).bindMemory(to: Int32.self, capacity: 3 * maxWidth + 16)
        fAcc = .allocate(capacity: 3 * maxWidth)
        fAcc.initialize(repeating: 0, count: 3 * maxWidth)
        outBuf = .allocate(capacity: 2 * maxWidth)   // [0, maxWidth): outputs; then a scratch layer
        outBuf.initialize(repeating: 0, count: 2 * maxWidth)
        xq = .allocate(capacity: maxWidth)
        xq.initialize(repeating: 0, count: maxWidth)
        bufA = .allocate(capacity: maxWidth)
        bufA.initialize(repeating: 0, count: maxWidth)
        bufB = .allocate(capacity: maxWidth)
        bufB.initialize(repeating: 0, count: maxWidth)
    }

    deinit {
        mean.deallocate(); std.deallocate(); invStd.deallocate()
        for w in fWeights { w.deallocate() }
        for b in fBiases { b.deallocate() }
        fLayers.deallocate(); fAcc.deallocate()
        for l in qlayers { l.weights.deallocate(); l.combined.deallocate(); l.bias.deallocate(); l.inverseInputScales.deallocate() }
        xq.deallocate(); bufA.deallocate(); bufB.deallocate()
        for t in transposed { t.deallocate() }
        for p in pairs { p.deallocate() }
        for q in quads { q.deallocate() }
        cLayers.deallocate(); acc.deallocate(); outBuf.deallocate(); scratchQ.deallocate()
    }

    /// Writes Q(state, a) for every action into `output`.
    ///
    /// With `Precision.mixed` these are int8's values, or fp32's when int8's best two actions
    /// (all actions count here) are closer than `tieMargin`.
    ///
    /// - Parameters:
    ///   - state: the raw state vector (`inputCount` floats); the engine normalises it with
    ///     the model's constants, (x − mean) / std.
    ///   - output: at least `actionCount` floats.
    /// - Precondition: the buffer sizes above (a programming error, not bad input).
    public func qValues(state: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<Float>) {
        _ = evaluate(state: state, output: output, mask: nil)
    }

    /// Q-values into `output`, then the best action allowed by `mask` (`mask[a]` true =
    /// allowed, nil = all). Returns nil when the mask allows nothing (the caller falls back).
    ///
    /// With `Precision.mixed` the near-tie test looks only at allowed actions, and `output`
    /// holds fp32's values when fp32 decided.
    public func bestAction(state: UnsafeBufferPointer<Float>, mask: [Bool]?, qValues output: UnsafeMutableBufferPointer<Float>) -> Int? {
        evaluate(state: state, output: output, mask: mask)
    }

    /// The best allowed action (Q-values go into the engine's own scratch buffer).
    public func bestAction(state: UnsafeBufferPointer<Float>, mask: [Bool]? = nil) -> Int? {
        evaluate(state: state, output: UnsafeMutableBufferPointer(start: scratchQ, count: actionCount), mask: mask)
    }

    /// Normalise, run the precision's path into `output`, return the masked argmax.
    private func evaluate(state: UnsafeBufferPointer<Float>, output: UnsafeMutableBufferPointer<Float>, mask: [Bool]?) -> Int? {
        precondition(state.count >= inputCount && output.count >= actionCount, "QEngine: buffer sizes")
        let s = state.baseAddress!
        for i in 0..<inputCount { bufA[i] = (s[i] - mean[i]) / std[i] }
        let out = output.baseAddress!
        switch precision {
        case .fp32:
            writeFloat(into: out)
            return maskedArgmax(out, count: actionCount, mask: mask)
        case .int8:
            writeInt8(into: out)
            return maskedArgmax(out, count: actionCount, mask: mask)
        case .mixed:
            writeInt8(into: out)
            // The best and second-best allowed int8 values; a gap under the margin is a
            // near-tie that int8's rounding may have decided wrongly: ask fp32.
            var best: Int? = nil
            var first = -Float.infinity, second = -Float.infinity
            for a in 0..<actionCount {
                if let mask, a >= mask.count || !mask[a] { continue }
                let v = out[a]
                if best == nil || v > first { second = first; first = v; best = a } else if v > second { second = v }
            }
            guard best != nil else { return nil }
            // Also when a value is not finite (then the difference is NaN or infinite).
            if !(first - second >= tieMargin) || !first.isFinite {
                fp32Decisions &+= 1
                writeFloat(into: out)
                return maskedArgmax(out, count: actionCount, mask: mask)
            }
            return best
        }
    }

    /// fp32 Q-values of the normalised input in bufA into `out` (bufA is kept).
    private func writeFloat(into out: UnsafeMutablePointer<Float>) {
        let last = runFloat()
        if architecture.dueling {
            dueling_forward(out, last, batch: 1, actions: actionCount)
        } else {
            out.update(from: last, count: actionCount)
        }
    }

    /// int8 Q-values of the normalised input in bufA into `out` (bufA is kept).
    private func writeInt8(into out: UnsafeMutablePointer<Float>) {
        let last = runInt8()
        // The int8 head is centred (Int8Network): Q(s, a) = out[0] + out[1 + a].
        for a in 0..<actionCount { out[a] = last[0] + last[1 + a] }
    }

    /// Array convenience (allocates; for tools and tests).
    public func qValues(_ state: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: actionCount)
        state.withUnsafeBufferPointer { s in out.withUnsafeMutableBufferPointer { qValues(state: s, into: $0) } }
        return out
    }

    /// fp32: bufA holds the normalised input (kept); returns the buffer with the last layer's
    /// output. One call into the C kernel (axpy layout, zero inputs skipped).
    private func runFloat() -> UnsafeMutablePointer<Float> {
        edgeq_fp32_forward(outBuf, bufA, fLayers, Int32(architecture.layerCount), fAcc, bufB, outBuf + maxWidth)
        return outBuf
    }

    /// The fp32 path on BLAS (`cblas_sgemv` per layer, the model's own layout): the
    /// cross-check of the fp32 kernel.
    func runFloatBLAS(_ state: [Float], model: QModel) -> [Float] {
        var x = (0..<inputCount).map { (state[$0] - mean[$0]) / std[$0] }
        for (l, s) in architecture.slices.enumerated() {
            var y = Array(model.parameters[s.bias..<(s.bias + s.outputs)])
            model.parameters.withUnsafeBufferPointer { p in
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(s.outputs), Int32(s.inputs), 1, p.baseAddress! + s.weight, Int32(s.inputs), x, 1, 1, &y, 1)
            }
            if l < architecture.layerCount - 1 { y = y.map { max($0, 0) } }
            x = y
        }
        if architecture.dueling {
            var q = [Float](repeating: 0, count: actionCount)
            dueling_forward(&q, x, batch: 1, actions: actionCount)
            return q
        }
        return x
    }

    /// int8: bufA holds the normalised input; returns the buffer with the last layer's output.
    /// One call into the fused C kernel (axpy layout, zero inputs skipped).
    private func runInt8() -> UnsafeMutablePointer<Float> {
        edgeq_int8_forward(outBuf, bufA, cLayers, Int32(qlayers.count), xq, acc, bufB, outBuf + maxWidth)
        return outBuf
    }

    /// The AVX2 kernel's weight layout per layer: "quads" (inputs fed as they are), "signed
    /// quads" (|x|, signs on the weights) or "pairs" (int16). For tests and docs.
    var avx2Layouts: [String] {
        (0..<qlayers.count).map { l in
            cLayers[l].wquads == nil ? "pairs" : (cLayers[l].quad_inputs_signed != 0 ? "signed quads" : "quads")
        }
    }

    /// The layer-by-layer int8 path (dot layout): the cross-check of the fused kernel.
    func runInt8Layered(_ state: [Float]) -> [Float] {
        for i in 0..<inputCount { bufA[i] = (state[i] - mean[i]) / std[i] }
        var x = bufA, y = bufB
        for (l, q) in qlayers.enumerated() {
            edgeq_quantize_input(xq, x, q.inverseInputScales, Int32(q.inputs))
            edgeq_int8_matvec(y, q.weights, xq, q.combined, q.bias, Int32(q.paddedInputs), Int32(q.outputs), l < qlayers.count - 1 ? 1 : 0)
            swap(&x, &y)
        }
        return (0..<actionCount).map { x[0] + x[1 + $0] }
    }
}

/// The naive loop computing what the C kernel `edgeq_int8_matvec` computes (the test oracle).
/// w is (out, in) int8, x is (in) int8 values, combined/bias/y are (out).
func int8_matvec_naive(_ y: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Int16>, _ x: UnsafePointer<Int32>,
                       _ combined: UnsafePointer<Float>, _ bias: UnsafePointer<Float>, inputs I: Int, outputs O: Int, relu: Bool) {
    for o in 0..<O {
        var acc: Int32 = 0
        for i in 0..<I { acc += Int32(w[o * I + i]) * x[i] }
        var v = Float(acc) * combined[o] + bias[o]
        if relu && v < 0 { v = 0 }
        y[o] = v
    }
}
