import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq bench fleet` end to end with tiny settings: the real `edgeq` binary runs 8 shippers
/// on pre-filled logs into a real `edgeq learner`, two real gateways for the latency rounds, and
/// 8 real gateways that receive 3 signed chunked models for the rollout figures;
/// every figure line has the benchmark contract's keys, the p99 figure its pooled interval, the counts from both ends are exact, every
/// model's `stored` verdict from every gateway is counted, and the goals not built yet are printed
/// as not measured (never a value).
@Suite struct FleetBenchSmokeTests {
    @Test func tinyRunPrintsEveryFigureWithExactCounts() throws {
        let rows = 300, models = 3
        let r = try EdgeQBinary.run(["bench", "fleet", "--json", "--quick", "--rows", String(rows), "--rounds", "1",
                                     "--models", String(models)], timeout: 300)
        #expect(r.code == 0, "stderr: \(r.stderr.suffix(3000))")
        let (lines, problems) = BenchLines.parse(r.stdout, bench: "fleet")
        #expect(problems.isEmpty, "\(problems)")
        func value(_ prefix: String, _ key: String = "value") -> Double? {
            let hits = lines.filter { $0.key.hasPrefix(prefix) }
            #expect(hits.count == 1, "figures starting '\(prefix)': \(hits.keys.sorted())")
            return (hits.first?.value[key] as? NSNumber)?.doubleValue
        }
        let ingest = "ingest 8 gateways → 1 learner: "
        let total = Double(8 * rows)
        #expect((value(ingest + "transitions stored and acknowledged per second") ?? 0) > 0)
        #expect((value(ingest + "learner process CPU time per row") ?? 0) > 0)
        #expect(value(ingest + "rows acknowledged (shippers' cursors)") == total)
        #expect(value(ingest + "rows acknowledged (shippers' cursors)", "anchor_value") == total)
        #expect(value(ingest + "rows stored (fleet log, read back)") == total)
        #expect(value(ingest + "rows lost") == 0)
        #expect(value(ingest + "rows stored twice") == 0)
        // Copies may be sent on a loaded machine (an acknowledgement later than the timeout): counted, not zero by force.
        #expect((value(ingest + "rows sent more than once") ?? -1) >= 0)
        #expect((value(ingest + "copies dropped by the learner") ?? -1) >= 0)

        let latency = "decision round trip while shipping (batches of 100, every 100 ms)"
        for part in [": p50", ": p99, median of the per-round ratios", ": CPU per decision (all threads)"] {
            let f = lines[latency + part]
            #expect((f?["value"] as? NSNumber)?.doubleValue ?? 0 > 0, "\(part): \(String(describing: f))")
            #expect((f?["anchor_value"] as? NSNumber)?.doubleValue ?? 0 > 0, "\(part): \(String(describing: f))")
            #expect(f?["rounds"] as? NSNumber == 1, "\(part): \(String(describing: f))")
        }
        // The p99 figure: each side's 1,000 round trips pooled (one round here), the ratio of the
        // pooled p99s and its bootstrap interval around it.
        let pooled = try #require(lines[latency + ": p99 of all rounds pooled (goal ≤ 1.1×)"], "\(lines.keys.sorted())")
        func num(_ key: String) -> Double? { (pooled[key] as? NSNumber)?.doubleValue }
        let withP99 = try #require(num("value")), withoutP99 = try #require(num("anchor_value"))
        let ratio = try #require(num("ratio")), low = try #require(num("ratio_low")), high = try #require(num("ratio_high"))
        #expect(withP99 > 0 && withoutP99 > 0 && abs(ratio - withP99 / withoutP99) <= 1e-4 * ratio, "\(pooled)")
        #expect(low > 0 && low <= high && low <= ratio * 1.0001 && ratio <= high * 1.0001, "\(pooled)")
        #expect(num("rounds") == 1 && num("samples") == 1_000 && num("confidence") == 0.95, "\(pooled)")
        #expect(pooled["ratio_min"] == nil && pooled["reason"] == nil, "\(pooled)")
        let shipped = lines.first { $0.key.hasPrefix(latency) && $0.key.hasSuffix("rows in the fleet log") }?.value
        let stored = (shipped?["value"] as? NSNumber)?.doubleValue
        #expect(stored != nil && stored == (shipped?["anchor_value"] as? NSNumber)?.doubleValue && (stored ?? 0) >= 1_000,
                "the shipping gateway's rows: \(String(describing: shipped))")

        // The rollout: every model stored by every gateway, timed from the publication's start.
        let rollout = "model rollout: publish → stored and verified on 8 gateways, "
        let p50 = value(rollout + "p50") ?? 0, p99 = value(rollout + "p99 (goal < 1 s)") ?? 0, slowest = value(rollout + "max") ?? 0
        #expect(p50 > 0 && p50 <= p99 && p99 <= slowest, "p50 \(p50), p99 \(p99), max \(slowest) ms")
        let verdicts = "model rollout: 'stored' verdicts"
        #expect(value(verdicts) == Double(models * 8))
        #expect(value(verdicts, "anchor_value") == Double(models * 8))
        // A 32-256-256-9 model is bigger than one 256 KiB message: it goes in chunks of
        // 256 KiB − the 24-byte chunk header.
        let bytes = value("model rollout: model file") ?? 0
        let chunks = value("model rollout: chunks per model") ?? 0
        #expect(bytes > 256 * 1024 && chunks == ((bytes / Double(256 * 1024 - 24)).rounded(.up)), "\(bytes) bytes in \(chunks) chunks")
        #expect((value("model rollout: gateway CPU time per model") ?? 0) > 0)

        let notMeasured = lines.values.filter { $0["value"] is NSNull }
        #expect(notMeasured.count == 2, "\(notMeasured)")
        #expect(notMeasured.allSatisfy { ($0["reason"] as? String)?.hasPrefix("not measured") == true })
        #expect(!notMeasured.contains { ($0["figure"] as? String)?.hasPrefix("model rollout") == true })
        #expect(lines.count == 10 + 5 + 7 + 2)
    }

    /// `--pace N`: the latency rounds start their decisions on a fixed schedule, and every
    /// latency figure says so (a paced figure is never read as the back-to-back one).
    @Test func aPacedRunNamesItsPaceInEveryLatencyFigure() throws {
        let r = try EdgeQBinary.run(["bench", "fleet", "--json", "--quick", "--parts", "latency", "--rounds", "1", "--pace", "2000"], timeout: 300)
        #expect(r.code == 0, "stderr: \(r.stderr.suffix(3000))")
        let (lines, problems) = BenchLines.parse(r.stdout, bench: "fleet")
        #expect(problems.isEmpty, "\(problems)")
        let latency = lines.filter { $0.key.hasPrefix("decision round trip while shipping") }
        #expect(latency.count == 5, "\(lines.keys.sorted())")
        #expect(latency.keys.allSatisfy { $0.hasPrefix("decision round trip while shipping (batches of 100, every 100 ms; decisions paced at 2000 a second)") },
                "\(latency.keys.sorted())")
        let pooled = latency.first { $0.key.hasSuffix("p99 of all rounds pooled (goal ≤ 1.1×)") }?.value
        #expect((pooled?["samples"] as? NSNumber)?.intValue == 1_000, "\(String(describing: pooled))")
    }

    /// `--models` belongs to the fleet bench and must be at least 1 (a usage error, exit 64, before anything runs).
    @Test func modelsIsAFleetOptionOfAtLeastOne() throws {
        let zero = try EdgeQBinary.run(["bench", "fleet", "--models", "0"], timeout: 30)
        #expect(zero.code == 64 && zero.stderr.contains("--models must be at least 1"), "\(zero.stderr)")
        let other = try EdgeQBinary.run(["bench", "mqtt", "--models", "3"], timeout: 30)
        #expect(other.code == 64 && other.stderr.contains("apply to `edgeq bench fleet` only"), "\(other.stderr)")
    }
}
