import Foundation
import Synchronization

/// A monotonically increasing counter, safe to bump from the decision thread (one atomic
/// add, no lock, no allocation) and to read from the metrics server.
public final class Counter: Sendable {
    /// Metric name (Prometheus conventions: `edgeq_..._total`).
    public let name: String
    /// Label pairs, rendered in order.
    public let labels: [(String, String)]
    private let storage = Atomic<UInt64>(0)

    init(name: String, labels: [(String, String)]) {
        self.name = name
        self.labels = labels
    }

    /// Adds `n` (default 1).
    @inline(__always)
    public func increment(by n: UInt64 = 1) {
        storage.add(n, ordering: .relaxed)
    }

    /// The current value.
    public var value: UInt64 { storage.load(ordering: .relaxed) }

    /// Sets the total, for counters that mirror a count kept elsewhere (the decoder's
    /// per-reason counts, the MQTT client's drops). Only ever called with a larger value.
    public func mirror(_ total: UInt64) {
        storage.store(total, ordering: .relaxed)
    }
}

/// A value that goes up and down (stored as the bit pattern of a Double).
public final class Gauge: Sendable {
    /// Metric name.
    public let name: String
    /// Label pairs, rendered in order.
    public let labels: [(String, String)]
    private let storage = Atomic<UInt64>(0)

    init(name: String, labels: [(String, String)]) {
        self.name = name
        self.labels = labels
    }

    /// Sets the value.
    @inline(__always)
    public func set(_ v: Double) { storage.store(v.bitPattern, ordering: .relaxed) }

    /// The current value.
    public var value: Double { Double(bitPattern: storage.load(ordering: .relaxed)) }
}

/// A histogram with fixed bucket bounds (cumulative on output, as Prometheus wants).
/// Observing takes an uncontended lock (~20 ns) and allocates nothing.
public final class Histogram: Sendable {
    /// Metric name.
    public let name: String
    /// Upper bounds of the buckets, ascending (+Inf is implicit).
    public let bounds: [Double]
    private struct State {
        var counts: [UInt64]
        var sum: Double = 0
        var count: UInt64 = 0
    }
    private let state: Mutex<State>

    init(name: String, bounds: [Double]) {
        self.name = name
        self.bounds = bounds
        state = Mutex(State(counts: [UInt64](repeating: 0, count: bounds.count + 1)))
    }

    /// Records one observation.
    public func observe(_ v: Double) {
        var i = 0
        while i < bounds.count && v > bounds[i] { i += 1 }
        state.withLock {
            $0.counts[i] &+= 1
            $0.sum += v
            $0.count &+= 1
        }
    }

    /// (cumulative counts per bound + Inf, sum, count).
    public func snapshot() -> (cumulative: [UInt64], sum: Double, count: UInt64) {
        state.withLock { s in
            var running: UInt64 = 0
            let cum = s.counts.map { c -> UInt64 in running &+= c; return running }
            return (cum, s.sum, s.count)
        }
    }

    /// The value below which a share `q` (0…1) of observations fall, from the buckets
    /// (the upper bound of the bucket holding the q-th observation; +Inf as the last bound).
    public func quantileUpperBound(_ q: Double) -> Double {
        let snap = snapshot()
        guard snap.count > 0 else { return .nan }
        let target = UInt64((Double(snap.count) * q).rounded(.up))
        for (i, c) in snap.cumulative.enumerated() where c >= target {
            return i < bounds.count ? bounds[i] : .infinity
        }
        return .infinity
    }
}

/// All of a gateway's metrics, rendered in the Prometheus text exposition format.
/// Metrics are created at start-up (their labels are known from the mapping file), so
/// the decision path only bumps existing objects.
public final class MetricsRegistry: Sendable {
    private struct Family {
        var name: String
        var help: String
        var type: String
        var counters: [Counter] = []
        var gauges: [Gauge] = []
        var histograms: [Histogram] = []
    }
    private let families = Mutex<[Family]>([])
    private let collectors = Mutex<[@Sendable () -> Void]>([])

    /// An empty registry.
    public init() {}

    /// Runs `collect` before every rendering: it copies figures kept elsewhere (queue depths,
    /// log metrics) into this registry's gauges and counters.
    public func onCollect(_ collect: @escaping @Sendable () -> Void) {
        collectors.withLock { $0.append(collect) }
    }

    private func withFamily<T>(_ name: String, _ help: String, _ type: String, _ body: (inout Family) -> T) -> T {
        families.withLock { fams in
            if let i = fams.firstIndex(where: { $0.name == name }) { return body(&fams[i]) }
            fams.append(Family(name: name, help: help, type: type))
            return body(&fams[fams.count - 1])
        }
    }

    /// A counter `name{labels}`; the same name and labels give the same object.
    public func counter(_ name: String, help: String, labels: [(String, String)] = []) -> Counter {
        withFamily(name, help, "counter") { fam in
            if let c = fam.counters.first(where: { Self.same($0.labels, labels) }) { return c }
            let c = Counter(name: name, labels: labels)
            fam.counters.append(c)
            return c
        }
    }

    /// A gauge `name{labels}`.
    public func gauge(_ name: String, help: String, labels: [(String, String)] = []) -> Gauge {
        withFamily(name, help, "gauge") { fam in
            if let g = fam.gauges.first(where: { Self.same($0.labels, labels) }) { return g }
            let g = Gauge(name: name, labels: labels)
            fam.gauges.append(g)
            return g
        }
    }

    /// A histogram `name` with the given bucket bounds.
    public func histogram(_ name: String, help: String, bounds: [Double]) -> Histogram {
        withFamily(name, help, "histogram") { fam in
            if let h = fam.histograms.first { return h }
            let h = Histogram(name: name, bounds: bounds)
            fam.histograms.append(h)
            return h
        }
    }

    private static func same(_ a: [(String, String)], _ b: [(String, String)]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }

    /// The text exposition (version 0.0.4) of every metric.
    public func render() -> String {
        func labelText(_ labels: [(String, String)], extra: (String, String)? = nil) -> String {
            let all = labels + (extra.map { [$0] } ?? [])
            guard !all.isEmpty else { return "" }
            return "{" + all.map { k, v in
                "\(k)=\"\(v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n"))\""
            }.joined(separator: ",") + "}"
        }
        func num(_ x: Double) -> String {
            if x.isNaN { return "NaN" }
            if x.isInfinite { return x > 0 ? "+Inf" : "-Inf" }
            return x == x.rounded() && abs(x) < 1e15 ? String(Int64(x)) : String(x)
        }
        for c in collectors.withLock({ $0 }) { c() }
        var out = ""
        for fam in families.withLock({ $0 }) {
            out += "# HELP \(fam.name) \(fam.help)\n# TYPE \(fam.name) \(fam.type)\n"
            for c in fam.counters { out += "\(fam.name)\(labelText(c.labels)) \(c.value)\n" }
            for g in fam.gauges { out += "\(fam.name)\(labelText(g.labels)) \(num(g.value))\n" }
            for h in fam.histograms {
                let snap = h.snapshot()
                for (i, c) in snap.cumulative.enumerated() {
                    let le = i < h.bounds.count ? num(h.bounds[i]) : "+Inf"
                    out += "\(fam.name)_bucket\(labelText([], extra: ("le", le))) \(c)\n"
                }
                out += "\(fam.name)_sum \(num(snap.sum))\n\(fam.name)_count \(snap.count)\n"
            }
        }
        return out
    }
}
