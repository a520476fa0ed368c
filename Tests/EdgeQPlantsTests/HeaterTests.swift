import EdgeQPlants
import Foundation
import Testing

/// A heater without disturbances or random setpoint changes (ambient fixed at its mean,
/// no drafts, no sensor noise) for step tests.
func quietHeater(seed: UInt64 = 1, noise: Bool = false) -> Heater {
    var p = Heater.Parameters()
    p.ambientSigma = 0
    p.ambientNoiseSigma = 0
    if !noise { p.sensorNoise = 0 }
    p.setpointMeanWaitSeconds = .infinity   // the operators never change it by themselves
    return Heater(seed: seed, parameters: p)
}

/// Runs the PI for `steps` steps (shifts restart as in the simulator); returns the sum of
/// the plant's rewards.
func runHeaterPI(_ h: inout Heater, _ pi: inout HeaterPI, steps: Int, observe: (Heater, Int) -> Void = { _, _ in }) -> Double {
    var total = 0.0
    for _ in 0..<steps {
        let level = pi.decide(h.observation)
        total += h.step(level: level).reward
        observe(h, level)
        _ = h.startNextShiftIfEnded()
    }
    return total
}

@Suite struct HeaterTests {
    @Test func sameSeedSameRunOtherSeedOtherSetpointsAndTheSetpointsAreExogenous() {
        var a = Heater(seed: 3)
        var b = Heater(seed: 3)
        var c = Heater(seed: 4)
        var hot = Heater(seed: 3)
        var sa: [HeaterStep] = []
        var sb: [HeaterStep] = []
        var setpointsC: [Double] = []
        var setpointsHot: [Double] = []
        for i in 0..<2000 {
            sa.append(a.step(level: i % 5))
            sb.append(b.step(level: i % 5))
            setpointsC.append(c.step(level: i % 5).setpoint)
            // Full power all the time: the setpoints and the ambient do not depend on the actions.
            let s = hot.step(level: 4)
            setpointsHot.append(s.setpoint)
            #expect(s.ambientTemp == sa[i].ambientTemp)
            _ = a.startNextShiftIfEnded()
            _ = b.startNextShiftIfEnded()
            _ = c.startNextShiftIfEnded()
            _ = hot.startNextShiftIfEnded()
        }
        #expect(sa == sb)
        #expect(sa.map(\.setpoint) != setpointsC)
        #expect(sa.map(\.setpoint) == setpointsHot)
        #expect(a.score == b.score)
    }

    @Test func theExactStepMatchesAFineIntegrationOfTheODE() {
        // The plant's matrix exponential against RK4 at 0.05 s on the same equations, with the
        // heater at full power from the plant's initial steady state (the delay line holds the
        // steady power for the first 3 minutes).
        var h = quietHeater()
        let p = h.parameters
        var t1 = h.heaterTemp
        var t2 = h.productTemp
        let u0 = h.observation.powerPct / 100
        let ta = h.ambientTemp
        func derivative(_ x1: Double, _ x2: Double, power: Double) -> (Double, Double) {
            ((power - p.coupling * (x1 - x2) - p.heaterLoss * (x1 - ta)) / p.heaterCapacity,
             (p.coupling * (x1 - x2) - p.productLoss * (x2 - ta)) / p.productCapacity)
        }
        for k in 0..<60 {
            _ = h.step(level: 4)
            let power = (k < p.delaySteps ? u0 : 1) * p.maxPowerKW
            let dt = 0.05
            for _ in 0..<Int(p.stepSeconds / dt) {
                let a = derivative(t1, t2, power: power)
                let b = derivative(t1 + dt / 2 * a.0, t2 + dt / 2 * a.1, power: power)
                let c = derivative(t1 + dt / 2 * b.0, t2 + dt / 2 * b.1, power: power)
                let d = derivative(t1 + dt * c.0, t2 + dt * c.1, power: power)
                t1 += dt / 6 * (a.0 + 2 * b.0 + 2 * c.0 + d.0)
                t2 += dt / 6 * (a.1 + 2 * b.1 + 2 * c.1 + d.1)
            }
            #expect(abs(h.heaterTemp - t1) < 1e-9 && abs(h.productTemp - t2) < 1e-9, "step \(k): \(h.productTemp) vs \(t2)")
        }
    }

    @Test func stepResponseHasTheDesignedGainTimeConstantsAndDeadTime() throws {
        // The constants' model: eigenvalues of A computed independently (numpy.linalg.eigvals
        // of [[-(0.15+0.02)/60, 0.15/60], [0.15/20, -(0.15+0.08)/20]]): time constants
        // 960.915 s and 75.229 s; steady gain 90.361 K at full power.
        let m = Heater.model(.init())
        #expect(abs(m.slowTimeConstant - 960.915) < 0.01)
        #expect(abs(m.fastTimeConstant - 75.229) < 0.01)
        #expect(abs(m.gain - 90.361) < 0.001)
        #expect(m.deadTime == 180)

        // Open-loop step test as a plant engineer runs it: heater off until the product sits
        // at ambient, then stage 2 (50 %).
        var h = quietHeater()
        for _ in 0..<1200 { _ = h.step(level: 0) }
        let before = h.productTemp
        #expect(abs(before - 20) < 0.01)
        var trueTemps: [Double] = []
        var measured: [Double] = []
        for _ in 0..<480 {
            measured.append(h.step(level: 2).temp)
            trueTemps.append(h.productTemp)
        }
        // Dead time: the first 6 steps (3 min) show nothing; the 7th shows the heat arriving.
        for k in 0..<6 { #expect(abs(trueTemps[k] - before) < 1e-9, "moved at step \(k + 1)") }
        #expect(trueTemps[6] > before + 1e-4)
        // Gain: half of 90.36 K, read through the 0.293 K sensor.
        #expect(abs((measured.last ?? 0) - (before + 0.5 * m.gain)) <= h.parameters.sensorQuantum)
        // The slow time constant: 63 % of the change 16 + 3 + ~1.25 min after the step.
        let at = trueTemps[Int(((m.slowTimeConstant + m.deadTime + m.fastTimeConstant) / 30).rounded()) - 1]
        #expect(abs((at - before) / (0.5 * m.gain) - 0.632) < 0.03)

        // The two-point identification on the sensor's readings gives the FOPDT the PI is tuned on.
        let f = try #require(FOPDT.identify(response: measured, initial: 20, inputStep: 0.5, sampleSeconds: 30))
        let id = HeaterPI.identifiedModel
        #expect(abs(f.gain / id.gain - 1) < 0.01, "\(f)")
        #expect(abs(f.timeConstant / id.timeConstant - 1) < 0.02, "\(f)")
        #expect(abs(f.deadTime / id.deadTime - 1) < 0.03, "\(f)")
        // SIMC with τc = θ/2 on it: Kc = 942 / (90.1 · 411) per K, Ti = 942 s.
        let tuning = HeaterPI.Parameters.standard
        #expect(abs(tuning.kc - 942.0 / (90.1 * 411)) < 1e-12)
        #expect(tuning.integralTime == 942)
    }

    @Test func theSensorReadsInQuantumSteps() {
        var h = Heater(seed: 8)
        var pi = HeaterPI(heater: h)
        let q = h.parameters.sensorQuantum
        var values = Set<Double>()
        _ = runHeaterPI(&h, &pi, steps: 3000) { heater, _ in
            let t = heater.observation.temp
            let k = t / q
            #expect(abs(k - k.rounded()) < 1e-9, "\(t) is not a multiple of \(q)")
            values.insert(t)
            #expect(abs(t - heater.productTemp) <= q / 2 + 0.25)   // noise 0.05 K: 5σ
        }
        let sorted = values.sorted()
        #expect(zip(sorted, sorted.dropFirst()).allSatisfy { $1 - $0 >= q - 1e-9 })
    }

    @Test func setpointsChangeAtRandomTimesByRandomAmounts() {
        var h = Heater(seed: 21)
        var last = h.observation.setpoint
        var holds: [Int] = []
        var held = 0
        var sizes: Set<Double> = []
        for _ in 0..<(960 * 40) {
            let s = h.step(level: 2)
            held += 1
            if s.setpoint != last {
                #expect(s.setpoint >= 40 && s.setpoint <= 80 && s.setpoint == s.setpoint.rounded())
                #expect(abs(s.setpoint - last) >= 2)
                sizes.insert(s.setpoint - last)
                holds.append(held)
                held = 0
                last = s.setpoint
            }
            _ = h.startNextShiftIfEnded()
        }
        // At least 30 min (60 steps) at a setpoint, then a mean wait of 1 h (120 steps).
        #expect(holds.allSatisfy { $0 >= 60 })
        let mean = Double(holds.reduce(0, +)) / Double(holds.count)
        #expect(holds.count > 150 && abs(mean - 180) < 20, "\(holds.count) changes, mean hold \(mean) steps")
        #expect(Set(holds).count > 50 && sizes.count > 40)
        #expect(h.score.setpointChanges == holds.count)
    }

    @Test func rewardIsTheTrackingErrorPlusTheWeightedPower() {
        var h = Heater(seed: 2)
        for i in 0..<300 {
            let s = h.step(level: i % 5)
            #expect(s.powerPct == Double(i % 5) * 25)
            #expect(s.level == i % 5)
            #expect(abs(s.reward - -(abs(s.temp - s.setpoint) + s.powerPct / 100)) < 1e-12)
        }
        #expect(abs(h.score.energyKWh - 300.0 / 5 * (0 + 2.5 + 5 + 7.5 + 10) * 30 / 3600) < 1e-9)
    }

    @Test func shiftsEndEvery960StepsAndThePlantRunsOn() {
        var h = Heater(seed: 6)
        for _ in 0..<959 { #expect(!h.step(level: 2).truncated) }
        let end = h.step(level: 2)
        #expect(end.truncated && end.step == 960 && end.episode == 0)
        let t2 = h.productTemp
        let next = h.startNextShiftIfEnded()
        #expect(next?.step == 0 && next?.episode == 1 && next?.timeS == end.timeS && next?.truncated == false)
        #expect(h.productTemp == t2)        // the same physical state
        #expect(h.startNextShiftIfEnded() == nil)
        #expect(h.score.shiftReturns.count == 1)
    }

    /// The PI after setpoint steps the operators make (40 → 80 → 45 → 62 °C, two hours each,
    /// with the sensor's noise): it settles, holds, and anti-windup keeps the overshoot
    /// after the saturated steps small; the same PI without anti-windup overshoots more.
    @Test func piHoldsTheSetpointAfterStepsWithoutWindupOvershoot() {
        func scenario(antiWindup: Bool) -> (overshoot: [Double], settled: [Double]) {
            var h = quietHeater(noise: true)
            var tuning = HeaterPI.Parameters.standard
            tuning.antiWindup = antiWindup
            var pi = HeaterPI(heater: h, parameters: tuning)
            h.changeSetpoint(to: 40)
            _ = runHeaterPI(&h, &pi, steps: 240)
            var overshoot: [Double] = []
            var settled: [Double] = []
            for target in [80.0, 45, 62] {
                let direction = target > h.setpoint ? 1.0 : -1.0
                h.changeSetpoint(to: target)
                var worst = 0.0
                var errors: [Double] = []
                var k = 0
                _ = runHeaterPI(&h, &pi, steps: 240) { heater, _ in
                    k += 1
                    worst = max(worst, (heater.productTemp - target) * direction)
                    if k > 180 { errors.append(abs(heater.productTemp - target)) }
                }
                overshoot.append(worst)
                settled.append(errors.reduce(0, +) / Double(errors.count))
            }
            return (overshoot, settled)
        }
        let good = scenario(antiWindup: true)
        let wound = scenario(antiWindup: false)
        // The 40 K step up and the 35 K step down saturate the heater (full power, off):
        // with anti-windup the overshoot beyond the new setpoint stays under 1 K. The 17 K
        // step does not saturate: the tight SIMC tuning's linear overshoot, at most 20 %.
        let message = "overshoot \(good.overshoot), without anti-windup \(wound.overshoot), settled \(good.settled)"
        #expect(good.overshoot[0] <= 1.0 && good.overshoot[1] <= 1.0, "\(message)")
        #expect(zip(good.overshoot, [40.0, 35, 17]).allSatisfy { $0 <= 0.2 * $1 }, "\(message)")
        // The last half hour of each 2-hour hold: within 0.2 K on average (the sensor's step is 0.29 K).
        #expect(good.settled.allSatisfy { $0 <= 0.2 }, "\(message)")
        // Without anti-windup the saturated steps overshoot by several kelvin.
        #expect(wound.overshoot[0] > 4 && wound.overshoot[1] > 4, "\(message)")
    }

    /// "Well tuned", checked: no PI on a grid of Kc and Ti ×0.5…×2 around the incumbent's
    /// tuning scores more than 1 % better on the plant's reward (5 seeds × 3 shifts), and the
    /// error-feedback staging beats the nearest stage.
    @Test func incumbentIsNearTheBestPIOnAGrid() {
        func score(_ tuning: HeaterPI.Parameters) -> Double {
            var total = 0.0
            for seed: UInt64 in 0..<5 {
                var h = Heater(seed: seed)
                var pi = HeaterPI(heater: h, parameters: tuning)
                total += runHeaterPI(&h, &pi, steps: 960 * 3)
            }
            return total
        }
        let standard = HeaterPI.Parameters.standard
        let incumbent = score(standard)
        var best = incumbent
        for a in [0.5, 0.7, 0.85, 1.15, 1.4, 2] {
            for b in [0.5, 0.7, 1, 1.4, 2] {
                var t = standard
                t.kc *= a
                t.integralTime *= b
                best = max(best, score(t))
            }
        }
        #expect(best <= incumbent * 0.99, "best \(best), incumbent \(incumbent)")  // rewards are negative
        var nearest = standard
        nearest.staging = .nearest
        let plainQuantiser = score(nearest)
        #expect(plainQuantiser < incumbent * 1.2, "nearest \(plainQuantiser), error feedback \(incumbent)")
    }

    @Test func piTakesOverBumplesslyAfterAGap() {
        var h = quietHeater()
        var pi = HeaterPI(heater: h)
        _ = runHeaterPI(&h, &pi, steps: 200)
        // Someone else holds stage 3 for 20 steps; the PI is not asked.
        for _ in 0..<20 { _ = h.step(level: 3) }
        let obs = h.observation
        _ = pi.decide(obs)
        let e = obs.setpoint - obs.temp
        let expected = min(max(0.75 - pi.parameters.kc * e, 0), 1) + pi.parameters.kc / pi.parameters.integralTime * e * 30
        #expect(abs(pi.integral - expected) < 1e-12, "integral \(pi.integral), expected \(expected)")
        // Asked twice about the same state, it answers the same and integrates once.
        let integral = pi.integral
        _ = pi.decide(obs)
        #expect(pi.integral == integral)
    }
}
