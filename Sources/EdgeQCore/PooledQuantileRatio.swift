import Foundation

/// The ratio of one high quantile (a p99 latency) of two arms measured alternately in rounds
/// (arm, anchor, arm, anchor, …), with a bootstrap confidence interval — what decides a goal
/// such as "the p99 while shipping ≤ 1.1× the p99 without".
///
/// **Estimate.** Each arm's samples are pooled over all rounds and the quantile is the order
/// statistic `sorted[min(n − 1, ⌊q·n⌋)]` of the pool (the same rule as a per-round p99): with
/// 20 rounds of 1,000 round trips a p99 rests on the 200 slowest samples instead of a per-round
/// p99's 10, and the ratio is `value ÷ anchorValue`.
///
/// **Interval.** A two-stage bootstrap that keeps the rounds' pairing: each resample draws
/// `rounds` round indices with replacement — the same indices for both arms, since a round's two
/// halves ran back to back under the same machine load — and then, independently per arm, as
/// many samples as each chosen round had, with replacement, from inside that round. The
/// interval is the percentile interval of the resampled ratios. Drawing rounds carries the
/// round-to-round swings (load, a burst) into the interval; drawing inside rounds carries the
/// few tail samples each round contributes. Resampling both stages counts the within-round
/// noise about twice, so the interval errs wide (conservative), which suits a goal check; it
/// also works with one round (then only the inside draw varies).
///
/// Cost: a resample never materialises its samples. Walking each arm's pooled samples from the
/// largest down, the number of copies of each sample in the resample is drawn as a binomial
/// conditional on the draws its round has left (the multinomial's sequential form); the walk
/// stops at the quantile's rank, about `(1 − q)·n` samples in: ~2,000 resamples of 2 × 20,000
/// samples take milliseconds.
public struct PooledQuantileRatio: Sendable, Equatable {
    /// The quantile, e.g. 0.99.
    public let quantile: Double
    /// The arm's pooled quantile.
    public let value: Double
    /// The anchor's pooled quantile.
    public let anchorValue: Double
    /// The lower end of the interval on `ratio`.
    public let low: Double
    /// The upper end of the interval on `ratio`.
    public let high: Double
    /// The interval's confidence level, e.g. 0.95.
    public let level: Double
    /// Rounds pooled.
    public let rounds: Int
    /// Samples pooled for the arm and for the anchor.
    public let samples: (value: Int, anchor: Int)
    /// Bootstrap resamples drawn.
    public let resamples: Int

    /// `value ÷ anchorValue`.
    public var ratio: Double { value / anchorValue }

    /// Where a goal "ratio ≤ `goal`" stands (lower is better): `met` when the whole interval is
    /// at or below it, `notMet` when the whole interval is above it, else `undecided` (more
    /// rounds narrow the interval).
    public func verdict(atMost goal: Double) -> Verdict {
        if high <= goal { return .met }
        if low > goal { return .notMet }
        return .undecided
    }

    /// Where a goal stands against the interval.
    public enum Verdict: String, Sendable {
        /// The interval is at or below the goal.
        case met
        /// The interval is above the goal.
        case notMet = "not met"
        /// The interval straddles the goal.
        case undecided
    }

    /// Pools `rounds` (each round's arm samples and anchor samples) and bootstraps the ratio's
    /// interval. Deterministic for a given `seed`.
    ///
    /// Returns nil when there is no round, a round has no sample on either side, a sample is not
    /// finite, the anchor's quantile is not positive, `quantile` or `level` is not in (0, 1), or
    /// `resamples` is below 100.
    public init?(rounds: [(value: [Double], anchor: [Double])], quantile: Double = 0.99, level: Double = 0.95,
                 resamples: Int = 2_000, seed: UInt64 = 0x5EED_F1EE7) {
        guard !rounds.isEmpty, quantile > 0, quantile < 1, level > 0, level < 1, resamples >= 100,
              rounds.allSatisfy({ !$0.value.isEmpty && !$0.anchor.isEmpty }),
              rounds.allSatisfy({ $0.value.allSatisfy(\.isFinite) && $0.anchor.allSatisfy(\.isFinite) }) else { return nil }
        let mine = Arm(rounds.map(\.value)), theirs = Arm(rounds.map(\.anchor))
        let v = Self.orderStatistic(ascending: mine.pooledAscending, quantile: quantile)
        let a = Self.orderStatistic(ascending: theirs.pooledAscending, quantile: quantile)
        guard a > 0 else { return nil }
        var rng = SeededGenerator(seed: seed)
        var ratios: [Double] = []
        ratios.reserveCapacity(resamples)
        var chosen = [Int](repeating: 0, count: rounds.count)
        for _ in 0..<resamples {
            for i in chosen.indices { chosen[i] = 0 }
            for _ in 0..<rounds.count {
                chosen[min(rounds.count - 1, Int(rng.nextUnit() * Double(rounds.count)))] += 1
            }
            let rv = mine.resampledQuantile(times: chosen, quantile: quantile, &rng)
            let ra = theirs.resampledQuantile(times: chosen, quantile: quantile, &rng)
            if ra > 0 { ratios.append(rv / ra) }
        }
        guard ratios.count >= resamples / 2 else { return nil }
        ratios.sort()
        let tail = (1 - level) / 2
        self.quantile = quantile
        value = v
        anchorValue = a
        low = ratios[min(ratios.count - 1, Int(tail * Double(ratios.count)))]
        high = ratios[max(0, Int((Double(ratios.count) * (1 - tail)).rounded(.up)) - 1)]
        self.level = level
        self.rounds = rounds.count
        samples = (mine.pooledAscending.count, theirs.pooledAscending.count)
        self.resamples = resamples
    }

    /// The quantile `q` of ascending samples as an order statistic: `sorted[min(n − 1, ⌊q·n⌋)]`
    /// (nan when empty).
    public static func orderStatistic(ascending sorted: [Double], quantile q: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        return sorted[min(sorted.count - 1, max(0, Int(Double(sorted.count) * q)))]
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.quantile == b.quantile && a.value == b.value && a.anchorValue == b.anchorValue && a.low == b.low && a.high == b.high
            && a.level == b.level && a.rounds == b.rounds && a.samples == b.samples && a.resamples == b.resamples
    }

    /// One arm: its pooled samples, largest first, each with its round.
    struct Arm {
        let pooledAscending: [Double]
        let descending: [Double]
        let roundOf: [Int]
        let roundSizes: [Int]

        init(_ rounds: [[Double]]) {
            var all: [(Double, Int)] = []
            for (r, xs) in rounds.enumerated() { all += xs.map { ($0, r) } }
            all.sort { $0.0 > $1.0 }
            descending = all.map(\.0)
            roundOf = all.map(\.1)
            pooledAscending = descending.reversed()
            roundSizes = rounds.map(\.count)
        }

        /// The quantile of one two-stage resample in which round r was drawn `times[r]` times:
        /// the rank-th largest of the resample, found by walking the samples from the largest
        /// and drawing each one's copies, Binomial(draws its round has left, 1 ÷ its samples left).
        func resampledQuantile(times: [Int], quantile q: Double, _ rng: inout SeededGenerator) -> Double {
            var draws = zip(times, roundSizes).map { $0 * $1 }
            var left = roundSizes
            let n = draws.reduce(0, +)
            guard n > 0 else { return .nan }
            let rank = n - min(n - 1, Int(Double(n) * q))   // 1 = the largest
            var seen = 0
            for i in descending.indices {
                let r = roundOf[i]
                let d = draws[r], l = left[r]
                left[r] = l - 1
                guard d > 0 else { continue }
                let c = l == 1 ? d : binomial(d, 1 / Double(l), &rng)
                draws[r] = d - c
                seen += c
                if seen >= rank { return descending[i] }
            }
            return descending.last ?? .nan
        }

        /// A Binomial(n, p) draw by inversion (n·p is small on the walk: about the times a round
        /// was drawn); by n Bernoulli draws where (1 − p)ⁿ would underflow.
        func binomial(_ n: Int, _ p: Double, _ rng: inout SeededGenerator) -> Int {
            let q = 1 - p
            let logP0 = Double(n) * log(q)
            guard logP0 > -600 else {
                var k = 0
                for _ in 0..<n where rng.nextUnit() < p { k += 1 }
                return k
            }
            let u = rng.nextUnit()
            var k = 0
            var pk = exp(logP0)
            var cdf = pk
            while u > cdf && k < n {
                pk *= Double(n - k) / Double(k + 1) * p / q
                k += 1
                cdf += pk
            }
            return k
        }
    }
}
