import EdgeQSystem
import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq bench e2e --quick` through the real binary: a gateway in control behind a real
/// broker, its round trips, its rate and its memory. The memory totals are measured only on a
/// binary with the Swift runtime linked in (`make release`): one that loads it as shared
/// libraries (the tests' debug build) is ~15 MB more resident, and its totals are printed as not
/// measured, with the reason — a figure of another program never reaches docs/benchmarks.md again.
@Suite struct E2EBenchSmokeTests {
    @Test func memoryTotalsAreMeasuredOnlyOnABinaryWithTheSwiftRuntimeLinkedIn() throws {
        let ldd = try ChildProcess.run("/usr/bin/ldd", [EdgeQBinary.path], timeout: 30)
        #expect(ldd.code == 0, "\(ldd.stderr)")
        let shared = ldd.stdout.contains("libswiftCore.so")
        let r = try ChildProcess.run(EdgeQBinary.path, ["bench", "e2e", "--quick", "--no-anchors", "--json"], timeout: 600)
        #expect(r.code == 0, "stderr: \(r.stderr.suffix(4000))")
        let (lines, problems) = BenchLines.parse(r.stdout, bench: "e2e")
        #expect(problems.isEmpty, "\(problems)")
        func value(_ figure: String) -> Double? { (lines[figure]?["value"] as? NSNumber)?.doubleValue }
        // The decisions ran: round trips and the gateway's own memory are measured either way.
        #expect((value("rtt_p50") ?? 0) > 0, "\(lines.keys.sorted())\n\(r.stderr.suffix(3000))")
        #expect((value("anon_rss_start") ?? 0) > 0 && (value("anon_rss_after_load") ?? 0) > 0)
        for figure in ["peak_rss", "rss_start", "rss_after_load"] {
            let reason = lines[figure]?["reason"] as? String
            if shared {
                #expect(value(figure) == nil, "\(figure): \(String(describing: lines[figure]))")
                #expect(reason?.contains("loads the Swift runtime as shared libraries") == true
                        && reason?.contains("make release") == true, "\(figure): \(String(describing: reason))")
            } else {
                #expect((value(figure) ?? 0) > 0 && reason == nil, "\(figure): \(String(describing: lines[figure]))")
            }
        }
        if shared { #expect(r.stderr.contains("memory: not measured: this edgeq loads the Swift runtime as shared libraries")) }
    }
}
