import Foundation

// MARK: - Student's t

/// Student's t distribution: the CDF through the regularized incomplete beta function, the
/// quantile by bisection on it. Accurate to about 1e-10 relative; used for the trial's and
/// the guard's confidence bounds.
public enum StudentT {
    /// P(T ≤ t) for `degreesOfFreedom` ν > 0.
    public static func cdf(_ t: Double, degreesOfFreedom nu: Double) -> Double {
        let tail = upperTail(abs(t), nu)
        return t >= 0 ? 1 - tail : tail
    }

    /// The t with P(T ≤ t) = p, for p in (0, 1) and ν > 0 (nan outside).
    public static func quantile(_ p: Double, degreesOfFreedom nu: Double) -> Double {
        guard p > 0, p < 1, nu > 0 else { return .nan }
        if p == 0.5 { return 0 }
        let target = p > 0.5 ? 1 - p : p  // the upper tail wanted, < 0.5
        var lo = 0.0
        var hi = 1.0
        while upperTail(hi, nu) > target && hi < 1e300 {
            lo = hi
            hi *= 2
        }
        for _ in 0..<200 {
            let mid = 0.5 * (lo + hi)
            if upperTail(mid, nu) > target { lo = mid } else { hi = mid }
            if hi - lo <= 1e-13 * hi { break }
        }
        let t = 0.5 * (lo + hi)
        return p > 0.5 ? t : -t
    }

    /// P(T > t) for t ≥ 0: ½ I_{ν/(ν+t²)}(ν/2, ½).
    static func upperTail(_ t: Double, _ nu: Double) -> Double {
        let x = nu / (nu + t * t)
        return 0.5 * regularizedIncompleteBeta(x, nu / 2, 0.5)
    }

    /// I_x(a, b) by its continued fraction (modified Lentz), on the side where it converges fast.
    static func regularizedIncompleteBeta(_ x: Double, _ a: Double, _ b: Double) -> Double {
        if x <= 0 { return 0 }
        if x >= 1 { return 1 }
        let front = (logGamma(a + b) - logGamma(a) - logGamma(b) + a * Foundation.log(x) + b * Foundation.log(1 - x))
        if x < (a + 1) / (a + b + 2) {
            return Foundation.exp(front) * betaContinuedFraction(x, a, b) / a
        }
        return 1 - Foundation.exp(front) * betaContinuedFraction(1 - x, b, a) / b
    }

    private static func betaContinuedFraction(_ x: Double, _ a: Double, _ b: Double) -> Double {
        let tiny = 1e-300
        let qab = a + b, qap = a + 1, qam = a - 1
        var c = 1.0
        var d = 1 - qab * x / qap
        if abs(d) < tiny { d = tiny }
        d = 1 / d
        var h = d
        for m in 1...500 {
            let m = Double(m), m2 = 2 * m
            var aa = m * (b - m) * x / ((qam + m2) * (a + m2))
            d = 1 + aa * d
            if abs(d) < tiny { d = tiny }
            c = 1 + aa / c
            if abs(c) < tiny { c = tiny }
            d = 1 / d
            h *= d * c
            aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
            d = 1 + aa * d
            if abs(d) < tiny { d = tiny }
            c = 1 + aa / c
            if abs(c) < tiny { c = tiny }
            d = 1 / d
            let delta = d * c
            h *= delta
            if abs(delta - 1) < 1e-16 { break }
        }
        return h
    }

    /// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; ~1e-15 relative). Glibc's lgamma writes a
    /// global (signgam), which concurrent callers would race on.
    static func logGamma(_ x: Double) -> Double {
        if x < 0.5 {
            // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
            return Foundation.log(Double.pi / abs(Foundation.sin(Double.pi * x))) - logGamma(1 - x)
        }
        let g = 7.0
        let coefficients: (Double, Double, Double, Double, Double, Double, Double, Double, Double) = (
            0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
            12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7)
        let z = x - 1
        var s = coefficients.0
        s += coefficients.1 / (z + 1)
        s += coefficients.2 / (z + 2)
        s += coefficients.3 / (z + 3)
        s += coefficients.4 / (z + 4)
        s += coefficients.5 / (z + 5)
        s += coefficients.6 / (z + 6)
        s += coefficients.7 / (z + 7)
        s += coefficients.8 / (z + 8)
        let t = z + g + 0.5
        return 0.5 * Foundation.log(2 * Double.pi) + (z + 0.5) * Foundation.log(t) - t + Foundation.log(s)
    }
}
