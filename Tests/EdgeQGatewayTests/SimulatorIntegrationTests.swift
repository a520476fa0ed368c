import EdgeQGateway
import EdgeQLog
import EdgeQSimulators
import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq run --config topics/<plant>.yaml` against `edgeq sim <plant>`: the shipped mapping
/// files and the simulators fit together, in shadow and in control.
@Suite struct SimulatorIntegrationTests {
    static func topicsFile(_ name: String) throws -> String { try PackageRoot.topicsFile(name) }

    /// The shipped mapping with `promotion.control_share: 0` (the file itself is left as it
    /// ships): this test is about the mapping and the simulator fitting together, and with the
    /// shipped share a random one block in ten of the control run goes back to the incumbent
    /// (the control-group guard, tested in RetrainingTests and TrialGatewayTests).
    static func withoutControlGroup(_ yaml: String) throws -> String {
        if yaml.contains("\n  promotion: {") {
            return yaml.replacingOccurrences(of: "\n  promotion: {", with: "\n  promotion: {control_share: 0, ")
        }
        guard yaml.contains("\nlearning:\n") else { throw HarnessError("the mapping has no learning section to set control_share in") }
        return yaml.replacingOccurrences(of: "\nlearning:\n", with: "\nlearning:\n  promotion: {control_share: 0}\n")
    }


    @Test(arguments: [PlantKind.thermal, .tank, .cartpole, .heater, .mountaincar])
    func shippedMappingRunsThePlantInShadowThenControl(_ plant: PlantKind) throws {
        let h = try GatewayHarness(yaml: try Self.withoutControlGroup(try Self.topicsFile(plant.rawValue))) { $0.scheduleEnabled = false }
        #expect(h.map.learning.controlShare == 0)
        defer { h.stop() }
        var o = SimulatorOptions(plant: plant, broker: h.broker.url)
        o.seed = 5
        o.steps = 300
        // 500 steps/s: each step's incumbent command must reach the gateway before the next
        // state for the transition to carry it; faster rates made this timing-sensitive on a
        // loaded 2-core machine (61 of 300 rows once).
        o.rate = 500
        o.dither = 0.1
        o.gatewayPrefix = h.map.gateway.prefix
        let shadow = try Simulator(o).run()
        #expect(shadow.incumbentSteps == 300)
        let deadline = Date().addingTimeInterval(60)
        // Every state was ticked on, and the log writer has committed all it was given: an empty
        // queue alone is not that (the writer takes the whole queue before its COMMIT), nor is
        // the tick count (counted as a tick starts, its row submitted a moment later) — so the
        // written rows must have caught up with the submitted ones, once more after a pause.
        func settled() -> Bool {
            let m = h.gateway.logMetrics
            return h.metric("edgeq_ticks_total") >= 301 && m.queueDepth == 0 && m.rowsWritten >= m.rowsSubmitted
        }
        while !settled() && Date() < deadline { _ = h.drain(0.05) }
        usleep(300_000)
        while !settled() && Date() < deadline { _ = h.drain(0.05) }
        let log = try ExperienceLog.open(dataDirectory: h.dir.url.path, create: false)
        let rows = try log.transitions(window: .all).map(\.transition)
        // Every step but the first closes a transition; episode ends close none of their own.
        #expect(rows.count >= 290, "\(rows.count) transitions for 300 steps; ticks \(h.metric("edgeq_ticks_total")), submitted \(h.metric("edgeq_transitions_submitted_total")), skipped \(h.metric("edgeq_transitions_skipped_total")), written \(h.gateway.logMetrics.rowsWritten)")
        #expect(rows.allSatisfy { $0.actor == .incumbent && $0.action != nil })
        // The plant numbers its steps (tick.sequence): an undisturbed run has no gap row.
        #expect(rows.allSatisfy { $0.flags.isEmpty }, "\(rows.filter { !$0.flags.isEmpty }.count) flagged rows")
        // No transition links two episodes: after an end (terminal or truncated) the episode changes.
        for (a, b) in zip(rows, rows.dropFirst()) {
            #expect(b.episode == a.episode + ((a.terminal || a.truncated) ? 1 : 0), "ticks \(a.tick) → \(b.tick)")
        }
        if plant == .cartpole {
            // The weak rule drops the pole every ~40 steps: those ends are terminal (no bootstrap).
            #expect(rows.filter(\.terminal).count >= 3)
        }
        if plant == .mountaincar {
            // The energy-pumping rule (dithered here) reaches the goal in about 120 steps: terminal.
            #expect(rows.filter(\.terminal).count >= 1)
        }

        // Control: a model is promoted, the plant applies the gateway's commands on every step.
        try installModel(for: h.map, in: h.dir.url)
        try h.command("promote", "{}")
        _ = try h.waitFor(topic: "\(h.map.gateway.prefix)/reply/promote")
        try h.command("mode", #"{"mode":"control"}"#)
        let reply = GatewayHarness.json(try h.waitFor(topic: "\(h.map.gateway.prefix)/reply/mode"))
        #expect(reply["ok"] as? Bool == true, "\(reply)")
        o.steps = 100
        o.dither = 0
        o.rate = 0
        o.commandTimeout = 2
        let control = try Simulator(o).run()
        #expect(control.gatewaySteps >= 99, "gateway \(control.gatewaySteps), timeouts \(control.commandTimeouts), stale \(control.staleCommands)")
        #expect(control.commandTimeouts == 0, "gateway \(control.gatewaySteps), timeouts \(control.commandTimeouts), stale \(control.staleCommands)")
    }
}
