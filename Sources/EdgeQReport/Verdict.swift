import EdgeQCore
import EdgeQLog
import Foundation

/// The report's headline: is EdgeQ better than the incumbent here, by how much, how sure.
///
/// Two sources, the better one first (docs/operations.md, "The run report"):
/// 1. **A switchback trial against the incumbent** (`models/vN/trial.json`): a controlled, paired
///    experiment on the plant; the newest decided one. Its interval is the trial's own
///    (Bonferroni-corrected over its looks, at its configured confidence), in reward per block.
///    A trial between two models says which model is better, not this: it is shown, not used.
/// 2. **Otherwise, the log's per-tick rewards**: the mean reward per tick while EdgeQ ran the
///    plant (control mode, actor model, exploration or fallback) minus the incumbent's (actor
///    incumbent, either mode), with a 95 % Welch interval on batch means (batches of consecutive
///    rows, so autocorrelated ticks are not counted as independent). Not a controlled
///    experiment: the two ran at different times, under different conditions.
/// Without either: the question cannot be answered from this directory, and the page says why.
public struct Verdict: Sendable, Equatable {
    /// The answer in one word.
    public enum Answer: String, Sendable {
        /// The interval lies above 0.
        case better
        /// The interval contains 0.
        case notShown = "not_shown"
        /// The interval lies below 0.
        case worse
        /// Nothing to compare.
        case unknown
    }

    /// Where the numbers come from.
    public enum Source: String, Sendable {
        /// A switchback trial; the log's rewards per tick; nothing.
        case trial, perTick = "per_tick", none
    }

    /// The answer.
    public var answer: Answer
    /// Where it comes from.
    public var source: Source
    /// EdgeQ − reference, in `unit`.
    public var difference: Double?
    /// The interval on `difference`.
    public var low: Double?
    /// Its upper end.
    public var high: Double?
    /// The interval's confidence (0.95 = 95 %).
    public var confidence: Double?
    /// The difference as a share of the reference's mean, in percent (nil when the reference's mean is 0 or unknown).
    public var relativePercent: Double?
    /// `reward per block` or `reward per tick`.
    public var unit: String
    /// The sentence at the top of the page.
    public var headline: String
    /// How it was computed, in words.
    public var method: String
}

/// The per-tick comparison of the log: EdgeQ in control vs the incumbent.
public struct TickComparison: Sendable, Equatable {
    /// Rows while EdgeQ ran the plant (mode control, actor model/exploration/fallback).
    public var edgeqRows: Int
    /// Rows of the incumbent (actor incumbent).
    public var incumbentRows: Int
    /// Mean reward per tick of each (row-weighted).
    public var edgeqMean: Double?
    /// The incumbent's.
    public var incumbentMean: Double?
    /// Batches (equal ranges of consecutive rows) with rows of each.
    public var edgeqBatches: Int
    /// Batches with incumbent rows.
    public var incumbentBatches: Int
    /// 95 % interval on the difference (nil with fewer than 2 batches on either side).
    /// 95 % Welch interval on the difference of batch means (nil with fewer than 2 batches on a side).
    public var low: Double?
    /// Its upper end.
    public var high: Double?

    /// The difference of the means, EdgeQ − incumbent.
    public var difference: Double? {
        guard let a = edgeqMean, let b = incumbentMean else { return nil }
        return a - b
    }

    /// From the aggregates' cells.
    public init(_ a: LogAggregates) {
        var e: [Int: (n: Int, s: Double)] = [:]
        var i: [Int: (n: Int, s: Double)] = [:]
        for c in a.batches {
            if c.actor == "incumbent" {
                i[c.batch, default: (0, 0)].n += c.rows
                i[c.batch, default: (0, 0)].s += c.rewardSum
            } else if c.mode == "control" {
                e[c.batch, default: (0, 0)].n += c.rows
                e[c.batch, default: (0, 0)].s += c.rewardSum
            }
        }
        func stats(_ g: [Int: (n: Int, s: Double)]) -> (rows: Int, mean: Double?, se2: Double?, batches: Int) {
            let n = g.values.reduce(0) { $0 + $1.n }
            guard n > 0 else { return (0, nil, nil, 0) }
            let mean = g.values.reduce(0) { $0 + $1.s } / Double(n)
            let b = g.count
            guard b >= 2 else { return (n, mean, nil, b) }
            // Batch-means variance of a ratio mean: Σ n_b² (m_b − M)² / N² × B / (B − 1).
            let ss = g.values.reduce(0.0) { acc, x in
                let d = x.s / Double(x.n) - mean
                return acc + Double(x.n) * Double(x.n) * d * d
            }
            return (n, mean, ss / (Double(n) * Double(n)) * Double(b) / Double(b - 1), b)
        }
        let se = stats(e), si = stats(i)
        edgeqRows = se.rows
        incumbentRows = si.rows
        edgeqMean = se.mean
        incumbentMean = si.mean
        edgeqBatches = se.batches
        incumbentBatches = si.batches
        if let a = se.se2, let b = si.se2, let d = se.mean.flatMap({ x in si.mean.map { x - $0 } }) {
            let v = a + b
            if v > 0 {
                let df = v * v / (a * a / Double(se.batches - 1) + b * b / Double(si.batches - 1))
                let t = StudentT.quantile(0.975, degreesOfFreedom: df)
                low = d - t * v.squareRoot()
                high = d + t * v.squareRoot()
            } else {
                low = d
                high = d
            }
        }
    }
}

extension Verdict {
    /// The headline from the trials, else the per-tick comparison, else "cannot be answered".
    public static func make(history: RunHistory, ticks: TickComparison) -> Verdict {
        let decided = history.trials.filter { $0.verdict != "abandoned" && $0.ciLow != nil && $0.ciHigh != nil && $0.meanDifference != nil }
        if let t = decided.last(where: { $0.reference == "incumbent" }),
           let d = t.meanDifference, let lo = t.ciLow, let hi = t.ciHigh {
            let answer: Answer = lo > 0 ? .better : (hi < 0 ? .worse : .notShown)
            let conf = t.confidence ?? 0.95
            let rel = t.referenceMean.flatMap { $0 != 0 ? d / abs($0) * 100 : nil }
            let word: String
            switch answer {
            case .better: word = "Yes"
            case .worse: word = "No, worse"
            default: word = "Not shown"
            }
            let headline = "\(word): model v\(t.version) against the incumbent in a switchback trial, "
                + "\(fmt(d, sign: true)) reward per block\(rel.map { " (\(fmt($0, sign: true)) %)" } ?? ""), "
                + "\(fmt(conf * 100)) % interval \(fmt(lo)) … \(fmt(hi)) over \(t.pairs) block pairs; verdict \(t.verdict)."
            return Verdict(answer: answer, source: .trial, difference: d, low: lo, high: hi, confidence: conf, relativePercent: rel,
                           unit: "reward per block", headline: headline,
                           method: "The newest decided switchback trial against the incumbent (models/v\(t.version)/trial.json): the candidate and the incumbent ran the plant in randomized block pairs; the difference is the mean over pairs of candidate − incumbent block return, the interval the trial's own (Student t, Bonferroni-corrected over its looks, at its configured confidence).")
        }
        // Trials between two models say which model is better, not whether EdgeQ beats the incumbent.
        let modelTrials = decided.count
        let aside = modelTrials == 0 ? "" : " \(modelTrials) decided trial\(modelTrials == 1 ? "" : "s") between models (not against the incumbent) \(modelTrials == 1 ? "is" : "are") in the trials section below."
        if let d = ticks.difference {
            let rel = ticks.incumbentMean.flatMap { $0 != 0 ? d / abs($0) * 100 : nil }
            let method = "No decided trial against the incumbent in this directory.\(aside) Mean reward per tick while EdgeQ ran the plant (control mode: model, exploration and fallback rows; \(ticks.edgeqRows) rows) minus the incumbent's (\(ticks.incumbentRows) rows), with a 95 % Welch interval on batch means (a batch: consecutive rows, the log cut in equal ranges of row ids). Not a controlled experiment: the two ran at different times, under different conditions."
            if let lo = ticks.low, let hi = ticks.high {
                let answer: Answer = lo > 0 ? .better : (hi < 0 ? .worse : .notShown)
                let word = answer == .better ? "Probably" : (answer == .worse ? "No, worse" : "Not shown")
                return Verdict(answer: answer, source: .perTick, difference: d, low: lo, high: hi, confidence: 0.95, relativePercent: rel,
                               unit: "reward per tick",
                               headline: "\(word): \(fmt(d, sign: true)) reward per tick\(rel.map { " (\(fmt($0, sign: true)) %)" } ?? "") with EdgeQ in control against the incumbent, 95 % interval \(fmt(lo)) … \(fmt(hi)); from the log, not from a trial.",
                               method: method)
            }
            return Verdict(answer: .unknown, source: .perTick, difference: d, low: nil, high: nil, confidence: nil, relativePercent: rel,
                           unit: "reward per tick",
                           headline: "Cannot say how sure: \(fmt(d, sign: true)) reward per tick with EdgeQ in control against the incumbent, but too little of either (fewer than 2 batches of consecutive rows) for an interval.",
                           method: method)
        }
        let why = ticks.edgeqRows == 0 ? "EdgeQ never ran the plant (no control-mode rows of the model) and no trial against the incumbent was decided" : "the incumbent has no rows to compare with and no trial against it was decided"
        return Verdict(answer: .unknown, source: .none, difference: nil, low: nil, high: nil, confidence: nil, relativePercent: nil,
                       unit: "", headline: "Cannot be answered from this data directory: \(why).",
                       method: "A verdict needs a decided switchback trial against the incumbent, or rows of both EdgeQ in control and the incumbent.\(aside)")
    }
}

/// A number for reading: 4 significant digits, a sign when asked.
func fmt(_ x: Double, sign: Bool = false) -> String {
    guard x.isFinite else { return "—" }
    var s = String(format: "%.4g", x)
    if sign && x > 0 { s = "+" + s }
    return s
}
