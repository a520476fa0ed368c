import ArgumentParser
import EdgeQCore
import EdgeQGateway
import EdgeQNet
import EdgeQSystem
import EdgeQTopicMap
import Foundation
import Logging

extension GatewayMode: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}

/// Log levels for `--log-level`.
enum LogLevelOption: String, ExpressibleByArgument, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
    var level: Logger.Level { Logger.Level(rawValue: rawValue) ?? .info }
}

/// Sets up swift-log once for the process: text lines on standard error.
enum LoggingSetup {
    static func bootstrap(_ level: LogLevelOption) {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level.level
            return h
        }
    }
}

/// `edgeq run --config FILE`: the gateway.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the gateway: decide on every tick, shadow or control, log every transition.",
        discussion: """
            Connects to the broker named in the mapping file (or --broker), decides on every tick \
            with the served model, reports on <prefix>/shadow in shadow mode or publishes the \
            actuator commands in control mode, and logs every transition to DATA/experience.sqlite. \
            The mode persists in the data directory (DATA/gateway-state.json); --mode overrides it. \
            Going back to shadow always takes effect at once, even when the data directory is full \
            (recording it is retried; the status says state_persisted:false meanwhile); going to \
            control is refused while it cannot be recorded. SIGINT/SIGTERM stop \
            deciding, flush the log, publish the offline status, disconnect and exit 0. \
            Under systemd (Type=notify, NOTIFY_SOCKET set) it sends READY=1 once connected and \
            deciding, WATCHDOG=1 while its decision loop is alive (WatchdogSec=) and STOPPING=1 \
            at shutdown; deploy/edgeq@.service runs one gateway per mapping. \
            See docs/operations.md.
            """
    )

    @Option(help: "The mapping file (YAML).")
    var config: String

    @Option(help: "Broker URL instead of the mapping file's (mqtt://HOST:PORT or mqtts://…).")
    var broker: String?

    @Option(help: "Data directory instead of the mapping file's (log, models, state).")
    var data: String?

    @Option(help: "Start in this mode (shadow or control) instead of the persisted one.")
    var mode: GatewayMode?

    @Option(help: "Serve Prometheus metrics on this port (0: any free port, printed at start).")
    var metricsPort: UInt16?

    @Option(help: "Address for the metrics server.")
    var metricsHost: String = "127.0.0.1"

    @Option(help: "Inference precision: mixed (default: int8, with fp32 deciding int8's near-ties), int8 or fp32.")
    var precision: Precision = .mixed

    @Option(help: "Control mode: publish the fallback when no decision was made for this many seconds (default: 3 periods; off for trigger ticks).")
    var watchdog: Double?

    @Flag(inversion: .prefixedNo,
          help: "Decide message-triggered ticks on the MQTT network thread as messages arrive (default), or hand each message to the decision thread first (--no-inline-decisions). See docs/operations.md.")
    var inlineDecisions = true

    @Flag(inversion: .prefixedNo,
          help: "After loading the mapping and after start-up, hand the executable's start-up-only code pages back to the kernel (default; --no-release-startup-pages keeps them resident). See docs/operations.md.")
    var releaseStartupPages = true

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: LogLevelOption = .info

    @Option(help: ArgumentHelp("Seed of the gateway's random draws (exploration, trial block order, control group), 0 … 9007199254740991; default: drawn at start and shown in the status. The same seed replays them.",
                               valueName: "N"))
    var seed: UInt64?

    func validate() throws {
        if let watchdog, !(watchdog > 0) { throw ValidationError("--watchdog must be a positive number of seconds") }
        if let seed, seed > SeededGenerator.largestPrintableSeed {
            throw ValidationError("--seed must be at most \(SeededGenerator.largestPrintableSeed) (2^53 - 1, so that the status shows it exactly); got \(seed)")
        }
    }

    func run() throws {
        // Two malloc arenas instead of glibc's 8 per core: the gateway's threads (network,
        // decisions, log writer, retraining) allocate little, and each arena touched costs
        // resident memory (docs/benchmarks.md, e2e).
        ProcessMemory.limitMallocArenas(2)
        LoggingSetup.bootstrap(logLevel)
        let map = try loadMapping(config)
        // The code that only start-up runs (argument parsing, YAML, ICU tables) is clean and
        // file-backed: let the kernel reclaim it, twice (the peak is start-up's), so that the
        // resident set is what the decision path uses (docs/operations.md, "Memory").
        if releaseStartupPages { ProcessMemory.releaseStartupPages() }
        var options = GatewayOptions(map: map)
        options.broker = broker
        options.dataDirectory = data
        options.mode = mode
        options.metricsPort = metricsPort
        options.metricsHost = metricsHost
        options.precision = precision
        options.watchdogSeconds = watchdog
        options.inlineDecisions = inlineDecisions
        options.releaseCodePages = releaseStartupPages
        options.seed = seed
        // Under systemd (Type=notify): READY=1, WATCHDOG=1, STOPPING=1 (deploy/edgeq@.service).
        do {
            options.serviceNotifier = try ServiceNotifier.fromEnvironment()
        } catch {
            throw CLIFailure(.unavailable, "run: \(error)")
        }
        // Signals are watched before anything else starts, so a SIGTERM that arrives during
        // start-up still ends in an orderly stop (exit 0) rather than the default death.
        let stopper = GatewayStopper()
        let watcher = SignalWatcher { _ in stopper.stop() }
        let gateway: Gateway
        do {
            gateway = try Gateway(options)
        } catch {
            throw Self.startFailure(error)
        }
        if let port = gateway.metricsPort {
            FileHandle.standardError.write(Data("metrics on http://\(metricsHost):\(port)/metrics\n".utf8))
        }
        guard stopper.attach(gateway) else { return }
        if releaseStartupPages { ProcessMemory.releaseStartupPages() }
        do {
            try gateway.run()
        } catch {
            throw CLIFailure(.unavailable, "run: \(error)")
        }
        withExtendedLifetime(watcher) {}
    }

    /// The exit status of a gateway that could not start: 74 when its data directory or log
    /// cannot be created or opened, 66 when a secret named in the mapping is missing, 69
    /// otherwise (the broker, the metrics port: let the service manager retry).
    static func startFailure(_ error: any Error) -> CLIFailure {
        // GatewayError carries only its message; these are the messages of Gateway.init.
        let text = "\(error)"
        if text.hasPrefix("cannot create the data directory") || text.hasPrefix("cannot open the experience log") {
            return CLIFailure(.io, "run: \(text)")
        }
        if text.hasPrefix("the environment variable") || text.hasPrefix("cannot read the secret file") {
            return CLIFailure(.noInput, "run: \(text)")
        }
        return CLIFailure(.unavailable, "run: \(text)")
    }
}

/// Hands a stop request (from a signal) to the gateway, even one that arrives before the
/// gateway exists.
final class GatewayStopper: @unchecked Sendable {
    // @unchecked Sendable: both fields are only touched under `lock`.
    private let lock = NSLock()
    private var gateway: Gateway?
    private var stopRequested = false

    func stop() {
        let g = lock.withLock { () -> Gateway? in
            stopRequested = true
            return gateway
        }
        g?.stop(wait: false)
    }

    /// Registers the gateway; false when a stop was already requested (then do not run it).
    func attach(_ g: Gateway) -> Bool {
        lock.withLock {
            gateway = g
            return !stopRequested
        }
    }
}
