@testable import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Testing
@testable import EdgeQRetrain

/// What the log says is what happened, against a real broker:
///
/// - a command whose second write cannot be rendered: nothing of it is published, the tick
///   falls back (`render_failed`), and the row says fallback;
/// - broker restarts while the plant steps on: the rows that span the lost steps are flagged
///   `gap` (by the mapping's `tick.sequence`), every other row is not, and retraining leaves
///   the flagged rows out and says how many;
/// - a plant that ignores the gateway's commands and reports what it applied instead: the row
///   records the applied action, the mismatch is flagged and counted.
@Suite struct LogTruthTests {
    func state(_ step: Int, x: Double = 1, y: Double = -1) -> String { "{\"step\":\(step),\"x\":\(x),\"y\":\(y)}" }

    /// The second write of `a1` divides by zero: it can never be rendered. `a0` is masked so
    /// that the model must choose `a1`.
    static let halfRenderable = """
        gateway:
          id: t1
          mode: control
        signals:
          - {name: step, topic: plant/t/state, json: step}
          - {name: x, topic: plant/t/state, json: x, range: [-10, 10]}
          - {name: y, topic: plant/t/state, json: y, range: [-10, 10]}
        state:
          features:
            - {signal: x, normalize: [-10, 10]}
            - {signal: y, normalize: [-10, 10]}
        tick:
          trigger: plant/t/state
        reward: -abs(x)
        actions:
          fallback: hold
          list:
            - name: a0
              publish: {topic: plant/t/cmd, payload: '{"a":0,"step":{{step}}}', value: 0}
              allowed: x > 100
            - name: a1
              publish:
                - {topic: plant/t/cmd, payload: '{"a":{{value}},"step":{{step}}}', value: 1}
                - {topic: plant/t/aux, payload: '{"v":{{value}}}', value: 1 / (x - x)}
        safety:
          ood_margin: none
        learning:
          hidden: [16, 16]
          retrain: {every_transitions: 1000000}
          promotion: {control_share: 0}   # no control block of the incumbent: every tick is the model's
        """

    @Test func aCommandThatCannotBeRenderedWhollyIsNotPublishedInPartAndIsLoggedAsFallback() throws {
        let h = try GatewayHarness(yaml: Self.halfRenderable, mode: .control, withModel: true)
        defer { h.stop() }
        for i in 0..<20 { try h.send("plant/t/state", state(i, x: Double(i % 5) - 2)) }
        let deadline = Date().addingTimeInterval(10)
        while h.metric("edgeq_ticks_total") < 20 && Date() < deadline { _ = h.drain(0.05) }
        _ = h.drain(0.5)
        h.stop()
        let published = h.received.filter { $0.topic == "plant/t/cmd" || $0.topic == "plant/t/aux" }
        #expect(published.isEmpty, "published in part: \(published.prefix(3).map { String(decoding: $0.payload, as: UTF8.self) })")
        #expect(h.metric(#"edgeq_fallbacks_total{reason="render_failed"}"#) == 20)
        #expect(h.metric(#"edgeq_decisions_total{action="a1",mode="control"}"#) == 0)
        let rows = try ExperienceLog.open(dataDirectory: h.dir.url.path, create: false).transitions(window: .all).map(\.transition)
        #expect(rows.count == 19)
        #expect(rows.allSatisfy { $0.actor == .fallback && $0.action == nil && $0.modelAction == 1 }, "\(rows.prefix(2))")
    }

    /// The plant's step counter is the first state column, so each row says which steps it spans.
    static let sequenced = """
        gateway:
          id: t1
          mode: shadow
        signals:
          - {name: step, topic: plant/t/state, json: step}
          - {name: x, topic: plant/t/state, json: x, range: [-10, 10]}
        state:
          features:
            - {signal: step}
            - {signal: x, normalize: [-10, 10]}
        tick:
          trigger: plant/t/state
          sequence: step
        reward: -abs(x)
        actions:
          fallback: hold
          list:
            - {name: a0, publish: {topic: plant/t/cmd, payload: '{"a":0}', value: 0}}
            - {name: a1, publish: {topic: plant/t/cmd, payload: '{"a":1}', value: 1}}
        incumbent: {topic: plant/t/cmd, json: a}
        safety:
          ood_margin: none
        learning:
          hidden: [16, 16]
          retrain: {every_transitions: 1000000}
        """

    @Test func rowsSpanningABrokerRestartAreFlaggedAndNotLearnedFrom() throws {
        let broker = try MosquittoBroker()
        let h = try GatewayHarness(yaml: Self.sequenced, broker: broker)
        defer { h.stop() }
        var step = 0
        var plant = try plantClient(broker)
        for round in 0..<3 {
            for _ in 0..<40 {
                _ = try plant.publish("plant/t/state", "{\"step\":\(step),\"x\":\(Double(step % 9) - 4)}", qos: .atLeastOnce)
                _ = try plant.publish("plant/t/cmd", "{\"a\":\(step % 2)}", qos: .atLeastOnce)
                step += 1
                usleep(2_000)
            }
            usleep(300_000)
            guard round < 2 else { break }
            // The broker dies; the plant steps on meanwhile (its messages are lost); it comes back.
            broker.kill9()
            plant.stop()
            step += 5
            usleep(300_000)
            try broker.start()
            plant = try plantClient(broker)
            _ = try h.waitFor(topic: "edgeq/t1/status", timeout: 20) { String(decoding: $0.payload, as: UTF8.self).contains(#""state":"online""#) }
            usleep(500_000)
        }
        plant.stop()
        let deadline = Date().addingTimeInterval(10)
        while h.metric("edgeq_ticks_total") < 120 && Date() < deadline { _ = h.drain(0.05) }
        h.stop()

        let path = h.dir.url.appendingPathComponent(ExperienceLog.defaultFileName).path
        let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all).map(\.transition)
        #expect(rows.count >= 110, "\(rows.count) rows")
        var gaps = 0
        for r in rows {
            let spans = Int(r.nextState[0] - r.state[0])
            #expect(r.flags.contains(.gap) == (spans != 1), "steps \(r.state[0]) → \(r.nextState[0]) flagged \(r.flags.rawValue)")
            if r.flags.contains(.gap) { gaps += 1 }
        }
        #expect(gaps >= 2, "the two restarts left no gap row")
        #expect(h.metric("edgeq_tick_gaps_total") == Double(gaps))

        // Retraining leaves them out and says how many.
        var policy = CheckPolicy(h.map.learning)
        policy.minRows = 20
        policy.fqeUpdates = 0
        let (report, _) = try Retrainer(map: h.map, policy: policy).train(logPath: path, limits: RetrainLimits(steps: 5), warmStart: nil)
        #expect(report.gapRowsExcluded == gaps)
        #expect(report.rows == rows.filter { !$0.flags.contains(.gap) && $0.action != nil }.count)
    }

    func plantClient(_ broker: MosquittoBroker) throws -> MQTTClient {
        let c = try MQTTClient(MQTTConfiguration(url: broker.url, clientID: "plant-\(UUID().uuidString.prefix(6))"))
        c.start()
        try c.waitUntilConnected(timeout: 10)
        return c
    }

    @Test func aPlantThatIgnoresCommandsIsLoggedWithWhatItApplied() throws {
        let yaml = testMapping(extraLearning: noControlGroup) + "\napplied: {topic: plant/t/applied, json: a}\n"
        let h = try GatewayHarness(yaml: yaml, mode: .control, withModel: true)
        defer { h.stop() }
        var commanded: [Int: Int] = [:]
        var own: [Int: Int] = [:]
        for step in 0..<40 {
            try h.send("plant/t/state", state(step, x: Double(step % 9) - 4, y: Double(step % 4)))
            // The gateway's command for this step …
            let cmd = try h.waitFor(topic: "plant/t/cmd", timeout: 5) { GatewayHarness.json($0)["step"] as? Int == step }
            commanded[step] = GatewayHarness.json(cmd)["a"] as? Int
            // … which the plant ignores: it applies its own schedule and reports that.
            own[step] = (step / 3) % 2
            try h.send("plant/t/applied", "{\"a\":\(own[step] ?? 0)}")
        }
        try h.send("plant/t/state", state(40))
        let deadline = Date().addingTimeInterval(10)
        while h.metric("edgeq_ticks_total") < 41 && Date() < deadline { _ = h.drain(0.05) }
        h.stop()

        let rows = try ExperienceLog.open(dataDirectory: h.dir.url.path, create: false).transitions(window: .all).map(\.transition)
        #expect(rows.count == 40)
        var mismatches = 0
        for r in rows {
            let step = Int(r.tick) - 1
            #expect(r.action == own[step], "step \(step): logged \(String(describing: r.action)), the plant applied \(String(describing: own[step]))")
            #expect(r.modelAction == commanded[step])
            let differs = commanded[step] != own[step]
            #expect(r.flags.contains(.appliedMismatch) == differs)
            #expect(r.actor == (differs ? .incumbent : .model))
            if differs { mismatches += 1 }
        }
        #expect(mismatches > 0)
        #expect(h.metric("edgeq_applied_mismatch_total") == Double(mismatches))
        #expect(h.metric("edgeq_applied_reports_total") == 40)
    }

    /// The clock rules, on given tick times (ns).
    @Test func theClockFindsMissedTicks() throws {
        func map(_ tick: String) throws -> TopicMap {
            try TopicMap.parse(yaml: testMapping(tick: tick))
        }
        // Periodic 1 s: more than 1.5 s between two ticks is a gap.
        var periodic = TickGapDetector(map: try map("period: 1s"))
        let p: [UInt64] = [0, 1, 2, 3, 5, 6, 7].map { $0 * 1_000_000_000 + 1 }
        #expect(p.map { periodic.observe($0) } == [false, false, false, false, true, false, false])
        // max_gap given: that limit.
        var given = TickGapDetector(map: try map("{period: 1s, max_gap: 2500ms}"))
        #expect(p.map { given.observe($0) } == [false, false, false, false, false, false, false])
        // A trigger without sequence: 3 × the median of the last intervals, after 8 of them.
        var adaptive = TickGapDetector(map: try map("trigger: plant/t/state"))
        var t: UInt64 = 1
        var out: [Bool] = []
        for k in 0..<20 {
            t += k == 5 || k == 15 ? 50_000_000 : (k % 2 == 0 ? 10_000_000 : 12_000_000)
            out.append(adaptive.observe(t))
        }
        #expect(out.enumerated().filter(\.element).map(\.offset) == [15], "warm-up hides k = 5; k = 15 is 50 ms against a 12 ms median")
        // A trigger with a sequence: the clock stays out of it; max_gap none: never.
        var seq = TickGapDetector(map: try TopicMap.parse(yaml: testMapping(tick: "{trigger: plant/t/state, sequence: step}")))
        var off = TickGapDetector(map: try map("{period: 1s, max_gap: none}"))
        #expect(p.map { seq.observe($0) }.allSatisfy { !$0 })
        #expect(p.map { off.observe($0) }.allSatisfy { !$0 })
    }
}
