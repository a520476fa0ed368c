// Post-training int8 quantization: per-output-channel symmetric int8 weights, int32
// accumulation, activations quantized per layer with a static scale from calibration states.

/// One quantized linear layer.
///
/// Activations are quantized per input channel: x8[i] = clamp(rint(x[i] · (1 / inputScales[i])), −127, 127)
/// (round half to even, as numpy's rint), and each channel's scale is folded into the
/// weights before their per-output-channel quantization, so the int32 dot product needs one
/// scale per output: y[o] = Float(Σ_i W8[o, i] · x8[i]) · weightScales[o] + bias[o], where
/// W8[o, i] = clamp(rint(W[o, i] · inputScales[i] / weightScales[o]), −127, 127) and
/// weightScales[o] = max_i |W[o, i] · inputScales[i]| / 127.
/// (Per-channel input scales matter when features have very different ranges, like
/// cart-pole's position and angle; with one scale per layer the narrow ones lose their bits.)
///
/// The head (the last layer) has 16-bit weights: 127 becomes `weightLimit` in the formulas
/// above, activations stay 8-bit. A trained network's action gaps are often finer than 8-bit
/// head weights resolve: on the demo's thermal model pure int8 picks fp32's action on 82 % of
/// the logged states, with a 16-bit head on 98 % (docs/model-format.md); the head is a few
/// hundred weights, so it costs nothing measurable.
public struct Int8Layer: Sendable, Equatable {
    /// Input width.
    public var inputs: Int
    /// Rows: the layer's outputs (A + 1 for the centred head).
    public var outputs: Int
    /// (out, in) row-major, symmetric: within ±127 when `bits` is 8 (−128 only in a file
    /// written elsewhere), within ±`weightLimit(bits:inputs:)` when 16.
    public var weights: [Int16]
    /// 8 (hidden layers, and heads of files written before format version 2) or 16 (the head).
    public var bits: Int
    /// (out): the step of each output row's weights (1 when the row is all zero).
    public var weightScales: [Float]
    /// (out): the fp32 bias, kept in fp32 (for the head: the centred bias, see `Int8Network`).
    public var bias: [Float]
    /// (in): the step of each input channel: max |x_i| over calibration / 127 (1 if never nonzero).
    public var inputScales: [Float]
}

extension Int8Layer {
    /// The largest |weight| a layer of `bits` bits with `inputs` inputs may hold: 127 for 8
    /// bits; for 16 bits 32,767, or less when the layer is so wide that Σ |w · x| over its
    /// inputs (|x| ≤ 127) could leave int32 — the kernels accumulate in int32, exactly.
    public static func weightLimit(bits: Int, inputs: Int) -> Int {
        bits == 8 ? 127 : min(32_767, Int(Int32.max) / (max(inputs, 1) * 127))
    }
}

/// A quantized network: one `Int8Layer` per linear layer of the architecture.
///
/// The head (last layer) is stored centred, with A + 1 rows: row 0 is the part common to
/// every action and rows 1…A what distinguishes them, so Q(s, a) = out[0] + out[1 + a].
/// Plain head: row 0 = mean_a W_a, row 1 + a = W_a − mean W (biases likewise). Dueling head:
/// row 0 = the value row, row 1 + a = A_a − mean A. This is exact in real arithmetic and
/// keeps the rows that decide the argmax small, so their own int8 scales are fine: on
/// cart-pole, where Q ≈ 60 and action gaps are often < 0.2, it lifts argmax agreement
/// from ~92% to ~97%.
public struct Int8Network: Sendable, Equatable {
    /// The fp32 network's shape.
    public var architecture: Architecture
    /// One per linear layer, input to head.
    public var layers: [Int8Layer]
    /// How far apart int8's best two allowed Q-values must be for int8's choice to be
    /// trusted in `Precision.mixed`; closer than this, the fp32 network decides. Measured on
    /// the calibration states (`QModel.measureTieMargin`): `tieMarginSafety` × the 99th
    /// percentile of |e(a1) − e(a2)|, how differently int8 misjudges its own best two actions
    /// a1, a2 (e = Q8 − Q32): the gap the mixed rule looks at.
    /// 0 = never fall back (pure int8).
    public var tieMargin: Float

    /// The factor on the error difference measured in calibration (states outside the
    /// calibration set may quantize slightly worse). 1.5: on a random 32-256-256-9 net
    /// probed with inputs unlike its calibration states, 1.25 left mixed agreement at 0.990.
    public static let tieMarginSafety: Float = 1.5

    /// A network from its layers (`tieMargin` 0: pure int8 until measured).
    public init(architecture: Architecture, layers: [Int8Layer], tieMargin: Float = 0) {
        self.architecture = architecture
        self.layers = layers
        self.tieMargin = tieMargin
    }

    /// Quantizes `network`, taking each layer's input scales from the largest |activation|
    /// per channel seen on `calibration` (normalised states, (N, inputCount), N ≥ 1).
    ///
    /// - Throws: `QNetError` (`invalidArgument`) when `calibration` is empty or ragged.
    public static func quantize(_ network: MLP, calibration: [Float]) throws(QNetError) -> Int8Network {
        let arch = network.architecture
        guard !calibration.isEmpty, calibration.count % arch.inputCount == 0 else {
            throw QNetError(.invalidArgument, "calibration needs N × \(arch.inputCount) floats, got \(calibration.count)")
        }
        let n = calibration.count / arch.inputCount
        // Layer inputs on the calibration set: replay the fp32 forward pass layer by layer.
        var x = calibration
        var layers: [Int8Layer] = []
        let p = network.parameters
        for (l, s) in arch.slices.enumerated() {
            var maxAbs = [Float](repeating: 0, count: s.inputs)
            for k in 0..<x.count { maxAbs[k % s.inputs] = max(maxAbs[k % s.inputs], abs(x[k])) }
            // A channel never active in calibration gets the median live step, so that its
            // weights do not dominate their rows' scales.
            let live = maxAbs.filter { $0 > 0 }.sorted()
            let fallback = live.isEmpty ? 1 : live[live.count / 2] / 127
            let inputScales = maxAbs.map { $0 > 0 ? $0 / 127 : fallback }
            var (rows, bias) = (Array(p[s.weight..<(s.weight + s.outputs * s.inputs)]), Array(p[s.bias..<(s.bias + s.outputs)]))
            var outputs = s.outputs
            if l == arch.layerCount - 1 { (rows, bias, outputs) = centredHead(rows, bias, arch: arch) }
            let bits = l == arch.layerCount - 1 ? 16 : 8
            let limit = Float(Int8Layer.weightLimit(bits: bits, inputs: s.inputs))
            var wq = [Int16](repeating: 0, count: outputs * s.inputs)
            var scales = [Float](repeating: 1, count: outputs)
            for o in 0..<outputs {
                var m: Float = 0
                for i in 0..<s.inputs { m = max(m, abs(rows[o * s.inputs + i] * inputScales[i])) }
                let scale = m > 0 ? m / limit : 1
                scales[o] = scale
                for i in 0..<s.inputs { wq[o * s.inputs + i] = quantizeSymmetric(rows[o * s.inputs + i] * inputScales[i] / scale, limit: limit) }
            }
            layers.append(Int8Layer(inputs: s.inputs, outputs: outputs, weights: wq, bits: bits, weightScales: scales,
                                    bias: bias, inputScales: inputScales))
            // Next layer's input: this layer's fp32 output (ReLU unless last).
            var y = [Float](repeating: 0, count: n * s.outputs)
            x.withUnsafeBufferPointer { xb in
                y.withUnsafeMutableBufferPointer { yb in
                    linear_forward(yb.baseAddress!, xb.baseAddress!, p.baseAddress! + s.weight, p.baseAddress! + s.bias,
                                   batch: n, inputs: s.inputs, outputs: s.outputs)
                    if l < arch.layerCount - 1 { relu_forward(yb.baseAddress!, count: n * s.outputs) }
                }
            }
            x = y
        }
        return Int8Network(architecture: arch, layers: layers)
    }

    /// The head's rows rewritten as [common row, centred action rows] (see the type's doc).
    /// w is (out, in) for out = A (plain) or A + 1 (dueling); returns (A + 1, in), (A + 1).
    static func centredHead(_ w: [Float], _ b: [Float], arch: Architecture) -> ([Float], [Float], Int) {
        let A = arch.actionCount, I = w.count / b.count
        let first = arch.dueling ? 1 : 0               // where the action rows start
        var meanRow = [Float](repeating: 0, count: I)
        var meanBias: Float = 0
        for a in 0..<A {
            for i in 0..<I { meanRow[i] += w[(first + a) * I + i] / Float(A) }
            meanBias += b[first + a] / Float(A)
        }
        var rows = arch.dueling ? Array(w[0..<I]) : meanRow
        var bias = [arch.dueling ? b[0] : meanBias]
        for a in 0..<A {
            for i in 0..<I { rows.append(w[(first + a) * I + i] - meanRow[i]) }
            bias.append(b[first + a] - meanBias)
        }
        return (rows, bias, A + 1)
    }

    /// The largest possible |int8 − fp32| difference of each output of layer `l` for an
    /// input within the calibration range, from the rounding steps alone (a bound for tests):
    /// Σ_i (|x_i| / sx_i · ½ sw + ½ |W_i| · sx_i + ¼ sw).
    public func roundingBound(layer l: Int, input: [Float], fp32Weights: UnsafePointer<Float>) -> [Float] {
        let q = layers[l]
        var out = [Float](repeating: 0, count: q.outputs)
        for o in 0..<q.outputs {
            var b: Float = 0
            let sw = q.weightScales[o]
            for i in 0..<q.inputs {
                let w = abs(fp32Weights[o * q.inputs + i]) * q.inputScales[i]
                b += abs(input[i]) / q.inputScales[i] * 0.5 * sw + 0.5 * w + 0.25 * sw
            }
            out[o] = b
        }
        return out
    }
}

/// rint and clamp to [−limit, limit] (limit a whole number).
@inline(__always)
func quantizeSymmetric(_ v: Float, limit: Float) -> Int16 {
    let r = v.rounded(.toNearestOrEven)
    if r >= limit { return Int16(limit) }
    if r <= -limit { return -Int16(limit) }
    if r.isNaN { return 0 }
    return Int16(r)
}

/// rint and clamp to the symmetric int8 range [−127, 127].
@inline(__always)
func quantize8(_ v: Float) -> Int8 { Int8(quantizeSymmetric(v, limit: 127)) }
