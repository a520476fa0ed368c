import EdgeQCore
@testable import EdgeQNet
import Testing

func randomArray(_ n: Int, _ rng: inout SeededGenerator, scale: Float = 1) -> [Float] {
    (0..<n).map { _ in Float(rng.nextGaussian()) * scale }
}

/// BLAS paths against the naive loops, and every backward pass against finite differences.
@Suite struct MLPTests {
    @Test(arguments: [(1, 8, 64), (64, 4, 64), (7, 64, 5), (33, 17, 9)])
    func linearLayerBLASMatchesNaiveLoop(shape: (Int, Int, Int)) {
        let (B, I, O) = shape
        var rng = SeededGenerator(seed: UInt64(B * 1000 + I * 10 + O))
        let x = randomArray(B * I, &rng), w = randomArray(O * I, &rng), b = randomArray(O, &rng), dy = randomArray(B * O, &rng)
        var y1 = [Float](repeating: 0, count: B * O), y2 = y1
        var dw1 = [Float](repeating: 0.5, count: O * I), dw2 = dw1, db1 = [Float](repeating: 0.25, count: O), db2 = db1
        var dx1 = [Float](repeating: 0, count: B * I), dx2 = dx1
        linear_forward(&y1, x, w, b, batch: B, inputs: I, outputs: O)
        linear_forward_naive(&y2, x, w, b, batch: B, inputs: I, outputs: O)
        linear_backward(&dx1, &dw1, &db1, dy, x, w, batch: B, inputs: I, outputs: O)
        linear_backward_naive(&dx2, &dw2, &db2, dy, x, w, batch: B, inputs: I, outputs: O)
        for (p, q) in zip(y1, y2) { #expect(abs(p - q) <= 1e-4 * max(1, abs(q))) }
        for (p, q) in zip(dw1, dw2) { #expect(abs(p - q) <= 1e-4 * max(1, abs(q))) }
        for (p, q) in zip(db1, db2) { #expect(abs(p - q) <= 1e-4 * max(1, abs(q))) }
        for (p, q) in zip(dx1, dx2) { #expect(abs(p - q) <= 1e-4 * max(1, abs(q))) }
    }

    @Test(arguments: [false, true])
    func wholeNetworkBLASMatchesNaive(dueling: Bool) throws {
        let arch = Architecture(inputCount: 5, hidden: [16, 8], actionCount: 3, dueling: dueling)
        let a = try MLP(arch, seed: 3), b = try MLP(arch, seed: 3)
        b.useNaiveLoops = true
        var rng = SeededGenerator(seed: 9)
        let x = randomArray(10 * 5, &rng), dq = randomArray(10 * 3, &rng)
        let qa = a.forward(x, batch: 10), qb = b.forward(x, batch: 10)
        for (p, q) in zip(qa, qb) { #expect(abs(p - q) < 1e-5) }
        a.zeroGradients(); b.zeroGradients()
        dq.withUnsafeBufferPointer { a.backward($0.baseAddress!); b.backward($0.baseAddress!) }
        for k in 0..<arch.parameterCount { #expect(abs(a.gradients[k] - b.gradients[k]) < 1e-4) }
    }

    /// dL/dθ for L = Σ c ⊙ Q against central differences (float64 accumulation of the loss).
    @Test(arguments: [false, true])
    func backwardMatchesFiniteDifferences(dueling: Bool) throws {
        let arch = Architecture(inputCount: 4, hidden: [12, 10], actionCount: 3, dueling: dueling)
        let net = try MLP(arch, seed: 21)
        var rng = SeededGenerator(seed: 5)
        let B = 6
        let x = randomArray(B * 4, &rng), c = randomArray(B * 3, &rng)
        func loss() -> Double {
            let q = net.forward(x, batch: B)
            return zip(q, c).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        _ = net.forward(x, batch: B)
        net.zeroGradients()
        c.withUnsafeBufferPointer { net.backward($0.baseAddress!) }
        let analytic = Array(net.gradients)
        let eps: Float = 1e-3
        var checked = 0
        for k in 0..<arch.parameterCount {
            let old = net.parameters[k]
            net.parameters[k] = old + eps
            let up = loss()
            net.parameters[k] = old - eps
            let down = loss()
            net.parameters[k] = old
            let numeric = (up - down) / Double(2 * eps)
            // Q is piecewise linear in each parameter: a second difference above float noise
            // means a ReLU kink inside ±eps, where the difference is meaningless (skipped).
            let kink = abs(up + down - 2 * loss()) > 2e-5
            if kink { continue }
            checked += 1
            #expect(abs(numeric - Double(analytic[k])) <= 2e-3 + 2e-3 * abs(numeric), "parameter \(k)")
        }
        #expect(checked > arch.parameterCount * 9 / 10)
    }

    @Test func huberGradientMatchesFiniteDifferences() {
        for e: Float in [-3, -1.2, -0.4, 0.1, 0.9, 2.5] {
            let h: Float = 1e-3
            let numeric = (huber(e + h, delta: 1).loss - huber(e - h, delta: 1).loss) / (2 * h)
            #expect(abs(numeric - huber(e, delta: 1).gradient) < 1e-2)
        }
        #expect(huber(0.5).loss == 0.125)
        #expect(huber(3).loss == 2.5)
    }

    @Test func clippingScalesToTheGlobalNorm() {
        var g: [Float] = [3, 4, 0, 0]
        let norm = g.withUnsafeMutableBufferPointer { clipGlobalNorm($0, maxNorm: 1) }
        #expect(norm == 5)
        #expect(abs(g[0] - 0.6) < 1e-6 && abs(g[1] - 0.8) < 1e-6)
        var small: [Float] = [0.1, 0.2]
        _ = small.withUnsafeMutableBufferPointer { clipGlobalNorm($0, maxNorm: 1) }
        #expect(small == [0.1, 0.2])
    }

    /// Two Adam steps on two parameters, worked by hand:
    /// step 1, g = (0.5, −2): m = (0.05, −0.2), v = (0.00025, 0.004), m̂ = g, v̂ = g², so the
    /// step is lr · g/|g| = ±0.1 (ε negligible): p = (1 − 0.1, 2 + 0.1) = (0.9, 2.1).
    /// step 2, g = (0.5, 1): m = (0.095, −0.08), v = (0.00049975, 0.004995);
    /// m̂ = m / 0.19, v̂ = v / 0.001999 → p0 −= 0.1 · 0.5 / 0.5 = 0.1 → 0.8;
    /// p1: m̂ = −0.421053, √v̂ = 1.580748 → p1 += 0.1 · 0.266364 → 2.126636.
    @Test func adamStepMatchesHandComputation() {
        var adam = Adam(parameterCount: 2, learningRate: 0.1)
        var p: [Float] = [1, 2]
        p.withUnsafeMutableBufferPointer { pb in
            let g1: [Float] = [0.5, -2]
            g1.withUnsafeBufferPointer { adam.update(pb, $0) }
        }
        #expect(abs(p[0] - 0.9) < 1e-6 && abs(p[1] - 2.1) < 1e-6)
        p.withUnsafeMutableBufferPointer { pb in
            let g2: [Float] = [0.5, 1]
            g2.withUnsafeBufferPointer { adam.update(pb, $0) }
        }
        #expect(abs(p[0] - 0.8) < 1e-5)
        #expect(abs(p[1] - 2.126636) < 1e-5)
    }

    @Test func sameSeedSameNetwork() throws {
        let arch = Architecture(inputCount: 8, actionCount: 5)
        #expect(try MLP(arch, seed: 7).parameterArray == MLP(arch, seed: 7).parameterArray)
        #expect(try MLP(arch, seed: 7).parameterArray != MLP(arch, seed: 8).parameterArray)
    }

    @Test func maskedArgmaxRespectsTheMask() {
        let q: [Float] = [1, 5, 3]
        #expect(q.withUnsafeBufferPointer { maskedArgmax($0.baseAddress!, count: 3, mask: nil) } == 1)
        #expect(q.withUnsafeBufferPointer { maskedArgmax($0.baseAddress!, count: 3, mask: [true, false, true]) } == 2)
        #expect(q.withUnsafeBufferPointer { maskedArgmax($0.baseAddress!, count: 3, mask: [false, false, false]) } == nil)
        // A mask shorter than the action count: the missing actions are not allowed.
        #expect(q.withUnsafeBufferPointer { maskedArgmax($0.baseAddress!, count: 3, mask: [true]) } == 0)
    }

    @Test func sha256MatchesKnownDigests() {
        #expect(sha256Hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(sha256Hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array(String(repeating: "a", count: 1000).utf8)
        #expect(sha256Hex(long) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }
}
