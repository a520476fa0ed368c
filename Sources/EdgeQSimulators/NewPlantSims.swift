import EdgeQCore
import EdgeQPlants
import Foundation

/// The process heater with its SIMC-tuned PI; continuing, a shift (8 h) ends every 960 steps.
struct HeaterSim: SimPlant {
    let name = "heater"
    let commandKey = "level"
    var actionCount: Int { heater.parameters.levels.count }
    var heater: Heater
    var pi: HeaterPI

    init(seed: UInt64) {
        heater = Heater(seed: seed)
        pi = HeaterPI(heater: heater)
    }

    var stepIndex: Int { heater.observation.step }
    var lastReward: Double { heater.observation.reward }
    func stateJSON() throws -> [UInt8] { Array(try stateEncoder.encode(heater.observation)) }
    mutating func incumbentAction() -> Int { pi.decide(heater.observation) }
    mutating func step(_ action: Int) { _ = heater.step(level: action) }
    mutating func startNextEpisodeIfEnded() -> Bool { heater.startNextShiftIfEnded() != nil }
    func scoreJSON() throws -> [UInt8] {
        let s = heater.score
        let o: [String: Any] = [
            "plant": name, "steps": s.steps, "mean_abs_error": s.meanAbsError, "energy_kwh": s.energyKWh,
            "total_reward": s.totalReward, "setpoint_changes": s.setpointChanges,
            "episodes": s.shiftReturns.count, "mean_return": s.meanShiftReturn,
        ]
        return Array(try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]))
    }
    func scoreText() -> String {
        let s = heater.score
        return String(format: "heater: %d steps, mean |T - setpoint| %.3f K, energy %.1f kWh, %d setpoint changes, reward %.3f, %d shifts, mean shift return %.2f",
                      s.steps, s.meanAbsError, s.energyKWh, s.setpointChanges, s.totalReward,
                      s.shiftReturns.count, s.meanShiftReturn)
    }
}

/// Gymnasium's MountainCar-v0 with the energy-pumping rule; a new episode starts by itself
/// after the goal or 200 steps.
struct MountainCarSim: SimPlant {
    let name = "mountaincar"
    let commandKey = "action"
    let actionCount = MountainCar.actionCount
    var plant: MountainCarEpisodes

    init(seed: UInt64) { plant = MountainCarEpisodes(seed: seed) }

    var stepIndex: Int { plant.message.step }
    var lastReward: Double { plant.message.reward }
    func stateJSON() throws -> [UInt8] { Array(try stateEncoder.encode(plant.message)) }
    mutating func incumbentAction() -> Int { plant.incumbentAction() }
    mutating func step(_ action: Int) { plant.step(action) }
    mutating func startNextEpisodeIfEnded() -> Bool { plant.startNextEpisodeIfEnded() }
    func scoreJSON() throws -> [UInt8] {
        let r = plant.returns
        let o: [String: Any] = ["plant": name, "steps": plant.totalSteps, "episodes": r.returns.count, "mean_return": r.mean]
        return Array(try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]))
    }
    func scoreText() -> String {
        let r = plant.returns
        return String(format: "mountaincar: %d steps, %d episodes, mean return %.2f", plant.totalSteps, r.returns.count, r.mean)
    }
}
