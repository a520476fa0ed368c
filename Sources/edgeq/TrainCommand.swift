import ArgumentParser
import EdgeQGateway
import EdgeQLearner
import EdgeQLog
import EdgeQNet
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import EdgeQRetrain

/// `edgeq train --data DIR --config FILE`: the gateway's retraining pipeline, offline.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Retrain from a gateway's experience log (a copy of its data directory), check, and store the candidate.",
        discussion: """
            Runs the same pipeline as cmd/retrain (docs/operations.md): reads DATA/experience.sqlite, \
            warm-starts from DATA's served model when it has the mapping's shape (--cold: fresh \
            weights), trains Double DQN with the conservative term on the incumbent's rows, \
            quantizes to int8, checks the candidate and, when it passes, stores it as a new version \
            in DATA/models. --promote also makes it the served version (for the next start, or \
            `cmd/promote` on a running gateway). Exit 0 when the candidate passed, 1 when it failed \
            its checks; 65 too few usable rows or a damaged log, 66 no log at DATA, 74 an I/O error.
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

    @Flag(help: "Start from fresh weights instead of the data directory's served model (cmd/retrain warm-starts from it).")
    var cold = false

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
        // Open the log once here, so that a missing, unreadable or damaged one says which.
        do {
            _ = try ExperienceLog.open(path: logPath, create: false)
        } catch {
            throw CLIFailure.log(error, dataDirectory: data)
        }
        let store: ModelStore
        do {
            store = try ModelStore(dataDirectory: dir)
        } catch {
            throw CLIFailure(.io, "cannot open the model store in \(dir.path): \(error)")
        }
        // The device key signs what is stored; the served model warm-starts only when its
        // signature verifies (training on from a tampered model and signing the result would
        // launder it).
        let signer: ModelSigner
        let trust: TrustStore
        do {
            let device = try DeviceKey.loadOrCreate(dataDirectory: dir)
            signer = .device(device, mapping: map.fingerprint)
            trust = try TrustStore.load(dataDirectory: dir).adding(device)
        } catch {
            throw CLIFailure(.data, "\(error)")
        }
        // Warm start from the served model, as cmd/retrain does on a running gateway.
        var warm: QModel?
        if !cold, let v = store.current() {
            do {
                let verified = try ModelSignature.verify(modelFile: store.modelURL(v), expectedVersion: v,
                                                         expectedMapping: map.fingerprint, trust: trust)
                warm = try QModel.load(bytes: verified.bytes)
            } catch {
                throw CLIFailure(.data, "the served model v\(v) is refused or does not load (\(error)); roll back (edgeq models rollback), sign it if an earlier EdgeQ stored it (edgeq models sign \(v)), or train with --cold")
            }
        }
        var retrainer = Retrainer(map: map)
        retrainer.seed = seed
        // The support from the rows of trusted controllers only, as the gateway fits it.
        retrainer.supportRows = store.supportRows(trial: map.learning.trial)
        let output = dir.appendingPathComponent("candidate.safetensors")
        let report: RetrainReport
        do {
            report = try retrainer.run(logPath: logPath, limits: RetrainLimits(steps: steps, seconds: seconds, window: window),
                                       warmStart: warm, output: output) { p in
                FileHandle.standardError.write(Data("\r\(p.phase): \(p.updates)/\(p.of) updates\(p.tdLoss.map { String(format: ", TD loss %.4g", $0) } ?? "")   ".utf8))
            }
            FileHandle.standardError.write(Data("\n".utf8))
        } catch let error as RetrainError {
            FileHandle.standardError.write(Data("\n".utf8))
            switch error.kind {
            case .notEnoughData: throw CLIFailure(.data, "train: \(error)")
            case .logUnreadable, .writeFailed: throw CLIFailure(.io, "train: \(error)")
            case .setup, .stopped: throw CLIFailure(.software, "train: \(error)")
            }
        } catch {
            throw CLIFailure(.software, "train: \(error)")
        }
        if let warm, !report.warmStart {
            FileHandle.standardError.write(Data("note: the served model (\(warm.architecture.label)) does not have the mapping's shape: trained from fresh weights\n".utf8))
        }
        var final = report
        if report.passed {
            do {
                let version = try store.add(files: ["model.safetensors": output,
                                                    "model.safetensors.sha256": output.appendingPathExtension("sha256")],
                                            report: report.json(), signer: signer)
                final.version = version
                try final.json().write(to: store.reportURL(version))
                try? FileManager.default.removeItem(at: output)
                try? FileManager.default.removeItem(at: output.appendingPathExtension("sha256"))
                if promote { try store.setCurrent(version, reason: "edgeq train --promote") }
            } catch {
                throw CLIFailure(.io, "cannot store the candidate in \(store.directory.path): \(error)")
            }
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
    /// A number as people write it: 150, 0.99, 1.2e-05.
    static func number(_ x: Double) -> String {
        guard x.isFinite else { return "—" }
        let r = roundedForReading(x)
        return r == r.rounded() && abs(r) < 1e15 ? String(Int(r)) : "\(r)"
    }

    static func render(_ r: RetrainReport) -> String {
        var lines = ["verdict    \(r.verdict)\(r.version.map { " (stored as version \($0))" } ?? "")",
                     "data       \(r.rows) rows (\(r.incumbentRows) from the incumbent): \(r.trainRows) to train, \(r.heldOutRows) held out; \(r.gapRowsExcluded) spanning missed ticks left out",
                     String(format: "training   %d updates in %.1f s%@", r.updates, r.seconds, r.warmStart ? ", warm start from the served model" : ", fresh weights")]
        if let c = r.learner { lines.append("learner    " + learnerText(c)) }
        for c in r.checks {
            let mark: String
            switch c.status {
            case .passed: mark = "pass"
            case .failed: mark = "FAIL"
            case .notApplicable: mark = "n/a "
            case .advisory: mark = "adv "
            }
            let value = c.value.map(number) ?? "—"
            let within = c.status == .advisory ? (c.withinLimit == true ? ", within it" : ", beyond it") : ""
            lines.append("\(mark)       \(c.name) = \(value) (limit \(number(c.limit))\(within)): \(c.note)")
        }
        if !r.notJudged.isEmpty {
            lines.append("not judged \(r.notJudged.count) check\(r.notJudged.count == 1 ? "" : "s") (skipped, not failed): \(r.notJudged.map { String($0.prefix { $0 != ":" }) }.joined(separator: ", "))")
        }
        if !r.advisory.isEmpty {
            let reasons = Set(r.checks.compactMap(\.advisory)).sorted().joined(separator: "; ")
            lines.append("advisory   \(r.advisory.count) check\(r.advisory.count == 1 ? "" : "s") reported, not used (\(reasons)): \(r.advisory.map { String($0.prefix { $0 != ":" }) }.joined(separator: ", "))")
        }
        for (k, v) in r.figures.sorted(by: { $0.key < $1.key }) {
            lines.append("figure     \(k) = \(number(v))")
        }
        return lines.joined(separator: "\n")
    }

    /// The learner's settings on one line.
    static func learnerText(_ c: DQNConfig) -> String {
        var parts = [c.doubleDQN ? "Double DQN" : "DQN (max target)",
                     "γ \(number(Double(c.gamma)))", "learning rate \(number(Double(c.learningRate)))",
                     "batch \(c.batchSize)", "n-step \(c.nStep)"]
        parts.append(c.polyakTau.map { "target Polyak τ \(number(Double($0)))" } ?? "target copied every \(c.targetUpdateInterval) updates")
        parts.append("Huber δ \(number(Double(c.huberDelta)))")
        parts.append("gradient clip \(number(Double(c.maxGradNorm)))")
        parts.append(c.prioritizedAlpha.map {
            "prioritized replay α \(number($0)), β \(number(c.prioritizedBeta)) → 1 over \(c.betaAnnealUpdates) updates"
        } ?? "uniform replay")
        parts.append("CQL \(number(Double(c.cqlWeight))) on \(c.cqlOnAllTransitions ? "all rows" : "the incumbent's rows")")
        parts.append(c.bootstrapRange.map { "bootstrap values clipped to [\(number(Double($0.lowerBound))), \(number(Double($0.upperBound)))]" }
            ?? "bootstrap values not clipped")
        return parts.joined(separator: ", ")
    }
}
