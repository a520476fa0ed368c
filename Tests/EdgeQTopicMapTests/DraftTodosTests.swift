import EdgeQTopicMap
import Testing

/// The `TODO` values a drafted mapping leaves open (docs/mapping.md, "Drafting a mapping from
/// live traffic"): only a plain scalar that is exactly TODO counts, with its key path, its line
/// and column, and the comment after it as the message.
@Suite struct DraftTodosTests {
    @Test func plainTodoValuesAreFoundWithKeyLineColumnAndComment() {
        let yaml = """
            gateway:
              id: g
              username: TODO   # the gateway's broker user
            signals:
              - {name: x, topic: a/b, json: x}   # TODO in a comment is not a marker
              - {name: y, topic: 'TODO', json: y}
            state:
              features:
                - TODO
            reward: TODO   # what counts as good
            actions:
              list: TODO   # EdgeQ's actions # with a second hash
            """
        let found = DraftTodos.markers(yaml: yaml)
        #expect(found.map(\.key) == ["gateway.username", "state.features[0]", "reward", "actions.list"])
        #expect(found.map(\.line) == [3, 9, 10, 12])
        #expect(found.map(\.column) == [13, 7, 9, 9])
        #expect(found.map(\.hint) == ["the gateway's broker user", "", "what counts as good", "EdgeQ's actions # with a second hash"])
        let d = DraftTodos.diagnostics(yaml: yaml, file: "m.yaml")
        #expect(d.first?.description == "m.yaml:3:13: gateway.username is still TODO: the gateway's broker user")
        #expect(d[1].description.hasPrefix("m.yaml:9:7: state.features[0] is still TODO: a choice the draft could not make"))
    }

    @Test func aFileWithoutTodoValuesOrNotYAMLHasNone() {
        #expect(DraftTodos.markers(yaml: "reward: TODOS\nx: 'TODO'\ny: \"TODO\"\n").isEmpty)
        #expect(DraftTodos.markers(yaml: "reward: [TODO\n").isEmpty)
        #expect(DraftTodos.markers(yaml: "").isEmpty)
    }
}
