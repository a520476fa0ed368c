/// The plant model's shared vocabulary (docs/learning.md, "The plant model"): what a model is
/// fitted on, what a fitted model can do, and how a planner steps it.
///
/// Signals are split the way the mapping marks them: *controlled* signals are the plant's
/// response to the actions (temperatures, levels, angles) and are predicted by the model;
/// *exogenous* signals (weather, price, setpoints, occupancy) are not caused by the actions
/// and are given to the model (measured, or forecast) — it never predicts them.
///
/// Actions are the mapping's discrete actions, `0..<actionCount`. Where a step takes an
/// action *mix* (a probability vector over the actions), a one-hot vector is the action
/// itself; a mix is the relaxation a planner uses on a plant whose lag averages switching
/// (a block of steps that applies stage 2 half the time and stage 3 the other half).

/// One contiguous stretch of the plant's history, sampled once per tick: no gap inside.
///
/// Sample `t` holds the controlled and exogenous signals measured at tick `t`;
/// `actions[t]` was applied from tick `t` to tick `t + 1`, so `actions.count ==
/// controlled.count - 1`. A log with gaps (flagged rows) is several segments.
public struct PlantSegment: Sendable, Equatable {
    /// Controlled signals per sample (each inner array has the model's output count).
    public var controlled: [[Double]]
    /// Exogenous signals per sample (each inner array has the exogenous count; may be empty).
    public var exogenous: [[Double]]
    /// The action applied after each sample but the last.
    public var actions: [Int]

    /// A segment; the counts must agree (`PlantData.init` checks them).
    public init(controlled: [[Double]], exogenous: [[Double]], actions: [Int]) {
        self.controlled = controlled
        self.exogenous = exogenous
        self.actions = actions
    }

    /// Samples in the segment.
    public var count: Int { controlled.count }
}

/// What a model is fitted on: segments with the signals' names.
public struct PlantData: Sendable, Equatable {
    /// Names of the controlled signals (the model's outputs), in order.
    public var controlledNames: [String]
    /// Names of the exogenous signals (the model's given inputs), in order.
    public var exogenousNames: [String]
    /// Number of discrete actions.
    public var actionCount: Int
    /// The contiguous stretches.
    public var segments: [PlantSegment]

    /// Data with checked shapes.
    /// - Throws: `PlantModelError.badData` naming the first segment whose counts disagree.
    public init(controlledNames: [String], exogenousNames: [String], actionCount: Int, segments: [PlantSegment]) throws(PlantModelError) {
        for (i, s) in segments.enumerated() {
            guard s.exogenous.count == s.controlled.count, s.actions.count == max(0, s.controlled.count - 1),
                  s.controlled.allSatisfy({ $0.count == controlledNames.count }),
                  s.exogenous.allSatisfy({ $0.count == exogenousNames.count }),
                  s.actions.allSatisfy({ (0..<actionCount).contains($0) })
            else {
                throw .badData("segment \(i): \(s.controlled.count) controlled samples, \(s.exogenous.count) exogenous, \(s.actions.count) actions (need n, n, n−1, with \(controlledNames.count) controlled and \(exogenousNames.count) exogenous values each and actions in 0..<\(actionCount))")
            }
        }
        self.controlledNames = controlledNames
        self.exogenousNames = exogenousNames
        self.actionCount = actionCount
        self.segments = segments
    }

    /// Total samples over all segments.
    public var sampleCount: Int { segments.reduce(0) { $0 + $1.count } }
}

/// A fitted plant model: it starts rollouts from a stretch of observed history.
public protocol PlantModel: Sendable {
    /// A short name of the model class and its structure, e.g. `linear(na=2, nb=2, delay=6)`.
    var description: String { get }
    /// Number of controlled signals it predicts.
    var outputCount: Int { get }
    /// Number of exogenous signals it takes.
    var exogenousCount: Int { get }
    /// Number of discrete actions.
    var actionCount: Int { get }
    /// Samples of history a rollout needs before its first prediction (its order plus its
    /// dead time).
    var memory: Int { get }
    /// A rollout whose present is sample `index` of `segment` (`index >= memory - 1`): it
    /// knows the samples up to and including `index` and the actions before it.
    func rollout(from segment: PlantSegment, at index: Int) -> any PlantRollout
}

/// A model class that fits itself to data (the linear identification, the MLP ensemble).
/// The selection (`PlantModelSelection`) fits each class on the training part and keeps the
/// one with the smallest held-out free-run error.
public protocol PlantModelFitter: Sendable {
    /// The class's name in reports, e.g. `linear` or `ensemble`.
    var name: String { get }
    /// Fits the class to `data` (already the training part). Deterministic for a seed.
    /// - Throws: `PlantModelError.notEnoughData` when `data` is too short for the class.
    func fit(_ data: PlantData, seed: UInt64) throws(PlantModelError) -> any PlantModel
    /// `fit`, given the models the selection fitted before this class on the same `data` (in
    /// fitter order): a class may take what an earlier one found instead of searching for it
    /// again (`DeadTimeEnsembleFitter` takes the linear class's dead time). The default ignores
    /// them and calls `fit`.
    func fit(_ data: PlantData, seed: UInt64, fittedBefore: [any PlantModel]) throws(PlantModelError) -> any PlantModel
}

extension PlantModelFitter {
    public func fit(_ data: PlantData, seed: UInt64, fittedBefore: [any PlantModel]) throws(PlantModelError) -> any PlantModel {
        try fit(data, seed: seed)
    }
}

/// A model stepped forward in free run. A value: copy it to branch (a planner tries several
/// futures from one present).
public protocol PlantRollout: Sendable {
    /// The controlled signals now (observed at the start, predicted after a step).
    var controlled: [Double] { get }
    /// The model's uncertainty about `controlled` (an ensemble's spread, in the signals'
    /// units, root mean square over the outputs); 0 for a model that has no measure of it.
    var uncertainty: Double { get }
    /// Advances one tick: `mix` is the action (a probability vector over the actions; one-hot
    /// for a plain action) applied from now to the next tick, `exogenous` the exogenous
    /// signals measured (or forecast) now. Returns the predicted controlled signals.
    mutating func step(mix: [Double], exogenous: [Double]) -> [Double]
}

extension PlantRollout {
    /// Advances one tick with a plain action.
    public mutating func step(action: Int, actionCount: Int, exogenous: [Double]) -> [Double] {
        var mix = [Double](repeating: 0, count: actionCount)
        if mix.indices.contains(action) { mix[action] = 1 }
        return step(mix: mix, exogenous: exogenous)
    }
}

/// Why a plant model could not be fitted or used. Each case says what to do.
public enum PlantModelError: Error, Equatable, CustomStringConvertible {
    /// The data's shapes disagree (a bug in whoever assembled them, or a damaged log).
    case badData(String)
    /// Too few samples to fit and hold out: log longer before the model steps can run.
    case notEnoughData(have: Int, need: Int)
    /// No model class predicts better than persistence on held-out data: the model-based
    /// steps are skipped (the message names the best model's error against persistence).
    case notBetterThanPersistence(String)

    public var description: String {
        switch self {
        case .badData(let s): return "plant data malformed: \(s)"
        case .notEnoughData(let have, let need):
            return "plant model: \(have) usable samples, need at least \(need); let the gateway log longer (flagged rows do not count)"
        case .notBetterThanPersistence(let s):
            return "plant model refused: not better than persistence on held-out data (\(s)); the model-based steps are skipped"
        }
    }
}
