import EdgeQCore
@testable import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQRetrain
import EdgeQTestSupport
import EdgeQTrust
import Foundation
import Synchronization
import Testing

/// A fleet model's own trial on the gateway (docs/fleet.md, "Models on the gateway"): a model
/// published on `fleet/t/model`, signed by a key the gateway trusts for models, is stored and,
/// under `promotion: trial`, goes through the gateway's switchback trial against the closed-loop
/// plant (`ClosedLoop`, real broker, real model files); the verdict on `fleet/t/verdict/t1`
/// carries the trial's outcome and figures.
@Suite struct FleetModelTrialTests {
    static let yaml = testMapping(extraLearning: TrialGatewayTests.trial) + "\nfleet: {topic: fleet/t, interval: 100ms}\n"

    /// The weather mapping of `TrialAdjustmentGatewayTests` (`y` exogenous, the reward 5·y − |x|)
    /// with the fleet section.
    static func weatherYAML(adjust: String, block: Int) -> String {
        TrialAdjustmentGatewayTests.mapping(adjust: adjust, block: block) + "\nfleet: {topic: fleet/t, interval: 100ms}\n"
    }

    /// A harness whose gateway trusts the key `fleet-t` for models; returns its private half.
    func harness(_ keys: TempDir, yaml: String = Self.yaml) throws -> (GatewayHarness, SigningPrivateKey) {
        let files = try KeyFile.generate(name: "fleet-t", directory: keys.url)
        let h = try GatewayHarness(yaml: yaml) { o in
            let models = TrustStore.keysDirectory(dataDirectory: URL(fileURLWithPath: o.dataDirectory ?? "")).appendingPathComponent("models")
            try? FileManager.default.createDirectory(at: models, withIntermediateDirectories: true)
            try? FileManager.default.copyItem(at: files.publicKey, to: models.appendingPathComponent("fleet-t.pub"))
        }
        #expect(FileManager.default.fileExists(atPath: h.dir.url.appendingPathComponent("keys/models/fleet-t.pub").path))
        return (h, try KeyFile.readPrivateKey(files.privateKey))
    }

    /// Publishes a model favouring `action` as fleet model `version`, signed with `key`, in chunks.
    func publishFleetModel(_ h: GatewayHarness, favouring action: Int, seed: UInt64, version: Int, key: SigningPrivateKey) throws {
        let scratch = try TempDir()
        let v = try storeModel(favouring: action, for: h.map, in: scratch.url, seed: seed)
        let bytes = Array(try Data(contentsOf: try ModelStore(dataDirectory: scratch.url).modelURL(v)))
        let sig = try ModelSignature.sign(modelBytes: bytes, version: version, mapping: h.map.fingerprint, keyName: "fleet-t", privateKey: key)
        let (manifest, chunks) = FleetModelChunk.split(modelBytes: bytes, signature: sig, maxMessage: 2048, learner: "test", rows: 0, gateways: [:])
        #expect(chunks.count > 1)
        for c in chunks { _ = try h.observer.publish("fleet/t/model/chunk/\(c.index)", c.encode(), qos: .atLeastOnce, retain: true) }
        _ = try h.observer.publish("fleet/t/model", manifest.jsonText, qos: .atLeastOnce, retain: true)
    }

    func verdicts(_ h: GatewayHarness) -> [[String: Any]] {
        h.received.filter { $0.topic == "fleet/t/verdict/t1" }.map(GatewayHarness.json)
    }

    /// The first message on `topic` whose JSON satisfies `match`: among those received so far,
    /// else the next one (the verdict and `<prefix>/retrain` come on two connections, in either order).
    func first(_ h: GatewayHarness, _ topic: String, timeout: Double = 30, _ match: ([String: Any]) -> Bool) throws -> [String: Any] {
        if let seen = h.received.filter({ $0.topic == topic }).map(GatewayHarness.json).first(where: match) { return seen }
        return GatewayHarness.json(try h.waitFor(topic: topic, timeout: timeout) { match(GatewayHarness.json($0)) })
    }

    @Test func aFleetModelBuiltToBeBetterWinsItsOwnTrialAndTheVerdictSaysPromoted() throws {
        let keys = try TempDir()
        let (h, key) = try harness(keys)
        defer { h.stop() }
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        try publishFleetModel(h, favouring: 0, seed: 12, version: 100, key: key)
        _ = try h.waitFor(topic: "fleet/t/verdict/t1", timeout: 20) { String(decoding: $0.payload, as: UTF8.self).contains("trial_started") }
        let plant = ClosedLoop(h, incumbent: TrialGatewayTests.randomIncumbent(seed: 11), dynamics: TrialGatewayTests.noisyPlant(seed: 12))
        try plant.run(until: { verdicts(h).contains { $0["verdict"] as? String == "promoted" || $0["verdict"] as? String == "rejected" } })
        let v = try #require(verdicts(h).last, "no verdict in \(plant.acted.count) ticks")
        #expect(v["verdict"] as? String == "promoted" && v["version"] as? Int == 100 && v["gateway"] as? String == "t1", "\(v)")
        let trial = try #require(v["trial"] as? [String: Any], "\(v)")
        #expect(trial["verdict"] as? String == "promote" && (trial["pairs"] as? Int ?? 0) >= 2 && (trial["mean_difference"] as? Double ?? 0) > 0, "\(trial)")
        #expect(h.gateway.servedVersion == 100)
        #expect(h.metric("edgeq_fleet_models_stored_total") == 1)
        // This mapping marks no signal exogenous: no baseline is fitted or stored, the trial is
        // unadjusted, and its note says why.
        #expect(!FileManager.default.fileExists(atPath: try ModelStore(dataDirectory: h.dir.url).baselineURL(100).path))
        let note = (trial["adjustment"] as? [String: Any])?["note"] as? String ?? ""
        #expect(trial["adjusted"] as? Bool == false && note.contains("marks no signal 'role: exogenous'"), "\(trial)")
    }

    @Test func aFleetModelBuiltToBeWorseLosesItsTrialAndTheVerdictSaysRejectedWithTheFigures() throws {
        let keys = try TempDir()
        let (h, key) = try harness(keys)
        defer { h.stop() }
        let served = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: 1)
        #expect(try h.ask("promote", "{\"version\":\(served)}")["ok"] as? Bool == true)
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        try publishFleetModel(h, favouring: 1, seed: 2, version: 200, key: key)
        let plant = ClosedLoop(h, incumbent: TrialGatewayTests.randomIncumbent(seed: 21), dynamics: TrialGatewayTests.noisyPlant(seed: 22))
        try plant.run(until: { verdicts(h).contains { $0["verdict"] as? String == "promoted" || $0["verdict"] as? String == "rejected" } })
        let all = verdicts(h)
        #expect(all.contains { $0["verdict"] as? String == "trial_started" && $0["version"] as? Int == 200 }, "\(all)")
        let v = try #require(all.last, "no verdict in \(plant.acted.count) ticks")
        #expect(v["verdict"] as? String == "rejected" && v["version"] as? Int == 200, "\(v)")
        #expect((v["reason"] as? String)?.contains("reject") == true, "\(v)")
        let trial = try #require(v["trial"] as? [String: Any], "\(v)")
        // Rejected by its pairs (a negative mean difference) or, within a block, by the stop-loss
        // (the figures it saw: a loss past its limit).
        let stop = trial["stop_loss_hit"] as? [String: Any]
        let byPairs = (trial["mean_difference"] as? Double ?? 0) < 0
        let byStopLoss = (stop?["deficit"] as? Double ?? 0) > (stop?["limit"] as? Double ?? .infinity)
        #expect(trial["verdict"] as? String == "reject" && (byPairs || byStopLoss) && trial["reference"] as? String == "v\(served)", "\(trial)")
        #expect(h.gateway.servedVersion == served)
    }
    /// `trial_queued` and `trial_abandoned` (docs/fleet.md, "Verdicts"): in shadow mode (the trial
    /// waits for control, so nothing decides it), fleet model 100 starts its trial and the decision
    /// thread takes it up; fleet model 101 arrives while it runs and is queued; an operator's signed
    /// `cmd/promote` of another version changes the served model, which abandons 100's trial —
    /// the verdict says why, with the trial's figures — and 101's trial starts in its place, which
    /// its verdict says too.
    @Test func aFleetModelArrivingDuringATrialIsQueuedAndAnAbandonedTrialSaysWhyAndTheQueuedOneStarts() throws {
        let keys = try TempDir()
        let (h, key) = try harness(keys)
        defer { h.stop() }
        let local = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: 1)
        func verdict(_ kind: String, _ version: Int) throws -> [String: Any] {
            GatewayHarness.json(try h.waitFor(topic: "fleet/t/verdict/t1", timeout: 20) {
                let o = GatewayHarness.json($0)
                return o["verdict"] as? String == kind && o["version"] as? Int == version
            })
        }
        func tick(_ step: Int) throws {
            try h.send("plant/t/state", #"{"step":\#(step),"x":0.5,"y":0}"#)
        }

        try publishFleetModel(h, favouring: 0, seed: 12, version: 100, key: key)
        let started = try verdict("trial_started", 100)
        #expect(started["waiting_for_control"] as? Bool == true && started["signer"] as? String == "fleet-t", "\(started)")
        try tick(1)
        #expect(eventually(timeout: 10) { h.metric("edgeq_trial_active") == 1 }, "the decision thread did not take up the trial")

        // 101 while 100's trial runs: stored, queued.
        try publishFleetModel(h, favouring: 1, seed: 13, version: 101, key: key)
        let queued = try verdict("trial_queued", 101)
        #expect(queued["waiting_for_control"] as? Bool == true && queued["signer"] as? String == "fleet-t" && queued["gateway"] as? String == "t1", "\(queued)")
        #expect(h.metric("edgeq_fleet_models_stored_total") == 2)

        // The operator serves the local model: the trial's reference changed, 100's trial is abandoned.
        #expect(try h.ask("promote", "{\"version\":\(local)}")["ok"] as? Bool == true)
        try tick(2)
        let abandoned = try verdict("trial_abandoned", 100)
        #expect((abandoned["reason"] as? String)?.contains("served model changed") == true, "\(abandoned)")
        let trial = try #require(abandoned["trial"] as? [String: Any], "\(abandoned)")
        #expect(trial["verdict"] as? String == "abandoned" && trial["reference"] as? String == "incumbent" && trial["promoted"] as? Bool == false, "\(trial)")
        #expect(trial["pairs"] as? Int == 0, "\(trial)")

        // 101 waited for it: its trial starts now, against the model served now.
        let next = try verdict("trial_started", 101)
        #expect(next["reference"] as? String == "v\(local)" && next["waiting_for_control"] as? Bool == true, "\(next)")
        let order = verdicts(h).map { "\($0["verdict"] as? String ?? "?") \($0["version"] as? Int ?? 0)" }
        #expect(order == ["trial_started 100", "trial_queued 101", "trial_abandoned 100", "trial_started 101"], "\(order)")
        #expect(h.gateway.servedVersion == local)
        #expect(h.metric("edgeq_fleet_models_stored_total") == 2)
    }

    /// A trial decided before the shipper's handler of its model has returned (here: abandoned,
    /// the operator serving another model while the handler still runs) is reported to the
    /// fleet after the handler's `trial_started`, not lost and not before it: the retained
    /// verdict is the decision.
    @Test func aTrialDecidedWhileItsFleetModelIsBeingTakenIsReportedAfterItsStart() throws {
        let keys = try TempDir()
        let (h, key) = try harness(keys)
        defer { h.stop() }
        let local = try storeModel(favouring: 0, for: h.map, in: h.dir.url, seed: 1)
        let fleet = try #require(h.gateway.fleet)
        let inHandler = Mutex<[String]>([])
        let handled = Mutex(false)
        // The gateway's own handler, then — before it returns — what abandons the trial it began.
        // (The harness's observer is read by the handler's thread alone until `handled`. The
        // harness is held weakly: the gateway holds the handler, and the harness's end stops the
        // broker.)
        fleet.setModelHandler { [weak h] m, bytes in
            defer { handled.withLock { $0 = true } }
            guard let h else { return nil }
            let verdict = h.gateway.fleetModelArrived(m, bytes)
            do {
                try h.send("plant/t/state", #"{"step":1,"x":0.5,"y":0}"#)
                guard eventually(timeout: 10, { h.metric("edgeq_trial_active") == 1 }) else {
                    inHandler.withLock { $0.append("the decision thread did not take up the trial") }
                    return verdict
                }
                guard try h.ask("promote", "{\"version\":\(local)}")["ok"] as? Bool == true else {
                    inHandler.withLock { $0.append("promote refused") }
                    return verdict
                }
                try h.send("plant/t/state", #"{"step":2,"x":0.5,"y":0}"#)
                // Published after the fleet was told (`finishTrial`): the verdict is decided.
                _ = try h.waitFor(topic: "edgeq/t1/retrain", timeout: 10) {
                    let o = GatewayHarness.json($0)
                    return o["phase"] as? String == "trial" && o["event"] as? String == "abandoned"
                }
            } catch {
                inHandler.withLock { $0.append("\(error)") }
            }
            return verdict
        }
        try publishFleetModel(h, favouring: 0, seed: 12, version: 100, key: key)
        try #require(eventually(timeout: 60) { handled.withLock { $0 } }, "the fleet model's handler did not return")
        let abandoned = GatewayHarness.json(try h.waitFor(topic: "fleet/t/verdict/t1", timeout: 10) {
            GatewayHarness.json($0)["verdict"] as? String == "trial_abandoned"
        })
        #expect(inHandler.withLock { $0 } == [])
        #expect(abandoned["version"] as? Int == 100 && (abandoned["reason"] as? String)?.contains("served model changed") == true, "\(abandoned)")
        let order = verdicts(h).map { "\($0["verdict"] as? String ?? "?") \($0["version"] as? Int ?? 0)" }
        #expect(order == ["trial_started 100", "trial_abandoned 100"], "\(order)")
        #expect(h.gateway.servedVersion == local)
    }

    /// A fleet model comes without an exogenous baseline; the gateway fits one on its own log, as a
    /// retraining fits its candidate's (the weather plant of `TrialAdjustmentGatewayTests`: 400
    /// ticks of the incumbent's shadow log, `y` exogenous), against the controller the trial runs
    /// against (the incumbent), stores it as `models/v100/baseline.json` — the same baseline a fit
    /// of the log read back gives — and the trial is adjusted by it and says so.
    @Test func aFleetModelGetsAnExogenousBaselineFittedOnThisGatewaysLogAndItsTrialIsAdjusted() throws {
        let keys = try TempDir()
        let (h, key) = try harness(keys, yaml: Self.weatherYAML(adjust: "exogenous", block: 8))
        defer { h.stop() }
        let plant = ClosedLoop(h, incumbent: TrialAdjustmentGatewayTests.randomIncumbent(seed: 5),
                               dynamics: TrialAdjustmentGatewayTests.weatherPlant(seed: 6))
        try plant.run(400)
        // No flush from the test: the gateway commits its writer's queue before it reads the log.
        try publishFleetModel(h, favouring: 0, seed: 12, version: 100, key: key)
        let started = try first(h, "fleet/t/verdict/t1") { $0["version"] as? Int == 100 }
        #expect(started["verdict"] as? String == "trial_started", "\(started)")

        let store = try ModelStore(dataDirectory: h.dir.url)
        let stored = try #require(ExogenousBaseline.load(from: store.baselineURL(100)), "no models/v100/baseline.json")
        #expect(stored.report.accepted && stored.report.rows == "incumbent" && stored.report.signals == ["y"] && !stored.report.needsLongerLog,
                "\(stored.report)")
        // Exactly what a retraining would have fitted on this log (no tick ran since).
        let rows = try ExperienceLog.open(path: h.gateway.log.path, create: false).transitions(window: .all)
        #expect(rows.count >= 390, "\(rows.count) rows")
        #expect(stored == ExogenousBaseline.fit(map: h.map, rows: rows, reference: .incumbent))
        let arrived = try first(h, "edgeq/t1/retrain") { $0["phase"] as? String == "fleet_model" && $0["version"] as? Int == 100 }
        let summary = try #require(arrived["baseline"] as? [String: Any], "\(arrived)")
        #expect(summary["accepted"] as? Bool == true && summary["needs_longer_log"] as? Bool == false, "\(summary)")

        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        func trialEvents(_ event: String) -> [[String: Any]] { TrialGatewayTests().trialEvents(h, event) }
        try plant.run(until: { trialEvents("progress").contains { ($0["pairs"] as? Int ?? 0) >= 2 } || !trialEvents("verdict").isEmpty })
        let event = try #require((trialEvents("progress") + trialEvents("verdict")).last { ($0["pairs"] as? Int ?? 0) >= 1 }, "no trial progress")
        #expect(event["version"] as? Int == 100 && event["adjusted"] as? Bool == true, "\(event)")
        let adjustment = try #require(event["adjustment"] as? [String: Any], "\(event)")
        #expect((adjustment["note"] as? String ?? "").hasPrefix("adjusted by the exogenous baseline of y"), "\(adjustment)")
        #expect(adjustment["accepted"] as? Bool == true && (adjustment["held_out_variance_ratio"] as? Double ?? 1) <= 0.8, "\(adjustment)")
    }

    /// On a log too short to check the baseline (300 ticks: 2 placebo pairs of two 60-tick blocks,
    /// 8 needed), a fleet model follows a local candidate's rule: with `adjust: exogenous` it is
    /// stored with its baseline (`needs_longer_log`) but not trialled — a `skipped` trial event
    /// with the reason, the verdict `stored` saying why — and a restart would not call it an
    /// abandoned trial; with `adjust: none` no baseline is fitted and its trial starts, unadjusted.
    @Test(arguments: ["exogenous", "none"])
    func aFleetModelWhoseBaselineNeedsALongerLogIsStoredNotTrialledUnlessTheAdjustmentIsOff(adjust: String) throws {
        let keys = try TempDir()
        let (h, key) = try harness(keys, yaml: Self.weatherYAML(adjust: adjust, block: 60))
        defer { h.stop() }
        let plant = ClosedLoop(h, incumbent: TrialAdjustmentGatewayTests.randomIncumbent(seed: 15),
                               dynamics: TrialAdjustmentGatewayTests.weatherPlant(seed: 16))
        try plant.run(300)
        try publishFleetModel(h, favouring: 0, seed: 12, version: 100, key: key)
        let verdict = try first(h, "fleet/t/verdict/t1") { $0["version"] as? Int == 100 }
        let store = try ModelStore(dataDirectory: h.dir.url)
        func trialEvents(_ event: String) -> [[String: Any]] { TrialGatewayTests().trialEvents(h, event) }
        if adjust == "exogenous" {
            #expect(verdict["verdict"] as? String == "stored", "\(verdict)")
            #expect((verdict["message"] as? String ?? "").contains("not trialled: the log is too short to check the trial's exogenous baseline"), "\(verdict)")
            let baseline = try #require(ExogenousBaseline.load(from: store.baselineURL(100)), "no models/v100/baseline.json")
            #expect(baseline.report.needsLongerLog && !baseline.report.accepted, "\(baseline.report)")
            let skipped = try first(h, "edgeq/t1/retrain") { $0["phase"] as? String == "trial" && $0["event"] as? String == "skipped" }
            #expect(skipped["version"] as? Int == 100, "\(skipped)")
            #expect((skipped["reason"] as? String ?? "").contains("too short to check the trial's exogenous baseline"), "\(skipped)")
            #expect((skipped["baseline"] as? [String: Any])?["needs_longer_log"] as? Bool == true, "\(skipped)")
            _ = h.drain(0.5)
            #expect(trialEvents("started").isEmpty && trialEvents("queued").isEmpty)
            #expect(h.gateway.trialRunning.load(ordering: .relaxed) == false)
            // The retained manifest seen again after a restart: it had no trial, nothing to say.
            #expect(h.gateway.standingVerdict(100) == nil)
        } else {
            #expect(verdict["verdict"] as? String == "trial_started", "\(verdict)")
            #expect(!FileManager.default.fileExists(atPath: store.baselineURL(100).path), "a baseline was fitted with the adjustment off")
            #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
            try plant.run(until: { !trialEvents("progress").isEmpty || !trialEvents("verdict").isEmpty })
            let event = try #require((trialEvents("progress") + trialEvents("verdict")).first, "no trial progress")
            #expect(event["version"] as? Int == 100 && event["adjusted"] as? Bool == false, "\(event)")
            let note = (event["adjustment"] as? [String: Any])?["note"] as? String ?? ""
            #expect(note.contains("learning.promotion.trial.adjust: none"), "\(note)")
            #expect(trialEvents("skipped").isEmpty)
        }
    }
}
