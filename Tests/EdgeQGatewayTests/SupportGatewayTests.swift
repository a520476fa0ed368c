import EdgeQGateway
import EdgeQLog
import EdgeQNet
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Testing

/// A state outside the served model's training support (`safety.on_unsupported`): with a
/// handover the plant goes back to its incumbent until the state has been inside again for
/// `support_hold` ticks; without, the fallback acts. A real broker, a real gateway, a real log.
@Suite(.serialized) struct SupportGatewayTests {
    func state(_ step: Int, x: Double) -> String { "{\"step\":\(step),\"x\":\(x),\"y\":0}" }

    /// The model was trained on x, y in ±2 (raw state inputs ±0.2 after `normalize: [-10, 10]`);
    /// margin 0.5 widens that to ±0.4, so x = 9 is outside and x = 1 inside.
    let support = StateSupport(min: [-0.2, -0.2], max: [0.2, 0.2])

    func mapping(_ safety: String, handover: Bool) -> String {
        var y = testMapping(extraLearning: noControlGroup).replacingOccurrences(of: "safety:\n  ood_margin: none", with: "safety:\n  ood_margin: none\n" + safety)
        if handover {
            y += """

            handover:
              take: {topic: plant/t/mode, payload: gateway}
              give: {topic: plant/t/mode, payload: incumbent}
            """
        }
        return y
    }

    @Test func outsideTheSupportTheIncumbentIsInChargeUntilTheStateIsBackForSupportHoldTicks() throws {
        let h = try GatewayHarness(yaml: mapping("  support_hold: 3", handover: true), mode: .control, withModel: true, support: support)
        defer { h.stop() }
        #expect(h.map.safety.onUnsupported == .incumbent, "with a handover section the default response is the incumbent")
        // Steps 0–2 inside, 3 outside, 4–6 inside (4 and 5 still held, 6 the model's again), 7 inside.
        let xs: [Double] = [1, 1, 1, 9, 1, 1, 1, 1]
        for (i, x) in xs.enumerated() {
            try h.send("plant/t/state", state(i, x: x))
            try h.send("plant/t/cmd", "{\"a\":1,\"step\":\(i)}")   // the incumbent's command, as the plant's controller sends it
        }
        var commandSteps: [Int] = [], shadowTicks: [Int: String] = [:], modes: [String] = []
        let deadline = Date().addingTimeInterval(10)
        while (commandSteps.count < 13 || shadowTicks.count < 3 || modes.count < 2) && Date() < deadline {
            for m in h.drain(0.1) {
                let text = String(decoding: m.payload, as: UTF8.self)
                switch m.topic {
                case "plant/t/cmd":
                    // The observer also sees its own incumbent commands (a = 1): only the gateway's
                    // carry the model's choice, so tell them apart by counting per step below.
                    if let s = GatewayHarness.json(m)["step"] as? Int { commandSteps.append(s) }
                case "edgeq/t1/shadow":
                    let j = GatewayHarness.json(m)
                    if let t = j["tick"] as? Int { shadowTicks[t] = j["status"] as? String ?? "?" }
                case "plant/t/mode": modes.append(text)
                default: break
                }
            }
        }
        _ = h.drain(0.3)
        // Every step has the incumbent's command once; the gateway's command adds a second one.
        var perStep = [Int: Int]()
        for s in commandSteps { perStep[s, default: 0] += 1 }
        let gatewaySteps = perStep.filter { $0.value == 2 }.map(\.key).sorted()
        #expect(gatewaySteps == [0, 1, 2, 6, 7], "the gateway commanded steps \(gatewaySteps)")
        // Ticks count from 1: steps 3, 4, 5 are ticks 4, 5, 6, reported in shadow.
        #expect(shadowTicks == [4: "outside_support", 5: "outside_support", 6: "outside_support"], "\(shadowTicks)")
        // The first take is published as the gateway starts in control mode, before the observer
        // is connected: what it sees is the give as the state left and the take as it came back.
        #expect(modes == ["incumbent", "gateway"], "handover writes: \(modes)")
        #expect(h.metric("edgeq_support_handbacks_total") == 1)
        #expect(h.metric("edgeq_states_outside_support_total") == 1)
        h.stop()
        // The held ticks are the incumbent's rows in the log: its command, in shadow.
        let log = try ExperienceLog.open(dataDirectory: h.dir.url.path, create: false)
        let rows = try log.transitions(window: .all).map(\.transition)
        #expect(rows.count == 7)
        let held = rows.filter { (4...6).contains($0.tick) }
        #expect(held.count == 3 && held.allSatisfy { $0.actor == .incumbent && $0.mode == .shadow && $0.action == 1 }, "\(held)")
        #expect(rows.filter { !(4...6).contains($0.tick) }.allSatisfy { $0.mode == .control && $0.actor == .model })
    }

    /// A feature's own `support_margin` replaces the safety section's for its inputs: x with
    /// 0.1 is outside at 3 (raw 0.3 against the box ±0.2 widened to ±0.24) where y, with the
    /// default 0.5 (±0.4), is not; with `safety.support_margin: none` only x is checked; a
    /// feature with `none` is not checked at all. Each run sends three states, one of them
    /// outside: the counter says which the gateway saw outside.
    @Test(arguments: [
        ("{signal: x, normalize: [-10, 10], support_margin: 0.1}", "", [(1.0, 0.0), (3, 0), (1, 3)]),
        ("{signal: x, normalize: [-10, 10], support_margin: 0.1}", "  support_margin: none\n", [(1.0, 0.0), (3, 0), (1, 9)]),
        ("{signal: x, normalize: [-10, 10], support_margin: none}", "", [(9.0, 0.0), (1, 0), (1, 9)]),
    ])
    func aFeaturesOwnMarginReplacesTheSafetySectionsForItsInputs(feature: String, safety: String, states: [(Double, Double)]) throws {
        let yaml = mapping(safety + "  on_unsupported: fallback", handover: false)
            .replacingOccurrences(of: "fallback: a0", with: "fallback: a1")
            .replacingOccurrences(of: "{signal: x, normalize: [-10, 10]}", with: feature)
        let h = try GatewayHarness(yaml: yaml, mode: .control, withModel: true, support: support)
        defer { h.stop() }
        for (i, (x, y)) in states.enumerated() { try h.send("plant/t/state", "{\"step\":\(i),\"x\":\(x),\"y\":\(y)}") }
        var steps = Set<Int>()
        let deadline = Date().addingTimeInterval(10)
        while steps.count < states.count && Date() < deadline {
            for m in h.drain(0.1) where m.topic == "plant/t/cmd" {
                if let s = GatewayHarness.json(m)["step"] as? Int { steps.insert(s) }
            }
        }
        #expect(steps.count == states.count, "commands for steps \(steps.sorted())")
        #expect(h.metric("edgeq_states_outside_support_total") == 1)
        #expect(h.metric(#"edgeq_fallbacks_total{reason="outside_support"}"#) == 1)
    }

    @Test(arguments: ["fallback", "hold", "none"])
    func withoutTheIncumbentTheConfiguredResponseActsOnTheTickOutside(response: String) throws {
        // fallback a1; the random model's choice is whatever it is: `none` publishes it.
        let yaml = mapping("  on_unsupported: \(response)", handover: false).replacingOccurrences(of: "fallback: a0", with: "fallback: a1")
        let h = try GatewayHarness(yaml: yaml, mode: .control, withModel: true, support: support)
        defer { h.stop() }
        let xs: [Double] = [1, 9, 1]
        for (i, x) in xs.enumerated() { try h.send("plant/t/state", state(i, x: x)) }
        let want = response == "hold" ? 2 : 3
        var cmds: [Int: Int] = [:]
        let deadline = Date().addingTimeInterval(10)
        while cmds.count < want && Date() < deadline {
            for m in h.drain(0.1) where m.topic == "plant/t/cmd" {
                let j = GatewayHarness.json(m)
                if let s = j["step"] as? Int, let a = j["a"] as? Int { cmds[s] = a }
            }
        }
        _ = h.drain(0.3)
        for m in h.received where m.topic == "plant/t/cmd" {
            let j = GatewayHarness.json(m)
            if let s = j["step"] as? Int, let a = j["a"] as? Int { cmds[s] = a }
        }
        switch response {
        case "fallback":
            #expect(cmds[1] == 1, "the fallback a1 on the step outside: \(cmds)")
            #expect(h.metric(#"edgeq_fallbacks_total{reason="outside_support"}"#) == 1)
        case "hold":
            #expect(cmds[1] == nil && cmds[0] != nil && cmds[2] != nil, "nothing on the step outside: \(cmds)")
            #expect(h.metric(#"edgeq_fallbacks_total{reason="outside_support"}"#) == 1)
        default:
            #expect(cmds.count == 3, "the model acts on every step: \(cmds)")
            #expect(h.metric(#"edgeq_fallbacks_total{reason="outside_support"}"#) == 0)
        }
        #expect(h.metric("edgeq_states_outside_support_total") == 1)
        #expect(h.metric("edgeq_support_handbacks_total") == 0)
    }
}
