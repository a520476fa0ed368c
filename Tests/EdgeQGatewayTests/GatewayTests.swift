import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQNet
import EdgeQTestSupport
import Foundation
import Testing

/// The gateway against a real broker: shadow and control, safety, the control plane.
@Suite struct GatewayTests {
    func state(_ step: Int, x: Double = 1, y: Double = -1) -> String {
        "{\"step\":\(step),\"x\":\(x),\"y\":\(y)}"
    }

    @Test func shadowReportsEveryDecisionAndPublishesNothingToActuators() throws {
        let h = try GatewayHarness(yaml: testMapping(), withModel: true)
        defer { h.stop() }
        for i in 0..<20 { try h.send("plant/t/state", state(i, x: Double(i % 5))) }
        var shadow: [[String: Any]] = []
        let deadline = Date().addingTimeInterval(10)
        while shadow.count < 20 && Date() < deadline {
            for m in h.drain(0.1) where m.topic == "edgeq/t1/shadow" { shadow.append(GatewayHarness.json(m)) }
        }
        #expect(shadow.count == 20)
        // Every documented field, with the ticks counting 1, 2, … 20.
        #expect(shadow.compactMap { $0["tick"] as? Int } == Array(1...20), "\(shadow.first ?? [:])")
        for s in shadow {
            #expect(Set(s.keys) == ["tick", "action", "action_name", "q", "incumbent_previous", "status", "model"], "\(s)")
            #expect(s["action"] is Int, "\(s)")
            #expect((s["q"] as? [Any])?.count == 2)
        }
        // Nobody but the test publishes incumbent commands, and it published none:
        // every message on the actuator topic would be the gateway's.
        #expect(h.received.filter { $0.topic == "plant/t/cmd" }.isEmpty)
        #expect(h.metric(#"edgeq_decisions_total{action="a0",mode="shadow"}"#) + h.metric(#"edgeq_decisions_total{action="a1",mode="shadow"}"#) == 20)
    }

    /// `--precision mixed` (default): near-ties go to fp32 and are counted; a margin no gap
    /// reaches sends every decision to fp32, `--precision int8` none.
    @Test(arguments: [Precision.mixed, .int8])
    func fp32TieBreaksAreCounted(precision: Precision) throws {
        let h = try GatewayHarness(yaml: testMapping(), withModel: true, tieMargin: 1e30) { $0.precision = precision }
        defer { h.stop() }
        for i in 0..<20 { try h.send("plant/t/state", state(i, x: Double(i % 5))) }
        var shadow = 0
        let deadline = Date().addingTimeInterval(10)
        while shadow < 20 && Date() < deadline {
            shadow += h.drain(0.1).filter { $0.topic == "edgeq/t1/shadow" }.count
        }
        #expect(shadow == 20)
        #expect(h.metric("edgeq_decisions_total{action=\"a0\",mode=\"shadow\"}") + h.metric("edgeq_decisions_total{action=\"a1\",mode=\"shadow\"}") == 20)
        #expect(h.metric("edgeq_fp32_tie_breaks_total") == (precision == .mixed ? 20 : 0))
    }

    /// Both threading options (`inlineDecisions`: on the network thread, or handed off).
    @Test(arguments: [true, false])
    func shadowWithoutAModelStillReportsEachTickAndLogs(inline: Bool) throws {
        let h = try GatewayHarness(yaml: testMapping()) { $0.inlineDecisions = inline }
        defer { h.stop() }
        for i in 0..<10 {
            try h.send("plant/t/state", state(i))
            try h.send("plant/t/cmd", "{\"a\":\(i % 2),\"step\":\(i)}")  // the incumbent
        }
        var shadow = 0
        let deadline = Date().addingTimeInterval(10)
        while shadow < 10 && Date() < deadline { shadow += h.drain(0.1).filter { $0.topic == "edgeq/t1/shadow" }.count }
        #expect(shadow == 10)
        h.stop()
        let log = try ExperienceLog.open(dataDirectory: h.dir.url.path, create: false)
        let rows = try log.transitions(window: .all)
        #expect(rows.count == 9)  // ten ticks close nine transitions
        #expect(rows.allSatisfy { $0.transition.actor == .incumbent && $0.transition.mode == .shadow })
        #expect(rows.map { $0.transition.action } == (0..<9).map { Optional($0 % 2) })
    }

    @Test(arguments: [true, false])
    func controlPublishesExactlyOneSetOfWritesPerTick(inline: Bool) throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: noControlGroup), mode: .control, withModel: true) { $0.inlineDecisions = inline }
        defer { h.stop() }
        for i in 0..<30 { try h.send("plant/t/state", state(i, x: Double(i % 7) - 3)) }
        var cmds: [[String: Any]] = []
        let deadline = Date().addingTimeInterval(10)
        while cmds.count < 30 && Date() < deadline {
            for m in h.drain(0.1) where m.topic == "plant/t/cmd" { cmds.append(GatewayHarness.json(m)) }
        }
        _ = h.drain(0.3)
        cmds += h.received.dropFirst(0).filter { _ in false }.map(GatewayHarness.json)
        #expect(cmds.count == 30)
        #expect(cmds.compactMap { $0["step"] as? Int } == Array(0..<30))
        #expect(h.received.filter { $0.topic == "edgeq/t1/shadow" }.isEmpty)
    }

    /// MQTT 5 no-local: in control the gateway's own commands on the incumbent's topic do not
    /// come back to it as the incumbent's (30 of its own: 0 counted), while another client's
    /// commands on that topic still count.
    @Test func theGatewaysOwnCommandsAreNotCountedAsTheIncumbents() throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: noControlGroup), mode: .control, withModel: true)
        defer { h.stop() }
        for i in 0..<30 { try h.send("plant/t/state", state(i, x: Double(i % 7) - 3)) }
        var commands = 0
        let deadline = Date().addingTimeInterval(10)
        while commands < 30 && Date() < deadline {
            commands += h.drain(0.1).filter { $0.topic == "plant/t/cmd" }.count
        }
        #expect(commands == 30)
        _ = h.drain(0.5)
        #expect(h.metric("edgeq_incumbent_commands_total") == 0, "the gateway counted its own echoes as the incumbent's")
        for i in 0..<3 { try h.send("plant/t/cmd", #"{"a":1,"step":\#(100 + i)}"#) }
        let counted = eventually(timeout: 5) { h.metric("edgeq_incumbent_commands_total") == 3 }
        #expect(counted, "another client's commands were not counted: \(h.metric("edgeq_incumbent_commands_total"))")
    }

    @Test func aSilentSensorMakesItFallBackWithinAPeriodAfterItsMaxAge() throws {
        let yaml = testMapping(tick: "period: 0.1s", maxAge: ", max_age: 0.4s", fallback: "a1", extraLearning: noControlGroup)
        let h = try GatewayHarness(yaml: yaml, mode: .control, withModel: true)
        defer { h.stop() }
        try h.send("plant/t/state", state(1, x: 2))
        // While fresh: the model decides (no stale fallback).
        _ = h.drain(0.25)
        #expect(h.metric(#"edgeq_fallbacks_total{reason="stale"}"#) == 0)
        let silentSince = Date()
        // After max age (0.4 s) + one period (0.1 s) at the latest, the fallback a1 is published.
        var firstStale: Date?
        while firstStale == nil && Date().timeIntervalSince(silentSince) < 3 {
            _ = h.drain(0.02)
            if h.metric(#"edgeq_fallbacks_total{reason="stale"}"#) > 0 { firstStale = Date() }
        }
        let after = try #require(firstStale).timeIntervalSince(silentSince)
        #expect(after <= 0.4 + 0.1 + 0.15, "stale fallback after \(after) s")
        let fallbacks = h.drain(0.5).filter { $0.topic == "plant/t/cmd" }.map(GatewayHarness.json)
        #expect(!fallbacks.isEmpty)
        #expect(fallbacks.allSatisfy { $0["a"] as? Int == 1 })
    }

    /// Invalid payloads: no action is computed from them; each is counted under its reason.
    @Test func invalidPayloadsAreCountedAndNeverDecidedOn() throws {
        let h = try GatewayHarness(yaml: testMapping(fallback: "hold", extraLearning: noControlGroup), mode: .control, withModel: true)
        defer { h.stop() }
        let table: [(String, String)] = [
            ("not json", "invalid_json"),
            ("{\"step\":1,\"x\":", "invalid_json"),
            ("", "invalid_json"),
            ("{\"step\":1}", "missing_field"),
            ("{\"step\":1,\"y\":0}", "missing_field"),
            ("{\"step\":1,\"x\":\"abc\",\"y\":0}", "wrong_type"),
            ("{\"step\":1,\"x\":[1],\"y\":0}", "wrong_type"),
            ("{\"step\":1,\"x\":{\"v\":1},\"y\":0}", "wrong_type"),
            ("{\"step\":1,\"x\":null,\"y\":0}", "wrong_type"),
            ("{\"step\":1,\"x\":true,\"y\":0}", "wrong_type"),
            ("{\"step\":1,\"x\":11,\"y\":0}", "out_of_range"),
            ("{\"step\":1,\"x\":-10.5,\"y\":0}", "out_of_range"),
            ("{\"step\":1,\"x\":1e400,\"y\":0}", "non_finite"),
            ("{\"step\":1,\"x\":-1e999,\"y\":0}", "non_finite"),
            ("{\"step\":1,\"x\":0,\"y\":99}", "out_of_range"),
            ("[1,2,3]", "missing_field"),
            ("42", "missing_field"),
            ("\"text\"", "missing_field"),
            ("{\"step\":1,\"x\":1,\"y\":\"NaN\"}", "wrong_type"),
            ("{\"step\":1 \"x\":1,\"y\":0}", "invalid_json"),
            ("{\"step\":1,\"x\":1,,\"y\":0}", "invalid_json"),
            (String(repeating: " ", count: 70_000) + "{}", "oversize"),
        ]
        #expect(table.count >= 20)
        var before = h.gateway.renderMetrics()
        for (payload, reason) in table {
            let fallbacksBefore = h.metric(#"edgeq_fallbacks_total{reason="invalid"}"#)
            let reasonBefore = h.metric("edgeq_rejected_payloads_total{reason=\"\(reason)\"}")
            try h.send("plant/t/state", payload)
            // The tick happens; wait until the fallback for it is counted.
            let deadline = Date().addingTimeInterval(5)
            while h.metric(#"edgeq_fallbacks_total{reason="invalid"}"#) == fallbacksBefore && Date() < deadline { _ = h.drain(0.01) }
            #expect(h.metric(#"edgeq_fallbacks_total{reason="invalid"}"#) == fallbacksBefore + 1, "payload \(payload.prefix(40)): no invalid fallback")
            #expect(h.metric("edgeq_rejected_payloads_total{reason=\"\(reason)\"}") > reasonBefore, "payload \(payload.prefix(40)) not counted as \(reason)")
            before = h.gateway.renderMetrics()
        }
        _ = before
        // fallback is hold: nothing was published to the actuator, no model decision counted.
        _ = h.drain(0.3)
        #expect(h.received.filter { $0.topic == "plant/t/cmd" }.isEmpty)
        #expect(h.metric(#"edgeq_decisions_total{action="a0",mode="control"}"#) + h.metric(#"edgeq_decisions_total{action="a1",mode="control"}"#) == 0)
        // And a good payload afterwards is decided on.
        try h.send("plant/t/state", state(5))
        _ = try h.waitFor(topic: "plant/t/cmd")
    }

    @Test func controlPlaneAnswersEveryRequest() throws {
        // `manual`: control mode needs a served model (under `trial`, the default, it does not:
        // see controlWithoutAModelIsAcceptedOnlyUnderTrialPromotion).
        let h = try GatewayHarness(yaml: testMapping(extraLearning: "  promotion: {policy: manual}"))
        defer { h.stop() }
        func ask(_ verb: String, _ payload: String) throws -> [String: Any] {
            try h.command(verb, payload)   // signed by the harness's operator key
            return GatewayHarness.json(try h.waitFor(topic: "edgeq/t1/reply/\(verb)"))
        }
        // Control without a model: refused with the reason.
        let noModel = try ask("mode", #"{"id":"a1","mode":"control"}"#)
        #expect(noModel["id"] as? String == "a1")
        #expect(noModel["ok"] as? Bool == false)
        #expect((noModel["error"] as? String)?.contains("no model") == true)
        // Without an id: id null, shadow accepted.
        let shadow = try ask("mode", #"{"mode":"shadow"}"#)
        #expect(shadow["ok"] as? Bool == true)
        #expect(shadow["id"] is NSNull)
        let bad = try ask("mode", #"{"id":3,"mode":"#)
        #expect(bad["ok"] as? Bool == false)
        #expect((bad["error"] as? String)?.contains("malformed JSON") == true)
        let unknown = try ask("explode", #"{"id":"u"}"#)
        #expect(unknown["ok"] as? Bool == false)
        #expect((unknown["error"] as? String)?.contains("unknown verb") == true)
        let rollback = try ask("rollback", #"{"id":"r"}"#)
        #expect(rollback["ok"] as? Bool == false)

        // With a model promoted, control is accepted, persisted, and the status says so.
        try installModel(for: h.map, in: h.dir.url)
        let promote = try ask("promote", #"{"id":"p"}"#)
        #expect(promote["ok"] as? Bool == true, "\(promote)")
        let control = try ask("mode", #"{"id":"c","mode":"control"}"#)
        #expect(control["ok"] as? Bool == true, "\(control)")
        #expect(control["by"] as? String == "tester", "every reply names the signing key: \(control)")
        let status = try h.waitFor(topic: "edgeq/t1/status") { String(decoding: $0.payload, as: UTF8.self).contains(#""mode":"control""#) }
        let s = GatewayHarness.json(status)
        #expect(s["by"] as? String == "tester" && s["auth"] as? String == "signed", "\(s)")
        #expect((s["at"] as? Double).map { abs($0 - Date().timeIntervalSince1970) < 60 } == true, "\(s)")
        #expect(try GatewayState.load(from: h.dir.url)?.mode == .control)
        #expect(try GatewayState.load(from: h.dir.url)?.by == "tester")
        #expect(try GatewayState.load(from: h.dir.url)?.reason == "command by tester")

        // A late subscriber gets the retained status.
        let late = try MQTTClient(try MQTTConfiguration(url: h.broker.url, clientID: "late"))
        defer { late.stop() }
        try late.subscribe("edgeq/t1/status")
        late.start()
        let retained = try #require(late.receive(timeout: 5))
        #expect(retained.retain)
        #expect(String(decoding: retained.payload, as: UTF8.self).contains(#""state":"online""#))
    }

    /// Control mode without a served model: under `promotion: trial` (the default) it is
    /// accepted, and the incumbent stays in charge (the gateway publishes no command, it logs
    /// and reports the incumbent's as in shadow) until a trial's candidate acts; under `manual`
    /// and `auto` it is refused and the gateway stays in shadow.
    @Test(arguments: ["trial", "manual", "auto"])
    func controlWithoutAModelIsAcceptedOnlyUnderTrialPromotion(_ policy: String) throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: "  promotion: {policy: \(policy)}"))
        defer { h.stop() }
        let reply = try h.ask("mode", #"{"id":"c","mode":"control"}"#)
        if policy == "trial" {
            #expect(reply["ok"] as? Bool == true, "\(reply)")
            #expect(h.gateway.mode == .control)
            #expect(try GatewayState.load(from: h.dir.url)?.mode == .control)
        } else {
            #expect(reply["ok"] as? Bool == false, "\(reply)")
            #expect((reply["error"] as? String)?.contains("no model") == true, "\(reply)")
            #expect(h.gateway.mode == .shadow)
            #expect(try GatewayState.load(from: h.dir.url)?.mode != .control)
        }
        // Either way the incumbent runs the plant: every tick is answered with a shadow report
        // and the incumbent's commands are logged as its own.
        for i in 0..<10 {
            try h.send("plant/t/state", state(i, x: Double(i % 3) - 1))
            _ = try h.waitFor(topic: "edgeq/t1/shadow")
            try h.send("plant/t/cmd", "{\"a\":\(i % 2),\"step\":\(i)}")  // the incumbent
        }
        #expect(eventually(timeout: 10) { _ = h.drain(0.05); return h.metric("edgeq_transitions_submitted_total") >= 9 })
        // No decision in control: the gateway published no command.
        for column in ["a0", "a1", "hold", "none"] {
            #expect(h.metric("edgeq_decisions_total{action=\"\(column)\",mode=\"control\"}") == 0, "\(column)")
        }
        #expect(h.metric("edgeq_in_charge") == 0)
        h.stop()
        let rows = try ExperienceLog.open(dataDirectory: h.dir.url.path, create: false).transitions(window: .all).map(\.transition)
        #expect(rows.count == 9)
        #expect(rows.allSatisfy { $0.actor == .incumbent && $0.mode == .shadow }, "\(rows.prefix(2))")
        #expect(rows.map(\.action) == (0..<9).map { Optional($0 % 2) })
    }

    @Test func theModeSurvivesARestart() throws {
        let broker = try MosquittoBroker()
        let dir: URL
        do {
            let h = try GatewayHarness(yaml: testMapping(), withModel: true, broker: broker)
            try h.command("mode", #"{"mode":"control"}"#)
            let r = GatewayHarness.json(try h.waitFor(topic: "edgeq/t1/reply/mode"))
            #expect(r["ok"] as? Bool == true)
            h.stop()
            dir = h.dir.url
            #expect(try GatewayState.load(from: dir)?.mode == .control)
        }
    }

    @Test func explorationStaysWithinItsBudgetAndIsLoggedAsSuch() throws {
        let yaml = testMapping(extraLearning: "  exploration: {start: 1, end: 1, decay_steps: 0, budget: 0.3}\n" + noControlGroup)
        let h = try GatewayHarness(yaml: yaml, mode: .control, withModel: true)
        for i in 0..<201 { try h.send("plant/t/state", state(i, x: Double(i % 5))) }
        let deadline = Date().addingTimeInterval(15)
        while h.metric("edgeq_ticks_total") < 201 && Date() < deadline { _ = h.drain(0.05) }
        h.stop()
        let log = try ExperienceLog.open(dataDirectory: h.dir.url.path, create: false)
        let rows = try log.transitions(window: .all).map(\.transition)
        #expect(rows.count == 200)
        let explored = rows.filter { $0.actor == .exploration }.count
        // ε = 1 within a 30 % budget: exploration takes (nearly) all of its budget, never more.
        #expect(explored <= 61 && explored >= 50, "\(explored) explorative decisions of 200")
        #expect(rows.allSatisfy { $0.actor == .exploration || $0.actor == .model })
    }

    @Test func inHandTheGatewayOnlyShadows() throws {
        let yaml = testMapping(extraLearning: noControlGroup)
            .replacingOccurrences(of: "  - {name: y, topic: plant/t/state, json: y, range: [-10, 10]}",
                                  with: "  - {name: y, topic: plant/t/state, json: y, range: [-10, 10]}\n  - {name: hand, topic: plant/t/state, json: hand}")
            .replacingOccurrences(of: "  ood_margin: none", with: "  ood_margin: none\n  hand_override: hand")
        let h = try GatewayHarness(yaml: yaml, mode: .control, withModel: true)
        defer { h.stop() }
        try h.send("plant/t/state", #"{"step":1,"x":1,"y":0,"hand":1}"#)
        let report = GatewayHarness.json(try h.waitFor(topic: "edgeq/t1/shadow"))
        #expect(report["status"] as? String == "hand_override")
        #expect(h.received.filter { $0.topic == "plant/t/cmd" }.isEmpty)
        try h.send("plant/t/state", #"{"step":2,"x":1,"y":0,"hand":0}"#)
        let cmd = GatewayHarness.json(try h.waitFor(topic: "plant/t/cmd"))
        #expect(cmd["step"] as? Int == 2)
        #expect(h.metric(#"edgeq_fallbacks_total{reason="hand_override"}"#) == 1)
    }

    /// Control mode, trigger ticks: when the plant falls silent for longer than the watchdog's
    /// time, the fallback is published once and the status says why.
    @Test func theWatchdogPublishesTheFallbackWhenNoDecisionIsMade() throws {
        let yaml = testMapping(fallback: "a1", extraLearning: noControlGroup)
            .replacingOccurrences(of: #"payload: '{"a":{{value}},"step":{{step}}}'"#, with: #"payload: '{"a":{{value}}}'"#)
        // The watchdog counts from the gateway's start until the first decision too: 1 s leaves a
        // loaded machine time to deliver the first state before it (0.4 s once could not).
        let h = try GatewayHarness(yaml: yaml, mode: .control, withModel: true) { $0.watchdogSeconds = 1 }
        defer { h.stop() }
        try h.send("plant/t/state", state(1))
        _ = try h.waitFor(topic: "plant/t/cmd")
        let silentSince = Date()
        let status = try h.waitFor(topic: "edgeq/t1/status", timeout: 5) {
            String(decoding: $0.payload, as: UTF8.self).contains("watchdog: no decision")
        }
        #expect(Date().timeIntervalSince(silentSince) >= 1)
        #expect(String(decoding: status.payload, as: UTF8.self).contains(#""watchdog_trips":1"#))
        let fallback = h.received.filter { $0.topic == "plant/t/cmd" }.dropFirst().map(GatewayHarness.json)
        #expect(fallback.count == 1)
        #expect(fallback.first?["a"] as? Int == 1)
        #expect(h.metric(#"edgeq_fallbacks_total{reason="watchdog"}"#) == 1)
        // Decisions again: the watchdog re-arms, and it trips once per silence, not per check.
        _ = h.drain(1)
        #expect(h.metric("edgeq_watchdog_trips_total") == 1)
    }

    /// With a handover, the watchdog also gives the plant back to its incumbent, and the next
    /// decision in control takes it again before its command.
    @Test func theWatchdogGivesThePlantBackAndTheNextDecisionTakesItAgain() throws {
        let yaml = testMapping(fallback: "a1", extraLearning: noControlGroup)
            + "\nhandover:\n  take: {topic: plant/t/mode, payload: gateway}\n  give: {topic: plant/t/mode, payload: incumbent}\n"
        let h = try GatewayHarness(yaml: yaml, mode: .control, withModel: true) { $0.watchdogSeconds = 1 }   // as above
        defer { h.stop() }
        try h.send("plant/t/state", state(1))
        _ = try h.waitFor(topic: "plant/t/cmd")
        let tripped = try h.waitFor(topic: "edgeq/t1/status", timeout: 5) { String(decoding: $0.payload, as: UTF8.self).contains("watchdog: no decision") }
        #expect(String(decoding: tripped.payload, as: UTF8.self).contains(#""in_charge":"incumbent""#))
        func gave() -> Bool { h.received.contains { $0.topic == "plant/t/mode" && String(decoding: $0.payload, as: UTF8.self) == "incumbent" } }
        if !gave() { _ = try h.waitFor(topic: "plant/t/mode", timeout: 5) { String(decoding: $0.payload, as: UTF8.self) == "incumbent" } }
        #expect(gave())
        try h.send("plant/t/state", state(2))
        _ = try h.waitFor(topic: "plant/t/mode", timeout: 5) { String(decoding: $0.payload, as: UTF8.self) == "gateway" }
        let cmd = GatewayHarness.json(try h.waitFor(topic: "plant/t/cmd") { (GatewayHarness.json($0)["step"] as? Int) == 2 })
        #expect(cmd["step"] as? Int == 2)
        #expect(h.metric(#"edgeq_handovers_total{to="incumbent"}"#) == 1)
        #expect(h.metric(#"edgeq_handovers_total{to="gateway"}"#) == 2)
    }
}
