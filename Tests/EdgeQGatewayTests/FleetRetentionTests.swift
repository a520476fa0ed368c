@testable import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

/// The log's age retention and the fleet (docs/fleet.md, "The cursor"): a gateway with a `fleet`
/// section keeps the rows no learner has acknowledged past `learning.retention`, and deletes them
/// once one has. A real gateway, broker and log; the learner's acknowledgement is published by
/// the test, as a learner publishes it (`<fleet>/ack/<gateway>`).
@Suite struct FleetRetentionTests {
    @Test func rowsNoLearnerAcknowledgedOutliveTheRetentionAndGoOnceAcknowledged() throws {
        let yaml = testMapping(extraLearning: "  retention: 1s") + "\nfleet: {topic: fleet/t, interval: 100ms}\n"
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        var step = 0
        func tick() throws {
            step += 1
            try h.send("plant/t/state", #"{"step":\#(step),"x":0.5,"y":0}"#)
        }
        // Retention runs after a commit, at most every 10 s: the plant keeps ticking meanwhile.
        func ticking(timeout: Double, until condition: () throws -> Bool) throws -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if try condition() { return true }
                try tick()
                Thread.sleep(forTimeInterval: 0.25)
            }
            return try condition()
        }
        for _ in 0..<20 { try tick() }
        let log = try ExperienceLog.open(path: h.dir.url.appendingPathComponent(ExperienceLog.defaultFileName).path, create: false)
        func ids() throws -> [Int64] { try log.transitions(window: .all).map(\.id) }

        // No learner: every row stays, the ones older than the retention held back.
        #expect(try ticking(timeout: 40) { h.metric("edgeq_log_rows_held_back") >= 19 }, "held back: \(h.metric("edgeq_log_rows_held_back"))")
        #expect(try ids().first == 1)
        #expect(h.gateway.logMetrics.rowsDeletedByRetention == 0)
        // The status says so too, in its fleet object (the next status after a tick).
        try tick()
        let status = GatewayHarness.json(try h.waitFor(topic: "edgeq/t1/status", timeout: 10) {
            ((GatewayHarness.json($0)["fleet"] as? [String: Any])?["log_rows_held_back"] as? Int ?? 0) >= 19
        })
        #expect((status["fleet"] as? [String: Any])?["lag_rows"] as? Int ?? 0 >= 19, "\(status)")

        // A learner acknowledges rows 1…10: they go at the next retention run; the rest stay.
        _ = try h.observer.publish("fleet/t/ack/t1", #"{"acked":10}"#, qos: .atLeastOnce, retain: false)
        let released = try ticking(timeout: 40) { try ids().first == 11 }
        let first = try ids().first
        #expect(released, "first row: \(String(describing: first))")
        #expect(h.gateway.logMetrics.rowsDeletedByRetention == 10)
        #expect(h.metric("edgeq_log_rows_held_back") >= 9)
    }
}
