import EdgeQCore
import CEdgeQKernels
@testable import EdgeQNet
import EdgeQTestSupport
import Foundation
import Testing

/// A temp folder per test, removed at the end.
final class TempDir {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-net-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
    func file(_ name: String) -> URL { url.appendingPathComponent(name) }
}

/// A small model with random weights and states drawn around its normalisation.
func makeModel(_ arch: Architecture = Architecture(inputCount: 8, hidden: [64, 64], actionCount: 5), seed: UInt64 = 1,
               states: Int = 256) throws -> (QModel, [Float]) {
    let net = try MLP(arch, seed: seed)
    var rng = SeededGenerator(seed: seed &+ 100)
    let mean = randomArray(arch.inputCount, &rng)
    let std = (0..<arch.inputCount).map { _ in Float(0.5 + rng.nextUnit()) }
    let raw = (0..<(states * arch.inputCount)).map { k in mean[k % arch.inputCount] + std[k % arch.inputCount] * Float(rng.nextGaussian()) }
    let names = (0..<arch.actionCount).map { "a\($0)" }
    let model = try QModel(network: net, actionNames: names, normalization: Normalization(mean: mean, std: std),
                           calibrationStates: raw, referenceCount: 16, training: ["seed": String(seed), "updates": "0"])
    return (model, raw)
}

func writeBytes(_ bytes: [UInt8], to url: URL, withChecksum: Bool) throws {
    try Data(bytes).write(to: url)
    if withChecksum {
        try Data((sha256Hex(bytes) + "  " + url.lastPathComponent + "\n").utf8).write(to: QModel.checksumURL(for: url))
    }
}

/// Replaces the JSON header of a safetensors file (keeping the data) with `edit(header)`.
func editHeader(_ bytes: [UInt8], _ edit: (inout [String: Any]) -> Void) -> [UInt8] {
    var n = 0
    for j in 0..<8 { n |= Int(bytes[j]) << (8 * j) }
    var header = (try? JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + n)]))) as? [String: Any] ?? [:]
    edit(&header)
    var json = Array((try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])) ?? Data())
    while json.count % 8 != 0 { json.append(0x20) }
    var out = [UInt8]()
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
    return out + json + Array(bytes[(8 + n)...])
}

@Suite struct ModelFileTests {
    @Test(arguments: [false, true])
    func roundTripKeepsEverything(dueling: Bool) throws {
        let dir = try TempDir()
        let (model, _) = try makeModel(Architecture(inputCount: 6, hidden: [32, 16], actionCount: 4, dueling: dueling))
        let url = dir.file("m.safetensors")
        try model.save(to: url)
        let back = try QModel.load(from: url)
        #expect(back.architecture == model.architecture)
        #expect(back.parameters == model.parameters)
        #expect(back.int8 == model.int8)
        #expect(back.actionNames == model.actionNames)
        #expect(back.normalization == model.normalization)
        #expect(back.referenceActions == model.referenceActions)
        #expect(back.training["seed"] == "1")
        let shaLine = try String(contentsOf: QModel.checksumURL(for: url), encoding: .utf8)
        let sha256sum = try ChildProcess.run("sha256sum", [url.path], timeout: 30)
        #expect(sha256sum.stdout.split(separator: " ").first == shaLine.split(separator: " ").first)
    }

    enum Damage: String, CaseIterable {
        case truncated, shortHeaderLength, hugeHeaderLength, wrongDType, shapeMismatch, missingTensor, flippedByte,
             missingChecksum, referenceFails, newerVersion, overflowingShape, oversizedArchitecture, absurdArchitecture
    }

    /// Each kind of damage is caught with its own clear error.
    @Test(arguments: Damage.allCases)
    func corruptFileIsRejected(damage: Damage) throws {
        let dir = try TempDir()
        let (model, _) = try makeModel()
        let url = dir.file("m.safetensors")
        let good = model.encoded()
        let expected: QNetError.Kind
        switch damage {
        case .truncated:
            try writeBytes(Array(good.prefix(good.count - 100)), to: url, withChecksum: true)
            expected = .truncated
        case .shortHeaderLength:
            var b = good; b[0] = b[0] &- 16
            try writeBytes(b, to: url, withChecksum: true)
            expected = .badHeader
        case .hugeHeaderLength:
            var b = good; b[3] = 0x7f
            try writeBytes(b, to: url, withChecksum: true)
            expected = .badHeader
        case .wrongDType:
            let b = editHeader(good) { h in
                var e = h["fp32.0.bias"] as! [String: Any]; e["dtype"] = "F16"; h["fp32.0.bias"] = e
            }
            try writeBytes(b, to: url, withChecksum: true)
            expected = .wrongDType
        case .shapeMismatch:
            // Same byte count, wrong shape: (64, 8) stored as (8, 64).
            let b = editHeader(good) { h in
                var e = h["fp32.0.weight"] as! [String: Any]; e["shape"] = [8, 64]; h["fp32.0.weight"] = e
            }
            try writeBytes(b, to: url, withChecksum: true)
            expected = .shapeMismatch
        case .missingTensor:
            let b = editHeader(good) { h in
                // Rename: the data ranges stay consistent, the layout misses a tensor.
                h["fp32.9.bias"] = h["fp32.1.bias"]; h["fp32.1.bias"] = nil
            }
            try writeBytes(b, to: url, withChecksum: true)
            expected = .missingTensor
        case .flippedByte:
            try writeBytes(good, to: url, withChecksum: true)
            var b = good; b[b.count - 300] ^= 0x10
            try Data(b).write(to: url)
            expected = .checksumMismatch
        case .missingChecksum:
            try writeBytes(good, to: url, withChecksum: false)
            expected = .checksumMissing
        case .referenceFails:
            var wrong = model
            wrong.referenceActions = wrong.referenceActions.map { ($0 + 1) % 5 }
            try writeBytes(wrong.encoded(), to: url, withChecksum: true)
            expected = .referenceFailed
        case .newerVersion:
            let b = editHeader(good) { h in
                var m = h["__metadata__"] as! [String: String]; m["format_version"] = "99"; h["__metadata__"] = m
            }
            try writeBytes(b, to: url, withChecksum: true)
            expected = .unsupportedVersion
        case .overflowingShape:
            // A shape whose byte count overflows Int (found by ModelFuzzTests: it used to trap).
            let b = editHeader(good) { h in
                var e = h["fp32.0.weight"] as! [String: Any]; e["shape"] = [Int.max / 3, 8]; h["fp32.0.weight"] = e
            }
            try writeBytes(b, to: url, withChecksum: true)
            expected = .shapeMismatch
        case .oversizedArchitecture, .absurdArchitecture:
            // Widths the file cannot hold (rejected before allocating for them), and widths
            // whose parameter count would overflow (found by ModelFuzzTests: it used to trap).
            let hidden = damage == .oversizedArchitecture ? "[100000,100000]" : "[4611686018427387904,4]"
            let b = editHeader(good) { h in
                var m = h["__metadata__"] as! [String: String]
                m["architecture"] = "{\"actions\":5,\"dueling\":false,\"hidden\":\(hidden),\"inputs\":8}"
                h["__metadata__"] = m
            }
            try writeBytes(b, to: url, withChecksum: true)
            expected = damage == .oversizedArchitecture ? .shapeMismatch : .badHeader
        }
        do {
            _ = try QModel.load(from: url)
            Issue.record("\(damage) was accepted")
        } catch {
            #expect(error.kind == expected, "\(damage): \(error)")
            #expect(error.message.count > 20)
        }
    }

    /// A 16-bit head is written as format version 2 and read back exactly; a model without
    /// one stays version 1; a 16-bit weight beyond the limit that keeps int32 sums exact
    /// (wide heads: 600 inputs allow ±28,182) is rejected.
    @Test func sixteenBitHeadRoundTripsAndIsBounded() throws {
        let dir = try TempDir()
        let (model, raw) = try makeModel(Architecture(inputCount: 4, hidden: [600], actionCount: 3), states: 64)
        #expect(model.int8.layers.map(\.bits) == [8, 16])
        let limit = Int8Layer.weightLimit(bits: 16, inputs: 600)
        #expect(limit == 28_182)  // (2^31 − 1) / (600 · 127)
        #expect(model.int8.layers[1].weights.map { abs(Int($0)) }.max() == limit)
        let url = dir.file("m.safetensors")
        try model.save(to: url)
        let back = try QModel.load(from: url)
        #expect(back.int8 == model.int8)
        let s = Array(raw.prefix(4))
        #expect(back.makeInt8Engine().qValues(s) == model.makeInt8Engine().qValues(s))
        let header = editHeader(model.encoded()) { _ in }
        #expect(String(decoding: header, as: UTF8.self).contains(#""format_version":"2""#))

        var old = model
        old.int8.layers[1].bits = 8
        old.int8.layers[1].weights = old.int8.layers[1].weights.map { Int16(max(-127, min(127, Int($0) / 256))) }
        #expect(String(decoding: old.encoded(), as: UTF8.self).contains(#""format_version":"1""#))

        var over = model
        over.int8.layers[1].weights[0] = Int16(limit + 1)
        do {
            _ = try QModel.decode(over.encoded())
            Issue.record("a 16-bit weight beyond ±\(limit) was accepted")
        } catch {
            #expect(error.kind == .shapeMismatch)
            #expect(error.message.contains("\(limit)"))
        }
    }

    @Test func int8KernelMatchesNaiveLoop() {
        var rng = SeededGenerator(seed: 4)
        let I = 48, O = 19
        // 8-bit weights and, for the head, 16-bit ones at the largest limit.
        var w = (0..<(I * O)).map { _ in Int16(Int(rng.next() % 255) - 127) }
        w += (0..<(I * O)).map { _ in Int16(Int(rng.next() % 65_535) - 32_767) }
        let x = (0..<I).map { _ in Int8(truncatingIfNeeded: Int(rng.next() % 255) - 127) }
        let c = randomArray(O, &rng, scale: 0.01), b = randomArray(O, &rng)
        var y1 = [Float](repeating: 0, count: O), y2 = y1
        for half in 0..<2 {
            let wh = Array(w[(half * I * O)..<((half + 1) * I * O)])
            edgeq_int8_matvec(&y1, wh, x, c, b, Int32(I), Int32(O), 1)
            int8_matvec_naive(&y2, wh, x.map(Int32.init), c, b, inputs: I, outputs: O, relu: true)
            #expect(y1 == y2)
        }
        // The input quantizer rounds half to even and clamps, like numpy's rint + clip.
        let v: [Float] = [0.5, 1.5, 2.5, -0.5, -2.5, 300, -300, 0.49]
        var q = [Int8](repeating: 0, count: v.count)
        edgeq_quantize_input(&q, v, [Float](repeating: 1, count: v.count), Int32(v.count))
        #expect(q == [0, 2, 2, 0, -2, 127, -127, 0])
    }

    /// Each int8 layer stays within the rounding bound of its fp32 twin on calibration-range inputs.
    @Test func int8LayerWithinQuantizationBound() throws {
        let (model, raw) = try makeModel()
        let net = try model.makeNetwork()
        let x = Array(model.normalization.apply(raw).prefix(model.inputCount))
        let q = model.int8.layers[0]
        let s = model.architecture.slices[0]
        var y32 = [Float](repeating: 0, count: s.outputs)
        let p = net.parameters.baseAddress!
        linear_forward_naive(&y32, x, p + s.weight, p + s.bias, batch: 1, inputs: s.inputs, outputs: s.outputs)
        let xq = x.indices.map { Int32(quantize8(x[$0] * (1 / q.inputScales[$0]))) }
        var y8 = [Float](repeating: 0, count: s.outputs)
        int8_matvec_naive(&y8, q.weights, xq, q.weightScales, q.bias, inputs: s.inputs, outputs: s.outputs, relu: false)
        let bound = model.int8.roundingBound(layer: 0, input: x, fp32Weights: p + s.weight)
        for o in 0..<s.outputs { #expect(abs(y8[o] - y32[o]) <= bound[o] * 1.001 + 1e-5, "output \(o)") }
    }

    /// The fp32 C kernel (axpy layout, zero inputs skipped) against cblas_sgemv per layer:
    /// the same sums in another order, so equal to float rounding.
    @Test(arguments: [false, true])
    func fp32KernelMatchesBLAS(dueling: Bool) throws {
        let (model, raw) = try makeModel(Architecture(inputCount: 8, hidden: [64, 200], actionCount: 9, dueling: dueling))
        let engine = model.makeFloatEngine()
        for r in 0..<100 {
            let s = Array(raw[(r * 8)..<(r * 8 + 8)])
            let got = engine.qValues(s), want = engine.runFloatBLAS(s, model: model)
            for (a, b) in zip(got, want) { #expect(abs(a - b) <= 1e-5 * max(1, abs(b)), "state \(r): \(got) vs \(want)") }
        }
    }

    @Test(arguments: [false, true])
    func fusedKernelMatchesLayeredKernels(dueling: Bool) throws {
        let (model, raw) = try makeModel(Architecture(inputCount: 8, hidden: [64, 48], actionCount: 5, dueling: dueling))
        let engine = model.makeInt8Engine()
        for r in 0..<100 {
            let s = Array(raw[(r * 8)..<(r * 8 + 8)])
            #expect(engine.qValues(s) == engine.runInt8Layered(s))
        }
    }

    /// The AVX2 kernel's int8 quads (signed for the first layer, as they are for the hidden
    /// ones) and int16 pairs give the layered kernel's exact sums on widths that exercise the
    /// 64-output blocks, the rest and inputs that are not a multiple of four; and at the
    /// extremes -- every activation at ±127, every weight at ±127 (or −128, which sends a
    /// first layer to the pairs; the 16-bit head at ±its limit) -- where vpmaddubsw would
    /// saturate, or an int32 sum overflow, if they could.
    @Test func int8QuadsAndPairsAreExactAtTheExtremes() throws {
        let (model, raw) = try makeModel(Architecture(inputCount: 7, hidden: [131, 77], actionCount: 9))
        let engine = model.makeInt8Engine()
        #expect(engine.avx2Layouts == ["signed quads", "quads", "pairs"])  // the head is 16-bit
        for r in 0..<100 {
            let s = Array(raw[(r * 7)..<(r * 7 + 7)])
            #expect(engine.qValues(s) == engine.runInt8Layered(s), "state \(r)")
        }
        for withMinus128 in [false, true] {
            var extreme = model
            for l in extreme.int8.layers.indices {
                let layer = extreme.int8.layers[l]
                // The model's sign pattern at the limits; tiny input steps, so every nonzero
                // activation quantizes to ±127.
                let limit = Int16(Int8Layer.weightLimit(bits: layer.bits, inputs: layer.inputs))
                extreme.int8.layers[l].weights = layer.weights.enumerated().map { k, w in
                    w < 0 ? (withMinus128 && layer.bits == 8 && k % 3 == 0 ? -128 : -limit) : limit
                }
                extreme.int8.layers[l].inputScales = layer.inputScales.map { _ in 1e-6 }
                extreme.int8.layers[l].weightScales = layer.weightScales.map { _ in 1e-6 }
                extreme.int8.layers[l].bias = layer.bias.map { _ in 0 }
            }
            let hot = extreme.makeInt8Engine()
            #expect(hot.avx2Layouts == [withMinus128 ? "pairs" : "signed quads", "quads", "pairs"])
            var saturated = 0
            for r in 0..<50 {
                let s = Array(raw[(r * 7)..<(r * 7 + 7)])
                let got = hot.qValues(s), want = hot.runInt8Layered(s)
                #expect(got == want, "state \(r): \(got) vs \(want)")
                saturated += got.contains { abs($0) > 0.01 } ? 1 : 0
            }
            #expect(saturated > 40)  // the extremes were reached, not skipped as zeros
        }
    }

    /// The portable C kernels give bit-identical Q-values to the AVX2 ones (run serialized
    /// with the other kernel users of this process: it flips a process-wide switch).
    @Test func portableKernelsMatchTheDispatchedOnes() throws {
        let (model, raw) = try makeModel(Architecture(inputCount: 8, hidden: [64, 33], actionCount: 5))
        let engine = model.makeInt8Engine(), fp32 = model.makeFloatEngine()
        let states = (0..<64).map { r in Array(raw[(r * 8)..<(r * 8 + 8)]) }
        let fast = states.map { engine.qValues($0) }
        let fastF = states.map { fp32.qValues($0) }
        let net = try model.makeNetwork()
        var g1: [Float] = Array(repeating: 0.5, count: net.parameters.count), p1 = net.parameterArray
        var adam1 = Adam(parameterCount: g1.count)
        p1.withUnsafeMutableBufferPointer { p in g1.withUnsafeBufferPointer { adam1.update(p, $0) } }
        edgeq_kernels_force_portable(1)
        defer { edgeq_kernels_force_portable(0) }
        let slow = states.map { engine.qValues($0) }
        let slowF = states.map { fp32.qValues($0) }
        var p2 = net.parameterArray
        var adam2 = Adam(parameterCount: g1.count)
        p2.withUnsafeMutableBufferPointer { p in g1.withUnsafeBufferPointer { adam2.update(p, $0) } }
        #expect(fast == slow)
        #expect(fastF == slowF)
        for (a, b) in zip(p1, p2) { #expect(abs(a - b) <= 1e-6 * max(1, abs(a))) }
        g1[0] = 2
        #expect(abs(g1.withUnsafeMutableBufferPointer { clipGlobalNorm($0, maxNorm: 1e9) } - Float((Double(g1.count - 1) * 0.25 + 4).squareRoot())) < 1e-2)
    }

    @Test func enginesAllocateNothingAndRespectMasks() throws {
        let (model, raw) = try makeModel()
        let engine = model.makeInt8Engine()
        let state = Array(raw.prefix(8))
        var out = [Float](repeating: 0, count: 5)
        let best = state.withUnsafeBufferPointer { s in out.withUnsafeMutableBufferPointer { engine.bestAction(state: s, mask: nil, qValues: $0) } }
        let order = (0..<5).sorted { out[$0] > out[$1] }
        #expect(best == order[0])
        var mask = [Bool](repeating: true, count: 5); mask[order[0]] = false
        #expect(state.withUnsafeBufferPointer { engine.bestAction(state: $0, mask: mask) } == order[1])
        #expect(state.withUnsafeBufferPointer { engine.bestAction(state: $0, mask: [Bool](repeating: false, count: 5)) } == nil)
    }

    @Test func randomNetworkQuantizesWithHighAgreement() throws {
        let (model, raw) = try makeModel(states: 2048)
        let heldOut = Array(raw.suffix(1024 * 8))
        let report = model.quantizationReport(heldOut: heldOut)
        #expect(report.states == 1024)
        #expect(report.agreement >= 0.95)
    }
}

/// numpy + safetensors read EdgeQ's files and write files EdgeQ reads (docs/model-format.md).
@Suite struct PythonCrossCheckTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("python/crosscheck.py").path

    @Test(arguments: [false, true])
    func numpyReproducesEdgeQQValues(dueling: Bool) throws {
        let dir = try TempDir()
        let (model, raw) = try makeModel(Architecture(inputCount: 8, hidden: [64, 64], actionCount: 5, dueling: dueling))
        let url = dir.file("m.safetensors")
        try model.save(to: url)
        let states = Array(raw.prefix(40 * 8))
        let statesURL = dir.file("states.json")
        let rows = (0..<40).map { r in Array(states[(r * 8)..<((r + 1) * 8)]).map(Double.init) }
        try JSONSerialization.data(withJSONObject: rows).write(to: statesURL)
        let r = try ChildProcess.run("python3", [Self.script, "read", url.path, statesURL.path], timeout: 60)
        #expect(r.code == 0, "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: [[Double]]]
        let fp = try #require(obj?["fp32"]), q8 = try #require(obj?["int8"])
        let f = model.makeFloatEngine(), e = model.makeInt8Engine()
        for k in 0..<40 {
            let a = f.qValues(rows[k].map(Float.init)), b = e.qValues(rows[k].map(Float.init))
            for j in 0..<5 {
                #expect(abs(Double(a[j]) - fp[k][j]) <= 1e-5 * max(1, abs(fp[k][j])), "fp32 state \(k) action \(j)")
                // Compared as Float: Foundation's JSON parser may be off in the last bit of a Double.
                #expect(b[j] == Float(q8[k][j]), "int8 state \(k) action \(j)")
            }
        }
    }

    @Test func modelWrittenByPythonLoadsAndAgrees() throws {
        let dir = try TempDir()
        let url = dir.file("py.safetensors")
        let r = try ChildProcess.run("python3", [Self.script, "write", url.path, "7"], timeout: 60)
        #expect(r.code == 0, "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let states = try #require(obj?["states"] as? [[Double]]), actions = try #require(obj?["actions"] as? [Int])
        let model = try QModel.load(from: url)
        #expect(model.actionNames == ["low", "mid", "high"])
        #expect(model.architecture == Architecture(inputCount: 6, hidden: [32, 32], actionCount: 3))
        let f = model.makeFloatEngine()
        for (s, a) in zip(states, actions) {
            #expect(s.map(Float.init).withUnsafeBufferPointer { f.bestAction(state: $0) } == a)
        }
        // Quantized on load (the file has no int8 tensors): it must mostly agree too.
        let flat = states.flatMap { $0.map(Float.init) }
        #expect(model.quantizationReport(heldOut: flat).agreement >= 0.9)
    }
}

/// The training support box (`support.min`, `support.max`) travels with the model file.
@Suite struct ModelSupportTests {
    @Test func theSupportRoundTripsAndAModelWithoutOneLoadsWithout() throws {
        let dir = try TempDir()
        let made = try makeModel(Architecture(inputCount: 3, hidden: [8], actionCount: 2))
        var model = made.0
        let states = made.1
        let file = dir.file("m.safetensors")
        try model.save(to: file)
        #expect(try QModel.load(from: file).support == nil)
        let box = try #require(StateSupport.fit(states, inputCount: 3))
        model.support = box
        try model.save(to: file)
        let back = try QModel.load(from: file)
        #expect(back.support == box)
        #expect(back.makeInt8Engine().support == box)
        // Every fitted state is inside; one beyond the widened box is named by its input.
        let inside = Array(states.prefix(3))
        #expect(inside.withUnsafeBufferPointer { box.firstOutside($0, margin: 0) } == nil)
        let span = box.max[2] - box.min[2]
        let beyond: [Float] = [box.min[0], box.max[1], box.max[2] + 0.6 * span]
        #expect(beyond.withUnsafeBufferPointer { box.firstOutside($0, margin: 0.5) } == 2)
        #expect(beyond.withUnsafeBufferPointer { box.firstOutside($0, margin: 0.7) } == nil)
        let nan: [Float] = [.nan, 0, 0]
        #expect(nan.withUnsafeBufferPointer { box.firstOutside($0, margin: 10) } == 0)
    }

    /// Two boxes merge into the smallest box holding both; nil or another width leaves the box.
    @Test func boxesMergeInputByInput() {
        let a = StateSupport(min: [0, -1, 5], max: [1, 1, 5])
        let b = StateSupport(min: [0.5, -3, 2], max: [4, 0, 2])
        #expect(a.merged(with: b) == StateSupport(min: [0, -3, 2], max: [4, 1, 5]))
        #expect(a.merged(with: b) == b.merged(with: a))
        #expect(a.merged(with: nil) == a)
        #expect(a.merged(with: StateSupport(min: [-9], max: [9])) == a)
    }

    @Test func aDamagedSupportIsRefused() throws {
        let dir = try TempDir()
        var (model, _) = try makeModel(Architecture(inputCount: 2, hidden: [8], actionCount: 2))
        model.support = StateSupport(min: [1, 0], max: [0, 1])   // min > max
        let file = dir.file("m.safetensors")
        try model.save(to: file)
        #expect(throws: QNetError.self) { try QModel.load(from: file) }
    }
}
