/// The model classes retraining tries on every plant, in report order (docs/learning.md, "The
/// plant model"): the linear model with dead time, and the MLP ensemble whose action window
/// covers the dead time the linear search found.
public enum PlantModelClasses {
    /// `linear` and `ensemble`, with their defaults.
    public static func standard() -> [any PlantModelFitter] {
        [LinearPlantFitter(), DeadTimeEnsembleFitter()]
    }

    /// The standard classes whose `name` is in `names`, in report order; all of them when
    /// `names` is nil (a mapping's `model.classes`, docs/mapping.md "model").
    public static func standard(named names: [String]?) -> [any PlantModelFitter] {
        let all = standard()
        guard let names else { return all }
        return all.filter { names.contains($0.name) }
    }
}

/// The MLP ensemble with an action window sized to the plant's dead time: the action window is
/// widened to the delay + 2 ticks of the linear structure search on the same data (on the
/// heater, with a 6-tick dead time, this cut the ensemble's free-run error at 15 minutes to a
/// third of the default 2-tick window's). In the selection the linear class has just run that
/// search on the same data, so its delay is taken (`fit(_:seed:fittedBefore:)`); alone, the
/// fitter runs a smaller search of its own (`delaySearch`). A plant without dead time keeps
/// the ensemble's default window. The name in reports stays `ensemble`.
public struct DeadTimeEnsembleFitter: PlantModelFitter {
    /// The ensemble's settings (its `actionWindow` is set from the delay).
    public var configuration: EnsemblePlantFitter.Configuration
    /// The search that finds the delay when no linear model searched on the same data is given.
    public var delaySearch: LinearPlantFitter

    /// An ensemble fitter with default settings; `delaySearch` is a linear search with a
    /// smaller free-run budget and fewer iterations (only its delay is used).
    public init(configuration: EnsemblePlantFitter.Configuration = .init()) {
        self.configuration = configuration
        // Only the delay is used: a quarter of the free-run budget and of the iterations (the
        // search repeats the linear class's work; on a four-output cart-pole log of 4,900
        // samples the whole selection took 55 s in a debug build on a loaded machine).
        var search = LinearPlantFitter()
        search.searchTicks = 5_000
        search.fitTicks = 5_000
        search.iterations = 15
        delaySearch = search
    }

    public var name: String { "ensemble" }

    /// Fits with the delay of its own search (`delaySearch`).
    public func fit(_ data: PlantData, seed: UInt64) throws(PlantModelError) -> any PlantModel {
        try fit(data, seed: seed, fittedBefore: [])
    }

    /// Fits with the delay of the first linear model in `fittedBefore` whose structure was
    /// searched (its `searchScores` not empty) over at least `delaySearch`'s delays — the
    /// selection's linear class, fitted on the same data — or, without one, of its own search.
    public func fit(_ data: PlantData, seed: UInt64, fittedBefore: [any PlantModel]) throws(PlantModelError) -> any PlantModel {
        var c = configuration
        if c.actionWindow == nil {
            let searched = fittedBefore.lazy.compactMap { $0 as? LinearPlantModel }.first {
                !$0.searchScores.isEmpty && ($0.searchScores.map(\.structure.delay).max() ?? -1) >= delaySearch.maxDelay
            }
            let delay = searched?.structure.delay ?? (try? delaySearch.fitLinear(data))?.structure.delay ?? 0
            if delay > 0 { c.actionWindow = max(c.window, delay + 2) }
        }
        return try EnsemblePlantFitter(c).fit(data, seed: seed)
    }
}
