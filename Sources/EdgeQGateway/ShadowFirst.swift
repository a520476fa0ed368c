import EdgeQNet
import Foundation

/// shadow-first promotion: a candidate that passed its checks runs beside the live
/// decisions for `promotion.shadow_ticks` ticks. Each tick the gateway asks it what it would
/// do and compares that with what was actually done (the incumbent's command in shadow, the
/// served model's in control): the agreement, and the candidate's own estimate of the
/// advantage of its pick over the live one, mean of Q_cand(s, a_cand) − Q_cand(s, a_live).
/// After the window both are published on `<prefix>/retrain`; the candidate is promoted when
/// the estimate is not worse (≥ 0), otherwise it waits for `cmd/promote`.
struct CandidateComparison {
    var ticks = 0
    var agreed = 0
    var advantage = 0.0
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

    /// Decision thread: one compared tick.
    func compareCandidate(pick: Int, live: Int, q: [Float]) {
        guard let candidate = comparedCandidate, live < q.count, pick < q.count else { return }
        comparison.ticks += 1
        if pick == live { comparison.agreed += 1 }
        comparison.advantage += Double(q[pick] - q[live])
        if comparison.ticks >= map.learning.shadowTicks {
            let result = comparison
            comparedCandidate = nil
            candidateEngine = nil
            control.async { self.finishComparison(candidate.version, result) }
        }
    }

    /// Control queue: publishes the comparison and promotes when the estimate is not worse.
    func finishComparison(_ version: Int, _ c: CandidateComparison) {
        stopComparison()
        let agreement = c.ticks > 0 ? Double(c.agreed) / Double(c.ticks) : 0
        let estimate = c.ticks > 0 ? c.advantage / Double(c.ticks) : 0
        var promoted = false
        if estimate >= 0, servedVersion != version {
            promoted = (try? promote(version: version, reason: "shadow-first: agreement \(agreement), estimated advantage \(estimate) over \(c.ticks) ticks")) != nil
        }
        publishRetrain(["phase": .string("shadow-compared"), "version": .number(Double(version)),
                        "ticks": .number(Double(c.ticks)), "agreement": .number(agreement),
                        "estimated_advantage": .number(estimate), "promoted": .bool(promoted),
                        "note": .string(promoted ? "promoted: its estimate is not worse than the live decisions"
                                                 : "not promoted automatically: promote with cmd/promote if you trust it")])
    }
}
