import EdgeQNet
import Foundation

/// shadow-first promotion: a candidate that passed its checks runs beside the live
/// decisions for `promotion.shadow_ticks` ticks. Each compared tick the gateway asks it what
/// it would do, then, once the tick's outcome is known, sets the candidate's promise for its
/// own pick against what the live action (the incumbent's command in shadow, the served
/// model's in control) actually delivered:
///
///     margin_t = Q_cand(s_t, a_cand) − (r_t + γ · max_a' Q_cand(s_{t+1}, a'))
///
/// (no bootstrap after a terminal state; the max over the next state's allowed actions).
/// r_t is the reward the plant really gave after the live action; the bootstrap is the
/// candidate's own value of where the plant really went. The candidate is promoted when the
/// mean margin is not below zero by more than two standard errors: what it promises for its
/// picks is at least what the live decisions achieved. It is refused when the live
/// outcomes beat its promises — for instance a candidate that rates the live controller's
/// actions so low that the plant's rewards under them exceed its values for its own picks.
///
/// This is an interim check, and it is one-sided: a candidate that overrates every action
/// passes it, because a shadow comparison never sees the outcome of an action that was not
/// taken. The offline checks run before it, and the live guard stays on after promotion. The
/// candidate's claimed advantage, mean Q_cand(s, a_cand) − Q_cand(s, a_live), is published
/// beside it for information only: with a_cand the candidate's argmax it is never negative,
/// so it cannot decide anything.
struct CandidateComparison {
    var ticks = 0
    var agreed = 0
    /// Sum of Q_cand(s, a_cand) − Q_cand(s, a_live) (reported, never decides).
    var claimedAdvantage = 0.0
    /// Sum and sum of squares of the per-tick margins.
    var margin = 0.0
    var marginSquares = 0.0

    /// Adds one compared tick.
    mutating func add(agreed same: Bool, claimedAdvantage a: Double, margin m: Double) {
        ticks += 1
        if same { agreed += 1 }
        claimedAdvantage += a
        margin += m
        marginSquares += m * m
    }

    var agreement: Double { ticks > 0 ? Double(agreed) / Double(ticks) : 0 }
    var meanClaimedAdvantage: Double { ticks > 0 ? claimedAdvantage / Double(ticks) : 0 }
    var meanMargin: Double { ticks > 0 ? margin / Double(ticks) : 0 }

    /// Standard error of the mean margin (0 with fewer than two ticks).
    var marginStandardError: Double {
        guard ticks > 1 else { return 0 }
        let n = Double(ticks)
        let variance = max(0, (marginSquares - margin * margin / n) / (n - 1))
        return (variance / n).squareRoot()
    }

    /// Promote: compared on at least one tick, and the mean margin not below zero by more
    /// than two standard errors.
    var promotes: Bool { ticks > 0 && meanMargin + 2 * marginStandardError >= 0 }
}

extension Gateway {
    /// Control queue: starts comparing a stored, checked version.
    func startComparison(_ version: Int) throws {
        let m = try loadVerified(version)
        candidateSlot.withLock { $0 = m }
        candidateGeneration.add(1, ordering: .releasing)
        publishRetrain(["phase": .string("shadow-compare"), "version": .number(Double(version)),
                        "ticks": .number(0), "of": .number(Double(map.learning.shadowTicks))])
    }

    /// Control queue: stops comparing (promoted some other way, or the window is over).
    func stopComparison() {
        candidateSlot.withLock { $0 = nil }
        candidateGeneration.add(1, ordering: .releasing)
    }

    /// Decision thread, when tick t's transition closes: one compared tick. `pick` and `q`
    /// are the candidate's at s_t, `live` what was done, `reward` what followed; the current
    /// `state` and `mask` are s_{t+1}'s (the candidate is asked its value there, unless
    /// `terminal`).
    func compareCandidate(_ d: inout DecisionState, pick: Int, live: Int, q: [Float], reward: Double, terminal: Bool) {
        guard let candidate = d.comparedCandidate, let engine = d.candidateEngine, live < q.count, pick < q.count else { return }
        var next = 0.0
        if !terminal {
            let best = d.core.state.withUnsafeBufferPointer { s in
                d.candidateQValues.withUnsafeMutableBufferPointer { out in engine.bestAction(state: s, mask: d.core.mask, qValues: out) }
            }
            // No allowed action in s_{t+1}: nothing to bootstrap from.
            if let best { next = Double(d.candidateQValues[best]) }
        }
        let target = reward + map.learning.gamma * next
        d.comparison.add(agreed: pick == live, claimedAdvantage: Double(q[pick] - q[live]), margin: Double(q[pick]) - target)
        if d.comparison.ticks >= map.learning.shadowTicks {
            let result = d.comparison
            d.comparedCandidate = nil
            d.candidateEngine = nil
            control.async { self.finishComparison(candidate.version, result) }
        }
    }

    /// Control queue: publishes the comparison and promotes when the live outcomes do not
    /// beat the candidate's promises (`CandidateComparison.promotes`).
    func finishComparison(_ version: Int, _ c: CandidateComparison) {
        stopComparison()
        var promoted = false
        let summary = String(format: "agreement %.3f, mean margin %.4g ± %.2g (2 standard errors) over %d ticks",
                             c.agreement, c.meanMargin, 2 * c.marginStandardError, c.ticks)
        if c.promotes, servedVersion != version {
            promoted = (try? promote(version: version, reason: "shadow-first: \(summary)")) != nil
        }
        publishRetrain(["phase": .string("shadow-compared"), "version": .number(Double(version)),
                        "ticks": .number(Double(c.ticks)), "agreement": .number(c.agreement),
                        "margin": .number(c.meanMargin), "margin_standard_error": .number(c.marginStandardError),
                        "claimed_advantage": .number(c.meanClaimedAdvantage), "promoted": .bool(promoted),
                        "note": .string(c.promotes
                                        ? (promoted ? "promoted: the live outcomes did not beat its promises" : "passed, but already served")
                                        : "not promoted: the live outcomes beat its promises (\(summary)); promote with cmd/promote if you trust it")])
    }
}
