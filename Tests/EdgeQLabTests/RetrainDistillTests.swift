import EdgeQCore
import EdgeQLab
import EdgeQLog
import EdgeQModel
import EdgeQNet
import EdgeQPlants
@testable import EdgeQRetrain
import EdgeQTopicMap
import Foundation
import Testing

/// A plant whose one controlled signal is a slow random walk no action moves: no model predicts
/// it better than persistence, so retraining refuses the plant model.
struct DriftTestPlant: LabPlant {
    let stateTopic = "plant/drift/state"
    let commandTopic = "plant/drift/cmd"
    let commandKey = "valve"
    let actionCount = 3
    var rng: SeededGenerator
    var level = 20.0
    var noise = 0.0
    var steps = 0
    init(seed: UInt64) { rng = SeededGenerator(seed: seed) }
    func stateJSON() -> [UInt8] {
        Array(#"{"step":\#(steps),"level":\#(level),"noise":\#(noise)}"#.utf8)
    }
    mutating func incumbentAction() -> Int { Int(rng.next() % 3) }
    mutating func step(_ action: Int) {
        level += 0.05 * rng.nextGaussian()
        noise = rng.nextGaussian()
        steps += 1
    }
    mutating func startNextEpisodeIfEnded() -> Bool { false }
    var score: LabScore { LabScore() }
}

/// Distillation in retraining (docs/learning.md, "Distillation in retraining";
/// `learning.distill`): the heater's PI logged through the shipped topics/heater.yaml into a
/// real SQLite log, retrained with a short budget; the distilled candidate, its agreement with
/// its teacher, the report's fields, the choice; distillation off changes nothing; a refused
/// plant model skips it with the reason.
@Suite struct RetrainDistillTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// topics/heater.yaml with `distill` (a YAML flow mapping, or nil for none) in its `learning` section.
    static func heaterMap(distill: String?) throws -> TopicMap {
        var text = try String(contentsOf: root.appendingPathComponent("topics/heater.yaml"), encoding: .utf8)
        if let distill {
            text = text.replacingOccurrences(of: "learning:\n  hidden: [64, 64]\n", with: "learning:\n  hidden: [64, 64]\n  distill: \(distill)\n")
            #expect(text.contains("distill:"))
        }
        return try TopicMap.parse(yaml: text, file: "heater.yaml")
    }

    /// Fast checks: no fitted Q evaluation (a figure, not a check).
    static func policy(_ map: TopicMap) -> CheckPolicy {
        var p = CheckPolicy(map.learning)
        p.fqeUpdates = 0
        return p
    }

    /// Four shifts of the heater's PI (no dither, seed 1000) through the mapping into a log.
    static let heaterLog: Result<(dir: URL, path: String), any Error> = Result {
        let map = try heaterMap(distill: nil)
        let dir = try LabTests.tempDir()
        let path = dir.appendingPathComponent("log.sqlite").path
        var plant = HeaterLabPlant(seed: 1000)
        _ = try Lab(map: map).run(&plant, steps: 4 * Heater.Parameters().episodeSteps, policy: .incumbent(dither: 0), seed: 1000, logPath: path)
        return (dir, path)
    }

    static let distillSettings = "{enabled: true, horizon: 32, states: 600, updates: 10000}"

    /// One retraining with distillation on, shared by the tests that read it.
    static let distilled: Result<(map: TopicMap, outcome: Retrainer.Outcome, seconds: Double), any Error> = Result {
        let (dir, path) = try heaterLog.get()
        let map = try heaterMap(distill: distillSettings)
        let t0 = Date()
        let outcome = try Retrainer(map: map, policy: policy(map)).runWithPlantModel(
            logPath: path, limits: RetrainLimits(steps: 500), warmStart: nil, output: dir.appendingPathComponent("candidate.safetensors"))
        return (map, outcome, Date().timeIntervalSince(t0))
    }

    /// The teacher's values on the newest tenth of the log (the rows retraining holds out: the
    /// student never trained on them), every 4th.
    static func freshTeacherSamples(map: TopicMap, model: any PlantModel, path: String) throws -> [Distillation.Example] {
        let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all)
        let cut = rows.count - rows.count / 10
        let teacher = try PlanTeacher(map: map, model: model, horizon: map.learning.distill.horizon)
        return try teacher.samples(rows: rows, every: 4, include: { $0 >= cut }).map(\.example)
    }

    @Test func distilledCandidateAgreesWithItsTeacherWhereAnUntrainedNetworkDoesNot() throws {
        let (map, outcome, seconds) = try Self.distilled.get()
        let report = outcome.report
        let d = try #require(report.distill)
        #expect(d.skipped == nil, "\(d.skipped ?? "")")
        let student = try #require(outcome.distilledCandidate)
        let model = try #require(outcome.plantModel)
        let held = try #require(d.agreementHeldOut)
        let examples = try Self.freshTeacherSamples(map: map, model: model, path: try Self.heaterLog.get().path)
        let tolerance = held.tolerance
        let trained = Distillation.agreement(student, precision: .mixed, on: examples, tolerance: tolerance)
        // An untrained network of the same shape, normalisation and quantization (0 updates).
        let untrained = try Distillation.train(examples, actionNames: map.actions.map(\.name),
                                               configuration: .init(hidden: map.learning.hidden, updates: 0, seed: 7)).model
        let random = Distillation.agreement(untrained, precision: .mixed, on: examples, tolerance: tolerance)
        print(String(format: "distilled in retraining (%.1f s all): %d states valued (%d held out), teacher %.1f s, %d updates %.1f s; held-out strict %.1f%%, within %.3g %.1f%%, mean regret %.4f; fresh %d states: strict %.1f%%, tolerant %.1f%%, regret %.4f; untrained strict %.1f%%, tolerant %.1f%%, regret %.4f; verdict %@ (dqn %@), chosen %@: %@",
                     seconds, d.statesValued, d.heldOutStates, d.teacherSeconds, d.updates, d.trainSeconds, held.strict * 100, held.tolerance, held.tolerant * 100, held.meanRegret,
                     trained.states, trained.strict * 100, trained.tolerant * 100, trained.meanRegret, random.strict * 100, random.tolerant * 100, random.meanRegret,
                     d.verdict ?? "-", d.dqnVerdict ?? "-", d.chosen, d.why))
        #expect(trained.states >= 50)
        #expect(held.states >= 50)
    }
}
