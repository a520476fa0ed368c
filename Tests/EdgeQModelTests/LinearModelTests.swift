import EdgeQCore
import EdgeQModel
import EdgeQPlants
import Foundation
import Testing

/// The linear model with dead time (docs/learning.md, "The plant model").
@Suite struct LinearModelTests {
    /// The heater (second order, 3-minute transport delay, 0.293 K sensor quantum) run by its
    /// deterministic PI through its own setpoint changes for six 8-hour shifts: the free-run
    /// fit finds the dead time exactly and the gain and both time constants within 5 %.
    /// Measured (seeds 1, 2, 3): delay 6 ticks; gain 90.26 / 90.56 / 90.21 K against 90.36;
    /// slow τ 961 / 963 / 959 s against 961; fast τ 74.6 / 73.5 / 75.5 s against 75.2.
    @Test(arguments: [UInt64(1), 2, 3])
    func recoversTheHeatersGainTimeConstantsAndDeadTime(seed: UInt64) throws {
        let parameters = Heater.Parameters()
        let truth = Heater.model(parameters)
        let data = try HeaterLog.record(seed: seed, shifts: 6)
        let model = try LinearPlantFitter().fitLinear(data)

        #expect(model.structure.delay == parameters.delaySteps)
        #expect(Double(model.structure.delay) * parameters.stepSeconds == truth.deadTime)
        for (action, level) in parameters.levels.enumerated().dropFirst() {
            let gain = try #require(model.steadyStateGain(action: action)?.first)
            #expect(abs(gain / (level * truth.gain) - 1) < 0.05, "stage \(action): \(gain) K against \(level * truth.gain) K")
        }
        let taus = try #require(model.timeConstants(stepSeconds: parameters.stepSeconds))
        try #require(taus.count == 2, "poles \(model.poles ?? [])")
        #expect(abs(taus[0] / truth.slowTimeConstant - 1) < 0.05, "slow τ \(taus[0]) s against \(truth.slowTimeConstant) s")
        #expect(abs(taus[1] / truth.fastTimeConstant - 1) < 0.05, "fast τ \(taus[1]) s against \(truth.fastTimeConstant) s")
    }

    /// The same log, the same structure (na = 2, nb = 2, d = 6): the one-step least-squares
    /// fit (ARX) is biased by the quantised sensor — wrong gain, wrong time constants and a
    /// held-out free-run error several times the output-error fit's. Measured (seed 1, RMSE at
    /// 1 / 10 / 60 ticks): output error 0.11 / 0.11 / 0.10 K, one-step 0.26 / 0.62 / 1.09 K,
    /// persistence 0.30 / 2.34 / 8.15 K; one-step gain 131 K against 90.4 K.
    @Test func outputErrorFitBeatsTheOneStepFitInFreeRun() throws {
        let data = try HeaterLog.record(seed: 1, shifts: 6)
        let structure = LinearStructure(na: 2, nb: 2, delay: 6)
        let outputError = LinearPlantFitter(name: "output-error", fixedStructure: structure)
        let oneStep = LinearPlantFitter(name: "one-step", fixedStructure: structure, criterion: .oneStep)
        let choice = try PlantModelSelection(fitters: [outputError, oneStep]).evaluate(data)
        let report = choice.report
        #expect(report.chosen == "output-error")
        #expect(report.refused == nil)
        let oe = try #require(report.classes.first { $0.name == "output-error" })
        let os = try #require(report.classes.first { $0.name == "one-step" })
        for (a, b) in zip(oe.horizons, os.horizons) where a.steps > 1 {
            let ma = try #require(a.outputs.first?.modelRMSE), mb = try #require(b.outputs.first?.modelRMSE)
            #expect(ma * 2 < mb, "at \(a.steps) ticks: output error \(ma) K, one-step \(mb) K")
        }
        let gainOneStep = try #require(oneStep.fitLinear(data).steadyStateGain(action: 4)?.first)
        let gainOutputError = try #require(outputError.fitLinear(data).steadyStateGain(action: 4)?.first)
        let truth = Heater.model(Heater.Parameters()).gain
        #expect(abs(gainOneStep / truth - 1) > 0.2, "one-step gain \(gainOneStep) K")
        #expect(abs(gainOutputError / truth - 1) < 0.05, "output-error gain \(gainOutputError) K")
    }

    /// An exact linear system with dead time, an action gain per action and a lagged
    /// exogenous input, no noise: the fit returns its coefficients, and a rollout started
    /// anywhere reproduces the data (the tick conventions of actions, delay and exogenous
    /// signals agree between the fit, the rollout and `PlantSegment`).
    @Test func exactSystemIsReproducedByTheRollout() throws {
        var rng = SeededGenerator(seed: 7)
        var segments: [PlantSegment] = []
        for _ in 0..<3 {
            var y: [[Double]] = [[5], [5], [5], [5], [5]]
            var e: [[Double]] = (0..<5).map { _ in [rng.nextGaussian()] }
            var a: [Int] = (0..<4).map { _ in Int(rng.next() % 3) }
            for t in 4..<400 {
                a.append(Int(rng.next() % 3))   // a[t]
                let gain = [0.0, 1.5, -2.0]
                let next = 1.2 * y[t][0] - 0.35 * y[t - 1][0] + gain[a[t - 3]] + 0.4 * gain[a[t - 4]]
                    + 0.5 * e[t][0] - 0.2 * e[t - 1][0] + 0.7
                y.append([next])
                e.append([rng.nextGaussian()])
            }
            segments.append(PlantSegment(controlled: y, exogenous: e, actions: a))
        }
        let data = try PlantData(controlledNames: ["y"], exogenousNames: ["e"], actionCount: 3, segments: segments)
        let structure = LinearStructure(na: 2, nb: 2, delay: 3)
        let model = try LinearPlantFitter(fixedStructure: structure).fitLinear(data)
        #expect(abs(model.a[0][0] - 1.2) < 1e-6 && abs(model.a[1][0] + 0.35) < 1e-6)
        #expect(abs(model.b[0][1] - 1.5) < 1e-6 && abs(model.b[0][2] + 2.0) < 1e-6 && model.b[0][0] == 0)
        #expect(abs(model.b[1][1] - 0.6) < 1e-6 && abs(model.b[1][2] + 0.8) < 1e-6)
        #expect(abs(model.c[0][0] - 0.5) < 1e-6 && abs(model.c[1][0] + 0.2) < 1e-6)
        #expect(abs(model.offset[0] - 0.7) < 1e-6)
        let expectedGain = (1.5 + 0.6) / (1 - 1.2 + 0.35)
        #expect(abs((model.steadyStateGain(action: 1)?.first ?? 0) - expectedGain) < 1e-5)

        let seg = segments[1]
        for start in [model.memory - 1, 100, 250] {
            var r = model.rollout(from: seg, at: start)
            #expect(r.controlled == seg.controlled[start])
            for t in start..<(start + 60) {
                let y = r.step(action: seg.actions[t], actionCount: 3, exogenous: seg.exogenous[t])
                #expect(abs(y[0] - seg.controlled[t + 1][0]) < 1e-6, "start \(start), tick \(t + 1)")
            }
        }
    }

    /// Two coupled outputs (each output's lag drives the other), one exogenous input, exact:
    /// the fit and the rollout agree with the system (the multi-output bookkeeping).
    @Test func coupledOutputsAreReproduced() throws {
        var rng = SeededGenerator(seed: 9)
        var segments: [PlantSegment] = []
        for _ in 0..<2 {
            var y: [[Double]] = [[1, 2], [1, 2], [1, 2]]
            var e: [[Double]] = (0..<3).map { _ in [rng.nextGaussian()] }
            var a: [Int] = (0..<2).map { _ in Int(rng.next() % 2) }
            for t in 2..<500 {
                a.append(Int(rng.next() % 2))
                let u = Double(a[t - 2])
                let y0 = 0.7 * y[t][0] + 0.2 * y[t][1] + 1.0 * u + 0.3 * e[t][0] + 0.1
                let y1 = -0.1 * y[t][0] + 0.8 * y[t][1] + 0.5 * u - 0.2 * e[t][0] + 0.4
                y.append([y0, y1])
                e.append([rng.nextGaussian()])
            }
            segments.append(PlantSegment(controlled: y, exogenous: e, actions: a))
        }
        let data = try PlantData(controlledNames: ["a", "b"], exogenousNames: ["e"], actionCount: 2, segments: segments)
        let model = try LinearPlantFitter(fixedStructure: LinearStructure(na: 1, nb: 1, delay: 2)).fitLinear(data)
        let expected: [Double] = [0.7, 0.2, -0.1, 0.8]
        for k in 0..<4 { #expect(abs(model.a[0][k] - expected[k]) < 1e-6, "A[\(k)] = \(model.a[0][k])") }
        #expect(abs(model.b[0][1] - 1.0) < 1e-6 && abs(model.b[0][3] - 0.5) < 1e-6)
        #expect(model.poles == nil)
        // Steady state: (I − A)⁻¹·B with I − A = [[0.3, −0.2], [0.1, 0.2]] (gains 3.75 and 0.625).
        let gain = try #require(model.steadyStateGain(action: 1))
        let det = (1 - 0.7) * (1 - 0.8) - (-0.2) * 0.1
        #expect(abs(gain[0] - ((1 - 0.8) * 1.0 + 0.2 * 0.5) / det) < 1e-5)
        #expect(abs(gain[1] - (-0.1 * 1.0 + (1 - 0.7) * 0.5) / det) < 1e-5)
        let seg = segments[1]
        var r = model.rollout(from: seg, at: 200)
        for t in 200..<260 {
            let y = r.step(action: seg.actions[t], actionCount: 2, exogenous: seg.exogenous[t])
            #expect(abs(y[0] - seg.controlled[t + 1][0]) < 1e-6 && abs(y[1] - seg.controlled[t + 1][1]) < 1e-6)
        }
    }

    /// A rollout is a value: a copy steps on its own future and leaves the original as it was.
    @Test func rolloutCopiesBranch() throws {
        let data = try HeaterLog.record(seed: 4, shifts: 3)
        let model = try LinearPlantFitter(fixedStructure: LinearStructure(na: 2, nb: 2, delay: 6)).fitLinear(data)
        let seg = data.segments[1]
        let start = 400
        let root = model.rollout(from: seg, at: start)
        var off = root, full = root
        var lastOff: [Double] = [], lastFull: [Double] = []
        for t in start..<(start + 30) {
            lastOff = off.step(action: 0, actionCount: 5, exogenous: seg.exogenous[t])
            lastFull = full.step(action: 4, actionCount: 5, exogenous: seg.exogenous[t])
        }
        #expect(lastFull[0] - lastOff[0] > 10, "full power \(lastFull[0]) °C, off \(lastOff[0]) °C after 15 minutes")
        #expect(root.controlled == seg.controlled[start])
        #expect(root.uncertainty == 0)
        // The first `delay` steps cannot tell the two apart (the dead time).
        var a = root, b = root
        for t in start..<(start + 6) {
            let ya = a.step(action: 0, actionCount: 5, exogenous: seg.exogenous[t])
            let yb = b.step(action: 4, actionCount: 5, exogenous: seg.exogenous[t])
            #expect(ya == yb, "tick \(t + 1)")
        }
        let ya = a.step(action: 0, actionCount: 5, exogenous: seg.exogenous[start + 6])
        let yb = b.step(action: 4, actionCount: 5, exogenous: seg.exogenous[start + 6])
        #expect(yb[0] > ya[0])
    }

    @Test func tooShortDataIsNotEnough() throws {
        let seg = PlantSegment(controlled: (0..<12).map { [Double($0)] }, exogenous: (0..<12).map { _ in [] }, actions: Array(repeating: 0, count: 11))
        let data = try PlantData(controlledNames: ["y"], exogenousNames: [], actionCount: 2, segments: [seg])
        let error = #expect(throws: PlantModelError.self) { try LinearPlantFitter().fitLinear(data) }
        guard case .notEnoughData = error else { Issue.record("expected notEnoughData, got \(String(describing: error))"); return }
    }
}
