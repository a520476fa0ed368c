import Foundation

/// Normalisation applied to the raw state before the network: (x − mean) / std.
public struct Normalization: Sendable, Equatable {
    /// (inputCount)
    public var mean: [Float]
    /// (inputCount), every entry > 0.
    public var std: [Float]

    /// Constants for `inputCount` features; every std must be > 0 (`QModel` checks).
    public init(mean: [Float], std: [Float]) {
        self.mean = mean
        self.std = std
    }

    /// mean 0, std 1: the state is used as it is.
    public static func identity(_ n: Int) -> Normalization {
        Normalization(mean: Array(repeating: 0, count: n), std: Array(repeating: 1, count: n))
    }

    /// Mean and standard deviation of `states` ((N, n) row-major); a std below 1e-6 becomes 1.
    public static func fit(_ states: [Float], inputCount n: Int) -> Normalization {
        let rows = max(states.count / n, 1)
        var mean = [Float](repeating: 0, count: n), sq = [Float](repeating: 0, count: n)
        for r in 0..<(states.count / n) { for i in 0..<n { mean[i] += states[r * n + i] } }
        for i in 0..<n { mean[i] /= Float(rows) }
        for r in 0..<(states.count / n) { for i in 0..<n { let d = states[r * n + i] - mean[i]; sq[i] += d * d } }
        let std = sq.map { v -> Float in let s = (v / Float(rows)).squareRoot(); return s < 1e-6 ? 1 : s }
        return Normalization(mean: mean, std: std)
    }

    /// Normalises `states` ((N, n) row-major).
    public func apply(_ states: [Float]) -> [Float] {
        let n = mean.count
        return states.enumerated().map { k, v in (v - mean[k % n]) / std[k % n] }
    }
}

/// A deployable Q-network: fp32 weights, their int8 quantization, normalisation constants,
/// action names, training metadata and a reference set, stored as one safetensors file
/// with its sha256 beside it (docs/model-format.md).
public struct QModel: Sendable {
    /// The newest format version this build reads (it reads 1…this) and writes. Version 2
    /// added the 16-bit head (`int8.<last>.weight` as I16); a model without one is written
    /// as version 1.
    public static let formatVersion = 2

    /// The network's shape.
    public var architecture: Architecture
    /// One name per action, in output order.
    public var actionNames: [String]
    /// Applied to raw states by the engines.
    public var normalization: Normalization
    /// fp32 parameters, layout `Architecture.slices` (W0 b0 W1 b1 …).
    public var parameters: [Float]
    /// The int8 quantization of `parameters`.
    public var int8: Int8Network
    /// Reference raw states, (k, inputCount) row-major.
    public var referenceStates: [Float]
    /// The fp32 greedy action (no mask) of each reference state.
    public var referenceActions: [Int]
    /// The int8 greedy action of each reference state (the int8 path is exact, so it must match).
    public var referenceInt8Actions: [Int]
    /// Free-form training metadata (seed, updates, loss, data range, version …).
    public var training: [String: String]
    /// The raw states the model was trained on, as a box per input (nil: not recorded, e.g. a
    /// model written before the box was, or from Python without it): the decision path hands
    /// a state outside it to the safety policy (docs/mapping.md, `safety.support_margin`).
    public var support: StateSupport?

    /// Width of the raw state vector.
    public var inputCount: Int { architecture.inputCount }
    /// Number of actions.
    public var actionCount: Int { architecture.actionCount }

    /// Builds a model from a trained network: quantizes it with `calibrationStates` (raw,
    /// (N, inputCount)) and records reference actions for the first `referenceCount` of them.
    ///
    /// - Throws: `QNetError` (`invalidArgument`) when names, normalisation or calibration
    ///   do not fit the architecture.
    public init(network: MLP, actionNames: [String], normalization: Normalization, calibrationStates: [Float],
                referenceCount: Int = 16, training: [String: String] = [:]) throws(QNetError) {
        let arch = network.architecture
        guard actionNames.count == arch.actionCount else {
            throw QNetError(.invalidArgument, "\(actionNames.count) action names for \(arch.actionCount) actions")
        }
        guard normalization.mean.count == arch.inputCount, normalization.std.count == arch.inputCount,
              normalization.std.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw QNetError(.invalidArgument, "normalisation needs \(arch.inputCount) means and positive stds")
        }
        var int8 = try Int8Network.quantize(network, calibration: normalization.apply(calibrationStates))
        int8.tieMargin = Self.measureTieMargin(parameters: network.parameterArray, int8: int8, normalization: normalization,
                                               states: calibrationStates)
        let k = min(referenceCount, calibrationStates.count / arch.inputCount)
        self.architecture = arch
        self.actionNames = actionNames
        self.normalization = normalization
        self.parameters = network.parameterArray
        self.int8 = int8
        self.referenceStates = Array(calibrationStates.prefix(k * arch.inputCount))
        self.referenceActions = []
        self.referenceInt8Actions = []
        self.training = training
        self.support = nil
        (referenceActions, referenceInt8Actions) = computeReferenceActions()
    }

    private init(architecture: Architecture, actionNames: [String], normalization: Normalization, parameters: [Float],
                 int8: Int8Network, referenceStates: [Float], referenceActions: [Int], referenceInt8Actions: [Int],
                 training: [String: String], support: StateSupport?) {
        self.architecture = architecture
        self.actionNames = actionNames
        self.normalization = normalization
        self.parameters = parameters
        self.int8 = int8
        self.referenceStates = referenceStates
        self.referenceActions = referenceActions
        self.referenceInt8Actions = referenceInt8Actions
        self.training = training
        self.support = support
    }

    /// A fresh engine with its own workspace (one per thread).
    public func makeEngine(_ precision: Precision) -> QEngine { QEngine(model: self, precision: precision) }
    /// A fresh int8 engine (one per thread).
    public func makeInt8Engine() -> QEngine { makeEngine(.int8) }
    /// A fresh fp32 engine (one per thread).
    public func makeFloatEngine() -> QEngine { makeEngine(.fp32) }

    /// An fp32 `MLP` holding this model's parameters (to fine-tune or prune).
    public func makeNetwork() throws(QNetError) -> MLP { try MLP(architecture, parameters: parameters) }

    /// `Int8Network.tieMargin` for a quantized network: `Int8Network.tieMarginSafety` × the
    /// 99th percentile (over `states`, raw, (N, inputCount)) of |e(a1) − e(a2)|, where a1, a2
    /// are int8's best two actions and e = Q8 − Q32 the int8 errors. When a1 leads a2 by more
    /// than that, fp32 ranks a1 above a2 too. It is not a bound over every action (the
    /// spread max_a e − min_a e was, session 2): actions far from the best can carry large
    /// errors that never matter, and on trained networks the spread sent ~90 % of decisions
    /// to fp32 for no gain in agreement. The percentile keeps rare outliers from sending most
    /// decisions to fp32, the factor covers states a little outside calibration, and the
    /// retraining's agreement check measures the result on held-out states.
    public static func measureTieMargin(parameters: [Float], int8: Int8Network, normalization: Normalization,
                                       states: [Float]) -> Float {
        var probe = int8
        probe.tieMargin = 0
        let model = QModel(architecture: int8.architecture, actionNames: (0..<int8.architecture.actionCount).map { "a\($0)" },
                           normalization: normalization, parameters: parameters, int8: probe, referenceStates: [],
                           referenceActions: [], referenceInt8Actions: [], training: [:], support: nil)
        let f = model.makeFloatEngine(), q = model.makeInt8Engine()
        let n = int8.architecture.inputCount, A = int8.architecture.actionCount
        var differences: [Float] = []
        var a32 = [Float](repeating: 0, count: A), a8 = [Float](repeating: 0, count: A)
        for r in 0..<(states.count / n) {
            states.withUnsafeBufferPointer { all in
                let s = UnsafeBufferPointer(rebasing: all[(r * n)..<((r + 1) * n)])
                a32.withUnsafeMutableBufferPointer { f.qValues(state: s, into: $0) }
                a8.withUnsafeMutableBufferPointer { q.qValues(state: s, into: $0) }
            }
            // int8's best and second-best actions, and how differently int8 misjudges them.
            guard A >= 2 else { continue }
            var first = 0
            for a in 1..<A where a8[a] > a8[first] { first = a }
            var second = first == 0 ? 1 : 0
            for a in 0..<A where a != first && a8[a] > a8[second] { second = a }
            let d = abs((a8[first] - a32[first]) - (a8[second] - a32[second]))
            if d.isFinite { differences.append(d) }
        }
        guard !differences.isEmpty else { return 0 }
        differences.sort()
        let p99 = differences[min(differences.count - 1, Int((Double(differences.count) * 0.99).rounded(.down)))]
        return p99 * Int8Network.tieMarginSafety
    }

    private func computeReferenceActions() -> ([Int], [Int]) {
        let n = inputCount
        let k = referenceStates.count / n
        let f = makeFloatEngine(), q = makeInt8Engine()
        var a32: [Int] = [], a8: [Int] = []
        for r in 0..<k {
            let s = Array(referenceStates[(r * n)..<((r + 1) * n)])
            a32.append(s.withUnsafeBufferPointer { f.bestAction(state: $0) } ?? 0)
            a8.append(s.withUnsafeBufferPointer { q.bestAction(state: $0) } ?? 0)
        }
        return (a32, a8)
    }

    // MARK: file

    /// The path of the checksum file beside a model: `<model>.sha256`.
    public static func checksumURL(for url: URL) -> URL { url.appendingPathExtension("sha256") }

    /// The format version this model is written as: 2 with a 16-bit head, else 1 (so that
    /// files without one stay readable by builds that read only version 1).
    public var fileFormatVersion: Int { int8.layers.contains { $0.bits == 16 } ? Self.formatVersion : 1 }

    /// The file's bytes (safetensors).
    public func encoded() -> [UInt8] {
        var t: [String: StoredTensor] = [:]
        for (l, s) in architecture.slices.enumerated() {
            t["fp32.\(l).weight"] = .f32(Array(parameters[s.weight..<(s.weight + s.outputs * s.inputs)]), [s.outputs, s.inputs])
            t["fp32.\(l).bias"] = .f32(Array(parameters[s.bias..<(s.bias + s.outputs)]), [s.outputs])
            let q = int8.layers[l]
            t["int8.\(l).weight"] = q.bits == 16 ? .i16(q.weights, [q.outputs, q.inputs])
                : .i8(q.weights.map { Int8(truncatingIfNeeded: $0) }, [q.outputs, q.inputs])
            t["int8.\(l).weight_scale"] = .f32(q.weightScales, [q.outputs])
            t["int8.\(l).input_scale"] = .f32(q.inputScales, [q.inputs])
            t["int8.\(l).bias"] = .f32(q.bias, [q.outputs])
        }
        t["int8.tie_margin"] = .f32([int8.tieMargin], [1])
        t["norm.mean"] = .f32(normalization.mean, [inputCount])
        t["norm.std"] = .f32(normalization.std, [inputCount])
        let k = referenceStates.count / inputCount
        t["reference.states"] = .f32(referenceStates, [k, inputCount])
        t["reference.actions"] = .i64(referenceActions, [k])
        t["reference.int8_actions"] = .i64(referenceInt8Actions, [k])
        if let support {
            t["support.min"] = .f32(support.min, [inputCount])
            t["support.max"] = .f32(support.max, [inputCount])
        }
        let archJSON = "{\"inputs\":\(inputCount),\"hidden\":[\(architecture.hidden.map(String.init).joined(separator: ","))],"
            + "\"actions\":\(actionCount),\"dueling\":\(architecture.dueling)}"
        let names = (try? JSONSerialization.data(withJSONObject: actionNames)).flatMap { String(data: $0, encoding: .utf8) } ?? "[]"
        let train = (try? JSONSerialization.data(withJSONObject: training, options: [.sortedKeys])).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
        let meta = ["format": "edgeq.qnet", "format_version": String(fileFormatVersion), "architecture": archJSON,
                    "action_names": names, "training": train]
        return SafeTensors.encode(t, metadata: meta)
    }

    /// Writes the model to `url` and its sha256 to `<url>.sha256` (`sha256sum` format), each
    /// through a temporary file and a rename, so a reader never sees a half-written model.
    ///
    /// - Throws: `QNetError` (`io`) when a file cannot be written.
    public func save(to url: URL) throws(QNetError) {
        let bytes = encoded()
        let sum = sha256Hex(bytes) + "  " + url.lastPathComponent + "\n"
        do {
            let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
            try Data(bytes).write(to: tmp)
            let tmpSum = tmp.appendingPathExtension("sha256")
            try Data(sum.utf8).write(to: tmpSum)
            // rename(2) replaces atomically. Checksum first: a crash between the renames leaves
            // an old model with a new checksum, which load rejects, rather than a new model
            // accepted unchecked.
            guard rename(tmpSum.path, Self.checksumURL(for: url).path) == 0, rename(tmp.path, url.path) == 0 else {
                throw QNetError(.io, "cannot rename into \(url.path): errno \(errno)")
            }
        } catch let error as QNetError {
            throw error
        } catch {
            throw QNetError(.io, "cannot write \(url.path): \(error)")
        }
    }

    /// Loads and checks a model file.
    ///
    /// Checks, in order: the container (header length, JSON, dtypes, shapes against byte
    /// ranges, ranges inside the file), the format version and architecture, every tensor
    /// the layout requires with its dtype and shape, the sha256 beside the file, and the
    /// reference set (fp32, and int8 when recorded, must give the recorded actions).
    /// A file without int8 tensors (e.g. written by Python from fp32 weights) is quantized
    /// on load with its reference states as calibration.
    ///
    /// - Parameter requireChecksum: when true (default) a missing `<url>.sha256` is an error.
    /// - Throws: `QNetError`: `io`, `truncated`, `badHeader`, `wrongDType`, `shapeMismatch`,
    ///   `missingTensor`, `unsupportedVersion`, `checksumMissing`, `checksumMismatch`,
    ///   `referenceFailed` — each message says what was found and what was expected.
    public static func load(from url: URL, requireChecksum: Bool = true) throws(QNetError) -> QModel {
        let bytes: [UInt8]
        do { bytes = Array(try Data(contentsOf: url)) } catch {
            throw QNetError(.io, "cannot read \(url.path): \(error.localizedDescription)")
        }
        let model = try decode(bytes)
        let sumURL = checksumURL(for: url)
        if let text = try? String(contentsOf: sumURL, encoding: .utf8) {
            let expected = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).first.map(String.init) ?? ""
            let actual = sha256Hex(bytes)
            guard expected.lowercased() == actual else {
                throw QNetError(.checksumMismatch, "\(url.lastPathComponent): sha256 is \(actual) but \(sumURL.lastPathComponent) says \(expected); the file is corrupt — copy it again")
            }
        } else if requireChecksum {
            throw QNetError(.checksumMissing, "\(sumURL.path) is missing; ship the model with its checksum (sha256sum format)")
        }
        try model.checkReference()
        return model
    }

    /// Decodes and checks a model from its file's bytes, as `load(from:)` does but without a
    /// checksum file: the caller has already checked these very bytes (the gateway verifies
    /// the model's signature over their SHA-256 and then decodes the same bytes, so nothing
    /// can change between the check and the use).
    ///
    /// Checks, in order: the container, the format version and architecture, every tensor
    /// the layout requires, and the reference set.
    /// - Throws: `QNetError`: `truncated`, `badHeader`, `wrongDType`, `shapeMismatch`,
    ///   `missingTensor`, `unsupportedVersion`, `referenceFailed`.
    public static func load(bytes: [UInt8]) throws(QNetError) -> QModel {
        let model = try decode(bytes)
        try model.checkReference()
        return model
    }

    /// Decodes bytes into a model (container and layout checks; no checksum, no reference check).
    static func decode(_ bytes: [UInt8]) throws(QNetError) -> QModel {
        let (t, meta) = try SafeTensors.decode(bytes)
        guard meta["format"] == "edgeq.qnet" else {
            throw QNetError(.badHeader, "__metadata__.format is \(meta["format"] ?? "missing"), expected edgeq.qnet")
        }
        guard let v = meta["format_version"].flatMap(Int.init), v >= 1, v <= formatVersion else {
            throw QNetError(.unsupportedVersion, "format_version \(meta["format_version"] ?? "missing"); this build reads 1…\(formatVersion)")
        }
        guard let archData = meta["architecture"]?.data(using: .utf8),
              let a = (try? JSONSerialization.jsonObject(with: archData)) as? [String: Any],
              let inputs = (a["inputs"] as? NSNumber)?.intValue, let actions = (a["actions"] as? NSNumber)?.intValue,
              let hiddenAny = a["hidden"] as? [Any] else {
            throw QNetError(.badHeader, "__metadata__.architecture must be JSON {inputs, hidden, actions, dueling}")
        }
        let hidden = hiddenAny.compactMap { ($0 as? NSNumber)?.intValue }
        let dueling = (a["dueling"] as? Bool) ?? false
        let arch = Architecture(inputCount: inputs, hidden: hidden, actionCount: actions, dueling: dueling)
        guard hidden.count == hiddenAny.count else { throw QNetError(.badHeader, "architecture.hidden must be integers") }
        do { try arch.validate() } catch { throw QNetError(.badHeader, "__metadata__.architecture: \(error.message)") }
        // Widths are bounded by validate(), so this cannot overflow; a file too small for its
        // architecture is rejected before anything that size is allocated.
        guard arch.parameterCount <= bytes.count / 4 else {
            throw QNetError(.shapeMismatch, "architecture \(arch.label) needs \(arch.parameterCount) fp32 parameters but the file has only \(bytes.count) bytes; the architecture in __metadata__ does not match the tensors")
        }
        var names = (1...actions).map { "action\($0 - 1)" }
        if let n = meta["action_names"]?.data(using: .utf8) {
            guard let list = (try? JSONSerialization.jsonObject(with: n)) as? [String], list.count == actions else {
                throw QNetError(.badHeader, "__metadata__.action_names must be a JSON array of \(actions) strings")
            }
            names = list
        }
        var training: [String: String] = [:]
        if let tr = meta["training"]?.data(using: .utf8), let obj = (try? JSONSerialization.jsonObject(with: tr)) as? [String: Any] {
            for (k, v) in obj { training[k] = (v as? String) ?? "\(v)" }
        }

        func tensor(_ name: String, _ dtypes: [StoredTensor.DType], _ shape: [Int?]) throws(QNetError) -> StoredTensor {
            guard let x = t[name] else { throw QNetError(.missingTensor, "tensor \(name) is missing (architecture \(arch.label))") }
            guard dtypes.contains(x.dtype) else {
                throw QNetError(.wrongDType, "tensor \(name) is \(x.dtype.rawValue), expected \(dtypes.map(\.rawValue).joined(separator: " or "))")
            }
            guard x.shape.count == shape.count, zip(x.shape, shape).allSatisfy({ $1 == nil || $0 == $1 }) else {
                throw QNetError(.shapeMismatch, "tensor \(name) has shape \(x.shape), expected \(shape.map { $0.map(String.init) ?? "k" }) for \(arch.label)")
            }
            return x
        }

        var params = [Float](repeating: 0, count: arch.parameterCount)
        var qlayers: [Int8Layer] = []
        let hasInt8 = t["int8.0.weight"] != nil
        for (l, s) in arch.slices.enumerated() {
            let w = try tensor("fp32.\(l).weight", [.F32], [s.outputs, s.inputs]).floats
            let b = try tensor("fp32.\(l).bias", [.F32], [s.outputs]).floats
            params.replaceSubrange(s.weight..<(s.weight + w.count), with: w)
            params.replaceSubrange(s.bias..<(s.bias + b.count), with: b)
            if hasInt8 {
                // The int8 head is centred: A + 1 rows (Int8Network).
                let rows = l == arch.layerCount - 1 ? arch.actionCount + 1 : s.outputs
                // 8-bit weights; the head's may be 16-bit (format version 2), within the
                // limit that keeps the kernels' int32 sums exact.
                let isHead = l == arch.layerCount - 1
                let stored = try tensor("int8.\(l).weight", isHead ? [.I8, .I16] : [.I8], [rows, s.inputs])
                let bits = stored.dtype == .I16 ? 16 : 8
                let w8 = bits == 16 ? stored.int16s : stored.int8s.map { Int16($0) }
                let limit = Int8Layer.weightLimit(bits: bits, inputs: s.inputs)
                guard bits == 8 || w8.allSatisfy({ abs(Int($0)) <= limit }) else {
                    throw QNetError(.shapeMismatch, "layer \(l): 16-bit weights must lie within ±\(limit) for \(s.inputs) inputs (so that int32 sums cannot overflow)")
                }
                let ws = try tensor("int8.\(l).weight_scale", [.F32], [rows]).floats
                let qb = try tensor("int8.\(l).bias", [.F32], [rows]).floats
                let xs = try tensor("int8.\(l).input_scale", [.F32], [s.inputs]).floats
                guard xs.allSatisfy({ $0 > 0 && $0.isFinite }), ws.allSatisfy({ $0 > 0 && $0.isFinite }) else {
                    throw QNetError(.shapeMismatch, "layer \(l): int8 scales must be positive and finite")
                }
                qlayers.append(Int8Layer(inputs: s.inputs, outputs: rows, weights: w8, bits: bits, weightScales: ws, bias: qb, inputScales: xs))
            }
        }
        guard params.allSatisfy({ $0.isFinite }) else { throw QNetError(.shapeMismatch, "fp32 weights contain NaN or infinity") }
        let mean = try tensor("norm.mean", [.F32], [inputs]).floats
        let std = try tensor("norm.std", [.F32], [inputs]).floats
        guard std.allSatisfy({ $0 > 0 && $0.isFinite }), mean.allSatisfy({ $0.isFinite }) else {
            throw QNetError(.shapeMismatch, "norm.std must be positive and finite, norm.mean finite")
        }
        let refStates = try tensor("reference.states", [.F32], [nil, inputs])
        let k = refStates.shape[0]
        let refActions = try tensor("reference.actions", [.I64, .I32], [k]).ints
        guard k >= 1 else { throw QNetError(.missingTensor, "reference.states is empty: a model must carry at least one reference state") }
        var refInt8: [Int] = []
        if t["reference.int8_actions"] != nil { refInt8 = try tensor("reference.int8_actions", [.I64, .I32], [k]).ints }
        let norm = Normalization(mean: mean, std: std)
        var int8: Int8Network
        if hasInt8 {
            int8 = Int8Network(architecture: arch, layers: qlayers)
        } else {
            // fp32-only file (e.g. from Python): quantize here, calibrating on the reference states.
            let net = try MLP(arch, parameters: params)
            int8 = try Int8Network.quantize(net, calibration: norm.apply(refStates.floats))
        }
        if hasInt8, t["int8.tie_margin"] != nil {
            let m = try tensor("int8.tie_margin", [.F32], [1]).floats[0]
            guard m >= 0, m.isFinite else { throw QNetError(.shapeMismatch, "int8.tie_margin must be ≥ 0 and finite, found \(m)") }
            int8.tieMargin = m
        } else {
            // Not in the file (written by Python, or fp32 only): measure it on the reference states.
            int8.tieMargin = measureTieMargin(parameters: params, int8: int8, normalization: norm, states: refStates.floats)
        }
        var support: StateSupport?
        if t["support.min"] != nil || t["support.max"] != nil {
            let box = StateSupport(min: try tensor("support.min", [.F32], [inputs]).floats,
                                   max: try tensor("support.max", [.F32], [inputs]).floats)
            guard box.isValid(inputCount: inputs) else {
                throw QNetError(.shapeMismatch, "support.min and support.max must be finite with min ≤ max for every input")
            }
            support = box
        }
        return QModel(architecture: arch, actionNames: names, normalization: norm, parameters: params, int8: int8,
                      referenceStates: refStates.floats, referenceActions: refActions, referenceInt8Actions: refInt8,
                      training: training, support: support)
    }

    /// Runs the reference states and compares with the recorded actions.
    ///
    /// - Throws: `QNetError` (`referenceFailed`) naming the first state that disagrees.
    public func checkReference() throws(QNetError) {
        let (a32, a8) = computeReferenceActions()
        for (r, (got, want)) in zip(a32, referenceActions).enumerated() where got != want {
            throw QNetError(.referenceFailed, "reference state \(r): fp32 network chose action \(got), the file records \(want); the weights are not the ones the model was saved with")
        }
        for (r, (got, want)) in zip(a8, referenceInt8Actions).enumerated() where got != want {
            throw QNetError(.referenceFailed, "reference state \(r): int8 network chose action \(got), the file records \(want); the int8 tensors are damaged or from another model")
        }
    }
}

/// How closely the int8 path follows fp32 on held-out states.
public struct QuantizationReport: Sendable, Equatable {
    /// Fraction of states where int8 and fp32 choose the same action (goal ≥ 0.99).
    public var agreement: Double
    /// Largest |Q_int8 − Q_fp32| over all states and actions.
    public var maxAbsError: Float
    /// Number of held-out states.
    public var states: Int
    /// Fraction of states where `Precision.mixed` chooses fp32's action.
    public var mixedAgreement: Double
    /// Fraction of states where `Precision.mixed` asked fp32 (a near-tie in int8).
    public var mixedFP32Share: Double
}

extension QModel {
    /// Compares int8 with fp32 on held-out raw states ((N, inputCount) row-major).
    public func quantizationReport(heldOut states: [Float]) -> QuantizationReport {
        let n = inputCount
        let f = makeFloatEngine(), q = makeInt8Engine(), m = makeEngine(.mixed)
        let k = states.count / n
        var same = 0, mixedSame = 0
        var maxErr: Float = 0
        for r in 0..<k {
            let s = Array(states[(r * n)..<((r + 1) * n)])
            let a = f.qValues(s), b = q.qValues(s)
            for j in 0..<actionCount { maxErr = max(maxErr, abs(a[j] - b[j])) }
            let x = a.withUnsafeBufferPointer { maskedArgmax($0.baseAddress!, count: actionCount, mask: nil) }
            let y = b.withUnsafeBufferPointer { maskedArgmax($0.baseAddress!, count: actionCount, mask: nil) }
            let z = s.withUnsafeBufferPointer { m.bestAction(state: $0) }
            if x == y { same += 1 }
            if x == z { mixedSame += 1 }
        }
        let d = Double(max(k, 1))
        return QuantizationReport(agreement: k > 0 ? Double(same) / d : 1, maxAbsError: maxErr, states: k,
                                  mixedAgreement: k > 0 ? Double(mixedSame) / d : 1, mixedFP32Share: Double(m.fp32Decisions) / d)
    }
}
