import EdgeQTopicMap
import Testing

/// The `handover` section: what the gateway publishes when it takes and gives control.
@Suite struct HandoverSectionTests {
    @Test func absentSectionMeansNothingToPublish() throws {
        let m = try TopicMap.parse(yaml: minimal, file: "m.yaml")
        #expect(m.handover == HandoverConfig())
        #expect(m.handover.take.isEmpty && m.handover.give.isEmpty)
        #expect(m.handover.will == nil)
        #expect(m.handover.keepAlive == 5)
    }

    @Test func writesAreRenderedOnceAndTheSingleGiveIsTheWill() throws {
        let m = try TopicMap.parse(yaml: minimal + """
        handover:
          keepalive: 7s
          take:
            - {topic: p/mode, payload: '{"controller":"gateway"}', retain: true}
            - {topic: p/enable, value: 1, qos: 0}
          give:
            - {topic: p/mode, payload: '{"controller":"incumbent","level":{{value}}}', value: 2.5, qos: 2, retain: true}
        """, file: "m.yaml")
        let h = m.handover
        #expect(h.keepAlive == 7)
        #expect(h.take == [
            HandoverWrite(topic: "p/mode", payload: Array(#"{"controller":"gateway"}"#.utf8), qos: 1, retain: true),
            HandoverWrite(topic: "p/enable", payload: Array("1".utf8), qos: 0, retain: false),
        ])
        #expect(h.give == [HandoverWrite(topic: "p/mode", payload: Array(#"{"controller":"incumbent","level":2.5}"#.utf8), qos: 2, retain: true)])
        #expect(h.willIndex == 0)
        #expect(h.will == h.give.first)
    }

    @Test func severalGiveWritesNameTheirWill() throws {
        let base = minimal + """
        handover:
          take: {topic: p/mode, payload: gateway}
          give:
            - {topic: p/enable, payload: "0"WILL0}
            - {topic: p/mode, payload: incumbent, retain: trueWILL1}

        """
        let marked = try TopicMap.parse(yaml: base.replacingOccurrences(of: "WILL0", with: "")
            .replacingOccurrences(of: "WILL1", with: ", will: true"), file: "m.yaml")
        #expect(marked.handover.willIndex == 1)
        #expect(marked.handover.will?.payload == Array("incumbent".utf8))

        let none = try TopicMap.parse(yaml: base.replacingOccurrences(of: "WILL0", with: ", will: false")
            .replacingOccurrences(of: "WILL1", with: ", will: false"), file: "m.yaml")
        #expect(none.handover.willIndex == nil)

        let unmarked = diagnostics(base.replacingOccurrences(of: "WILL0", with: "").replacingOccurrences(of: "WILL1", with: ""))
        #expect(unmarked.count == 1)
        #expect(unmarked.first?.message.contains("mark it with 'will: true'") == true)

        let twice = diagnostics(base.replacingOccurrences(of: "WILL0", with: ", will: true")
            .replacingOccurrences(of: "WILL1", with: ", will: true"))
        #expect(twice.count == 1)
        #expect(twice.first?.message.contains("one Last Will per connection") == true)
    }

    @Test func singleGiveCanOptOutOfTheWill() throws {
        let m = try TopicMap.parse(yaml: minimal + """
        handover:
          give: {topic: p/mode, payload: incumbent, will: false}
        """, file: "m.yaml")
        #expect(m.handover.willIndex == nil)
        #expect(m.handover.give.count == 1)
    }

    @Test(arguments: [
        ("handover:\n  give: {topic: p/mode, payload: '{{a}}'}\n", 14, "the only placeholder is {{value}}"),
        ("handover:\n  give: {topic: p/mode, payload: 'x{{action}}'}\n", 14, "the only placeholder is {{value}}"),
        ("handover:\n  give: {topic: p/mode, payload: '{{value}}'}\n", 14, "uses {{value}} but the write has no 'value'"),
        ("handover:\n  give: {topic: p/mode}\n", 14, "needs a 'payload'"),
        ("handover:\n  give: {topic: p/mode, payload: '{\"a\":}'}\n", 14, "not valid JSON"),
        ("handover:\n  give: {topic: p/+/mode, payload: x}\n", 14, "wildcard"),
        ("handover:\n  keepalive: 2s\n  give: {topic: p/mode, payload: x}\n", 14, "from 5 s to 65535 s"),
        ("handover:\n  take: {topic: p/mode, payload: x}\n", 14, "no 'give'"),
        ("handover:\n  take: {topic: p/mode, payload: x, will: true}\n  give: {topic: p/mode, payload: y}\n", 14, "unknown key 'will'"),
        ("handover:\n  give: {topic: p/b, payload: x}\n", 14, "read as a sensor"),
        ("handover:\n  give: {topic: p/cmd, payload: x}\n", 14, "action 'one' sends its commands"),
        ("handover:\n  give: {topic: edgeq/t/mode, payload: x}\n", 14, "control-plane prefix"),
        ("handover:\n  give: {topic: p/mode, payload: x}\n  hand: 1\n", 15, "unknown key 'hand'"),
    ])
    func mistakesAreReportedAtTheirLine(tail: String, line: Int, message: String) {
        let d = diagnostics(minimal + tail)
        #expect(d.count == 1, "\(d)")
        #expect(d.first?.line == line, "\(d)")
        #expect(d.first?.message.contains(message) == true, "\(d)")
    }

    @Test func referenceFileHandoverIsParsed() throws {
        let m = try TopicMap.load(path: Repo.root.appendingPathComponent("topics/reference.yaml").path)
        let h = m.handover
        #expect(h.keepAlive == 5)
        #expect(h.take.map(\.topic) == ["boiler/burner/mode", "boiler/burner/remote_enable"])
        #expect(h.take.map { String(decoding: $0.payload, as: UTF8.self) } == [#"{"controller":"edgeq"}"#, "1"])
        #expect(h.give.map { String(decoding: $0.payload, as: UTF8.self) } == [#"{"controller":"local"}"#, "0"])
        #expect(h.will == h.give.first)
        #expect(h.give.allSatisfy { $0.retain })
    }

    @Test func everySimulatorMappingTellsItsPlantOnItsModeTopic() throws {
        for name in ["thermal", "tank", "cartpole", "heater", "mountaincar"] {
            let m = try TopicMap.load(path: Repo.root.appendingPathComponent("topics/\(name).yaml").path)
            #expect(m.handover.take.map(\.topic) == ["plant/\(name)/mode"], "\(name)")
            #expect(m.handover.will?.topic == "plant/\(name)/mode", "\(name)")
            #expect(m.handover.will.map { String(decoding: $0.payload, as: UTF8.self) } == #"{"controller":"incumbent"}"#, "\(name)")
        }
    }

    @Test func theIncumbentsTopicIsRefused() {
        let d = diagnostics(minimal.replacingOccurrences(of: "{signal: a}", with: "{signal: a}\nincumbent: {topic: p/inc}") + """
        handover:
          give: {topic: p/inc, payload: x}
        """)
        #expect(d.contains { $0.message.contains("the incumbent's command") }, "\(d)")
    }
}
