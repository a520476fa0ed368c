import EdgeQLog
import Foundation

/// A gateway's history as one self-contained HTML page (`edgeq report`): the log summed up in
/// SQL, the model store's retrainings, trials and switches, the audit's commands, and an
/// optional saved `/metrics` scrape. Nothing in the page loads anything: the plots are inline
/// SVG drawn here, the style is inline, there is no script.
public struct RunReport: Sendable {
    /// The data directory.
    public var dataDirectory: URL
    /// The log's `meta.gateway_id`.
    public var gatewayID: String
    /// The log summed up in time buckets.
    public var aggregates: LogAggregates
    /// The model store's history and the persisted mode.
    public var history: RunHistory
    /// The metrics scrape, when one was given.
    public var metrics: MetricsSnapshot?
    /// EdgeQ in control against the incumbent, per tick.
    public var ticks: TickComparison
    /// The header's answer.
    public var verdict: Verdict
    /// For each trial (by candidate version), its blocks as logged: the runs of each arm from the
    /// candidate's first to its last tick of the trial (adjacent blocks of one arm make one run;
    /// a reference block before the first or after the last candidate block is not included).
    public var trialRuns: [Int: [ArmRun]] = [:]
    /// When the report was made (Unix seconds).
    public var generated: Double

    /// Errors building a report; each says what to do.
    public struct Error: Swift.Error, Sendable, CustomStringConvertible {
        public var description: String
        /// No experience log in the directory.
        public var noLog: Bool
    }

    /// Reads `dataDirectory` (its log, model store and state file) and `metricsText` (a saved
    /// `/metrics` scrape, optional).
    ///
    /// - Throws: `RunReport.Error` (`noLog`) when there is no `experience.sqlite`; `LogError`
    ///   when the log cannot be read (not an EdgeQ log, a newer schema, SQLite failed).
    public init(dataDirectory: URL, metricsText: String? = nil, buckets: Int = 120) throws {
        let path = dataDirectory.appendingPathComponent("experience.sqlite").path
        guard FileManager.default.fileExists(atPath: path) else {
            throw Error(description: "no experience log at \(path): give --data the gateway's data directory", noLog: true)
        }
        let log = try ExperienceLog.open(path: path, create: false)
        self.dataDirectory = dataDirectory
        gatewayID = log.gatewayID
        aggregates = try log.aggregates(buckets: buckets)
        history = RunHistory(dataDirectory: dataDirectory)
        metrics = metricsText.map(MetricsSnapshot.init(prometheusText:))
        ticks = TickComparison(aggregates)
        for t in history.trials where t.ticks > 0 {
            guard let time = t.time else { continue }
            // The candidate cannot have decided before its retraining started: the time index bounds the scan.
            let started = history.retrainings.first { $0.version == t.version }?.started
            trialRuns[t.version] = try log.armRuns(candidate: String(t.version), from: started, to: time)
        }
        verdict = Verdict.make(history: history, ticks: ticks)
        generated = Date().timeIntervalSince1970
    }

    // MARK: - Summary figures (what the page's tables show)

    /// Rows and mean reward per tick by mode and actor, over the whole log.
    public struct Group: Sendable, Equatable {
        /// `shadow` or `control`.
        public var mode: String
        /// `incumbent`, `model`, `exploration` or `fallback`.
        public var actor: String
        /// Rows.
        public var rows: Int
        /// Mean reward per tick.
        public var meanReward: Double
    }

    /// The log's rows by mode and actor, in the order shadow, control; incumbent, model, exploration, fallback.
    public var groups: [Group] {
        var sums: [String: (Int, Double)] = [:]
        for c in aggregates.cells { sums["\(c.mode)|\(c.actor)", default: (0, 0)].0 += c.rows; sums["\(c.mode)|\(c.actor)", default: (0, 0)].1 += c.rewardSum }
        var out: [Group] = []
        for m in ["shadow", "control"] {
            for a in Self.actors {
                if let (n, s) = sums["\(m)|\(a)"], n > 0 { out.append(Group(mode: m, actor: a, rows: n, meanReward: s / Double(n))) }
            }
        }
        return out
    }

    static let actors = ["incumbent", "model", "exploration", "fallback"]

    /// Shadow agreement over the whole log: shadow rows where both the incumbent's and the
    /// model's action are known, and how many agree.
    public var agreement: (compared: Int, agreed: Int) {
        aggregates.cells.filter { $0.mode == "shadow" }.reduce((0, 0)) { ($0.0 + $1.compared, $0.1 + $1.agreed) }
    }

    /// Fallback rows by what the log can tell of their cause: no model loaded, the model not run
    /// (its input was unusable: stale, invalid or out of range), or the model run and its answer
    /// unusable (non-finite Q-values, nothing allowed, a command that cannot be rendered).
    public var fallbackKinds: [(kind: String, rows: Int)] {
        var noModel = 0, notRun = 0, ran = 0
        for c in aggregates.cells where c.actor == "fallback" {
            noModel += c.noModel
            notRun += c.noQValues - c.noModel
            ran += c.rows - c.noQValues
        }
        return [("no model loaded", noModel), ("input unusable (model not run)", notRun), ("model's answer unusable", ran)]
    }

    /// Writes the page to `url` (atomically).
    public func write(to url: URL) throws {
        try Data(html().utf8).write(to: url, options: .atomic)
    }
}
