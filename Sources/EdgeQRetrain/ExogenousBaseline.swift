import EdgeQLog
import EdgeQModel
import EdgeQTopicMap
import Foundation

// The exogenous baseline of a switchback trial (docs/learning.md, "The switchback trial and the
// control group", "Adjusting for the weather"): a per-tick prediction of the reward from the
// signals the mapping marks `role: exogenous` only, fitted in retraining on the log of the
// controller in charge, checked on held-out stretches of that log, and then frozen for the trial.
//
// Why it is valid: the order of each block pair is a fair coin, and the baseline is a fixed
// function of data the controllers do not cause, so the difference of the two blocks' baseline
// sums has mean zero given the two blocks; subtracting it from the pair difference leaves the
// expectation unchanged and removes the part of the spread the weather, prices, setpoints and
// the clock explain (regression adjustment, CUPED).
//
// Features (the same for every plant): the exogenous values standardized (z); their pairwise
// products z_i·z_j (i ≤ j, squares included); per signal and time constant τ two "recent
// change" filters, f ← a·f + |Δx| and g ← a·g + Δx with a = exp(−1/τ), for τ = T/4 and T, T the
// trial's burn-in (the plant's settling time; block/8 without burn-in), so that the transient
// after a setpoint step or a price change can be predicted whatever its shape. A missing value counts as its mean (z = 0), a missing
// change as none. Ridge regression with an unpenalized intercept, λ = 0.01 × rows.

/// A baseline of the per-tick reward from exogenous signals, with the report of its fit and check.
///
/// Stored as `baseline.json` beside the candidate's model file (`edgeq models show`, the
/// gateway's trial): it survives a restart between retraining and trial.
public struct ExogenousBaseline: Sendable, Codable, Equatable {
    /// How the reason of a baseline refused for too few rows begins. Only `Report`'s decoding of
    /// files written before `needs_longer_log` was stored reads it (`Report.init(from:)`).
    static let tooFewRowsPrefix = "too few rows:"

    /// What the fit found, in JSON with snake_case keys.
    public struct Report: Sendable, Codable, Equatable {
        /// Whether the trial may use the baseline (it reduced the held-out placebo variance enough).
        public var accepted: Bool
        /// Why there is no baseline, or why it was not accepted (nil when accepted).
        public var reason: String?
        /// The exogenous signals it reads, in the mapping's order.
        public var signals: [String]
        /// Features (values, products, change filters).
        public var features: Int
        /// The change filters' time constants in ticks.
        public var timeConstants: [Double]
        /// Whose rows it was fitted on: `incumbent`, `vN`, or `all` (too few of the reference's).
        public var rows: String
        /// Rows it was fitted on.
        public var fittedRows: Int
        /// Placebo block pairs on held-out data (adjacent windows of the trial's block length).
        public var placeboPairs: Int
        /// Root mean square of the raw placebo pair differences (block return units).
        public var rawRMS: Double?
        /// Root mean square of the adjusted placebo pair differences.
        public var adjustedRMS: Double?
        /// adjusted² / raw² mean square: the share of the pair variance left after the adjustment.
        public var heldOutVarianceRatio: Double?
        /// The ratio at or below which the baseline is accepted.
        public var maxRatio: Double
        /// Share of the per-tick reward variance the held-out predictions explain (R²).
        public var heldOutTickR2: Double?

        /// True when the only thing missing was log: the adjustment is on and the plant has
        /// exogenous signals, but the reference's rows made fewer placebo pairs than the check
        /// needs (`needs_longer_log`; set by the fit where it refuses for too few rows). The
        /// gateway then keeps the candidate out of the trial (a later retraining, on a longer log,
        /// gets one). A `baseline.json` written before the field was stored is read by its
        /// reason's text instead (`init(from:)`).
        public var needsLongerLog = false

        enum CodingKeys: String, CodingKey {
            case accepted, reason, signals, features, rows
            case timeConstants = "time_constants", fittedRows = "fitted_rows", placeboPairs = "placebo_pairs"
            case rawRMS = "raw_rms", adjustedRMS = "adjusted_rms", heldOutVarianceRatio = "held_out_variance_ratio"
            case maxRatio = "max_ratio", heldOutTickR2 = "held_out_tick_r2", needsLongerLog = "needs_longer_log"
        }
    }

    /// The fitted function (standardization and weights).
    public struct Model: Sendable, Codable, Equatable {
        /// The exogenous signals, in order.
        public var signals: [String]
        /// The change filters' time constants in ticks (filters of every signal for each).
        public var timeConstants: [Double]
        /// Whether products of pairs of values are features.
        public var pairs: Bool
        /// Mean of each value (z = (x − mean) / scale).
        public var valueMean: [Double]
        /// Scale of each value.
        public var valueScale: [Double]
        /// Scale of each |Δ| filter (time constant m, signal i at m·k + i).
        public var absChangeScale: [Double]
        /// Scale of each signed Δ filter (same order).
        public var changeScale: [Double]
        /// Mean of each feature over the fitted rows.
        public var featureMean: [Double]
        /// Weight of each feature.
        public var weights: [Double]
        /// The prediction at the features' means.
        public var intercept: Double

        /// A baseline given in full (a test or a benchmark; retraining fits one with `fit`).
        public init(signals: [String], timeConstants: [Double], pairs: Bool, valueMean: [Double], valueScale: [Double],
                    absChangeScale: [Double], changeScale: [Double], featureMean: [Double], weights: [Double], intercept: Double) {
            self.signals = signals
            self.timeConstants = timeConstants
            self.pairs = pairs
            self.valueMean = valueMean
            self.valueScale = valueScale
            self.absChangeScale = absChangeScale
            self.changeScale = changeScale
            self.featureMean = featureMean
            self.weights = weights
            self.intercept = intercept
        }

        enum CodingKeys: String, CodingKey {
            case signals, pairs, weights, intercept
            case timeConstants = "time_constants", valueMean = "value_mean", valueScale = "value_scale"
            case absChangeScale = "abs_change_scale", changeScale = "change_scale", featureMean = "feature_mean"
        }
    }

    /// The fit's report.
    public var report: Report
    /// The function; nil when none could be fitted (`report.reason`). Present but not to be used
    /// when `report.accepted` is false (kept for inspection).
    public var model: Model?

    /// The baseline a trial may use: the model when it was accepted.
    public var usable: Model? { report.accepted ? model : nil }

    /// How the fit and its check are set up.
    public struct Settings: Sendable, Equatable {
        /// The trial's block (ticks).
        public var block: Int
        /// The trial's burn-in (ticks).
        public var burnIn: Int
        /// Placebo pairs needed to judge the baseline. Default 8.
        public var minPairs = 8
        /// Accept at or below this held-out variance ratio. Default 0.8.
        public var maxRatio = 0.8
        /// Contiguous held-out folds. Default 5.
        public var folds = 5
        /// λ as a share of the rows. Default 0.01.
        public var ridge = 0.01
        /// Above this many exogenous signals, no products (their number grows as k²). Default 12.
        public var maxPairedSignals = 12
        /// The change filters' time constants in ticks; nil: from the burn-in (`timeConstants`).
        public var changeTimeConstants: [Double]?

        /// Settings for a tick block of `block` ticks, the first `burnIn` unscored.
        public init(block: Int, burnIn: Int) {
            self.block = block
            self.burnIn = burnIn
        }

        /// The change filters' time constants: T / 4 and T, T being the burn-in (the plant's
        /// settling time after a switch), else block / 8; at least 1 tick.
        public var timeConstants: [Double] {
            if let c = changeTimeConstants { return c }
            let t = Double(max(1, burnIn > 0 ? burnIn : block / 8))
            return [max(1, t / 4), t]
        }
    }

    /// Whose rows the baseline is fitted on: the controller a trial compares the candidate with.
    public enum Reference: Sendable, Equatable {
        /// The incumbent (rows it acted on).
        case incumbent
        /// A served model, by its version as the log names it (control rows of that version).
        case model(String)

        /// Whether this controller acted on the logged transition `t`.
        func acted(on t: Transition) -> Bool {
            switch self {
            case .incumbent: return t.actor == .incumbent
            case .model(let v): return t.mode == .control && t.modelVersion == v && t.actor != .incumbent
            }
        }
    }

    /// No baseline, with the reason (what the report says); `needsLongerLog` when the reason is
    /// too few rows.
    static func none(_ reason: String, signals: [String] = [], settings: Settings?, rows: String = "none",
                     needsLongerLog: Bool = false) -> ExogenousBaseline {
        ExogenousBaseline(report: Report(accepted: false, reason: reason, signals: signals, features: 0,
                                         timeConstants: settings?.timeConstants ?? [], rows: rows, fittedRows: 0, placeboPairs: 0,
                                         maxRatio: settings?.maxRatio ?? 0.8, needsLongerLog: needsLongerLog), model: nil)
    }

    /// What `map` fits a baseline with, or the baseline it rules out whatever the log holds.
    private enum Setup {
        case fit(signals: [String], settings: Settings)
        case ruledOut(ExogenousBaseline)
    }

    private static func setup(_ map: TopicMap) -> Setup {
        let trial = map.learning.trial
        guard trial.adjust == .exogenous else {
            return .ruledOut(none("the mapping turns the adjustment off (learning.promotion.trial.adjust: none)", settings: nil))
        }
        guard case .ticks(let block) = trial.block else {
            return .ruledOut(none("the trial's blocks are episodes: an episode's return is compared whole, and its exogenous conditions are not adjusted for", settings: nil))
        }
        let settings = Settings(block: block, burnIn: trial.burnIn)
        let names = map.modelSignalNames.exogenous
        guard !names.isEmpty else {
            return .ruledOut(none("the mapping marks no signal 'role: exogenous' (weather, price, setpoint, occupancy, the plant's clock): nothing to predict the reward from", settings: settings))
        }
        return .fit(signals: names, settings: settings)
    }

    /// The baseline `fit(map:rows:reference:)` gives whatever the log holds when `map` rules one
    /// out — the adjustment turned off (`adjust: none`), episode blocks, no signal marked
    /// `role: exogenous` — not accepted, with the reason; nil when the mapping allows one and the
    /// log decides. Reads no log: a caller can skip reading it (the gateway does for a fleet model).
    public static func ruledOut(by map: TopicMap) -> ExogenousBaseline? {
        if case .ruledOut(let none) = setup(map) { return none }
        return nil
    }

    /// Fits the baseline for `map`'s trial on logged `rows` (id order) and checks it: on `folds`
    /// contiguous stretches of the reference's rows, each predicted by weights fitted on the
    /// others, adjacent windows of the trial's block length are paired (an A/A switchback on the
    /// reference's own log), and the mean square of the adjusted pair differences (scored part,
    /// after the burn-in) is compared with the raw one. Accepted when the ratio is at most
    /// `maxRatio`. The returned model is fitted on all of the reference's rows.
    ///
    /// Never fails: no exogenous signal, episode blocks, `adjust: none`, too few rows, or a
    /// singular fit give a baseline that is not accepted, with the reason.
    public static func fit(map: TopicMap, rows: [LoggedTransition], reference: Reference) -> ExogenousBaseline {
        switch setup(map) {
        case .ruledOut(let none): return none
        case .fit(let names, let settings): return fit(signals: names, rows: rows, reference: reference, settings: settings)
        }
    }

    /// `fit` with the exogenous signals and settings given.
    public static func fit(signals names: [String], rows: [LoggedTransition], reference: Reference, settings s: Settings) -> ExogenousBaseline {
        let k = names.count
        let pairs = k <= s.maxPairedSignals
        let taus = s.timeConstants
        let M = taus.count
        let decays = taus.map { exp(-1 / $0) }
        // Per row: the exogenous values at the row's end (the tick its reward is observed at),
        // the change filters run over every row in order, whose row it is and its reward.
        var positions: [[String]: [Int]?] = [:]
        var values: [[Double]] = []
        var absF: [[Double]] = []
        var sgnF: [[Double]] = []
        var rewards: [Double] = []
        var isReference: [Bool] = []
        var ticks: [Int64] = []
        var f = [Double](repeating: 0, count: k * M), g = [Double](repeating: 0, count: k * M)
        for row in rows {
            let t = row.transition
            var index: [Int]? = nil
            if let n = row.signalNames {
                if let known = positions[n] {
                    index = known
                } else {
                    let found = names.compactMap { n.firstIndex(of: $0) }
                    index = found.count == k ? found : nil
                    positions[n] = index
                }
            }
            guard let index, let now = t.signals, let next = t.nextSignals, now.count == row.signalNames?.count, next.count == now.count else {
                for m in 0..<M { for i in 0..<k { f[m * k + i] *= decays[m]; g[m * k + i] *= decays[m] } }
                continue
            }
            var x = [Double](repeating: .nan, count: k)
            for i in 0..<k {
                let v0 = now[index[i]], v1 = next[index[i]]
                let delta = v0.isFinite && v1.isFinite ? v1 - v0 : 0
                for m in 0..<M {
                    f[m * k + i] = decays[m] * f[m * k + i] + abs(delta)
                    g[m * k + i] = decays[m] * g[m * k + i] + delta
                }
                x[i] = v1
            }
            guard t.reward.isFinite else { continue }
            let mine = reference.acted(on: t)
            values.append(x)
            absF.append(f)
            sgnF.append(g)
            rewards.append(t.reward)
            isReference.append(mine)
            ticks.append(t.tick)
        }
        let referenceName: String
        switch reference {
        case .incumbent: referenceName = "incumbent"
        case .model(let v): referenceName = "v\(v)"
        }
        // Placebo pairs: stretches of 2 × block consecutive ticks (a gap of one tick, an episode
        // end, is allowed) among the rows used, in order; they start at `units` (indices into
        // the rows used).
        let unit = 2 * s.block
        func units(_ rows: [Int]) -> [Int] {
            var starts: [Int] = []
            var runStart = 0
            for j in rows.indices {
                if j > runStart, ticks[rows[j]] - ticks[rows[j - 1]] > 2 || ticks[rows[j]] <= ticks[rows[j - 1]] { runStart = j }
                if j - runStart + 1 == unit {
                    starts.append(runStart)
                    runStart = j + 1
                }
            }
            return starts
        }
        var use = isReference.indices.filter { isReference[$0] }
        var starts = units(use)
        var rowsName = referenceName
        if starts.count < s.minPairs {
            // Too few stretches of the reference (a model promoted recently, or one whose blocks
            // alternated with trials): every controller's rows.
            use = Array(rewards.indices)
            starts = units(use)
            rowsName = "all"
        }
        guard starts.count >= s.minPairs else {
            return none(Self.tooFewRowsPrefix + " \(use.count) rows with the exogenous signals and a reward make \(starts.count) placebo pairs (stretches of \(unit) consecutive ticks, two \(s.block)-tick blocks); \(s.minPairs) are needed to check that the baseline helps", signals: names, settings: s, rows: rowsName,
                        needsLongerLog: true)
        }

        // Standardization over the rows used.
        func meanScale(_ column: (Int) -> Double) -> (Double, Double) {
            var m = 0.0, m2 = 0.0, n = 0.0
            for r in use {
                let v = column(r)
                guard v.isFinite else { continue }
                n += 1
                let d = v - m
                m += d / n
                m2 += d * (v - m)
            }
            let sd = n > 1 ? (m2 / (n - 1)).squareRoot() : 0
            return (m, sd > 1e-12 && sd.isFinite ? sd : 1)
        }
        var model = Model(signals: names, timeConstants: taus, pairs: pairs, valueMean: [], valueScale: [], absChangeScale: [],
                          changeScale: [], featureMean: [], weights: [], intercept: 0)
        for i in 0..<k {
            let (m, sd) = meanScale { values[$0][i] }
            model.valueMean.append(m)
            model.valueScale.append(sd)
        }
        for q in 0..<(k * M) {
            model.absChangeScale.append(meanScale { absF[$0][q] }.1)
            model.changeScale.append(meanScale { sgnF[$0][q] }.1)
        }
        let width = model.featureCount
        // Feature rows (with a leading 1 for the intercept).
        let F = width + 1
        var X = [Double](repeating: 0, count: use.count * F)
        for (j, r) in use.enumerated() {
            X[j * F] = 1
            model.writeFeatures(values: values[r], absChange: absF[r], change: sgnF[r]) { X[j * F + 1 + $0] = $1 }
        }
        let y = use.map { rewards[$0] }

        // Placebo pair u belongs to fold u·K / P; rows in no pair are only ever fitted on.
        let P = starts.count
        let K = min(s.folds, P)
        var rowFold = [Int?](repeating: nil, count: use.count)
        for (u, start) in starts.enumerated() {
            for j in start..<(start + unit) { rowFold[j] = u * K / P }
        }
        func fold(ofRow j: Int) -> Int? { rowFold[j] }
        // Gram matrices (F × F, with the intercept column) and X'y per fold and in total.
        var gram = [[Double]](repeating: [Double](repeating: 0, count: F * F), count: K + 1)
        var xy = [[Double]](repeating: [Double](repeating: 0, count: F), count: K + 1)
        X.withUnsafeBufferPointer { xp in
            for j in 0..<use.count {
                let slot = fold(ofRow: j) ?? K
                let row = UnsafeBufferPointer(rebasing: xp[(j * F)..<(j * F + F)])
                gram[slot].withUnsafeMutableBufferPointer { gp in
                    for p in 0..<F {
                        let v = row[p]
                        if v == 0 { continue }
                        for q in p..<F { gp[p * F + q] += v * row[q] }
                    }
                }
                for p in 0..<F { xy[slot][p] += row[p] * y[j] }
            }
        }
        var totalGram = [Double](repeating: 0, count: F * F), totalXY = [Double](repeating: 0, count: F)
        for slot in 0...K {
            for p in 0..<(F * F) { totalGram[p] += gram[slot][p] }
            for p in 0..<F { totalXY[p] += xy[slot][p] }
        }
        func solve(_ G: [Double], _ b: [Double]) -> [Double]? {
            var m = G
            for p in 0..<F { for q in 0..<p { m[p * F + q] = m[q * F + p] } }
            let n = m[0]
            let lambda = max(1e-9, s.ridge * n)
            for p in 1..<F { m[p * F + p] += lambda }
            return SmallLinearAlgebra.choleskySolve(m, b, n: F)
        }
        // Held-out predictions, fold by fold.
        var predicted = [Double](repeating: .nan, count: use.count)
        for fk in 0..<K {
            var G = totalGram, b = totalXY
            for p in 0..<(F * F) { G[p] -= gram[fk][p] }
            for p in 0..<F { b[p] -= xy[fk][p] }
            guard let w = solve(G, b) else {
                return none("the regression is singular on the rows of held-out stretch \(fk + 1) of \(K)", signals: names, settings: s, rows: rowsName)
            }
            for j in 0..<use.count where fold(ofRow: j) == fk {
                var p = 0.0
                for q in 0..<F { p += w[q] * X[j * F + q] }
                predicted[j] = p
            }
        }
        var sse = 0.0, sst = 0.0, ym = 0.0, held = 0.0
        for j in 0..<use.count where predicted[j].isFinite {
            ym += y[j]
            held += 1
        }
        ym /= max(held, 1)
        for j in 0..<use.count where predicted[j].isFinite {
            sse += (y[j] - predicted[j]) * (y[j] - predicted[j])
            sst += (y[j] - ym) * (y[j] - ym)
        }
        // The placebo A/A switchback: per unit, window 1 − window 0 over the scored ticks.
        var raw2 = 0.0, adj2 = 0.0
        for u in 0..<P {
            var sum = [0.0, 0.0], base = [0.0, 0.0]
            for w in 0..<2 {
                for t in s.burnIn..<s.block {
                    let j = starts[u] + w * s.block + t
                    sum[w] += y[j]
                    base[w] += predicted[j]
                }
            }
            let d = sum[1] - sum[0]
            let adjusted = d - (base[1] - base[0])
            raw2 += d * d
            adj2 += adjusted * adjusted
        }
        guard let w = solve(totalGram, totalXY) else {
            return none("the regression is singular on the reference's rows", signals: names, settings: s, rows: rowsName)
        }
        // Centered form: prediction = intercept + Σ w (feature − mean).
        var means = [Double](repeating: 0, count: width)
        for j in 0..<use.count { for q in 0..<width { means[q] += X[j * F + 1 + q] } }
        for q in 0..<width { means[q] /= Double(use.count) }
        model.featureMean = means
        model.weights = Array(w[1...])
        model.intercept = w[0] + zip(model.weights, means).reduce(0) { $0 + $1.0 * $1.1 }

        let ratio = raw2 > 0 ? adj2 / raw2 : nil
        let accepted = (ratio ?? .infinity) <= s.maxRatio && model.weights.allSatisfy(\.isFinite) && model.intercept.isFinite
        var report = Report(accepted: accepted, reason: nil, signals: names, features: width, timeConstants: taus,
                            rows: rowsName, fittedRows: use.count, placeboPairs: P,
                            rawRMS: (raw2 / Double(P)).squareRoot(), adjustedRMS: (adj2 / Double(P)).squareRoot(),
                            heldOutVarianceRatio: ratio, maxRatio: s.maxRatio, heldOutTickR2: sst > 0 ? 1 - sse / sst : nil)
        if !accepted {
            report.reason = ratio.map {
                String(format: "it does not help enough on held-out data: the placebo pair differences keep %.2f of their mean square (accepted at ≤ %.2f); the exogenous signals do not explain the blocks' spread", $0, s.maxRatio)
            } ?? "the held-out placebo pairs show no spread to reduce (every pair difference is 0)"
        }
        return ExogenousBaseline(report: report, model: model)
    }

    /// JSON text (sorted keys; non-finite numbers are left out as null).
    public func json() -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return (try? e.encode(self)) ?? Data("{}".utf8)
    }

    /// Reads `baseline.json`; nil when the file is missing or unreadable.
    public static func load(from url: URL) -> ExogenousBaseline? {
        guard let data = try? Data(contentsOf: url) else { return nil }
        return try? JSONDecoder().decode(ExogenousBaseline.self, from: data)
    }
}

extension ExogenousBaseline.Report {
    /// Reads a report; one written before `needs_longer_log` was stored (no such key) needs a
    /// longer log when it was refused with a reason that begins `too few rows:`, the reason the
    /// fit gave then (and gives still) for that refusal.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        accepted = try c.decode(Bool.self, forKey: .accepted)
        reason = try c.decodeIfPresent(String.self, forKey: .reason)
        signals = try c.decode([String].self, forKey: .signals)
        features = try c.decode(Int.self, forKey: .features)
        timeConstants = try c.decode([Double].self, forKey: .timeConstants)
        rows = try c.decode(String.self, forKey: .rows)
        fittedRows = try c.decode(Int.self, forKey: .fittedRows)
        placeboPairs = try c.decode(Int.self, forKey: .placeboPairs)
        rawRMS = try c.decodeIfPresent(Double.self, forKey: .rawRMS)
        adjustedRMS = try c.decodeIfPresent(Double.self, forKey: .adjustedRMS)
        heldOutVarianceRatio = try c.decodeIfPresent(Double.self, forKey: .heldOutVarianceRatio)
        maxRatio = try c.decode(Double.self, forKey: .maxRatio)
        heldOutTickR2 = try c.decodeIfPresent(Double.self, forKey: .heldOutTickR2)
        needsLongerLog = try c.decodeIfPresent(Bool.self, forKey: .needsLongerLog)
            ?? (!accepted && (reason?.hasPrefix(ExogenousBaseline.tooFewRowsPrefix) ?? false))
    }
}

extension ExogenousBaseline.Model {
    /// Features: values, products (when `pairs`), |Δ| filters, signed Δ filters.
    public var featureCount: Int {
        let k = signals.count
        return k + 2 * k * timeConstants.count + (pairs ? k * (k + 1) / 2 : 0)
    }

    /// Calls `write(index, value)` for every feature of one tick (no allocation).
    @inline(__always)
    func writeFeatures(values x: [Double], absChange f: [Double], change g: [Double], _ write: (Int, Double) -> Void) {
        let k = signals.count
        var q = 0
        for i in 0..<k {
            write(q, z(x[i], i))
            q += 1
        }
        if pairs {
            for i in 0..<k {
                let zi = z(x[i], i)
                for j in i..<k {
                    write(q, zi * z(x[j], j))
                    q += 1
                }
            }
        }
        for i in 0..<(k * timeConstants.count) {
            write(q, f[i] / absChangeScale[i])
            q += 1
        }
        for i in 0..<(k * timeConstants.count) {
            write(q, g[i] / changeScale[i])
            q += 1
        }
    }

    @inline(__always)
    func z(_ v: Double, _ i: Int) -> Double { v.isFinite ? (v - valueMean[i]) / valueScale[i] : 0 }
}

/// The baseline on the decision thread: fed the raw values of the signals with a role every tick
/// (`DecisionCore.signals`), it runs the change filters and predicts the tick's reward. Buffers
/// and weights are allocated once, in `init`; `advance` allocates nothing.
public struct BaselineEvaluator: Sendable {
    /// The baseline it evaluates.
    public let model: ExogenousBaseline.Model
    /// The names of the values `advance` is fed, in order.
    public let loggedSignalNames: [String]
    /// Where each exogenous signal sits in the values fed (`TopicMap.loggedSignals` order).
    private let index: [Int]
    private let decays: [Double]
    private var values: [Double]
    private var previous: [Double]
    private var absChange: [Double]
    private var change: [Double]
    private var started = false

    /// An evaluator for `model` over values in the order of `loggedSignalNames`.
    ///
    /// - Throws: `BaselineError` when a signal the baseline reads is not among them (the mapping
    ///   changed since the baseline was fitted): run the trial unadjusted, or retrain.
    public init(model: ExogenousBaseline.Model, loggedSignalNames: [String]) throws(BaselineError) {
        var index: [Int] = []
        for n in model.signals {
            guard let i = loggedSignalNames.firstIndex(of: n) else {
                throw BaselineError(message: "the baseline reads signal '\(n)', which this mapping does not log with a role: the trial runs unadjusted (retrain to fit a baseline for this mapping)")
            }
            index.append(i)
        }
        let k = model.signals.count
        let kM = k * model.timeConstants.count
        guard model.valueMean.count == k, model.valueScale.count == k, model.absChangeScale.count == kM, model.changeScale.count == kM,
              model.timeConstants.allSatisfy({ $0 > 0 && $0.isFinite }),
              model.weights.count == model.featureCount, model.featureMean.count == model.featureCount else {
            throw BaselineError(message: "the baseline's weights do not match its signals (\(k) signals, \(model.weights.count) weights): the file is damaged; the trial runs unadjusted")
        }
        self.model = model
        self.loggedSignalNames = loggedSignalNames
        self.index = index
        decays = model.timeConstants.map { exp(-1 / $0) }
        values = [Double](repeating: .nan, count: k)
        previous = [Double](repeating: .nan, count: k)
        absChange = [Double](repeating: 0, count: kM)
        change = [Double](repeating: 0, count: kM)
    }

    /// One tick: runs the change filters on `signals` (this tick's raw values, `loggedSignalNames`
    /// order) and returns the predicted reward of the transition that closes on this tick.
    public mutating func advance(_ signals: [Double]) -> Double {
        let k = index.count
        for i in 0..<k {
            let v = index[i] < signals.count ? signals[index[i]] : .nan
            let p = previous[i]
            let delta = started && v.isFinite && p.isFinite ? v - p : 0
            for m in 0..<decays.count {
                absChange[m * k + i] = decays[m] * absChange[m * k + i] + abs(delta)
                change[m * k + i] = decays[m] * change[m * k + i] + delta
            }
            values[i] = v
            previous[i] = v
        }
        started = true
        var prediction = model.intercept
        let w = model.weights, m = model.featureMean
        model.writeFeatures(values: values, absChange: absChange, change: change) { q, x in prediction += w[q] * (x - m[q]) }
        return prediction
    }
}

/// Why a baseline cannot be used; the message says what happens and what to do.
public struct BaselineError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong.
    public let message: String
    /// The message.
    public var description: String { message }
}

/// The reference controller's reward per tick over a stretch of the log, raw and less its
/// exogenous baseline (`RecentResidualRate.of`, `BaselineEvaluator.replay`).
public struct RecentResidualRate: Sendable, Equatable {
    /// How many of the reference's ticks it is over.
    public var ticks: Int
    /// Their mean reward and its standard deviation.
    public var rate: Double
    public var tickSD: Double
    /// Their mean of reward less the baseline's prediction, and its standard deviation (the raw
    /// figures when there is no baseline).
    public var adjustedRate: Double
    public var adjustedTickSD: Double
}

extension RecentResidualRate {
    /// The rate of the controller `reference` over its last `ticks` rows among `rows` (id order)
    /// with a finite reward, from index `from` on: raw, and less `baseline` (the baseline's
    /// prediction for each of `rows`; nil: none, the "adjusted" figures are the raw ones). Nil
    /// with fewer than `minimumTicks` (or 2) such rows.
    public static func of(_ rows: [LoggedTransition], baseline: [Double]?, reference: ExogenousBaseline.Reference, ticks: Int,
                          from: Int = 0, minimumTicks: Int) -> RecentResidualRate? {
        var pairs: [(reward: Double, baseline: Double)] = []
        for (j, row) in rows.enumerated() where j >= from {
            let t = row.transition
            let b = baseline.map { j < $0.count ? $0[j] : .nan } ?? 0
            guard t.reward.isFinite, b.isFinite, reference.acted(on: t) else { continue }
            pairs.append((t.reward, b))
        }
        let last = pairs.suffix(max(0, ticks))
        guard last.count >= max(2, minimumTicks) else { return nil }
        func meanAndSD(_ x: [Double]) -> (Double, Double) {
            let mean = x.reduce(0, +) / Double(x.count)
            let ss = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
            return (mean, (ss / Double(x.count - 1)).squareRoot())
        }
        let (rate, sd) = meanAndSD(last.map { $0.reward })
        let (adjustedRate, adjustedSD) = meanAndSD(last.map { $0.reward - $0.baseline })
        return RecentResidualRate(ticks: last.count, rate: rate, tickSD: sd, adjustedRate: adjustedRate, adjustedTickSD: adjustedSD)
    }
}

extension BaselineEvaluator {
    /// Runs the log's `rows` (id order, ending with its newest) through the change filters, as
    /// the decision thread would have fed them tick by tick (each row's signals at its end, the
    /// tick its reward is observed at): the evaluator then goes on from the log's end with its
    /// filters settled, not from rest. A trial's or guard's first block is otherwise scored while
    /// the slowest filter still climbs (its time constant is the burn-in): on the thermal zone's
    /// shadow log, a baseline started at rest summed its first block's scored ticks off by 2.8
    /// (sd) from one that had run before, where the adjusted pair differences spread by 3.8.
    ///
    /// Returns the rate of `reference` over its last `ticks` rows among them with a finite
    /// reward, after the first `warmUp` rows (the filters settle over about five of their
    /// longest time constant): raw and less the baseline — nil with fewer than `minimumTicks`
    /// (or 2) such rows, or without a `reference`. Allocates: off the decision thread.
    public mutating func replay(_ rows: [LoggedTransition], reference: ExogenousBaseline.Reference?, ticks: Int,
                                warmUp: Int, minimumTicks: Int) -> RecentResidualRate? {
        var order: [[String]: [Int]] = [:]
        var values = [Double](repeating: .nan, count: loggedSignalNames.count)
        var predictions: [Double] = []
        predictions.reserveCapacity(rows.count)
        for row in rows {
            let t = row.transition
            for i in values.indices { values[i] = .nan }
            if let names = row.signalNames, let next = t.nextSignals, next.count == names.count {
                let index = order[names] ?? loggedSignalNames.map { names.firstIndex(of: $0) ?? -1 }
                order[names] = index
                for (i, k) in index.enumerated() where k >= 0 { values[i] = next[k] }
            }
            predictions.append(advance(values))
        }
        guard let reference else { return nil }
        return RecentResidualRate.of(rows, baseline: predictions, reference: reference, ticks: ticks, from: warmUp, minimumTicks: minimumTicks)
    }

    /// Rows to read from the end of the log to warm the filters: five of their longest time
    /// constant (e^−5 of the state at rest is left).
    public var warmUpRows: Int {
        Int((5 * (model.timeConstants.max() ?? 1)).rounded(.up))
    }
}
