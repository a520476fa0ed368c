import EdgeQGateway
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

/// Rollback walks back through the served history and quarantines the version it leaves, on a
/// running gateway against a real broker and real model files. Before, the rollback target
/// was the last *different* entry of the history: after v2 → v1 it was v2 again, so a second
/// rollback (or the live guard's next trip) served the version just rolled back from.
extension RetrainingTests {
    /// Versions 1, 2, 3 stored and promoted one after the other through cmd/promote.
    func promoteThree(_ h: GatewayHarness) throws {
        for seed in 1...3 { try installModel(for: h.map, in: h.dir.url, seed: UInt64(seed)) }
        for v in 1...3 {
            let r = try h.ask("promote", "{\"version\":\(v)}")
            #expect(r["ok"] as? Bool == true, "\(r)")
        }
        #expect(h.gateway.servedVersion == 3)
    }

    /// The newest retained status that satisfies `match`.
    func status(_ h: GatewayHarness, _ match: @escaping ([String: Any]) -> Bool) throws -> [String: Any] {
        GatewayHarness.json(try h.waitFor(topic: "edgeq/t1/status", timeout: 10) { match(GatewayHarness.json($0)) })
    }

    @Test func rollbackWalksBackV3V2V1ThenRefuses() throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.lenient))
        defer { h.stop() }
        try promoteThree(h)
        let first = try h.ask("rollback", #"{"id":"r1"}"#)
        #expect(first["ok"] as? Bool == true && first["version"] as? Int == 2, "\(first)")
        #expect(first["from"] as? Int == 3 && first["quarantined"] as? Int == 3, "\(first)")
        let second = try h.ask("rollback", #"{"id":"r2"}"#)
        #expect(second["ok"] as? Bool == true && second["version"] as? Int == 1, "\(second)")
        #expect(second["quarantined"] as? Int == 2, "\(second)")
        #expect(h.gateway.servedVersion == 1)
        // Nothing earlier that is not quarantined: refused, nothing changes.
        let third = try h.ask("rollback", #"{"id":"r3"}"#)
        #expect(third["ok"] as? Bool == false, "\(third)")
        #expect((third["error"] as? String)?.contains("no earlier version") == true, "\(third)")
        #expect((third["error"] as? String)?.contains("quarantined v2, v3") == true, "\(third)")
        #expect(h.gateway.servedVersion == 1)
        // The status shows the quarantine and that there is no rollback target.
        let s = try status(h) { ($0["quarantined"] as? [Int]) == [2, 3] }
        #expect(s["rollback_target"] is NSNull, "\(s)")
        #expect(try ModelStore(dataDirectory: h.dir.url).quarantined().map(\.version) == [2, 3])
    }

    @Test func theGuardAfterARollbackDoesNotServeTheQuarantinedVersion() throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.lenient))
        defer { h.stop() }
        try installModel(for: h.map, in: h.dir.url, seed: 1)
        try installModel(for: h.map, in: h.dir.url, seed: 2)
        #expect(try h.ask("promote", #"{"version":1}"#)["ok"] as? Bool == true)
        #expect(try h.ask("promote", #"{"version":2}"#)["ok"] as? Bool == true)
        // The operator rolls back from v2: v2 is quarantined, v1 served.
        #expect(try h.ask("rollback", "{}")["version"] as? Int == 1)
        try logShadow(h, ticks: 60)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        // v1 does much worse in control: the guard trips. There is nothing to roll back to
        // (v2 is quarantined): back to shadow with v1, never v2.
        var event: [String: Any]?
        var i = 0
        while event == nil && i < 200 {
            try h.send("plant/t/state", state(5000 + i, x: 5))
            i += 1
            for m in h.drain(0.005) where m.topic == "edgeq/t1/retrain" {
                let o = GatewayHarness.json(m)
                if o["phase"] as? String == "guard" { event = o }
            }
        }
        let e = try #require(event, "the guard did not trip in \(i) control ticks")
        #expect(e["verdict"] as? String == "fallback_to_shadow", "\(e)")
        #expect(e["from"] as? Int == 1 && e["to"] is NSNull, "\(e)")
        #expect(h.gateway.servedVersion == 1)
        #expect(h.gateway.mode == .shadow)
        #expect(try ModelStore(dataDirectory: h.dir.url).current() == 1)
    }

    @Test func theQuarantineSurvivesARestartAndAnOperatorCanStillPromoteByName() throws {
        let broker = try MosquittoBroker()
        let first = try GatewayHarness(yaml: testMapping(extraLearning: Self.lenient), broker: broker)
        defer { first.stop() }  // keeps its data directory alive until the end
        try promoteThree(first)
        #expect(try first.ask("rollback", "{}")["version"] as? Int == 2)   // v3 quarantined
        first.stop()
        // v2, the current one, no longer passes its checks: the start-up fallback must not
        // pick the quarantined v3 (the newest one served before), but v1.
        let store = try ModelStore(dataDirectory: first.dir.url)
        var bytes = try Data(contentsOf: store.modelURL(2))
        bytes[bytes.count - 1] ^= 0xFF
        try bytes.write(to: store.modelURL(2))

        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.lenient), broker: broker) { $0.dataDirectory = first.dir.url.path }
        defer { h.stop() }
        #expect(h.gateway.servedVersion == 1)
        #expect(try ModelStore(dataDirectory: first.dir.url).isQuarantined(3))
        let s = try status(h) { ($0["model"] as? [String: Any])?["version"] as? Int == 1 }
        #expect(s["quarantined"] as? [Int] == [3], "\(s)")
        // Promote without a version (the newest, v3): refused, it is quarantined.
        let newest = try h.ask("promote", #"{"id":"p"}"#)
        #expect(newest["ok"] as? Bool == false, "\(newest)")
        #expect((newest["error"] as? String)?.contains("quarantined") == true, "\(newest)")
        #expect(h.gateway.servedVersion == 1)
        // Named: served, and its quarantine is lifted.
        let named = try h.ask("promote", #"{"id":"p3","version":3}"#)
        #expect(named["ok"] as? Bool == true && named["version"] as? Int == 3, "\(named)")
        #expect(h.gateway.servedVersion == 3)
        #expect(!(try ModelStore(dataDirectory: first.dir.url).isQuarantined(3)))
        _ = try status(h) { ($0["quarantined"] as? [Int]) == [] && ($0["model"] as? [String: Any])?["version"] as? Int == 3 }
    }
}
