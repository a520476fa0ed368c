import COpenBLAS
import Foundation

/// The structure of a linear model with dead time (docs/learning.md, "The plant model"):
///
///     y(t+1) = Σᵢ₌₁..na Aᵢ·y(t+1−i) + Σⱼ₌₀..nb−1 (Bⱼ·u(t−d−j) + Cⱼ·e(t−j)) + c₀
///
/// with `y` the controlled signals, `u` the action mix (one-hot for a plain action), `e` the
/// exogenous signals. `delay` is d: an action taken at tick t first shows in y(t+d+1). The
/// exogenous signals get the same input order as the actions (no dead time): a signal held
/// over the tick (ambient temperature) enters a sampled second-order plant through two
/// terms, as the action does; with one term only, the heater's fast time constant came out
/// 9 % short.
public struct LinearStructure: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
    /// Output order na (lags of y).
    public var na: Int
    /// Input order nb (lags of u after the dead time).
    public var nb: Int
    /// Dead time d in ticks.
    public var delay: Int

    /// A structure; orders below 1 and delays below 0 are raised to them.
    public init(na: Int, nb: Int, delay: Int) {
        self.na = max(na, 1)
        self.nb = max(nb, 1)
        self.delay = max(delay, 0)
    }

    /// `na=2, nb=2, delay=6`.
    public var description: String { "na=\(na), nb=\(nb), delay=\(delay)" }

    /// Samples of history the structure needs before its first prediction.
    public var memory: Int { max(na, delay + nb) }
}

/// A structure and its held-out free-run error in the fitter's structure search.
public struct LinearStructureScore: Sendable, Equatable, Codable {
    /// The structure tried.
    public var structure: LinearStructure
    /// Root mean square free-run error on the validation part (normalised: per output, in
    /// units of the output's standard deviation), or nil when the fit failed (unstable).
    public var validationError: Double?

    enum CodingKeys: String, CodingKey {
        case structure, validationError = "validation_error"
    }
}

/// A pole of a single-output model, z = re + i·im.
public struct LinearPole: Sendable, Equatable, Codable {
    /// Real part.
    public var re: Double
    /// Imaginary part (0 for a real pole).
    public var im: Double
    /// The time constant τ = −Δt / ln p of a real pole in (0, 1); nil otherwise.
    public func timeConstant(stepSeconds: Double) -> Double? {
        guard im == 0, re > 0, re < 1 else { return nil }
        return -stepSeconds / log(re)
    }
}

/// Fits a linear model with dead time by its free-run (simulation) error: the class
/// `linear` of the plant model selection.
///
/// Fit, for each structure of the search: least squares on the one-step regression (ARX)
/// gives the start; Levenberg–Marquardt then minimises the free-run error — the model is
/// simulated from the measured history at the start of each window of `simulationWindow`
/// ticks, fed only the logged actions and exogenous signals, and compared with the measured
/// outputs (output error, analytic Jacobian by the sensitivity recursion). A one-step fit
/// alone is biased when the sensor is quantised (the regressors are the noisy outputs
/// themselves); the free-run error is not, because the model's own outputs are its
/// regressors.
///
/// Structure search: na ∈ `outputOrders`, nb ∈ `inputOrders`, d ∈ 0…`maxDelay`, each fitted
/// on the first part of the training data and scored by its free-run error on the last
/// `validationFraction` (by time); the best is refitted on all of it. Signals are normalised
/// internally (mean 0, standard deviation 1) for conditioning; the model is stored in the
/// signals' own units.
///
/// Actions enter one-hot: every action has its own input gain relative to action 0 (whose
/// column is dropped: the constant c₀ carries it), so a nonlinear action-to-power map is
/// still linear in u. An action the data never show keeps the gain of action 0.
public struct LinearPlantFitter: PlantModelFitter {
    /// What the parameters minimise.
    public enum Criterion: String, Sendable, Equatable, Codable {
        /// The free-run (simulation) error, started from least squares (the default).
        case simulation
        /// The one-step prediction error alone (ARX least squares), kept for comparison: it
        /// is biased on a quantised sensor. (A search still scores the structures by their
        /// free-run error on the validation part.)
        case oneStep
    }

    /// `linear`.
    public var name: String
    /// Output orders tried.
    public var outputOrders: [Int] = [1, 2]
    /// Input orders tried.
    public var inputOrders: [Int] = [1, 2]
    /// Largest dead time tried, ticks.
    public var maxDelay: Int = 12
    /// A structure to use without searching (nil: search).
    public var fixedStructure: LinearStructure?
    /// What the parameters minimise.
    public var criterion: Criterion = .simulation
    /// Length of the free-run windows the criterion and the structure search simulate, ticks
    /// (0: whole segments).
    public var simulationWindow: Int = 120
    /// Fraction of the training data (the last part by time) held out to choose the structure.
    public var validationFraction: Double = 0.25
    /// Levenberg–Marquardt iterations at most (per structure in the search; again for the
    /// refit on all the training data).
    public var iterations: Int = 60
    /// Ridge on the least-squares start, relative to the mean diagonal of the normal equations.
    public var ridge: Double = 1e-8
    /// Ticks of measured history a free run is started through (fit windows, held-out
    /// windows, rollouts): the model runs over them as an observer, its prediction pulled
    /// towards each measured sample by `observerGain`, so a quantised sensor's error in the
    /// starting samples is averaged instead of carried into the run (0: start from the raw
    /// samples).
    public var warmup: Int = 20
    /// The observer's gain κ over the warm-up: x = (1 − κ)·ŷ + κ·y.
    public var observerGain: Double = 0.2
    /// Ticks of free run at most in each structure's refinement during the search (windows
    /// spread evenly over the data beyond it; the least-squares start always uses every row).
    /// The cost of an iteration grows with the square of the parameter count.
    public var searchTicks: Int = 20_000
    /// Ticks of free run at most in the final refinement.
    public var fitTicks: Int = 100_000

    /// A fitter with the default search (na, nb ∈ {1, 2}, d ∈ 0…`maxDelay`).
    public init(name: String = "linear", maxDelay: Int = 12, fixedStructure: LinearStructure? = nil,
                criterion: Criterion = .simulation) {
        self.name = name
        self.maxDelay = max(maxDelay, 0)
        self.fixedStructure = fixedStructure
        self.criterion = criterion
    }

    /// Fits the class to `data`. Deterministic; `seed` is not used (nothing is random).
    /// - Throws: `PlantModelError.notEnoughData` when no structure has enough samples to fit
    ///   and validate; `.badData` when the data have no controlled signal or no action.
    public func fit(_ data: PlantData, seed: UInt64) throws(PlantModelError) -> any PlantModel {
        try fitLinear(data)
    }

    /// `fit` with the concrete type (gains, poles and the search's scores for tests and reports).
    public func fitLinear(_ data: PlantData) throws(PlantModelError) -> LinearPlantModel {
        guard !data.controlledNames.isEmpty, data.actionCount >= 1 else {
            throw .badData("a linear model needs at least one controlled signal and one action (have \(data.controlledNames.count) controlled, \(data.actionCount) actions)")
        }
        let scaling = LinearScaling(data)
        let all = scaling.normalise(data)
        let dims = LinearDims(ny: data.controlledNames.count, ne: data.exogenousNames.count, nu: data.actionCount - 1)

        let candidates: [LinearStructure]
        if let s = fixedStructure {
            candidates = [s]
        } else {
            var c: [LinearStructure] = []
            for na in outputOrders.sorted() { for nb in inputOrders.sorted() { for d in 0...max(maxDelay, 0) {
                c.append(LinearStructure(na: na, nb: nb, delay: d))
            } } }
            candidates = c
        }
        guard !candidates.isEmpty else { throw .badData("the linear fitter has no structure to try (empty orders)") }

        var scores: [LinearStructureScore] = []
        var chosen: (LinearStructure, [Double])?
        if candidates.count == 1, let s = candidates.first {
            guard let theta = fitStructure(s, dims: dims, segments: all, budget: fitTicks) else {
                throw .notEnoughData(have: data.sampleCount, need: minimumSamples(s, dims: dims))
            }
            chosen = (s, theta)
        } else {
            let (train, validation) = data.splitByTime(heldOutFraction: validationFraction)
            let trainN = scaling.normalise(train)
            let validN = scaling.normalise(validation)
            var best: (LinearStructure, [Double], Double)?
            for s in candidates {
                let layout = LinearLayout(s, dims, warmup: warmup, kappa: observerGain)
                let windows = layout.windows(validN, length: simulationWindow, stride: max(1, simulationWindow / 4))
                guard !windows.isEmpty, let theta = fitStructure(s, dims: dims, segments: trainN, budget: searchTicks) else { continue }
                let cost = layout.cost(theta, validN, windows)
                let err = cost.isFinite ? cost.squareRoot() : nil
                scores.append(LinearStructureScore(structure: s, validationError: err))
                if let e = err, e < (best?.2 ?? .infinity) { best = (s, theta, e) }
            }
            guard let (s, theta, _) = best else {
                let need = candidates.map { minimumSamples($0, dims: dims) }.min() ?? 0
                throw .notEnoughData(have: data.sampleCount, need: Int((Double(need) / max(validationFraction, 0.05)).rounded(.up)))
            }
            // Refit the chosen structure on all the training data, from the search's solution.
            let layout = LinearLayout(s, dims, warmup: warmup, kappa: observerGain)
            let refined = criterion == .simulation
                ? layout.refine(theta, all, window: simulationWindow, iterations: iterations, budget: fitTicks)
                : layout.leastSquares(all, ridge: ridge)
            chosen = (s, refined ?? theta)
        }
        guard let (structure, theta) = chosen else { throw .notEnoughData(have: data.sampleCount, need: 0) }
        return LinearPlantModel(structure: structure, dims: dims, normalisedTheta: theta, scaling: scaling,
                                controlledNames: data.controlledNames, exogenousNames: data.exogenousNames,
                                actionCount: data.actionCount, searchScores: scores, fitter: name,
                                warmup: max(warmup, 0), kappa: min(max(observerGain, 0), 1))
    }

    /// Least squares then (for `.simulation`) output-error refinement; nil when too few rows.
    func fitStructure(_ s: LinearStructure, dims: LinearDims, segments: [LinearNormalisedSegment], budget: Int) -> [Double]? {
        let layout = LinearLayout(s, dims, warmup: warmup, kappa: observerGain)
        guard layout.rowCount(segments) >= 3 * layout.p, let start = layout.leastSquares(segments, ridge: ridge) else { return nil }
        guard criterion == .simulation else { return start }
        return layout.refine(start, segments, window: simulationWindow, iterations: iterations, budget: budget) ?? start
    }

    func minimumSamples(_ s: LinearStructure, dims: LinearDims) -> Int {
        let layout = LinearLayout(s, dims, warmup: warmup, kappa: observerGain)
        return 3 * layout.p + s.memory + 1
    }
}

// MARK: - The fitted model

/// A linear model with dead time (`LinearPlantFitter`), in the signals' own units.
public struct LinearPlantModel: PlantModel {
    /// The structure (orders and dead time).
    public let structure: LinearStructure
    /// Names of the controlled signals (outputs), in order.
    public let controlledNames: [String]
    /// Names of the exogenous signals, in order.
    public let exogenousNames: [String]
    /// Number of controlled signals it predicts.
    public let outputCount: Int
    /// Number of exogenous signals it takes.
    public let exogenousCount: Int
    /// Number of discrete actions.
    public let actionCount: Int
    /// Aᵢ for i = 1…na: each (outputCount, outputCount), row-major.
    public let a: [[Double]]
    /// Bⱼ for j = 0…nb−1: each (outputCount, actionCount), row-major; column 0 is 0 (action 0
    /// is the reference, carried by `offset`).
    public let b: [[Double]]
    /// Cⱼ for j = 0…nb−1: each (outputCount, exogenousCount), row-major.
    public let c: [[Double]]
    /// c₀, per output.
    public let offset: [Double]
    /// The structure search's validation errors (empty when the structure was fixed).
    public let searchScores: [LinearStructureScore]
    /// Ticks of history a rollout runs through as an observer before it starts.
    public let warmup: Int
    /// The observer's gain over the warm-up.
    public let observerGain: Double
    let fitterName: String

    init(structure: LinearStructure, dims: LinearDims, normalisedTheta theta: [Double], scaling: LinearScaling,
         controlledNames: [String], exogenousNames: [String], actionCount: Int,
         searchScores: [LinearStructureScore], fitter: String, warmup: Int, kappa: Double) {
        self.warmup = warmup
        observerGain = kappa
        let layout = LinearLayout(structure, dims, warmup: warmup, kappa: kappa)
        let ny = dims.ny, ne = dims.ne, nu = dims.nu, p = layout.p
        self.structure = structure
        self.controlledNames = controlledNames
        self.exogenousNames = exogenousNames
        outputCount = ny
        exogenousCount = ne
        self.actionCount = actionCount
        self.searchScores = searchScores
        fitterName = fitter
        // Undo the normalisation: y = σ·yₙ + μ per output, e = σₑ·eₙ + μₑ.
        var a = [[Double]](repeating: [Double](repeating: 0, count: ny * ny), count: structure.na)
        var b = [[Double]](repeating: [Double](repeating: 0, count: ny * actionCount), count: structure.nb)
        var c = [[Double]](repeating: [Double](repeating: 0, count: ny * ne), count: structure.nb)
        var offset = [Double](repeating: 0, count: ny)
        for o in 0..<ny {
            let row = o * p
            for i in 0..<structure.na { for k in 0..<ny {
                a[i][o * ny + k] = scaling.yScale[o] * theta[row + layout.yIndex(lag: i, output: k)] / scaling.yScale[k]
            } }
            for j in 0..<structure.nb { for act in 0..<nu {
                b[j][o * actionCount + act + 1] = scaling.yScale[o] * theta[row + layout.uIndex(lag: j, column: act)]
            } }
            for j in 0..<structure.nb { for m in 0..<ne {
                c[j][o * ne + m] = scaling.yScale[o] * theta[row + layout.eIndex(lag: j, m)] / scaling.eScale[m]
            } }
            var off = scaling.yMean[o] + scaling.yScale[o] * theta[row + p - 1]
            for i in 0..<structure.na { for k in 0..<ny { off -= a[i][o * ny + k] * scaling.yMean[k] } }
            for j in 0..<structure.nb { for m in 0..<ne { off -= c[j][o * ne + m] * scaling.eMean[m] } }
            offset[o] = off
        }
        self.a = a
        self.b = b
        self.c = c
        self.offset = offset
    }

    /// `linear(na=2, nb=2, delay=6)` (the fitter's name and the structure).
    public var description: String { "\(fitterName)(\(structure))" }

    /// max(na, delay + nb) plus the warm-up.
    public var memory: Int { structure.memory + warmup }

    /// A rollout from sample `index` of `segment`.
    public func rollout(from segment: PlantSegment, at index: Int) -> any PlantRollout {
        linearRollout(from: segment, at: index)
    }

    /// `rollout` with the concrete type.
    public func linearRollout(from segment: PlantSegment, at index: Int) -> LinearPlantRollout {
        LinearPlantRollout(model: self, segment: segment, index: index)
    }

    /// The steady-state change of each output when `action` is held instead of action 0 (the
    /// exogenous signals held): (I − ΣAᵢ)⁻¹·ΣBⱼ[·, action]. Nil when the model has no steady
    /// state (a pole at 1) or `action` is out of range.
    public func steadyStateGain(action: Int) -> [Double]? {
        guard (0..<actionCount).contains(action) else { return nil }
        let ny = outputCount
        var m = [Double](repeating: 0, count: ny * ny)
        for o in 0..<ny { m[o * ny + o] = 1 }
        for ai in a { for k in 0..<(ny * ny) { m[k] -= ai[k] } }
        var rhs = [Double](repeating: 0, count: ny)
        for bj in b { for o in 0..<ny { rhs[o] += bj[o * actionCount + action] } }
        return SmallLinearAlgebra.solve(m, rhs, n: ny)
    }

    /// The poles of a single-output model (roots of zⁿᵃ − a₁·zⁿᵃ⁻¹ − … − aₙₐ), largest modulus
    /// first; nil for a model with more than one output.
    public var poles: [LinearPole]? {
        guard outputCount == 1 else { return nil }
        let coefficients = a.map { -$0[0] }
        return SmallLinearAlgebra.roots(monic: coefficients).map { LinearPole(re: $0.0, im: $0.1) }
    }

    /// The time constants of the real poles in (0, 1) of a single-output model, seconds,
    /// slowest first (τ = −Δt / ln p); nil for a model with more than one output.
    public func timeConstants(stepSeconds: Double) -> [Double]? {
        poles.map { $0.compactMap { $0.timeConstant(stepSeconds: stepSeconds) }.sorted(by: >) }
    }
}

/// A free run of a `LinearPlantModel`: a value holding the model and its history rings
/// (outputs and action mixes); copy it to branch.
public struct LinearPlantRollout: PlantRollout {
    let model: LinearPlantModel
    /// y history: `na` slots of `outputCount`, slot `yHead` the newest.
    var yRing: [Double]
    var yHead = 0
    /// u history: `delay + nb` slots of `actionCount`, slot `uHead` the newest.
    var uRing: [Double]
    var uHead = 0
    /// e history: `nb` slots of `exogenousCount`, slot `eHead` the newest.
    var eRing: [Double]
    var eHead = 0
    /// The controlled signals now: the measured sample at the start (the model's internal
    /// state is the observer's estimate), the prediction after a step.
    public private(set) var controlled: [Double]
    /// 0: the linear model has no measure of its uncertainty.
    public var uncertainty: Double { 0 }

    init(model: LinearPlantModel, segment: PlantSegment, index: Int) {
        self.model = model
        let ny = model.outputCount, k = model.actionCount
        let na = model.structure.na
        let slots = model.structure.delay + model.structure.nb
        let last = segment.controlled.count - 1
        let present = min(max(index, 0), max(last, 0))
        // Start `warmup` ticks back (not before the structure's own history) and run the
        // model as an observer up to the present.
        let now = max(min(present - model.warmup, present), min(model.structure.memory - 1, present))
        func y(_ t: Int) -> [Double] {
            guard last >= 0 else { return [Double](repeating: 0, count: ny) }
            let row = segment.controlled[min(max(t, 0), last)]
            return (0..<ny).map { $0 < row.count ? row[$0] : 0 }
        }
        // y ring: slot na−1 holds y(now) (the newest), slot na−1−i holds y(now − i).
        yRing = [Double](repeating: 0, count: na * ny)
        for i in 0..<na {
            let v = y(now - i)
            for o in 0..<ny { yRing[(na - 1 - i) * ny + o] = v[o] }
        }
        yHead = na - 1
        // u ring: slot slots−1 holds u(now − 1), slot slots−1−i holds u(now − 1 − i); the
        // first step pushes u(now) over the oldest.
        uRing = [Double](repeating: 0, count: slots * k)
        if !segment.actions.isEmpty {
            for i in 0..<slots {
                let t = min(max(now - 1 - i, 0), segment.actions.count - 1)
                let act = segment.actions[t]
                if (0..<k).contains(act) { uRing[(slots - 1 - i) * k + act] = 1 }
            }
        }
        uHead = slots - 1
        // e ring: slot nb−1 holds e(now − 1), and so on back; the first step pushes e(now).
        let ne = model.exogenousCount, nb = model.structure.nb
        eRing = [Double](repeating: 0, count: nb * ne)
        if !segment.exogenous.isEmpty {
            for i in 0..<nb {
                let row = segment.exogenous[min(max(now - 1 - i, 0), segment.exogenous.count - 1)]
                for m in 0..<min(ne, row.count) { eRing[(nb - 1 - i) * ne + m] = row[m] }
            }
        }
        eHead = nb - 1
        controlled = y(now)
        let kappa = model.observerGain
        if now < present {
            for t in now..<present {
                let act = t < segment.actions.count ? segment.actions[t] : 0
                let e = t < segment.exogenous.count ? segment.exogenous[t] : []
                _ = step(action: act, actionCount: k, exogenous: e)
                let measured = y(t + 1)
                for o in 0..<ny { yRing[yHead * ny + o] = (1 - kappa) * yRing[yHead * ny + o] + kappa * measured[o] }
            }
            controlled = y(present)
        }
    }

    /// Advances one tick (see `PlantRollout.step`): pushes the mix, predicts y(t+1) from the
    /// output lags, the mixes `delay…delay+nb−1` ticks back and the exogenous signals now.
    public mutating func step(mix: [Double], exogenous: [Double]) -> [Double] {
        let ny = model.outputCount, k = model.actionCount, ne = model.exogenousCount
        let s = model.structure
        let slots = s.delay + s.nb
        uHead = (uHead + 1) % slots
        for act in 0..<k { uRing[uHead * k + act] = act < mix.count ? mix[act] : 0 }
        eHead = (eHead + 1) % s.nb
        for m in 0..<ne { eRing[eHead * ne + m] = m < exogenous.count ? exogenous[m] : 0 }
        var next = model.offset
        for o in 0..<ny {
            var v = next[o]
            for i in 0..<s.na {
                let slot = (yHead - i + s.na) % s.na
                let ai = model.a[i]
                for q in 0..<ny { v += ai[o * ny + q] * yRing[slot * ny + q] }
            }
            for j in 0..<s.nb {
                let slot = (uHead - s.delay - j + 2 * slots) % slots
                let bj = model.b[j]
                for act in 0..<k { v += bj[o * k + act] * uRing[slot * k + act] }
            }
            for j in 0..<s.nb {
                let slot = (eHead - j + s.nb) % s.nb
                let cj = model.c[j]
                for m in 0..<ne { v += cj[o * ne + m] * eRing[slot * ne + m] }
            }
            next[o] = v
        }
        yHead = (yHead + 1) % s.na
        for o in 0..<ny { yRing[yHead * ny + o] = next[o] }
        controlled = next
        return next
    }
}

// MARK: - Normalised data and the fit's arithmetic

/// Signal counts: outputs, exogenous signals, action columns (actions − 1).
struct LinearDims: Sendable, Equatable {
    var ny: Int
    var ne: Int
    var nu: Int
}

/// Means and scales of the controlled and exogenous signals (scale 1 for a constant signal).
struct LinearScaling: Sendable {
    var yMean: [Double], yScale: [Double], eMean: [Double], eScale: [Double]

    init(_ data: PlantData) {
        func stats(_ rows: [[Double]], _ n: Int) -> ([Double], [Double]) {
            var sum = [Double](repeating: 0, count: n), sq = [Double](repeating: 0, count: n)
            var count = 0.0
            for r in rows where r.count == n {
                count += 1
                for i in 0..<n { sum[i] += r[i]; sq[i] += r[i] * r[i] }
            }
            let mean = sum.map { count > 0 ? $0 / count : 0 }
            let sd = (0..<n).map { i -> Double in
                let v = count > 1 ? max(sq[i] / count - mean[i] * mean[i], 0) : 0
                return v > 1e-18 ? v.squareRoot() : 1
            }
            return (mean, sd)
        }
        (yMean, yScale) = stats(data.segments.flatMap(\.controlled), data.controlledNames.count)
        (eMean, eScale) = stats(data.segments.flatMap(\.exogenous), data.exogenousNames.count)
    }

    func normalise(_ data: PlantData) -> [LinearNormalisedSegment] {
        let ny = data.controlledNames.count, ne = data.exogenousNames.count, nu = max(data.actionCount - 1, 0)
        return data.segments.map { s in
            var y = [Double](repeating: 0, count: s.count * ny)
            var e = [Double](repeating: 0, count: s.count * ne)
            var u = [Double](repeating: 0, count: s.actions.count * nu)
            for (t, row) in s.controlled.enumerated() { for o in 0..<ny { y[t * ny + o] = (row[o] - yMean[o]) / yScale[o] } }
            for (t, row) in s.exogenous.enumerated() { for m in 0..<ne { e[t * ne + m] = (row[m] - eMean[m]) / eScale[m] } }
            for (t, act) in s.actions.enumerated() where act >= 1 && act - 1 < nu { u[t * nu + act - 1] = 1 }
            return LinearNormalisedSegment(count: s.count, y: y, e: e, u: u)
        }
    }
}

/// A segment in normalised units, flat: y is (count, ny), e (count, ne), u (count−1, nu).
struct LinearNormalisedSegment: Sendable {
    var count: Int
    var y: [Double]
    var e: [Double]
    var u: [Double]
}

/// A free-run window: segment `segment`, simulated from its sample `start` for `length` ticks.
struct LinearWindow: Sendable, Equatable {
    var segment: Int
    var start: Int
    var length: Int
}

/// The regressor layout of one structure: φ(t) = [y(t) … y(t−na+1), u(t−d) … u(t−d−nb+1),
/// e(t) … e(t−nb+1), 1], shared by the outputs; θ is (ny, p), row-major.
struct LinearLayout: Sendable {
    let s: LinearStructure
    let dims: LinearDims
    let p: Int
    /// Observer warm-up before each free-run window, ticks, and its gain.
    let warmup: Int
    let kappa: Double

    init(_ s: LinearStructure, _ dims: LinearDims, warmup: Int, kappa: Double) {
        self.s = s
        self.dims = dims
        self.warmup = max(warmup, 0)
        self.kappa = min(max(kappa, 0), 1)
        p = s.na * dims.ny + s.nb * (dims.nu + dims.ne) + 1
    }

    func yIndex(lag i: Int, output o: Int) -> Int { i * dims.ny + o }
    func uIndex(lag j: Int, column c: Int) -> Int { s.na * dims.ny + j * dims.nu + c }
    func eIndex(lag j: Int, _ m: Int) -> Int { s.na * dims.ny + s.nb * dims.nu + j * dims.ne + m }

    /// The first sample a one-step regression row can start from.
    var regressionStart: Int { s.memory - 1 }
    /// The first sample a free run can start from (history and warm-up behind it).
    var firstStart: Int { s.memory - 1 + warmup }

    func rowCount(_ segs: [LinearNormalisedSegment]) -> Int {
        segs.reduce(0) { $0 + max(0, $1.count - 1 - regressionStart) }
    }

    /// Windows of `length` ticks (0: to the segment's end) starting every `stride` samples.
    func windows(_ segs: [LinearNormalisedSegment], length: Int, stride step: Int) -> [LinearWindow] {
        var w: [LinearWindow] = []
        for (i, seg) in segs.enumerated() {
            var start = firstStart
            while start < seg.count - 1 {
                let len = length > 0 ? min(length, seg.count - 1 - start) : seg.count - 1 - start
                w.append(LinearWindow(segment: i, start: start, length: len))
                if length <= 0 { break }
                start += max(step, 1)
            }
        }
        return w
    }

    /// Fills the non-y part of φ(t) from the measured inputs.
    @inline(__always)
    func fillInputs(_ phi: inout [Double], _ seg: LinearNormalisedSegment, _ t: Int) {
        let ny = dims.ny, nu = dims.nu, ne = dims.ne
        for j in 0..<s.nb {
            let tu = t - s.delay - j
            let base = s.na * ny + j * nu
            for c in 0..<nu { phi[base + c] = seg.u[tu * nu + c] }
        }
        for j in 0..<s.nb {
            let eb = s.na * ny + s.nb * nu + j * ne
            for m in 0..<ne { phi[eb + m] = seg.e[(t - j) * ne + m] }
        }
        phi[p - 1] = 1
    }

    /// One-step least squares (ARX) with a small ridge; nil when singular.
    func leastSquares(_ segs: [LinearNormalisedSegment], ridge: Double) -> [Double]? {
        let ny = dims.ny
        var ata = [Double](repeating: 0, count: p * p)
        var aty = [Double](repeating: 0, count: p * ny)   // (p, ny)
        var phi = [Double](repeating: 0, count: p)
        for seg in segs {
            guard seg.count - 1 > regressionStart else { continue }
            for t in regressionStart..<(seg.count - 1) {
                for i in 0..<s.na { for o in 0..<ny { phi[i * ny + o] = seg.y[(t - i) * ny + o] } }
                fillInputs(&phi, seg, t)
                for r in 0..<p {
                    let pr = phi[r]
                    if pr == 0 { continue }
                    for c in r..<p { ata[r * p + c] += pr * phi[c] }
                    for o in 0..<ny { aty[r * ny + o] += pr * seg.y[(t + 1) * ny + o] }
                }
            }
        }
        for r in 0..<p { for c in 0..<r { ata[r * p + c] = ata[c * p + r] } }
        var trace = 0.0
        for r in 0..<p { trace += ata[r * p + r] }
        let lambda = ridge * max(trace / Double(p), 1e-12) + 1e-12
        for r in 0..<p { ata[r * p + r] += lambda }
        var theta = [Double](repeating: 0, count: ny * p)
        for o in 0..<ny {
            let rhs = (0..<p).map { aty[$0 * ny + o] }
            guard let x = SmallLinearAlgebra.choleskySolve(ata, rhs, n: p) else { return nil }
            for k in 0..<p { theta[o * p + k] = x[k] }
        }
        return theta
    }

    /// Mean squared free-run error over `windows` (normalised units); +∞ when the
    /// simulation diverges.
    func cost(_ theta: [Double], _ segs: [LinearNormalisedSegment], _ windows: [LinearWindow]) -> Double {
        let ny = dims.ny, na = s.na
        var phi = [Double](repeating: 0, count: p)
        var hist = [Double](repeating: 0, count: na * ny)    // lag i at i*ny (0 = newest)
        var yhat = [Double](repeating: 0, count: ny)
        var sum = 0.0
        var n = 0
        for w in windows {
            let seg = segs[w.segment]
            let begin = w.start - warmup
            for i in 0..<na { for o in 0..<ny { hist[i * ny + o] = seg.y[(begin - i) * ny + o] } }
            for t in begin..<(w.start + w.length) {
                for k in 0..<(na * ny) { phi[k] = hist[k] }
                fillInputs(&phi, seg, t)
                let observing = t < w.start
                for o in 0..<ny {
                    var v = 0.0
                    for k in 0..<p { v += theta[o * p + k] * phi[k] }
                    let measured = seg.y[(t + 1) * ny + o]
                    if observing {
                        v = (1 - kappa) * v + kappa * measured
                    } else {
                        let r = measured - v
                        sum += r * r
                    }
                    yhat[o] = v
                }
                guard yhat.allSatisfy({ $0.isFinite && abs($0) < 1e6 }) else { return .infinity }
                if na > 1 { for k in stride(from: na * ny - 1, through: ny, by: -1) { hist[k] = hist[k - ny] } }
                for o in 0..<ny { hist[o] = yhat[o] }
                if !observing { n += ny }
            }
        }
        return n > 0 ? sum / Double(n) : .infinity
    }

    /// JᵀJ and Jᵀr of the free-run residuals r = y − ŷ over `windows`, by the sensitivity
    /// recursion ∂ŷ(t+1)/∂θ = φ(t)·[row of the output] + Σᵢ Aᵢ·∂ŷ(t+1−i)/∂θ.
    ///
    /// The scored rows of J (one per output and tick) are gathered in blocks of
    /// `normalEquationRows` and added to JᵀJ by BLAS (`dsyrk`, upper triangle) and to Jᵀr by
    /// `dgemv`: the rank-1 update per row in Swift was 95 % of a cart-pole retraining's time
    /// (20,000 samples: the structure search calls this up to 60 times for each of 52
    /// structures). The sums are the same up to the order of the additions.
    func normalEquations(_ theta: [Double], _ segs: [LinearNormalisedSegment], _ windows: [LinearWindow]) -> (jtj: [Double], jtr: [Double])? {
        let ny = dims.ny, na = s.na, p = self.p
        let np = ny * p                                          // parameters
        var jtj = [Double](repeating: 0, count: np * np)
        var jtr = [Double](repeating: 0, count: np)
        var phi = [Double](repeating: 0, count: p)
        var hist = [Double](repeating: 0, count: na * ny)
        var sens = [Double](repeating: 0, count: na * ny * np)   // (na, ny, np): ∂ŷ(t−i)[o]/∂θ
        var g = [Double](repeating: 0, count: ny * np)           // (ny, np): this step's sensitivities
        var yhat = [Double](repeating: 0, count: ny)
        let blockRows = max(Self.normalEquationRows, ny)
        var jBlock = [Double](repeating: 0, count: blockRows * np)   // scored rows of J
        var rBlock = [Double](repeating: 0, count: blockRows)        // their residuals
        var rows = 0
        let diverged: Bool = jtj.withUnsafeMutableBufferPointer { jtjP in
            jtr.withUnsafeMutableBufferPointer { jtrP in
                jBlock.withUnsafeMutableBufferPointer { jP in
                    rBlock.withUnsafeMutableBufferPointer { rP in
                        g.withUnsafeMutableBufferPointer { gP in
                            sens.withUnsafeMutableBufferPointer { sP in
                                theta.withUnsafeBufferPointer { thP in
                                    /// Adds the gathered rows to JᵀJ (upper) and Jᵀr.
                                    func flush() {
                                        guard rows > 0, let j = jP.baseAddress, let r = rP.baseAddress,
                                              let c = jtjP.baseAddress, let v = jtrP.baseAddress else { return }
                                        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(np), Int32(rows), 1, j, Int32(np), 1, c, Int32(np))
                                        cblas_dgemv(CblasRowMajor, CblasTrans, Int32(rows), Int32(np), 1, j, Int32(np), r, 1, 1, v, 1)
                                        rows = 0
                                    }
                                    for w in windows {
                                        let seg = segs[w.segment]
                                        let begin = w.start - warmup
                                        for i in 0..<na { for o in 0..<ny { hist[i * ny + o] = seg.y[(begin - i) * ny + o] } }
                                        for k in sP.indices { sP[k] = 0 }
                                        for t in begin..<(w.start + w.length) {
                                            let observing = t < w.start
                                            for k in 0..<(na * ny) { phi[k] = hist[k] }
                                            fillInputs(&phi, seg, t)
                                            for o in 0..<ny {
                                                var v = 0.0
                                                for k in 0..<p { v += thP[o * p + k] * phi[k] }
                                                yhat[o] = v
                                                // g[o] = φ on the output's own row + Σ A·(earlier sensitivities).
                                                let go = o * np
                                                for m in 0..<np { gP[go + m] = 0 }
                                                for k in 0..<p { gP[go + o * p + k] = phi[k] }
                                                for i in 0..<na {
                                                    for q in 0..<ny {
                                                        let aiq = thP[o * p + i * ny + q]
                                                        if aiq == 0 { continue }
                                                        let sb = (i * ny + q) * np
                                                        for m in 0..<np { gP[go + m] += aiq * sP[sb + m] }
                                                    }
                                                }
                                            }
                                            guard yhat.allSatisfy({ $0.isFinite && abs($0) < 1e6 }) else { return true }
                                            // Over the warm-up the observer pulls the state to the measurement: the
                                            // state's sensitivity shrinks by (1 − κ) and no residual is counted.
                                            if observing {
                                                for o in 0..<ny { yhat[o] = (1 - kappa) * yhat[o] + kappa * seg.y[(t + 1) * ny + o] }
                                                for k in 0..<(ny * np) { gP[k] *= 1 - kappa }
                                            } else {
                                                if rows + ny > blockRows { flush() }
                                                for o in 0..<ny {
                                                    rP[rows] = seg.y[(t + 1) * ny + o] - yhat[o]
                                                    let go = o * np, jo = rows * np
                                                    for m in 0..<np { jP[jo + m] = gP[go + m] }
                                                    rows += 1
                                                }
                                            }
                                            // Shift the histories: lag i ← lag i−1, lag 0 ← now.
                                            if na > 1 {
                                                for k in stride(from: na * ny - 1, through: ny, by: -1) { hist[k] = hist[k - ny] }
                                                for k in stride(from: na * ny * np - 1, through: ny * np, by: -1) { sP[k] = sP[k - ny * np] }
                                            }
                                            for o in 0..<ny { hist[o] = yhat[o] }
                                            for k in 0..<(ny * np) { sP[k] = gP[k] }
                                        }
                                    }
                                    flush()
                                    return false
                                }
                            }
                        }
                    }
                }
            }
        }
        if diverged { return nil }
        for a in 0..<np { for b in 0..<a { jtj[a * np + b] = jtj[b * np + a] } }
        return (jtj, jtr)
    }

    /// Rows of J gathered before each BLAS update in `normalEquations` (a block of 256 × 52
    /// doubles for the cart-pole's largest structure: 104 KB).
    static let normalEquationRows = 256

    /// Levenberg–Marquardt on the free-run error from `start`; nil when the start itself
    /// diverges in free run and no step recovers it.
    func refine(_ start: [Double], _ segs: [LinearNormalisedSegment], window: Int, iterations: Int, budget: Int) -> [Double]? {
        var windows = self.windows(segs, length: window, stride: max(window, 1))
        guard !windows.isEmpty else { return nil }
        // Over the budget: every k-th window, spread evenly over the data.
        let ticks = windows.reduce(0) { $0 + $1.length }
        if budget > 0, ticks > budget {
            let keep = max(1, Int(Double(windows.count) * Double(budget) / Double(ticks)))
            windows = (0..<keep).map { windows[$0 * windows.count / keep] }
        }
        var theta = start
        var current = cost(theta, segs, windows)
        guard current.isFinite else { return nil }
        let np = theta.count
        var mu = 1e-3
        for _ in 0..<max(iterations, 0) {
            guard let (jtj, jtr) = normalEquations(theta, segs, windows) else { break }
            var improved = false
            for _ in 0..<12 {
                var m = jtj
                var maxDiag = 0.0
                for a in 0..<np { maxDiag = max(maxDiag, jtj[a * np + a]) }
                for a in 0..<np { m[a * np + a] += mu * jtj[a * np + a] + 1e-12 * max(maxDiag, 1) }
                guard let delta = SmallLinearAlgebra.choleskySolve(m, jtr, n: np) else { mu *= 10; continue }
                let trial = zip(theta, delta).map { $0 + $1 }
                let c = cost(trial, segs, windows)
                if c < current {
                    let gain = (current - c) / max(current, 1e-300)
                    theta = trial
                    current = c
                    mu = max(mu / 3, 1e-12)
                    improved = gain > 1e-10
                    break
                }
                mu *= 4
            }
            if !improved { break }
        }
        return theta
    }
}
