import EdgeQCore
import EdgeQLog
import EdgeQNet
import EdgeQRetrain
import EdgeQSparkplug
import EdgeQTopicMap
import Foundation

/// The gateway's side of a tick: the decision core (`DecisionCore`: state, transitions,
/// safety, exploration, rendered writes, shared with the lab), the served engine, the
/// switchback trial and the control-group guard, and the shadow report's buffer (no allocation per message).
///
/// One owner at a time, and the compiler proves it: the gateway keeps it in a
/// `Mutex<DecisionState>` and every decision function takes it `inout` from inside
/// `withLock` (the network thread for message-triggered ticks, the `run()` thread for periodic
/// ones). Nothing else can reach it; what other threads need (the mode, the served model, the
/// guard's figures, counters) goes through atomics, mutexes and the metrics.
struct DecisionState {
    var core: DecisionCore
    var engine: QEngine?
    var engineGeneration = -1
    var engineModel: ServedModel?
    var payload: [UInt8] = []
    /// The candidate slot's generation last picked up.
    var candidateEngineGeneration = 0
    /// The switchback trial under way (TrialControl.swift), its candidate and engine, and its
    /// reference (the model served when it started; nil: the incumbent).
    var trial: SwitchbackTrial?
    var trialCandidate: ServedModel?
    var trialEngine: QEngine?
    var trialReference: ServedModel?
    /// The earlier trial's noise the running trial's early stop pools (for its record).
    var trialNoise: EarlierTrialNoise?
    /// The candidate's exogenous baseline, run every tick of its trial (nil: the trial is not
    /// adjusted); set up when the trial starts, so a tick allocates nothing for it.
    var trialBaseline: BaselineEvaluator?
    /// The control-group guard of the served model, and its control group's controller (the
    /// model served before it; nil: the incumbent).
    var controlGroup: ControlGroupGuard?
    var previousModel: ServedModel?
    var previousEngine: QEngine?
    /// The served model's exogenous baseline, run every tick while its guard is active (nil: the
    /// guard is not adjusted).
    var guardBaseline: BaselineEvaluator?
    /// The guard tripped on the served model: until another model is served, the previous
    /// controller runs the plant in control mode (the tripped one never acts again while the
    /// control queue rolls back or falls back, nor after a later `cmd/mode control`).
    var guardTripped = false
    /// The guard's compared pairs when its record was last handed to the control queue.
    var guardRecordedPairs = 0
    /// The running trial's conditions: per condition (`Gateway.conditionNames` order), the
    /// smallest and largest value over the ticks of its blocks, either arm (sized when it starts).
    /// This tick's conditions (`Gateway.conditionNames` order): the exogenous values, then their
    /// exponential means over a block (sized on the first tick).
    var conditionValues: [Double] = []
    var trialConditionLow: [Double] = []
    var trialConditionHigh: [Double] = []
    /// The served model's proven conditions (its promoting trial's, grown as the guard watched
    /// it beyond them), per exogenous signal: the range and the margin beyond it that counts as
    /// new (a tenth of the trial's range), per condition; NaN where it has none.
    var provenLow: [Double] = []
    var provenHigh: [Double] = []
    var provenMargin: [Double] = []
    /// A novel condition was seen; the guard's probation is asked for at the trial's next pair
    /// boundary (at once without a trial).
    var noveltyPending = false
    /// Who acted when the open transition was opened (trial or guard arm; nil: neither).
    var openRole: ControllerRole?
    /// The Sparkplug B sessions (births, aliases, sequence numbers) of the edge nodes whose
    /// metrics feed signals.
    var sparkplug: SparkplugReceiver

    init(map: TopicMap, explorationSeed: UInt64) {
        core = DecisionCore(map: map, explorationSeed: explorationSeed)
        sparkplug = SparkplugReceiver(map: map)
        payload.reserveCapacity(1024)
    }

    // MARK: - The shadow report's JSON, appended to `payload` without allocating

    mutating func appendLastIncumbent() {
        if let v = core.lastIncumbentReported { appendInt(v) } else { payload.append(contentsOf: "null".utf8) }
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

