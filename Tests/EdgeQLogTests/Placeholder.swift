import Testing

// Replaced by the real tests of this target.
@Test func EdgeQLogTestsBuilds() { #expect(Bool(true)) }
