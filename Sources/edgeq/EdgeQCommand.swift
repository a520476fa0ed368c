import ArgumentParser
import Foundation

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
            InitCommand.self,
            BenchCommand.self,
            RunCommand.self,
            LearnerCommand.self,
            SimCommand.self,
            TrainCommand.self,
            ModelsCommand.self,
            DemoCommand.self,
            ExportCommand.self,
            ReportCommand.self,
            KeysCommand.self,
            CmdCommand.self,
            LogStressCommand.self,
            MQTTEchoCommand.self,
        ]
    )

    /// Parses, runs, and exits with a status that says what happened: 0; 64 and the usage
    /// for a usage error (ArgumentParser); a `CLIFailure`'s sysexits status and its message,
    /// without usage, for a failure while running; 70 (EX_SOFTWARE) for any other error.
    static func main() async {
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let failure as CLIFailure {
            failure.exit()
        } catch let failure as BenchError {
            // An anchor or a bench that cannot run here is unavailable (69); a bench that ran and
            // failed is a software error (70).
            switch failure {
            case .notAvailable, .anchorMissing: CLIFailure(.unavailable, failure.description).exit()
            case .failed: CLIFailure(.software, failure.description).exit()
            }
        } catch {
            // ArgumentParser's own errors (ExitCode, CleanExit, ValidationError, and the help
            // request that `--help` parses into, an internal type) keep their meaning.
            if error is ExitCode || error is CleanExit || error is ValidationError
                || String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") {
                exit(withError: error)
            }
            CLIFailure(.software, "\(error)").exit()
        }
    }
}

/// The version printed by `edgeq --version` and stamped into model files and logs.
enum EdgeQVersion {
    static let string = "0.1.0"
}
