import ArgumentParser
import EdgeQGateway
import EdgeQMQTT
import EdgeQNet
import Foundation

/// `edgeq models list|show|rollback`: the model store of a data directory.
struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "List, show and roll back the versioned models of a data directory.",
        subcommands: [List.self, Show.self, Rollback.self]
    )

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the stored versions; * marks the served one.")
        @Option(help: "The gateway's data directory.") var data: String

        func run() throws {
            let store = try ModelStore(dataDirectory: URL(fileURLWithPath: data))
            let current = store.current()
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
                print("\(v == current ? "*" : " ") v\(v)  \(date)  sha256 \(sha)…  \(verdict)  \(rows)")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a version's architecture, actions and check report.")
        @Option(help: "The gateway's data directory.") var data: String
        @Argument(help: "The version (default: the served one).") var version: Int?

        func run() throws {
            let store = try ModelStore(dataDirectory: URL(fileURLWithPath: data))
            guard let v = version ?? store.current() else { throw ValidationError("no version served; name one (edgeq models list)") }
            let model: QModel
            do {
                model = try QModel.load(from: store.modelURL(v))
            } catch {
                throw ValidationError("version \(v) does not load: \(error)")
            }
            print("version    \(v)\(v == store.current() ? " (served)" : "")")
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
            abstract: "Serve the previous (or a named) version again.",
            discussion: """
                With --config, the command goes to the running gateway over MQTT (cmd/rollback) and \
                takes effect at once; the answer is printed. Without it, the data directory's store is \
                switched for the gateway's next start.
                """
        )
        @Option(help: "The gateway's data directory (offline rollback).") var data: String?
        @Option(help: "The mapping file of a running gateway (rollback over MQTT).") var config: String?
        @Option(help: "Broker URL instead of the mapping file's.") var broker: String?
        @Option(help: "The version to serve (default: the previous one).") var to: Int?

        func validate() throws {
            if data == nil && config == nil { throw ValidationError("give --data DIR (offline) or --config FILE (running gateway)") }
        }

        func run() throws {
            if let config {
                let map = try loadMapping(config)
                let client = try MQTTClient(try MQTTConfiguration(url: broker ?? map.gateway.brokers.first ?? "mqtt://127.0.0.1:1883",
                                                                  clientID: "edgeq-cli-\(getpid())"))
                defer { client.stop() }
                let prefix = map.gateway.prefix
                try client.subscribe("\(prefix)/reply/rollback", qos: .atLeastOnce)
                client.start()
                try client.waitUntilConnected(timeout: 10)
                usleep(100_000)
                let id = "cli-\(getpid())"
                let body = to.map { "{\"id\":\"\(id)\",\"version\":\($0)}" } ?? "{\"id\":\"\(id)\"}"
                _ = try client.publish("\(prefix)/cmd/rollback", body, qos: .atLeastOnce)
                let deadline = Date().addingTimeInterval(10)
                while Date() < deadline {
                    guard let m = client.receive(timeout: 0.2) else { continue }
                    let text = String(decoding: m.payload, as: UTF8.self)
                    if text.contains(id) {
                        print(text)
                        if !text.contains(#""ok":true"#) { throw ExitCode(1) }
                        return
                    }
                }
                throw ValidationError("no answer from the gateway on \(prefix)/reply/rollback within 10 s (is it running?)")
            }
            guard let data else { return }
            let store = try ModelStore(dataDirectory: URL(fileURLWithPath: data))
            guard let target = to ?? store.previous() else {
                throw ValidationError("no earlier version to roll back to (stored: \(store.versions().map { "v\($0)" }.joined(separator: ", ")))")
            }
            do {
                _ = try QModel.load(from: store.modelURL(target))
            } catch {
                throw ValidationError("version \(target) does not pass its load checks: \(error)")
            }
            try store.setCurrent(target, reason: "edgeq models rollback")
            print("serving v\(target) from the next start of the gateway (for a running one: --config FILE)")
        }
    }
}
