import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQSimulators
import EdgeQSystem
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import Logging

/// What `edgeq bench fleet --parts learn` runs (`--gateways`, `--budget-seconds`, `--seed`).
struct FleetLearnOptions: Sendable {
    /// Fleet sizes, each a configuration of its own after the single gateway's baseline.
    var gateways: [Int] = [1, 2, 4]
    /// Wall-clock cap per configuration, seconds.
    var budgetSeconds: Double = 900
    /// The single gateway's seed; fleet gateway i (1…N) runs seed + i − 1.
    var seed: UInt64 = 1
}

/// `edgeq bench fleet --parts learn`: issue 15's learning benchmark on cart-pole — N gateways
/// learning together through one `edgeq learner` against one gateway retraining on its own, in
/// wall-clock time until every gateway's served model reaches a 10-episode mean of 475.
///
/// **Baseline** (`learn/single/…`): one `edgeq run` with the shipped topics/cartpole.yaml
/// (retraining on its own every 1,000 transitions, trials, no fleet section), exactly as
/// `edgeq bench generalize` runs it (`BenchGatewayRun`: a fresh mosquitto, the plant with its
/// evaluation twin at up to 1,000 steps a second, plant time held still while it retrains).
///
/// **Fleet of N** (`learn/gateways<N>/…`): one mosquitto for the whole fleet; N `edgeq run`
/// gateways, each with a copy of the mapping under its own id (`cartpole-g<i>`, prefix
/// `edgeq/cartpole-g<i>`) and plant topics (`plant/cartpole-g<i>/…`), its own data directory,
/// its own plant and twin (seed + i − 1), a `fleet` section shipping its log to `fleet/cartpole`,
/// and **no local retraining** (`retrain: {every_transitions: none}`): the gateways are Ape-X's
/// actors (their own ε-greedy exploration, the mapping's, with their served model) and one
/// `edgeq learner` is the one learner. It trains on the fleet log with the same mapping's
/// learning section every `trainEvery` (1,000) new transitions pooled over the fleet — the
/// single gateway's gradient updates per transition (1,000 updates per 1,000 transitions) —
/// signs with a key of its own that every gateway trusts under `keys/models/`, and publishes;
/// each gateway runs the model through its own switchback trial before it controls anything
/// (the existing behaviour). Plant time stands still while the learner trains (its status says
/// `training.running`; refreshed every 100 ms), as the single gateway's does while it retrains.
///
/// **Measured**, per configuration: the wall-clock seconds from the plants' start until every
/// gateway's served model reached a 10-episode mean ≥ 475 — over the last 10 episodes that a
/// served model decided wholly (`GeneralizeBench.servedWindows`, the generalize classification,
/// also requiring the status to have named that version served before the episode began) — or
/// null with the reason when the budget ran out; the plant transitions of all gateways by then;
/// the CPU the configuration used (all its processes and this one's plants) over the wall time.
/// On a 2-core machine N gateways, N plants, the broker and the learner share the same cores:
/// the `cpu_cores_used` figure and docs/benchmarks.md say so beside the times.
enum FleetLearnBench {
    static let fleetTopic = "fleet/cartpole"
    /// The learner's `train_every`: new transitions pooled over the fleet between trainings.
    /// 1,000 pooled; `$EDGEQ_BENCH_FLEET_TRAIN_EVERY` sets another value the learner reads (a
    /// number, or `N/gateway`: an experiment on the training's pace).
    static var trainEvery: String {
        guard let v = ProcessInfo.processInfo.environment["EDGEQ_BENCH_FLEET_TRAIN_EVERY"]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return "1000" }
        return v
    }
    /// The served model's goal: the mean return over `episodes` episodes.
    static let goal = 475.0
    static let episodes = 10
    /// The signing key the learner uses and the gateways trust.
    static let keyName = "fleet-bench"

    /// What one configuration measured.
    struct Measurement {
        /// `single` or `gateways<N>`.
        var name: String
        var gateways: Int
        var seconds: Double?
        var steps: Int?
        var reason: String?
        var cpuCores: Double?
        /// Fleet only: rows in the learner's fleet log, models the learner published, gateways
        /// that stored at least one of them.
        var learnerRows: Int?
        var modelsPublished: Int?
        var gatewaysWithFleetModel: Int?
    }

    static func run(_ o: FleetLearnOptions, work: URL, edgeq: String, context: BenchContext) throws -> [BenchFigure] {
        let root = Anchors.packageRoot()
        let mappingPath = root.appendingPathComponent("topics/cartpole.yaml")
        guard let text = try? String(contentsOf: mappingPath, encoding: .utf8) else {
            throw BenchError.failed("cannot read \(mappingPath.path) (run the bench from the package folder)")
        }
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        context.progress("learn: the single gateway (topics/cartpole.yaml, retraining on its own), budget \(Int(o.budgetSeconds)) s")
        let single = try configuration(name: "single", gateways: 1, fleet: false, mappingText: text, shipped: mappingPath.path,
                                       options: o, work: work.appendingPathComponent("single"), edgeq: edgeq, context: context)
        var fleets: [Measurement] = []
        for n in o.gateways {
            context.progress("learn: \(n) gateway\(n == 1 ? "" : "s") + 1 learner (train_every \(trainEvery), train_rows \(trainRows ?? "default")), budget \(Int(o.budgetSeconds)) s")
            fleets.append(try configuration(name: "gateways\(n)", gateways: n, fleet: true, mappingText: text, shipped: mappingPath.path,
                                            options: o, work: work.appendingPathComponent("gateways\(n)"), edgeq: edgeq, context: context))
        }
        return figures(single: single, fleets: fleets)
    }

    // MARK: - Figures

    static func figures(single: Measurement, fleets: [Measurement]) -> [BenchFigure] {
        let bench = "fleet"
        let anchor = "one gateway retraining on its own, measured in this run"
        var out: [BenchFigure] = []
        func add(_ m: Measurement, withAnchor: Bool) {
            let goal = m.gateways == 4 && withAnchor ? " (goal ≤ 0.4× the single gateway)" : ""
            out.append(BenchFigure(bench: bench, figure: "learn/\(m.name)/seconds_to_475", value: m.seconds, unit: "s",
                                   anchor: withAnchor ? anchor : nil, anchorValue: withAnchor ? single.seconds : nil, better: .lower,
                                   reason: m.seconds == nil ? m.reason : (withAnchor && single.seconds == nil
                                       ? "anchor not measured: \(single.reason ?? "the single gateway did not reach 475")" : nil)))
            if !goal.isEmpty { out[out.count - 1].figure += goal }
            out.append(BenchFigure(bench: bench, figure: "learn/\(m.name)/steps_to_475", value: m.steps.map(Double.init),
                                   unit: "plant transitions (all gateways)",
                                   anchor: withAnchor ? anchor : nil, anchorValue: withAnchor ? single.steps.map(Double.init) : nil,
                                   better: .lower,
                                   reason: m.steps == nil ? m.reason : (withAnchor && single.steps == nil
                                       ? "anchor not measured: \(single.reason ?? "the single gateway did not reach 475")" : nil)))
            out.append(BenchFigure(bench: bench, figure: "learn/\(m.name)/cpu_cores_used", value: m.cpuCores,
                                   unit: "cores (of 2 on this machine)", better: .lower,
                                   reason: m.cpuCores == nil ? "not measured: the processes' CPU clocks could not be read" : nil))
            if withAnchor {
                out.append(BenchFigure(bench: bench, figure: "learn/\(m.name)/learner_rows", value: m.learnerRows.map(Double.init),
                                       unit: "rows", better: .higher,
                                       reason: m.learnerRows == nil ? "not measured: the learner's fleet log could not be read" : nil))
                out.append(BenchFigure(bench: bench, figure: "learn/\(m.name)/models_published", value: m.modelsPublished.map(Double.init),
                                       unit: "models (the learner's train_every \(trainEvery), train_rows \(trainRows ?? "100000"))", better: .higher,
                                       reason: m.modelsPublished == nil ? "not measured: the learner's model store could not be read" : nil))
                out.append(BenchFigure(bench: bench, figure: "learn/\(m.name)/gateways_with_fleet_model", value: m.gatewaysWithFleetModel.map(Double.init),
                                       unit: "gateways of \(m.gateways)", better: .higher,
                                       reason: m.gatewaysWithFleetModel == nil ? "not measured: the gateways' model stores could not be read" : nil))
            }
        }
        add(single, withAnchor: false)
        for f in fleets { add(f, withAnchor: true) }
        return out
    }

    // MARK: - One configuration

    /// The mapping of fleet gateway `i`: the shipped cart-pole mapping under its own id and plant
    /// topics, without local retraining, shipping to the fleet.
    static func fleetMapping(_ text: String, gateway i: Int) throws -> String {
        let retrain = "retrain: {every_transitions: 1000, min_spacing: none}"
        guard text.contains("  id: cartpole\n"), text.contains(retrain), !text.contains("\nfleet:") else {
            throw BenchError.failed("topics/cartpole.yaml changed: the bench expects `  id: cartpole`, `\(retrain)` and no fleet section")
        }
        return text.replacingOccurrences(of: "  id: cartpole\n", with: "  id: cartpole-g\(i)\n")
            .replacingOccurrences(of: "plant/cartpole/", with: "plant/cartpole-g\(i)/")
            .replacingOccurrences(of: retrain, with: "retrain: {every_transitions: none}   # the fleet learner trains (edgeq bench fleet --parts learn)")
            + "\n# The fleet (edgeq bench fleet --parts learn): ship the log, take the learner's models.\nfleet: {topic: \(fleetTopic), interval: 250ms}\n"
    }

    static func configuration(name: String, gateways n: Int, fleet: Bool, mappingText: String, shipped: String,
                              options o: FleetLearnOptions, work: URL, edgeq: String, context: BenchContext) throws -> Measurement {
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let broker = try MosquittoBroker()
        defer { broker.stop() }
        var m = Measurement(name: name, gateways: n)

        // The gateways' mappings and data directories (the learner's key trusted in each).
        var mappings: [(path: String, map: TopicMap)] = []
        var keys: (privateKey: URL, publicKey: URL)?
        if fleet { keys = try KeyFile.generate(name: keyName, directory: work.appendingPathComponent("learner-key")) }
        for i in 1...n {
            let path: String
            if fleet {
                path = work.appendingPathComponent("cartpole-g\(i).yaml").path
                try fleetMapping(mappingText, gateway: i).write(toFile: path, atomically: true, encoding: .utf8)
            } else {
                path = shipped
            }
            do {
                mappings.append((path, try TopicMap.load(path: path)))
            } catch {
                throw BenchError.failed("cannot load \(path): \(error)")
            }
        }
        func data(_ i: Int) -> URL { work.appendingPathComponent("data-g\(i)") }
        for i in 1...n {
            try FileManager.default.createDirectory(at: data(i), withIntermediateDirectories: true)
            if let keys {
                let trusted = TrustStore.keysDirectory(dataDirectory: data(i)).appendingPathComponent("models")
                try FileManager.default.createDirectory(at: trusted, withIntermediateDirectories: true)
                try FileManager.default.copyItem(at: keys.publicKey, to: trusted.appendingPathComponent("\(keyName).pub"))
            }
        }

        // The learner (fleet only), at normal priority: it is the one that learns.
        let learnerData = work.appendingPathComponent("learner")
        var learner: ChildProcess?
        defer { _ = learner?.stop(grace: 10) }
        if let keys, let first = mappings.first {
            learner = try startLearner(edgeq: edgeq, broker: broker, data: learnerData, mapping: first.path, key: keys.privateKey.path, work: work)
        }

        var runs: [BenchGatewayRun] = []
        defer { for r in runs { r.close() } }
        for i in 1...n {
            let seed = o.seed + UInt64(i - 1)
            runs.append(try BenchGatewayRun(label: "\(name) g\(i) (\(mappings[i - 1].map.gateway.id), seed \(seed))", plant: .cartpole, seed: seed,
                                            steps: nil, map: mappings[i - 1].map, mappingPath: mappings[i - 1].path, executable: edgeq,
                                            broker: broker, data: data(i), topicBase: fleet ? "plant/cartpole-g\(i)" : nil,
                                            pauseOnRetrain: !fleet, followWindows: true,
                                            clientID: "bench-learn-\(name)-g\(i)", context: context))
        }

        // CPU clocks: every process of the configuration, and this one (the plants).
        let pids = runs.map(\.gateway.pid) + (learner.map { [$0.pid] } ?? [])
        func cpu() -> Double? {
            var total = 0.0
            for pid in pids + [getpid()] {
                guard let s = MQTTBench.processCPUSeconds(pid) else { return nil }
                total += s
            }
            return total
        }
        // Plant time stands still while the learner trains, as the single gateway's stands still
        // while it retrains (`Simulator.pause`): the plants run ~20× faster than a real cart-pole,
        // and a training of seconds is a fraction of a step on a real plant.
        let learnerStatus = try learner.map { _ in try FleetBench.client(broker, subscribe: "\(fleetTopic)/learner/l1/status") }
        defer { learnerStatus?.stop() }
        var training = false
        var trainingSince = Date()
        var trainingSeconds = 0.0
        func followLearner() {
            guard let learnerStatus else { return }
            while let msg = learnerStatus.receive(timeout: 0) {
                let o = (try? JSONSerialization.jsonObject(with: Data(msg.payload))) as? [String: Any]
                let running = (o?["training"] as? [String: Any])?["running"] as? Bool ?? false
                guard running != training else { continue }
                training = running
                for r in runs { r.sim.pause(running) }
                if running { trainingSince = Date() } else { trainingSeconds += Date().timeIntervalSince(trainingSince) }
            }
        }
        let cpu0 = cpu()
        let t0 = Date()
        for r in runs { r.startPlant() }
        var reachedAt: [Double?] = Array(repeating: nil, count: n)
        var lastProgress = Date()
        var ended: String?
        while true {
            followLearner()
            for (i, r) in runs.enumerated() {
                if try !r.poll(timeout: 0.01), ended == nil {
                    ended = "gateway \(i + 1)'s run ended early: \(r.outcome.notes.last ?? "the plant finished")"
                }
            }
            for (i, r) in runs.enumerated() where reachedAt[i] == nil {
                reachedAt[i] = reached(r).map { $0.timeIntervalSince(t0) }
            }
            if reachedAt.allSatisfy({ $0 != nil }) {
                m.seconds = reachedAt.compactMap { $0 }.max()
                m.steps = runs.reduce(0) { $0 + $1.sim.stepsDone }
                break
            }
            let elapsed = Date().timeIntervalSince(t0)
            if ended != nil || elapsed > o.budgetSeconds { break }
            if Date().timeIntervalSince(lastProgress) > 10 {
                lastProgress = Date()
                context.progress("\(name): \(Int(elapsed)) s, " + runs.enumerated().map { i, r in
                    let best = bestMean(r).map { String(format: "%.1f", $0) } ?? "—"
                    return "g\(i + 1) step \(r.sim.stepsDone), served \(r.status.flatMap { ($0["model"] as? [String: Any])?["version"] }.map { "v\($0)" } ?? "none"), last-10 served mean \(best)"
                        + (reachedAt[i].map { String(format: " (reached at %.0f s)", $0) } ?? "")
                }.joined(separator: "; "))
            }
        }
        let wall = Date().timeIntervalSince(t0)
        if training { trainingSeconds += Date().timeIntervalSince(trainingSince) }
        for r in runs { r.sim.pause(false) }
        if fleet { context.progress(String(format: "%@: the plants stood still %.0f s of %.0f s while the learner trained", name, trainingSeconds, wall)) }
        if let cpu0, let cpu1 = cpu(), wall > 0 { m.cpuCores = (cpu1 - cpu0) / wall }
        if m.seconds == nil {
            let why = ended ?? "the budget of \(Int(o.budgetSeconds)) s ran out"
            let where_ = runs.enumerated().filter { reachedAt[$0.offset] == nil }.map { i, r in
                "g\(i + 1): \(servedEpisodes(r).count) served episodes, best 10-episode served mean \(bestMean(r).map { String(format: "%.1f", $0) } ?? "none"), \(r.sim.stepsDone) steps"
            }.joined(separator: "; ")
            m.reason = "not measured: \(why) before every gateway's served model reached a 10-episode mean of \(Int(goal)) (\(where_)); "
                + "\(n) gateway\(n == 1 ? "" : "s")\(fleet ? ", the learner" : ""), the plants and the broker share this machine's \(ProcessInfo.processInfo.activeProcessorCount) cores"
        }
        for r in runs { r.stopPlant() }
        var outcomes: [GeneralizeBench.Outcome] = []
        for r in runs { outcomes.append(try r.finish()) }
        for (i, outcome) in outcomes.enumerated() {
            context.progress("\(name) g\(i + 1): \(GeneralizeBench.summary(outcome))")
        }

        if fleet {
            let stored = try? FleetLog(dataDirectory: learnerData.path).gateways()
            m.learnerRows = stored.map { $0.reduce(0) { $0 + Int($1.rows) } }
            let published = Set((try? ModelStore(dataDirectory: learnerData).versions()) ?? [])
            m.modelsPublished = published.count
            m.gatewaysWithFleetModel = (1...n).filter { i in
                !published.isDisjoint(with: (try? ModelStore(dataDirectory: data(i)).versions()) ?? [])
            }.count
            context.progress("\(name): the learner stored \(m.learnerRows.map(String.init) ?? "?") rows and published \(published.count) models; "
                             + "\(m.gatewaysWithFleetModel ?? 0) of \(n) gateways stored one")
        }
        context.progress("\(name): " + (m.seconds.map { String(format: "every gateway ≥ %.0f after %.1f s, %d transitions", goal, $0, m.steps ?? 0) } ?? (m.reason ?? ""))
                         + (m.cpuCores.map { String(format: "; %.2f cores busy on average", $0) } ?? ""))
        return m
    }

    /// The episodes a served model decided wholly, in order, with the wall time each arrived.
    static func servedEpisodes(_ r: BenchGatewayRun) -> [(window: EvaluationWindow, at: Date)] {
        let served = Set(GeneralizeBench.servedWindows(r.liveWindows.map(\.window), trialEvents: r.outcome.trialEvents,
                                                       servedFrom: r.servedFrom).map(\.index))
        return r.liveWindows.filter { served.contains($0.window.index) }
    }

    /// When the last `episodes` served episodes first averaged ≥ `goal`; nil while they have not.
    static func reached(_ r: BenchGatewayRun) -> Date? {
        let e = servedEpisodes(r)
        guard e.count >= episodes else { return nil }
        for end in episodes...e.count {
            let mean = e[(end - episodes)..<end].reduce(0) { $0 + $1.window.realReturn } / Double(episodes)
            if mean >= goal { return e[end - 1].at }
        }
        return nil
    }

    /// The best mean of `episodes` consecutive served episodes so far (nil with fewer).
    static func bestMean(_ r: BenchGatewayRun) -> Double? {
        let e = servedEpisodes(r)
        guard e.count >= episodes else { return nil }
        return (episodes...e.count).map { end in
            e[(end - episodes)..<end].reduce(0) { $0 + $1.window.realReturn } / Double(episodes)
        }.max()
    }

    /// The learner's `train_rows` when `$EDGEQ_BENCH_FLEET_TRAIN_ROWS` sets it (a number, or
    /// `all`): an experiment on the training window; nil: the learner's default (100,000).
    static var trainRows: String? {
        guard let v = ProcessInfo.processInfo.environment["EDGEQ_BENCH_FLEET_TRAIN_ROWS"]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
        return v
    }

    /// Starts `edgeq learner` training on the fleet log with `mapping`'s learning section every
    /// `trainEvery` transitions, signing with `key`; waits for its online status (60 s).
    static func startLearner(edgeq: String, broker: MosquittoBroker, data: URL, mapping: String, key: String, work: URL) throws -> ChildProcess {
        let file = work.appendingPathComponent("learner.yaml").path
        try """
            fleet: \(fleetTopic)
            group: bench
            id: l1
            status_interval: 100ms
            mapping: \(mapping)
            key: \(key)
            train_every: \(trainEvery)
            \(trainRows.map { "train_rows: \($0)" } ?? "")

            """.write(toFile: file, atomically: true, encoding: .utf8)
        let watcher = try FleetBench.client(broker, subscribe: "\(fleetTopic)/learner/l1/status")
        defer { watcher.stop() }
        let logPath = work.appendingPathComponent("learner.log").path
        let learner = try ChildProcess(edgeq, ["learner", "--config", file, "--broker", broker.url, "--data", data.path, "--log-level", "info"],
                                       stdoutPath: logPath, stderrPath: logPath)
        return try FleetBench.awaitOnline(learner, watcher: watcher, work: work)
    }
}
