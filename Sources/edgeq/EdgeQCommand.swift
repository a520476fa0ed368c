import ArgumentParser

/// The `edgeq` command-line tool: one type per subcommand, checks in `validate()`,
/// help strings as the documentation (`edgeq help SUBCOMMAND`).
@main
struct EdgeQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edgeq",
        abstract: "An MQTT control gateway with an on-device int8 deep Q-network.",
        discussion: """
            Attach EdgeQ to a plant's broker with a mapping file (see topics/ and docs/mapping.md), \
            run it in shadow mode, retrain on the device, and hand it control when you trust it.
            """,
        version: EdgeQVersion.string,
        subcommands: [
            CheckCommand.self,
            BenchCommand.self,
            RunCommand.self,
            SimCommand.self,
            TrainCommand.self,
            ModelsCommand.self,
            DemoCommand.self,
            ExportCommand.self,
            KeysCommand.self,
            CmdCommand.self,
            LogStressCommand.self,
            MQTTEchoCommand.self,
        ]
    )
}

/// The version printed by `edgeq --version` and stamped into model files and logs.
enum EdgeQVersion {
    static let string = "0.1.0"
}
