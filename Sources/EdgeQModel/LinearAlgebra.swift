/// Small dense linear algebra for the identification (row-major `[Double]`, n ≤ a few dozen):
/// a Cholesky solve for the normal equations and a polynomial root finder for the poles.
package enum SmallLinearAlgebra {
    /// Solves `m·x = b` for a symmetric positive definite `m` (n×n, row-major) by Cholesky.
    /// Returns nil when `m` is not positive definite (a pivot ≤ 0 or not finite).
    package static func choleskySolve(_ m: [Double], _ b: [Double], n: Int) -> [Double]? {
        var l = [Double](repeating: 0, count: n * n)   // l is (n, n), lower triangular
        for i in 0..<n {
            for j in 0...i {
                var s = m[i * n + j]
                for k in 0..<j { s -= l[i * n + k] * l[j * n + k] }
                if i == j {
                    guard s > 0, s.isFinite else { return nil }
                    l[i * n + i] = s.squareRoot()
                } else {
                    l[i * n + j] = s / l[j * n + j]
                }
            }
        }
        var y = [Double](repeating: 0, count: n)
        for i in 0..<n {
            var s = b[i]
            for k in 0..<i { s -= l[i * n + k] * y[k] }
            y[i] = s / l[i * n + i]
        }
        var x = [Double](repeating: 0, count: n)
        for i in stride(from: n - 1, through: 0, by: -1) {
            var s = y[i]
            for k in (i + 1)..<n { s -= l[k * n + i] * x[k] }
            x[i] = s / l[i * n + i]
        }
        return x.allSatisfy(\.isFinite) ? x : nil
    }

    /// Solves `m·x = b` for a general square `m` (n×n, row-major) by Gaussian elimination with
    /// partial pivoting. Returns nil when `m` is singular.
    static func solve(_ m: [Double], _ b: [Double], n: Int) -> [Double]? {
        var a = m
        var x = b
        for c in 0..<n {
            var p = c
            for r in (c + 1)..<max(c + 1, n) where abs(a[r * n + c]) > abs(a[p * n + c]) { p = r }
            guard abs(a[p * n + c]) > 1e-300 else { return nil }
            if p != c {
                for k in 0..<n { a.swapAt(c * n + k, p * n + k) }
                x.swapAt(c, p)
            }
            for r in (c + 1)..<max(c + 1, n) {
                let f = a[r * n + c] / a[c * n + c]
                if f == 0 { continue }
                for k in c..<n { a[r * n + k] -= f * a[c * n + k] }
                x[r] -= f * x[c]
            }
        }
        for i in stride(from: n - 1, through: 0, by: -1) {
            var s = x[i]
            for k in (i + 1)..<n { s -= a[i * n + k] * x[k] }
            x[i] = s / a[i * n + i]
        }
        return x.allSatisfy(\.isFinite) ? x : nil
    }

    /// The roots of the monic polynomial zⁿ + c[0]·zⁿ⁻¹ + … + c[n−1] (Durand–Kerner), as
    /// (real, imaginary) pairs, sorted by decreasing modulus.
    static func roots(monic c: [Double]) -> [(Double, Double)] {
        let n = c.count
        guard n > 0 else { return [] }
        if n == 1 { return [(-c[0], 0)] }
        if n == 2 {
            // z² + c0·z + c1: closed form (the common case, exact).
            let disc = c[0] * c[0] - 4 * c[1]
            if disc >= 0 {
                let r = disc.squareRoot()
                // The numerically stable pair: q = −(c0 + sign(c0)·r)/2, roots q and c1/q.
                let q = -(c[0] + (c[0] >= 0 ? r : -r)) / 2
                let r1 = q
                let r2 = q != 0 ? c[1] / q : 0
                return [(r1, 0), (r2, 0)].sorted { abs($0.0) > abs($1.0) }
            }
            let im = (-disc).squareRoot() / 2
            return [(-c[0] / 2, im), (-c[0] / 2, -im)]
        }
        // Durand–Kerner from the usual non-real starting points.
        var re = [Double](repeating: 0, count: n)
        var im = [Double](repeating: 0, count: n)
        for i in 0..<n {
            // (0.4 + 0.9i)^i
            var pr = 1.0, pi = 0.0
            for _ in 0..<i { (pr, pi) = (pr * 0.4 - pi * 0.9, pr * 0.9 + pi * 0.4) }
            re[i] = pr
            im[i] = pi
        }
        for _ in 0..<500 {
            var moved = 0.0
            for i in 0..<n {
                // p(z) by Horner.
                var vr = 1.0, vi = 0.0
                for k in 0..<n { (vr, vi) = (vr * re[i] - vi * im[i] + c[k], vr * im[i] + vi * re[i]) }
                var dr = 1.0, di = 0.0
                for j in 0..<n where j != i {
                    let (ar, ai) = (re[i] - re[j], im[i] - im[j])
                    (dr, di) = (dr * ar - di * ai, dr * ai + di * ar)
                }
                let den = dr * dr + di * di
                guard den > 0 else { continue }
                let qr = (vr * dr + vi * di) / den
                let qi = (vi * dr - vr * di) / den
                re[i] -= qr
                im[i] -= qi
                moved = max(moved, abs(qr) + abs(qi))
            }
            if moved < 1e-14 { break }
        }
        return zip(re, im).map { ($0, abs($1) < 1e-10 ? 0 : $1) }
            .sorted { ($0.0 * $0.0 + $0.1 * $0.1) > ($1.0 * $1.0 + $1.1 * $1.1) }
    }
}
