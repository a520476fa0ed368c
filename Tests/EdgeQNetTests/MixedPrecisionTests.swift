import EdgeQCore
import EdgeQSystem
import Foundation
import Testing
@testable import EdgeQNet
import CEdgeQKernels

/// `Precision.mixed`: int8 on clear decisions, fp32 on int8's near-ties.
@Suite struct MixedPrecisionTests {
    /// Held-out states of a random model, drawn like its calibration states.
    func heldOut(_ model: QModel, count: Int, seed: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        return (0..<(count * model.inputCount)).map { k in
            let i = k % model.inputCount
            return model.normalization.mean[i] + model.normalization.std[i] * Float(rng.nextGaussian())
        }
    }

    /// The margin decides who answers: 0 → always int8, +∞ → always fp32, the measured one →
    /// fp32's action wherever int8's margin is too small, int8's where it is large.
    @Test func theMarginDecidesWhoAnswers() throws {
        let (model, _) = try makeModel(states: 1024)
        #expect(model.int8.tieMargin > 0)
        let states = heldOut(model, count: 2000, seed: 9)
        let n = model.inputCount, A = model.actionCount
        var never = model, always = model
        never.int8.tieMargin = 0
        always.int8.tieMargin = .infinity
        let f = model.makeFloatEngine(), q = model.makeInt8Engine(), m = model.makeEngine(.mixed)
        let m0 = never.makeEngine(.mixed), mInf = always.makeEngine(.mixed)
        var asked = 0
        for r in 0..<2000 {
            let s = Array(states[(r * n)..<((r + 1) * n)])
            let pf = s.withUnsafeBufferPointer { f.bestAction(state: $0) }
            let q8 = q.qValues(s)
            let p8 = s.withUnsafeBufferPointer { q.bestAction(state: $0) }
            #expect(s.withUnsafeBufferPointer { m0.bestAction(state: $0) } == p8)
            #expect(s.withUnsafeBufferPointer { mInf.bestAction(state: $0) } == pf)
            let sorted = q8.sorted(by: >)
            let near = sorted[0] - sorted[1] < model.int8.tieMargin
            if near { asked += 1 }
            var out = [Float](repeating: 0, count: A)
            let pm = s.withUnsafeBufferPointer { st in out.withUnsafeMutableBufferPointer { m.bestAction(state: st, mask: nil, qValues: $0) } }
            #expect(pm == (near ? pf : p8), "state \(r)")
            // The Q-values reported are those of whoever answered.
            #expect(out == (near ? f.qValues(s) : q8), "state \(r)")
        }
        #expect(m.fp32Decisions == asked)
        #expect(m0.fp32Decisions == 0)
        #expect(mInf.fp32Decisions == 2000)
        let report = model.quantizationReport(heldOut: states)
        #expect(report.mixedAgreement >= 0.99, "mixed agreement \(report.mixedAgreement)")
        #expect(report.mixedAgreement >= report.agreement)
        #expect(abs(report.mixedFP32Share - Double(asked) / 2000) < 1e-9)
    }

    /// Under a mask the near-tie test looks only at allowed actions.
    @Test func nearTiesAreJudgedAmongAllowedActions() throws {
        let (model, raw) = try makeModel()
        var m = model
        let s = Array(raw.prefix(model.inputCount))
        let q8 = model.makeInt8Engine().qValues(s)
        let order = (0..<model.actionCount).sorted { q8[$0] > q8[$1] }
        // A margin between the gap of the two best and the gap of the best and the third:
        // with all actions a near-tie, without the runner-up a clear decision.
        let gap12 = q8[order[0]] - q8[order[1]], gap13 = q8[order[0]] - q8[order[2]]
        guard gap13 > gap12 else { Issue.record("degenerate Q-values \(q8)"); return }
        m.int8.tieMargin = (gap12 + gap13) / 2
        let e = m.makeEngine(.mixed)
        _ = s.withUnsafeBufferPointer { e.bestAction(state: $0) }
        #expect(e.fp32Decisions == 1)
        var mask = [Bool](repeating: true, count: model.actionCount)
        mask[order[1]] = false
        #expect(s.withUnsafeBufferPointer { e.bestAction(state: $0, mask: mask) } == order[0])
        #expect(e.fp32Decisions == 1)
        mask = [Bool](repeating: false, count: model.actionCount)
        #expect(s.withUnsafeBufferPointer { e.bestAction(state: $0, mask: mask) } == nil)
        mask[order[3]] = true   // one allowed action: no tie possible
        #expect(s.withUnsafeBufferPointer { e.bestAction(state: $0, mask: mask) } == order[3])
        #expect(e.fp32Decisions == 1)
    }

    /// The margin is stored in the file; a file without it (e.g. written by Python) gets it
    /// measured on its reference states; a negative one is refused.
    @Test func theMarginTravelsWithTheModel() throws {
        let dir = try TempDir()
        let (model, _) = try makeModel()
        let url = dir.file("m.safetensors")
        try model.save(to: url)
        #expect(try QModel.load(from: url).int8.tieMargin == model.int8.tieMargin)

        // Renamed (the data ranges must stay contiguous): the layout no longer has it.
        let without = editHeader(model.encoded()) { h in h["other.tensor"] = h["int8.tie_margin"]; h["int8.tie_margin"] = nil }
        try writeBytes(without, to: url, withChecksum: true)
        let measured = try QModel.load(from: url).int8.tieMargin
        let expected = QModel.measureTieMargin(parameters: model.parameters, int8: model.int8, normalization: model.normalization,
                                               states: model.referenceStates)
        #expect(measured == expected)
        #expect(measured > 0)

        var negative = model
        negative.int8.tieMargin = -1
        try writeBytes(negative.encoded(), to: url, withChecksum: true)
        do {
            _ = try QModel.load(from: url)
            Issue.record("a negative tie margin was accepted")
        } catch {
            #expect(error.kind == .shapeMismatch)
            #expect(error.message.contains("tie_margin"))
        }
    }
}

/// `edgeq run --release-startup-pages`: the executable's read-only mappings are handed back
/// to the kernel; the process keeps running the code it needs (this test process runs on).
@Suite struct StartupPagesTests {
    @Test func releasingTheExecutablesCleanPagesKeepsTheProcessWorking() throws {
        let advised = ProcessMemory.releaseStartupPages()
        #if os(Linux)
        #expect(advised > 0, "no read-only mapping of /proc/self/exe was advised")
        #endif
        // Code runs on after its pages were reclaimed (they fault back in).
        let (model, raw) = try makeModel()
        let s = Array(raw.prefix(model.inputCount))
        #expect(s.withUnsafeBufferPointer { model.makeEngine(.mixed).bestAction(state: $0) } != nil)
    }
}
