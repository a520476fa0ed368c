import EdgeQCore
import EdgeQPlants
import Foundation

private let newLabEncoder: JSONEncoder = {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return e
}()

/// The process heater with its SIMC-tuned PI (`edgeq sim heater`, docs/simulators.md):
/// continuing physics, a shift ends every 960 steps (8 h) with `truncated`.
public struct HeaterLabPlant: LabPlant {
    public let stateTopic = "plant/heater/state"
    public let commandTopic = "plant/heater/cmd"
    public let commandKey = "level"
    public var actionCount: Int { heater.parameters.levels.count }
    /// The plant.
    public private(set) var heater: Heater
    /// Its incumbent.
    public private(set) var pi: HeaterPI

    /// A heater whose setpoints, ambient and sensor noise draw from `seed`, with the default PI.
    public init(seed: UInt64, parameters: Heater.Parameters = .init(), pi piParameters: HeaterPI.Parameters = .standard) {
        heater = Heater(seed: seed, parameters: parameters)
        pi = HeaterPI(heater: heater, parameters: piParameters)
    }

    public func stateJSON() -> [UInt8] {
        // Encoding a struct of numbers cannot fail; an empty message would be rejected by the decoder.
        (try? Array(newLabEncoder.encode(heater.observation))) ?? []
    }
    public mutating func incumbentAction() -> Int { pi.decide(heater.observation) }
    public mutating func step(_ action: Int) { _ = heater.step(level: action) }
    public mutating func startNextEpisodeIfEnded() -> Bool { heater.startNextShiftIfEnded() != nil }
    public var score: LabScore {
        let h = heater.score
        var s = LabScore()
        s.steps = h.steps
        s.totalReward = h.totalReward
        s.episodes = h.shiftReturns.count
        s.meanEpisodeReturn = h.meanShiftReturn
        return s
    }
    /// Returns of the finished shifts, in order (the plant's reward, docs/simulators.md).
    public var episodeReturns: [Double] { heater.score.shiftReturns }
}

/// Gymnasium's MountainCar-v0 with the energy-pumping rule as incumbent; a new episode starts
/// after the goal or 200 steps (`edgeq sim mountaincar`).
public struct MountainCarLabPlant: LabPlant {
    public let stateTopic = "plant/mountaincar/state"
    public let commandTopic = "plant/mountaincar/cmd"
    public let commandKey = "action"
    public let actionCount = MountainCar.actionCount
    var plant: MountainCarEpisodes

    /// A mountain car drawing its starts from `seed`.
    public init(seed: UInt64) { plant = MountainCarEpisodes(seed: seed) }

    public func stateJSON() -> [UInt8] { (try? Array(newLabEncoder.encode(plant.message))) ?? [] }
    public mutating func incumbentAction() -> Int { plant.incumbentAction() }
    public mutating func step(_ action: Int) { plant.step(action) }
    public mutating func startNextEpisodeIfEnded() -> Bool { plant.startNextEpisodeIfEnded() }
    public var score: LabScore {
        var s = LabScore()
        s.steps = plant.totalSteps
        s.episodes = plant.returns.returns.count
        s.meanEpisodeReturn = plant.returns.mean
        s.totalReward = plant.returns.returns.reduce(0, +) + plant.returns.current
        return s
    }
    /// Returns of the finished episodes, in order.
    public var episodeReturns: [Double] { plant.returns.returns }
}
