import Foundation

/// One measured figure: EdgeQ's value and, when there is one, the anchor's value measured
/// in the same run. `ratio` is EdgeQ ÷ anchor; `better` says which direction is good.
struct BenchFigure: Sendable, Equatable {
    enum Better: String, Sendable { case lower, higher }

    var bench: String
    var figure: String
    var value: Double
    var unit: String
    var anchor: String?
    var anchorValue: Double?
    var better: Better

    /// EdgeQ ÷ anchor, or nil without an anchor (or with an anchor value of 0).
    var ratio: Double? {
        guard let anchorValue, anchorValue != 0 else { return nil }
        return value / anchorValue
    }

    init(bench: String, figure: String, value: Double, unit: String,
         anchor: String? = nil, anchorValue: Double? = nil, better: Better) {
        self.bench = bench
        self.figure = figure
        self.value = value
        self.unit = unit
        self.anchor = anchor
        self.anchorValue = anchorValue
        self.better = better
    }

    /// The JSON line of the benchmark contract (DESIGN.md), keys in contract order.
    var jsonLine: String {
        func num(_ x: Double?) -> String {
            guard let x, x.isFinite else { return "null" }
            return String(format: "%.6g", x)
        }
        func str(_ s: String?) -> String {
            guard let s else { return "null" }
            let escaped = s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            return "\"\(escaped)\""
        }
        return "{\"bench\":\(str(bench)),\"figure\":\(str(figure)),\"value\":\(num(value)),\"unit\":\(str(unit)),"
            + "\"anchor\":\(str(anchor)),\"anchor_value\":\(num(anchorValue)),\"ratio\":\(num(ratio)),"
            + "\"better\":\(str(better.rawValue))}"
    }
}

/// Prints figures as a table for people or as JSON lines.
struct BenchReport {
    var figures: [BenchFigure]

    func print(json: Bool) {
        if json {
            for f in figures { Swift.print(f.jsonLine) }
            return
        }
        let header = ["bench", "figure", "EdgeQ", "unit", "anchor", "anchor value", "ratio", "better"]
        let rows = figures.map { f -> [String] in
            [f.bench, f.figure, Self.format(f.value), f.unit, f.anchor ?? "-",
             f.anchorValue.map(Self.format) ?? "-", f.ratio.map { String(format: "%.2f×", $0) } ?? "-",
             f.better.rawValue]
        }
        let widths = header.indices.map { i in ([header[i]] + rows.map { $0[i] }).map(\.count).max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        Swift.print(line(header))
        Swift.print(line(widths.map { String(repeating: "-", count: $0) }))
        for r in rows { Swift.print(line(r)) }
    }

    static func format(_ x: Double) -> String {
        if x == x.rounded(), abs(x) < 1e9 { return String(Int(x)) }
        if abs(x) >= 100 { return String(format: "%.1f", x) }
        return String(format: "%.3g", x)
    }
}
