// The control-group guard's evidence on disk, so that a gateway restart does not throw it away
// (docs/operations.md, "The control-group guard"): on a plant whose blocks are days long the
// guard compares one pair every few weeks, and a restart once a month would otherwise keep it
// from ever looking.

import EdgeQTopicMap
import Foundation

/// What the guard of a served model had compared when it last wrote: `models/vN/guard.json`,
/// written on the control queue after every compared pair (never on the decision thread),
/// read at start, and resumed only by a guard of the same served model, control group,
/// adjustment and blocks (`mismatch`).
struct GuardRecord: DurableJSONRecord {
    /// The served version the guard watched.
    var served: Int
    /// Its control group: "vN" or "incumbent" (`ModelStore.ControlGroupRecord`'s description).
    var controlGroup: String
    /// Whether the pair differences were adjusted by the served model's exogenous baseline.
    var adjusted: Bool
    /// The blocks the returns are sums over: "ticks:N" or "episode".
    var block: String
    /// Unscored ticks at the start of each tick block.
    var burnIn: Int
    /// Scored pairs since the guard started (with any it resumed).
    var pairs: Int
    /// Void pairs since the guard started.
    var voidPairs: Int
    /// Probation cycles it had left.
    var probationPairsLeft: Int
    /// The window, oldest first: [served return, control return, served baseline, control baseline].
    var window: [[Double]]
    /// When it was written (Unix seconds).
    var time: Double
    /// The served model's proven conditions as the guard had grown them ({name: [low, high]};
    /// nil in a record written before the field existed).
    var conditions: [String: [Double]]?
    /// What the guard's hand-overs had cost (nil in a record written before the field existed).
    var switching: GuardSwitching?

    enum CodingKeys: String, CodingKey {
        case served, adjusted, block, pairs, window, time, conditions, switching
        case controlGroup = "control_group"
        case burnIn = "burn_in"
        case voidPairs = "void_pairs"
        case probationPairsLeft = "probation_pairs_left"
    }

    /// The record of guard `g` watching `served` against `controlGroup` (allocates: once per
    /// compared pair).
    init(_ g: ControlGroupGuard, served: Int, controlGroup: String) {
        self.served = served
        self.controlGroup = controlGroup
        adjusted = g.adjusted
        block = Self.describe(g.settings.block)
        burnIn = g.settings.burnIn
        pairs = g.comparedPairs
        voidPairs = g.summary.voidPairs
        probationPairsLeft = g.probationPairsLeft
        window = g.window.map { [$0.served, $0.control, $0.servedBaseline, $0.controlBaseline] }
        switching = g.switching
        time = Date().timeIntervalSince1970
    }

    static func describe(_ b: TrialConfig.Block) -> String {
        switch b {
        case .ticks(let n): "ticks:\(n)"
        case .episode: "episode"
        }
    }

    /// The window as the guard takes it back (nil when a pair does not have its four figures).
    var pairsForResume: [ControlGroupGuard.ComparedPair]? {
        var out: [ControlGroupGuard.ComparedPair] = []
        for p in window {
            guard p.count == 4 else { return nil }
            out.append(.init(served: p[0], control: p[1], servedBaseline: p[2], controlBaseline: p[3]))
        }
        return out
    }

    /// Why guard `g`, watching `served` against `controlGroup`, cannot resume this record (nil:
    /// it can).
    func mismatch(_ g: ControlGroupGuard, served: Int, controlGroup: String) -> String? {
        if self.served != served { return "it is of version \(self.served)" }
        if self.controlGroup != controlGroup { return "its control group was \(self.controlGroup), now \(controlGroup)" }
        if adjusted != g.adjusted { return adjusted ? "it was adjusted by the exogenous baseline, now not" : "it was not adjusted by the exogenous baseline, now it is" }
        if block != Self.describe(g.settings.block) || burnIn != g.settings.burnIn {
            return "its blocks were \(block) with burn-in \(burnIn), now \(Self.describe(g.settings.block)) with burn-in \(g.settings.burnIn)"
        }
        if pairsForResume == nil || pairs < window.count { return "it is malformed" }
        return nil
    }
}

/// A record a restart resumes, kept as one JSON file beside a model version.
protocol DurableJSONRecord: Codable, Sendable, Equatable {}

extension DurableJSONRecord {
    /// Reads `url`; nil when there is none or it cannot be decoded.
    static func load(from url: URL) -> Self? {
        guard let data = try? Data(contentsOf: url) else { return nil }
        return try? JSONDecoder().decode(Self.self, from: data)
    }

    /// Writes it to `url` (temporary file, fsync, rename).
    func write(to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try DurableFile.write(try encoder.encode(self), to: url)
    }
}
