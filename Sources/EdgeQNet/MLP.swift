import COpenBLAS
import EdgeQCore

// The fp32 MLP, llm.c style: each *_forward right before its *_backward, every argument's
// shape in a comment, one BLAS call next to the naive loop that is its test oracle, and all
// parameters in one contiguous buffer (zero-grad is one fill; the checkpoint is that blob).

// MARK: - linear layer

/// y = x Wᵀ + b, on BLAS.
/// x is (B, in), w is (out, in), b is (out), y is (B, out).
@inline(__always)
func linear_forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                    _ b: UnsafePointer<Float>, batch B: Int, inputs I: Int, outputs O: Int) {
    for r in 0..<B { (y + r * O).update(from: b, count: O) }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(B), Int32(O), Int32(I), 1, x, Int32(I), w, Int32(I), 1, y, Int32(O))
}

/// The naive loop computing what `linear_forward` computes (the test oracle).
func linear_forward_naive(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                          _ b: UnsafePointer<Float>, batch B: Int, inputs I: Int, outputs O: Int) {
    for r in 0..<B {
        for o in 0..<O {
            var s = b[o]
            for i in 0..<I { s += x[r * I + i] * w[o * I + i] }
            y[r * O + o] = s
        }
    }
}

/// Accumulates dW += dyᵀ x, db += Σ_rows dy, and (when dx is given) sets dx = dy W.
/// dy is (B, out), x is (B, in), w is (out, in), dw is (out, in), db is (out), dx is (B, in).
@inline(__always)
func linear_backward(_ dx: UnsafeMutablePointer<Float>?, _ dw: UnsafeMutablePointer<Float>, _ db: UnsafeMutablePointer<Float>,
                     _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                     batch B: Int, inputs I: Int, outputs O: Int) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(O), Int32(I), Int32(B), 1, dy, Int32(O), x, Int32(I), 1, dw, Int32(I))
    for r in 0..<B { for o in 0..<O { db[o] += dy[r * O + o] } }
    if let dx {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(B), Int32(I), Int32(O), 1, dy, Int32(O), w, Int32(I), 0, dx, Int32(I))
    }
}

/// The naive loop computing what `linear_backward` computes (the test oracle).
func linear_backward_naive(_ dx: UnsafeMutablePointer<Float>?, _ dw: UnsafeMutablePointer<Float>, _ db: UnsafeMutablePointer<Float>,
                           _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                           batch B: Int, inputs I: Int, outputs O: Int) {
    for r in 0..<B {
        for o in 0..<O {
            let g = dy[r * O + o]
            db[o] += g
            for i in 0..<I { dw[o * I + i] += g * x[r * I + i] }
        }
    }
    if let dx {
        for r in 0..<B {
            for i in 0..<I {
                var s: Float = 0
                for o in 0..<O { s += dy[r * O + o] * w[o * I + i] }
                dx[r * I + i] = s
            }
        }
    }
}

// MARK: - ReLU

/// In place: a = max(a, 0). a is (N).
@inline(__always)
func relu_forward(_ a: UnsafeMutablePointer<Float>, count N: Int) {
    for i in 0..<N where a[i] < 0 { a[i] = 0 }
}

/// In place: da *= (a > 0), where a is the ReLU's output. da and a are (N).
@inline(__always)
func relu_backward(_ da: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, count N: Int) {
    for i in 0..<N where !(a[i] > 0) { da[i] = 0 }
}

// MARK: - dueling head

/// q[r, a] = o[r, 0] + o[r, 1 + a] − mean_a' o[r, 1 + a']. o is (B, A + 1), q is (B, A).
@inline(__always)
func dueling_forward(_ q: UnsafeMutablePointer<Float>, _ o: UnsafePointer<Float>, batch B: Int, actions A: Int) {
    for r in 0..<B {
        let row = o + r * (A + 1)
        var mean: Float = 0
        for a in 0..<A { mean += row[1 + a] }
        mean /= Float(A)
        for a in 0..<A { q[r * A + a] = row[0] + row[1 + a] - mean }
    }
}

/// do[r, 0] = Σ_a dq[r, a]; do[r, 1 + a] = dq[r, a] − mean_a' dq[r, a']. dq is (B, A), do is (B, A + 1).
@inline(__always)
func dueling_backward(_ dout: UnsafeMutablePointer<Float>, _ dq: UnsafePointer<Float>, batch B: Int, actions A: Int) {
    for r in 0..<B {
        var sum: Float = 0
        for a in 0..<A { sum += dq[r * A + a] }
        dout[r * (A + 1)] = sum
        for a in 0..<A { dout[r * (A + 1) + 1 + a] = dq[r * A + a] - sum / Float(A) }
    }
}

// MARK: - the network

/// An fp32 MLP Q-network with a training workspace: batched forward and backward on
/// OpenBLAS, parameters and gradients each in one contiguous buffer.
///
/// Not thread-safe: one owner (a learner, a benchmark) uses it from one thread. For the
/// decision path use `QModel` and a `QEngine`, which do not allocate.
public final class MLP {
    /// The network's shape.
    public let architecture: Architecture
    /// All parameters, layout `Architecture.slices` (W0 b0 W1 b1 …).
    public let parameters: UnsafeMutableBufferPointer<Float>
    /// Gradients, same layout as `parameters`; `backward` accumulates into them.
    public let gradients: UnsafeMutableBufferPointer<Float>
    /// Use the naive loops instead of BLAS (the tests' oracle).
    public var useNaiveLoops = false

    let slices: [Architecture.LayerSlice]
    private(set) var capacity = 0
    /// acts[0] is the input copy (B, in); acts[l + 1] the output of layer l (post-ReLU when hidden).
    private var acts: [UnsafeMutablePointer<Float>] = []
    /// Gradient buffers with the same shapes as `acts`.
    private var dacts: [UnsafeMutablePointer<Float>] = []
    /// Q-values (B, A) (the dueling combination; aliases the last act otherwise).
    private var qBuffer: UnsafeMutablePointer<Float>?
    private var lastBatch = 0

    /// A network with parameters initialised like PyTorch's `nn.Linear` (uniform ±1/√in),
    /// drawn from `seed`.
    ///
    /// - Throws: `QNetError` (`invalidArgument`) for a non-positive width.
    public init(_ architecture: Architecture, seed: UInt64) throws(QNetError) {
        try architecture.validate()
        self.architecture = architecture
        slices = architecture.slices
        let n = architecture.parameterCount
        parameters = .allocate(capacity: n)
        gradients = .allocate(capacity: n)
        parameters.initialize(repeating: 0)
        gradients.initialize(repeating: 0)
        var rng = SeededGenerator(seed: seed)
        for s in slices {
            let bound = 1 / Float(s.inputs).squareRoot()
            for k in 0..<(s.outputs * s.inputs) { parameters[s.weight + k] = Float(rng.nextUnit() * 2 - 1) * bound }
            for k in 0..<s.outputs { parameters[s.bias + k] = Float(rng.nextUnit() * 2 - 1) * bound }
        }
    }

    /// A network holding a copy of `values` (layout `Architecture.slices`).
    ///
    /// - Throws: `QNetError` (`invalidArgument`) when the count does not fit the architecture.
    public convenience init(_ architecture: Architecture, parameters values: [Float]) throws(QNetError) {
        try self.init(architecture, seed: 0)
        try load(values)
    }

    deinit {
        parameters.deallocate()
        gradients.deallocate()
        freeWorkspace()
    }

    /// Replaces the parameters with `values`.
    ///
    /// - Throws: `QNetError` (`invalidArgument`) when the count does not fit the architecture.
    public func load(_ values: [Float]) throws(QNetError) {
        guard values.count == parameters.count else {
            throw QNetError(.invalidArgument, "\(values.count) parameters given, \(architecture.label) has \(parameters.count)")
        }
        _ = parameters.update(fromContentsOf: values)
    }

    /// Copies the parameters of `other` (same architecture) into this network.
    public func copyParameters(from other: MLP) {
        precondition(other.parameters.count == parameters.count, "architectures differ")
        parameters.baseAddress!.update(from: other.parameters.baseAddress!, count: parameters.count)
    }

    /// p ← (1 − τ) p + τ p_other (Polyak averaging for target networks).
    public func blend(toward other: MLP, tau: Float) {
        for k in 0..<parameters.count { parameters[k] += tau * (other.parameters[k] - parameters[k]) }
    }

    /// The parameters as an array (the checkpoint blob).
    public var parameterArray: [Float] { Array(parameters) }

    /// Sets every gradient to zero (one fill: the gradients are one buffer).
    public func zeroGradients() { gradients.update(repeating: 0) }

    private func freeWorkspace() {
        for p in acts { p.deallocate() }
        for p in dacts { p.deallocate() }
        if architecture.dueling { qBuffer?.deallocate() }
        acts = []; dacts = []; qBuffer = nil
    }

    private func reserve(batch: Int) {
        guard batch > capacity else { return }
        freeWorkspace()
        let sizes = architecture.layerSizes
        acts = sizes.map { .allocate(capacity: batch * $0) }
        dacts = sizes.map { .allocate(capacity: batch * $0) }
        if architecture.dueling {
            qBuffer = .allocate(capacity: batch * architecture.actionCount)
        } else {
            qBuffer = acts[sizes.count - 1]
        }
        capacity = batch
    }

    /// Runs the network on `batch` states and returns the Q-values (batch, A), valid until
    /// the next call. Keeps the activations for `backward`.
    /// input is (batch, inputCount), row-major.
    @discardableResult
    public func forward(_ input: UnsafePointer<Float>, batch B: Int) -> UnsafeMutablePointer<Float> {
        reserve(batch: B)
        lastBatch = B
        acts[0].update(from: input, count: B * architecture.inputCount)
        let p = parameters.baseAddress!
        for (l, s) in slices.enumerated() {
            if useNaiveLoops {
                linear_forward_naive(acts[l + 1], acts[l], p + s.weight, p + s.bias, batch: B, inputs: s.inputs, outputs: s.outputs)
            } else {
                linear_forward(acts[l + 1], acts[l], p + s.weight, p + s.bias, batch: B, inputs: s.inputs, outputs: s.outputs)
            }
            if l < slices.count - 1 { relu_forward(acts[l + 1], count: B * s.outputs) }
        }
        if architecture.dueling {
            dueling_forward(qBuffer!, acts[slices.count], batch: B, actions: architecture.actionCount)
        }
        return qBuffer!
    }

    /// Array convenience for `forward` (allocates; for tests and tools).
    public func forward(_ input: [Float], batch: Int) -> [Float] {
        let q = input.withUnsafeBufferPointer { forward($0.baseAddress!, batch: batch) }
        return Array(UnsafeBufferPointer(start: q, count: batch * architecture.actionCount))
    }

    /// Back-propagates dL/dQ through the last `forward` and accumulates into `gradients`.
    /// dq is (batch, A) for the batch of the last forward.
    public func backward(_ dq: UnsafePointer<Float>) {
        let B = lastBatch
        let L = slices.count
        let A = architecture.actionCount
        if architecture.dueling {
            dueling_backward(dacts[L], dq, batch: B, actions: A)
        } else {
            dacts[L].update(from: dq, count: B * A)
        }
        let p = parameters.baseAddress!, g = gradients.baseAddress!
        for l in stride(from: L - 1, through: 0, by: -1) {
            let s = slices[l]
            let dx: UnsafeMutablePointer<Float>? = l > 0 ? dacts[l] : nil
            if useNaiveLoops {
                linear_backward_naive(dx, g + s.weight, g + s.bias, dacts[l + 1], acts[l], p + s.weight, batch: B, inputs: s.inputs, outputs: s.outputs)
            } else {
                linear_backward(dx, g + s.weight, g + s.bias, dacts[l + 1], acts[l], p + s.weight, batch: B, inputs: s.inputs, outputs: s.outputs)
            }
            if l > 0 { relu_backward(dacts[l], acts[l], count: B * s.inputs) }
        }
    }

    /// The greedy action for one state among allowed actions (`mask[a]` true = allowed;
    /// nil = all allowed). Returns nil when no action is allowed. Allocates nothing per call
    /// beyond the workspace.
    public func greedyAction(_ state: UnsafePointer<Float>, mask: [Bool]?) -> Int? {
        let q = forward(state, batch: 1)
        return maskedArgmax(q, count: architecture.actionCount, mask: mask)
    }
}

/// The index of the largest value among allowed entries (ties → lowest index), or nil
/// when nothing is allowed. values is (count); mask is (count) or nil for all allowed; an
/// action beyond a shorter mask counts as not allowed (bad input never crashes).
@inline(__always)
public func maskedArgmax(_ values: UnsafePointer<Float>, count: Int, mask: [Bool]?) -> Int? {
    var best: Int? = nil
    var bestValue = -Float.infinity
    for a in 0..<count {
        if let mask, a >= mask.count || !mask[a] { continue }
        if best == nil || values[a] > bestValue { best = a; bestValue = values[a] }
    }
    return best
}

/// Sets the number of OpenBLAS threads (training uses 1: the decision path shares the cores).
public func setBLASThreads(_ n: Int) {
    openblas_set_num_threads(Int32(n))
}
