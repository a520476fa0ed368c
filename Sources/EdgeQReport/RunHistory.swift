import Foundation

/// What a gateway's data directory records besides the log: the model store's versions with
/// their check reports and trial verdicts, the served history (`models/served.log`), the
/// quarantine marks, and the persisted mode. Read-only: nothing is created or changed.
///
/// The files and their formats are the model store's (docs/operations.md, "The data
/// directory"); a file that cannot be read is listed in `problems`, never fatal.
public struct RunHistory: Sendable {
    /// One check of a retraining (`report.json`'s `checks`).
    public struct Check: Sendable, Equatable {
        /// The check's name (`quantization_agreement`, `q_finite`, …).
        public var name: String
        /// The figure; nil when not applicable.
        public var value: Double?
        /// The limit.
        public var limit: Double?
        /// `passed`, `failed`, `not_applicable` or `advisory` (reported, not used).
        public var status: String
        /// What was measured, on how many rows, in words.
        public var note: String
    }

    /// A stored version's retraining report (`models/vN/report.json`).
    public struct Retraining: Sendable, Equatable {
        /// The version the candidate was stored as.
        public var version: Int
        /// When the retraining started (Unix seconds); nil when the report does not say
        /// (a model imported or stored by hand).
        public var started: Double?
        /// `passed` or `failed`.
        public var verdict: String
        /// The checks, in the report's order.
        public var checks: [Check]
        /// Rows read from the log.
        public var rows: Int?
        /// Seconds the retraining took.
        public var seconds: Double?
        /// Whether it started from the served model's weights.
        public var warmStart: Bool?
    }

    /// A trial's verdict (`models/vN/trial.json`).
    public struct Trial: Sendable, Equatable {
        /// The candidate.
        public var version: Int
        /// `incumbent` or `vN`.
        public var reference: String
        /// `promote`, `reject`, `futile`, `budget-exhausted` or `abandoned`.
        public var verdict: String
        /// Scored block pairs.
        public var pairs: Int
        /// Pairs left out (a block with fewer than half its ticks scored).
        public var voidPairs: Int
        /// Ticks the trial ran.
        public var ticks: Int
        /// The trial's confidence (0.95 = 95 %).
        public var confidence: Double?
        /// The non-inferiority margin (0: superiority).
        public var margin: Double?
        /// Mean over pairs of candidate − reference block return.
        public var meanDifference: Double?
        /// The interval on `meanDifference` the trial decided on (Bonferroni-corrected).
        public var ciLow: Double?
        /// Its upper end.
        public var ciHigh: Double?
        /// The candidate's mean block return.
        public var candidateMean: Double?
        /// The reference's mean block return.
        public var referenceMean: Double?
        /// Reward the trial cost the plant (the candidate's blocks' loss against the reference's).
        public var cost: Double?
        /// Whether the candidate was promoted.
        public var promoted: Bool
        /// When the verdict was written (Unix seconds).
        public var time: Double?
        /// Why it ended without a verdict (`abandoned`), if it did.
        public var reason: String?
    }

    /// One line of `models/served.log`.
    public struct Switch: Sendable, Equatable {
        /// When (Unix seconds).
        public var time: Double
        /// The version served from then on (nil: "none").
        public var version: Int?
        /// Why, as recorded.
        public var reason: String

        /// What kind of switch the reason says it was.
        public var kind: String {
            let r = reason.lowercased()
            if r.hasPrefix("guard") { return "guard trip" }
            if r.contains("rollback") || r.contains("rolled back") { return "rollback" }
            if r.hasPrefix("start") { return "start-up fallback" }
            return "promotion"
        }
    }

    /// A quarantine mark (`models/vN/quarantined`).
    public struct Quarantine: Sendable, Equatable {
        /// The quarantined version.
        public var version: Int
        /// When it was quarantined (Unix seconds).
        public var time: Double
        /// Why (the rollback's or the guard's reason).
        public var reason: String
    }

    /// Every stored version's retraining report, by version.
    public var retrainings: [Retraining] = []
    /// Every trial verdict, oldest first.
    public var trials: [Trial] = []
    /// Every switch of the served model, oldest first.
    public var switches: [Switch] = []
    /// The quarantined versions.
    public var quarantines: [Quarantine] = []
    /// The persisted mode (`gateway-state.json`): mode, reason, since.
    public var mode: (mode: String, reason: String, since: Double)?
    /// Files found but not readable, with why.
    public var problems: [String] = []

    /// Reads `dataDirectory`'s model store and state file.
    public init(dataDirectory: URL) {
        let models = dataDirectory.appendingPathComponent("models")
        let fm = FileManager.default
        let names = (try? fm.contentsOfDirectory(atPath: models.path)) ?? []
        let versions = names.compactMap { n -> Int? in n.hasPrefix("v") ? Int(n.dropFirst()) : nil }.sorted()
        for v in versions {
            let folder = models.appendingPathComponent("v\(v)")
            if let o = readObject(folder.appendingPathComponent("report.json")) {
                let checks = (o["checks"] as? [[String: Any]] ?? []).map { c in
                    Check(name: c["name"] as? String ?? "?", value: number(c["value"]), limit: number(c["limit"]),
                          status: c["status"] as? String ?? ((c["passed"] as? Bool).map { $0 ? "passed" : "failed" } ?? "not_applicable"),
                          note: c["note"] as? String ?? "")
                }
                retrainings.append(Retraining(version: v, started: number(o["started"]), verdict: o["verdict"] as? String ?? "?",
                                              checks: checks, rows: number(o["rows"]).map { Int($0) }, seconds: number(o["seconds"]),
                                              warmStart: o["warmStart"] as? Bool))
            }
            if let o = readObject(folder.appendingPathComponent("trial.json")) {
                trials.append(Trial(
                    version: number(o["version"]).map { Int($0) } ?? v, reference: o["reference"] as? String ?? "?",
                    verdict: o["verdict"] as? String ?? "?", pairs: Int(number(o["pairs"]) ?? 0),
                    voidPairs: Int(number(o["void_pairs"]) ?? 0), ticks: Int(number(o["ticks"]) ?? 0),
                    confidence: number(o["confidence"]), margin: number(o["margin"]), meanDifference: number(o["mean_difference"]),
                    ciLow: number(o["ci_low"]), ciHigh: number(o["ci_high"]), candidateMean: number(o["candidate_mean"]),
                    referenceMean: number(o["reference_mean"]), cost: number(o["cost"]), promoted: o["promoted"] as? Bool ?? false,
                    time: number(o["time"]), reason: o["reason"] as? String))
            }
            let mark = folder.appendingPathComponent("quarantined")
            if let text = try? String(contentsOf: mark, encoding: .utf8) {
                let parts = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ", maxSplits: 1)
                quarantines.append(Quarantine(version: v, time: parts.first.flatMap { Double($0) } ?? 0,
                                              reason: parts.count > 1 ? String(parts[1]) : ""))
            }
        }
        trials.sort { ($0.time ?? 0) < ($1.time ?? 0) }
        if let data = fm.contents(atPath: models.appendingPathComponent("served.log").path) {
            // Complete lines only: a torn last line (a crash mid-append) is not a switch.
            var lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")
            lines.removeLast()
            for line in lines {
                let p = line.split(separator: " ", maxSplits: 2)
                guard p.count >= 2, let t = Double(p[0]) else { continue }
                switches.append(Switch(time: t, version: Int(p[1]), reason: p.count > 2 ? String(p[2]) : ""))
            }
        }
        if let o = readObject(dataDirectory.appendingPathComponent("gateway-state.json")),
           let m = o["mode"] as? String {
            mode = (m, o["reason"] as? String ?? "", number(o["since"]) ?? 0)
        }
    }

    /// The JSON object in `url`: nil when there is no such file; nil and a line in `problems`
    /// when it is not a JSON object.
    private mutating func readObject(_ url: URL) -> [String: Any]? {
        guard let data = FileManager.default.contents(atPath: url.path) else { return nil }
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            problems.append("\(url.path): not a JSON object")
            return nil
        }
        return o
    }
}

/// A JSON number as a Double (nil for null, absent or not a number).
func number(_ v: Any?) -> Double? {
    (v as? NSNumber)?.doubleValue
}
