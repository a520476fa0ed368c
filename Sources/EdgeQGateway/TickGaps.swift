import EdgeQTopicMap

/// Finds, from the clock, decision ticks missed between two consecutive ticks (docs/mapping.md,
/// `tick.max_gap`): the transition that spans them is flagged `gap` in the log and is not
/// learned from as one step. The `tick.sequence` rule is the gateway's (it reads the signal).
///
/// - a fixed limit: `tick.max_gap`, or 1.5 periods for a periodic tick;
/// - adaptive (a trigger tick with neither `sequence` nor `max_gap`): more than 3 × the median
///   of the previous 16 intervals, once 8 intervals have been seen.
///
/// Owned by the decision state; `observe` allocates nothing (a fixed ring and scratch buffer).
struct TickGapDetector {
    /// A fixed limit in ns (nil: adaptive or off).
    let limitNanos: UInt64?
    /// Use the median rule.
    let adaptive: Bool
    private var ring: [UInt64]
    private var scratch: [UInt64]
    private var count = 0
    private var head = 0
    private var last: UInt64?

    static let window = 16
    static let warmUp = 8
    static let factor: UInt64 = 3

    init(map: TopicMap) {
        switch (map.continuity.maxGap, map.tick) {
        case (.seconds(let s), _):
            limitNanos = UInt64(s * 1e9)
            adaptive = false
        case (.off, _):
            limitNanos = nil
            adaptive = false
        case (.automatic, .period(let p)):
            limitNanos = UInt64(1.5 * p * 1e9)
            adaptive = false
        case (.automatic, .trigger):
            limitNanos = nil
            adaptive = map.continuity.sequence == nil
        }
        ring = [UInt64](repeating: 0, count: Self.window)
        scratch = [UInt64](repeating: 0, count: Self.window)
    }

    /// Records a tick at monotonic time `now` (ns) and says whether the interval since the
    /// previous tick spans missed ticks. Call at every tick.
    mutating func observe(_ now: UInt64) -> Bool {
        defer { last = now }
        guard let previous = last, now > previous else { return false }
        let interval = now - previous
        var gap = false
        if let limit = limitNanos {
            gap = interval > limit
        } else if adaptive && count >= Self.warmUp {
            for i in 0..<count { scratch[i] = ring[i] }
            // Insertion sort of at most 16 values: no allocation, a few hundred ns.
            for i in 1..<count {
                let x = scratch[i]
                var j = i - 1
                while j >= 0 && scratch[j] > x {
                    scratch[j + 1] = scratch[j]
                    j -= 1
                }
                scratch[j + 1] = x
            }
            let median = scratch[count / 2]
            gap = interval > Self.factor &* median
        }
        if adaptive {
            ring[head] = interval
            head = (head + 1) % Self.window
            count = min(count + 1, Self.window)
        }
        return gap
    }
}
