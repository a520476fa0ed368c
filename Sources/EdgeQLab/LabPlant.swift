import EdgeQCore
import EdgeQPlants
import Foundation

/// A plant the lab drives in process: what `edgeq sim` would publish, without MQTT.
///
/// The lab feeds `stateJSON()` to the mapping file's decoder exactly as the gateway would
/// receive it on `stateTopic`, so the state, reward and episode flags come from the mapping.
public protocol LabPlant {
    /// The topic the state message is published on (`plant/<name>/state`).
    var stateTopic: String { get }
    /// The topic the incumbent publishes its command on (`plant/<name>/cmd`).
    var commandTopic: String { get }
    /// The key of the command payload (`{"level":2}`).
    var commandKey: String { get }
    /// Number of discrete actions (0..<actionCount).
    var actionCount: Int { get }
    /// The current state message (JSON bytes).
    func stateJSON() -> [UInt8]
    /// What the incumbent would do now (before dither).
    mutating func incumbentAction() -> Int
    /// Applies `action` for one step.
    mutating func step(_ action: Int)
    /// After the state that ended an episode was seen: starts the next episode and returns
    /// true; otherwise false.
    mutating func startNextEpisodeIfEnded() -> Bool
    /// The plant's own score of everything stepped (the plant's cost, not the mapping's reward).
    var score: LabScore { get }
}

/// What a plant measured over a run, in its own units.
public struct LabScore: Sendable, Equatable, Codable {
    /// Steps taken.
    public var steps = 0
    /// Energy cost (thermal), currency units; 0 for plants without one.
    public var energyCost = 0.0
    /// Kelvin-hours outside the comfort band while occupied (thermal).
    public var comfortViolation = 0.0
    /// Sum of the plant's own per-step rewards.
    public var totalReward = 0.0
    /// Finished episodes and their mean return (cart-pole).
    public var episodes = 0
    /// Mean return of the finished episodes (0 when none).
    public var meanEpisodeReturn = 0.0

    /// An empty score.
    public init() {}
}

private let labEncoder: JSONEncoder = {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return e
}()

/// The thermal zone with its PI incumbent (`edgeq sim thermal`, docs/simulators.md).
public struct ThermalLabPlant: LabPlant {
    public let stateTopic = "plant/thermal/state"
    public let commandTopic = "plant/thermal/cmd"
    public let commandKey = "level"
    public var actionCount: Int { zone.parameters.levels.count }
    /// The zone.
    public private(set) var zone: ThermalZone
    /// Its incumbent.
    public private(set) var pi: ThermalPI

    /// A zone whose weather draws from `seed`, with the default PI.
    public init(seed: UInt64, parameters: ThermalZone.Parameters = .init(), pi piParameters: ThermalPI.Parameters = .init()) {
        zone = ThermalZone(seed: seed, parameters: parameters)
        pi = ThermalPI(zone: zone, parameters: piParameters)
    }

    public func stateJSON() -> [UInt8] {
        // Encoding a struct of numbers cannot fail; an empty message would be rejected by the decoder.
        (try? Array(labEncoder.encode(zone.observation))) ?? []
    }
    public mutating func incumbentAction() -> Int { pi.decide(zone.observation) }
    public mutating func step(_ action: Int) { _ = zone.step(level: action) }
    public mutating func startNextEpisodeIfEnded() -> Bool {
        guard zone.observation.truncated else { return false }
        _ = zone.reset()
        return true
    }
    public var score: LabScore {
        var s = LabScore()
        let z = zone.score
        s.steps = z.steps
        s.energyCost = z.energyCost
        s.comfortViolation = z.comfortViolation
        s.totalReward = z.totalReward
        s.episodes = zone.episode
        return s
    }
}

/// Cart-pole with its weak rule as incumbent; a new episode starts after the pole falls or
/// 500 steps pass (`edgeq sim cartpole`).
public struct CartPoleLabPlant: LabPlant {
    public let stateTopic = "plant/cartpole/state"
    public let commandTopic = "plant/cartpole/cmd"
    public let commandKey = "action"
    public let actionCount = CartPole.actionCount
    var plant: CartPoleEpisodes
    var returns: EpisodeReturns { plant.returns }
    var steps = 0

    /// A cart-pole drawing from `seed`.
    public init(seed: UInt64) { plant = CartPoleEpisodes(seed: seed) }

    public func stateJSON() -> [UInt8] { (try? Array(labEncoder.encode(plant.message))) ?? [] }
    public mutating func incumbentAction() -> Int { plant.incumbentAction() }
    public mutating func step(_ action: Int) {
        plant.step(action)
        steps += 1
    }
    public mutating func startNextEpisodeIfEnded() -> Bool { plant.startNextEpisodeIfEnded() }
    public var score: LabScore {
        var s = LabScore()
        s.steps = steps
        s.episodes = returns.returns.count
        s.meanEpisodeReturn = returns.mean
        s.totalReward = returns.returns.reduce(0, +) + returns.current
        return s
    }
    /// Returns of the finished episodes, in order.
    public var episodeReturns: [Double] { returns.returns }
}
