import EdgeQGateway
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

/// Rollback walks back through the served history and quarantines the version it leaves, on a
/// running gateway against a real broker and real model files. Before, the rollback target
/// was the last *different* entry of the history: after v2 → v1 it was v2 again, so a second
/// rollback (or the guard's next trip) served the version just rolled back from.
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
        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.guarded))
        defer { h.stop() }
        let v1 = try storeModel(favouring: 1, for: h.map, in: h.dir.url, seed: 1)
        let v2 = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: 2)
        #expect(try h.ask("promote", "{\"version\":\(v1)}")["ok"] as? Bool == true)
        #expect(try h.ask("promote", "{\"version\":\(v2)}")["ok"] as? Bool == true)
        // The operator rolls back from v2: v2 is quarantined, v1 served.
        #expect(try h.ask("rollback", "{}")["version"] as? Int == v1)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        // v1 does much worse in control than its control group (the incumbent, a0): the guard
        // trips. There is nothing to roll back to (v2 is quarantined): back to shadow with v1,
        // never v2.
        let plant = ClosedLoop(h, incumbent: { _ in 0 }, dynamics: Self.aOneIsBad)
        try plant.run(until: { guardEvent(h) != nil })
        let e = try #require(guardEvent(h), "the guard did not trip in \(plant.acted.count) control ticks (gateway ticks \(h.metric("edgeq_ticks_total")), acted \(plant.acted)); \(h.received.filter { $0.topic == "edgeq/t1/retrain" }.map { String(decoding: $0.payload, as: UTF8.self) })")
        #expect(e["verdict"] as? String == "fallback_to_shadow", "\(e)")
        #expect(e["from"] as? Int == v1 && e["to"] is NSNull, "\(e)")
        #expect(h.gateway.servedVersion == v1)
        #expect(h.gateway.mode == .shadow)
        #expect(try ModelStore(dataDirectory: h.dir.url).current() == v1)
        #expect(try ModelStore(dataDirectory: h.dir.url).isQuarantined(v2))
    }

    /// A version the guard rolled back from stays quarantined across a restart: the next start
    /// serves the version rolled back to, and a promotion without a version refuses it.
    @Test func aQuarantineByTheGuardSurvivesARestart() throws {
        let broker = try MosquittoBroker()
        let first = try GatewayHarness(yaml: testMapping(extraLearning: Self.guarded), broker: broker)
        defer { first.stop() }  // keeps its data directory alive until the end
        let good = try storeModel(favouring: 0, for: first.map, in: first.dir.url, seed: 1)
        let bad = try storeModel(favouring: 1, for: first.map, in: first.dir.url, seed: 2)
        #expect(try first.ask("promote", "{\"version\":\(good)}")["ok"] as? Bool == true)
        #expect(try first.ask("promote", "{\"version\":\(bad)}")["ok"] as? Bool == true)
        #expect(try first.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        let plant = ClosedLoop(first, incumbent: { _ in 0 }, dynamics: Self.aOneIsBad)
        try plant.run(until: { guardEvent(first) != nil })
        let e = try #require(guardEvent(first), "the guard did not trip in \(plant.acted.count) control ticks")
        #expect(e["verdict"] as? String == "rolled_back" && e["quarantined"] as? Int == bad, "\(e)")
        first.stop()

        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.guarded), broker: broker) { $0.dataDirectory = first.dir.url.path }
        defer { h.stop() }
        #expect(h.gateway.servedVersion == good)
        #expect(h.gateway.mode == .control)
        #expect(try ModelStore(dataDirectory: first.dir.url).isQuarantined(bad))
        let s = try status(h) { ($0["model"] as? [String: Any])?["version"] as? Int == good }
        #expect(s["quarantined"] as? [Int] == [bad], "\(s)")
        // Promote without a version (the newest, the quarantined one): refused.
        let newest = try h.ask("promote", #"{"id":"p"}"#)
        #expect(newest["ok"] as? Bool == false, "\(newest)")
        #expect((newest["error"] as? String)?.contains("quarantined") == true, "\(newest)")
        #expect(h.gateway.servedVersion == good)
        // And it does not act: in control after the restart, a1 (its action) is never applied.
        let after = ClosedLoop(h, incumbent: { _ in 0 }, dynamics: Self.aOneIsBad)
        try after.run(24)
        #expect(after.acted.allSatisfy { $0.action == 0 }, "\(after.acted)")
    }

    /// The guard's control group survives a restart: v2 promoted over v1 is compared with v1
    /// after the gateway restarts (before, with the incumbent), so the trip rolls back with v1's
    /// blocks as the evidence; after that rollback, a restart compares v1 with the incumbent.
    @Test func theGuardsControlGroupSurvivesARestart() throws {
        let broker = try MosquittoBroker()
        let first = try GatewayHarness(yaml: testMapping(extraLearning: Self.guarded), broker: broker)
        defer { first.stop() }  // keeps its data directory alive until the end
        let (good, bad) = try first.serveABadModelAfterAGoodOne()
        let before = try status(first) { ($0["guard"] as? [String: Any])?["control_group"] != nil }
        #expect((before["guard"] as? [String: Any])?["control_group"] as? String == "v\(good)", "\(before)")
        first.stop()

        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.guarded), broker: broker) { $0.dataDirectory = first.dir.url.path }
        #expect(h.gateway.servedVersion == bad && h.gateway.mode == .control)
        let s = try status(h) { ($0["guard"] as? [String: Any])?["control_group"] != nil }
        #expect((s["guard"] as? [String: Any])?["control_group"] as? String == "v\(good)", "\(s)")
        let plant = ClosedLoop(h, incumbent: { _ in 0 }, dynamics: Self.aOneIsBad)
        try plant.run(until: { guardEvent(h) != nil })
        let e = try #require(guardEvent(h), "the guard did not trip in \(plant.acted.count) control ticks")
        #expect(e["control"] as? String == "v\(good)" && e["verdict"] as? String == "rolled_back" && e["to"] as? Int == good, "\(e)")
        // Until the trip (2 pairs of 4-tick blocks) every tick was the gateway's: v1's control
        // blocks ran through it, not the incumbent's. (After the rollback, v1's control group is
        // the incumbent.)
        let untilTheTrip = plant.acted.prefix(16)
        #expect(untilTheTrip.allSatisfy { $0.isGateway } && untilTheTrip.contains(.gateway(0)) && untilTheTrip.contains(.gateway(1)), "\(plant.acted)")
        h.stop()

        let again = try GatewayHarness(yaml: testMapping(extraLearning: Self.guarded), broker: broker) { $0.dataDirectory = first.dir.url.path }
        defer { again.stop() }
        #expect(again.gateway.servedVersion == good)
        let after = try status(again) { ($0["guard"] as? [String: Any])?["control_group"] != nil }
        #expect((after["guard"] as? [String: Any])?["control_group"] as? String == "incumbent", "\(after)")
    }

    /// The guard's pairs survive a restart: v2 (worse than its control group v1) has one pair
    /// compared when the gateway stops; after the restart the guard goes on from that pair
    /// (`models/v2/guard.json`) and trips at its first new one — the 2nd in all, its first look
    /// — where a guard started afresh would need two new pairs.
    @Test func theGuardsPairsSurviveARestart() throws {
        let broker = try MosquittoBroker()
        let first = try GatewayHarness(yaml: testMapping(extraLearning: Self.guarded), broker: broker)
        defer { first.stop() }  // keeps its data directory alive until the end
        let (good, bad) = try first.serveABadModelAfterAGoodOne()
        let url = try ModelStore(dataDirectory: first.dir.url).guardURL(bad)
        func recordedPairs() -> Int? {
            guard let data = try? Data(contentsOf: url), let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
            return o["pairs"] as? Int
        }
        // One tick at a time, each given a moment for the record (the control queue writes it
        // after the pair): the gateway stops with exactly one pair compared.
        let plant = ClosedLoop(first, incumbent: { _ in 0 }, dynamics: Self.aOneIsBad)
        try plant.run(40) {
            let deadline = Date().addingTimeInterval(0.3)
            while recordedPairs() == nil && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            return recordedPairs() != nil
        }
        #expect(recordedPairs() == 1 && guardEvent(first) == nil, "guard.json: \(recordedPairs().map(String.init) ?? "none") pairs")
        let record = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        #expect(record["served"] as? Int == bad && record["control_group"] as? String == "v\(good)" && record["block"] as? String == "ticks:4", "\(record)")
        #expect((record["window"] as? [[Double]])?.first.map { $0[0] - $0[1] } == -19, "\(record)")
        first.stop()

        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.guarded), broker: broker) { $0.dataDirectory = first.dir.url.path }
        defer { h.stop() }
        let after = ClosedLoop(h, incumbent: { _ in 0 }, dynamics: Self.aOneIsBad)
        try after.run(until: { guardEvent(h) != nil })
        let e = try #require(guardEvent(h), "the guard did not trip in \(after.acted.count) ticks after the restart")
        #expect(e["pairs"] as? Int == 2 && e["resumed_pairs"] as? Int == 1 && e["verdict"] as? String == "rolled_back" && e["from"] as? Int == bad, "\(e)")
        // v2 served one block of 4 ticks after the restart (one pair; and the tick that picks
        // it up, when the pair's control block comes first), not two (8 or 9): after the trip
        // it never acts again (quarantined).
        #expect((4...5).contains(after.acted.filter { $0 == .gateway(1) }.count), "\(after.acted)")
        let s = try status(h) { ($0["guard"] as? [String: Any])?["trips"] as? Int == 1 }
        #expect(h.gateway.servedVersion == good, "\(s)")
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
