import ArgumentParser
import EdgeQTrust
import Foundation

/// `edgeq keys generate NAME --dir DIR`: Ed25519 key pairs for signing commands and models
/// (docs/security.md, "Keys").
struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Make Ed25519 keys for signing commands and models.",
        subcommands: [Generate.self]
    )

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write NAME.key (private, mode 0600) and NAME.pub (public) into DIR.",
            discussion: """
                Each file holds one line: the raw 32-byte key in base64. Keep NAME.key with its owner \
                (an operator's laptop, a CI secret); copy NAME.pub to the gateway's DATA/keys/operator/ \
                (may send every command), DATA/keys/trainer/ (retrain only) or DATA/keys/models/ (may \
                sign models), and restart the gateway. Existing files are never overwritten.
                """
        )
        @Argument(help: "The key's name (letters, digits, '.', '_', '-'): it appears in replies, status and the audit log.")
        var name: String
        @Option(help: "The folder to write the two files into (created with mode 0700 if missing).")
        var dir: String

        func validate() throws {
            if let p = KeyName.problem(name) { throw ValidationError(p) }
            if KeyName.reserved.contains(name) { throw ValidationError("'\(name)' is reserved; choose another name") }
        }

        func run() throws {
            do {
                let files = try KeyFile.generate(name: name, directory: URL(fileURLWithPath: dir))
                print("private key: \(files.privateKey.path) (mode 0600: keep it secret)")
                print("public key:  \(files.publicKey.path) (copy it to DATA/keys/operator/ on the gateway)")
            } catch {
                FileHandle.standardError.write(Data("edgeq keys generate: \(error)\n".utf8))
                throw ExitCode(73)   // EX_CANTCREAT
            }
        }
    }
}
