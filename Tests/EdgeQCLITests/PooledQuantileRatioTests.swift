import EdgeQCore
import Foundation
import Testing

/// The statistic behind `edgeq bench fleet`'s p99 figure (docs/benchmarks.md, "How a figure is
/// measured"): each side's round trips pooled over the rounds, the ratio of the pooled p99s, and
/// a two-stage bootstrap interval on it. Checked against a naive bootstrap that materialises
/// every resample and sorts it (the oracle), and on synthetic rounds whose true ratio is known.
@Suite struct PooledQuantileRatioTests {
    /// Latency-like samples: a body around 100 plus a heavy tail (lognormal), times `scale`.
    static func round(_ n: Int, scale: Double, _ rng: inout SeededGenerator) -> [Double] {
        (0..<n).map { _ in scale * 100 * exp(0.35 * rng.nextGaussian()) }
    }

    /// Rounds of `n` samples a side; the arm is `ratio` × the anchor in distribution, and each
    /// round's load (`load` spread, lognormal) scales both halves of that round alike.
    static func rounds(_ count: Int, _ n: Int, ratio: Double, load: Double, seed: UInt64) -> [(value: [Double], anchor: [Double])] {
        var rng = SeededGenerator(seed: seed)
        return (0..<count).map { _ in
            let l = exp(load * rng.nextGaussian())
            let anchor = round(n, scale: l, &rng)
            return (value: round(n, scale: l * ratio, &rng), anchor: anchor)
        }
    }

    /// The oracle: the same two-stage bootstrap, every resample materialised and sorted.
    static func naiveInterval(_ rounds: [(value: [Double], anchor: [Double])], resamples: Int, seed: UInt64) -> (low: Double, high: Double) {
        var rng = SeededGenerator(seed: seed)
        var ratios: [Double] = []
        for _ in 0..<resamples {
            let picks = (0..<rounds.count).map { _ in Int(rng.next() % UInt64(rounds.count)) }
            var mine: [Double] = [], theirs: [Double] = []
            for r in picks {
                let (v, a) = rounds[r]
                for _ in v.indices { mine.append(v[Int(rng.next() % UInt64(v.count))]) }
                for _ in a.indices { theirs.append(a[Int(rng.next() % UInt64(a.count))]) }
            }
            mine.sort()
            theirs.sort()
            ratios.append(PooledQuantileRatio.orderStatistic(ascending: mine, quantile: 0.99)
                          / PooledQuantileRatio.orderStatistic(ascending: theirs, quantile: 0.99))
        }
        ratios.sort()
        return (ratios[Int(0.025 * Double(resamples))], ratios[Int((0.975 * Double(resamples)).rounded(.up)) - 1])
    }

    @Test func theEstimateIsThePooledOrderStatisticOfEachSide() throws {
        // Rounds of unequal sizes: the pool is what counts, not a mean of rounds.
        var rng = SeededGenerator(seed: 7)
        let data: [(value: [Double], anchor: [Double])] = [300, 1_000, 700].map { n in
            (value: Self.round(n, scale: 1.2, &rng), anchor: Self.round(n + 50, scale: 1, &rng))
        }
        let p = try #require(PooledQuantileRatio(rounds: data))
        let mine = data.flatMap(\.value).sorted(), theirs = data.flatMap(\.anchor).sorted()
        #expect(mine.count == 2_000 && theirs.count == 2_150)
        #expect(p.value == mine[1_980] && p.anchorValue == theirs[2_128])
        #expect(p.ratio == mine[1_980] / theirs[2_128])
        #expect(p.rounds == 3 && p.samples.value == 2_000 && p.samples.anchor == 2_150 && p.level == 0.95 && p.resamples == 2_000)
        #expect(p.low < p.ratio && p.ratio < p.high, "\(p)")
        // Deterministic for a seed; another seed moves the interval a little, not the estimate.
        #expect(PooledQuantileRatio(rounds: data) == p)
        let q = try #require(PooledQuantileRatio(rounds: data, seed: 99))
        #expect(q.value == p.value && q.anchorValue == p.anchorValue && (q.low != p.low || q.high != p.high))
    }

    /// The walk (binomial copies from the largest sample down) gives the interval the naive
    /// bootstrap gives, within the Monte Carlo error of 2,000 resamples.
    @Test(arguments: [(1, 0.0), (5, 0.1), (12, 0.3)])
    func theIntervalMatchesANaiveBootstrap(roundCount: Int, load: Double) throws {
        let data = Self.rounds(roundCount, 400, ratio: 1.15, load: load, seed: UInt64(roundCount))
        let p = try #require(PooledQuantileRatio(rounds: data))
        let naive = Self.naiveInterval(data, resamples: 2_000, seed: 5)
        let width = naive.high - naive.low
        #expect(width > 0)
        #expect(abs(p.low - naive.low) <= 0.15 * width && abs(p.high - naive.high) <= 0.15 * width,
                "walk \(p.low)–\(p.high), naive \(naive.low)–\(naive.high)")
    }

    /// On rounds whose true p99 ratio is 1.2 (and whose load varies from round to round, both
    /// halves alike), the 95 % interval covers 1.2 in at least 90 % of 60 independent benches,
    /// never calls a 1.1× goal met, and 20 rounds of 1,000 decide it (not met) more often than the
    /// first 5 of the same rounds, whose interval is wider in every bench.
    @Test func theIntervalCoversTheTrueRatioAndMoreRoundsDecide() throws {
        var covered = 0, decided20 = 0, decided5 = 0, wider5 = 0
        let benches = 60
        for b in 0..<benches {
            let twenty = Self.rounds(20, 1_000, ratio: 1.2, load: 0.1, seed: UInt64(1_000 + b))
            let p = try #require(PooledQuantileRatio(rounds: twenty, resamples: 1_000))
            if p.low <= 1.2 && 1.2 <= p.high { covered += 1 }
            if p.verdict(atMost: 1.1) == .notMet { decided20 += 1 }
            let five = try #require(PooledQuantileRatio(rounds: Array(twenty.prefix(5)), resamples: 1_000))
            if five.verdict(atMost: 1.1) == .notMet { decided5 += 1 }
            if five.high - five.low > p.high - p.low { wider5 += 1 }
            // Never the wrong way: a true 1.2× is never called met against 1.1×.
            #expect(p.verdict(atMost: 1.1) != .met && five.verdict(atMost: 1.1) != .met)
        }
        print("pooled p99 ratio, true 1.2: covered \(covered)/\(benches); 1.1× goal decided (not met) with 20 rounds \(decided20), with 5 rounds \(decided5); 5 rounds wider \(wider5)")
        #expect(covered >= benches * 9 / 10)
        #expect(decided20 >= benches * 3 / 4)
        #expect(decided5 < decided20)
        #expect(wider5 == benches)
    }

    /// Equal sides: the interval holds 1; the verdict against 1.1× is met or undecided, never not met.
    @Test func equalSidesGiveAnIntervalAroundOne() throws {
        let data = Self.rounds(20, 1_000, ratio: 1, load: 0.1, seed: 42)
        let p = try #require(PooledQuantileRatio(rounds: data))
        #expect(p.low < 1 && 1 < p.high, "\(p)")
        #expect(p.verdict(atMost: 1.1) != .notMet)
    }

    @Test func unusableInputIsRefused() {
        #expect(PooledQuantileRatio(rounds: []) == nil)
        #expect(PooledQuantileRatio(rounds: [(value: [1, 2], anchor: [])]) == nil)
        #expect(PooledQuantileRatio(rounds: [(value: [1, .nan], anchor: [1, 2])]) == nil)
        #expect(PooledQuantileRatio(rounds: [(value: [1, 2], anchor: [0, 0])]) == nil)
        #expect(PooledQuantileRatio(rounds: [(value: [1, 2], anchor: [1, 2])], quantile: 1) == nil)
        #expect(PooledQuantileRatio(rounds: [(value: [1, 2], anchor: [1, 2])], resamples: 10) == nil)
    }
}
