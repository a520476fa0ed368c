import ArgumentParser
import EdgeQGateway
import EdgeQMQTT
import EdgeQNet
import EdgeQTrust
import Foundation

/// `edgeq models list|show|rollback|promote`: the model store of a data directory.
struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "List, show, roll back and promote the versioned models of a data directory.",
        discussion: """
            A version rolled back from (by the live guard or an operator) is quarantined: it is never \
            served again automatically (not by a rollback, the start-up fallback, the guard or an automatic \
            promotion). Only promoting it by name serves it again, which lifts the quarantine.
            """,
        subcommands: [List.self, Show.self, Rollback.self, Promote.self]
    )

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the stored versions; * marks the served one, → the rollback target, and quarantined ones say so.")
        @Option(help: "The gateway's data directory.") var data: String

        func run() throws {
            let store = try ModelStore(dataDirectory: URL(fileURLWithPath: data))
            let current = store.current()
            let target = store.rollbackTarget()
            let quarantine = Dictionary(uniqueKeysWithValues: store.quarantined().map { ($0.version, $0) })
            let versions = store.versions()
            if versions.isEmpty {
                print("no models in \(store.directory.path)")
                return
            }
            for v in versions {
                let report = (try? Data(contentsOf: store.reportURL(v))).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] } ?? [:]
                let verdict = report["verdict"] as? String ?? "?"
                let rows = (report["rows"] as? NSNumber).map { "\($0.intValue) rows" } ?? ""
                let sha = (try? String(contentsOf: QModel.checksumURL(for: store.modelURL(v)), encoding: .utf8))?.prefix(12) ?? "?"
                let date = (try? FileManager.default.attributesOfItem(atPath: store.folder(v).path)[.modificationDate] as? Date).map {
                    ISO8601DateFormatter().string(from: $0)
                } ?? ""
                let mark = v == current ? "*" : (v == target ? "→" : " ")
                let state = quarantine[v].map { "  QUARANTINED (\($0.reason))" } ?? ""
                print("\(mark) v\(v)  \(date)  sha256 \(sha)…  \(verdict)  \(rows)\(state)")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a version's architecture, actions, quarantine and check report.")
        @Option(help: "The gateway's data directory.") var data: String
        @Argument(help: "The version (default: the served one).") var version: Int?

        func run() throws {
            let store = try ModelStore(dataDirectory: URL(fileURLWithPath: data))
            guard let v = version ?? store.current() else { throw ValidationError("no version served; name one (edgeq models list)") }
            let model: QModel
            do {
                model = try QModel.load(from: store.modelURL(v))
            } catch {
                throw failure("version \(v) does not load: \(error)", code: 65)
            }
            print("version    \(v)\(v == store.current() ? " (served)" : "")")
            if let q = store.quarantined().first(where: { $0.version == v }) {
                let when = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: q.time))
                print("quarantine since \(when): \(q.reason) (served again only when promoted by name)")
            }
            print("net        \(model.architecture.label)")
            print("format     \(model.fileFormatVersion)\(model.fileFormatVersion >= 2 ? " (16-bit head; builds before format 2 cannot read it)" : "")")
            print("actions    \(model.actionNames.joined(separator: ", "))")
            for (k, val) in model.training.sorted(by: { $0.key < $1.key }) { print("training   \(k) = \(val)") }
            if let data = try? Data(contentsOf: store.reportURL(v)),
               let report = try? JSONDecoder().decode(RetrainReport.self, from: data) {
                print(ReportText.render(report))
            }
        }
    }

    struct Rollback: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve an earlier version again and quarantine the one left.",
            discussion: """
                Without --to, each rollback walks one step back through the served history (v3, then v2, \
                then v1), skipping quarantined versions; when nothing earlier is left it refuses. With --to, \
                the named version is served (even a quarantined one). Either way the version left is \
                quarantined.

                With --config, the command goes to the running gateway over MQTT (cmd/rollback), signed with \
                --key (an operator key the gateway trusts), connecting with the mapping file's broker, \
                username, password and TLS settings, and takes effect at once; the answer is printed. With --data, the data directory's store is switched for the \
                gateway's next start (do not use it on a running gateway's directory).
                """
        )
        @Option(help: "The gateway's data directory (offline rollback).") var data: String?
        @Option(help: "The mapping file of a running gateway (rollback over MQTT).") var config: String?
        @Option(help: "Broker URL instead of the mapping file's.") var broker: String?
        @Option(help: "The version to serve (default: one step back, skipping quarantined versions).") var to: Int?
        @Option(help: "With --config: the operator's private key file that signs the command (NAME.key).") var key: String?

        func validate() throws {
            if (data == nil) == (config == nil) { throw ValidationError("give either --data DIR (offline) or --config FILE (running gateway)") }
            if config != nil && key == nil { throw ValidationError("--config needs --key KEYFILE: the gateway obeys only signed commands (edgeq keys generate NAME --dir DIR)") }
        }

        func run() throws {
            if let config, let key {
                try askGateway(config: config, broker: broker, key: key, verb: "rollback", version: to)
                return
            }
            guard let data else { return }
            let store = try ModelStore(dataDirectory: URL(fileURLWithPath: data))
            let current = store.current()
            let candidates = to.map { [$0] } ?? store.rollbackTargets()
            for target in candidates {
                do {
                    _ = try QModel.load(from: store.modelURL(target))
                } catch {
                    if to != nil { throw failure("version \(target) does not pass its load checks: \(error)", code: 65) }
                    FileHandle.standardError.write(Data("skipping v\(target): it does not pass its load checks: \(error)\n".utf8))
                    continue
                }
                do {
                    try store.rollBack(from: current, to: target, reason: "edgeq models rollback")
                } catch {
                    throw failure("\(error)", code: 74)
                }
                let left = current.flatMap { $0 != target ? " (v\($0) quarantined)" : nil } ?? ""
                print("serving v\(target)\(left) from the next start of the gateway (for a running one: --config FILE)")
                return
            }
            let quarantined = store.quarantined().map { "v\($0.version)" }
            throw failure("""
                no earlier version to roll back to (stored: \(store.versions().map { "v\($0)" }.joined(separator: ", ")); \
                quarantined: \(quarantined.isEmpty ? "none" : quarantined.joined(separator: ", "))); \
                to serve a quarantined one anyway: edgeq models promote V
                """, code: 1)
        }
    }

    struct Promote: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve a named version (even a quarantined one, which lifts its quarantine).",
            discussion: """
                With --config, the command goes to the running gateway over MQTT (cmd/promote {"version":V}), \
                signed with --key (an operator key the gateway trusts), connecting with the mapping file's \
                broker, username, password and TLS settings. With --data, \
                the data directory's store is switched for the gateway's next start.
                """
        )
        @Option(help: "The gateway's data directory (offline promotion).") var data: String?
        @Option(help: "The mapping file of a running gateway (promotion over MQTT).") var config: String?
        @Option(help: "Broker URL instead of the mapping file's.") var broker: String?
        @Argument(help: "The version to serve.") var version: Int
        @Option(help: "With --config: the operator's private key file that signs the command (NAME.key).") var key: String?

        func validate() throws {
            if (data == nil) == (config == nil) { throw ValidationError("give either --data DIR (offline) or --config FILE (running gateway)") }
            if config != nil && key == nil { throw ValidationError("--config needs --key KEYFILE: the gateway obeys only signed commands (edgeq keys generate NAME --dir DIR)") }
        }

        func run() throws {
            if let config, let key {
                try askGateway(config: config, broker: broker, key: key, verb: "promote", version: version)
                return
            }
            guard let data else { return }
            let store = try ModelStore(dataDirectory: URL(fileURLWithPath: data))
            do {
                _ = try QModel.load(from: store.modelURL(version))
            } catch {
                throw failure("version \(version) does not pass its load checks: \(error)", code: 65)
            }
            let wasQuarantined = store.isQuarantined(version)
            do {
                try store.liftQuarantine(version)
                try store.setCurrent(version, reason: "edgeq models promote")
            } catch {
                throw failure("\(error)", code: 74)
            }
            print("serving v\(version)\(wasQuarantined ? " (its quarantine is lifted)" : "") from the next start of the gateway (for a running one: --config FILE)")
        }
    }
}

/// A run-time failure of `edgeq models` (not a usage error, which ArgumentParser answers with the
/// usage text and 64): prints the message on standard error and gives the sysexits code to exit
/// with (65 data, 69 unavailable, 74 I/O; 1 when the gateway or the store refused).
func failure(_ message: String, code: Int32) -> ExitCode {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    return ExitCode(code)
}

extension ParsableCommand {
    /// Sends `cmd/<verb>` (with `version` when given), signed with the private key file `key`,
    /// to the gateway of the mapping file `config`, connecting as the gateway does (broker,
    /// credentials, TLS from the mapping file), and prints its answer (`CmdCommand.send`).
    /// Exits 1 when the gateway refuses, 66 for a key file that cannot be read, 69 when the
    /// broker cannot be reached, 75 when no answer came.
    func askGateway(config: String, broker: String?, key: String, verb: String, version: Int?) throws {
        let map = try loadMapping(config)
        let keyURL = URL(fileURLWithPath: key)
        let name = keyURL.deletingPathExtension().lastPathComponent
        let privateKey: SigningPrivateKey
        do {
            privateKey = try KeyFile.readPrivateKey(keyURL)
        } catch {
            throw failure("\(error)", code: 66)
        }
        let id = "cli-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fields = version.map { ["version=\($0)"] } ?? []
        let command = try CmdCommand.commandText(id: id, fields: fields)
        let reply = try CmdCommand.send(map: map, broker: broker, verb: verb, command: command, requestID: id,
                                        keyName: name, privateKey: privateKey, timeout: 10)
        print(reply.text)
        if !reply.ok { throw ExitCode(1) }
    }
}
