import EdgeQGateway
import EdgeQLab
import EdgeQLog
import EdgeQModel
import EdgeQPlants
import EdgeQRetrain
import EdgeQTopicMap
import Foundation
import Testing

/// The plant model fit kept between retrainings (docs/learning.md, "The plant model"): the
/// heater's PI logged through the shipped topics/heater.yaml into a real SQLite log that grows
/// between three retrainings — the second, on a log grown by less than half the samples of the
/// first fit, reuses it; the third, after more than half, refits.
@Suite struct PlantModelReuseTests {
    /// Fast retrainings: no fitted Q evaluation (a figure, not a check).
    static func policy(_ map: TopicMap) -> CheckPolicy {
        var p = CheckPolicy(map.learning)
        p.fqeUpdates = 0
        return p
    }

    @Test func aLogGrownByLessThanTheShareReusesTheFitAndMoreRefits() throws {
        let map = try NewPlantsLabTests.map("heater")
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("log.sqlite").path
        let output = dir.appendingPathComponent("candidate.safetensors")
        let retrainer = Retrainer(map: map, policy: Self.policy(map))
        #expect(retrainer.policy.plantModelRefitShare == 0.5)
        var plant = HeaterLabPlant(seed: 31)
        let lab = Lab(map: map)

        // 1. One shift logged: no kept fit, so it fits.
        _ = try lab.run(&plant, steps: 960, policy: .incumbent(dither: 0), seed: 31, logPath: path)
        let first = try retrainer.runWithPlantModel(logPath: path, limits: RetrainLimits(steps: 50), warmStart: nil, output: output)
        let firstReport = try #require(first.report.plantModel, "no plant model: \(first.report.plantModelSkipped ?? "no reason given")")
        let fit = try #require(first.plantFit, "the fit was not accepted: \(firstReport.refused ?? "no reason given")")
        #expect(!firstReport.reused)
        let fittedOn = try #require(firstReport.fittedOnSamples)
        #expect(fittedOn == fit.fittedOnSamples)
        #expect(fittedOn == firstReport.trainingSamples + firstReport.heldOutSamples)
        #expect(fittedOn > 900 && fittedOn <= 961, "\(fittedOn) samples from 960 logged steps")
        #expect(first.report.figures["plant_model_new_samples"] == nil)

        // 2. 300 more steps: fewer than half the samples of the fit, so it is reused — the same
        //    model and report, flagged; the plant data are read anew (they include the new steps).
        _ = try lab.run(&plant, steps: 300, policy: .incumbent(dither: 0), seed: 32, logPath: path)
        let second = try retrainer.runWithPlantModel(logPath: path, limits: RetrainLimits(steps: 50), warmStart: nil, output: output, plantFit: fit)
        let secondReport = try #require(second.report.plantModel)
        #expect(secondReport.reused)
        #expect(secondReport.fittedOnSamples == fittedOn)
        #expect(secondReport.chosen == firstReport.chosen)
        #expect(secondReport.classes == firstReport.classes)
        #expect(second.plantModel?.description == first.plantModel?.description)
        let newSamples = try #require(second.report.figures["plant_model_new_samples"])
        #expect(newSamples > 250 && newSamples < 0.5 * Double(fittedOn), "\(newSamples) new samples")
        let kept = try #require(second.plantFit)
        #expect(kept.lastRowID == fit.lastRowID && kept.fittedOnSamples == fittedOn)
        let readNow = try #require(second.plantData).sampleCount
        #expect(readNow > fittedOn + 250, "the reused fit's retraining read \(readNow) samples")
        // The report keeps both fields (report.json beside the model).
        let decoded = try JSONDecoder().decode(RetrainReport.self, from: second.report.json())
        #expect(decoded.plantModel == secondReport)
        let text = String(decoding: second.report.json(), as: UTF8.self)
        #expect(text.contains(#""reused":true"#) && text.contains(#""fitted_on_samples":\#(fittedOn)"#), "\(text.prefix(400))")

        // 3. 400 more: ~700 new samples since the fit, more than half of it, so it refits on all.
        _ = try lab.run(&plant, steps: 400, policy: .incumbent(dither: 0), seed: 33, logPath: path)
        let third = try retrainer.runWithPlantModel(logPath: path, limits: RetrainLimits(steps: 50), warmStart: nil, output: output, plantFit: kept)
        let thirdReport = try #require(third.report.plantModel)
        #expect(!thirdReport.reused)
        let refitOn = try #require(thirdReport.fittedOnSamples)
        #expect(refitOn > fittedOn + 600, "refitted on \(refitOn) samples")
        let refit = try #require(third.plantFit)
        #expect(refit.fittedOnSamples == refitOn && refit.lastRowID > fit.lastRowID)
        #expect(third.report.figures["plant_model_new_samples"] == nil)
    }

    /// What the fit depends on besides the rows: another sample cap, another window, or a log
    /// that does not reach the fit's newest row refits whatever the growth.
    @Test func aChangedKeyOrAnotherLogRefits() throws {
        let map = try NewPlantsLabTests.map("heater")
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("log.sqlite").path
        let retrainer = Retrainer(map: map, policy: Self.policy(map))
        var plant = HeaterLabPlant(seed: 41)
        _ = try Lab(map: map).run(&plant, steps: 960, policy: .incumbent(dither: 0), seed: 41, logPath: path)
        let first = try retrainer.trainWithPlantModel(logPath: path, limits: RetrainLimits(steps: 20), warmStart: nil)
        let fit = try #require(first.plantFit, "no accepted fit: \(first.report.plantModel?.refused ?? first.report.plantModelSkipped ?? "")")
        let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all)
        let reader = try PlantDataReader(map: map, minimumSamples: 30)
        let key = PlantModelFit.Key(map: map, policy: retrainer.policy, window: nil, seed: retrainer.seed)

        // The same log and key, nothing new: reused.
        #expect(retrainer.plantFitReuse(previous: fit, key: key, rows: rows, reader: reader) == .reuse(newSamples: 0, threshold: 0.5 * Double(fit.fittedOnSamples)))
        // No kept fit; reuse off; another cap; another window; the seed.
        #expect(!retrainer.plantFitReuse(previous: nil, key: key, rows: rows, reader: reader).reuses)
        var off = retrainer.policy
        off.plantModelRefitShare = 0
        #expect(!Retrainer(map: map, policy: off).plantFitReuse(previous: fit, key: key, rows: rows, reader: reader).reuses)
        var capped = retrainer.policy
        capped.plantModelSamples = 500
        #expect(!retrainer.plantFitReuse(previous: fit, key: PlantModelFit.Key(map: map, policy: capped, window: nil, seed: retrainer.seed),
                                         rows: rows, reader: reader).reuses)
        #expect(!retrainer.plantFitReuse(previous: fit, key: PlantModelFit.Key(map: map, policy: retrainer.policy, window: 800, seed: retrainer.seed),
                                         rows: rows, reader: reader).reuses)
        #expect(!retrainer.plantFitReuse(previous: fit, key: PlantModelFit.Key(map: map, policy: retrainer.policy, window: nil, seed: 99),
                                         rows: rows, reader: reader).reuses)
        // Another mapping's roles: the heater without its exogenous signal's role.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOfFile: root.appendingPathComponent("topics/heater.yaml").path, encoding: .utf8)
        let withoutExogenous = text.replacingOccurrences(of: ", role: exogenous", with: "")
        #expect(withoutExogenous != text)
        let other = try TopicMap.parse(yaml: withoutExogenous)
        #expect(!retrainer.plantFitReuse(previous: fit, key: PlantModelFit.Key(map: other, policy: retrainer.policy, window: nil, seed: retrainer.seed),
                                         rows: rows, reader: reader).reuses)
        // Another choice of classes (`model.classes`): a refit, and it tries only those.
        #expect(first.report.plantModel?.classes.map(\.name) == ["linear", "ensemble"])
        let linearOnly = try TopicMap.parse(yaml: text + "\nmodel:\n  classes: [linear]\n")
        #expect(!retrainer.plantFitReuse(previous: fit, key: PlantModelFit.Key(map: linearOnly, policy: retrainer.policy, window: nil, seed: retrainer.seed),
                                         rows: rows, reader: reader).reuses)
        let onlyLinear = try Retrainer(map: linearOnly, policy: Self.policy(linearOnly)).trainWithPlantModel(logPath: path, limits: RetrainLimits(steps: 20), warmStart: nil)
        #expect(onlyLinear.report.plantModel?.classes.map(\.name) == ["linear"], "\(String(describing: onlyLinear.report.plantModel))")
        #expect(onlyLinear.report.plantModel?.chosen == "linear" && onlyLinear.plantModel?.description.hasPrefix("linear") == true)
        // A shorter log (another file): it does not reach the fit's newest row.
        let otherPath = dir.appendingPathComponent("other.sqlite").path
        var otherPlant = HeaterLabPlant(seed: 42)
        _ = try Lab(map: map).run(&otherPlant, steps: 100, policy: .incumbent(dither: 0), seed: 42, logPath: otherPath)
        let otherRows = try ExperienceLog.open(path: otherPath, create: false).transitions(window: .all)
        let decision = retrainer.plantFitReuse(previous: fit, key: key, rows: otherRows, reader: reader)
        guard case .refit(let reason) = decision else {
            Issue.record("a log that does not reach the fit's newest row was reused: \(decision)")
            return
        }
        #expect(reason.contains("does not reach"), "\(reason)")
    }

    /// The fleet learner's retraining (`FleetTrainer.retrainer(for:)`) fits no plant model
    /// unless `learning.distill` uses it — the device's retraining on the same rows does — and
    /// its report says why; it runs no fitted Q evaluation.
    @Test func theFleetLearnersRetrainingFitsAPlantModelOnlyForDistillation() throws {
        let map = try NewPlantsLabTests.map("heater")
        #expect(!map.modelSignals.controlled.isEmpty && !map.learning.distill.enabled)
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("log.sqlite").path
        let output = dir.appendingPathComponent("candidate.safetensors")
        var plant = HeaterLabPlant(seed: 51)
        _ = try Lab(map: map).run(&plant, steps: 960, policy: .incumbent(dither: 0), seed: 51, logPath: path)
        let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all)

        let fleet = FleetTrainer.retrainer(for: map)
        let learner = try fleet.runWithPlantModel(rows: rows, limits: RetrainLimits(steps: 50), warmStart: nil, output: output)
        #expect(learner.report.plantModel == nil && learner.plantModel == nil && learner.plantFit == nil)
        #expect(learner.report.figures["plant_model_seconds"] == nil)
        // Nor the fitted Q evaluation (a figure, not a check); the checks are the device's.
        #expect(fleet.policy.fqeUpdates == 0 && learner.report.figures["fqe_improvement"] == nil)
        #expect(fleet.policy.minAgreement == CheckPolicy(map.learning).minAgreement && !learner.report.checks.isEmpty)
        let why = try #require(learner.report.plantModelSkipped)
        #expect(why.contains("fleet learner") && why.contains("learning.distill"), "\(why)")
        #expect(String(decoding: learner.report.json(), as: UTF8.self).contains("not fitted by the fleet learner"))

        let device = try Retrainer(map: map, policy: Self.policy(map)).runWithPlantModel(rows: rows, limits: RetrainLimits(steps: 50), warmStart: nil, output: output)
        #expect(device.report.plantModel != nil && device.report.plantModelSkipped == nil)

        // With distillation the learner fits one (the distillation is its use).
        let distilling = try RetrainDistillTests.heaterMap(distill: RetrainDistillTests.distillSettings)
        #expect(distilling.learning.distill.enabled && FleetTrainer.retrainer(for: distilling).plantModelOff == nil)
        #expect(fleet.plantModelOff != nil)
    }
}
