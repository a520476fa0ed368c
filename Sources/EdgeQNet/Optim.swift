import CEdgeQKernels

// Adam, the Huber loss and gradient clipping by global norm.

/// Adam (Kingma & Ba), with PyTorch's bias correction and epsilon placement:
/// m ← β1 m + (1 − β1) g; v ← β2 v + (1 − β2) g²; p ← p − lr · m̂ / (√v̂ + ε).
public struct Adam: Sendable {
    /// Learning rate.
    public var learningRate: Float
    /// Decay of the first moment.
    public var beta1: Float
    /// Decay of the second moment.
    public var beta2: Float
    /// Added to √v̂ in the denominator.
    public var epsilon: Float
    /// Steps taken (for bias correction).
    public private(set) var step = 0
    private var m: [Float]
    private var v: [Float]

    /// Moments for `parameterCount` parameters, all zero.
    public init(parameterCount: Int, learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        m = Array(repeating: 0, count: parameterCount)
        v = Array(repeating: 0, count: parameterCount)
    }

    /// One update of `params` from `grads` (same count as at init).
    /// The loop is the C kernel `edgeq_adam_step` (vectorised; Swift's SIMD code was 4× slower).
    public mutating func update(_ params: UnsafeMutableBufferPointer<Float>, _ grads: UnsafeBufferPointer<Float>) {
        precondition(params.count == m.count && grads.count == m.count, "Adam: parameter count changed")
        step += 1
        let c1 = 1 - Float(Double(beta1).power(step))
        let c2 = 1 - Float(Double(beta2).power(step))
        let lr = learningRate, b1 = beta1, b2 = beta2, eps = epsilon
        m.withUnsafeMutableBufferPointer { mb in
            v.withUnsafeMutableBufferPointer { vb in
                edgeq_adam_step(params.baseAddress!, grads.baseAddress!, mb.baseAddress!, vb.baseAddress!, Int32(params.count),
                                lr, b1, b2, eps, c1, c2)
            }
        }
    }

    /// One update of `network`'s parameters from its gradients.
    public mutating func update(_ network: MLP) {
        update(network.parameters, UnsafeBufferPointer(network.gradients))
    }
}

extension Double {
    /// self^n for a non-negative integer n.
    func power(_ n: Int) -> Double {
        var r = 1.0, b = self, e = n
        while e > 0 { if e & 1 == 1 { r *= b }; b *= b; e >>= 1 }
        return r
    }
}

/// The Huber loss (smooth L1 with threshold δ) of an error e, and its derivative:
/// ½e² when |e| ≤ δ, else δ(|e| − ½δ). Derivative e clipped to ±δ.
@inline(__always)
public func huber(_ e: Float, delta: Float = 1) -> (loss: Float, gradient: Float) {
    let a = abs(e)
    if a <= delta { return (0.5 * e * e, e) }
    return (delta * (a - 0.5 * delta), e > 0 ? delta : -delta)
}

/// Scales `gradients` so that their global L2 norm is at most `maxNorm`; returns the norm
/// before clipping.
@discardableResult
public func clipGlobalNorm(_ gradients: UnsafeMutableBufferPointer<Float>, maxNorm: Float) -> Float {
    let n = gradients.count
    guard let g = gradients.baseAddress else { return 0 }
    let s = edgeq_sum_squares(g, Int32(n))
    let norm = s.squareRoot()
    if norm > maxNorm, norm > 0 {
        let scale = maxNorm / norm
        for i in 0..<n { g[i] *= scale }
    }
    return norm
}
