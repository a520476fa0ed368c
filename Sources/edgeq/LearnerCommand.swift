import ArgumentParser
import EdgeQGateway
import EdgeQSystem
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Logging

/// `edgeq learner --config FLEET.yaml`: the fleet learner's ingest (docs/fleet.md).
struct LearnerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "learner",
        abstract: "Run a fleet learner: store every gateway's shipped transitions once, acknowledge them.",
        discussion: """
            Subscribes to $share/<group>/<fleet>/experience/+ (MQTT 5 shared subscription: the \
            learners of one group share the batches), stores each batch in DATA/fleet.sqlite \
            (one row per gateway, log file and row id: a batch received twice is stored once), and after \
            the commit publishes the gateway's high-water mark, retained, on <fleet>/ack/<gateway>. \
            Its status is retained on <fleet>/learner/<id>/status. SIGINT/SIGTERM finish the batch \
            under way, publish the offline status and exit 0. With 'mapping' and 'key' in the file it \
            also trains on the fleet log every train_every new transitions (--train-every; N/gateway: N for each gateway \
            that shipped since the last training, the updates scaled alike), on at most train_rows rows \
            (--train-rows; each gateway's newest), and \
            publishes each candidate that passes its checks, signed, retained on <fleet>/model; the \
            gateways' verdicts (<fleet>/verdict/+) are in its status. Exit status: 0 after a signal; 64 usage (no data directory); 65 an invalid \
            file (FILE:LINE:COL lines); 66 an unreadable file or secret; 74 the data directory or fleet log \
            cannot be created or opened; 69 the broker cannot be reached, the metrics port is taken. \
            See docs/fleet.md.
            """
    )

    @Option(help: "The fleet learner file (YAML: fleet, group, id; see docs/fleet.md).")
    var config: String

    @Option(help: "Broker URL instead of the file's (mqtt://HOST:PORT).")
    var broker: String?

    @Option(help: "Data directory (holds fleet.sqlite) instead of the file's.")
    var data: String?

    @Option(help: "Serve Prometheus metrics on this port (0: any free port, printed at start).")
    var metricsPort: UInt16?

    @Option(help: ArgumentHelp("Train after this many new transitions, or N/gateway: N for each gateway that shipped since the last training, with the updates scaled alike (the file's train_every; needs 'mapping' and 'key' in the file).",
                               valueName: "N|N/gateway"))
    var trainEvery: String?

    @Option(help: ArgumentHelp("The most rows a training reads, each gateway's newest (the file's train_rows; 'all' for the whole fleet log).",
                               valueName: "rows|all"))
    var trainRows: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: LogLevelOption = .info

    func run() throws {
        LoggingSetup.bootstrap(logLevel)
        let cfg: FleetLearnerConfig
        do {
            cfg = try FleetLearnerConfig.load(path: config)
        } catch {
            for d in error.diagnostics { FileHandle.standardError.write(Data((d.description + "\n").utf8)) }
            let n = error.diagnostics.count
            throw CLIFailure(error.code == .unreadable ? .noInput : .data,
                             error.code == .unreadable ? "cannot read the fleet learner file \(config)" : "\(config): \(n) error\(n == 1 ? "" : "s")")
        }
        guard let dir = data ?? cfg.data else {
            throw ValidationError("give the data directory: --data DIR, or 'data:' in \(config)")
        }
        var every = (rows: cfg.trainEvery, perGateway: cfg.trainEveryPerGateway)
        if let t = trainEvery {
            guard let v = FleetLearnerConfig.parseTrainEvery(t) else {
                throw ValidationError("--train-every must be \(FleetLearnerConfig.trainEveryForm) (found '\(t)')")
            }
            every = v
        }
        var window = cfg.trainRows
        if let t = trainRows {
            if t == "all" {
                window = nil
            } else if let n = Int(t), n >= FleetLearnerConfig.minTrainRows {
                window = n
            } else {
                throw ValidationError("--train-rows must be a whole number of rows, at least \(FleetLearnerConfig.minTrainRows), or 'all' (found '\(t)')")
            }
        }
        var training: FleetTrainer?
        if let mapping = cfg.mapping, let key = cfg.key {
            let map = try loadMapping(mapping)
            do {
                training = try FleetTrainer(map: map, keyFile: URL(fileURLWithPath: key), trainEvery: every.rows, perGateway: every.perGateway,
                                            window: window, updates: cfg.updates, maxMessage: cfg.maxMessage,
                                            dataDirectory: URL(fileURLWithPath: dir))
            } catch let e as KeyFileError {
                throw CLIFailure(.noInput, "learner: \(e)")
            } catch {
                throw CLIFailure(.io, "learner: \(error)")
            }
        } else if trainRows != nil {
            throw ValidationError("--train-rows needs 'mapping' and 'key' in \(config) (the learner trains only with them)")
        } else if trainEvery != nil {
            throw ValidationError("--train-every needs 'mapping' and 'key' in \(config) (the learner trains only with them)")
        }
        let stopper = LearnerStopper()
        let watcher = SignalWatcher { _ in stopper.stop() }
        let learner: FleetLearner
        do {
            learner = try FleetLearner(config: cfg, broker: broker ?? cfg.broker ?? "mqtt://127.0.0.1:1883", dataDirectory: dir,
                                       metricsPort: metricsPort ?? cfg.metricsPort, training: training)
        } catch {
            // GatewayError carries only its message; these two are FleetLearner.init's file problems.
            let text = "\(error)"
            let file = text.hasPrefix("cannot create the data directory") || text.hasPrefix("cannot open the fleet log")
            let secret = text.hasPrefix("the environment variable") || text.hasPrefix("cannot read the secret file")
            throw CLIFailure(file ? .io : secret ? .noInput : .unavailable, "learner: \(text)")
        }
        if let port = learner.metricsPort {
            FileHandle.standardError.write(Data("metrics on http://127.0.0.1:\(port)/metrics\n".utf8))
        }
        guard stopper.attach(learner) else { return }
        do {
            try learner.run()
        } catch {
            throw CLIFailure(.unavailable, "learner: \(error)")
        }
        withExtendedLifetime(watcher) {}
    }
}

/// Hands a stop request (from a signal) to the learner, even one that arrives before it exists.
final class LearnerStopper: @unchecked Sendable {
    // @unchecked Sendable: both fields are only touched under `lock`.
    private let lock = NSLock()
    private var learner: FleetLearner?
    private var stopRequested = false

    func stop() {
        let l = lock.withLock { () -> FleetLearner? in
            stopRequested = true
            return learner
        }
        l?.stop(wait: false)
    }

    /// Registers the learner; false when a stop was already requested (then do not run it).
    func attach(_ l: FleetLearner) -> Bool {
        lock.withLock {
            learner = l
            return !stopRequested
        }
    }
}
