import EdgeQCore
import EdgeQPlants
import Foundation

/// A plant as the simulator runner drives it: a state message, an incumbent, a step, a score.
/// The JSON fields are the contract of docs/simulators.md.
protocol SimPlant {
    /// `cartpole`, `thermal`, `tank`, `heater`, `mountaincar`: the topic level `plant/<name>/…`.
    var name: String { get }
    /// The key of the command payload (`{"level":2}`).
    var commandKey: String { get }
    /// Number of discrete actions (0..<actionCount).
    var actionCount: Int { get }
    /// The `step` field of the current state message (a command may name it).
    var stepIndex: Int { get }
    /// The reward of the step that led to the current state (as its state message says).
    var lastReward: Double { get }
    /// The current state message.
    func stateJSON() throws -> [UInt8]
    /// What the incumbent would do now (before dither).
    mutating func incumbentAction() -> Int
    /// Applies `action` for one step.
    mutating func step(_ action: Int)
    /// After the state that ended an episode was published: starts the next episode and
    /// returns true; otherwise false.
    mutating func startNextEpisodeIfEnded() -> Bool
    /// The score so far, as JSON and as a line for people.
    func scoreJSON() throws -> [UInt8]
    func scoreText() -> String
}

/// The simulators' JSON encoder (sorted keys: the same bytes for the same state), shared by
/// every plant of this module.
let stateEncoder: JSONEncoder = {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return e
}()

/// Cart-pole with the weak hand-written rule as incumbent; a new episode starts by itself
/// after the pole falls or 500 steps pass.
struct CartPoleSim: SimPlant {
    let name = "cartpole"
    let commandKey = "action"
    let actionCount = CartPole.actionCount
    var plant: CartPoleEpisodes
    var returns: EpisodeReturns { plant.returns }

    init(seed: UInt64) { plant = CartPoleEpisodes(seed: seed) }

    var stepIndex: Int { plant.message.step }
    var lastReward: Double { plant.message.reward }
    func stateJSON() throws -> [UInt8] { Array(try stateEncoder.encode(plant.message)) }
    mutating func incumbentAction() -> Int { plant.incumbentAction() }
    mutating func step(_ action: Int) { plant.step(action) }
    /// Called by the runner after the ending state was published.
    mutating func startNextEpisodeIfEnded() -> Bool { plant.startNextEpisodeIfEnded() }

    func scoreJSON() throws -> [UInt8] {
        let o: [String: Any] = ["plant": name, "episodes": returns.returns.count, "mean_return": returns.mean]
        return Array(try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]))
    }

    func scoreText() -> String {
        String(format: "cartpole: %d episodes, mean return %.2f", returns.returns.count, returns.mean)
    }
}

/// The thermal zone with its PI incumbent.
struct ThermalSim: SimPlant {
    let name = "thermal"
    let commandKey = "level"
    var actionCount: Int { zone.parameters.levels.count }
    var zone: ThermalZone
    var pi: ThermalPI

    init(seed: UInt64) {
        zone = ThermalZone(seed: seed)
        pi = ThermalPI(zone: zone)
    }

    var stepIndex: Int { zone.observation.step }
    var lastReward: Double { zone.observation.reward }
    func stateJSON() throws -> [UInt8] { Array(try stateEncoder.encode(zone.observation)) }
    mutating func incumbentAction() -> Int { pi.decide(zone.observation) }
    mutating func step(_ action: Int) { _ = zone.step(level: action) }
    mutating func startNextEpisodeIfEnded() -> Bool {
        guard zone.observation.truncated else { return false }
        _ = zone.reset()
        return true
    }
    func scoreJSON() throws -> [UInt8] {
        var o = try JSONSerialization.jsonObject(with: stateEncoder.encode(zone.score)) as? [String: Any] ?? [:]
        o["plant"] = name
        return Array(try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]))
    }
    func scoreText() -> String {
        let s = zone.score
        return String(format: "thermal: %d steps, energy cost %.3f, comfort violation %.3f K·h, energy %.1f kWh, reward %.3f",
                      s.steps, s.energyCost, s.comfortViolation, s.energyKWh, s.totalReward)
    }
}

/// The tank with its PI incumbent.
struct TankSim: SimPlant {
    let name = "tank"
    let commandKey = "valve"
    let actionCount = 5
    var tank: Tank
    var pi: TankPI

    init(seed: UInt64) {
        tank = Tank(seed: seed)
        pi = TankPI(tank: tank)
    }

    var stepIndex: Int { tank.observation.step }
    var lastReward: Double { tank.observation.reward }
    func stateJSON() throws -> [UInt8] { Array(try stateEncoder.encode(tank.observation)) }
    mutating func incumbentAction() -> Int { pi.decide(tank.observation) }
    mutating func step(_ action: Int) { _ = tank.step(valve: action) }
    mutating func startNextEpisodeIfEnded() -> Bool {
        guard tank.observation.truncated else { return false }
        _ = tank.reset()
        return true
    }
    func scoreJSON() throws -> [UInt8] {
        var o = try JSONSerialization.jsonObject(with: stateEncoder.encode(tank.score)) as? [String: Any] ?? [:]
        o["plant"] = name
        o["mean_abs_error"] = tank.score.meanAbsError
        return Array(try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]))
    }
    func scoreText() -> String {
        let s = tank.score
        return String(format: "tank: %d steps, mean |level error| %.4f m, %d valve moves, %d overflows, reward %.3f",
                      s.steps, s.meanAbsError, s.valveMoves, s.overflows, s.totalReward)
    }
}
