import EdgeQCore
import EdgeQLog
@testable import EdgeQGateway
import EdgeQMQTT
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Testing

/// The switchback trial and the control-group guard in a running gateway, against a real broker,
/// real model files and a closed-loop plant in the test (`ClosedLoop`): the trial promotes a
/// candidate built to be better, stops early on one built to be worse, waits in shadow mode;
/// the guard trips on a collapsing episodic model and not on one equivalent to its control
/// group under a changing shared disturbance.
@Suite struct TrialGatewayTests {
    /// Trial blocks of 4 ticks, scored whole, a verdict from the second pair on, within 20 pairs;
    /// no control group after a promotion (these tests are about the trial); no stop-loss (a
    /// block of 4 ticks is one tick of the candidate built to be worse: see
    /// `aCandidateThatWrecksThePlantIsStoppedWithinItsFirstBlockAndHandsBack`).
    static let trial = """
          promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 2, max_pairs: 20}, control_share: 0}
        """

    /// The plant of the trial tests: after `a0` the next x is 0.5, after `a1` it is 4 (reward
    /// −|x|), each with a seeded noise of ±0.25, so that block returns spread.
    static func noisyPlant(seed: UInt64) -> (ClosedLoop, Int) -> Void {
        var rng = SeededGenerator(seed: seed)
        return { p, action in
            p.x = (action == 0 ? 0.5 : 4) + (rng.nextUnit() - 0.5) * 0.5
            p.y = sin(Double(p.step) * 0.3)
        }
    }

    /// An incumbent that picks a0 or a1 at random (seeded): between the two candidates.
    static func randomIncumbent(seed: UInt64) -> (ClosedLoop) -> Int {
        var rng = SeededGenerator(seed: seed)
        return { _ in Int(rng.next() & 1) }
    }

    /// The trial events (`phase` "trial") on `<prefix>/retrain` seen so far, with `event`.
    func trialEvents(_ h: GatewayHarness, _ event: String) -> [[String: Any]] {
        h.received.filter { $0.topic == "edgeq/t1/retrain" }.map(GatewayHarness.json)
            .filter { $0["phase"] as? String == "trial" && $0["event"] as? String == event }
    }

    /// The verdict file beside the model.
    func trialFile(_ h: GatewayHarness, _ version: Int) throws -> [String: Any] {
        let url = try ModelStore(dataDirectory: h.dir.url).trialURL(version)
        return try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    func startTrial(_ h: GatewayHarness, _ version: Int) throws {
        try h.gateway.control.sync { try h.gateway.startTrial(version) }
    }

    /// The restart tests' trial: at least 8 pairs of 4-tick blocks, no control group.
    static let restartTrial = testMapping(extraLearning: """
          promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 8, max_pairs: 20, futility: none}, control_share: 0}
        """)

    /// A gateway on `broker` with `yaml`, put in control mode.
    func gatewayInControl(_ yaml: String, on broker: MosquittoBroker) throws -> GatewayHarness {
        let h = try GatewayHarness(yaml: yaml, broker: broker)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        return h
    }

    /// Runs the trial tests' plant (seeds 11, 12) until the running trial's record `url` holds
    /// `blocks` blocks (at most 200 ticks; the record is written on the control queue after a
    /// block ends, so each tick waits up to 0.3 s for it); returns the blocks recorded.
    func runUntilRecorded(_ h: GatewayHarness, _ url: URL, blocks: Int) throws -> Int {
        func recorded() -> Int {
            guard let data = try? Data(contentsOf: url), let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return 0 }
            return (o["blocks"] as? [Any])?.count ?? 0
        }
        let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 11), dynamics: Self.noisyPlant(seed: 12))
        try plant.run(200) {
            let deadline = Date().addingTimeInterval(0.3)
            while recorded() < blocks && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            return recorded() >= blocks
        }
        return recorded()
    }

    /// A served model favouring a0 (seed 1), control mode, and a candidate favouring
    /// `candidateFavouring` (seed 2) in its trial against it: (served, candidate).
    func trialAgainstAServedModel(_ h: GatewayHarness, candidateFavouring: Int) throws -> (served: Int, candidate: Int) {
        let served = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: 1)
        #expect(try h.ask("promote", "{\"version\":\(served)}")["ok"] as? Bool == true)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        let candidate = try storeModel(favouring: candidateFavouring, for: h.map, in: h.dir.url, seed: 2)
        try startTrial(h, candidate)
        return (served, candidate)
    }

    @Test func theTrialPromotesACandidateBuiltToBeBetterThanTheIncumbent() throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.trial))
        defer { h.stop() }
        // Control mode without a served model (`promotion: trial`): the incumbent is in charge.
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        let candidate = try storeModel(favouring: 0, for: h.map, in: h.dir.url)
        try startTrial(h, candidate)
        let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 11), dynamics: Self.noisyPlant(seed: 12))
        try plant.run(until: { !trialEvents(h, "verdict").isEmpty })
        let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(plant.acted.count) ticks")

        let started = try #require(trialEvents(h, "started").first)
        #expect(started["version"] as? Int == candidate && started["reference"] as? String == "incumbent", "\(started)")
        #expect(started["waiting_for_control"] as? Bool == false, "\(started)")
        // Both arms ran the plant: the candidate through the gateway, the incumbent by itself.
        #expect(plant.acted.contains(.gateway(0)))
        #expect(plant.acted.contains { !$0.isGateway })
        #expect(!plant.acted.contains(.gateway(1)))
        #expect(!trialEvents(h, "progress").isEmpty)

        #expect(verdict["verdict"] as? String == "promote", "\(verdict)")
        #expect(verdict["promoted"] as? Bool == true, "\(verdict)")
        #expect(verdict["version"] as? Int == candidate && verdict["reference"] as? String == "incumbent", "\(verdict)")
        let pairs = try #require(verdict["pairs"] as? Int)
        #expect(pairs >= 2 && pairs < 20, "\(verdict)")
        #expect((verdict["mean_difference"] as? Double ?? 0) > 0, "\(verdict)")
        #expect((verdict["ci_low"] as? Double ?? 0) > 0, "the interval must lie above 0 for a promotion: \(verdict)")
        #expect(verdict["cost"] as? Double == 0, "\(verdict)")
        // The burn-ins' figures (TrialTests.theSwitchingCostIsWhatTheBurnInsLostAtAHandOver):
        // with `burn_in: 0` no tick is a burn-in, so nothing is counted.
        #expect(verdict["switches"] as? Int == 0 && verdict["switching_cost"] as? Double == 0, "\(verdict)")
        #expect(verdict["switch_loss_candidate"] is NSNull && verdict["switch_loss_reference"] is NSNull, "\(verdict)")

        let file = try trialFile(h, candidate)
        #expect(file["verdict"] as? String == "promote" && file["promoted"] as? Bool == true, "\(file)")
        #expect(file["pairs"] as? Int == pairs, "\(file)")
        #expect(h.gateway.servedVersion == candidate)
        #expect(try ModelStore(dataDirectory: h.dir.url).current() == candidate)
        #expect(h.metric(#"edgeq_trial_verdicts_total{verdict="promote"}"#) == 1)
        #expect(h.metric(#"edgeq_trial_verdicts_total{verdict="reject"}"#) == 0)
        #expect(h.metric("edgeq_trial_active") == 0)
        #expect(h.metric("edgeq_trial_pairs") == Double(pairs))
        #expect(h.metric("edgeq_trial_mean_difference") > 0)
        // Served now (no control group: share 0): every tick is the candidate's a0.
        let before = plant.acted.count
        try plant.run(12)
        #expect(plant.acted.dropFirst(before).allSatisfy { $0 == .gateway(0) }, "\(plant.acted.dropFirst(before))")
    }

    /// A second trial borrows the first's estimate of the pairs' noise (its `sd` over its pairs
    /// in `trial.json`, same blocks, no adjustment): a candidate clearly worse than the incumbent
    /// (a1, −3.5 a tick) is rejected at its first pair, not at `min_pairs` (4); its verdict,
    /// `trial.json` and progress name the trial the noise came from, and the reason says "early
    /// stop". The first trial (a candidate that plays the incumbent's a0) ran 4–6 pairs. With
    /// `early_stop: false` the same candidate runs its `min_pairs` and borrows nothing.
    @Test(arguments: [true, false]) func aSecondTrialBorrowsTheFirstsNoiseAndStopsAClearlyWorseCandidateAtItsFirstPair(earlyStop: Bool) throws {
        let yaml = testMapping(extraLearning: """
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 4, max_pairs: 6, early_stop: \(earlyStop)}, control_share: 0}
            """)
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        let plant = ClosedLoop(h, incumbent: { _ in 0 }, dynamics: Self.noisyPlant(seed: 31))
        let equal = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: 1)
        try startTrial(h, equal)
        try plant.run(until: { !trialEvents(h, "verdict").isEmpty })
        let first = try #require(trialEvents(h, "verdict").first, "no verdict in \(plant.acted.count) ticks")
        #expect(first["verdict"] as? String != "promote" && (4...6).contains(first["pairs"] as? Int ?? 0), "\(first)")
        #expect(first["noise_from_trial"] is NSNull, "a first trial has no earlier one: \(first)")
        let sd = try #require(first["sd"] as? Double, "\(first)")
        let pairs = try #require(first["pairs"] as? Int)
        #expect(try trialFile(h, equal)["block"] as? Int == 4 && trialFile(h, equal)["burn_in"] as? Int == 0)

        let worse = try storeModel(favouring: 1, for: h.map, in: h.dir.url, seed: 2)
        try startTrial(h, worse)
        let ticksBefore = plant.acted.count
        try plant.run(until: { trialEvents(h, "verdict").count == 2 })
        let verdict = try #require(trialEvents(h, "verdict").dropFirst().first, "no verdict in \(plant.acted.count - ticksBefore) ticks")
        guard earlyStop else {
            #expect(verdict["version"] as? Int == worse && verdict["verdict"] as? String == "reject" && verdict["pairs"] as? Int == 4, "\(verdict)")
            #expect(verdict["noise_from_trial"] is NSNull && (verdict["reason"] as? String)?.hasPrefix("early stop") != true, "\(verdict)")
            return
        }
        #expect(verdict["version"] as? Int == worse && verdict["verdict"] as? String == "reject" && verdict["pairs"] as? Int == 1, "\(verdict)")
        #expect(verdict["ticks"] as? Int == 8, "one pair of 4-tick blocks: \(verdict)")
        #expect((verdict["reason"] as? String)?.hasPrefix("early stop") == true, "\(verdict)")
        let borrowed = try #require(verdict["noise_from_trial"] as? [String: Any], "\(verdict)")
        #expect(borrowed["version"] as? String == "v\(equal)" && borrowed["pairs"] as? Int == pairs, "\(borrowed)")
        #expect(abs((borrowed["sd"] as? Double ?? 0) - sd) <= 1e-9 * sd, "\(borrowed) against the first trial's sd \(sd)")
        #expect((verdict["early_stop_high"] as? Double ?? 0) < 0, "\(verdict)")
        let progress = try #require(trialEvents(h, "progress").last { $0["version"] as? Int == worse }, "no progress event of the second trial")
        #expect((progress["noise_from_trial"] as? [String: Any])?["version"] as? String == "v\(equal)", "\(progress)")
        let file = try trialFile(h, worse)
        #expect(file["verdict"] as? String == "reject" && (file["noise_from_trial"] as? [String: Any])?["version"] as? String == "v\(equal)", "\(file)")
        #expect(h.gateway.servedVersion == nil)
    }

    /// Which earlier trial the early stop borrows from: of the stored `trial.json`s with the
    /// mapping's blocks and burn-in, the trial's adjustment and at least `min_pairs` pairs, the
    /// widest spread — not the newest, not one with other blocks, too few pairs or another
    /// adjustment, whatever their spread.
    @Test func theEarlyStopBorrowsTheWidestSpreadOfTheTrialsThatFit() throws {
        let yaml = testMapping(extraLearning: """
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 4, max_pairs: 6}, control_share: 0}
            """)
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        let store = try ModelStore(dataDirectory: h.dir.url)
        // (sd, pairs, block, burn-in, adjusted) of five earlier trials, oldest first.
        let earlier: [(Double, Int, Int, Int, Bool)] = [(0.5, 10, 4, 0, false), (3, 5, 4, 0, false), (9, 20, 8, 0, false),
                                                        (20, 3, 4, 0, false), (30, 12, 4, 0, true), (1, 30, 4, 0, false)]
        var versions: [Int] = []
        for (k, e) in earlier.enumerated() {
            let v = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: UInt64(10 + k))
            versions.append(v)
            try Data(#"{"version":\#(v),"reference":"incumbent","verdict":"reject","sd":\#(e.0),"pairs":\#(e.1),"block":\#(e.2),"burn_in":\#(e.3),"adjusted":\#(e.4)}"#.utf8)
                .write(to: store.trialURL(v))
        }
        let candidate = try storeModel(favouring: 1, for: h.map, in: h.dir.url, seed: 2)
        try startTrial(h, candidate)
        let plant = ClosedLoop(h, incumbent: { _ in 0 }, dynamics: Self.noisyPlant(seed: 41))
        try plant.run(until: { trialEvents(h, "progress").contains { $0["version"] as? Int == candidate } })
        let progress = try #require(trialEvents(h, "progress").first { $0["version"] as? Int == candidate })
        let borrowed = try #require(progress["noise_from_trial"] as? [String: Any], "\(progress)")
        #expect(borrowed["version"] as? String == "v\(versions[1])" && borrowed["sd"] as? Double == 3 && borrowed["pairs"] as? Int == 5, "\(borrowed)")
    }

    /// The trial records the range of each exogenous signal it saw (`trial.json` `conditions`);
    /// once its candidate serves, a value beyond that range (by more than a tenth of it) is a
    /// novel condition: one `guard_watch` event, the range grows to it, and the control-group
    /// guard runs `novelty_pairs` cycles of two blocks — the control group (here the incumbent)
    /// gets every other block instead of one in ten. The same for a spell: y held at −0.95, a
    /// value the trial saw, while its mean over a block (the trial's within about ±0.7) goes
    /// beyond the mean's range — the cold spell of the thermal zone, whose every hour was seen.
    @Test(arguments: [false, true]) func aNovelConditionGivesTheControlGroupEveryOtherBlock(spell: Bool) throws {
        let yaml = testMapping(extraLearning: """
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 2, max_pairs: 20}, control_share: 0.1, novelty_pairs: 3}
            """).replacingOccurrences(of: "json: y, range: [-10, 10]}", with: "json: y, range: [-10, 10], role: exogenous}")
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        let candidate = try storeModel(favouring: 0, for: h.map, in: h.dir.url)
        try startTrial(h, candidate)
        var novel = false
        var rng = SeededGenerator(seed: 12)
        let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 11), dynamics: { p, action in
            p.x = (action == 0 ? 0.5 : 4) + (rng.nextUnit() - 0.5) * 0.5
            p.y = novel ? (spell ? -0.95 : 5) : sin(Double(p.step) * 0.3)
        })
        try plant.run(until: { !trialEvents(h, "verdict").isEmpty })
        let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(plant.acted.count) ticks")
        #expect(verdict["promoted"] as? Bool == true, "\(verdict)")
        let file = try trialFile(h, candidate)
        let y = try #require((file["conditions"] as? [String: Any])?["y"] as? [Double], "trial.json has no conditions for y: \(file)")
        #expect(y.count == 2 && y[0] >= -1 && y[1] <= 1 && y[0] < y[1], "\(y)")
        let meanY = try #require((file["conditions"] as? [String: Any])?["mean(y)"] as? [Double], "\(file)")
        #expect(meanY.count == 2 && meanY[0] > y[0] && meanY[1] < y[1], "a mean over a block spans less: \(meanY) within \(y)")
        #expect((file["conditions"] as? [String: Any])?["x"] == nil, "x has no role: \(file)")

        func guardWatch() -> [[String: Any]] {
            h.received.filter { $0.topic == "edgeq/t1/retrain" }.map(GatewayHarness.json).filter { $0["phase"] as? String == "guard_watch" }
        }
        func incumbentTicks(_ n: Int) throws -> Int {
            let before = plant.acted.count
            try plant.run(n)
            return plant.acted.dropFirst(before).filter { !$0.isGateway }.count
        }
        // Inside the trial's range: one control block in ten (of 4 ticks; 8 when 40 ticks span
        // two cycles' control blocks).
        let steady = try incumbentTicks(40)
        _ = h.drain(0.3)
        #expect(steady <= 8 && guardWatch().isEmpty, "\(steady) incumbent ticks, \(guardWatch())")

        novel = true
        let watched = try incumbentTicks(48)
        _ = h.drain(0.3)
        #expect(watched >= 12, "\(watched) incumbent ticks in the 48 after y left the trial's range: \(plant.acted.suffix(48))")
        // One event: y's (its mean over a block climbs after it while the probation waits or
        // runs, which says nothing more).
        let events = guardWatch()
        #expect(events.count == 1, "one event while y stays at 5: \(events)")
        let e = try #require(events.first)
        let signal = spell ? "mean(y)" : "y"
        #expect(e["signal"] as? String == signal && e["probation_pairs"] as? Int == 3 && e["version"] as? Int == candidate, "\(e)")
        if spell {
            #expect((e["value"] as? Double ?? 0) < meanY[0] && (e["value"] as? Double ?? -1) > -0.95, "\(e)")
        } else {
            #expect(e["value"] as? Double == 5 && (e["range"] as? [Double])?.last == 5, "\(e)")
        }
        #expect(h.metric("edgeq_guard_novel_conditions_total") == 1)
        let status = try h.waitFor(topic: "edgeq/t1/status", timeout: 5) {
            (GatewayHarness.json($0)["guard"] as? [String: Any])?["novel_conditions"] as? Int == 1
        }
        let g = GatewayHarness.json(status)["guard"] as? [String: Any] ?? [:]
        let grown = try #require((g["proven_conditions"] as? [String: Any])?[signal] as? [Double], "\(g)")
        #expect((spell ? grown[0] < meanY[0] : grown[1] == 5) && g["novelty_pairs"] as? Int == 3, "\(g)")
    }

    /// A running trial survives a restart: its blocks are written beside the candidate after
    /// every block (`models/vN/trial-running.json`); the restarted gateway (another run seed)
    /// starts the trial again with the record's seed and goes on from its complete pairs
    /// (`resumed` event), so the verdict counts the pairs from before the restart; the record
    /// is removed at the verdict.
    @Test func aRunningTrialGoesOnAfterARestart() throws {
        let yaml = Self.restartTrial
        let broker = try MosquittoBroker()
        let first = try gatewayInControl(yaml, on: broker)
        defer { first.stop() }  // keeps its data directory alive until the end
        let candidate = try storeModel(favouring: 0, for: first.map, in: first.dir.url)
        try startTrial(first, candidate)
        let url = try ModelStore(dataDirectory: first.dir.url).runningTrialURL(candidate)
        let blocks = try runUntilRecorded(first, url, blocks: 7)
        #expect(blocks == 7 && trialEvents(first, "verdict").isEmpty, "\(blocks) blocks recorded")
        first.stop()

        let h = try GatewayHarness(yaml: yaml, broker: broker) { $0.dataDirectory = first.dir.url.path }
        defer { h.stop() }
        let after = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 21), dynamics: Self.noisyPlant(seed: 22))
        try after.run(until: { !trialEvents(h, "resumed").isEmpty }, atMost: 60)
        let resumed = try #require(trialEvents(h, "resumed").first, "no resumed event")
        // 7 blocks: 3 complete pairs; the 4th pair's first block runs again.
        #expect(resumed["version"] as? Int == candidate && resumed["pairs"] as? Int == 3 && resumed["reference"] as? String == "incumbent", "\(resumed)")
        try after.run(until: { !trialEvents(h, "verdict").isEmpty })
        let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(after.acted.count) ticks after the restart")
        let pairs = try #require(verdict["pairs"] as? Int)
        #expect(verdict["verdict"] as? String == "promote" && pairs >= 8, "\(verdict)")
        // Its ticks are every tick of its pairs, the 24 of the 3 pairs from before the restart
        // included (the half pair's block that ran before it is not counted: it ran again).
        #expect(verdict["ticks"] as? Int == pairs * 8, "\(verdict)")
        #expect(!FileManager.default.fileExists(atPath: url.path), "the record outlived the verdict")
        #expect(h.gateway.servedVersion == candidate)
    }

    /// No candidate owed a trial is forgotten at a restart. Each is marked beside its model
    /// (`models/vN/trial-pending.json`) until its trial has a block on record: the one waiting for
    /// the running trial (a newer one replaces it, mark and all), and the running one before its
    /// first block ends. After the restart the running trial is resumed from its record — or,
    /// with no block on record, begins again —, the waiting candidate is queued again (`queued`
    /// event) and its trial begins at the running one's verdict, against the controller in
    /// charge then.
    @Test(arguments: [true, false]) func candidatesOwedATrialAreNotForgottenAtARestart(blocksBeforeTheStop: Bool) throws {
        let yaml = Self.restartTrial
        let broker = try MosquittoBroker()
        let first = try gatewayInControl(yaml, on: broker)
        defer { first.stop() }  // keeps its data directory alive until the end
        let store = try ModelStore(dataDirectory: first.dir.url)
        func marked(_ v: Int) -> Bool? {
            (try? Data(contentsOf: store.pendingTrialURL(v))).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }?["began"] as? Bool
        }
        let running = try storeModel(favouring: 0, for: first.map, in: first.dir.url)
        try startTrial(first, running)
        #expect(marked(running) == true, "the running trial's candidate is not marked before its first block")
        let replaced = try storeModel(favouring: 1, for: first.map, in: first.dir.url, seed: 4)
        try startTrial(first, replaced)
        #expect(marked(replaced) == false)
        let waiting = try storeModel(favouring: 1, for: first.map, in: first.dir.url, seed: 5)
        try startTrial(first, waiting)
        #expect(marked(waiting) == false && marked(replaced) == nil, "the replaced candidate is still marked")
        let queuedBefore = GatewayHarness.json(try first.waitFor(topic: "edgeq/t1/retrain") {
            GatewayHarness.json($0)["event"] as? String == "queued" && GatewayHarness.json($0)["version"] as? Int == waiting
        })
        #expect(queuedBefore["replaces"] as? Int == replaced, "\(queuedBefore)")
        let record = store.runningTrialURL(running)
        if blocksBeforeTheStop {
            #expect(try runUntilRecorded(first, record, blocks: 1) >= 1 && trialEvents(first, "verdict").isEmpty)
            // The mark goes after the record is durable (on the control queue, a folder fsync
            // later): the record can be seen a moment before the mark is gone.
            #expect(eventually(timeout: 5) { marked(running) == nil }, "the mark outlived the trial's first record")
        } else {
            #expect(!FileManager.default.fileExists(atPath: record.path))
        }
        first.stop()

        let h = try GatewayHarness(yaml: yaml, broker: broker) { $0.dataDirectory = first.dir.url.path }
        defer { h.stop() }
        let after = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 21), dynamics: Self.noisyPlant(seed: 22))
        func started(_ v: Int) -> [String: Any]? { trialEvents(h, "started").first { $0["version"] as? Int == v } }
        try after.run(until: { started(running) != nil && !trialEvents(h, "queued").isEmpty }, atMost: 60)
        let queued = try #require(trialEvents(h, "queued").first, "the waiting candidate was not queued again")
        #expect(queued["version"] as? Int == waiting, "\(queued)")
        #expect(started(running)?["reference"] as? String == "incumbent")
        if blocksBeforeTheStop {
            try after.run(until: { !trialEvents(h, "resumed").isEmpty }, atMost: 60)
            #expect(trialEvents(h, "resumed").first?["version"] as? Int == running)
        }
        #expect(started(waiting) == nil, "the waiting candidate's trial began before the running one was decided")
        try after.run(until: { started(waiting) != nil })
        let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(after.acted.count) ticks after the restart")
        #expect(verdict["version"] as? Int == running && verdict["verdict"] as? String == "promote", "\(verdict)")
        let next = try #require(started(waiting), "the waiting candidate's trial did not begin after the verdict")
        #expect(next["reference"] as? String == "v\(running)", "\(next)")
        if !blocksBeforeTheStop { #expect(trialEvents(h, "resumed").isEmpty) }
        #expect(started(replaced) == nil)
        #expect(marked(running) == nil && marked(replaced) == nil)
        #expect(marked(waiting) == true, "the waiting candidate's begun trial is not marked before its first block")
    }

    /// `{{model}}` in an action's payload names the model that chose each command: during a
    /// trial against the served model, the candidate's commands carry the candidate's version and
    /// the served model's its own (the plant can attribute every step; the simulators' evaluation
    /// does).
    @Test func eachCommandNamesTheModelThatChoseIt() throws {
        let yaml = testMapping(extraLearning: Self.trial).replacingOccurrences(of: #"'{"a":{{value}},"step":{{step}}}'"#,
                                                                             with: #"'{"a":{{value}},"step":{{step}},"model":{{model}}}'"#)
        #expect(yaml.contains("{{model}}"))
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        let (served, candidate) = try trialAgainstAServedModel(h, candidateFavouring: 1)
        let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 11), dynamics: Self.noisyPlant(seed: 12))
        try plant.run(40)
        _ = h.drain(0.3)
        let commands = h.received.filter { $0.topic == "plant/t/cmd" }.map(GatewayHarness.json).filter { $0["model"] != nil }
        let byAction = Dictionary(grouping: commands) { $0["a"] as? Int ?? -1 }
        #expect((byAction[0] ?? []).count >= 8 && (byAction[1] ?? []).count >= 8, "\(commands.count) commands")
        // The served model chooses a0, the candidate a1 (their built-in preferences).
        #expect((byAction[0] ?? []).allSatisfy { $0["model"] as? Int == served }, "\(byAction[0] ?? [])")
        #expect((byAction[1] ?? []).allSatisfy { $0["model"] as? Int == candidate }, "\(byAction[1] ?? [])")
    }

    @Test func theTrialStopsEarlyOnACandidateBuiltToBeWorseThanTheServedModel() throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.trial))
        defer { h.stop() }
        let (served, candidate) = try trialAgainstAServedModel(h, candidateFavouring: 1)
        let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 21), dynamics: Self.noisyPlant(seed: 22))
        try plant.run(until: { !trialEvents(h, "verdict").isEmpty })
        let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(plant.acted.count) ticks")
        let started = try #require(trialEvents(h, "started").first)
        #expect(started["reference"] as? String == "v\(served)", "\(started)")
        // The gateway ran both arms: the served model (a0) and the candidate (a1).
        #expect(plant.acted.contains(.gateway(0)) && plant.acted.contains(.gateway(1)))

        #expect(verdict["verdict"] as? String == "reject", "\(verdict)")
        #expect(verdict["promoted"] as? Bool == false, "\(verdict)")
        // Stopped at once when worse with the confidence: well before the budget of 20 pairs.
        let pairs = try #require(verdict["pairs"] as? Int)
        #expect(pairs >= 2 && pairs < 20, "\(verdict)")
        #expect((verdict["mean_difference"] as? Double ?? 0) < 0, "\(verdict)")
        #expect((verdict["stop_high"] as? Double ?? 0) < 0, "the stop's bound must lie below 0 for a rejection: \(verdict)")
        #expect((verdict["cost"] as? Double ?? 0) > 0, "\(verdict)")
        let file = try trialFile(h, candidate)
        #expect(file["verdict"] as? String == "reject" && file["promoted"] as? Bool == false, "\(file)")
        #expect(h.gateway.servedVersion == served)
        #expect(try ModelStore(dataDirectory: h.dir.url).current() == served)
        #expect(h.metric(#"edgeq_trial_verdicts_total{verdict="reject"}"#) == 1)
        #expect(h.metric(#"edgeq_trial_verdicts_total{verdict="promote"}"#) == 0)
        #expect(h.metric("edgeq_trial_active") == 0)
        #expect(h.metric("edgeq_trial_mean_difference") < 0)
        // The trial is over: the candidate's a1 is never applied again.
        let before = plant.acted.count
        try plant.run(12)
        #expect(plant.acted.dropFirst(before).allSatisfy { $0 == .gateway(0) }, "\(plant.acted.dropFirst(before))")
    }

    /// The stop-loss (`promotion.trial.stop_loss`, default 0.5): a candidate that costs the plant
    /// eight times what the served model does a tick is stopped a few ticks into its first block
    /// — against the trial's reference block when that ran first, else against the served
    /// model's rate over the ticks before the trial (raw rewards, twice the share; twice again
    /// here, where no trial has measured the pairs' spread yet) — rejected
    /// with what the stop-loss saw (in the verdict, the trial's file and the reason), and the
    /// served model acts from the next tick. Both ways: a gateway seed whose trial draws the
    /// candidate's block first, and one whose trial draws the reference's first.
    @Test(arguments: [true, false])
    func aCandidateThatWrecksThePlantIsStoppedWithinItsFirstBlockAndHandsBack(candidateFirst: Bool) throws {
        let yaml = testMapping(extraLearning: """
              promotion: {policy: trial, min_agreement: 0, trial: {block: 40, burn_in: 0, min_pairs: 4, max_pairs: 20, early_stop: false}, control_share: 0}
            """)
        let config = try TopicMap.parse(yaml: yaml, file: "test.yaml").learning.trial
        // Models 1 (served) and 2 (the candidate) of a fresh store.
        let seed = try #require(try (UInt64(1)...64).first {
            try SwitchbackTrial(config: config, seed: GatewaySeeds.trial($0, candidate: 2, reference: 1)).arm == (candidateFirst ? .candidate : .reference)
        })
        let h = try GatewayHarness(yaml: yaml) { $0.seed = seed }
        defer { h.stop() }
        let served = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: 1)
        #expect(served == 1)
        #expect(try h.ask("promote", "{\"version\":\(served)}")["ok"] as? Bool == true)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        // The served model runs the plant for a block's worth of ticks before the trial.
        let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 31), dynamics: Self.noisyPlant(seed: 32))
        try plant.run(40)
        let candidate = try storeModel(favouring: 1, for: h.map, in: h.dir.url, seed: 2)
        #expect(candidate == 2)
        try startTrial(h, candidate)
        let before = plant.acted.count
        try plant.run(until: { !trialEvents(h, "verdict").isEmpty })
        let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(plant.acted.count) ticks")
        #expect(verdict["verdict"] as? String == "reject" && verdict["promoted"] as? Bool == false, "\(verdict)")
        #expect(verdict["stop_loss"] as? Double == 0.5, "\(verdict)")
        let hit = try #require(verdict["stop_loss_hit"] as? [String: Any], "\(verdict)")
        let deficit = try #require(hit["deficit"] as? Double), limit = try #require(hit["limit"] as? Double)
        let scored = try #require(hit["scored_ticks"] as? Int)
        let beforeTrial = try #require(hit["before_trial"] as? Bool)
        #expect(beforeTrial == candidateFirst, "\(hit)")
        // About −3.5 a tick against a block of 40 at about −0.5 (a block ≈ −20). No earlier trial
        // on this device, so no pairs' spread: the share is doubled — past a whole block (≈ 20)
        // in ≈ 6 ticks, or, against the rate before the trial (doubled again), past two (≈ 40) in ≈ 12.
        #expect(hit["spread_known"] as? Bool == false, "\(hit)")
        #expect(deficit > limit && limit > (beforeTrial ? 30 : 15) && limit < (beforeTrial ? 50 : 30) && scored >= 1 && scored <= (beforeTrial ? 15 : 9), "\(hit)")
        let reason = verdict["reason"] as? String ?? ""
        #expect(reason.hasPrefix("stop-loss: the candidate's block had lost")
                && reason.contains(beforeTrial ? "the controller in charge's rate before the trial" : "the reference's latest block"), "\(verdict)")
        // Stopped in its first block: the candidate acted only those ticks (and at most one more,
        // decided before the verdict reached the decision thread).
        let candidateTicks = plant.acted.dropFirst(before).filter { $0 == .gateway(1) }.count
        #expect(candidateTicks <= scored + 2, "the candidate acted \(candidateTicks) ticks, stopped after \(scored)")
        #expect((verdict["pairs"] as? Int ?? 99) == 0 && (verdict["cost"] as? Double ?? 0) > 0, "\(verdict)")
        let file = try trialFile(h, candidate)
        #expect(file["verdict"] as? String == "reject" && (file["stop_loss_hit"] as? [String: Any]) != nil, "\(file)")
        #expect(h.gateway.servedVersion == served)
        #expect(h.metric(#"edgeq_trial_verdicts_total{verdict="reject"}"#) == 1)
        // The served model acts from the next tick on.
        let after = plant.acted.count
        try plant.run(12)
        #expect(plant.acted.dropFirst(after).allSatisfy { $0 == .gateway(0) }, "\(plant.acted.dropFirst(after))")
    }

    /// A candidate that does exactly what the served model does is not promoted: without a
    /// futility share the budget (here 4 pairs) runs out without a verdict either way.
    @Test func aCandidateNoBetterThanTheServedModelIsNotPromotedWhenTheBudgetRunsOut() throws {
        let yaml = testMapping(extraLearning: """
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 2, max_pairs: 4, futility: none}, control_share: 0}
            """)
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        let (served, candidate) = try trialAgainstAServedModel(h, candidateFavouring: 0)
        // Both apply a0; the plant has no noise: every pair's difference is 0.
        let plant = ClosedLoop(h, incumbent: { _ in 1 }, dynamics: RetrainingTests.aOneIsBad)
        try plant.run(until: { !trialEvents(h, "verdict").isEmpty })
        let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(plant.acted.count) ticks")
        #expect(plant.acted.allSatisfy { $0 == .gateway(0) })
        #expect(verdict["verdict"] as? String == "budget-exhausted", "\(verdict)")
        #expect(verdict["promoted"] as? Bool == false, "\(verdict)")
        #expect(verdict["pairs"] as? Int == 4 && verdict["mean_difference"] as? Double == 0, "\(verdict)")
        let file = try trialFile(h, candidate)
        #expect(file["verdict"] as? String == "budget-exhausted" && file["promoted"] as? Bool == false, "\(file)")
        #expect(h.gateway.servedVersion == served)
        #expect(h.metric(#"edgeq_trial_verdicts_total{verdict="budget-exhausted"}"#) == 1)
    }

    /// The same trial with the default futility share (0.01): the candidate is shown not to be
    /// better than 1 % of the served model's block return at the first look (every difference
    /// is 0), so the trial ends there as futile — not promoted, the plant free for the next
    /// candidate — instead of running out its budget.
    @Test func aCandidateThatDoesTheSameAsTheServedModelEndsAsFutileAtTheFirstLook() throws {
        let yaml = testMapping(extraLearning: """
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 2, max_pairs: 20}, control_share: 0}
            """)
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        #expect(h.map.learning.trial.futility == 0.01)
        let (served, candidate) = try trialAgainstAServedModel(h, candidateFavouring: 0)
        let plant = ClosedLoop(h, incumbent: { _ in 1 }, dynamics: RetrainingTests.aOneIsBad)
        try plant.run(until: { !trialEvents(h, "verdict").isEmpty })
        let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(plant.acted.count) ticks")
        #expect(verdict["verdict"] as? String == "futile" && verdict["promoted"] as? Bool == false, "\(verdict)")
        #expect(verdict["pairs"] as? Int == 2 && verdict["mean_difference"] as? Double == 0, "\(verdict)")
        #expect(verdict["futility"] as? Double == 0.01, "\(verdict)")
        #expect((verdict["futility_high"] as? Double ?? 0) < 0, "the futility bound must lie below 0: \(verdict)")
        let file = try trialFile(h, candidate)
        #expect(file["verdict"] as? String == "futile" && file["promoted"] as? Bool == false, "\(file)")
        #expect(h.gateway.servedVersion == served)
        #expect(h.metric(#"edgeq_trial_verdicts_total{verdict="futile"}"#) == 1)
        #expect(h.metric(#"edgeq_trial_verdicts_total{verdict="budget-exhausted"}"#) == 0)
        #expect(h.metric("edgeq_trial_active") == 0)
    }

    /// The mapping's exploration goes on in every model's blocks of a trial — between two models
    /// in both arms alike, against the incumbent in the candidate's (what each would do when
    /// served); the incumbent's blocks are the incumbent's own. No verdict within the ticks run
    /// (at least 40 pairs): the trial is under way.
    @Test func aTrialExploresInEveryModelsBlocksAndNeverInTheIncumbents() throws {
        let yaml = testMapping(extraLearning: """
              exploration: {start: 1, end: 1, decay_steps: 0, budget: 0.3}
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 40, max_pairs: 60}, control_share: 0}
            """)
        func rows(_ h: GatewayHarness) throws -> [EdgeQLog.Transition] {
            h.stop()
            let log = try ExperienceLog.open(dataDirectory: h.dir.url.path, create: false)
            return try log.transitions(window: .all).map(\.transition)
        }
        // Against the served model: both versions' blocks hold explorative rows.
        do {
            let h = try GatewayHarness(yaml: yaml)
            defer { h.stop() }
            let (served, candidate) = try trialAgainstAServedModel(h, candidateFavouring: 0)
            let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 31), dynamics: Self.noisyPlant(seed: 32))
            try plant.run(120)
            #expect(trialEvents(h, "verdict").isEmpty)
            let all = try rows(h)
            let explored = all.filter { $0.actor == .exploration }
            for v in [served, candidate] {
                let arm = all.filter { $0.modelVersion == String(v) }
                let e = explored.filter { $0.modelVersion == String(v) }.count
                #expect(arm.count >= 20 && e >= 3, "v\(v): \(e) explorative rows of \(arm.count)")
            }
            // Within the budget, as outside a trial.
            #expect(Double(explored.count) <= 0.3 * Double(all.count) + 1, "\(explored.count) of \(all.count)")
        }
        // Against the incumbent: the candidate's blocks explore, the incumbent's do not.
        do {
            let h = try GatewayHarness(yaml: yaml)
            defer { h.stop() }
            #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
            let candidate = try storeModel(favouring: 0, for: h.map, in: h.dir.url)
            try startTrial(h, candidate)
            let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 41), dynamics: Self.noisyPlant(seed: 42))
            try plant.run(120)
            #expect(trialEvents(h, "verdict").isEmpty)
            let all = try rows(h)
            let arm = all.filter { $0.modelVersion == String(candidate) }
            let explored = all.filter { $0.actor == .exploration }
            #expect(arm.count >= 20 && explored.count >= 3, "\(explored.count) explorative rows of the candidate's \(arm.count)")
            #expect(explored.allSatisfy { $0.modelVersion == String(candidate) }, "an explorative row outside the candidate's blocks")
            #expect(all.contains { $0.actor == .incumbent }, "no incumbent block in \(all.count) rows")
            #expect(Double(explored.count) <= 0.3 * Double(arm.count) + 1, "\(explored.count) of \(arm.count)")
            // The candidate favours a0: its a1 on the plant are its explorations.
            #expect(plant.acted.contains(.gateway(1)), "the candidate's blocks never explored")
        }
    }

    /// A trial against the incumbent judges the candidate as it would serve, exploration and
    /// all. A candidate whose greedy choice beats the incumbent (a0 on every tick, against an
    /// incumbent that takes a1 on one tick of four) but that would serve at random (ε 1, no
    /// budget limit) is worse than the incumbent on the plant, and is not promoted; the same
    /// candidate in the same trial without exploration is promoted.
    @Test func aCandidateWhoseExplorationMakesItWorseThanTheIncumbentIsNotPromoted() throws {
        let incumbent: (ClosedLoop) -> Int = { $0.step % 4 == 3 ? 1 : 0 }
        for explores in [true, false] {
            let exploration = explores ? "{start: 1, end: 1, decay_steps: 0, budget: 1}" : "{start: 0, end: 0, decay_steps: 0, budget: 0}"
            let h = try GatewayHarness(yaml: testMapping(extraLearning: "  exploration: \(exploration)\n" + Self.trial)) { $0.seed = 7 }
            defer { h.stop() }
            #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
            let candidate = try storeModel(favouring: 0, for: h.map, in: h.dir.url)
            try startTrial(h, candidate)
            let plant = ClosedLoop(h, incumbent: incumbent, dynamics: Self.noisyPlant(seed: 61))
            try plant.run(until: { !trialEvents(h, "verdict").isEmpty })
            let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(plant.acted.count) ticks")
            if explores {
                #expect(["reject", "futile"].contains(verdict["verdict"] as? String), "\(verdict)")
                #expect(verdict["promoted"] as? Bool == false && (verdict["mean_difference"] as? Double ?? 0) < 0, "\(verdict)")
                #expect(plant.acted.contains(.gateway(1)), "the candidate's blocks never explored")
                #expect(h.gateway.servedVersion == nil)
            } else {
                #expect(verdict["verdict"] as? String == "promote" && verdict["promoted"] as? Bool == true, "\(verdict)")
                #expect(!plant.acted.contains(.gateway(1)))
                #expect(h.gateway.servedVersion == candidate)
            }
        }
    }

    /// The status and `edgeq_guard_watching` say whether the control-group guard watches the
    /// served model: not in shadow mode, yes once a model serves in control — and still while a
    /// switchback trial runs against it (the guard's pairs keep their place between the trial's
    /// blocks).
    @Test func theStatusSaysWhetherTheGuardWatchesTheServedModel() throws {
        let yaml = testMapping(extraLearning: """
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 2, max_pairs: 20}, control_share: 0.25}
            """)
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        func guardOf(_ m: MQTTMessage) -> [String: Any] { GatewayHarness.json(m)["guard"] as? [String: Any] ?? [:] }
        let shadow = try h.waitFor(topic: "edgeq/t1/status") { guardOf($0)["watching"] != nil }
        #expect(guardOf(shadow)["watching"] as? Bool == false && (guardOf(shadow)["not_watching"] as? String)?.contains("shadow mode") == true,
                "\(guardOf(shadow))")
        #expect(h.metric("edgeq_guard_watching") == 0)
        let served = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: 1)
        #expect(try h.ask("promote", "{\"version\":\(served)}")["ok"] as? Bool == true)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        let watching = try h.waitFor(topic: "edgeq/t1/status", timeout: 12) { guardOf($0)["watching"] as? Bool == true }
        #expect(guardOf(watching)["not_watching"] == nil)
        #expect(h.metric("edgeq_guard_watching") == 1)

        let candidate = try storeModel(favouring: 1, for: h.map, in: h.dir.url, seed: 2)
        try startTrial(h, candidate)
        let during = try h.waitFor(topic: "edgeq/t1/status", timeout: 12) { GatewayHarness.json($0)["trial_running"] as? Bool == true }
        #expect(guardOf(during)["watching"] as? Bool == true, "\(guardOf(during))")
        #expect(h.metric("edgeq_guard_watching") == 1)
    }

    /// Probation (`promotion.probation_pairs`) in a running gateway: after a model is served,
    /// the guard's first 3 cycles have two blocks each — one of them the control group's (here
    /// the incumbent's) — and then the cycles of round(1 / 0.1) = 10 blocks begin. The status
    /// counts the probation down.
    @Test func probationGivesTheControlGroupEveryOtherBlockAfterAPromotion() throws {
        let yaml = testMapping(extraLearning: """
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 2, max_pairs: 20}, control_share: 0.1, probation_pairs: 3}
            """)
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        let served = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: 1)
        #expect(try h.ask("promote", "{\"version\":\(served)}")["ok"] as? Bool == true)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        let plant = ClosedLoop(h, incumbent: { _ in 1 }, dynamics: RetrainingTests.aOneIsBad)
        try plant.run(6 * 4 + 10 * 4 + 8)
        // The first tick picks the served model up (and is nobody's block); the guard's blocks
        // of 4 start with the next.
        let start = 1
        let blocks = stride(from: start, to: start + 64, by: 4).map { Array(plant.acted[$0..<($0 + 4)]) }
        #expect(blocks.allSatisfy { b in b.allSatisfy { $0.isGateway == b[0].isGateway } }, "a block with two controllers: \(blocks)")
        let incumbent = blocks.map { !$0[0].isGateway }
        for cycle in 0..<3 {
            #expect(incumbent[(2 * cycle)..<(2 * cycle + 2)].filter { $0 }.count == 1, "probation cycle \(cycle): \(blocks[(2 * cycle)..<(2 * cycle + 2)])")
        }
        #expect(incumbent[6..<16].filter { $0 }.count == 1, "the first cycle of 10 after probation: \(blocks[6..<16])")
        let guardStatus = try h.waitFor(topic: "edgeq/t1/status", timeout: 12) {
            (GatewayHarness.json($0)["guard"] as? [String: Any])?["probation_pairs_left"] as? Int == 0
        }
        let g = GatewayHarness.json(guardStatus)["guard"] as? [String: Any] ?? [:]
        #expect(g["probation_pairs"] as? Int == 3 && (g["pairs"] as? Int ?? 0) >= 3, "\(g)")
    }

    /// The guard keeps watching the served model through a switchback trial: its compared pairs
    /// (a control block of the previous controller, a block of the served model) keep their place
    /// between the trial's blocks. Here the served model is worse than its control group and a
    /// trial against it would run at least 40 pairs (the candidate does the same): the guard
    /// trips at its second pair, rolls back, and the trial — its reference gone — is abandoned.
    @Test func theGuardWatchesTheServedModelThroughATrial() throws {
        let yaml = testMapping(extraLearning: """
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 40, max_pairs: 60, futility: none}, control_share: 0.25, guard_pairs: 2}
            """)
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        let (good, bad) = try h.serveABadModelAfterAGoodOne()
        let candidate = try storeModel(favouring: 1, for: h.map, in: h.dir.url, seed: 3)
        try startTrial(h, candidate)
        let plant = ClosedLoop(h, incumbent: { _ in 0 }, dynamics: RetrainingTests.aOneIsBad)
        // The guard trips on the decision thread (its summary says so at once); the rollback and
        // its event follow on the control queue, whose file writes may take seconds on a loaded
        // machine while the plant keeps stepping (CI failed here twice, stops 35 and 36, counting
        // the ticks up to the event). So the ticks are counted to the trip, seen from the
        // decision thread's side (or, should the rollback be quicker than the plant's look, from
        // the served version having changed); the bounds on waiting are wall time.
        try plant.run(until: {
            h.gateway.guardSummary.withLock { $0 }?.tripped == true || h.gateway.servedVersion != bad || h.firstGuardEvent() != nil
        }, atMost: 90)
        let ticksToTrip = plant.acted.count
        try plant.run(until: { h.firstGuardEvent() != nil }, atMost: 90)
        let event = try #require(h.firstGuardEvent(), "the guard did not trip in \(plant.acted.count) ticks of the trial")
        // Deterministic block returns: the first look, at the guard's second pair, decides; in
        // cycles of 4 blocks (one compared pair each) that is well within the trial's 40 pairs.
        #expect(event["pairs"] as? Int == 2, "\(event)")
        #expect(ticksToTrip < 80, "\(ticksToTrip) ticks before the trip (\(plant.acted.count) before its event)")
        #expect(event["verdict"] as? String == "rolled_back" && event["from"] as? Int == bad && event["to"] as? Int == good, "\(event)")
        #expect(try ModelStore(dataDirectory: h.dir.url).isQuarantined(bad))
        // Before the trip the plant saw the control group (v1's a0) between the trial's a1 blocks.
        #expect(plant.acted.contains(.gateway(0)) && plant.acted.contains(.gateway(1)))
        // The trial's reference was rolled back from: the trial is abandoned, not decided. The
        // decision thread picks the rolled-back-to model up at a tick, so the plant goes on.
        try plant.run(until: { !trialEvents(h, "abandoned").isEmpty }, atMost: 60)
        let abandoned = try #require(trialEvents(h, "abandoned").first)
        #expect(abandoned["version"] as? Int == candidate && (abandoned["reason"] as? String)?.contains("served model changed") == true, "\(abandoned)")
        #expect(trialEvents(h, "verdict").isEmpty)
        #expect(h.gateway.servedVersion == good)
    }

    /// A model its trial promoted, whose plant then turns against it: the guard borrows the
    /// trial's estimate of the pairs' noise (its `sd` in `trial.json`, over its pairs) and so
    /// looks from its second pair on, where on its own window it first looks at `minPairs`
    /// (here 4, the trial's). The trial (a1 against the incumbent's a0 on a plant where a1 is
    /// good) promotes; then a1 becomes the bad action, and the guard rolls back at its 2nd pair.
    @Test func theGuardBorrowsThePromotingTrialsNoiseAndLooksFromItsSecondPair() throws {
        let yaml = testMapping(extraLearning: """
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 4, max_pairs: 20}, control_share: 0.5, guard_pairs: 20}
            """)
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        let candidate = try storeModel(favouring: 1, for: h.map, in: h.dir.url, seed: 3)
        try startTrial(h, candidate)
        var rng = SeededGenerator(seed: 61)
        let plant = ClosedLoop(h, incumbent: { _ in 0 }, dynamics: { p, action in
            // a1 is the good action until the candidate is served, then the bad one.
            let aOneGood = h.gateway.servedVersion != candidate
            p.x = ((action == 1) == aOneGood ? 0.5 : 4) + (rng.nextUnit() - 0.5) * 0.5
            p.y = sin(Double(p.step) * 0.3)
        })
        try plant.run(until: { !trialEvents(h, "verdict").isEmpty })
        let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(plant.acted.count) ticks")
        #expect(verdict["verdict"] as? String == "promote" && verdict["promoted"] as? Bool == true, "\(verdict)")
        let file = try trialFile(h, candidate)
        let sd = try #require(file["sd"] as? Double, "trial.json has no sd: \(file)")
        let trialPairs = try #require(file["pairs"] as? Int)
        #expect(sd > 0 && trialPairs >= 4, "\(file)")

        try plant.run(until: { h.firstGuardEvent() != nil }, atMost: 90)
        let event = try #require(h.firstGuardEvent(), "the guard did not trip in \(plant.acted.count) ticks")
        #expect(event["pairs"] as? Int == 2, "the guard tripped at pair \(event["pairs"] ?? "?"), not at its 2nd: \(event)")
        #expect(event["verdict"] as? String == "fallback_to_shadow" && event["from"] as? Int == candidate, "\(event)")
        let borrowed = try #require(event["noise_from_trial"] as? [String: Any], "\(event)")
        #expect(borrowed["pairs"] as? Int == trialPairs, "\(borrowed)")
        #expect(abs((borrowed["sd"] as? Double ?? 0) - sd) <= 1e-9 * sd, "\(borrowed) against the trial's sd \(sd)")
    }

    /// A trial between two models with the guard's pairs between its blocks still scores whole
    /// blocks of its own arms: on a plant without noise every pair differs by exactly what the
    /// two actions earn in a block (a1 −5 a tick, a0 −0.25: −19 a block), so no tick of the
    /// guard's blocks leaked into the trial's; and the guard compared pairs meanwhile. With a
    /// probation of 3 pairs the trial waits through it (every block is the guard's) and then
    /// scores the same whole blocks.
    @Test(arguments: [0, 3]) func aTrialBetweenTheGuardsPairsScoresOnlyItsOwnBlocks(probation: Int) throws {
        let yaml = testMapping(extraLearning: """
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 6, max_pairs: 20}, control_share: 0.25, probation_pairs: \(probation)}
            """)
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        // The served model and its control group (the incumbent) both play a0; the candidate a1.
        let (served, _) = try trialAgainstAServedModel(h, candidateFavouring: 1)
        let plant = ClosedLoop(h, incumbent: { _ in 0 }, dynamics: RetrainingTests.aOneIsBad)
        try plant.run(until: { !trialEvents(h, "verdict").isEmpty })
        let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(plant.acted.count) ticks")
        #expect(["reject", "futile"].contains(verdict["verdict"] as? String), "\(verdict)")
        #expect(verdict["pairs"] as? Int == 6 && verdict["mean_difference"] as? Double == -19, "\(verdict)")
        let guardPairs = try #require(h.gateway.guardSummary.withLock { $0 }?.pairs)
        #expect(guardPairs >= 3 + probation, "the guard compared \(guardPairs) pairs during a trial of 12 blocks")
        #expect(plant.acted.contains(.incumbent(0)), "no control block of the incumbent during the trial")
        #expect(h.gateway.servedVersion == served)
    }

    /// One seed, one run's draws: a trial between two models with exploration, run twice with
    /// the gateway's seed 41 on the same plant, acts the same on every tick — the same arm in
    /// every block, the same explorative decisions — and writes the same seed in `trial.json`;
    /// the trial's order is the one `SwitchbackTrial` draws from `GatewaySeeds.trial`. Another
    /// seed draws another order. Without `--seed` the gateway draws one and shows it in its status.
    @Test func theGatewaysSeedReplaysTheTrialsOrderAndTheExploration() throws {
        let yaml = testMapping(extraLearning: """
              exploration: {start: 1, end: 1, decay_steps: 0, budget: 0.3}
              promotion: {policy: trial, min_agreement: 0, trial: {block: 4, burn_in: 0, stop_loss: none, min_pairs: 40, max_pairs: 60}, control_share: 0}
            """)
        let trialConfig = try TopicMap.parse(yaml: yaml, file: "t.yaml").learning.trial
        struct Run {
            var rows: [String]
            var served: Int
            var candidate: Int
            var firstArmIsCandidate: Bool
        }
        func run(seed: UInt64) throws -> Run {
            let h = try GatewayHarness(yaml: yaml) { $0.seed = seed }
            defer { h.stop() }
            let status = try h.waitFor(topic: "edgeq/t1/status") { GatewayHarness.json($0)["seed"] != nil }
            #expect(GatewayHarness.json(status)["seed"] as? Int == Int(seed))
            let (served, candidate) = try trialAgainstAServedModel(h, candidateFavouring: 1)
            let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 51), dynamics: Self.noisyPlant(seed: 52))
            try plant.run(64)
            #expect(trialEvents(h, "verdict").isEmpty)
            let expected = try SwitchbackTrial(config: trialConfig, seed: GatewaySeeds.trial(seed, candidate: candidate, reference: served))
            if trialEvents(h, "progress").isEmpty {
                // The control queue publishes a block's progress after the block's last tick; on a
                // loaded machine the plant's 64 ticks can all pass before the first one arrives.
                _ = try h.waitFor(topic: "edgeq/t1/retrain", timeout: 30) {
                    let e = GatewayHarness.json($0)
                    return e["phase"] as? String == "trial" && e["event"] as? String == "progress"
                }
            }
            let progress = try #require(trialEvents(h, "progress").last)
            #expect(progress["seed"] as? String == String(expected.seed) && progress["gateway_seed"] as? Int == Int(seed), "\(progress)")
            h.stop()
            let log = try ExperienceLog.open(dataDirectory: h.dir.url.path, create: false)
            let all = try log.transitions(window: .all).map(\.transition)
            // The trial starts on the first tick: the first row is its first block's.
            let first = try #require(all.first)
            #expect((first.modelVersion == String(candidate)) == (expected.arm == .candidate),
                    "seed \(seed): the first block is v\(first.modelVersion ?? "-")'s, SwitchbackTrial draws \(expected.arm)")
            #expect(all.contains { $0.actor == .exploration }, "seed \(seed): no explorative row in \(all.count)")
            return Run(rows: all.map { "\($0.modelVersion ?? "-") \($0.actor) \($0.action.map(String.init) ?? "-")" }, served: served, candidate: candidate,
                       firstArmIsCandidate: expected.arm == .candidate)
        }
        let a = try run(seed: 41)
        let again = try run(seed: 41)
        #expect(a.rows.count >= 60 && a.rows == again.rows, "seed 41 twice:\n\(a.rows)\n\(again.rows)")
        // A seed whose trial starts with the other arm (the derivation is fixed: found, not hoped for).
        let other = try #require((42..<80).first { s in
            (try? SwitchbackTrial(config: trialConfig, seed: GatewaySeeds.trial(s, candidate: a.candidate, reference: a.served)))
                .map { ($0.arm == .candidate) != a.firstArmIsCandidate } ?? false
        })
        let b = try run(seed: other)
        #expect(b.firstArmIsCandidate != a.firstArmIsCandidate && b.rows != a.rows, "seed \(other) ran as seed 41 did")
        // No seed given: one is drawn, printable exactly as a JSON number.
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        #expect(h.gateway.seed <= SeededGenerator.largestPrintableSeed)
        let status = try h.waitFor(topic: "edgeq/t1/status") { GatewayHarness.json($0)["seed"] != nil }
        #expect((GatewayHarness.json(status)["seed"] as? NSNumber)?.uint64Value == h.gateway.seed)
    }

    @Test func theTrialWaitsInShadowModeAndStartsInControlMode() throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: Self.trial))
        defer { h.stop() }
        #expect(h.gateway.mode == .shadow)
        let candidate = try storeModel(favouring: 0, for: h.map, in: h.dir.url)
        try startTrial(h, candidate)
        let started = GatewayHarness.json(try h.waitFor(topic: "edgeq/t1/retrain") { GatewayHarness.json($0)["event"] as? String == "started" })
        #expect(started["waiting_for_control"] as? Bool == true, "\(started)")
        // Shadow mode: the incumbent runs every tick, no candidate command is published, the
        // trial takes no block.
        let plant = ClosedLoop(h, incumbent: Self.randomIncumbent(seed: 31), dynamics: Self.noisyPlant(seed: 32))
        try plant.run(40)
        #expect(plant.acted.allSatisfy { !$0.isGateway }, "\(plant.acted)")
        #expect(trialEvents(h, "progress").isEmpty && trialEvents(h, "verdict").isEmpty)
        #expect(h.gateway.servedVersion == nil)
        // Control mode: the trial runs (the candidate acts in its blocks) and decides.
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        let before = plant.acted.count
        try plant.run(until: { !trialEvents(h, "verdict").isEmpty })
        #expect(plant.acted.dropFirst(before).contains(.gateway(0)))
        #expect(!trialEvents(h, "progress").isEmpty)
        let verdict = try #require(trialEvents(h, "verdict").first, "no verdict in \(plant.acted.count - before) control ticks")
        #expect(verdict["verdict"] as? String == "promote", "\(verdict)")
        #expect(h.gateway.servedVersion == candidate)
    }

    // MARK: - The control-group guard

    /// The cart-pole-like plant: every tick pays 1, so an episode's return is its length.
    /// Three `a1` in a row drop the pole (terminal); an episode ends after 20 ticks at most.
    static func pole(_ p: ClosedLoop, _ action: Int) {
        p.x = action == 1 ? min(p.x + 1, 9) : 0
        p.y = sin(Double(p.step) * 0.3)
        p.done = p.x >= 3 || p.episodeTicks >= 20
    }

    @Test func theGuardTripsOnACollapsingEpisodicModel() throws {
        let yaml = episodicMapping(extraLearning: """
              promotion: {policy: manual, min_agreement: 0, trial: {block: episode, min_pairs: 2}, control_share: 0.5, guard_pairs: 4}
            """)
        let h = try GatewayHarness(yaml: yaml)
        defer { h.stop() }
        let good = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: 1)
        let collapsing = try storeModel(favouring: 1, for: h.map, in: h.dir.url, seed: 2)
        #expect(try h.ask("promote", "{\"version\":\(good)}")["ok"] as? Bool == true)
        #expect(try h.ask("promote", "{\"version\":\(collapsing)}")["ok"] as? Bool == true)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        // Every other episode is v1's (the control group): 20 ticks; v2 drops the pole in 3.
        let plant = ClosedLoop(h, episodic: true, incumbent: { _ in 0 }, dynamics: Self.pole)
        func guardEvent() -> [String: Any]? {
            h.received.lazy.filter { $0.topic == "edgeq/t1/retrain" }.map(GatewayHarness.json).first { $0["phase"] as? String == "guard" }
        }
        try plant.run(until: { guardEvent() != nil })
        let event = try #require(guardEvent(), "the guard did not trip in \(plant.episodes.count) episodes")
        #expect(plant.episodes.contains { $0.length == 3 } && plant.episodes.contains { $0.length == 20 }, "\(plant.episodes)")
        #expect(event["verdict"] as? String == "rolled_back", "\(event)")
        #expect(event["from"] as? Int == collapsing && event["to"] as? Int == good && event["quarantined"] as? Int == collapsing, "\(event)")
        // Episode returns, compared in pairs: deterministic (20 against 3), decided at the first look.
        #expect(event["pairs"] as? Int == 2, "\(event)")
        #expect(event["mean_difference"] as? Double == -17, "\(event)")
        #expect(h.gateway.servedVersion == good)
        #expect(try ModelStore(dataDirectory: h.dir.url).isQuarantined(collapsing))
        // v1 serves (its control group is the incumbent, a0): every episode runs its 20 ticks.
        let episodesBefore = plant.episodes.count
        try plant.run(100)
        #expect(plant.episodes.dropFirst(episodesBefore + 1).allSatisfy { $0.length == 20 }, "\(plant.episodes.dropFirst(episodesBefore))")
    }

    @Test func theGuardDoesNotTripOnAModelEquivalentToItsControlGroupUnderAChangingSetpoint() throws {
        let h = try GatewayHarness(yaml: testMapping(extraLearning: RetrainingTests.guarded))
        defer { h.stop() }
        let v = try storeModel(favouring: 0, for: h.map, in: h.dir.url)
        #expect(try h.ask("promote", "{\"version\":\(v)}")["ok"] as? Bool == true)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        // The served model and its control group (the incumbent) both apply a0. A setpoint
        // shared by both, drawn anew every 24 ticks between −4 and 4, moves x (and the reward
        // −|x|) far more than anything either does: a per-tick comparison with an earlier
        // baseline would see the served model's windows as worse or better by chance.
        var rng = SeededGenerator(seed: 41)
        var setpoint = 0.0
        let plant = ClosedLoop(h, incumbent: { _ in 0 }) { p, action in
            if p.step % 24 == 0 { setpoint = Double(Int(rng.next() % 9) - 4) }
            p.x = setpoint + (action == 0 ? 0.25 : 4)
            p.y = sin(Double(p.step) * 0.3)
        }
        try plant.run(260)
        _ = h.drain(0.3)
        #expect(h.metric("edgeq_guard_trips_total") == 0)
        #expect(!h.received.contains { $0.topic == "edgeq/t1/retrain" && GatewayHarness.json($0)["phase"] as? String == "guard" })
        #expect(h.gateway.servedVersion == v)
        #expect(h.gateway.mode == .control)
        // It compared many pairs: half of the blocks were the incumbent's.
        let status = GatewayHarness.json(try h.waitFor(topic: "edgeq/t1/status", timeout: 5))
        let guardStatus = status["guard"] as? [String: Any] ?? [:]
        #expect((guardStatus["pairs"] as? Int ?? 0) >= 25, "\(guardStatus)")
        let incumbentTicks = plant.acted.filter { !$0.isGateway }.count
        #expect(incumbentTicks >= 100 && incumbentTicks <= 160, "\(incumbentTicks) of \(plant.acted.count) ticks were the incumbent's")
    }
}
