import EdgeQCore
import EdgeQModel
import EdgeQPlants
import Foundation
import Testing

/// The plant model selection and its fit report (docs/learning.md, "The plant model").
@Suite struct SelectionTests {
    /// A controlled signal that is a slow random walk the actions do not move: no model
    /// beats persistence, and the fit is refused with the figures. Measured: the best linear
    /// fit was 1.09 / 1.01 / 1.12 × persistence at 60 ticks (seeds 1, 2, 3).
    @Test(arguments: [UInt64(1), 2, 3])
    func refusesAModelNotBetterThanPersistence(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        var level = 20.0
        var segments: [PlantSegment] = []
        for _ in 0..<4 {
            var y: [[Double]] = [], e: [[Double]] = [], a: [Int] = []
            for t in 0..<720 {
                level += 0.05 * rng.nextGaussian()
                y.append([level + 0.02 * rng.nextGaussian()])
                e.append([rng.nextGaussian()])
                if t < 719 { a.append(Int(rng.next() % 3)) }
            }
            segments.append(PlantSegment(controlled: y, exogenous: e, actions: a))
        }
        let data = try PlantData(controlledNames: ["level"], exogenousNames: ["noise"], actionCount: 3, segments: segments)
        let selection = PlantModelSelection(fitters: [LinearPlantFitter()])
        let error = #expect(throws: PlantModelError.self) { try selection.select(data) }
        guard case .notBetterThanPersistence(let figures) = error else {
            Issue.record("expected notBetterThanPersistence, got \(String(describing: error))")
            return
        }
        #expect(figures.contains("persistence at 60 ticks"))
        let choice = try selection.evaluate(data)
        #expect(choice.model == nil)
        #expect(choice.report.refused == figures)
        let ratio = try #require(choice.report.classes.first?.longest?.ratio)
        #expect(ratio >= 1)
    }

    /// Two classes: the linear search against a fitter with the dead time forced wrong (0
    /// instead of 6 ticks). The selection keeps the linear one; the report holds both
    /// classes' figures under stable JSON keys.
    @Test func picksTheBetterOfTwoFitters() throws {
        let data = try HeaterLog.record(seed: 2, shifts: 6)
        let wrong = WrongDelayFitter()
        let selection = PlantModelSelection(fitters: [wrong, LinearPlantFitter()], horizons: [1, 10, 60])
        let (model, report) = try selection.select(data)
        #expect(report.chosen == "linear")
        #expect(model.description.hasPrefix("linear("))
        #expect(report.refused == nil)
        #expect(report.classes.map(\.name) == ["wrong-delay", "linear"])
        #expect(report.horizons == [1, 10, 60])
        #expect(report.trainingSamples + report.heldOutSamples == data.sampleCount)
        let good = try #require(report.classes[1].longest), bad = try #require(report.classes[0].longest)
        let goodRatio = try #require(good.ratio), badRatio = try #require(bad.ratio)
        #expect(goodRatio < badRatio, "linear \(goodRatio), wrong delay \(badRatio)")
        #expect(goodRatio < 0.1)
        #expect(good.persistenceNormalized == bad.persistenceNormalized)   // the same windows

        let json = try JSONEncoder().encode(report)
        #expect(try JSONDecoder().decode(PlantFitReport.self, from: json) == report)
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        #expect(Set(object.keys).isSuperset(of: ["controlled", "horizons", "training_samples", "held_out_samples", "windows", "classes", "chosen"]))
        let classes = try #require(object["classes"] as? [[String: Any]])
        let horizon = try #require((classes.first?["horizons"] as? [[String: Any]])?.last)
        #expect(Set(horizon.keys) == ["steps", "outputs", "model_nrmse", "persistence_nrmse", "ratio"])
        let output = try #require((horizon["outputs"] as? [[String: Any]])?.first)
        #expect(Set(output.keys) == ["signal", "model_rmse", "persistence_rmse", "ratio", "held_out_sd"])
    }

    @Test func splitByTimeKeepsTheOrder() throws {
        let a = PlantSegment(controlled: (0..<10).map { [Double($0)] }, exogenous: (0..<10).map { _ in [] }, actions: Array(repeating: 0, count: 9))
        let b = PlantSegment(controlled: (10..<20).map { [Double($0)] }, exogenous: (0..<10).map { _ in [] }, actions: Array(repeating: 1, count: 9))
        let data = try PlantData(controlledNames: ["y"], exogenousNames: [], actionCount: 2, segments: [a, b])
        let (train, held) = data.splitByTime(heldOutFraction: 0.25)
        #expect(train.sampleCount == 15 && held.sampleCount == 5)
        #expect(train.segments.count == 2 && held.segments.count == 1)
        #expect(train.segments[1].controlled.map { $0[0] } == [10, 11, 12, 13, 14])
        #expect(held.segments[0].controlled.map { $0[0] } == [15, 16, 17, 18, 19])
        #expect(held.segments[0].actions.count == 4 && train.segments[1].actions.count == 4)
        // Shapes stay valid.
        _ = try PlantData(controlledNames: train.controlledNames, exogenousNames: [], actionCount: 2, segments: train.segments)
        _ = try PlantData(controlledNames: held.controlledNames, exogenousNames: [], actionCount: 2, segments: held.segments)
    }

    @Test func tooShortToHoldOutIsNotEnoughData() throws {
        let data = try HeaterLog.record(seed: 1, shifts: 1)
        let short = try PlantData(controlledNames: data.controlledNames, exogenousNames: data.exogenousNames, actionCount: data.actionCount,
                                  segments: [PlantSegment(controlled: Array(data.segments[0].controlled[..<200]),
                                                          exogenous: Array(data.segments[0].exogenous[..<200]),
                                                          actions: Array(data.segments[0].actions[..<199]))])
        let error = #expect(throws: PlantModelError.self) { try PlantModelSelection(fitters: [LinearPlantFitter()]).select(short) }
        guard case .notEnoughData = error else { Issue.record("expected notEnoughData, got \(String(describing: error))"); return }
    }
}

/// A deliberately poor class: the linear model with the dead time forced to 0.
struct WrongDelayFitter: PlantModelFitter {
    var name: String { "wrong-delay" }
    func fit(_ data: PlantData, seed: UInt64) throws(PlantModelError) -> any PlantModel {
        try LinearPlantFitter(name: name, fixedStructure: LinearStructure(na: 2, nb: 2, delay: 0)).fit(data, seed: seed)
    }
}
