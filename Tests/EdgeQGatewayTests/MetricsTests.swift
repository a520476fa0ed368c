import EdgeQGateway
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct MetricsTests {
    @Test func exposition() {
        let r = MetricsRegistry()
        let a = r.counter("edgeq_decisions_total", help: "Decisions.", labels: [("action", "heat"), ("mode", "shadow")])
        let b = r.counter("edgeq_decisions_total", help: "Decisions.", labels: [("action", "off"), ("mode", "shadow")])
        a.increment()
        a.increment(by: 2)
        b.increment()
        #expect(r.counter("edgeq_decisions_total", help: "", labels: [("action", "heat"), ("mode", "shadow")]) === a)
        r.gauge("edgeq_model_version", help: "Served model.").set(3)
        let h = r.histogram("edgeq_decision_seconds", help: "Latency.", bounds: [1e-6, 1e-5, 1e-4])
        h.observe(5e-7)
        h.observe(5e-6)
        h.observe(1)
        let text = r.render()
        #expect(text.contains("# TYPE edgeq_decisions_total counter"))
        #expect(text.contains(#"edgeq_decisions_total{action="heat",mode="shadow"} 3"#))
        #expect(text.contains(#"edgeq_decisions_total{action="off",mode="shadow"} 1"#))
        #expect(text.contains("edgeq_model_version 3"))
        #expect(text.contains(#"edgeq_decision_seconds_bucket{le="1e-05"} 2"#))
        #expect(text.contains(#"edgeq_decision_seconds_bucket{le="+Inf"} 3"#))
        #expect(text.contains("edgeq_decision_seconds_count 3"))
        #expect(h.quantileUpperBound(0.5) == 1e-5)
    }

    @Test func servesOverHTTP() throws {
        let r = MetricsRegistry()
        r.counter("edgeq_test_total", help: "A test.").increment()
        let server = try MetricsServer(port: 0) { r.render() }
        defer { server.stop() }
        let res = try ChildProcess.run("curl", ["-s", "-i", "http://127.0.0.1:\(server.port)/metrics"], timeout: 10)
        #expect(res.code == 0)
        #expect(res.stdout.contains("200 OK"))
        #expect(res.stdout.contains("edgeq_test_total 1"))
        let missing = try ChildProcess.run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(server.port)/nope"], timeout: 10)
        #expect(missing.stdout == "404")
    }
}
