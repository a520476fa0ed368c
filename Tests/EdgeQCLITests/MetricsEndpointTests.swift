import EdgeQTestSupport
import Foundation
import Testing

/// The metrics endpoint of the real `edgeq run`, checked with code EdgeQ did not write:
/// prometheus_client's parser reads the whole exposition (it raises on any line it cannot
/// read) and finds the same samples and values as a plain scrape; then hostile requests
/// (random bytes, truncated and huge heads, a TLS hello, pipelining, a client that never
/// speaks) each followed by a health check, and a client that dribbles its request one byte
/// at a time while a scraper asks for /metrics.
@Suite struct MetricsEndpointTests {
    static let probe = PackageRoot.url.appendingPathComponent("Tests/EdgeQCLITests/python/metrics_probe.py").path

    /// `name{k="v",...}` with the labels sorted, the key both sides compare on.
    static func key(_ name: String, _ labels: [String: String]) -> String {
        labels.isEmpty ? name : name + "{" + labels.keys.sorted().map { "\($0)=\"\(labels[$0] ?? "")\"" }.joined(separator: ",") + "}"
    }

    /// EdgeQ's own lines, read naively (EdgeQ escapes no label value of these metrics).
    static func ownSamples(_ text: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            let series = String(line[..<space])
            let valueText = String(line[line.index(after: space)...])
            let value = valueText == "+Inf" ? Double.infinity : valueText == "NaN" ? Double.nan : Double(valueText)
            guard let value else { continue }
            var labels: [String: String] = [:]
            var name = series
            if let open = series.firstIndex(of: "{"), series.hasSuffix("}") {
                name = String(series[..<open])
                let inner = series[series.index(after: open)..<series.index(before: series.endIndex)]
                for pair in inner.split(separator: ",") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    if kv.count == 2 { labels[String(kv[0])] = String(kv[1].dropFirst().dropLast()) }
                }
            }
            out[key(name, labels)] = value
        }
        return out
    }

    @Test func prometheusClientParsesEverySample() throws {
        try MetricsBindTests.withGateway([]) { (port: UInt16) throws -> Void in
            let own = try ChildProcess.run("curl", ["-s", "--max-time", "10", "http://127.0.0.1:\(port)/metrics"], timeout: 20)
            let parsed = try ChildProcess.run("python3", [Self.probe, "parse", "http://127.0.0.1:\(port)/metrics"], timeout: 60)
            try #require(parsed.code == 0, "prometheus_client could not parse the exposition:\n\(parsed.stderr)")
            struct Family: Decodable { let name: String; let type: String; let help: String }
            struct Sample: Decodable { let name: String; let labels: [String: String]; let value: String }
            struct Parsed: Decodable { let families: [Family]; let samples: [Sample] }
            let result = try JSONDecoder().decode(Parsed.self, from: Data(parsed.stdout.utf8))
            #expect(result.families.count >= 20, "only \(result.families.count) families")
            for f in result.families {
                #expect(!f.help.isEmpty, "\(f.name) has no HELP")
                #expect(["counter", "gauge", "histogram"].contains(f.type), "\(f.name) is typed \(f.type)")
            }
            #expect(result.families.contains { $0.name == "edgeq_decision_seconds" && $0.type == "histogram" })
            // The gauges of a live process may move between two scrapes (resident memory, uptime):
            // compare names and labels everywhere, values where they cannot move.
            let mine = Self.ownSamples(own.stdout)
            let theirs = Dictionary(result.samples.map { (Self.key($0.name, $0.labels), Double($0.value) ?? .nan) }, uniquingKeysWith: { a, _ in a })
            #expect(Set(mine.keys) == Set(theirs.keys),
                    "only EdgeQ: \(Set(mine.keys).subtracting(theirs.keys).sorted()); only the parser: \(Set(theirs.keys).subtracting(mine.keys).sorted())")
            let steady = theirs.filter { k, _ in k.hasPrefix("edgeq_decisions_total") || k.hasPrefix("edgeq_fallbacks_total") || k.hasPrefix("edgeq_model_version") }
            #expect(!steady.isEmpty)
            for (k, v) in steady { #expect(mine[k] == v, "\(k): EdgeQ \(String(describing: mine[k])), parser \(v)") }
        }
    }

    @Test func hostileClientsDelayNobody() throws {
        try MetricsBindTests.withGateway([]) { (port: UInt16) throws -> Void in
            let run = try ChildProcess.run("python3", [Self.probe, "fuzz", "127.0.0.1", String(port), "80", "7"], timeout: 300)
            try #require(run.code == 0, "the probe failed:\n\(run.stderr)")
            struct Verdict: Decodable {
                let sent: Int
                let answered_after: Int
                let failures: [String]
                let slow_client_scrapes: Int
                let slow_client_scrapes_ok: Int
                let healthy_at_end: Bool
            }
            let v = try JSONDecoder().decode(Verdict.self, from: Data(run.stdout.utf8))
            #expect(v.failures.isEmpty, "no answer after: \(v.failures)")
            #expect(v.answered_after == v.sent)
            #expect(v.slow_client_scrapes_ok == v.slow_client_scrapes,
                    "a client dribbling its request kept \(v.slow_client_scrapes - v.slow_client_scrapes_ok) of \(v.slow_client_scrapes) scrapes waiting past 8 s")
            #expect(v.healthy_at_end)
            // HEAD and a query string are ordinary requests.
            let head = try ChildProcess.run("curl", ["-s", "-I", "--max-time", "10", "http://127.0.0.1:\(port)/metrics?x=1"], timeout: 20)
            #expect(head.stdout.hasPrefix("HTTP/1.0 200"))
        }
    }
}
