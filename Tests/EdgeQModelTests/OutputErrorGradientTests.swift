@testable import EdgeQModel
import EdgeQCore
import Testing

/// The free-run error's Jacobian (the sensitivity recursion, with the observer warm-up)
/// against finite differences of the cost, on two coupled outputs.
@Suite struct OutputErrorGradientTests {
    @Test(arguments: [0, 5])
    func jacobianMatchesFiniteDifferences(warmup: Int) throws {
        var rng = SeededGenerator(seed: 11)
        let dims = LinearDims(ny: 2, ne: 1, nu: 2)
        let layout = LinearLayout(LinearStructure(na: 2, nb: 2, delay: 1), dims, warmup: warmup, kappa: 0.3)
        let n = 80
        let segment = LinearNormalisedSegment(count: n, y: (0..<(n * 2)).map { _ in rng.nextGaussian() },
                                        e: (0..<n).map { _ in rng.nextGaussian() },
                                        u: (0..<((n - 1) * 2)).map { _ in Double(rng.next() % 2) })
        let windows = layout.windows([segment], length: 25, stride: 25)
        try #require(windows.count >= 2)
        // θ: (ny, p); small coupled output lags keep the free run stable.
        var theta = (0..<(2 * layout.p)).map { _ in 0.2 * rng.nextGaussian() }
        theta[layout.yIndex(lag: 0, output: 0)] = 0.6
        theta[layout.p + layout.yIndex(lag: 0, output: 1)] = 0.5
        let (jtj, jtr) = try #require(layout.normalEquations(theta, [segment], windows))
        let points = Double(windows.reduce(0) { $0 + $1.length } * dims.ny)
        for m in theta.indices {
            let h = 1e-6
            var plus = theta, minus = theta
            plus[m] += h
            minus[m] -= h
            let numeric = (layout.cost(plus, [segment], windows) - layout.cost(minus, [segment], windows)) / (2 * h)
            let analytic = -2 * jtr[m] / points
            #expect(abs(numeric - analytic) <= 1e-6 * max(1, abs(numeric)), "θ[\(m)]: numeric \(numeric), analytic \(analytic)")
        }
        // JᵀJ is the Gram matrix of the same Jacobian: symmetric, non-negative diagonal.
        let np = theta.count
        for a in 0..<np {
            #expect(jtj[a * np + a] >= 0)
            for b in 0..<a { #expect(jtj[a * np + b] == jtj[b * np + a]) }
        }
    }
}
