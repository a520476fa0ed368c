// Post-training int8 quantization: per-output-channel symmetric int8 weights, int32
// accumulation, activations quantized per layer with a static scale from calibration states.

/// One quantized linear layer.
///
/// y[o] = Float(Σ_i W8[o, i] · x8[i]) · (inputScale · weightScales[o]) + bias[o], where
/// x8[i] = clamp(rint(x[i] / inputScale), −127, 127) (round half to even, as numpy's rint).
public struct Int8Layer: Sendable, Equatable {
    public var inputs: Int
    public var outputs: Int
    /// (out, in) row-major, symmetric: W8 = clamp(rint(W / weightScales[o]), −127, 127).
    public var weights: [Int8]
    /// (out): max |W[o, :]| / 127 (1 when the row is all zero).
    public var weightScales: [Float]
    /// (out): the fp32 bias, kept in fp32.
    public var bias: [Float]
    /// The step of this layer's input quantization: max |input| over calibration / 127.
    public var inputScale: Float
}

/// A quantized network: one `Int8Layer` per linear layer of the architecture.
public struct Int8Network: Sendable, Equatable {
    public var architecture: Architecture
    public var layers: [Int8Layer]

    /// Quantizes `network`, taking each layer's input scale from the largest |activation|
    /// seen on `calibration` (normalised states, (N, inputCount), N ≥ 1).
    ///
    /// - Throws: `QNetError` (`invalidArgument`) when `calibration` is empty or ragged.
    public static func quantize(_ network: MLP, calibration: [Float]) throws(QNetError) -> Int8Network {
        let arch = network.architecture
        guard !calibration.isEmpty, calibration.count % arch.inputCount == 0 else {
            throw QNetError(.invalidArgument, "calibration needs N × \(arch.inputCount) floats, got \(calibration.count)")
        }
        let n = calibration.count / arch.inputCount
        // Layer inputs on the calibration set: replay the forward pass layer by layer.
        var x = calibration
        var layers: [Int8Layer] = []
        let p = network.parameters
        for (l, s) in arch.slices.enumerated() {
            var maxAbs: Float = 0
            for v in x { maxAbs = max(maxAbs, abs(v)) }
            let inputScale = maxAbs > 0 ? maxAbs / 127 : 1
            var w8 = [Int8](repeating: 0, count: s.outputs * s.inputs)
            var scales = [Float](repeating: 1, count: s.outputs)
            for o in 0..<s.outputs {
                var m: Float = 0
                for i in 0..<s.inputs { m = max(m, abs(p[s.weight + o * s.inputs + i])) }
                let scale = m > 0 ? m / 127 : 1
                scales[o] = scale
                for i in 0..<s.inputs { w8[o * s.inputs + i] = quantize8(p[s.weight + o * s.inputs + i] / scale) }
            }
            let bias = Array(p[s.bias..<(s.bias + s.outputs)])
            layers.append(Int8Layer(inputs: s.inputs, outputs: s.outputs, weights: w8, weightScales: scales, bias: bias, inputScale: inputScale))
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

    /// The largest possible |int8 − fp32| difference of each output of layer `l` for an
    /// input within the calibration range, from the rounding steps alone (a bound for tests):
    /// Σ_i (|x_i| · ½ sw + ½ sx · |W_i| + ¼ sx · sw).
    public func roundingBound(layer l: Int, input: [Float], fp32Weights: UnsafePointer<Float>) -> [Float] {
        let q = layers[l]
        var out = [Float](repeating: 0, count: q.outputs)
        for o in 0..<q.outputs {
            var b: Float = 0
            for i in 0..<q.inputs {
                let w = abs(fp32Weights[o * q.inputs + i])
                b += abs(input[i]) * 0.5 * q.weightScales[o] + 0.5 * q.inputScale * w + 0.25 * q.inputScale * q.weightScales[o]
            }
            out[o] = b
        }
        return out
    }
}

/// rint and clamp to the symmetric int8 range [−127, 127].
@inline(__always)
func quantize8(_ v: Float) -> Int8 {
    let r = v.rounded(.toNearestOrEven)
    if r >= 127 { return 127 }
    if r <= -127 { return -127 }
    if r.isNaN { return 0 }
    return Int8(r)
}
