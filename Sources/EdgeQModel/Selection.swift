import Foundation

extension PlantData {
    /// Splits by time: the first `1 − heldOutFraction` of the samples (in segment order) and
    /// the rest. A segment across the cut gives its head to the first part and its tail to the
    /// second (the action between them is dropped); nothing is shuffled.
    public func splitByTime(heldOutFraction: Double) -> (training: PlantData, heldOut: PlantData) {
        let fraction = min(max(heldOutFraction, 0), 1)
        let cut = Int((Double(sampleCount) * (1 - fraction)).rounded())
        var first: [PlantSegment] = []
        var second: [PlantSegment] = []
        var seen = 0
        for s in segments {
            if seen + s.count <= cut {
                first.append(s)
            } else if seen >= cut {
                second.append(s)
            } else {
                let k = cut - seen   // 0 < k < s.count
                first.append(PlantSegment(controlled: Array(s.controlled[..<k]), exogenous: Array(s.exogenous[..<k]),
                                          actions: Array(s.actions[..<(k - 1)])))
                second.append(PlantSegment(controlled: Array(s.controlled[k...]), exogenous: Array(s.exogenous[k...]),
                                           actions: Array(s.actions[k...])))
            }
            seen += s.count
        }
        var training = self
        training.segments = first
        var heldOut = self
        heldOut.segments = second
        return (training, heldOut)
    }
}

/// A fitted, accepted plant model and its report, or a refused fit's report.
public struct PlantModelChoice: Sendable {
    /// The chosen class's model, fitted on the training part; nil when refused.
    public var model: (any PlantModel)?
    /// The report (filled whether accepted or refused).
    public var report: PlantFitReport
}

/// Chooses the plant model per plant (docs/learning.md, "The plant model"): fits each class
/// on the first part of the data by time, rolls every class and **persistence** (the
/// controlled signals stay at their last observed value) out in free run from the same
/// held-out starts, and keeps the class with the smallest error at the longest horizon —
/// refusing it when it is not better than persistence there.
///
/// Errors: per output, the RMSE of the free-run prediction exactly `h` ticks after the start
/// (the model fed the logged actions and exogenous signals), in the signal's units and
/// divided by the output's held-out standard deviation; a class's score at a horizon is the
/// mean of the normalised figures over its outputs.
public struct PlantModelSelection: Sendable {
    /// The classes, in report order.
    public var fitters: [any PlantModelFitter]
    /// Horizons in ticks (the longest decides).
    public var horizons: [Int]
    /// Fraction of the samples held out (the last part by time).
    public var heldOutFraction: Double
    /// A free-run window starts every this many held-out samples.
    public var windowStride: Int
    /// The accepted model's score at the longest horizon must be below persistence's times this.
    public var maximumRatio: Double
    /// Seed handed to the fitters.
    public var seed: UInt64

    /// A selection over `fitters`.
    public init(fitters: [any PlantModelFitter], horizons: [Int] = [1, 10, 60], heldOutFraction: Double = 0.25,
                windowStride: Int = 5, maximumRatio: Double = 1, seed: UInt64 = 0) {
        self.fitters = fitters
        self.horizons = horizons
        self.heldOutFraction = heldOutFraction
        self.windowStride = windowStride
        self.maximumRatio = maximumRatio
        self.seed = seed
    }

    /// Horizons that the data's segments can hold: the default 1, 10 and 60 ticks for a
    /// continuing plant; on an episodic plant whose episodes are short (fewer than 8 segments
    /// of 62 samples or more), 1, 5 and 20; shorter still (fewer than 8 of 22), 1, 3 and 8. A
    /// held-out window needs the longest horizon + 2 samples of one segment.
    ///
    /// Then the held-out part (the last `heldOutFraction` by time) must hold at least one window
    /// of the longest horizon after `memory` samples of history (default 34: the linear class's
    /// 20-tick warm-up, its longest dead time of 12 and its orders); where it does not — a short
    /// log, or a gap near its end — the next shorter set is taken.
    public static func horizons(for data: PlantData, heldOutFraction: Double = 0.25, memory: Int = 34) -> [Int] {
        func segments(atLeast n: Int) -> Int { data.segments.filter { $0.count >= n }.count }
        let sets = [[1, 10, 60], [1, 5, 20], [1, 3, 8]]
        var i: Int
        if segments(atLeast: 62) >= 8 || data.segments.count < 8 { i = 0 } else if segments(atLeast: 22) >= 8 { i = 1 } else { i = 2 }
        let longestHeldOut = data.splitByTime(heldOutFraction: heldOutFraction).heldOut.segments.map(\.count).max() ?? 0
        while i < sets.count - 1, let h = sets[i].last, longestHeldOut < memory + h + 2 { i += 1 }
        return sets[i]
    }

    /// Fits, evaluates and chooses.
    /// - Returns: the model and the report.
    /// - Throws: `.notBetterThanPersistence` with the figures when the best class is not better
    ///   than persistence at the longest horizon; `.notEnoughData` when the data are too short
    ///   to fit and hold out (or every class says so); `.badData` from a class that rejects
    ///   the data's shape.
    public func select(_ data: PlantData) throws(PlantModelError) -> (model: any PlantModel, report: PlantFitReport) {
        let choice = try evaluate(data)
        guard let model = choice.model else {
            throw .notBetterThanPersistence(choice.report.refused ?? "no class fitted")
        }
        return (model, choice.report)
    }

    /// Fits, evaluates and chooses, returning the report also when the fit is refused
    /// (`model` nil, `report.refused` says why).
    /// - Throws: `.notEnoughData` and `.badData` as `select` does.
    public func evaluate(_ data: PlantData) throws(PlantModelError) -> PlantModelChoice {
        let hs = Array(Set(horizons.filter { $0 >= 1 })).sorted()
        guard let longest = hs.last else { throw .badData("the selection needs at least one horizon ≥ 1 (have \(horizons))") }
        let (training, heldOut) = data.splitByTime(heldOutFraction: heldOutFraction)
        let need = Int((Double(longest + 2) / max(min(heldOutFraction, 1), 0.01)).rounded(.up))
        guard heldOut.segments.contains(where: { $0.count >= longest + 2 }) else {
            throw .notEnoughData(have: data.sampleCount, need: max(need, data.sampleCount + 1))
        }

        var fitted: [(String, Result<any PlantModel, PlantModelError>)] = []
        for f in fitters {
            do throws(PlantModelError) {
                // Each class sees the models fitted before it on the same data (the ensemble takes
                // the linear class's dead time from them).
                let before = fitted.compactMap { try? $0.1.get() }
                fitted.append((f.name, .success(try f.fit(training, seed: seed, fittedBefore: before))))
            } catch {
                if case .badData = error { throw error }
                fitted.append((f.name, .failure(error)))
            }
        }
        let models = fitted.compactMap { try? $0.1.get() }
        guard !models.isEmpty else {
            for case (_, .failure(let e)) in fitted { throw e }
            throw .badData("the selection was given no model class")
        }

        // Common starts: every class and persistence are scored on the same windows.
        let first = max((models.map(\.memory).max() ?? 1) - 1, 0)
        var starts: [(Int, Int)] = []
        for (i, s) in heldOut.segments.enumerated() {
            var t = first
            while t + longest <= s.count - 1 {
                starts.append((i, t))
                t += max(windowStride, 1)
            }
        }
        guard !starts.isEmpty else {
            throw .notEnoughData(have: data.sampleCount, need: max(need + first, data.sampleCount + 1))
        }

        let ny = data.controlledNames.count
        let sd = Self.standardDeviations(heldOut, ny)
        // Persistence's squared errors per horizon and output.
        var persistenceSq = [[Double]](repeating: [Double](repeating: 0, count: ny), count: hs.count)
        for (si, t) in starts {
            let seg = heldOut.segments[si]
            for (hi, h) in hs.enumerated() { for o in 0..<ny {
                let d = seg.controlled[t + h][o] - seg.controlled[t][o]
                persistenceSq[hi][o] += d * d
            } }
        }
        let n = Double(starts.count)

        var classes: [PlantFitClass] = []
        for (name, result) in fitted {
            switch result {
            case .failure(let e):
                classes.append(PlantFitClass(name: name, model: nil, error: e.description, horizons: []))
            case .success(let model):
                var sq = [[Double]](repeating: [Double](repeating: 0, count: ny), count: hs.count)
                for (si, t) in starts {
                    let seg = heldOut.segments[si]
                    var r = model.rollout(from: seg, at: t)
                    var hi = 0
                    for h in 1...longest {
                        let y = r.step(action: seg.actions[t + h - 1], actionCount: data.actionCount,
                                       exogenous: seg.exogenous[t + h - 1])
                        if hs[hi] == h {
                            for o in 0..<ny {
                                let d = (o < y.count ? y[o] : .nan) - seg.controlled[t + h][o]
                                sq[hi][o] += d * d
                            }
                            hi += 1
                        }
                    }
                }
                let entries = hs.enumerated().map { hi, h -> PlantFitHorizon in
                    var outputs: [PlantFitOutput] = []
                    var mSum = 0.0, pSum = 0.0
                    for o in 0..<ny {
                        let m = (sq[hi][o] / n).squareRoot()
                        let p = (persistenceSq[hi][o] / n).squareRoot()
                        outputs.append(PlantFitOutput(signal: data.controlledNames[o], modelRMSE: m.isFinite ? m : nil,
                                                      persistenceRMSE: p, heldOutSD: sd[o]))
                        mSum += m / sd[o]
                        pSum += p / sd[o]
                    }
                    let mNorm = mSum / Double(max(ny, 1))
                    return PlantFitHorizon(steps: h, outputs: outputs, modelNormalized: mNorm.isFinite ? mNorm : nil,
                                           persistenceNormalized: pSum / Double(max(ny, 1)))
                }
                classes.append(PlantFitClass(name: name, model: model.description, error: nil, horizons: entries))
            }
        }

        // The winner: smallest normalised error at the longest horizon.
        var best: (Int, Double)?
        for (i, c) in classes.enumerated() {
            guard let m = c.longest?.modelNormalized else { continue }
            if m < (best?.1 ?? .infinity) { best = (i, m) }
        }
        var report = PlantFitReport(controlled: data.controlledNames, horizons: hs, trainingSamples: training.sampleCount,
                                    heldOutSamples: heldOut.sampleCount, windows: starts.count, classes: classes,
                                    chosen: nil, refused: nil)
        guard let (bi, score) = best, let entry = classes[bi].longest else {
            report.refused = "every class diverged in free run on the held-out data"
            return PlantModelChoice(model: nil, report: report)
        }
        report.chosen = classes[bi].name
        if !(score < entry.persistenceNormalized * maximumRatio) {
            let perOutput = entry.outputs.map { o in
                "\(o.signal): \(Self.format(o.modelRMSE)) vs \(Self.format(o.persistenceRMSE))"
            }.joined(separator: ", ")
            report.refused = "best class \(classes[bi].model ?? classes[bi].name): \(Self.format(entry.ratio))× persistence at \(entry.steps) ticks (normalised RMSE \(Self.format(score)) vs \(Self.format(entry.persistenceNormalized)); \(perOutput))"
            return PlantModelChoice(model: nil, report: report)
        }
        return PlantModelChoice(model: try? fitted[bi].1.get(), report: report)
    }

    static func standardDeviations(_ data: PlantData, _ ny: Int) -> [Double] {
        var sum = [Double](repeating: 0, count: ny), sq = [Double](repeating: 0, count: ny)
        var n = 0.0
        for s in data.segments { for r in s.controlled {
            n += 1
            for o in 0..<ny { sum[o] += r[o]; sq[o] += r[o] * r[o] }
        } }
        return (0..<ny).map { o in
            guard n > 1 else { return 1 }
            let m = sum[o] / n
            let v = max(sq[o] / n - m * m, 0)
            return v > 1e-18 ? v.squareRoot() : 1
        }
    }

    static func format(_ x: Double?) -> String {
        guard let x, x.isFinite else { return "n/a" }
        return String(format: "%.3g", x)
    }
}
