/// A small, fast, seedable random number generator (xoshiro256**, seeded through
/// SplitMix64), so that training runs, simulators and tests are reproducible.
///
/// Not cryptographic. The same seed gives the same sequence on every platform.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s0: UInt64
    private var s1: UInt64
    private var s2: UInt64
    private var s3: UInt64

    /// A generator whose whole sequence is determined by `seed`.
    public init(seed: UInt64) {
        var sm = seed
        func splitmix() -> UInt64 {
            sm &+= 0x9E37_79B9_7F4A_7C15
            return Self.splitMixFinalize(sm)
        }
        s0 = splitmix()
        s1 = splitmix()
        s2 = splitmix()
        s3 = splitmix()
    }

    /// SplitMix64's output function: the mixing of a state into 64 well-spread bits (seeding
    /// and `derive`).
    static func splitMixFinalize(_ state: UInt64) -> UInt64 {
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// A uniform Double in [0, 1) with 53 random bits.
    public mutating func nextUnit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// A standard normal sample (Box–Muller).
    public mutating func nextGaussian() -> Double {
        var u = nextUnit()
        while u <= 0 { u = nextUnit() }
        let v = nextUnit()
        return (-2 * _log(u)).squareRoot() * _cos(2 * Double.pi * v)
    }
}

#if canImport(Glibc)
import Glibc
private func _log(_ x: Double) -> Double { Glibc.log(x) }
private func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#elseif canImport(Darwin)
import Darwin
private func _log(_ x: Double) -> Double { Darwin.log(x) }
private func _cos(_ x: Double) -> Double { Darwin.cos(x) }
#endif

extension SeededGenerator {
    /// The largest seed `edgeq run --seed` takes and the gateway draws: 2⁵³ − 1, so that a
    /// seed printed as a JSON number (the status, `trial.json`) reads back exactly.
    public static let largestPrintableSeed: UInt64 = (1 << 53) - 1

    /// A seed for one purpose, derived from `root` and `parts` (e.g. a purpose tag and model
    /// versions) by SplitMix64 steps: the same inputs give the same seed on every platform,
    /// and inputs that differ in any part give unrelated seeds. The gateway's trials, its
    /// control group and its exploration each draw from such a seed of the gateway's one seed
    /// (docs/operations.md, "Replaying a run's random draws").
    public static func derive(_ root: UInt64, _ parts: UInt64...) -> UInt64 {
        // One SplitMix64 step from state x: its output.
        func mix(_ x: UInt64) -> UInt64 { splitMixFinalize(x &+ 0x9E37_79B9_7F4A_7C15) }
        var h = mix(root)
        for p in parts { h = mix(h ^ mix(p)) }
        return h
    }

    /// A uniformly random index among the `true` entries of `mask` (the k-th allowed action,
    /// without building the list), or nil — drawing nothing — when none is `true`. The
    /// exploration of the decision core and the model rollouts' random choices.
    public mutating func randomAllowed(_ mask: [Bool]) -> Int? {
        var allowed = 0
        for ok in mask where ok { allowed += 1 }
        guard allowed > 0 else { return nil }
        var k = Int(next() % UInt64(allowed))
        for (i, ok) in mask.enumerated() where ok {
            if k == 0 { return i }
            k -= 1
        }
        return nil
    }
}
