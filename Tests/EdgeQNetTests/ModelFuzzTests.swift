import EdgeQCore
@testable import EdgeQNet
import EdgeQTestSupport
import Foundation
import Testing

/// Mutated model files -- random bytes anywhere, and edits of the header's JSON that keep it
/// valid JSON (shapes, offsets, dtypes, the architecture, the metadata) -- never crash the
/// decoder, the reference check or the engines built from what decodes: each is either a
/// model that runs or a `QNetError` with a message. Seeded, about a second; set FUZZ_N (e.g.
/// 30000) for a longer hunt.
@Suite struct ModelFuzzTests {
    /// One or two edits of the header: a tensor's dtype, shape, offsets or name, or a metadata
    /// value (the architecture's fields included).
    static func headerEdit(_ h: inout [String: Any], _ g: inout SeededGenerator) {
        let keys = h.keys.sorted()
        guard !keys.isEmpty else { return }
        let key = keys[Int(g.next() % UInt64(keys.count))]
        let odd: [Any] = [0, -1, 1, 2, 3, 7, 64, 65, 1 << 20, Int(Int32.max), Int64.max, 1.5, "x", NSNull(), [Any](), [0, 0]]
        func pick() -> Any { odd[Int(g.next() % UInt64(odd.count))] }
        if key == "__metadata__", var meta = h[key] as? [String: String] {
            let mk = meta.keys.sorted()
            guard !mk.isEmpty else { return }
            let k = mk[Int(g.next() % UInt64(mk.count))]
            if k == "architecture", let data = meta[k]?.data(using: .utf8),
               var arch = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any], !arch.isEmpty {
                let ak = arch.keys.sorted()[Int(g.next() % UInt64(arch.count))]
                arch[ak] = g.next() % 3 == 0 ? [pick(), pick()] : pick()
                if let out = try? JSONSerialization.data(withJSONObject: arch, options: [.sortedKeys]) {
                    meta[k] = String(decoding: out, as: UTF8.self)
                }
            } else {
                meta[k] = ["", "0", "-1", "2", "99999999999999999999", "1e9", "nan", "[", "{}"][Int(g.next() % 9)]
            }
            h[key] = meta
            return
        }
        guard var entry = h[key] as? [String: Any] else { return }
        switch g.next() % 5 {
        case 0:
            entry["dtype"] = ["F32", "I8", "F16", "I32", "U8", "", "BOOL"][Int(g.next() % 7)]
        case 1:
            if var shape = entry["shape"] as? [Int], !shape.isEmpty {
                shape[Int(g.next() % UInt64(shape.count))] = [0, 1, -1, 3, 1 << 30, Int.max / 3][Int(g.next() % 6)]
                entry["shape"] = shape
            } else { entry["shape"] = pick() }
        case 2:
            if var off = entry["data_offsets"] as? [Int], off.count == 2 {
                let j = Int(g.next() % 2)
                off[j] = [0, -8, off[j] &+ 4, off[j] &- 4, off[1 - j], Int(Int32.max), Int.max][Int(g.next() % 7)]
                entry["data_offsets"] = off
            } else { entry["data_offsets"] = pick() }
        case 3:
            entry[["shape", "dtype", "data_offsets"][Int(g.next() % 3)]] = pick()
        default:
            h[key] = nil
            h[key + "x"] = entry
            return
        }
        h[key] = entry
    }

    /// Decode, check the reference, and when it decodes, run every engine on odd states.
    static func exercise(_ bytes: [UInt8]) -> Bool {
        do {
            let model = try QModel.decode(bytes)
            _ = try? model.checkReference()
            let n = model.architecture.inputCount
            let states: [[Float]] = [Array(repeating: 0, count: n), Array(repeating: 1e30, count: n),
                                     Array(repeating: -.infinity, count: n), Array(repeating: .nan, count: n)]
            for engine in [model.makeInt8Engine(), model.makeFloatEngine(), model.makeEngine(.mixed)] {
                for s in states { _ = engine.qValues(s) }
            }
            return true
        } catch {
            #expect(!error.message.isEmpty)
            return false
        }
    }

    @Test(arguments: [false, true])
    func mutatedModelFilesNeverCrash(dueling: Bool) throws {
        let (model, _) = try makeModel(Architecture(inputCount: 5, hidden: [12, 9], actionCount: 3, dueling: dueling), states: 64)
        let good = model.encoded()
        var g = SeededGenerator(seed: dueling ? 31 : 17)
        var decoded = 0, rejected = 0
        for i in 0..<(Int(ProcessInfo.processInfo.environment["FUZZ_N"] ?? "") ?? 600) {
            var b: [UInt8]
            if i % 3 == 0 {
                b = good
                for _ in 0..<(1 + Int(g.next() % 4)) {
                    let pos = Int(g.next() % UInt64(b.count))
                    b[pos] = UInt8(truncatingIfNeeded: g.next())
                }
                if g.next() % 4 == 0 { b = Array(b.prefix(Int(g.next() % UInt64(b.count)))) }
            } else {
                b = editHeader(good) { h in
                    for _ in 0..<(1 + Int(g.next() % 2)) { Self.headerEdit(&h, &g) }
                }
            }
            if Self.exercise(b) { decoded += 1 } else { rejected += 1 }
        }
        #expect(rejected > 300, "decoded \(decoded), rejected \(rejected)")
        #expect(decoded > 0)
    }
}
