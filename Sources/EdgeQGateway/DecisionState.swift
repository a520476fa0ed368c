import EdgeQCore
import EdgeQLog
import EdgeQNet
import EdgeQTopicMap
import Foundation

/// Everything a tick reads and writes: the signal table, the runtime that assembles states,
/// the served and compared engines, the open transition, the pending incumbent and applied
/// actions, the gap detector, the live guard's window, exploration, and the buffers the
/// decision path reuses (no allocation per message).
///
/// One owner at a time, and the compiler proves it: the gateway keeps it in a
/// `Mutex<DecisionState>` and every decision function takes it `inout` from inside
/// `withLock` (the network thread for message-triggered ticks, the `run()` thread for periodic
/// ones). Nothing else can reach it; what other threads need (the mode, the served model, the
/// guard's figures, counters) goes through atomics, mutexes and the metrics.
struct DecisionState {
    var runtime: TopicMapRuntime
    var table: SignalTable
    var engine: QEngine?
    var engineGeneration = -1
    var engineModel: ServedModel?
    var state: [Float]
    var qValues: [Float]
    var mask: [Bool]
    var payload: [UInt8] = []
    var tick: Int64 = 0
    var episode: Int64 = 0
    var open: OpenTransition?
    var pendingIncumbent: Int?
    /// The action the plant reported applying since the last tick (`applied` section).
    var pendingApplied: Int?
    var gaps: TickGapDetector
    /// Per-write payload buffers (one per write of the action with the most writes, 1 KiB
    /// reserved each): an action's writes are all rendered before any is published.
    var writeBuffers: [[UInt8]]
    var guardState: LiveGuardState
    var exploreRNG = SeededGenerator(seed: UInt64(truncatingIfNeeded: Int64(Date().timeIntervalSince1970 * 1e6)))
    var controlDecisions = 0
    var candidateEngine: QEngine?
    var candidateEngineGeneration = 0
    var comparedCandidate: ServedModel?
    var candidateQValues: [Float]
    var comparison = CandidateComparison()
    var explorations = 0

    /// The decision of tick t, waiting for the reward and state of tick t+1.
    struct OpenTransition {
        var time: Double
        var tick: Int64
        /// Monotonic time of tick t (ns) and the `tick.sequence` signal's value then (nil: none
        /// or not valid), to find missed ticks when the transition closes.
        var monotonic: UInt64
        var sequence: Double?
        var state: [Float]
        var applied: Int?
        var actor: Actor
        var mode: ControlMode
        var modelVersion: String?
        var qValues: [Float]?
        var modelAction: Int?
        /// shadow-first: the candidate's pick at t and its Q-values (only while comparing).
        var candidateAction: Int? = nil
        var candidateQ: [Float]? = nil
    }

    /// The incumbent command that closed the previous transition (kept for the shadow report).
    var lastIncumbentReported: Int?

    init(map: TopicMap, guardWindow: Int) {
        guardState = LiveGuardState(window: guardWindow)
        runtime = TopicMapRuntime(map: map)
        table = SignalTable(for: map)
        state = [Float](repeating: 0, count: map.stateWidth)
        qValues = [Float](repeating: 0, count: map.actions.count)
        candidateQValues = [Float](repeating: 0, count: map.actions.count)
        mask = [Bool](repeating: true, count: map.actions.count)
        payload.reserveCapacity(1024)
        gaps = TickGapDetector(map: map)
        writeBuffers = (0..<max(1, map.actions.map(\.writes.count).max() ?? 1)).map { _ in
            var b: [UInt8] = []
            b.reserveCapacity(1024)
            return b
        }
    }

    // MARK: - The shadow report's JSON, appended to `payload` without allocating

    mutating func appendLastIncumbent() {
        if let v = lastIncumbentReported { appendInt(v) } else { payload.append(contentsOf: "null".utf8) }
    }

    mutating func appendInt(_ v: Int) {
        if v < 0 { payload.append(UInt8(ascii: "-")) }
        var x = v.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[n] = UInt8(ascii: "0") + UInt8(x % 10)
                x /= 10
                n += 1
            } while x > 0
            while n > 0 {
                n -= 1
                payload.append(d[n])
            }
        }
    }

    mutating func appendFloat(_ f: Float) {
        guard f.isFinite else {
            payload.append(contentsOf: "null".utf8)
            return
        }
        // Six significant decimals, without allocating: sign, integer part, fraction.
        var v = Double(f)
        if v < 0 {
            payload.append(UInt8(ascii: "-"))
            v = -v
        }
        let whole = v.rounded(.down)
        if whole >= 1e15 {
            appendInt(Int(1e15))
            return
        }
        var frac = Int(((v - whole) * 1e6).rounded())
        var intPart = Int(whole)
        if frac >= 1_000_000 {
            intPart += 1
            frac -= 1_000_000
        }
        appendInt(intPart)
        payload.append(UInt8(ascii: "."))
        var scale = 100_000
        while scale > 0 {
            payload.append(UInt8(ascii: "0") + UInt8(frac / scale % 10))
            scale /= 10
        }
    }

    mutating func appendString(_ s: String) {
        payload.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") { payload.append(UInt8(ascii: "\\")) }
            payload.append(b)
        }
        payload.append(UInt8(ascii: "\""))
    }
}
