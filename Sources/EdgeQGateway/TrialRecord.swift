// A running switchback trial on disk, so that a gateway restart does not throw its pairs away
// (docs/operations.md, "The trial and the guard"): on the thermal zone a trial runs for weeks,
// and one lost at every restart would rarely end.

import EdgeQTopicMap
import Foundation

/// What a running trial had done when it last wrote: `models/vN/trial-running.json` beside its
/// candidate, written on the control queue after every block (never on the decision thread),
/// removed at its verdict, read at start. A restart resumes it only against the same reference,
/// with the same settings and adjustment (`mismatch`).
struct TrialRecord: DurableJSONRecord {
    /// One ended block (`SwitchbackTrial.BlockRecord`).
    struct Block: Codable, Sendable, Equatable {
        var arm: String
        var value: Double?
        var baseline: Double
        var ticks: Int
        var skipped: Int
        /// The burn-in's shortfall (absent in a record written before it was kept).
        var burnIn: Double?

        enum CodingKeys: String, CodingKey {
            case arm, value, baseline, ticks, skipped, burnIn = "burn_in_shortfall"
        }
    }

    /// The candidate version.
    var candidate: Int
    /// Its reference: "vN" or "incumbent".
    var reference: String
    /// The trial's seed (decimal: 64 bits), which drew its order.
    var seed: String
    /// Whether its pair differences are adjusted by the candidate's exogenous baseline.
    var adjusted: Bool
    /// The mapping's trial settings it ran with (`String(describing: TrialConfig)`).
    var settings: String
    /// Its ended blocks, in order.
    var blocks: [Block]
    /// The conditions it saw so far ({name: [low, high]}).
    var conditions: [String: [Double]]
    /// When it was written (Unix seconds).
    var time: Double
    /// The earlier trial's noise its early stop pools (nil: none; absent in a record written
    /// before the early stop existed). A resumed trial pools the same.
    var noise: EarlierTrialNoise?

    /// The record of `trial` of `candidate` against `reference` (allocates: once per block).
    init(_ trial: SwitchbackTrial, candidate: Int, reference: Int?, conditions: [String: [Double]], noise: EarlierTrialNoise?) {
        self.candidate = candidate
        self.reference = ModelStore.ControlGroupRecord(reference).description
        seed = String(trial.seed)
        adjusted = trial.adjusted
        settings = String(describing: trial.config)
        blocks = trial.blocks.map { Block(arm: $0.arm.rawValue, value: $0.value, baseline: $0.baseline, ticks: $0.ticks, skipped: $0.skippedTicks,
                                          burnIn: $0.burnInShortfall) }
        self.conditions = conditions
        time = Date().timeIntervalSince1970
        self.noise = noise
    }

    /// The blocks as the trial replays them (nil when an arm is not one).
    var trialBlocks: [SwitchbackTrial.BlockRecord]? {
        var out: [SwitchbackTrial.BlockRecord] = []
        for b in blocks {
            guard let arm = TrialArm(rawValue: b.arm) else { return nil }
            out.append(.init(arm: arm, value: b.value, baseline: b.baseline, ticks: b.ticks, skippedTicks: b.skipped, burnInShortfall: b.burnIn))
        }
        return out
    }

    /// Why this record cannot be resumed by a trial of `candidate` against `reference` with
    /// `config` and `adjusted` (nil: it can).
    func mismatch(candidate: Int, reference: Int?, config: TrialConfig, adjusted: Bool) -> String? {
        if self.candidate != candidate { return "it is of version \(self.candidate)" }
        let now = ModelStore.ControlGroupRecord(reference).description
        if self.reference != now { return "it ran against \(self.reference), the controller in charge now is \(now)" }
        if settings != String(describing: config) { return "the mapping's trial settings changed" }
        if self.adjusted != adjusted { return self.adjusted ? "it was adjusted by the exogenous baseline, now it would not be" : "it was not adjusted, now it would be" }
        if UInt64(seed) == nil || trialBlocks == nil { return "it is malformed" }
        return nil
    }
}
