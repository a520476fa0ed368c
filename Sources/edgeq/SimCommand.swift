import ArgumentParser
import EdgeQSimulators
import EdgeQSystem
import Foundation
import Logging

extension PlantKind: ExpressibleByArgument {
    /// Plant time per step, seconds (for --speed).
    var secondsPerStep: Double {
        switch self {
        case .cartpole: return 0.02
        case .thermal: return 300
        case .tank: return 10
        case .heater: return 30
        // Gymnasium's MountainCar has no physical time step; its render rate is 30 frames/s.
        case .mountaincar: return 1.0 / 30
        }
    }
}

/// `edgeq sim PLANT --broker URL`: a built-in plant on a broker (docs/simulators.md).
struct SimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim",
        abstract: "Run a built-in plant (cartpole, thermal, tank, heater, mountaincar) that speaks MQTT, with its incumbent controller.",
        discussion: """
            The plant publishes its state on plant/PLANT/state after every step and takes commands on \
            plant/PLANT/cmd. Its incumbent decides (and publishes what it applies) unless the gateway \
            named by --gateway says mode "control" in its retained status. At the end (after --steps, \
            or on SIGINT/SIGTERM) it publishes its score, retained, on plant/PLANT/score and prints it.
            With --eval it also runs, in process, a twin of the plant driven by its incumbent on the same \
            weather, setpoints and episode starts, and publishes per window (or episode) both returns and \
            who was in control on plant/PLANT/eval (docs/simulators.md, "Evaluation twin").
            """
    )

    @Argument(help: "The plant: \(PlantKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var plant: PlantKind

    @Option(help: "Broker URL, e.g. mqtt://127.0.0.1:1883.")
    var broker: String

    @Option(help: "Seed for the plant's randomness and the dither (same seed, same run).")
    var seed: UInt64 = 0

    @Option(help: "Stop after this many steps (default: run until SIGINT/SIGTERM).")
    var steps: Int?

    @Option(help: "Steps per second of wall time; 0 runs as fast as the broker allows.")
    var rate: Double = 50

    @Option(help: "Run this many times faster than real time (cart-pole: 50 steps/s; thermal: 1 step per 5 min; tank: 1 step per 10 s; heater: 1 step per 30 s; mountain car: 30 steps/s); overrides --rate.")
    var speed: Double?

    @Option(help: "Share (0…1) of the incumbent's decisions moved by ±1 level: exploration with limits.")
    var dither: Double = 0

    @Option(help: "The gateway's control-plane prefix (e.g. edgeq/thermal): in its control mode the plant applies its commands.")
    var gateway: String?

    @Option(help: "Seconds to wait for the gateway's command in control mode before applying the incumbent's.")
    var commandTimeout: Double = 0.5

    @Option(help: "The incumbent controller (each plant has one: default).")
    var incumbent: String = "default"

    @Flag(help: "Print the score as JSON instead of a line for people.")
    var json = false

    @Flag(help: "Evaluate against an incumbent twin on the same weather, setpoints and episode starts; publish each window on plant/PLANT/eval.")
    var eval = false

    @Option(help: "Steps per evaluation window on continuing plants (default: thermal 288, tank 360, heater 960); implies --eval.")
    var evalWindow: Int?

    @Option(help: "Append each evaluation window as a JSON line to this file; implies --eval.")
    var evalFile: String?

    func validate() throws {
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
        if !(0...1).contains(dither) { throw ValidationError("--dither must be between 0 and 1") }
        if rate < 0 || !rate.isFinite { throw ValidationError("--rate must be 0 (unpaced) or a positive number") }
        if let speed, !(speed > 0) { throw ValidationError("--speed must be a positive factor") }
        if commandTimeout <= 0 { throw ValidationError("--command-timeout must be positive") }
        if let evalWindow, evalWindow < 1 { throw ValidationError("--eval-window must be at least 1 step") }
        if evalWindow != nil && plant.isEpisodic {
            throw ValidationError("--eval-window applies to continuing plants; \(plant.rawValue) is evaluated per episode")
        }
        if incumbent != "default" { throw ValidationError("unknown incumbent '\(incumbent)'; available: default") }
    }

    func run() throws {
        var options = SimulatorOptions(plant: plant, broker: broker)
        options.seed = seed
        options.steps = steps
        options.rate = speed.map { $0 / plant.secondsPerStep } ?? rate
        options.dither = dither
        options.gatewayPrefix = gateway
        options.commandTimeout = commandTimeout
        if eval || evalWindow != nil || evalFile != nil {
            var e = EvaluationOptions()
            e.windowSteps = evalWindow
            e.file = evalFile
            options.evaluation = e
        }
        let sim = Simulator(options)
        let watcher = SignalWatcher { _ in sim.stop() }
        let result: SimulatorResult
        do {
            result = try sim.run()
        } catch {
            throw CLIFailure(.unavailable, "sim: \(error)")
        }
        withExtendedLifetime(watcher) {}
        if json {
            print(String(decoding: result.scoreJSON, as: UTF8.self))
        } else {
            print(result.scoreText)
            if result.gatewaySteps > 0 || result.commandTimeouts > 0 {
                print("gateway applied \(result.gatewaySteps) steps; incumbent \(result.incumbentSteps); command timeouts \(result.commandTimeouts); stale commands \(result.staleCommands)")
            }
        }
    }
}
