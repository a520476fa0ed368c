import EdgeQCore
import EdgeQNet

/// Distillation (docs/learning.md, "Distillation: the planner teaches the int8 network"): a
/// Q-network learns a teacher's action values by regression, then is quantized into a served
/// `QModel` the way retraining quantizes its candidates. The teacher (a planner on a plant
/// model) is slow and runs beside the decision path; the student decides in microseconds.
///
/// - **Regression**: every action's output is fitted to the teacher's value of that action
///   (mean squared error over all actions, Adam, minibatches drawn with a seeded generator).
///   The targets are standardised for training (one mean and scale over all values) and the
///   scale is folded back into the last layer afterwards, so the network outputs the
///   teacher's values on the teacher's scale.
/// - **Normalisation and quantization**: as `Retrainer` does for a candidate — the inputs'
///   mean and standard deviation fitted on the training states, calibration on up to 4,096
///   training states spread evenly over them.
public enum Distillation {
    /// How the student is trained.
    public struct Configuration: Sendable, Equatable {
        /// Hidden layer widths (the mapping's `learning.hidden`).
        public var hidden: [Int]
        /// Adam updates.
        public var updates: Int
        /// States per update.
        public var batchSize: Int
        /// Adam's learning rate.
        public var learningRate: Float
        /// Weight of the action-difference term: the loss fits each state's mean value and the
        /// actions' differences from it, each in its own units (standardised by its spread over
        /// the examples), the differences with this weight. 0: the mean values only.
        public var differenceWeight: Float
        /// Seeds the initial weights and the minibatches.
        public var seed: UInt64

        /// A configuration; see the properties.
        public init(hidden: [Int] = [64, 64], updates: Int = 30000, batchSize: Int = 64, learningRate: Float = 1e-3,
                    differenceWeight: Float = 1, seed: UInt64 = 1) {
            self.hidden = hidden
            self.updates = updates
            self.batchSize = batchSize
            self.learningRate = learningRate
            self.differenceWeight = differenceWeight
            self.seed = seed
        }
    }

    /// One state the teacher valued.
    public struct Example: Sendable, Equatable {
        /// The network's input (the mapping's raw feature state, as logged).
        public var state: [Float]
        /// The teacher's value of each action (indexed by action).
        public var values: [Double]

        /// An example.
        public init(state: [Float], values: [Double]) {
            self.state = state
            self.values = values
        }

        /// The teacher's best action (ties: the lowest index), nil without finite values.
        public var best: Int? {
            var b: Int?
            for (a, v) in values.enumerated() where v.isFinite {
                if b == nil || v > values[b ?? 0] { b = a }
            }
            return b
        }
    }

    /// The trained student and how training went.
    public struct Result: Sendable {
        /// The quantized model, ready to serve.
        public var model: QModel
        /// Mean squared error of the fp32 network on the training examples (teacher's units²),
        /// over the last tenth of the updates.
        public var trainLoss: Double
        /// Spread (standard deviation) of the states' mean values V(s) and of the actions'
        /// differences from them, over the training examples (teacher's units).
        public var valueSpread: Double
        public var differenceSpread: Double
        /// Adam updates made: `Configuration.updates`, or fewer when `shouldStop` said stop.
        public var updates: Int
    }

    /// Trains a student on `examples` and quantizes it.
    ///
    /// - Parameters:
    ///   - examples: the training states and the teacher's values (all the same widths).
    ///   - actionNames: one per action (the mapping's action names).
    ///   - shouldStop: polled before every update; true ends the training there (a retraining's
    ///     time limit): the network as trained so far is quantized and returned, `Result.updates`
    ///     says how far it got.
    /// - Throws: `DistillationError` when there are no examples, their widths disagree or a
    ///   value is not finite, or the network cannot be built or quantized.
    public static func train(_ examples: [Example], actionNames: [String], configuration c: Configuration,
                             training metadata: [String: String] = [:],
                             shouldStop: () -> Bool = { false }) throws(DistillationError) -> Result {
        guard let first = examples.first else { throw DistillationError("no examples to distil from: the teacher valued no state") }
        let width = first.state.count, A = actionNames.count
        guard width > 0, A > 0, examples.allSatisfy({ $0.state.count == width && $0.values.count == A && $0.values.allSatisfy(\.isFinite) }) else {
            throw DistillationError("examples must all have \(width) state values and \(A) finite action values")
        }
        let arch = Architecture(inputCount: width, hidden: c.hidden, actionCount: A, dueling: false)
        let net: MLP
        do { net = try MLP(arch, seed: c.seed) } catch { throw DistillationError("cannot build \(arch.label): \(error)") }

        // As Retrainer: normalisation fitted on the training states.
        let flat = examples.flatMap(\.state)
        let normalization = Normalization.fit(flat, inputCount: width)
        let inputs = normalization.apply(flat)
        // Targets split into each state's mean value V(s) and the actions' differences from it
        // A(s, a) = Q(s, a) − V(s), each term of the loss in its own units: on the heater the
        // differences are a thousandth of the values' spread, so one scale for both would leave
        // the ranking (what the argmax reads) below the fit's resolution. Standardised by V's
        // mean and spread (folded back into the last layer below).
        let all = examples.flatMap(\.values)
        let stateMeans = examples.map { $0.values.reduce(0, +) / Double(A) }
        let mean = stateMeans.reduce(0, +) / Double(examples.count)
        let sd = max((stateMeans.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(examples.count)).squareRoot(), 1e-9)
        var advSq = 0.0
        for (i, e) in examples.enumerated() { for v in e.values { advSq += (v - stateMeans[i]) * (v - stateMeans[i]) } }
        let advSD = max((advSq / Double(all.count)).squareRoot(), 1e-9 * sd)
        let targets = all.map { Float(($0 - mean) / sd) }
        // The differences' weight in standardised units: (σ_V / σ_A)², times the configured weight.
        let w = c.differenceWeight * Float((sd / advSD) * (sd / advSD))

        setBLASThreads(1)
        var adam = Adam(parameterCount: arch.parameterCount, learningRate: c.learningRate)
        var rng = SeededGenerator(seed: c.seed &+ 0xD157)
        let B = max(min(c.batchSize, examples.count), 1)
        var x = [Float](repeating: 0, count: B * width)
        var y = [Float](repeating: 0, count: B * A)
        var dq = [Float](repeating: 0, count: B * A)
        // The loss over the last tenth of the updates made (a ring: the training may stop early).
        var tail = [Double](repeating: 0, count: max(c.updates / 10, 1))
        var done = 0
        for u in 0..<c.updates {
            if shouldStop() { break }
            // The learning rate falls linearly to 5 % of its start: the ranking lives in small
            // differences, which a constant step keeps shaking (measured on the heater: more
            // updates at a constant rate agreed less with the teacher, not more).
            adam.learningRate = c.learningRate * (1 - 0.95 * Float(u) / Float(max(c.updates, 1)))
            for r in 0..<B {
                let i = Int(rng.next() % UInt64(examples.count))
                for k in 0..<width { x[r * width + k] = inputs[i * width + k] }
                for a in 0..<A { y[r * A + a] = targets[i * A + a] }
            }
            net.zeroGradients()
            let q = x.withUnsafeBufferPointer { net.forward($0.baseAddress!, batch: B) }
            var loss: Float = 0
            for r in 0..<B {
                var meanErr: Float = 0
                for a in 0..<A { meanErr += q[r * A + a] - y[r * A + a] }
                meanErr /= Float(A)
                for a in 0..<A {
                    let e = q[r * A + a] - y[r * A + a]
                    let d = e - meanErr        // the error in the action's difference from the state's mean
                    loss += e * e
                    // Per state: L = ē² + w · (1/A) Σ_a d_a²; ∂L/∂q_a = 2ē/A + 2w·d_a/A
                    // (Σ_a d_a = 0 removes the mean's share of the second term).
                    dq[r * A + a] = (2 * meanErr + 2 * w * d) / Float(B * A)
                }
            }
            dq.withUnsafeBufferPointer { net.backward($0.baseAddress!) }
            adam.update(net)
            tail[u % tail.count] = Double(loss) / Double(B * A) * sd * sd
            done = u + 1
        }
        let tailCount = min(done, tail.count)
        let lossTail = tail.prefix(tailCount).reduce(0, +)
        // Fold the target scale into the last (linear) layer: q = σ·(W h + b) + μ.
        if let last = arch.slices.last {
            let s = Float(sd)
            for k in 0..<(last.outputs * last.inputs) { net.parameters[last.weight + k] *= s }
            for k in 0..<last.outputs { net.parameters[last.bias + k] = net.parameters[last.bias + k] * s + Float(mean) }
        }
        // As Retrainer: calibration on up to 4,096 training states spread over them.
        let n = examples.count
        let calibration = stride(from: 0, to: n, by: max(n / 4096, 1)).flatMap { examples[$0].state }
        var meta = metadata
        meta["distilled"] = "true"
        meta["examples"] = String(n)
        meta["updates"] = String(done)
        do {
            let model = try QModel(network: net, actionNames: actionNames, normalization: normalization,
                                   calibrationStates: calibration, training: meta)
            return Result(model: model, trainLoss: tailCount > 0 ? lossTail / Double(tailCount) : .nan,
                          valueSpread: sd, differenceSpread: advSD, updates: done)
        } catch {
            throw DistillationError("cannot quantize the distilled network: \(error)")
        }
    }

    /// How often a served network picks the teacher's best action. Codable with the keys a
    /// retraining's report.json uses (`distill.agreement_held_out`: snake_case).
    public struct Agreement: Codable, Sendable, Equatable {
        /// States compared.
        public var states: Int
        /// Share where the network's pick is the teacher's best action.
        public var strict: Double
        /// Share where the teacher values the network's pick within `tolerance` of its best.
        public var tolerant: Double
        /// The tolerance (teacher's units).
        public var tolerance: Double
        /// Mean and largest teacher's value lost by the network's pick (teacher's best − its value).
        public var meanRegret: Double
        /// See `meanRegret`.
        public var maxRegret: Double
        /// Share of the states where the teacher's own best two actions are within `tolerance`
        /// of each other (near-ties: strict agreement there is a coin toss the values barely
        /// decide).
        public var teacherNearTies: Double

        /// The figures as given.
        public init(states: Int, strict: Double, tolerant: Double, tolerance: Double, meanRegret: Double, maxRegret: Double,
                    teacherNearTies: Double) {
            self.states = states
            self.strict = strict
            self.tolerant = tolerant
            self.tolerance = tolerance
            self.meanRegret = meanRegret
            self.maxRegret = maxRegret
            self.teacherNearTies = teacherNearTies
        }

        enum CodingKeys: String, CodingKey {
            case states, strict, tolerant, tolerance, meanRegret = "mean_regret", maxRegret = "max_regret", teacherNearTies = "teacher_near_ties"
        }
    }

    /// The agreement of `model` served at `precision` with the teacher on `examples`.
    public static func agreement(_ model: QModel, precision: Precision, on examples: [Example], tolerance: Double) -> Agreement {
        let engine = model.makeEngine(precision)
        var strict = 0, tolerant = 0, n = 0
        var regretSum = 0.0, regretMax = 0.0, ties = 0
        for e in examples {
            guard let best = e.best, e.state.count == model.inputCount,
                  let pick = e.state.withUnsafeBufferPointer({ engine.bestAction(state: $0) }), e.values.indices.contains(pick) else { continue }
            n += 1
            let regret = e.values[best] - e.values[pick]
            regretSum += regret
            regretMax = max(regretMax, regret)
            let second = e.values.enumerated().filter { $0.offset != best }.map(\.element).max() ?? -.infinity
            if e.values[best] - second <= tolerance { ties += 1 }
            if pick == best { strict += 1 }
            if pick == best || regret <= tolerance { tolerant += 1 }
        }
        let d = Double(max(n, 1))
        return Agreement(states: n, strict: Double(strict) / d, tolerant: Double(tolerant) / d, tolerance: tolerance,
                         meanRegret: regretSum / d, maxRegret: regretMax, teacherNearTies: Double(ties) / d)
    }
}

/// Why a distillation could not run; the message says what to do.
public struct DistillationError: Error, Sendable, CustomStringConvertible {
    /// What went wrong and what to do.
    public let description: String
    init(_ description: String) { self.description = description }
}
