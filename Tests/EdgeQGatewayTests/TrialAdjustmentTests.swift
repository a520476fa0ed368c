@testable import EdgeQCore
@testable import EdgeQGateway
import EdgeQTopicMap
import Foundation
import Testing

/// The switchback trial and the guard adjusted by an exogenous baseline (docs/learning.md,
/// "Adjusting for the weather"), on deterministic seeded simulations fed tick by tick as the
/// gateway feeds them: block returns driven by an exogenous covariate (the "weather", a level
/// that changes from block to block and drifts within it) plus a small true difference between
/// the arms and tick noise; the baseline is a fixed, slightly wrong prediction from the weather.
@Suite struct TrialAdjustmentTests {
    /// The weather: a new level (sd 3) every 10 ticks on average, a slow drift, never aligned with
    /// the blocks.
    struct Weather {
        var level = 0.0
        var drift = 0.0
        mutating func next(_ rng: inout SeededGenerator) -> Double {
            if rng.nextUnit() < 0.1 { level = 3 * rng.nextGaussian() }
            drift = 0.98 * drift + 0.2 * rng.nextGaussian()
            return level + drift
        }
    }

    /// One trial fed `delta` per tick for the candidate; returns its verdict and summary.
    static func trial(seed: UInt64, delta: Double, adjusted: Bool, stop: Double? = nil) throws -> (TrialVerdict?, TrialSummary) {
        var c = TrialConfig()
        c.block = .ticks(10)
        c.burnIn = 2
        c.stopConfidence = stop
        c.stopLoss = nil   // the statistics alone (a raw trial under this weather can trip it)
        var trial = try SwitchbackTrial(config: c, seed: seed, adjusted: adjusted)
        var rng = SeededGenerator(seed: 90_000 + seed)
        var weather = Weather()
        for _ in 0..<100_000 {
            let arm = trial.arm
            let w = weather.next(&rng)
            let reward = w + (arm == .candidate ? delta : 0) + 0.3 * rng.nextGaussian()
            // The baseline: 95 % of the weather's effect (a model is never exact).
            if case .verdict(let v) = trial.record(reward: reward, baseline: 0.95 * w, arm: arm, episodeEnded: false) {
                return (v, trial.summary)
            }
        }
        return (nil, trial.summary)
    }

    /// (a) A candidate better by 0.3 per tick (2.4 per pair of 8 scored ticks), under weather
    /// whose block-to-block spread is ~30 per pair: with the baseline the trial promotes it; the
    /// same trials without it run out of their 30 pairs (all but a lucky few). The raw figures of an adjusted trial are
    /// those of the unadjusted one, and its cost is on raw returns.
    @Test func theBaselineDecidesWhereTheRawTrialCannot() throws {
        var adjustedPromoted = 0, rawPromoted = 0, rawExhausted = 0, covered = 0
        for seed in UInt64(0)..<20 {
            let (a, sa) = try Self.trial(seed: seed, delta: 0.3, adjusted: true)
            let (r, sr) = try Self.trial(seed: seed, delta: 0.3, adjusted: false)
            if a == .promote { adjustedPromoted += 1 }
            if r == .promote { rawPromoted += 1 }
            if r == .budgetExhausted { rawExhausted += 1 }
            #expect(sa.adjusted && !sr.adjusted)
            #expect(sr.rawMeanDifference == sr.meanDifference && sr.rawInterval == sr.interval)
            if let m = sa.meanDifference, let lo = sa.interval?.lowerBound, a == .promote {
                #expect(lo > 0, "adjusted mean \(m), interval from \(lo)")
                if sa.interval!.contains(2.4) { covered += 1 }
                let raw = try #require(sa.rawInterval)
                #expect(raw.upperBound - raw.lowerBound > 3 * (sa.interval!.upperBound - lo), "raw \(raw), adjusted \(sa.interval!)")
                #expect(sa.cost == max(0, -(sa.rawMeanDifference ?? 0)) * Double(sa.pairs))
            }
        }
        #expect(adjustedPromoted >= 19, "adjusted trials promoted \(adjustedPromoted) of 20")
        #expect(covered >= 18, "adjusted intervals covered the true difference in \(covered) of 20")
        #expect(rawPromoted <= 3 && rawExhausted >= 17, "raw trials promoted \(rawPromoted), ran out \(rawExhausted) of 20")
    }

    /// (a) An A/A trial (no true difference) with the baseline promotes at most 1 − confidence of
    /// the time, and its adjusted mean difference is centred on 0: the adjustment keeps the test
    /// valid because the pair order is a fair coin and the baseline is fixed.
    @Test func anAATrialWithTheBaselineDoesNotPromote() throws {
        let runs = 200
        var promoted = 0
        var means: [Double] = []
        for seed in UInt64(0)..<UInt64(runs) {
            let (v, s) = try Self.trial(seed: 1_000 + seed, delta: 0, adjusted: true)
            if v == .promote { promoted += 1 }
            if let m = s.meanDifference { means.append(m) }
        }
        #expect(Double(promoted) / Double(runs) <= 0.05, "promoted \(promoted) of \(runs)")
        let mean = means.reduce(0, +) / Double(means.count)
        #expect(abs(mean) < 0.5, "mean adjusted difference over \(means.count) A/A trials \(mean)")
    }

    /// A block's baseline is summed over the same scored ticks as its return and scaled the same
    /// way when ticks are skipped; with a baseline equal to the reward, the adjusted difference is 0.
    @Test func theBlockBaselineIsScaledLikeTheReturn() {
        var clock = BlockClock(block: .ticks(10), burnIn: 2)
        for t in 0..<10 {
            let ended = t == 4 || t == 6
                ? clock.tick(reward: nil, baseline: 100, episodeEnded: false)
                : clock.tick(reward: Double(t), baseline: 0.5 * Double(t), episodeEnded: false)
            #expect(ended == (t == 9))
        }
        // Scored: ticks 2, 3, 5, 7, 8, 9 (sum 34) of 8 nominal.
        #expect(clock.blockReturn == 34.0 / 6 * 8)
        #expect(clock.blockBaseline == 17.0 / 6 * 8)

        var c = TrialConfig()
        c.block = .ticks(5)
        c.burnIn = 1
        var trial = try? SwitchbackTrial(config: c, seed: 3, adjusted: true)
        var rng = SeededGenerator(seed: 4)
        for _ in 0..<200 {
            guard let arm = trial?.arm else { break }
            let r = 10 * rng.nextGaussian() + (arm == .candidate ? 0 : 5)
            _ = trial?.record(reward: r, baseline: r, arm: arm, episodeEnded: false)
        }
        let s = trial?.summary
        #expect(s?.meanDifference == 0 && s?.rawMeanDifference != 0, "\(String(describing: s))")
    }

    /// The guard with the served model's baseline trips on a model worse by 0.3 per tick under the
    /// weather; without it, the same runs do not trip within 20 pairs.
    @Test func theAdjustedGuardTripsWhereTheRawGuardCannot() throws {
        var adjustedTrips = 0, rawTrips = 0
        for seed in UInt64(0)..<10 {
            for adjusted in [true, false] {
                var g = try ControlGroupGuard(settings: .init(block: .ticks(10), burnIn: 2, share: 0.5, windowPairs: 20, confidence: 0.95),
                                              seed: seed, adjusted: adjusted)
                var rng = SeededGenerator(seed: 70_000 + seed)
                var weather = Weather()
                while g.summary.pairs < 20 && !g.hasTripped {
                    let arm = g.arm
                    let w = weather.next(&rng)
                    let reward = w + (arm == .served ? -0.3 : 0) + 0.3 * rng.nextGaussian()
                    if g.record(reward: reward, baseline: 0.95 * w, arm: arm, episodeEnded: false) == .tripped {
                        if adjusted { adjustedTrips += 1 } else { rawTrips += 1 }
                    }
                }
                #expect(g.summary.adjusted == adjusted)
            }
        }
        #expect(adjustedTrips >= 9, "adjusted guards tripped \(adjustedTrips) of 10")
        #expect(rawTrips <= 1, "raw guards tripped \(rawTrips) of 10")
    }
}
