import EdgeQTopicMap
import Testing

/// `safety.support_margin`, `on_unsupported` and `support_hold`: what a state outside the served
/// model's training support does (docs/mapping.md, "safety").
@Suite struct SupportSafetyTests {
    let handover = """
    handover:
      take: {topic: p/mode, payload: gateway}
      give: {topic: p/mode, payload: incumbent}

    """

    @Test func theDefaultIsTheIncumbentWithAHandoverAndTheFallbackWithout() throws {
        let without = try TopicMap.parse(yaml: minimal, file: "m.yaml")
        #expect(without.safety.onUnsupported == .fallback)
        #expect(without.safety.supportMargin == 0.5)
        #expect(without.safety.supportHold == 8)
        let with = try TopicMap.parse(yaml: minimal + handover, file: "m.yaml")
        #expect(with.safety.onUnsupported == .incumbent)
    }

    @Test func theKeysAreRead() throws {
        let m = try TopicMap.parse(yaml: minimal + handover + "safety: {support_margin: 1.5, on_unsupported: hold, support_hold: 20}\n", file: "m.yaml")
        #expect(m.safety.supportMargin == 1.5 && m.safety.onUnsupported == .hold && m.safety.supportHold == 20)
        let off = try TopicMap.parse(yaml: minimal + "safety: {support_margin: none, on_unsupported: none}\n", file: "m.yaml")
        #expect(off.safety.supportMargin == nil && off.safety.onUnsupported == SafetyConfig.SupportResponse.none)
    }

    /// Per state input, the margin of its feature (`support_margin` on the feature) or the
    /// safety section's, repeated for every history tick; `none` leaves an input unchecked.
    @Test func aFeatureMarginReplacesTheSafetySectionsForItsInputs() throws {
        let features = minimal.replacingOccurrences(of: "    - {signal: a}", with: """
            - {signal: a, support_margin: 0.1}
            - {cyclic: b, period: 24, support_margin: none}
            - {signal: b}
          history: 2
        """)
        let m = try TopicMap.parse(yaml: features, file: "m.yaml")
        #expect(m.features.map(\.supportMargin) == [0.1, .infinity, nil])
        #expect(m.stateSupportMargins == [0.1, .infinity, .infinity, 0.5, 0.1, .infinity, .infinity, 0.5])
        let onlyA = try TopicMap.parse(yaml: features + "safety: {support_margin: none}\n", file: "m.yaml")
        #expect(onlyA.stateSupportMargins == [0.1, .infinity, .infinity, .infinity, 0.1, .infinity, .infinity, .infinity])
        let noneAtAll = try TopicMap.parse(yaml: minimal + "safety: {support_margin: none}\n", file: "m.yaml")
        #expect(noneAtAll.stateSupportMargins == nil)
        let plain = try TopicMap.parse(yaml: minimal, file: "m.yaml")
        #expect(plain.stateSupportMargins == [0.5])
    }

    @Test(arguments: [
        ("safety: {on_unsupported: incumbent}\n", "on_unsupported: incumbent needs a 'handover' section"),
        ("safety: {support_margin: -1}\n", "support_margin must be ≥ 0"),
        ("safety: {support_hold: 0}\n", "support_hold must be a whole number of ticks from 1"),
        ("safety: {support_hold: 2.5}\n", "support_hold must be a whole number of ticks from 1"),
        ("safety: {on_unsupported: shadow}\n", "on_unsupported"),
    ])
    func badValuesAreRefusedWithWhatToWrite(yaml: String, message: String) {
        let d = diagnostics(minimal + yaml)
        #expect(d.count == 1 && d.first?.message.contains(message) == true, "\(d)")
    }
}
