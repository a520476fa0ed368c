import EdgeQCore
import Foundation

/// What a pruning step did: how sparse and small the network became, how often it still
/// chooses the unpruned network's action, and how fast its int8 decision is.
public struct PruningReport: Sendable, Equatable {
    /// Fraction of weights (not biases) that are zero.
    public var sparsity: Double
    /// Nonzero parameters (weights and biases).
    public var nonzeroParameters: Int
    /// Size of the int8 weights in bytes (dense storage: only structured pruning shrinks it).
    public var int8WeightBytes: Int
    /// Argmax agreement with the unpruned fp32 network on held-out states.
    public var agreement: Double
    /// Median time of one int8 decision (µs), pruned network.
    public var int8Microseconds: Double
    /// The same for the unpruned network, measured in the same call.
    public var unprunedInt8Microseconds: Double
}

/// Magnitude pruning (unstructured, to a target sparsity) and structured pruning (removing
/// weak hidden units), each followed by fine-tuning: the pruned network is distilled towards
/// the unpruned one's Q-values on states from the plant (½‖Q_pruned − Q_original‖², Adam).
///
/// Speed: the int8 kernel is dense, so unstructured sparsity saves nothing at inference
/// (it can make the file compress better); removing hidden units shrinks every matrix that
/// touches them and does make decisions faster. `report` measures both.
public enum Pruning {
    /// Zeroes the `sparsity` fraction of smallest-magnitude weights in every layer (biases
    /// kept), then fine-tunes for `fineTuneSteps` batches of 64 of `states` (normalised,
    /// (N, inputCount)) with the zeros held at zero.
    ///
    /// - Throws: `QNetError` (`invalidArgument`) for sparsity outside [0, 1) or no states.
    public static func magnitude(_ network: MLP, sparsity: Double, states: [Float], fineTuneSteps: Int = 1_000,
                                 seed: UInt64 = 1) throws(QNetError) -> MLP {
        guard sparsity >= 0, sparsity < 1 else { throw QNetError(.invalidArgument, "sparsity \(sparsity) must be in [0, 1)") }
        let arch = network.architecture
        let pruned = try MLP(arch, parameters: network.parameterArray)
        var keep = [Bool](repeating: true, count: arch.parameterCount)
        for s in arch.slices {
            let n = s.outputs * s.inputs
            let magnitudes = (0..<n).map { abs(pruned.parameters[s.weight + $0]) }.sorted()
            let cut = Int((Double(n) * sparsity).rounded(.down))
            guard cut > 0 else { continue }
            let threshold = magnitudes[cut - 1]
            var removed = 0
            for k in 0..<n where removed < cut && abs(pruned.parameters[s.weight + k]) <= threshold {
                keep[s.weight + k] = false
                pruned.parameters[s.weight + k] = 0
                removed += 1
            }
        }
        try distill(student: pruned, teacher: network, states: states, steps: fineTuneSteps, seed: seed, keep: keep)
        return pruned
    }

    /// Removes, in every hidden layer, the units with the smallest ‖incoming row‖ · ‖outgoing
    /// column‖, keeping `keepFraction` of them (at least 1), then fine-tunes as `magnitude`.
    ///
    /// - Throws: `QNetError` (`invalidArgument`) for keepFraction outside (0, 1] or no states.
    public static func structured(_ network: MLP, keepFraction: Double, states: [Float], fineTuneSteps: Int = 1_000,
                                  seed: UInt64 = 1) throws(QNetError) -> MLP {
        guard keepFraction > 0, keepFraction <= 1 else { throw QNetError(.invalidArgument, "keepFraction \(keepFraction) must be in (0, 1]") }
        let arch = network.architecture
        let slices = arch.slices
        let p = network.parameters
        // Units kept per hidden layer, in their original order.
        var kept: [[Int]] = []
        for h in 0..<arch.hidden.count {
            let into = slices[h], out = slices[h + 1]
            let score = (0..<arch.hidden[h]).map { u -> Float in
                var a: Float = 0, b: Float = 0
                for i in 0..<into.inputs { a += p[into.weight + u * into.inputs + i] * p[into.weight + u * into.inputs + i] }
                for o in 0..<out.outputs { b += p[out.weight + o * out.inputs + u] * p[out.weight + o * out.inputs + u] }
                return a.squareRoot() * b.squareRoot()
            }
            let k = max(1, Int((Double(arch.hidden[h]) * keepFraction).rounded()))
            kept.append(Array((0..<arch.hidden[h]).sorted { score[$0] > score[$1] }.prefix(k)).sorted())
        }
        let small = Architecture(inputCount: arch.inputCount, hidden: kept.map(\.count), actionCount: arch.actionCount, dueling: arch.dueling)
        let student = try MLP(small, seed: seed)
        for (l, s) in small.slices.enumerated() {
            let big = slices[l]
            let rows = l < kept.count ? kept[l] : Array(0..<big.outputs)
            let cols = l > 0 ? kept[l - 1] : Array(0..<big.inputs)
            for (r, br) in rows.enumerated() {
                for (c, bc) in cols.enumerated() { student.parameters[s.weight + r * s.inputs + c] = p[big.weight + br * big.inputs + bc] }
                student.parameters[s.bias + r] = p[big.bias + br]
            }
        }
        try distill(student: student, teacher: network, states: states, steps: fineTuneSteps, seed: seed, keep: nil)
        return student
    }

    /// Fine-tuning by distillation: minimise ½‖Q_student(s) − Q_teacher(s)‖² over random
    /// batches of 64 states; parameters where `keep` is false stay zero.
    static func distill(student: MLP, teacher: MLP, states: [Float], steps: Int, seed: UInt64, keep: [Bool]?) throws(QNetError) {
        let n = student.architecture.inputCount, A = student.architecture.actionCount
        guard states.count >= n, states.count % n == 0 else {
            throw QNetError(.invalidArgument, "fine-tuning needs (N, \(n)) states, got \(states.count) floats")
        }
        let rows = states.count / n
        let B = min(64, rows)
        var rng = SeededGenerator(seed: seed)
        var adam = Adam(parameterCount: student.architecture.parameterCount, learningRate: 1e-3)
        var batch = [Float](repeating: 0, count: B * n)
        var dq = [Float](repeating: 0, count: B * A)
        for _ in 0..<steps {
            for b in 0..<B {
                let r = Int(rng.next() % UInt64(rows))
                for i in 0..<n { batch[b * n + i] = states[r * n + i] }
            }
            let target = teacher.forward(batch, batch: B)
            let q = batch.withUnsafeBufferPointer { student.forward($0.baseAddress!, batch: B) }
            for k in 0..<(B * A) { dq[k] = (q[k] - target[k]) / Float(B) }
            student.zeroGradients()
            dq.withUnsafeBufferPointer { student.backward($0.baseAddress!) }
            adam.update(student)
            if let keep { for k in 0..<keep.count where !keep[k] { student.parameters[k] = 0 } }
        }
    }

    /// Measures a pruned network against the unpruned one: sparsity, size, argmax agreement
    /// on `heldOut` raw states, and the median int8 decision time of both.
    public static func report(original: QModel, pruned: QModel, heldOut: [Float]) -> PruningReport {
        var zeros = 0, weights = 0, nonzero = 0
        for s in pruned.architecture.slices {
            for k in 0..<(s.outputs * s.inputs) { weights += 1; if pruned.parameters[s.weight + k] == 0 { zeros += 1 } }
        }
        nonzero = pruned.parameters.filter { $0 != 0 }.count
        let bytes = pruned.int8.layers.reduce(0) { $0 + $1.weights.count * $1.bits / 8 }
        let n = original.inputCount
        let f = original.makeFloatEngine(), q = pruned.makeFloatEngine()
        var same = 0
        let k = heldOut.count / n
        for r in 0..<k {
            let s = Array(heldOut[(r * n)..<((r + 1) * n)])
            let a = s.withUnsafeBufferPointer { f.bestAction(state: $0) }
            let b = s.withUnsafeBufferPointer { q.bestAction(state: $0) }
            if a == b { same += 1 }
        }
        return PruningReport(sparsity: weights > 0 ? Double(zeros) / Double(weights) : 0, nonzeroParameters: nonzero,
                             int8WeightBytes: bytes, agreement: k > 0 ? Double(same) / Double(k) : 1,
                             int8Microseconds: medianDecisionTime(pruned, states: heldOut),
                             unprunedInt8Microseconds: medianDecisionTime(original, states: heldOut))
    }

    /// Median int8 decision time in µs over 11 blocks of 1,000 calls.
    static func medianDecisionTime(_ model: QModel, states: [Float]) -> Double {
        let engine = model.makeInt8Engine()
        let n = model.inputCount
        let rows = max(states.count / n, 1)
        var sink = 0
        var blocks: [Double] = []
        states.withUnsafeBufferPointer { all in
            for _ in 0..<11 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                for c in 0..<1_000 {
                    let r = c % rows
                    sink &+= engine.bestAction(state: UnsafeBufferPointer(rebasing: all[(r * n)..<((r + 1) * n)])) ?? 0
                }
                blocks.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            }
        }
        if sink == Int.min { print(sink) }
        return blocks.sorted()[5]
    }
}
