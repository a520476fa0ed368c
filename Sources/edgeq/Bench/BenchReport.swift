import EdgeQCore
import Foundation

/// One figure: EdgeQ's value and, when there is one, the anchor's value measured in the same
/// run. `ratio` is EdgeQ ÷ anchor; `better` says which direction is good.
///
/// A figure is measured in this run or it is printed as not measured (`value` or
/// `anchorValue` nil, with `reason`): never a recorded constant.
///
/// When EdgeQ and the anchor were measured alternately in rounds (EdgeQ, anchor, EdgeQ,
/// anchor, …), `roundRatios` holds each round's EdgeQ ÷ anchor; `ratio` is then their median
/// and `value` / `anchorValue` the medians of each side's per-round values (so `ratio` need
/// not equal `value ÷ anchorValue`).
struct BenchFigure: Sendable, Equatable {
    enum Better: String, Sendable { case lower, higher }

    var bench: String
    var figure: String
    /// EdgeQ's value; nil when it could not be measured in this run (see `reason`).
    var value: Double?
    var unit: String
    var anchor: String?
    /// The anchor's value; nil when there is no anchor or it could not run (see `reason`).
    var anchorValue: Double?
    var better: Better
    /// EdgeQ ÷ anchor of each round when the two were measured alternately.
    var roundRatios: [Double] = []
    /// Why `value` or `anchorValue` is missing: "not measured: …".
    var reason: String?
    /// A quantile pooled over alternated rounds (`value`, `anchorValue`: each side's pooled
    /// quantile; `ratio` their quotient) with the bootstrap interval on the ratio.
    var pooled: PooledQuantileRatio?

    init(bench: String, figure: String, value: Double?, unit: String,
         anchor: String? = nil, anchorValue: Double? = nil, better: Better,
         roundRatios: [Double] = [], reason: String? = nil) {
        self.bench = bench
        self.figure = figure
        self.value = value.flatMap { $0.isFinite ? $0 : nil }
        self.unit = unit
        self.anchor = anchor
        self.anchorValue = anchorValue.flatMap { $0.isFinite ? $0 : nil }
        self.better = better
        self.roundRatios = roundRatios.filter(\.isFinite)
        self.reason = reason
        if self.reason == nil {
            if value == nil || self.value == nil {
                self.reason = "not measured"
            } else if anchor != nil && self.anchorValue == nil {
                self.reason = "anchor not measured"
            }
        }
    }

    /// A figure from rounds that alternated EdgeQ and the anchor: `pairs[i]` is round i's
    /// (EdgeQ, anchor) — the anchor's nil when it did not run that round. `value` and
    /// `anchorValue` are the medians of each side, `ratio` the median of the per-round ratios.
    /// `anchorMissing` is the reason printed when the anchor ran in no round.
    static func rounds(bench: String, figure: String, unit: String, anchor: String?, pairs: [(Double, Double?)],
                       better: Better, anchorMissing: String? = nil) -> BenchFigure {
        let mine = pairs.map(\.0).filter(\.isFinite)
        let theirs = pairs.compactMap(\.1).filter(\.isFinite)
        let ratios = pairs.compactMap { p -> Double? in
            guard let a = p.1, a != 0, a.isFinite, p.0.isFinite else { return nil }
            return p.0 / a
        }
        var reason: String?
        if anchor != nil && theirs.isEmpty { reason = anchorMissing ?? "anchor not measured" }
        return BenchFigure(bench: bench, figure: figure, value: median(mine), unit: unit, anchor: anchor,
                           anchorValue: median(theirs), better: better, roundRatios: ratios, reason: reason)
    }

    /// A figure from a quantile of the samples of every round pooled per side (`pooled`):
    /// `value` and `anchorValue` are the pooled quantiles, `ratio` their quotient, and the JSON
    /// line adds `rounds`, `samples`, `ratio_low`, `ratio_high` and `confidence` (the interval).
    static func pooled(bench: String, figure: String, unit: String, anchor: String, _ p: PooledQuantileRatio,
                       better: Better) -> BenchFigure {
        var f = BenchFigure(bench: bench, figure: figure, value: p.value, unit: unit, anchor: anchor,
                            anchorValue: p.anchorValue, better: better)
        f.pooled = p
        return f
    }

    /// EdgeQ ÷ anchor: the median of the per-round ratios when there are rounds, else
    /// `value ÷ anchorValue`; nil without both (or with an anchor value of 0).
    var ratio: Double? {
        if !roundRatios.isEmpty { return Self.median(roundRatios) }
        guard let value, let anchorValue, anchorValue != 0 else { return nil }
        return value / anchorValue
    }

    /// The smallest and largest per-round ratio (nil without rounds).
    var ratioRange: (min: Double, max: Double)? {
        guard let lo = roundRatios.min(), let hi = roundRatios.max() else { return nil }
        return (lo, hi)
    }

    static func median(_ xs: [Double]) -> Double? {
        let s = xs.sorted()
        guard !s.isEmpty else { return nil }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    static func == (a: BenchFigure, b: BenchFigure) -> Bool {
        a.bench == b.bench && a.figure == b.figure && a.value == b.value && a.unit == b.unit && a.anchor == b.anchor
            && a.anchorValue == b.anchorValue && a.better == b.better && a.roundRatios == b.roundRatios && a.reason == b.reason
            && a.pooled == b.pooled
    }

    /// The JSON line of the benchmark contract, keys in contract order:
    /// bench, figure, value, unit, anchor, anchor_value, ratio, better; then `rounds`,
    /// `ratio_min`, `ratio_max` (per-round ratios, when EdgeQ and the anchor alternated in
    /// rounds) or, for a pooled quantile, `rounds`, `samples` (per side, pooled), `ratio_low`,
    /// `ratio_high` and `confidence` (the bootstrap interval on `ratio`); and `reason` (when a
    /// value or the anchor's value was not measured).
    var jsonLine: String {
        func num(_ x: Double?) -> String {
            guard let x, x.isFinite else { return "null" }
            return String(format: "%.6g", x)
        }
        func str(_ s: String?) -> String { s.map(jsonString) ?? "null" }
        var line = "{\"bench\":\(str(bench)),\"figure\":\(str(figure)),\"value\":\(num(value)),\"unit\":\(str(unit)),"
            + "\"anchor\":\(str(anchor)),\"anchor_value\":\(num(anchorValue)),\"ratio\":\(num(ratio)),"
            + "\"better\":\(str(better.rawValue))"
        if let r = ratioRange {
            line += ",\"rounds\":\(roundRatios.count),\"ratio_min\":\(num(r.min)),\"ratio_max\":\(num(r.max))"
        } else if let p = pooled {
            line += ",\"rounds\":\(p.rounds),\"samples\":\(min(p.samples.value, p.samples.anchor)),"
                + "\"ratio_low\":\(num(p.low)),\"ratio_high\":\(num(p.high)),\"confidence\":\(num(p.level))"
        }
        if let reason { line += ",\"reason\":\(str(reason))" }
        return line + "}"
    }
}

/// The last non-empty line of a program's standard error, at most `limit` characters: what a
/// "not measured" reason quotes.
func lastLine(_ text: String, limit: Int = 200) -> String {
    let line = text.split(separator: "\n").last { !$0.trimmingCharacters(in: .whitespaces).isEmpty } ?? ""
    return String(line.suffix(limit))
}

/// Prints figures as a table for people or as JSON lines.
struct BenchReport {
    var figures: [BenchFigure]

    func print(json: Bool) {
        if json {
            for f in figures { Swift.print(f.jsonLine) }
            return
        }
        let header = ["bench", "figure", "EdgeQ", "unit", "anchor", "anchor value", "ratio", "rounds: min–max", "better"]
        var notes: [String] = []
        let rows = figures.map { f -> [String] in
            var anchorCell = f.anchorValue.map(Self.format) ?? "-"
            var valueCell = f.value.map(Self.format) ?? "not measured"
            if let reason = f.reason {
                notes.append("\(f.bench) / \(f.figure)\(f.anchor.map { " / " + $0 } ?? ""): \(reason)")
                if f.value == nil { valueCell = "not measured [\(notes.count)]" }
                if f.anchor != nil && f.anchorValue == nil { anchorCell = "not measured [\(notes.count)]" }
            }
            let range = f.ratioRange.map { String(format: "%d: %.2f–%.2f", f.roundRatios.count, $0.min, $0.max) }
                ?? f.pooled.map { "\($0.rounds) pooled" } ?? "-"
            var ratioCell = f.ratio.map { String(format: "%.2f×", $0) } ?? "-"
            if let p = f.pooled { ratioCell += String(format: " [%.2f–%.2f, %.0f%%]", p.low, p.high, p.level * 100) }
            return [f.bench, f.figure, valueCell, f.unit, f.anchor ?? "-", anchorCell, ratioCell, range, f.better.rawValue]
        }
        let widths = header.indices.map { i in ([header[i]] + rows.map { $0[i] }).map(\.count).max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        Swift.print(line(header))
        Swift.print(line(widths.map { String(repeating: "-", count: $0) }))
        for r in rows { Swift.print(line(r)) }
        for (i, n) in notes.enumerated() { Swift.print("[\(i + 1)] \(n)") }
    }

    static func format(_ x: Double) -> String {
        if x == x.rounded(), abs(x) < 1e9 { return String(Int(x)) }
        if abs(x) >= 100 { return String(format: "%.1f", x) }
        return String(format: "%.3g", x)
    }
}
