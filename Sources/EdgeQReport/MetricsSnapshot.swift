import Foundation

/// The figures the report takes from a saved `/metrics` scrape (Prometheus text), when one is
/// given: what the log does not record — the decision latency and the fallbacks by reason
/// live only in the running gateway's counters.
public struct MetricsSnapshot: Sendable, Equatable {
    /// `edgeq_decision_seconds` as (upper bound in seconds, observations in that bucket alone),
    /// ascending; the `+Inf` bucket has an infinite bound.
    public var decisionBuckets: [(le: Double, count: Double)] = []
    /// `edgeq_decision_seconds_count` and `_sum`.
    public var decisionCount: Double?
    /// `edgeq_decision_seconds_sum` (seconds).
    public var decisionSum: Double?
    /// `edgeq_fallbacks_total` by reason.
    public var fallbacksByReason: [(reason: String, count: Double)] = []

    public static func == (a: MetricsSnapshot, b: MetricsSnapshot) -> Bool {
        a.decisionCount == b.decisionCount && a.decisionSum == b.decisionSum
            && a.decisionBuckets.map(\.le) == b.decisionBuckets.map(\.le) && a.decisionBuckets.map(\.count) == b.decisionBuckets.map(\.count)
            && a.fallbacksByReason.map(\.reason) == b.fallbacksByReason.map(\.reason)
            && a.fallbacksByReason.map(\.count) == b.fallbacksByReason.map(\.count)
    }

    /// Parses Prometheus text exposition; lines it does not need are ignored.
    public init(prometheusText text: String) {
        var cumulative: [(Double, Double)] = []
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let key = String(line[..<space]).trimmingCharacters(in: .whitespaces)
            if key.hasPrefix("edgeq_decision_seconds_bucket{"), let le = Self.label("le", in: key) {
                cumulative.append((le == "+Inf" ? .infinity : Double(le) ?? .nan, value))
            } else if key == "edgeq_decision_seconds_count" {
                decisionCount = value
            } else if key == "edgeq_decision_seconds_sum" {
                decisionSum = value
            } else if key.hasPrefix("edgeq_fallbacks_total{"), let r = Self.label("reason", in: key) {
                fallbacksByReason.append((r, value))
            }
        }
        cumulative = cumulative.filter { !$0.0.isNaN }.sorted { $0.0 < $1.0 }
        var previous = 0.0
        for (le, c) in cumulative {
            decisionBuckets.append((le, max(0, c - previous)))
            previous = c
        }
    }

    /// The value of label `name` in `metric{a="x",name="y"}`.
    static func label(_ name: String, in key: String) -> String? {
        guard let r = key.range(of: "\(name)=\"") else { return nil }
        let rest = key[r.upperBound...]
        guard let end = rest.firstIndex(of: "\"") else { return nil }
        return String(rest[..<end])
    }
}
