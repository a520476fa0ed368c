import EdgeQLab
import EdgeQLog
import EdgeQModel
import EdgeQPlants
import EdgeQRetrain
import EdgeQTopicMap
import Foundation
import Testing

/// The heater and the mountain car through their shipped mapping files in the lab, in
/// shadow with their deterministic incumbents: the log holds the incumbent's decisions with
/// the mapping's reward and episode flags.
@Suite struct NewPlantsLabTests {
    static func map(_ name: String) throws -> TopicMap {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try TopicMap.load(path: root.appendingPathComponent("topics/\(name).yaml").path)
    }

    @Test func heaterShadowLogHasThePIsStagesAndTheMappingsReward() throws {
        let map = try Self.map("heater")
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("log.sqlite").path
        var plant = HeaterLabPlant(seed: 11)
        let steps = 2 * 960 + 100
        let r = try Lab(map: map).run(&plant, steps: steps, policy: .incumbent(dither: 0), seed: 11, logPath: path)
        let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all).map(\.transition)
        // Every step closes a transition; the two shift ends open none, the next shifts' first states do.
        #expect(rows.count == steps)
        #expect(r.rowsLogged == rows.count)
        #expect(rows.allSatisfy { $0.actor == .incumbent && $0.mode == .shadow && $0.action != nil })
        #expect(rows.filter(\.truncated).count == 2 && rows.allSatisfy { !$0.terminal })
        #expect(Set(rows.map(\.episode)) == [0, 1, 2])
        for (a, b) in zip(rows, rows.dropFirst()) {
            #expect(b.episode == a.episode + (a.truncated ? 1 : 0))
        }
        // The actions logged are the PI's, as the plant module runs it without the lab.
        var heater = Heater(seed: 11)
        var pi = HeaterPI(heater: heater)
        var stages: [Int] = []
        for _ in 0..<steps {
            let level = pi.decide(heater.observation)
            stages.append(level)
            _ = heater.step(level: level)
            _ = heater.startNextShiftIfEnded()
        }
        #expect(rows.map(\.action) == stages)
        #expect(Set(stages).count >= 3)
        // The mapping's reward is the plant's scaled by 0.1.
        #expect(abs(r.mappingReward - 0.1 * r.score.totalReward) < 1e-6 * abs(r.score.totalReward))
        #expect(r.score.episodes == 2)
        // The state is 5 features × 8 ticks of history, all usable: no fallback, no hold.
        #expect(map.stateWidth == 40)
        #expect(rows.allSatisfy { $0.state.count == 40 })
    }

    /// The heater's shipped mapping marks temp controlled, setpoint and ambient_temp exogenous:
    /// its shadow log gives the plant model one segment per shift (the two shift ends split it),
    /// every row used, each sample the heater's own temperature.
    @Test func heaterShadowLogGivesThePlantModelOneSegmentPerShift() throws {
        let map = try Self.map("heater")
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("log.sqlite").path
        var plant = HeaterLabPlant(seed: 5)
        let steps = 2 * 960 + 100
        _ = try Lab(map: map).run(&plant, steps: steps, policy: .incumbent(dither: 0), seed: 5, logPath: path)
        let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all)
        // The readbacks of the applied stage (role applied) are logged with them.
        #expect(rows.allSatisfy { $0.signalNames == ["temp", "setpoint", "ambient_temp", "level", "power_pct"] })

        let (data, summary) = try PlantDataReader(map: map).read(logPath: path)
        #expect(data.controlledNames == ["temp"] && data.exogenousNames == ["setpoint", "ambient_temp"])
        #expect(data.segments.map(\.count) == [961, 961, 101])
        #expect(summary.rowsUsed == rows.count && rows.count == steps)
        #expect(data.segments.flatMap(\.actions) == rows.map { $0.transition.action ?? -1 })
        // Each sample is the heater's own reading, exactly, shift by shift (the lab publishes
        // the state after every step, and a new shift's first state after a shift end).
        var heater = Heater(seed: 5)
        var pi = HeaterPI(heater: heater)
        var shifts: [[[Double]]] = []
        var current = [[heater.observation.temp, heater.observation.setpoint, heater.observation.ambientTemp]]
        for _ in 0..<steps {
            _ = heater.step(level: pi.decide(heater.observation))
            current.append([heater.observation.temp, heater.observation.setpoint, heater.observation.ambientTemp])
            if heater.startNextShiftIfEnded() != nil {
                shifts.append(current)
                current = [[heater.observation.temp, heater.observation.setpoint, heater.observation.ambientTemp]]
            }
        }
        shifts.append(current)
        #expect(data.segments.map { $0.controlled.map { $0[0] } } == shifts.map { $0.map { $0[0] } })
        #expect(data.segments.map(\.exogenous) == shifts.map { $0.map { Array($0[1...]) } })
    }

    @Test func mountainCarShadowLogEndsEveryEpisodeAtTheGoal() throws {
        let map = try Self.map("mountaincar")
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("log.sqlite").path
        var plant = MountainCarLabPlant(seed: 3)
        let r = try Lab(map: map).run(&plant, steps: 1000, policy: .incumbent(dither: 0), seed: 3, logPath: path)
        let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all).map(\.transition)
        #expect(rows.count == 1000)
        #expect(rows.allSatisfy { $0.actor == .incumbent && $0.action != nil && $0.action != 1 })  // the rule never coasts
        // Each finished episode ends terminal (the goal), none truncated; −1 per step.
        #expect(rows.filter(\.terminal).count == plant.episodeReturns.count)
        #expect(plant.episodeReturns.count >= 7)
        #expect(rows.allSatisfy { !$0.truncated && $0.reward == -1 })
        #expect(r.mappingReward == -1000)
        for (a, b) in zip(rows, rows.dropFirst()) {
            #expect(b.episode == a.episode + (a.terminal ? 1 : 0))
        }
        #expect(plant.episodeReturns.allSatisfy { $0 >= -125 && $0 <= -113 })
    }

    /// The incumbents' returns over five seeds, through the lab with the shipped mappings: the
    /// baseline a learned policy must beat (docs/simulators.md quotes these figures).
    @Test func incumbentBaselines() throws {
        var heaterReturns: [Double] = []
        var heaterMapping: [Double] = []
        let heaterMap = try Self.map("heater")
        for seed: UInt64 in 1...5 {
            var plant = HeaterLabPlant(seed: seed)
            let r = try Lab(map: heaterMap).run(&plant, steps: 3 * 960, policy: .incumbent(dither: 0), seed: seed)
            #expect(plant.episodeReturns.count == 3)
            heaterReturns += plant.episodeReturns
            heaterMapping.append(r.mappingReward / 3)
        }
        var carReturns: [Double] = []
        let carMap = try Self.map("mountaincar")
        for seed: UInt64 in 1...5 {
            var plant = MountainCarLabPlant(seed: seed)
            _ = try Lab(map: carMap).run(&plant, steps: 100 * 125, policy: .incumbent(dither: 0), seed: seed)
            carReturns += plant.episodeReturns.prefix(100)
        }
        func mean(_ x: [Double]) -> Double { x.reduce(0, +) / Double(max(x.count, 1)) }
        print(String(format: "heater PI: mean shift return %.1f (plant reward; %d shifts of 960 steps, min %.1f, max %.1f); mapping reward per shift %.2f",
                     mean(heaterReturns), heaterReturns.count, heaterReturns.min() ?? 0, heaterReturns.max() ?? 0, mean(heaterMapping)))
        print(String(format: "mountain car rule: mean episode return %.2f (%d episodes, min %.0f, max %.0f)",
                     mean(carReturns), carReturns.count, carReturns.min() ?? 0, carReturns.max() ?? 0))
        #expect(carReturns.count == 500)
        #expect(abs(mean(carReturns) - -119.4) < 1.5)   // 201 evenly spread starts: −119.40
        #expect(abs(mean(heaterMapping) - 0.1 * mean(heaterReturns)) < 1e-6 * abs(mean(heaterReturns)))
        #expect(heaterReturns.allSatisfy { $0 < 0 })
    }
}

/// Retraining fits the plant model beside the candidate when the mapping marks controlled signals.
@Suite struct RetrainPlantModelTests {
    @Test func aHeaterRetrainingReportsTheLinearModelWellBelowPersistence() throws {
        let map = try NewPlantsLabTests.map("heater")
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("log.sqlite").path
        var plant = HeaterLabPlant(seed: 21)
        _ = try Lab(map: map).run(&plant, steps: 3 * 960, policy: .incumbent(dither: 0), seed: 21, logPath: path)
        let (report, _) = try Retrainer(map: map).train(logPath: path, limits: RetrainLimits(steps: 300), warmStart: nil)
        let fit = try #require(report.plantModel, "no plant model: \(report.plantModelSkipped ?? "no reason given")")
        #expect(fit.controlled == ["temp"])
        #expect(fit.classes.map(\.name) == ["linear", "ensemble"])
        // The heater is linear with a 3-minute dead time: the linear class wins, far below persistence.
        #expect(fit.chosen == "linear")
        let linear = try #require(fit.classes.first { $0.name == "linear" })
        let ratio = try #require(linear.longest?.ratio)
        #expect(ratio < 0.2, "linear at \(linear.longest?.steps ?? 0) ticks: \(ratio) × persistence")
        #expect(fit.refused == nil)
        // The report keeps it (report.json beside the model).
        let decoded = try JSONDecoder().decode(RetrainReport.self, from: report.json())
        #expect(decoded.plantModel == fit)
    }

    /// Too short a log: the model is skipped, and the reason says where the rows went (so a
    /// log whose rows were all flagged as gaps is told apart from one that is just short).
    @Test func aLogTooShortForTheModelSaysWhereItsRowsWent() throws {
        let map = try NewPlantsLabTests.map("heater")
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("log.sqlite").path
        var plant = HeaterLabPlant(seed: 23)
        _ = try Lab(map: map).run(&plant, steps: 25, policy: .incumbent(dither: 0), seed: 23, logPath: path)
        var policy = CheckPolicy()
        policy.minRows = 1
        let (report, _) = try Retrainer(map: map, policy: policy).train(logPath: path, limits: RetrainLimits(steps: 20), warmStart: nil)
        #expect(report.plantModel == nil)
        let reason = try #require(report.plantModelSkipped)
        #expect(reason.contains("usable samples"), "\(reason)")
        #expect(reason.contains("rows read:"), "\(reason)")
        #expect(reason.contains("flagged (gap or applied mismatch)"), "\(reason)")
    }

    @Test func aMappingWithoutControlledSignalsFitsNoModelAndSaysNothingIsWrong() throws {
        // The shipped heater mapping without its roles.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOfFile: root.appendingPathComponent("topics/heater.yaml").path, encoding: .utf8)
            .replacingOccurrences(of: ", role: applied, applied: [0, 25, 50, 75, 100]", with: "")
            .replacingOccurrences(of: ", role: applied", with: "")
            .replacingOccurrences(of: ", role: controlled", with: "")
            .replacingOccurrences(of: ", role: exogenous", with: "")
        #expect(!text.contains("role:"))
        let map = try TopicMap.parse(yaml: text)
        let dir = try LabTests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("log.sqlite").path
        var plant = HeaterLabPlant(seed: 22)
        _ = try Lab(map: map).run(&plant, steps: 400, policy: .incumbent(dither: 0), seed: 22, logPath: path)
        let (report, _) = try Retrainer(map: map).train(logPath: path, limits: RetrainLimits(steps: 50), warmStart: nil)
        #expect(report.plantModel == nil && report.plantModelSkipped == nil)
    }
}
