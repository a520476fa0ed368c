import EdgeQLog
import Foundation

/// The live guard (DESIGN.md, LEARNING-NOTES.md): offline checks cannot see what the log
/// never shows, so in control mode the gateway compares the rolling mean reward of the
/// last `window` control ticks with the incumbent's recorded baseline (mean reward per
/// tick over the shadow rows of the log). When it is worse by more than the mapping file's
/// `rollback_margin` (a share of |baseline|), the gateway rolls back (walking back through the
/// served history, quarantining the version it leaves), or returns to shadow mode if there is
/// nothing to roll back to, and says so on the status and retrain topics.
struct LiveGuardState {
    var rewards: [Double]
    var head = 0
    var filled = 0
    var sum = 0.0

    init(window: Int) { rewards = [Double](repeating: 0, count: max(window, 1)) }

    mutating func reset() {
        head = 0
        filled = 0
        sum = 0
    }

    /// Adds a reward; returns the rolling mean once the window is full.
    mutating func add(_ r: Double) -> Double? {
        if filled == rewards.count { sum -= rewards[head] } else { filled += 1 }
        rewards[head] = r
        sum += r
        head = (head + 1) % rewards.count
        return filled == rewards.count ? sum / Double(filled) : nil
    }
}

extension Gateway {
    /// Decision thread: one reward of a control-mode transition the model acted in.
    func guardObserve(_ d: inout DecisionState, reward: Double) {
        guard let mean = d.guardState.add(reward) else { return }
        guardMean.store(mean.bitPattern, ordering: .relaxed)
        let baseline = Double(bitPattern: guardBaseline.load(ordering: .relaxed))
        guard baseline.isFinite else { return }
        let limit = baseline - map.learning.rollbackMargin * abs(baseline)
        if mean < limit {
            d.guardState.reset()
            control.async { self.guardTripped(mean: mean, baseline: baseline, limit: limit) }
        }
    }

    /// Control queue: roll back (walking back, quarantining the version left), or, when there
    /// is nothing to roll back to, fall back to shadow (at once, in memory, whatever the disk
    /// says). The event says which: `verdict` "rolled_back" with `from`, `to` and `quarantined`,
    /// or "fallback_to_shadow" with `from` and why no rollback happened.
    func guardTripped(mean: Double, baseline: Double, limit: Double) {
        guard mode == .control else { return }
        metrics.guardTrips.increment()
        let from = servedVersion
        let verdict: String
        let action: String
        var to: Int?
        var quarantined: Int?
        do {
            let r = try rollback(to: nil, reason: "live guard")
            verdict = "rolled_back"
            to = r.to
            quarantined = r.quarantined
            action = "rolled back from version \(from.map(String.init) ?? "none") to \(r.to)\(r.quarantined.map { " (version \($0) quarantined)" } ?? "")"
        } catch {
            leaveControl(reason: "live guard: no rollback (\(error))")
            verdict = "fallback_to_shadow"
            action = "back to shadow mode, the incumbent is in charge (no rollback: \(error))"
        }
        let text = String(format: "live guard: rolling mean reward %.4g over %d control ticks is below the incumbent's %.4g by more than %.1f%% (limit %.4g); %@",
                          mean, guardWindow, baseline, map.learning.rollbackMargin * 100, limit, action)
        lastGuardEvent.withLock { $0 = text }
        logger.error("\(text)")
        func version(_ v: Int?) -> JSONValue { v.map { .number(Double($0)) } ?? .null }
        publishRetrain(["phase": .string("guard"), "verdict": .string(verdict), "from": version(from), "to": version(to),
                        "quarantined": version(quarantined), "mode": .string(mode.rawValue), "reason": .string(text)])
        publish(controlPlane.statusTopic, statusJSON(state: "online", reason: text), qos: 1, retain: true)
    }

    /// Control queue: the incumbent's baseline from the shadow rows of the log.
    func refreshGuardBaseline() {
        let b = (try? log.incumbentBaseline(window: .all))??.meanReward ?? .nan
        guardBaseline.store(b.bitPattern, ordering: .relaxed)
    }

    func guardStatus() -> JSONValue {
        let mean = Double(bitPattern: guardMean.load(ordering: .relaxed))
        let baseline = Double(bitPattern: guardBaseline.load(ordering: .relaxed))
        var o: [String: JSONValue] = [
            "window": .number(Double(guardWindow)), "margin": .number(map.learning.rollbackMargin),
            "rolling_mean": mean.isFinite ? .number(mean) : .null,
            "baseline": baseline.isFinite ? .number(baseline) : .null,
            "trips": .number(Double(metrics.guardTrips.value)),
        ]
        if let e = lastGuardEvent.withLock({ $0 }) { o["last_event"] = .string(e) }
        return .object(o)
    }
}
