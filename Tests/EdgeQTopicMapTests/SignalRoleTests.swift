import EdgeQTopicMap
import Foundation
import Testing

/// The signals' `role` key (docs/mapping.md, "signals"): parsed into `SignalConfig.role` and
/// `TopicMap.modelSignals`, refused with the line where it is wrong, and left out of the fingerprint.
@Suite struct SignalRoleTests {
    static func mapping(_ signals: String) -> String {
        """
        gateway: {id: t}
        signals:
        \(signals)
        state:
          features:
            - {signal: a}
        tick: {trigger: p/a}
        reward: a
        actions:
          list:
            - {name: one, publish: {topic: p/cmd, payload: "1"}}

        """
    }

    @Test func rolesAreParsedInFileOrder() throws {
        let m = try TopicMap.parse(yaml: Self.mapping("""
              - {name: a, topic: p/a, role: controlled}
              - {name: out, topic: p/out, role: exogenous}
              - {name: none, topic: p/none}
              - {name: b, topic: p/b, role: controlled}
              - {name: open, topic: p/open, type: bool, role: exogenous}
            """), file: "m.yaml")
        #expect(m.signals.map(\.role) == [.controlled, .exogenous, nil, .controlled, .exogenous])
        #expect(m.modelSignals.controlled == [0, 3])
        #expect(m.modelSignals.exogenous == [1, 4])
        #expect(m.modelSignalNames.controlled == ["a", "b"])
        #expect(m.modelSignalNames.exogenous == ["out", "open"])
        #expect(m.loggedSignals == [0, 1, 3, 4])
        #expect(m.loggedSignalNames == ["a", "out", "b", "open"])
    }

    @Test func aMappingWithoutRolesHasNoModelSignals() throws {
        let m = try TopicMap.parse(yaml: Self.mapping("  - {name: a, topic: p/a}"), file: "m.yaml")
        #expect(m.modelSignals.controlled.isEmpty && m.modelSignals.exogenous.isEmpty && m.loggedSignals.isEmpty)
    }

    @Test func anUnknownRoleIsRefusedWithItsLineAndTheTwoChoices() {
        let d = diagnostics(Self.mapping("""
              - {name: a, topic: p/a}
              - {name: b, topic: p/b, role: controled}
            """))
        #expect(d.count == 1, "\(d)")
        #expect(d.first?.line == 4, "\(d)")
        let message = d.first?.message ?? ""
        #expect(message.contains("controlled, exogenous") && message.contains("'controled'") && message.contains("did you mean 'controlled'"), "\(message)")
    }

    @Test func aRoleOnAnEnumSignalIsRefusedWithItsLine() {
        let d = diagnostics(Self.mapping("""
              - {name: a, topic: p/a}
              - {name: mode, topic: p/mode, values: {off: 0, on: 1}, role: exogenous}
            """))
        #expect(d.count == 1, "\(d)")
        #expect(d.first?.line == 4, "\(d)")
        #expect(d.first?.message.contains("signal 'mode' is an enum (strings): a role needs a number signal") == true, "\(d)")
    }

    @Test func aBoolSignalMayOnlyBeExogenous() throws {
        let d = diagnostics(Self.mapping("""
              - {name: a, topic: p/a}
              - {name: open, topic: p/open, type: bool, role: controlled}
            """))
        #expect(d.count == 1, "\(d)")
        #expect(d.first?.line == 4, "\(d)")
        #expect(d.first?.message.contains("signal 'open' is a bool") == true && d.first?.message.contains("'role: exogenous'") == true, "\(d)")
    }

    /// A role changes what a plant model learns, not what a served Q-network's inputs mean.
    @Test func rolesAreNotInTheFingerprint() throws {
        let plain = try TopicMap.parse(yaml: Self.mapping("  - {name: a, topic: p/a}\n  - {name: b, topic: p/b}"), file: "m.yaml")
        let roles = try TopicMap.parse(yaml: Self.mapping("  - {name: a, topic: p/a, role: controlled}\n  - {name: b, topic: p/b, role: exogenous}"), file: "m.yaml")
        #expect(plain.canonicalDefinition == roles.canonicalDefinition)
    }

    @Test func everyShippedMappingMarksAControlledSignal() throws {
        let expected: [String: (controlled: [String], exogenous: [String])] = [
            "heater.yaml": (["temp"], ["setpoint", "ambient_temp"]),
            "cartpole.yaml": (["x", "x_dot", "theta", "theta_dot"], []),
            "mountaincar.yaml": (["position", "velocity"], []),
            "tank.yaml": (["level"], ["setpoint", "inflow"]),
            "thermal.yaml": (["zone_temp"], ["hour", "weekday", "outdoor_temp", "occupied", "occupied_next_2h", "price", "price_next_2h", "comfort_low", "comfort_high"]),
        ]
        for (file, roles) in expected {
            let m = try TopicMap.load(path: Repo.root.appendingPathComponent("topics/" + file).path)
            #expect(m.modelSignalNames.controlled == roles.controlled, "\(file)")
            #expect(m.modelSignalNames.exogenous == roles.exogenous, "\(file)")
        }
    }
}
