import EdgeQLog
import EdgeQModel
import EdgeQTopicMap

/// An accepted plant model fit kept between retrainings (docs/learning.md, "The plant
/// model"): the model, its report, how many samples it was fitted on and how far into the log
/// the rows it was given reached. The gateway keeps the last one in memory and hands it to the
/// next retraining (`Retrainer.runWithPlantModel(…, plantFit:)`), which reuses it instead of
/// refitting while the log has grown by less than `CheckPolicy.plantModelRefitShare` of
/// `fittedOnSamples` since (`Retrainer.plantFitReuse`).
///
/// A fit belongs to one experience log: ids are compared with the log's row ids. A refused fit
/// is never kept (the next retraining tries again).
public struct PlantModelFit: Sendable {
    /// What a fit depends on besides the log's rows: a retraining whose key differs refits.
    public struct Key: Sendable, Equatable {
        /// The mapping's controlled signals, in order (the model's outputs).
        public var controlled: [String]
        /// The mapping's exogenous signals, in order (the model's given inputs).
        public var exogenous: [String]
        /// The mapping's number of actions.
        public var actionCount: Int
        /// The mapping's canonical definition (`TopicMap.canonicalDefinition`: features, signal
        /// decoding, actions).
        public var mapping: String
        /// `CheckPolicy.plantModelSamples` (how many of the newest rows a fit reads).
        public var sampleCap: Int
        /// `RetrainLimits.window` (nil: the whole log).
        public var window: Int?
        /// The selection's seed (`Retrainer.seed`).
        public var seed: UInt64
        /// The classes the fit tried (`TopicMap.modelClasses`; nil: every class).
        public var classes: [String]?

        /// The key of a retraining with `map`, `policy`, the limits' `window` and `seed`.
        public init(map: TopicMap, policy: CheckPolicy, window: Int?, seed: UInt64) {
            let names = map.modelSignalNames
            controlled = names.controlled
            exogenous = names.exogenous
            actionCount = map.actions.count
            mapping = map.canonicalDefinition
            sampleCap = policy.plantModelSamples
            self.window = window
            self.seed = seed
            classes = map.modelClasses?.map(\.rawValue)
        }
    }

    /// The accepted model.
    public var model: any PlantModel
    /// The selection's report as fitted (`reused` false).
    public var report: PlantFitReport
    /// Samples the selection was given (training and held out).
    public var fittedOnSamples: Int
    /// The id of the newest log row the fit's read was given: rows after it are new.
    public var lastRowID: Int64
    /// Rows the fit's read was given.
    public var rowsRead: Int
    /// What the fit depends on besides the rows.
    public var key: Key

    /// A kept fit.
    public init(model: any PlantModel, report: PlantFitReport, fittedOnSamples: Int, lastRowID: Int64, rowsRead: Int, key: Key) {
        self.model = model
        self.report = report
        self.fittedOnSamples = fittedOnSamples
        self.lastRowID = lastRowID
        self.rowsRead = rowsRead
        self.key = key
    }
}

/// Whether a retraining reuses the kept plant model fit, and why.
public enum PlantFitReuse: Sendable, Equatable {
    /// Reuse it: `newSamples` usable samples were logged since it, fewer than `threshold`.
    case reuse(newSamples: Int, threshold: Double)
    /// Fit again, for `reason` (words for the log).
    case refit(reason: String)

    /// True for `.reuse`.
    public var reuses: Bool {
        if case .reuse = self { return true }
        return false
    }
}

extension Retrainer {
    /// The reuse rule (docs/learning.md, "The plant model"): refit when there is no kept fit,
    /// when what it depends on changed (`PlantModelFit.Key`: the mapping, the controlled or
    /// exogenous signals, the sample cap, the window), when the log no longer reaches the fit's
    /// newest row (a different or rewritten log), or when the usable samples logged since the
    /// fit are at least `CheckPolicy.plantModelRefitShare` × the samples it was fitted on;
    /// otherwise reuse it.
    ///
    /// - Parameters:
    ///   - previous: the kept fit, if any.
    ///   - key: this retraining's key.
    ///   - rows: the rows this retraining reads (oldest first, ids increasing).
    ///   - reader: the plant-data reader (counts the usable samples among the new rows the way
    ///     a fit reads them).
    public func plantFitReuse(previous: PlantModelFit?, key: PlantModelFit.Key, rows: [LoggedTransition],
                              reader: PlantDataReader) -> PlantFitReuse {
        guard let previous else { return .refit(reason: "no accepted fit kept") }
        guard policy.plantModelRefitShare > 0 else { return .refit(reason: "reuse is off (CheckPolicy.plantModelRefitShare 0)") }
        guard previous.key == key else { return .refit(reason: "the mapping, its signal roles, the sample cap or the window changed") }
        guard let newest = rows.last?.id, newest >= previous.lastRowID else {
            return .refit(reason: "the log does not reach the fit's newest row \(previous.lastRowID) (a different or rewritten log)")
        }
        let start = rows.partitionPoint { $0.id <= previous.lastRowID }
        let newSamples = start < rows.count ? ((try? reader.read(rows: Array(rows[start...])).summary.rowsUsed) ?? 0) : 0
        let threshold = policy.plantModelRefitShare * Double(previous.fittedOnSamples)
        if Double(newSamples) >= threshold {
            return .refit(reason: "\(newSamples) usable samples since the fit on \(previous.fittedOnSamples), at least \(roundedForReading(policy.plantModelRefitShare)) of them")
        }
        return .reuse(newSamples: newSamples, threshold: threshold)
    }
}

extension Array {
    /// The first index whose element does not satisfy `belongs`, for an array where every
    /// element that satisfies it comes before every one that does not (binary search).
    func partitionPoint(_ belongs: (Element) -> Bool) -> Int {
        var lo = 0, hi = count
        while lo < hi {
            let mid = (lo + hi) / 2
            if belongs(self[mid]) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
}
