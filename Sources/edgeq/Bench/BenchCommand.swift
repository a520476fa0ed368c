import ArgumentParser
import EdgeQSimulators
import EdgeQSystem
import Foundation

/// `edgeq bench NAME [--json]`: measures EdgeQ and, in the same run, the anchor it is
/// compared with (../shared/anchors/perf), and prints the ratio EdgeQ ÷ anchor.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Run a benchmark and print EdgeQ's figures beside the anchors measured in the same run.",
        discussion: """
            NAME is one of: \(BenchName.allCases.map(\.rawValue).joined(separator: ", ")).
            Without --json: a table for people. With --json: one JSON object per line per figure, \
            {"bench","figure","value","unit","anchor","anchor_value","ratio","better"}, where ratio is \
            EdgeQ ÷ anchor and better is "lower" or "higher"; when EdgeQ and the anchor were measured \
            alternately in rounds, ratio is the median of the per-round ratios and "rounds", \
            "ratio_min", "ratio_max" follow; for a quantile pooled over alternated rounds, ratio is \
            the pooled quantiles' quotient and "rounds", "samples", "ratio_low", "ratio_high", \
            "confidence" (a bootstrap interval on it) follow; a figure that could not be measured in this run has \
            value or anchor_value null and a "reason". Progress goes to standard error.
            The anchors are taken from ../shared/anchors/perf (or $EDGEQ_ANCHORS_DIR), copied to \
            .build-anchors/ and built there; Python anchors use $EDGEQ_ANCHORS_PY \
            (default ~/.venvs/anchors-perf/bin/python, made by `make bench-setup`).
            """
    )

    @Argument(help: "Which benchmark to run.")
    var name: BenchName

    @Flag(help: "Print one JSON object per figure instead of a table.")
    var json = false

    @Flag(help: "Fewer repetitions: a quick look, not a figure to record.")
    var quick = false

    @Flag(help: "Skip the anchors (EdgeQ's figures only; ratios are then null).")
    var noAnchors = false

    @Option(help: "generalize: the plants, comma-separated (default: every plant).")
    var plants: String?

    @Option(help: "generalize, model: seeds per plant (1…N; default 5).")
    var seeds: Int?

    @Option(help: "generalize: the first seed (seeds K…K+N−1 with --seeds N; default 1), to split a sitting's seeds over several processes.")
    var firstSeed: Int?

    @Option(help: "generalize: steps per run (default: each plant's budget, docs/benchmarks.md).")
    var steps: Int?

    @Option(help: "generalize: share (0…1) of the incumbent's decisions moved ±1 level (default 0: the incumbent as it runs; the twin is never dithered).")
    var dither: Double?

    @Option(help: "generalize: the mapping file the gateway runs instead of topics/<plant>.yaml (with one plant in --plants), e.g. the plant's mapping with learning.distill on.")
    var config: String?

    @Option(help: "fleet: rows in each of the 8 gateways' logs for the ingest figure (default 50,000; 5,000 with --quick).")
    var rows: Int?

    @Option(help: "fleet: latency rounds of 1,000 round trips, each without then with shipping; the p99 pools every round's (default 20; 2 with --quick).")
    var rounds: Int?

    @Option(help: "fleet: decisions a second in the latency rounds, each started on a fixed schedule, as a plant's ticks are (default: one after another, as fast as they come back — the shipper's worst case).")
    var pace: Double?

    @Option(help: "fleet: models published one after another to the 8 gateways for the rollout figure (default 20; 5 with --quick).")
    var models: Int?

    @Option(help: "fleet: the parts to run, comma-separated: \(FleetPart.allCases.map(\.rawValue).joined(separator: ", ")) (default: ingest,latency,rollout; learn — N cart-pole gateways learning through one learner against one gateway alone — takes minutes to hours; thermal — 4 gateways × 2 weeks against 1 gateway × 6 weeks, in the lab, 5 seeds — about 5 minutes in a release build; docs/benchmarks.md).")
    var parts: String?

    @Option(help: "fleet --parts learn: the fleet sizes, comma-separated, 1…16 each (default 1,2,4).")
    var gateways: String?

    @Option(help: "fleet --parts learn: wall-clock cap per configuration, seconds (default 900).")
    var budgetSeconds: Double?

    @Option(help: "fleet --parts learn: the single gateway's seed; fleet gateway i runs seed+i−1 (default 1).")
    var seed: Int?

    func validate() throws {
        if name != .fleet && (parts != nil || gateways != nil || budgetSeconds != nil || seed != nil) {
            throw ValidationError("--parts, --gateways, --budget-seconds and --seed apply to `edgeq bench fleet` only")
        }
        _ = try fleetParts()
        _ = try fleetLearnOptions()
        if name != .fleet && (rows != nil || rounds != nil || models != nil) {
            throw ValidationError("--rows, --rounds and --models apply to `edgeq bench fleet` only")
        }
        if let models, models < 1 { throw ValidationError("--models must be at least 1") }
        if let rows, rows < 1 { throw ValidationError("--rows must be at least 1") }
        if let rounds, rounds < 1 { throw ValidationError("--rounds must be at least 1") }
        if pace != nil && name != .fleet { throw ValidationError("--pace applies to `edgeq bench fleet` only") }
        if let pace, !(pace.isFinite && pace > 0 && pace <= 100_000) {
            throw ValidationError("--pace takes decisions a second, above 0 and at most 100000 (e.g. --pace 100)")
        }
        if name != .generalize && (plants != nil || steps != nil || dither != nil || config != nil || firstSeed != nil) {
            throw ValidationError("--plants, --steps, --dither, --config and --first-seed apply to `edgeq bench generalize` only")
        }
        if let firstSeed, firstSeed < 1 { throw ValidationError("--first-seed must be at least 1") }
        if name != .generalize && name != .model && seeds != nil {
            throw ValidationError("--seeds applies to `edgeq bench generalize` and `edgeq bench model` only")
        }
        if let dither, !(0...1).contains(dither) { throw ValidationError("--dither must be between 0 and 1") }
        if let seeds, seeds < 1 { throw ValidationError("--seeds must be at least 1") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
        _ = try generalizeOptions()
    }

    /// The fleet bench's parts from `--parts` (default: ingest, latency, rollout).
    func fleetParts() throws -> Set<FleetPart> {
        guard let parts else { return [.ingest, .latency, .rollout] }
        let chosen = try parts.split(separator: ",", omittingEmptySubsequences: false).map { raw -> FleetPart in
            let name = raw.trimmingCharacters(in: .whitespaces)
            guard let p = FleetPart(rawValue: name) else {
                throw ValidationError("unknown part '\(name)' in --parts; available: \(FleetPart.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return p
        }
        if chosen.isEmpty { throw ValidationError("--parts names no part") }
        return Set(chosen)
    }

    /// The learn part's options from `--gateways`, `--budget-seconds` and `--seed`.
    func fleetLearnOptions() throws -> FleetLearnOptions {
        var o = FleetLearnOptions()
        if (gateways != nil || budgetSeconds != nil || seed != nil), !(try fleetParts()).contains(.learn) {
            throw ValidationError("--gateways, --budget-seconds and --seed belong to the learn part: add --parts learn")
        }
        if let gateways {
            o.gateways = try gateways.split(separator: ",", omittingEmptySubsequences: false).map { raw in
                let text = raw.trimmingCharacters(in: .whitespaces)
                guard let n = Int(text), (1...16).contains(n) else {
                    throw ValidationError("--gateways takes fleet sizes from 1 to 16, comma-separated (e.g. 1,2,4); '\(text)' is not one")
                }
                return n
            }
            if Set(o.gateways).count != o.gateways.count { throw ValidationError("--gateways names a fleet size twice: \(gateways)") }
        }
        if let budgetSeconds {
            guard budgetSeconds.isFinite, budgetSeconds > 0 else { throw ValidationError("--budget-seconds must be a number of seconds above 0") }
            o.budgetSeconds = budgetSeconds
        }
        if let seed {
            guard seed >= 0 else { throw ValidationError("--seed must be 0 or more") }
            o.seed = UInt64(seed)
        }
        return o
    }

    /// The generalize bench's options from the flags.
    func generalizeOptions() throws -> GeneralizeOptions {
        var g = GeneralizeOptions()
        if let plants {
            g.plants = try plants.split(separator: ",").map { raw in
                let name = raw.trimmingCharacters(in: .whitespaces)
                guard let p = PlantKind(rawValue: name) else {
                    throw ValidationError("unknown plant '\(name)' in --plants; available: \(PlantKind.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return p
            }
            if g.plants.isEmpty { throw ValidationError("--plants names no plant") }
        }
        if let config {
            guard g.plants.count == 1 else {
                throw ValidationError("--config replaces one plant's mapping: name that plant alone in --plants (e.g. --plants heater)")
            }
            guard FileManager.default.isReadableFile(atPath: config) else {
                throw ValidationError("--config \(config): no readable file there")
            }
            g.mapping = URL(fileURLWithPath: config).standardizedFileURL.path
        }
        if let seeds { g.seeds = seeds }
        if let firstSeed { g.firstSeed = firstSeed }
        g.steps = steps
        g.dither = dither ?? 0
        return g
    }

    func run() async throws {
        // Stopped by an operator (Ctrl-C, SIGTERM): take the gateways, simulators and brokers
        // the benchmark started down with it, then exit as the signal would have.
        let watcher = SignalWatcher { sig in
            ChildProcess.terminateAll()
            Foundation.exit(128 + sig)
        }
        defer { withExtendedLifetime(watcher) {} }
        var context = BenchContext(bench: name.rawValue, quick: quick, withAnchors: !noAnchors)
        context.generalize = try generalizeOptions()
        if let seeds { context.modelSeeds = seeds }
        context.fleet.rowsPerGateway = rows ?? (quick ? 5_000 : 50_000)
        context.fleet.rounds = rounds ?? (quick ? 2 : 20)
        context.fleet.pace = pace
        context.fleetRollout.models = models ?? (quick ? 5 : 20)
        context.fleetParts = try fleetParts()
        context.fleetLearn = try fleetLearnOptions()
        let figures = try await name.run(context)
        BenchReport(figures: figures).print(json: json)
    }
}

/// The benchmarks `edgeq bench` knows.
enum BenchName: String, CaseIterable, ExpressibleByArgument, Sendable {
    case mqtt, decode, inference, train, learn, e2e, retrain, generalize, model, fleet

    func run(_ context: BenchContext) async throws -> [BenchFigure] {
        switch self {
        case .mqtt: return try await MQTTBench.run(context)
        case .decode: return try await DecodeBench.run(context)
        case .inference: return try await InferenceBench.run(context)
        case .train: return try await TrainBench.run(context)
        case .learn: return try await LearnBench.run(context)
        case .retrain: return try await RetrainBench.run(context)
        case .e2e: return try await E2EBench.run(context)
        case .generalize: return try await GeneralizeBench.run(context)
        case .model: return try await ModelBench.run(context)
        case .fleet: return try await FleetBench.run(context)
        }
    }
}

/// The parts of `edgeq bench fleet` (`--parts`).
enum FleetPart: String, CaseIterable, Sendable {
    /// 8 shippers into one learner: rows per second.
    case ingest
    /// Decision round trips with and without shipping.
    case latency
    /// Signed models to 8 gateways: publish → stored.
    case rollout
    /// Issue 15's learning benchmark: N cart-pole gateways and one learner against one gateway.
    case learn
    /// Issue 15's thermal goal in the lab: 4 gateways × 2 weeks against 1 gateway × 6 weeks.
    case thermal
}

/// What every benchmark gets: its options and a place to report progress.
struct BenchContext: Sendable {
    let bench: String
    let quick: Bool
    let withAnchors: Bool
    /// `generalize` only: plants, seeds, steps.
    var generalize = GeneralizeOptions()
    /// `model` only: seeds 1…modelSeeds per plant.
    var modelSeeds = 5
    /// `fleet` only: gateways, rows, rounds.
    var fleet = FleetOptions()
    /// `fleet` only: the model rollout's gateways and models.
    var fleetRollout = FleetRolloutOptions()
    /// `fleet` only: which parts run (`--parts`).
    var fleetParts: Set<FleetPart> = [.ingest, .latency, .rollout]
    /// `fleet` only: the learn part's fleet sizes, budget and seed.
    var fleetLearn = FleetLearnOptions()

    /// Progress for people, on standard error (standard output carries the figures).
    func progress(_ message: String) {
        FileHandle.standardError.write(Data("[\(bench)] \(message)\n".utf8))
    }
}

/// A benchmark that cannot run, with what to do about it.
enum BenchError: Error, CustomStringConvertible {
    case notAvailable(name: String)
    case anchorMissing(String)
    case failed(String)

    var description: String {
        switch self {
        case .notAvailable(let name):
            return "bench \(name) is not available in this build yet"
        case .anchorMissing(let what):
            return "anchor not available: \(what) (run `make bench-setup`, or pass --no-anchors)"
        case .failed(let what):
            return "benchmark failed: \(what)"
        }
    }
}
