/// The plant model's fit report (docs/learning.md, "The plant model"): each class's held-out
/// free-run error at several horizons against persistence, which class won, and why the fit
/// was refused. `edgeq bench model --json` and the retraining events print it; the JSON keys
/// are stable.
public struct PlantFitReport: Sendable, Equatable, Codable {
    /// Names of the controlled signals, in order (the `outputs` of each horizon follow it).
    public var controlled: [String]
    /// The horizons, ticks ahead.
    public var horizons: [Int]
    /// Samples the classes were fitted on (the first part by time).
    public var trainingSamples: Int
    /// Samples held out (the last part by time).
    public var heldOutSamples: Int
    /// Free-run windows evaluated per horizon (the same for every class and persistence).
    public var windows: Int
    /// One entry per class, in the order the fitters were given.
    public var classes: [PlantFitClass]
    /// The winning class's name (smallest error at the longest horizon), nil when none fitted.
    public var chosen: String?
    /// Why the fit was refused (nil: accepted).
    public var refused: String?
    /// Samples the selection was given (training and held out together): what this fit saw.
    /// Nil in reports written before it was recorded.
    public var fittedOnSamples: Int?
    /// True when a retraining reused this fit from an earlier retraining instead of refitting
    /// (the log had not grown enough since; docs/learning.md, "The plant model"): the classes'
    /// figures are those of the earlier fit, on `fittedOnSamples` samples.
    public var reused: Bool = false

    /// A report.
    public init(controlled: [String], horizons: [Int], trainingSamples: Int, heldOutSamples: Int, windows: Int,
                classes: [PlantFitClass], chosen: String?, refused: String?) {
        self.controlled = controlled
        self.horizons = horizons
        self.trainingSamples = trainingSamples
        self.heldOutSamples = heldOutSamples
        self.windows = windows
        self.classes = classes
        self.chosen = chosen
        self.refused = refused
        fittedOnSamples = trainingSamples + heldOutSamples
    }

    enum CodingKeys: String, CodingKey {
        case controlled, horizons, trainingSamples = "training_samples", heldOutSamples = "held_out_samples"
        case windows, classes, chosen, refused, fittedOnSamples = "fitted_on_samples", reused
    }

    /// Decodes a report; `fitted_on_samples` and `reused`, absent from reports written before
    /// they existed, become nil and false.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        controlled = try c.decode([String].self, forKey: .controlled)
        horizons = try c.decode([Int].self, forKey: .horizons)
        trainingSamples = try c.decode(Int.self, forKey: .trainingSamples)
        heldOutSamples = try c.decode(Int.self, forKey: .heldOutSamples)
        windows = try c.decode(Int.self, forKey: .windows)
        classes = try c.decode([PlantFitClass].self, forKey: .classes)
        chosen = try c.decodeIfPresent(String.self, forKey: .chosen)
        refused = try c.decodeIfPresent(String.self, forKey: .refused)
        fittedOnSamples = try c.decodeIfPresent(Int.self, forKey: .fittedOnSamples)
        reused = try c.decodeIfPresent(Bool.self, forKey: .reused) ?? false
    }
}

/// One model class in the report.
public struct PlantFitClass: Sendable, Equatable, Codable {
    /// The fitter's name (`linear`, `ensemble`).
    public var name: String
    /// The fitted model's description (class and structure), nil when the fit failed.
    public var model: String?
    /// Why the fit failed, nil when it did not.
    public var error: String?
    /// Errors per horizon (empty when the fit failed).
    public var horizons: [PlantFitHorizon]

    /// A class's entry.
    public init(name: String, model: String?, error: String?, horizons: [PlantFitHorizon]) {
        self.name = name
        self.model = model
        self.error = error
        self.horizons = horizons
    }

    /// The entry for the longest horizon.
    public var longest: PlantFitHorizon? { horizons.max { $0.steps < $1.steps } }
}

/// A class's held-out free-run error `steps` ticks ahead.
public struct PlantFitHorizon: Sendable, Equatable, Codable {
    /// Ticks ahead.
    public var steps: Int
    /// Per controlled signal.
    public var outputs: [PlantFitOutput]
    /// The model's RMSE normalised by each output's held-out standard deviation, averaged over
    /// the outputs (what chooses the class); nil when the free run diverged.
    public var modelNormalized: Double?
    /// The same for persistence.
    public var persistenceNormalized: Double
    /// `modelNormalized / persistenceNormalized`: below 1 is better than persistence; nil when
    /// either is undefined (diverged, or persistence is exact).
    public var ratio: Double?

    /// An entry.
    public init(steps: Int, outputs: [PlantFitOutput], modelNormalized: Double?, persistenceNormalized: Double) {
        self.steps = steps
        self.outputs = outputs
        self.modelNormalized = modelNormalized
        self.persistenceNormalized = persistenceNormalized
        ratio = modelNormalized.flatMap { persistenceNormalized > 0 ? $0 / persistenceNormalized : nil }
    }

    enum CodingKeys: String, CodingKey {
        case steps, outputs, modelNormalized = "model_nrmse", persistenceNormalized = "persistence_nrmse", ratio
    }
}

/// One controlled signal's held-out free-run error at one horizon.
public struct PlantFitOutput: Sendable, Equatable, Codable {
    /// The controlled signal's name.
    public var signal: String
    /// The model's RMSE in the signal's own units; nil when the free run diverged.
    public var modelRMSE: Double?
    /// Persistence's RMSE (the signal stays at its last observed value), own units.
    public var persistenceRMSE: Double
    /// `modelRMSE / persistenceRMSE`; nil when undefined.
    public var ratio: Double?
    /// The signal's standard deviation over the held-out samples (the normaliser), own units.
    public var heldOutSD: Double

    /// An entry.
    public init(signal: String, modelRMSE: Double?, persistenceRMSE: Double, heldOutSD: Double) {
        self.signal = signal
        self.modelRMSE = modelRMSE
        self.persistenceRMSE = persistenceRMSE
        self.heldOutSD = heldOutSD
        ratio = modelRMSE.flatMap { persistenceRMSE > 0 ? $0 / persistenceRMSE : nil }
    }

    enum CodingKeys: String, CodingKey {
        case signal, modelRMSE = "model_rmse", persistenceRMSE = "persistence_rmse", ratio, heldOutSD = "held_out_sd"
    }
}
