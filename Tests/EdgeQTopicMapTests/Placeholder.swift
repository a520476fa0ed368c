import Testing

// Replaced by the real tests of this target.
@Test func EdgeQTopicMapTestsBuilds() { #expect(Bool(true)) }
