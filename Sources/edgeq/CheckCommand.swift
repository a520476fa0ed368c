import ArgumentParser

/// `edgeq check FILE`: validates a mapping file (filled in by the topic-map work, issue #3).
struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a mapping file; exit 0, or 65 with FILE:LINE:COL: message lines."
    )

    @Argument(help: "The mapping file (YAML) to check.")
    var file: String

    func run() async throws {
        throw ValidationError("edgeq check is not available in this build yet")
    }
}
