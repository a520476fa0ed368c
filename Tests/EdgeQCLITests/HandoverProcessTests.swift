import EdgeQGateway
import EdgeQMQTT
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Testing

/// Bumpless handover through the real `edgeq run` behind a real mosquitto (issue 13, item 4):
/// the plant is told who is in charge on `plant/<id>/mode` when the gateway takes control
/// (signed cmd/mode control), gives it back (cmd/mode shadow, the guard's fallback to
/// shadow, SIGTERM), and — through the Last Will of the gateway's handover connection — when
/// the gateway is killed. Before, the gateway just stopped publishing and the plant waited out
/// its command timeout on every step.
@Suite struct HandoverProcessTests {
    static let take = #"{"controller":"gateway"}"#
    static let give = #"{"controller":"incumbent"}"#

    /// The handover section of the test plant `id` (retained, so a plant that connects later
    /// learns who is in charge).
    static func handover(_ id: String) -> String {
        """

        handover:
          keepalive: 5s
          take: {topic: plant/\(id)/mode, payload: '\(take)', retain: true}
          give: {topic: plant/\(id)/mode, payload: '\(give)', retain: true}
        """
    }

    /// A fixture of `SignedCommandTests` (operator key alice, an observer on every topic) with
    /// the handover section and a served model, so that `cmd/mode control` is obeyed.
    /// The guard's control blocks are off unless `learning` says otherwise: these tests are
    /// about mode changes, and a control block of the incumbent would be a handover of its own.
    func fixture(_ id: String, learning: String = "  retrain: {every_transitions: none}\n  promotion: {control_share: 0}") throws -> SignedCommandTests.Fixture {
        let f = try SignedCommandTests.Fixture(id: id, yamlExtra: Self.handover(id), observe: "#")
        try (processMapping(id: id, plant: id, learning: learning) + Self.handover(id))
            .write(toFile: f.file, atomically: true, encoding: .utf8)
        try SignedModelTests().storeAndServe(try TopicMap.load(path: f.file), in: f.data, seed: 7)
        return f
    }

    func mode(_ f: SignedCommandTests.Fixture, _ m: String, id requestID: String) throws -> [String: Any] {
        try f.send("mode", try f.alice.signed(f.id, "mode", #"{"id":"\#(requestID)","mode":"\#(m)"}"#), id: requestID)
    }

    /// The next message on the plant's mode topic, as text.
    func nextHandover(_ f: SignedCommandTests.Fixture, timeout: Double = 15) -> String? {
        f.next(timeout: timeout) { $0.topic == "plant/\(f.id)/mode" }.map { String(decoding: $0.payload, as: UTF8.self) }
    }

    @Test func modeChangesTakeAndGiveOnceEachAndSIGTERMGivesBeforeTheOfflineStatus() throws {
        let f = try fixture("ho1")
        try f.start()
        // At start the gateway announces that the incumbent is in charge (a fresh broker has nothing retained).
        #expect(nextHandover(f) == Self.give, "\(f.log())")
        #expect((f.status { _ in true }?["handover"] as? [String: Any])?["controller"] as? String == "incumbent")

        #expect(try mode(f, "control", id: "c1")["ok"] as? Bool == true, "\(f.log())")
        #expect(nextHandover(f) == Self.take, "\(f.log())")
        let inControl = f.status { ($0["handover"] as? [String: Any])?["controller"] as? String == "gateway" }
        #expect(inControl?["mode"] as? String == "control")

        #expect(try mode(f, "shadow", id: "s1")["ok"] as? Bool == true)
        #expect(nextHandover(f) == Self.give, "\(f.log())")
        // Shadow again: already given, nothing is published; the next handover is the take.
        #expect(try mode(f, "shadow", id: "s2")["ok"] as? Bool == true)
        #expect(try mode(f, "control", id: "c2")["ok"] as? Bool == true)
        #expect(nextHandover(f) == Self.take, "a second give was published for a second cmd/mode shadow: \(f.log())")
        #expect(try f.metric(#"edgeq_handovers_total{to="gateway"}"#) == 2)
        #expect(try f.metric(#"edgeq_handovers_total{to="incumbent"}"#) == 1)

        // SIGTERM in control: the give, then the offline status.
        let g = try #require(f.gateway)
        g.signal(SIGTERM)
        var order: [String] = []
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, !order.contains("offline") {
            guard let m = f.observer.receive(timeout: 0.2) else { continue }
            if m.topic == "plant/\(f.id)/mode" { order.append(String(decoding: m.payload, as: UTF8.self)) }
            if m.topic == "edgeq/\(f.id)/status", f.json(m)["state"] as? String == "offline" { order.append("offline") }
        }
        #expect(order == [Self.give, "offline"], "\(f.log())")
        #expect(g.wait(timeout: 30) == 0)
        f.gateway = nil
        // Stopped cleanly after the give: the broker did not publish the Last Will as well.
        #expect(f.next(timeout: 1) { $0.topic == "plant/\(f.id)/mode" } == nil)
    }

    @Test func killDashNineInControlMakesTheBrokerGiveControlBack() throws {
        let f = try fixture("ho2")
        try f.start()
        #expect(nextHandover(f) == Self.give, "the start's announcement: \(f.log())")
        #expect(try mode(f, "control", id: "c1")["ok"] as? Bool == true, "\(f.log())")
        #expect(nextHandover(f) == Self.take)
        // The handover connection (its Last Will is the give) is up once the metric says so.
        #expect(try eventually(timeout: 10) { try f.metric("edgeq_handover_will_armed") == 1 }, "\(f.log())")

        let g = try #require(f.gateway)
        g.signal(SIGKILL)
        _ = g.wait(timeout: 10)
        f.gateway = nil
        // The broker notices within 1.5 × keepalive (7.5 s) at the latest; a killed process's
        // socket is closed by the kernel, so it usually knows at once.
        #expect(nextHandover(f, timeout: 7.5) == Self.give, "no Last Will on plant/ho2/mode; broker log:\n\(f.broker.log())")

        // Retained: a plant that connects afterwards is told that its incumbent is in charge.
        let late = try plantClient(f.broker, "plant/ho2/mode")
        defer { late.stop() }
        let retained = late.receive(timeout: 10)
        #expect(retained.map { String(decoding: $0.payload, as: UTF8.self) } == Self.give)
        #expect(retained?.retain == true)
    }

    @Test func theGuardsFallbackToShadowGivesControlBack() throws {
        // One model version (nothing to roll back to), and a guard that compares blocks of 4
        // ticks: every other block goes to the control group (the incumbent, nothing served before).
        let f = try fixture("ho3", learning: """
              retrain: {every_transitions: none}
              promotion: {policy: manual, trial: {block: 4, burn_in: 0, min_pairs: 2}, control_share: 0.5, guard_pairs: 4}
            """)
        try f.start()
        let plant = f.observer
        #expect(try mode(f, "control", id: "c1")["ok"] as? Bool == true, "\(f.log())")
        // A closed-loop plant: after a tick the gateway ran (its command on plant/ho3/cmd) x
        // goes to 5 (reward -5); after a tick of the control group (the gateway silent, its shadow
        // report instead) the incumbent holds x at 0. The served model is far worse: the guard trips.
        var x = 0
        var event: [String: Any]?
        var step = 0
        while event == nil && step < 200 {
            _ = try plant.publish("plant/ho3/state", #"{"step":\#(step),"x":\#(x)}"#, qos: .atLeastOnce)
            step += 1
            guard let reaction = f.next(timeout: 10, { m in
                (m.topic == "plant/ho3/cmd" && !String(decoding: m.payload, as: UTF8.self).contains("incumbent")) || m.topic == "edgeq/ho3/shadow"
                    || (m.topic == "edgeq/ho3/retrain" && f.json(m)["phase"] as? String == "guard")
            }) else { break }
            if reaction.topic == "edgeq/ho3/retrain" {
                event = f.json(reaction)
            } else if reaction.topic == "plant/ho3/cmd" {
                x = 5
            } else {
                // The incumbent's command (marked, so that its echo is not taken for the gateway's).
                _ = try plant.publish("plant/ho3/cmd", #"{"a":0,"by":"incumbent"}"#, qos: .atLeastOnce)
                x = 0
            }
        }
        let e = try #require(event ?? f.next(timeout: 20) { $0.topic == "edgeq/ho3/retrain" && f.json($0)["phase"] as? String == "guard" }.map(f.json),
                             "the guard did not trip in \(step) ticks: \(f.log())")
        #expect(e["verdict"] as? String == "fallback_to_shadow", "\(e) \(f.log())")
        #expect(e["control"] as? String == "incumbent", "\(e)")
        // The last handover on the plant's mode topic says the incumbent is in charge.
        var last: String?
        while let m = f.next(timeout: 2, { $0.topic == "plant/ho3/mode" }) { last = String(decoding: m.payload, as: UTF8.self) }
        let retained = try plantClient(f.broker, "plant/ho3/mode")
        defer { retained.stop() }
        let now = retained.receive(timeout: 10).map { String(decoding: $0.payload, as: UTF8.self) }
        #expect(now == Self.give, "last seen \(last ?? "none"): \(f.log())")
        f.stop()
    }

    @Test func afterTheGiveTheSimulatorsIncumbentActsAtOnce() throws {
        // The shipped thermal mapping (its handover section) and `edgeq sim thermal`, which
        // learns who is in charge only from plant/thermal/mode (no --gateway-prefix), with a
        // command timeout far longer than the test: a step in control that waited for it
        // would stop the test's bounded waits.
        let f = try SignedCommandTests.Fixture(id: "thermal", observe: "#")
        // As shipped, but without the guard's control blocks (a block of the incumbent would be a
        // handover of its own in the middle of what this test counts).
        let shipped = try PackageRoot.topicsFile("thermal")
        let promotion = "promotion: {policy: trial, min_agreement: 0.5, trial: {block: 432, burn_in: 144, max_pairs: 30}}"
        #expect(shipped.contains(promotion), "topics/thermal.yaml's promotion line changed: update this test")
        try shipped.replacingOccurrences(of: promotion, with: "promotion: {policy: trial, min_agreement: 0.5, control_share: 0}")
            .write(toFile: f.file, atomically: true, encoding: .utf8)
        try SignedModelTests().storeAndServe(try TopicMap.load(path: f.file), in: f.data, seed: 7)
        try f.start()
        #expect(nextHandover(f) == Self.give, "the start's announcement: \(f.log())")
        let simOut = f.dir.url.appendingPathComponent("sim.out").path
        let sim = try ChildProcess(EdgeQBinary.path, ["sim", "thermal", "--broker", f.broker.url, "--rate", "20", "--command-timeout", "600"],
                                   stdoutPath: simOut, stderrPath: f.dir.url.appendingPathComponent("sim.log").path)
        defer { if sim.isRunning { sim.signal(SIGKILL); _ = sim.wait(timeout: 10) } }
        func states(_ n: Int) -> Bool {
            for _ in 0..<n where f.next(timeout: 30, { $0.topic == "plant/thermal/state" }) == nil { return false }
            return true
        }
        #expect(states(5), "the simulator publishes no state")

        #expect(try mode(f, "control", id: "c1")["ok"] as? Bool == true, "\(f.log())")
        #expect(nextHandover(f) == Self.take)
        #expect(states(20), "the simulator did not step on the gateway's commands: \(f.log())")

        #expect(try mode(f, "shadow", id: "s1")["ok"] as? Bool == true)
        #expect(nextHandover(f) == Self.give)
        #expect(states(20), "after the give the simulator did not step on its own")

        sim.signal(SIGTERM)
        #expect(sim.wait(timeout: 30) == 0)
        let out = (try? String(contentsOfFile: simOut, encoding: .utf8)) ?? ""
        let line = out.split(separator: "\n").first { $0.hasPrefix("gateway applied") }.map(String.init) ?? ""
        #expect(line.contains("command timeouts 0;"), "\(out)")
        let applied = Int(line.split(separator: " ").dropFirst(2).first ?? "") ?? 0
        #expect(applied >= 15, "\(out)")
        f.stop()
    }
}
