import EdgeQGateway
import EdgeQLog
import EdgeQModel
import EdgeQMQTT
import EdgeQRetrain
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Testing

/// The plant model's data, from the plant's messages to `PlantData`:
///
/// - a gateway on a real broker logs, for each row, the raw values of the mapping's role
///   signals exactly as the plant published them (a bool as 0/1), at the row's tick
///   (`signals`) and at the next (`next_signals`), and row i's `next_signals` are row i+1's
///   `signals`; the reader turns that log into one segment;
/// - the reader (real SQLite files written by the log's writer) splits segments at every rule
///   of docs/learning.md, "The plant model's data", with exact counts, reads values by name,
///   and refuses a mapping without a controlled signal.
@Suite struct PlantSignalTests {
    static let mapping = """
        gateway:
          id: t1
          mode: shadow
        signals:
          - {name: step, topic: plant/t/state, json: step}
          - {name: x, topic: plant/t/state, json: x, range: [-10, 10], role: controlled}
          - {name: y, topic: plant/t/state, json: y, range: [-10, 10], role: exogenous}
          - {name: open, topic: plant/t/state, json: open, type: bool, role: exogenous}
        state:
          features:
            - {signal: x, normalize: [-10, 10]}
            - {signal: y, normalize: [-10, 10]}
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

    @Test func theGatewayLogsThePublishedValuesOfTheRoleSignals() throws {
        let h = try GatewayHarness(yaml: Self.mapping)
        defer { h.stop() }
        #expect(h.map.loggedSignalNames == ["x", "y", "open"])
        // Values whose decimal text is not short in binary (0.1 steps), and a bool.
        let steps = 30
        var published: [[Double]] = []
        for i in 0..<steps {
            let x = -3.3 + 0.1 * Double(i)
            let y = 23.4375 / 4 - 0.3 * Double(i)
            let open = i % 3 == 0
            let text = "{\"step\":\(i),\"x\":\(x.description),\"y\":\(y.description),\"open\":\(open)}"
            try h.send("plant/t/state", text)
            try h.send("plant/t/cmd", "{\"a\":\(i % 2)}")
            published.append([try #require(Double(x.description)), try #require(Double(y.description)), open ? 1 : 0])
        }
        let deadline = Date().addingTimeInterval(20)
        while h.metric("edgeq_ticks_total") < Double(steps) && Date() < deadline { _ = h.drain(0.05) }
        h.stop()

        let path = h.dir.url.appendingPathComponent(ExperienceLog.defaultFileName).path
        let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all)
        #expect(rows.count == steps - 1)
        for (k, r) in rows.enumerated() {
            #expect(r.signalNames == ["x", "y", "open"])
            // The row's step, from the exact x it carries.
            guard let now = r.transition.signals, let i = published.firstIndex(where: { $0[0] == now[0] }) else {
                Issue.record("row \(k): signals \(String(describing: r.transition.signals)) match no published state")
                continue
            }
            #expect(now == published[i], "row \(k)")
            #expect(i + 1 < steps && r.transition.nextSignals == published[i + 1], "row \(k)")
            if k + 1 < rows.count {
                #expect(r.transition.nextSignals == rows[k + 1].transition.signals, "rows \(k) and \(k + 1)")
            }
        }

        // One unbroken stretch: every row is one step with a known action.
        #expect(rows.allSatisfy { $0.transition.action != nil && $0.transition.flags.isEmpty })
        let (data, summary) = try PlantDataReader(map: h.map).read(logPath: path)
        #expect(data.controlledNames == ["x"] && data.exogenousNames == ["y", "open"])
        #expect(data.segments.count == 1)
        #expect(data.segments.first?.controlled == published.map { [$0[0]] })
        #expect(data.segments.first?.exogenous == published.map { [$0[1], $0[2]] })
        #expect(data.segments.first?.actions == rows.map { $0.transition.action ?? -1 })
        #expect(summary.rowsUsed == steps - 1)
    }

    static let readerMapping = """
        gateway: {id: r}
        signals:
          - {name: temp, topic: p/s, json: temp, role: controlled}
          - {name: out, topic: p/s, json: out, role: exogenous}
        state:
          features:
            - {signal: temp}
        tick: {trigger: p/s}
        reward: -abs(temp)
        actions:
          list:
            - {name: off, publish: {topic: p/cmd, payload: "0"}}
            - {name: on, publish: {topic: p/cmd, payload: "1"}}
        """

    /// Row i's values: temp and out (the log's order is out, temp: the reader goes by name).
    static func values(_ i: Int) -> (temp: Double, out: Double) { (20 + Double(i) * 0.25, Double(i % 7)) }

    @Test func segmentsBreakAtEveryRuleWithExactCounts() throws {
        let dir = try TempDir()
        let path = dir.url.appendingPathComponent("experience.sqlite").path
        let log = try ExperienceLog.open(path: path, gatewayID: "r")
        var options = TransitionWriter.Options()
        options.signalNames = ["out", "temp"]
        let writer = try log.makeWriter(options: options)
        for i in 1...40 {
            let now = Self.values(i), next = Self.values(i + 1)
            var t = Transition(time: Double(i), tick: Int64(i >= 33 ? i + 100 : i), episode: i >= 25 ? 1 : 0,
                               state: [0], action: i % 2, actor: .incumbent, reward: 0, nextState: [0], mode: .shadow,
                               signals: [now.out, now.temp], nextSignals: [next.out, next.temp])
            switch i {
            case 10: t.flags = [.gap]
            case 15: t.nextSignals = [next.out, next.temp + 0.001]   // not what row 16 starts from
            case 20: t.action = nil
            case 28: t.terminal = true
            case 30: t.signals = nil; t.nextSignals = nil
            default: break
            }
            writer.submit(t)
        }
        try writer.close()

        let map = try TopicMap.parse(yaml: Self.readerMapping, file: "r.yaml")
        let (data, summary) = try PlantDataReader(map: map, minimumSamples: 3).read(logPath: path)
        // 1–9 | gap 10 | 11–15 | mismatch | 16–19 | nil action 20 | 21–24 | episode | 25–28 terminal |
        // 29 (2 samples, dropped) | no signals 30 | 31–32 | tick jump | 33–40
        #expect(data.segments.map(\.count) == [10, 6, 5, 5, 5, 3, 9])
        #expect(summary.rowsRead == 40)
        #expect(summary.rowsUsed == 36)
        #expect(summary.rowsFlagged == 1)
        #expect(summary.rowsWithoutAction == 1)
        #expect(summary.rowsWithoutSignals == 1)
        #expect(summary.segmentsDropped == 1 && summary.samplesDropped == 2)
        #expect(data.sampleCount == 43)

        let first = try #require(data.segments.first)
        #expect(first.controlled == (1...10).map { [Self.values($0).temp] })
        #expect(first.exogenous == (1...10).map { [Self.values($0).out] })
        #expect(first.actions == (1...9).map { $0 % 2 })
        // The mismatching row keeps its own next value; the next segment starts from row 16's.
        #expect(data.segments[1].controlled.last == [Self.values(16).temp + 0.001])
        #expect(data.segments[2].controlled.first == [Self.values(16).temp])

        // With the default minimum (2 samples) the lone row 29 is a segment too.
        let (all, allSummary) = try PlantDataReader(map: map).read(logPath: path)
        #expect(all.segments.map(\.count) == [10, 6, 5, 5, 5, 2, 3, 9])
        #expect(allSummary.segmentsDropped == 0)
    }

    @Test func aLogOfOtherSignalsGivesNoData() throws {
        let dir = try TempDir()
        let path = dir.url.appendingPathComponent("experience.sqlite").path
        let log = try ExperienceLog.open(path: path, gatewayID: "r")
        var options = TransitionWriter.Options()
        options.signalNames = ["temp", "price"]   // "out" is missing: never read as something else
        let writer = try log.makeWriter(options: options)
        for i in 0..<5 {
            writer.submit(Transition(time: Double(i), tick: Int64(i), episode: 0, state: [0], action: 0, actor: .incumbent,
                                     reward: 0, nextState: [0], mode: .shadow, signals: [1, 2], nextSignals: [1, 2]))
        }
        try writer.close()
        let map = try TopicMap.parse(yaml: Self.readerMapping, file: "r.yaml")
        let (data, summary) = try PlantDataReader(map: map).read(logPath: path)
        #expect(data.segments.isEmpty)
        #expect(summary.rowsWithoutSignals == 5)
    }

    @Test func aMappingWithoutAControlledSignalIsRefused() throws {
        let yaml = Self.readerMapping.replacingOccurrences(of: "role: controlled", with: "role: exogenous")
        let map = try TopicMap.parse(yaml: yaml, file: "r.yaml")
        do {
            _ = try PlantDataReader(map: map)
            Issue.record("a mapping without a controlled signal was accepted")
        } catch {
            #expect(error.kind == .noControlledSignal)
            #expect(error.message.contains("mark the signals the actions move with 'role: controlled'"), "\(error)")
        }
    }
}
