import ArgumentParser
import EdgeQGateway
import EdgeQLog
import EdgeQTopicMap
import Foundation

/// Loads a mapping file or exits with its diagnostics (65; 66 when unreadable).
func loadMapping(_ path: String) throws -> TopicMap {
    do {
        return try TopicMap.load(path: path)
    } catch {
        for d in error.diagnostics { FileHandle.standardError.write(Data((d.description + "\n").utf8)) }
        throw ExitCode(error.code == .unreadable ? 66 : 65)
    }
}

/// `edgeq train --data DIR --config FILE`: the gateway's retraining pipeline, offline.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Retrain from a gateway's experience log (a copy of its data directory), check, and store the candidate.",
        discussion: """
            Runs the same pipeline as cmd/retrain (docs/operations.md): reads DATA/experience.sqlite, \
            trains Double DQN with the conservative term on the incumbent's rows, quantizes to int8, \
            checks the candidate and, when it passes, stores it as a new version in DATA/models. \
            --promote also makes it the served version (for the next start, or `cmd/promote` on a \
            running gateway). Exit 0 when the candidate passed, 1 when it failed its checks.
            """
    )

    @Option(help: "The gateway's data directory (or a copy of it).")
    var data: String

    @Option(help: "The mapping file the gateway runs with.")
    var config: String

    @Option(help: "Gradient updates (default: the mapping file's updates_per_retrain).")
    var steps: Int?

    @Option(help: "Wall-clock budget in seconds.")
    var seconds: Double?

    @Option(help: "Use only the last N rows of the log.")
    var window: Int?

    @Option(help: "Seed of the learner.")
    var seed: UInt64 = 1

    @Flag(help: "Serve the candidate when it passes (atomic switch of models/current).")
    var promote = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    func validate() throws {
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
        if let seconds, !(seconds > 0) { throw ValidationError("--seconds must be positive") }
        if let window, window < 1 { throw ValidationError("--window must be at least 1") }
    }

    func run() throws {
        let map = try loadMapping(config)
        let dir = URL(fileURLWithPath: data)
        let logPath = dir.appendingPathComponent(ExperienceLog.defaultFileName).path
        guard FileManager.default.fileExists(atPath: logPath) else {
            throw ValidationError("no experience log at \(logPath): --data must be a gateway's data directory")
        }
        var retrainer = Retrainer(map: map)
        retrainer.seed = seed
        let output = dir.appendingPathComponent("candidate.safetensors")
        let report: RetrainReport
        do {
            report = try retrainer.run(logPath: logPath, limits: RetrainLimits(steps: steps, seconds: seconds, window: window),
                                       warmStart: nil, output: output) { p in
                FileHandle.standardError.write(Data("\r\(p.phase): \(p.updates)/\(p.of) updates\(p.tdLoss.map { String(format: ", TD loss %.4g", $0) } ?? "")   ".utf8))
            }
            FileHandle.standardError.write(Data("\n".utf8))
        } catch {
            FileHandle.standardError.write(Data("\nedgeq train: \(error)\n".utf8))
            throw ExitCode(1)
        }
        var final = report
        if report.passed {
            let store = try ModelStore(dataDirectory: dir)
            let version = try store.add(files: ["model.safetensors": output,
                                                "model.safetensors.sha256": output.appendingPathExtension("sha256")],
                                        report: report.json())
            final.version = version
            try final.json().write(to: store.reportURL(version))
            try? FileManager.default.removeItem(at: output)
            try? FileManager.default.removeItem(at: output.appendingPathExtension("sha256"))
            if promote { try store.setCurrent(version, reason: "edgeq train --promote") }
        }
        if json {
            print(String(decoding: final.json(), as: UTF8.self))
        } else {
            print(ReportText.render(final))
        }
        if !final.passed { throw ExitCode(1) }
    }
}

/// A retraining report for people.
enum ReportText {
    static func render(_ r: RetrainReport) -> String {
        var lines = ["verdict    \(r.verdict)\(r.version.map { " (stored as version \($0))" } ?? "")",
                     "data       \(r.rows) rows (\(r.incumbentRows) from the incumbent): \(r.trainRows) to train, \(r.heldOutRows) held out; \(r.gapRowsExcluded) spanning missed ticks left out",
                     String(format: "training   %d updates in %.1f s%@", r.updates, r.seconds, r.warmStart ? ", warm start" : "")]
        for c in r.checks {
            lines.append("\(c.passed ? "pass" : "FAIL")       \(c.name): \(c.note)")
        }
        for (k, v) in r.figures.sorted(by: { $0.key < $1.key }) {
            lines.append("figure     \(k) = \(String(format: "%.6g", v))")
        }
        return lines.joined(separator: "\n")
    }
}
