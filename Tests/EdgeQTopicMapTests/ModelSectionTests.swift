import EdgeQTopicMap
import Foundation
import Testing

/// `role: applied` and the `model` section (docs/mapping.md): the readback of the applied
/// action and the reward and end condition as a plant model sees them.
@Suite struct ModelSectionTests {
    /// A two-action mapping: `temp` controlled, `sp` exogenous, `lvl` given by `levelSignal`.
    static func mapping(levelSignal: String, reward: String = "-abs(temp - sp)", extra: String = "",
                        values: (String, String) = ("0", "1")) -> String {
        """
        gateway: {id: t}
        signals:
          - {name: temp, topic: p/s, json: temp, role: controlled}
          - {name: sp, topic: p/s, json: sp, role: exogenous}
        \(levelSignal)
          - {name: cost, topic: p/s, json: cost}
        state:
          features:
            - {name: err, expr: temp - sp}
            - {signal: lvl}
        tick: {trigger: p/s}
        reward: \(reward)
        actions:
          list:
            - {name: low, publish: {topic: p/cmd, payload: '{"l":{{value}}}', value: \(values.0)}}
            - {name: high, publish: {topic: p/cmd, payload: '{"l":{{value}}}', value: \(values.1)}}
        \(extra)
        """
    }

    @Test func appliedValuesComeFromTheListWhenGiven() throws {
        let m = try TopicMap.parse(yaml: Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: applied, applied: [0, 6.5]}"))
        let i = try #require(m.signalIndex(named: "lvl"))
        #expect(m.signals[i].role == .applied)
        #expect(m.signals[i].appliedValues == [0, 6.5])
        #expect(m.appliedSignals == [i])
        // Logged with the other role signals, in file order; not a model input or output.
        #expect(m.loggedSignalNames == ["temp", "sp", "lvl"])
        #expect(m.modelSignalNames.controlled == ["temp"] && m.modelSignalNames.exogenous == ["sp"])
        #expect(m.modelJudging == .applicable)
    }

    @Test func appliedValuesDefaultToTheActionsPublishValues() throws {
        let m = try TopicMap.parse(yaml: Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: applied}", values: ("2", "7.5")))
        let i = try #require(m.signalIndex(named: "lvl"))
        #expect(m.signals[i].appliedValues == [2, 7.5])
    }

    @Test func anAppliedListOfTheWrongLengthIsRefusedWithItsLine() {
        let d = diagnostics(Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: applied, applied: [0, 1, 2]}"))
        #expect(d.count == 1, "\(d)")
        #expect(d.first?.line == 5, "\(d)")
        #expect(d.first?.message.contains("gives 3 values for 2 actions") == true, "\(d)")
        #expect(d.first?.message.contains("low, high") == true, "\(d)")
    }

    @Test func anAppliedListWithATextIsRefusedWithItsLine() {
        let d = diagnostics(Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: applied, applied: [0, high]}"))
        #expect(d.count == 1, "\(d)")
        #expect(d.first?.line == 5, "\(d)")
        #expect(d.first?.message.contains("applied value of 'lvl'") == true, "\(d)")
    }

    @Test func anAppliedRoleWithoutNumericActionValuesNeedsTheList() {
        let d = diagnostics(Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: applied}", values: ("temp + 1", "2")))
        #expect(d.count == 1, "\(d)")
        #expect(d.first?.line == 5, "\(d)")
        #expect(d.first?.message.contains("action 'low' publishes no constant number") == true, "\(d)")
        #expect(d.first?.message.contains("applied: [v0, v1, …]") == true, "\(d)")
    }

    @Test func anAppliedListWithoutTheRoleIsRefused() {
        let d = diagnostics(Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: exogenous, applied: [0, 1]}"))
        #expect(d.count == 1, "\(d)")
        #expect(d.first?.line == 5, "\(d)")
        #expect(d.first?.message.contains("applies only to a signal with 'role: applied'") == true, "\(d)")
    }

    /// `forecast: schedule` marks an exogenous signal the teaching planner reads ahead in the
    /// log; persistence is the default; on another role, or with an unknown value, it is refused
    /// with its line and what to do.
    @Test func aScheduleForecastIsForExogenousSignalsOnly() throws {
        let m = try TopicMap.parse(yaml: Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: exogenous, forecast: schedule}"))
        #expect(m.signals[try #require(m.signalIndex(named: "lvl"))].forecast == .schedule)
        #expect(m.signals[try #require(m.signalIndex(named: "sp"))].forecast == .persistence)
        let persistence = try TopicMap.parse(yaml: Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: exogenous, forecast: persistence}"))
        #expect(persistence.signals[try #require(persistence.signalIndex(named: "lvl"))].forecast == .persistence)
        let applied = diagnostics(Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: applied, forecast: schedule}"))
        #expect(applied.count == 1 && applied.first?.line == 5, "\(applied)")
        #expect(applied.first?.message.contains("'forecast' applies only to a signal with 'role: exogenous'") == true, "\(applied)")
        let unknown = diagnostics(Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: exogenous, forecast: calendar}"))
        #expect(unknown.count == 1 && unknown.first?.line == 5, "\(unknown)")
        #expect(unknown.first?.message.contains("must be one of persistence, schedule, found 'calendar'") == true, "\(unknown)")
    }

    /// `model.classes` names the plant model classes retraining fits (the selection's order
    /// whatever the file's); without it every class; an unknown, repeated or empty list is
    /// refused with its line.
    @Test func modelClassesNameTheClassesTheFitTries() throws {
        let lvl = "  - {name: lvl, topic: p/s, json: lvl, role: applied}"
        #expect(try TopicMap.parse(yaml: Self.mapping(levelSignal: lvl)).modelClasses == nil)
        let linear = try TopicMap.parse(yaml: Self.mapping(levelSignal: lvl, extra: "model:\n  classes: [linear]\n"))
        #expect(linear.modelClasses == [.linear])
        let both = try TopicMap.parse(yaml: Self.mapping(levelSignal: lvl, extra: "model:\n  classes: [ensemble, linear]\n"))
        #expect(both.modelClasses == [.linear, .ensemble])
        let unknown = diagnostics(Self.mapping(levelSignal: lvl, extra: "model:\n  classes: [linear, gaussian_process]\n"))
        #expect(unknown.count == 1 && unknown.first?.line == 18, "\(unknown)")
        #expect(unknown.first?.message.contains("must be one of linear, ensemble, found 'gaussian_process'") == true, "\(unknown)")
        let twice = diagnostics(Self.mapping(levelSignal: lvl, extra: "model:\n  classes: [linear, linear]\n"))
        #expect(twice.count == 1 && twice.first?.message.contains("named twice") == true, "\(twice)")
        let empty = diagnostics(Self.mapping(levelSignal: lvl, extra: "model:\n  classes: []\n"))
        #expect(empty.count == 1 && empty.first?.message.contains("name at least one class") == true, "\(empty)")
    }

    @Test func aModelRewardOverASignalWithoutRoleIsRefusedWithItsLineAndWhatToDo() {
        let d = diagnostics(Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: applied}",
                                         extra: "model:\n  reward: -cost - abs(temp - sp)\n"))
        #expect(d.count == 1, "\(d)")
        #expect(d.first?.line == 18, "\(d)")
        let message = d.first?.message ?? ""
        #expect(message.contains("model reward reads signal 'cost', which has no role") && message.contains("Give 'cost' a role")
                && message.contains("or write model.reward"), "\(message)")
    }

    @Test func aModelTerminalOverASignalWithoutRoleIsRefused() {
        let d = diagnostics(Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: applied}",
                                         extra: "model:\n  terminal: cost > 3\n"))
        #expect(d.count == 1, "\(d)")
        #expect(d.first?.line == 18, "\(d)")
        #expect(d.first?.message.contains("model terminal reads signal 'cost'") == true, "\(d)")
    }

    /// Without a `model` section, a reward over a signal without a role leaves the mapping valid
    /// but not judgeable on a model, and says which signal and what to do.
    @Test func aRewardOverASignalWithoutRoleMakesModelJudgingNotApplicable() throws {
        let m = try TopicMap.parse(yaml: Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: applied}", reward: "-cost"))
        guard case .notApplicable(let why) = m.modelJudging else {
            Issue.record("expected not applicable, got \(m.modelJudging)")
            return
        }
        #expect(why.contains("the reward reads signal 'cost', which has no role") && why.contains("give 'cost' a role")
                && why.contains("write model.reward"), "\(why)")
        #expect(m.modelRewardSource == nil)
    }

    @Test func aFeatureOverASignalWithoutRoleMakesModelJudgingNotApplicable() throws {
        let m = try TopicMap.parse(yaml: Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl}"))
        guard case .notApplicable(let why) = m.modelJudging else {
            Issue.record("expected not applicable, got \(m.modelJudging)")
            return
        }
        #expect(why.contains("state feature 'lvl' reads signal 'lvl', which has no role"), "\(why)")
    }

    @Test func aHandOverrideOverASignalWithoutRoleMakesModelJudgingNotApplicable() throws {
        let m = try TopicMap.parse(yaml: Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: applied}",
                                                      extra: "safety:\n  hand_override: cost > 0\n"))
        guard case .notApplicable(let why) = m.modelJudging else {
            Issue.record("expected not applicable, got \(m.modelJudging)")
            return
        }
        #expect(why.contains("safety.hand_override reads signal 'cost', which has no role"), "\(why)")
    }

    /// The model section replaces the mapping's reward for the model only, and its expressions
    /// are evaluated by the runtime over the signals set in the table (an applied value included).
    @Test func theModelSectionIsEvaluatedByTheRuntime() throws {
        let m = try TopicMap.parse(yaml: Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: applied, applied: [0, 4]}",
                                                      reward: "-cost", extra: "model:\n  reward: -abs(err) - lvl / 4\n  terminal: temp > 90\n"))
        #expect(m.modelJudging == .applicable)
        #expect(m.modelRewardSource == "-abs(err) - lvl / 4" && m.modelTerminalSource == "temp > 90")
        var table = SignalTable(for: m)
        var rt = TopicMapRuntime(map: m)
        let (t, sp, lvl) = (try #require(m.signalIndex(named: "temp")), try #require(m.signalIndex(named: "sp")), try #require(m.signalIndex(named: "lvl")))
        table.set(signal: t, value: 95, time: 1, in: m)
        table.set(signal: sp, value: 92, time: 1, in: m)
        table.set(signal: lvl, value: m.signals[lvl].appliedValues[1], time: 1, in: m)
        rt.refresh(from: table, now: 1)
        #expect(rt.modelReward() == -4)
        #expect(rt.modelTerminal() == true)
        #expect(rt.reward() == nil)   // the mapping's own reward reads `cost`, not set
    }

    /// A mapping's own reward and terminal over role signals are the model's by default.
    @Test func theMappingsRewardIsTheModelsByDefault() throws {
        let m = try TopicMap.parse(yaml: Self.mapping(levelSignal: "  - {name: lvl, topic: p/s, json: lvl, role: applied}",
                                                      extra: "terminal: temp > 100\n"))
        #expect(m.modelRewardSource == "-abs(temp - sp)" && m.modelTerminalSource == "temp > 100")
    }

    @Test func setChecksTheRangeUnlessToldNot() throws {
        let m = try TopicMap.parse(yaml: """
            gateway: {id: t}
            signals:
              - {name: a, topic: p/a, range: [0, 10], role: controlled}
            state: {features: [{signal: a}]}
            tick: {trigger: p/a}
            reward: a
            actions: {list: [{name: one, publish: {topic: p/cmd, payload: "1"}}]}
            """)
        var table = SignalTable(for: m)
        table.set(signal: 0, value: 11, time: 1, in: m)
        #expect(table.status(of: 0) == .invalid(.outOfRange))
        table.set(signal: 0, value: 11, time: 2, in: m, checkRange: false)
        #expect(table.status(of: 0) == .valid && table.values[0] == 11)
        table.set(signal: 0, value: .nan, time: 3, in: m, checkRange: false)
        #expect(table.status(of: 0) == .invalid(.nonFinite))
    }
}
