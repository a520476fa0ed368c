import EdgeQCore

/// The seeds of a gateway's random draws, each derived from the gateway's one seed
/// (`GatewayOptions.seed`, `edgeq run --seed`) and what the draw is about, so that the same seed
/// and the same models give the same draws in another run (docs/operations.md, "Replaying a
/// run's random draws"):
///
/// - the exploration in control: one generator for the run;
/// - a switchback trial's block order: per candidate and reference version (the incumbent is 0),
///   so a trial of the same two controllers draws the same order, whenever it starts;
/// - the control group's blocks after a promotion: per served version.
public enum GatewaySeeds {
    /// The exploration generator's seed.
    public static func exploration(_ gateway: UInt64) -> UInt64 { SeededGenerator.derive(gateway, 1) }

    /// The seed of the trial of `candidate` against `reference` (nil: the incumbent).
    public static func trial(_ gateway: UInt64, candidate: Int, reference: Int?) -> UInt64 {
        SeededGenerator.derive(gateway, 2, UInt64(truncatingIfNeeded: candidate), UInt64(truncatingIfNeeded: reference ?? 0))
    }

    /// The seed of the control group's blocks while `served` is served (nil: none yet).
    public static func controlGroup(_ gateway: UInt64, served: Int?) -> UInt64 {
        SeededGenerator.derive(gateway, 3, UInt64(truncatingIfNeeded: served ?? 0))
    }
}
