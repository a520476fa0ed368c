import CEdgeQKernels
import EdgeQCore
import EdgeQNet

// The MLP ensemble (docs/learning.md, "The MLP ensemble"): K small ReLU networks, each trained
// on its own bootstrap resample of the log, each mapping a short window of normalised history
// to the normalised change of the controlled signals over the next tick. Their mean is the
// prediction; their disagreement is the uncertainty.
//
// Training runs on EdgeQNet's `MLP` and `Adam` (batched, OpenBLAS); the fitted model keeps
// only plain `[Float]` weights and runs its own small forward pass, so it is a Sendable value
// and a rollout is a value a planner copies to branch.

/// Fits an MLP ensemble to a plant's log (name `ensemble`): the model class for plants a
/// low-order linear model does not describe (a pendulum, a car in a valley, a tank with
/// square-root outflow).
///
/// Each of the `members` networks sees, for the last `window` samples, the normalised
/// controlled and exogenous signals, and the last `actionWindow` action mixes (the newest is
/// the one applied now); it predicts the normalised change of the controlled signals over the
/// next tick. Deterministic for a seed: the initial weights, the bootstrap resamples, the
/// batch order and the input noise all draw from it.
public struct EnsemblePlantFitter: PlantModelFitter {
    /// How a rollout propagates the members (see `EnsemblePlantModel`).
    public enum Propagation: String, Sendable, Equatable, Codable {
        /// Each member rolls forward on its own trajectory (trajectory sampling); the
        /// prediction is the members' mean, the uncertainty their spread. The default.
        case members
        /// All members step from the mean trajectory; the uncertainty accumulates the
        /// one-step spreads (their variances add up along the rollout).
        case mean
    }

    /// Hyperparameters. The defaults are the ones the tests measured (docs/learning.md).
    public struct Configuration: Sendable, Equatable, Codable {
        /// Ensemble size K.
        public var members = 5
        /// Samples of controlled and exogenous history each prediction sees (the present
        /// included). 2 gives the networks a velocity; raise it for higher-order plants.
        public var window = 2
        /// Action mixes each prediction sees (the one applied now included); nil: `window`.
        /// A plant with dead time d needs at least d + 1 (a dead-time-sized window).
        public var actionWindow: Int? = nil
        /// Hidden layer widths (ReLU).
        public var hidden = [32, 32]
        /// Gradient updates per member (a fixed budget: the fit's cost does not grow with the log).
        public var updates = 3_000
        /// Mini-batch size.
        public var batchSize = 64
        /// Adam learning rate at the start; it decays linearly to `learningRate × finalLearningRateFraction`.
        public var learningRate: Float = 2e-3
        /// Where the linear learning-rate decay ends, as a fraction of `learningRate`.
        public var finalLearningRateFraction: Float = 0.05
        /// Standard deviation of Gaussian noise added to the normalised controlled inputs in
        /// training (0: none), so that the networks see states slightly off the logged ones, as
        /// their own free run will.
        public var inputNoise: Double = 0
        /// How a rollout propagates the members.
        public var propagation = Propagation.members
        /// The defaults.
        public init() {}
    }

    /// The hyperparameters.
    public let configuration: Configuration

    /// A fitter with `configuration` (the defaults unless given).
    public init(_ configuration: Configuration = .init()) {
        self.configuration = configuration
    }

    /// `ensemble`.
    public var name: String { "ensemble" }

    /// Fits the ensemble; see `fitEnsemble`.
    public func fit(_ data: PlantData, seed: UInt64) throws(PlantModelError) -> any PlantModel {
        try fitEnsemble(data, seed: seed)
    }

    /// Fewest training rows (windows with a next sample) the fitter accepts.
    public static let minimumRows = 100

    /// Fits the ensemble and returns it as its concrete type.
    /// - Throws: `PlantModelError.notEnoughData` when the segments hold fewer than
    ///   `minimumRows` windows with a next sample; `.badData` when the configuration is
    ///   unusable (a non-positive width, window or budget) or the data have no controlled
    ///   signal or no action.
    public func fitEnsemble(_ data: PlantData, seed: UInt64) throws(PlantModelError) -> EnsemblePlantModel {
        let c = configuration
        let actionWindow = c.actionWindow ?? c.window
        guard c.members >= 1, c.window >= 1, actionWindow >= 1, c.updates >= 0, c.batchSize >= 1,
              !c.hidden.isEmpty, c.hidden.allSatisfy({ $0 >= 1 }), c.inputNoise >= 0
        else {
            throw .badData("ensemble configuration: members, window, actionWindow, batchSize and hidden widths must be ≥ 1 (members \(c.members), window \(c.window), actionWindow \(actionWindow), batchSize \(c.batchSize), hidden \(c.hidden)); fix the configuration")
        }
        guard !data.controlledNames.isEmpty, data.actionCount >= 1 else {
            throw .badData("ensemble: \(data.controlledNames.count) controlled signals and \(data.actionCount) actions; it needs at least one of each (mark the signals the actions move as controlled in the mapping)")
        }
        let shape = EnsembleShape(outputs: data.controlledNames.count, exogenous: data.exogenousNames.count,
                                  actions: data.actionCount, window: c.window, actionWindow: actionWindow)
        let norm = EnsembleNormalisation(data, shape: shape)
        let rows = EnsembleRows(data, shape: shape, norm: norm)
        guard rows.count >= Self.minimumRows else {
            throw .notEnoughData(have: rows.count, need: Self.minimumRows)
        }
        let architecture = Architecture(inputCount: shape.inputCount, hidden: c.hidden, actionCount: shape.outputs)
        var members: [[Float]] = []
        for k in 0..<c.members {
            // Each member its own seed: its initial weights, its resample, its batches, its noise.
            let memberSeed = seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(k + 1) &* 0xD1B5_4A32_D192_ED03
            do {
                members.append(try Self.trainMember(rows: rows, architecture: architecture, shape: shape, seed: memberSeed, configuration: c))
            } catch {
                throw .badData("ensemble configuration: \(error); fix the configuration")
            }
        }
        return EnsemblePlantModel(shape: shape, layerSizes: architecture.layerSizes, members: members,
                                  normalisation: norm, propagation: c.propagation)
    }

    /// One member: a bootstrap resample of the rows, shuffled passes over it in mini-batches,
    /// mean squared error on the normalised change, Adam with a linearly decaying rate.
    static func trainMember(rows: EnsembleRows, architecture: Architecture, shape: EnsembleShape, seed: UInt64,
                            configuration c: Configuration) throws(QNetError) -> [Float] {
        let net = try MLP(architecture, seed: seed)
        var adam = Adam(parameterCount: architecture.parameterCount, learningRate: c.learningRate)
        var rng = SeededGenerator(seed: seed ^ 0x5851_F42D_4C95_7F2D)
        let n = rows.count, I = shape.inputCount, O = shape.outputs
        // The bootstrap resample: n draws with replacement.
        var order = (0..<n).map { _ in min(Int(rng.nextUnit() * Double(n)), n - 1) }
        let B = min(c.batchSize, n)
        var x = [Float](repeating: 0, count: B * I)
        var y = [Float](repeating: 0, count: B * O)
        var dy = [Float](repeating: 0, count: B * O)
        var position = n   // forces a shuffle before the first batch
        let noiseColumns = shape.controlledInputColumns
        for u in 0..<c.updates {
            for b in 0..<B {
                if position == n {
                    // Fisher–Yates with our own generator (the standard library's algorithm may change).
                    for i in stride(from: n - 1, to: 0, by: -1) {
                        let j = min(Int(rng.nextUnit() * Double(i + 1)), i)
                        order.swapAt(i, j)
                    }
                    position = 0
                }
                let r = order[position]
                position += 1
                for i in 0..<I { x[b * I + i] = rows.inputs[r * I + i] }
                for o in 0..<O { y[b * O + o] = rows.targets[r * O + o] }
                if c.inputNoise > 0 {
                    for i in noiseColumns { x[b * I + i] += Float(c.inputNoise * rng.nextGaussian()) }
                }
            }
            let out = x.withUnsafeBufferPointer { net.forward($0.baseAddress!, batch: B) }
            // d(mean squared error)/d(output): the ½ is folded in; Adam does not care about scale.
            let scale = 1 / Float(B * O)
            for k in 0..<(B * O) { dy[k] = (out[k] - y[k]) * scale }
            net.zeroGradients()
            dy.withUnsafeBufferPointer { net.backward($0.baseAddress!) }
            clipGlobalNorm(net.gradients, maxNorm: 10)
            let progress = c.updates > 1 ? Float(u) / Float(c.updates - 1) : 0
            adam.learningRate = c.learningRate * (1 - progress * (1 - c.finalLearningRateFraction))
            adam.update(net)
        }
        return net.parameterArray
    }
}

/// The sizes an ensemble works with, and where each part of a network's input lives.
///
/// Input layout, oldest first: for each of the `window` samples its `outputs` normalised
/// controlled then `exogenous` normalised exogenous values; then for each of the
/// `actionWindow` ticks its action mix (`actions` values; the last is the mix applied now).
struct EnsembleShape: Sendable, Equatable {
    var outputs: Int
    var exogenous: Int
    var actions: Int
    var window: Int
    var actionWindow: Int

    var signalsPerSample: Int { outputs + exogenous }
    var inputCount: Int { window * signalsPerSample + actionWindow * actions }
    /// Samples of history a first prediction needs: the signal window, and the past actions
    /// of the action window (which need `actionWindow − 1` earlier ticks).
    var memory: Int { max(window, actionWindow) }
    /// The input columns holding controlled signals (where training noise goes).
    var controlledInputColumns: [Int] {
        (0..<window).flatMap { j in (0..<outputs).map { j * signalsPerSample + $0 } }
    }
}

/// Means and spreads measured on the training data: signals are fed as (v − mean) / std, the
/// networks predict (Δ − mean) / std of the change per tick.
struct EnsembleNormalisation: Sendable, Equatable {
    var controlledMean: [Double]
    var controlledScale: [Double]
    var exogenousMean: [Double]
    var exogenousScale: [Double]
    var deltaMean: [Double]
    var deltaScale: [Double]

    init(_ data: PlantData, shape: EnsembleShape) {
        func stats(_ values: [[Double]], count: Int) -> (mean: [Double], scale: [Double]) {
            var sum = [Double](repeating: 0, count: count), sq = sum
            var used = 0
            // A damaged sample (NaN, infinity) is left out here and its rows are skipped.
            for v in values where v.count == count && v.allSatisfy(\.isFinite) {
                for i in 0..<count { sum[i] += v[i]; sq[i] += v[i] * v[i] }
                used += 1
            }
            let n = Double(max(used, 1))
            let mean = sum.map { $0 / n }
            // A constant signal keeps scale 1 (its normalised value is 0, whatever it is).
            let scale = (0..<count).map { i -> Double in
                let variance = max(sq[i] / n - mean[i] * mean[i], 0)
                let s = variance.squareRoot()
                return s > 1e-9 * max(1, abs(mean[i])) ? s : 1
            }
            return (mean, scale)
        }
        let controlled = data.segments.flatMap(\.controlled)
        let exogenous = data.segments.flatMap(\.exogenous)
        var deltas: [[Double]] = []
        for s in data.segments where s.count >= 2 {
            for t in 0..<(s.count - 1) { deltas.append((0..<shape.outputs).map { s.controlled[t + 1][$0] - s.controlled[t][$0] }) }
        }
        (controlledMean, controlledScale) = stats(controlled, count: shape.outputs)
        (exogenousMean, exogenousScale) = stats(exogenous, count: shape.exogenous)
        (deltaMean, deltaScale) = stats(deltas, count: shape.outputs)
    }
}

/// The training rows: every window of every segment that has a next sample, as a flat
/// (rows, inputCount) input matrix and a (rows, outputs) matrix of normalised changes.
struct EnsembleRows {
    var inputs: [Float] = []
    var targets: [Float] = []
    var count = 0

    init(_ data: PlantData, shape: EnsembleShape, norm: EnsembleNormalisation) {
        let A = shape.actions
        for s in data.segments where s.count >= shape.memory + 1 {
            for t in (shape.memory - 1)..<(s.count - 1) {
                for j in 0..<shape.window {
                    let i = t - shape.window + 1 + j
                    for o in 0..<shape.outputs { inputs.append(Float((s.controlled[i][o] - norm.controlledMean[o]) / norm.controlledScale[o])) }
                    for e in 0..<shape.exogenous { inputs.append(Float((s.exogenous[i][e] - norm.exogenousMean[e]) / norm.exogenousScale[e])) }
                }
                for j in 0..<shape.actionWindow {
                    let a = s.actions[t - shape.actionWindow + 1 + j]
                    for k in 0..<A { inputs.append(k == a ? 1 : 0) }
                }
                for o in 0..<shape.outputs {
                    let d = s.controlled[t + 1][o] - s.controlled[t][o]
                    targets.append(Float((d - norm.deltaMean[o]) / norm.deltaScale[o]))
                }
                // A row touching a damaged sample (NaN, infinity) is dropped.
                let I = shape.inputCount, O = shape.outputs
                if inputs[(count * I)...].allSatisfy(\.isFinite) && targets[(count * O)...].allSatisfy(\.isFinite) {
                    count += 1
                } else {
                    inputs.removeLast(I)
                    targets.removeLast(O)
                }
            }
        }
    }
}

/// A fitted MLP ensemble: K members' weights as plain arrays, the normalisation measured on
/// the training data, and the propagation its rollouts use. A Sendable value.
///
/// Rollouts use trajectory sampling by default (`Propagation.members`): each member is
/// rolled forward on its own predicted trajectory, the prediction is the members' mean and
/// the uncertainty their spread. Members that disagree about the plant then drift apart
/// along the horizon, so the uncertainty grows with it by itself, and the mean of the K
/// trajectories averages over the members' errors rather than feeding one averaged state
/// (a state no member predicted) back into every member.
public struct EnsemblePlantModel: PlantModel {
    let shape: EnsembleShape
    /// Widths from input to output, e.g. [12, 32, 32, 4].
    let layerSizes: [Int]
    /// Each member's parameters, layout W0 b0 W1 b1 … (EdgeQNet's `Architecture.slices`).
    let members: [[Float]]
    let normalisation: EnsembleNormalisation
    /// How rollouts propagate the members.
    public let propagation: EnsemblePlantFitter.Propagation
    /// The widest layer, its width rounded up to a multiple of 8 (the forward pass's buffers).
    let maxWidth: Int
    /// Per layer, its output count rounded up to a multiple of 8 (the C kernel's `out_padded`).
    let paddedOutputs: [Int]
    /// `members` in the forward pass's layout (`edgeq_fp32_forward`'s "axpy" layout): per layer
    /// the weight matrix transposed to (in, out_padded), then the bias (out_padded), both zero
    /// padded beyond the layer's outputs.
    let transposed: [[Float]]

    init(shape: EnsembleShape, layerSizes: [Int], members: [[Float]], normalisation: EnsembleNormalisation,
         propagation: EnsemblePlantFitter.Propagation) {
        self.shape = shape
        self.layerSizes = layerSizes
        self.members = members
        self.normalisation = normalisation
        self.propagation = propagation
        let padded = layerSizes.dropFirst().map { ($0 + 7) / 8 * 8 }
        paddedOutputs = padded
        maxWidth = max(layerSizes.map { ($0 + 7) / 8 * 8 }.max() ?? 8, 8)
        transposed = members.map { m in
            var t: [Float] = []
            var offset = 0
            for l in 0..<(layerSizes.count - 1) {
                let I = layerSizes[l], O = layerSizes[l + 1], P = padded[l]
                var w = [Float](repeating: 0, count: I * P + P)
                for o in 0..<O { for i in 0..<I { w[i * P + o] = m[offset + o * I + i] } }
                for o in 0..<O { w[I * P + o] = m[offset + O * I + o] }
                t += w
                offset += O * I + O
            }
            return t
        }
    }

    /// Floats of scratch one forward pass needs beside its input (`forward(member:…)`): the
    /// output (`maxWidth`), two hidden buffers (`maxWidth` each) and the kernel's accumulator
    /// (2 × `maxWidth`).
    var forwardScratch: Int { 5 * maxWidth }

    /// E.g. `ensemble(K=5, window=2, actions=2, hidden=32x32)`.
    public var description: String {
        "ensemble(K=\(members.count), window=\(shape.window), actions=\(shape.actionWindow), hidden=\(layerSizes.dropFirst().dropLast().map(String.init).joined(separator: "x")))"
    }
    /// Number of controlled signals.
    public var outputCount: Int { shape.outputs }
    /// Number of exogenous signals.
    public var exogenousCount: Int { shape.exogenous }
    /// Number of discrete actions.
    public var actionCount: Int { shape.actions }
    /// Ensemble size K.
    public var memberCount: Int { members.count }
    /// `max(window, actionWindow)`: the samples of signal history and the ticks of past actions
    /// a first prediction reads.
    public var memory: Int { shape.memory }

    /// A rollout from sample `index` of `segment`; see `ensembleRollout(from:at:)`.
    public func rollout(from segment: PlantSegment, at index: Int) -> any PlantRollout {
        ensembleRollout(from: segment, at: index)
    }

    /// A rollout whose present is sample `index` of `segment` (the concrete type). Samples or
    /// actions before the segment's start (an `index` below `memory − 1`) repeat its first
    /// sample and action; an `index` past the end reads the last sample.
    public func ensembleRollout(from segment: PlantSegment, at index: Int) -> EnsembleRollout {
        EnsembleRollout(model: self, segment: segment, index: index)
    }

    /// Runs member `k` on one normalised input (inputCount); `scratch` holds `forwardScratch`
    /// floats, and the outputs are its first `outputs` entries on return.
    ///
    /// One call into EdgeQ's fp32 kernel (`edgeq_fp32_forward`, AVX2 where the CPU has it):
    /// each layer adds x[i] times the i-th column of W to the bias for i = 0, 1, … (inputs that
    /// are 0 skipped), so every output sums its terms in the same order as a row-by-row dot
    /// product would, without FMA, on either path.
    func forward(member k: Int, input: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        let L = layerSizes.count - 1
        transposed[k].withUnsafeBufferPointer { pb in
            guard let p = pb.baseAddress else { return }
            withUnsafeTemporaryAllocation(of: edgeq_flayer.self, capacity: max(L, 1)) { layers in
                var offset = 0
                for l in 0..<L {
                    let I = layerSizes[l], P = paddedOutputs[l]
                    layers[l] = edgeq_flayer(inputs: Int32(I), outputs: Int32(layerSizes[l + 1]), out_padded: Int32(P),
                                             wt: p + offset, bias: p + offset + I * P)
                    offset += I * P + P
                }
                guard let table = layers.baseAddress else { return }
                let w = maxWidth
                edgeq_fp32_forward(scratch, input, table, Int32(L), scratch + 3 * w, scratch + w, scratch + 2 * w)
            }
        }
    }
}

/// An ensemble stepped forward in free run: a value (copy it to branch).
///
/// `controlled` is the members' mean; `uncertainty` the root mean square over the outputs of
/// the members' standard deviation, in the signals' units (with `Propagation.mean`: of the
/// accumulated one-step spreads). The `exogenous` given to `step` is the present tick's, and
/// takes the place of the present sample's exogenous values in the window.
public struct EnsembleRollout: PlantRollout {
    let model: EnsemblePlantModel
    /// Per member, the controlled window in signal units, oldest first (K × window × outputs).
    var states: [Double]
    /// The exogenous window in signal units, oldest first (window × exogenous); the last
    /// sample is replaced by the `exogenous` of each step.
    var exogenousWindow: [Double]
    /// The past action mixes, oldest first ((actionWindow − 1) × actions).
    var pastMixes: [Double]
    /// The part of earlier mixes not yet applied, per action (the sigma-delta carry of
    /// `realised(_:)`); all 0 while every mix is one action.
    var mixCarry: [Double] = []
    /// Accumulated one-step variance per output (`Propagation.mean` only).
    var accumulatedVariance: [Double]
    /// The forward pass's buffers (input, output, two hidden layers), kept between steps.
    var workspace: [Float] = []
    /// The members' next controlled signals (K × outputs), kept between steps.
    var next: [Double] = []
    /// The controlled signals now (the members' mean).
    public private(set) var controlled: [Double]
    /// The members' spread now, in the signals' units (RMS over outputs).
    public private(set) var uncertainty: Double = 0
    /// Each member's controlled signals now (K × outputs), for inspection (with
    /// `Propagation.mean`, the mean for every member).
    public var memberStates: [[Double]] {
        let sh = model.shape
        return (0..<model.members.count).map { k in
            let base = (k * sh.window + sh.window - 1) * sh.outputs
            return Array(states[base..<(base + sh.outputs)])
        }
    }

    init(model: EnsemblePlantModel, segment: PlantSegment, index: Int) {
        self.model = model
        let sh = model.shape
        let last = max(segment.count - 1, 0)
        let present = min(max(index, 0), last)
        func sample(_ t: Int) -> Int { min(max(t, 0), last) }
        var window: [Double] = []
        var exo: [Double] = []
        for j in 0..<sh.window {
            let t = sample(present - sh.window + 1 + j)
            let c = segment.controlled.indices.contains(t) ? segment.controlled[t] : []
            let e = segment.exogenous.indices.contains(t) ? segment.exogenous[t] : []
            for o in 0..<sh.outputs { window.append(o < c.count ? c[o] : 0) }
            for i in 0..<sh.exogenous { exo.append(i < e.count ? e[i] : 0) }
        }
        states = Array((0..<model.members.count).map { _ in window }.joined())
        exogenousWindow = exo
        var mixes: [Double] = []
        for j in 0..<(sh.actionWindow - 1) {
            let t = present - (sh.actionWindow - 1) + j
            let a = segment.actions.isEmpty ? -1 : segment.actions[min(max(t, 0), segment.actions.count - 1)]
            for k in 0..<sh.actions { mixes.append(k == a ? 1 : 0) }
        }
        pastMixes = mixes
        accumulatedVariance = [Double](repeating: 0, count: sh.outputs)
        controlled = Array(window[((sh.window - 1) * sh.outputs)...])
    }

    /// Advances one tick; returns the members' mean prediction. A mix or exogenous vector of
    /// the wrong length is read with missing entries as 0 (bad input never crashes).
    public mutating func step(mix given: [Double], exogenous: [Double]) -> [Double] {
        let mix = realised(given)
        let sh = model.shape, n = model.normalisation
        let K = model.members.count, O = sh.outputs, W = sh.window
        // The present exogenous sample is the one given now.
        for i in 0..<sh.exogenous { exogenousWindow[(W - 1) * sh.exogenous + i] = i < exogenous.count ? exogenous[i] : 0 }
        let I = sh.inputCount
        if workspace.count < I + model.forwardScratch { workspace = [Float](repeating: 0, count: I + model.forwardScratch) }
        if next.count != K * O { next = [Double](repeating: 0, count: K * O) }
        workspace.withUnsafeMutableBufferPointer { wb in
            guard let input = wb.baseAddress else { return }
            let output = input + I
            // The action part of the input is the same for every member.
            let actionBase = W * sh.signalsPerSample
            for i in 0..<pastMixes.count { input[actionBase + i] = Float(pastMixes[i]) }
            for a in 0..<sh.actions { input[actionBase + pastMixes.count + a] = Float(a < mix.count ? mix[a] : 0) }
            for j in 0..<W {
                for e in 0..<sh.exogenous {
                    input[j * sh.signalsPerSample + O + e] = Float((exogenousWindow[j * sh.exogenous + e] - n.exogenousMean[e]) / n.exogenousScale[e])
                }
            }
            // With `.mean` every member's slot holds the mean trajectory.
            for k in 0..<K {
                for j in 0..<W {
                    for o in 0..<O {
                        let v = states[(k * W + j) * O + o]
                        input[j * sh.signalsPerSample + o] = Float((v - n.controlledMean[o]) / n.controlledScale[o])
                    }
                }
                model.forward(member: k, input: input, scratch: output)
                for o in 0..<O {
                    let now = states[(k * W + W - 1) * O + o]
                    next[k * O + o] = now + (Double(output[o]) * n.deltaScale[o] + n.deltaMean[o])
                }
            }
        }
        // Mean and spread over the members.
        var mean = [Double](repeating: 0, count: O)
        var variance = [Double](repeating: 0, count: O)
        for k in 0..<K { for o in 0..<O { mean[o] += next[k * O + o] / Double(K) } }
        for k in 0..<K { for o in 0..<O { let d = next[k * O + o] - mean[o]; variance[o] += d * d / Double(K) } }
        // Shift every window by one sample and append the new one.
        func push(_ slot: Int, _ values: ArraySlice<Double>) {
            let base = slot * W * O
            for j in 0..<(W - 1) { for o in 0..<O { states[base + j * O + o] = states[base + (j + 1) * O + o] } }
            for (o, v) in values.enumerated() { states[base + (W - 1) * O + o] = v }
        }
        switch model.propagation {
        case .members:
            for k in 0..<K { push(k, next[(k * O)..<((k + 1) * O)]) }
            uncertainty = (variance.reduce(0, +) / Double(max(O, 1))).squareRoot()
        case .mean:
            for k in 0..<K { push(k, mean[...]) }
            for o in 0..<O { accumulatedVariance[o] += variance[o] }
            uncertainty = (accumulatedVariance.reduce(0, +) / Double(max(O, 1))).squareRoot()
        }
        let E = sh.exogenous
        if W > 1 { for j in 0..<(W - 1) { for e in 0..<E { exogenousWindow[j * E + e] = exogenousWindow[(j + 1) * E + e] } } }
        if !pastMixes.isEmpty {
            let A = sh.actions
            for i in 0..<(pastMixes.count - A) { pastMixes[i] = pastMixes[i + A] }
            for a in 0..<A { pastMixes[pastMixes.count - A + a] = a < mix.count ? mix[a] : 0 }
        }
        controlled = mean
        return mean
    }

    /// The action a mix is stepped as: the members learned from one-hot actions, and an MLP's
    /// answer to a mix of two actions is not the mix of its answers (a planner that searched
    /// average levels found mixes the ensemble mispredicted; docs/learning.md, "Which model
    /// teaches, and the relaxation on an ensemble"). A mix is realised as a sequence of single
    /// actions whose running shares follow it (sigma-delta over the actions: each step adds the
    /// mix to a carry and applies the action with the largest carry, which then gives 1 back),
    /// as a plant whose lag averages switching sees it. A one-hot mix is applied as it is and
    /// leaves the carry at 0.
    mutating func realised(_ mix: [Double]) -> [Double] {
        let A = model.shape.actions
        var ones = 0, others = 0
        for a in 0..<min(A, mix.count) { if mix[a] == 1 { ones += 1 } else if mix[a] != 0 { others += 1 } }
        if ones == 1 && others == 0 && mixCarry.allSatisfy({ $0 == 0 }) { return mix }
        // No action at all (a mix of the wrong length, read as zeros): stepped as given.
        if ones == 0 && others == 0 { return mix }
        if mixCarry.count != A { mixCarry = [Double](repeating: 0, count: A) }
        var best = 0
        for a in 0..<A {
            mixCarry[a] += a < mix.count && mix[a].isFinite ? mix[a] : 0
            if mixCarry[a] > mixCarry[best] { best = a }
        }
        mixCarry[best] -= 1
        var out = [Double](repeating: 0, count: A)
        out[best] = 1
        return out
    }
}
