import EdgeQCore
import EdgeQGateway
import EdgeQMQTT
import EdgeQNet
import EdgeQTrust
import EdgeQTopicMap
import Foundation
import Testing

/// A closed-loop test plant for `testMapping` (and `episodicMapping`), run tick by tick against
/// a gateway on a real broker: the test publishes a state, reads who acted on it — the gateway
/// (its command for this step on `plant/t/cmd`) or the incumbent (the gateway stayed silent and
/// published its shadow report: in shadow mode, or in control mode while the incumbent is in
/// charge, i.e. a trial's or the guard's incumbent block) — plays the incumbent when the
/// gateway was silent (its command on `plant/t/cmd`, as a plant's own controller would), and
/// computes the next state from the action applied. So the reward of a tick depends on who
/// acted, which is what the switchback trial and the control-group guard measure.
final class ClosedLoop {
    /// Who acted on a tick, and the action applied.
    enum Acted: Equatable {
        case gateway(Int)
        case incumbent(Int)

        var action: Int {
            switch self {
            case .gateway(let a), .incumbent(let a): return a
            }
        }

        var isGateway: Bool {
            if case .gateway = self { return true }
            return false
        }
    }

    let h: GatewayHarness
    /// The plant's step counter (the `step` field of its state and of every command).
    private(set) var step = 0
    /// The state's `x` (the test mapping's reward is −|x|) and `y`.
    var x = 0.0
    var y = 0.0
    /// Episodic plants: this state ends the episode (`done`).
    var done = false
    /// Ticks (in the current episode, for episodic plants).
    private(set) var episodeTicks = 0
    /// Every decision tick, in order.
    private(set) var acted: [Acted] = []
    /// Episode lengths (transitions), in order, and who acted on each episode's first tick.
    private(set) var episodes: [(length: Int, gateway: Bool)] = []
    /// Whether the state published carries `done` (for `episodicMapping`).
    let episodic: Bool
    /// The incumbent's action on the current step.
    var incumbent: (ClosedLoop) -> Int
    /// Moves the plant on by one step with the action applied (sets `x`, `y`, `done`).
    var dynamics: (ClosedLoop, Int) -> Void

    /// `firstStep`: the first state's step number (after earlier states with other numbers).
    init(_ h: GatewayHarness, episodic: Bool = false, firstStep: Int = 0, incumbent: @escaping (ClosedLoop) -> Int,
         dynamics: @escaping (ClosedLoop, Int) -> Void) {
        self.h = h
        step = firstStep
        self.episodic = episodic
        self.incumbent = incumbent
        self.dynamics = dynamics
    }

    var stateJSON: String {
        episodic ? "{\"step\":\(step),\"x\":\(x),\"y\":\(y),\"done\":\(done)}" : "{\"step\":\(step),\"x\":\(x),\"y\":\(y)}"
    }

    /// One step: the state goes out, the gateway's command for it comes back or the incumbent
    /// acts, the plant moves. After a terminal state (episodic), the next episode's first state
    /// is published on the next call (a terminal state is not a decision point).
    @discardableResult
    func tick() throws -> Acted {
        if episodic && done {
            // The terminal state was published by the previous call: start the next episode.
            episodes.append((episodeTicks, episodeFirstGateway ?? false))
            episodeTicks = 0
            episodeFirstGateway = nil
            done = false
            x = 0
            y = 0
            step += 1
        }
        try h.send("plant/t/state", stateJSON)
        let who = try response(step: step)
        let action: Int
        switch who {
        case .gateway(let a):
            action = a
        case .incumbent:
            action = incumbent(self)
            try h.send("plant/t/cmd", "{\"a\":\(action),\"step\":\(step)}")
        }
        let result: Acted = who.isGateway ? .gateway(action) : .incumbent(action)
        acted.append(result)
        if episodeFirstGateway == nil { episodeFirstGateway = who.isGateway }
        episodeTicks += 1
        dynamics(self, action)
        step += 1
        if episodic && done {
            // The terminal state: no decision on it (in control nothing answers it; in shadow
            // an "episode_end" report, which `response` passes over).
            try h.send("plant/t/state", stateJSON)
        }
        return result
    }

    private var episodeFirstGateway: Bool?

    /// Runs `n` ticks (or until `until` holds after a tick).
    func run(_ n: Int, until: () -> Bool = { false }) throws {
        for _ in 0..<n {
            try tick()
            if until() { return }
        }
    }

    /// Runs ticks until `condition` holds after one, for at most `seconds` of wall time (a
    /// bound on waiting, not a measurement: the guard's and the trial's verdicts are acted on
    /// by the gateway's control queue, whose file writes may take a while on a loaded machine,
    /// and the plant keeps stepping meanwhile, as a real one would).
    func run(until condition: () -> Bool, atMost seconds: Double = 30) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            try tick()
            if condition() { return }
        }
    }

    /// Who answered the state of `step`: the gateway's command for that step, or its shadow report.
    private func response(step: Int, timeout: Double = 10) throws -> Acted {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let m = h.observer.receive(timeout: 0.05) else { continue }
            h.received.append(m)
            let o = GatewayHarness.json(m)
            if m.topic == "plant/t/cmd", o["step"] as? Int == step, let a = o["a"] as? Int {
                // Not the incumbent's echo: the test publishes the incumbent's command for a
                // step only after this returns.
                return .gateway(a)
            }
            if m.topic == "edgeq/t1/shadow", o["status"] as? String != "episode_end" {
                return .incumbent(-1)
            }
        }
        throw HarnessError("no answer to the state of step \(step) within \(timeout) s; seen: \(h.received.suffix(4).map { "\($0.topic) \(String(decoding: $0.payload, as: UTF8.self))" })")
    }
}

/// The test mapping as an episodic plant: `done` in the state ends the episode (`terminal`),
/// every tick pays 1 (the return is the episode's length, as in cart-pole).
func episodicMapping(extraLearning: String) -> String {
    testMapping(extraLearning: extraLearning)
        .replacingOccurrences(of: "  - {name: y, topic: plant/t/state, json: y, range: [-10, 10]}",
                              with: "  - {name: y, topic: plant/t/state, json: y, range: [-10, 10]}\n  - {name: done, topic: plant/t/state, json: done, type: bool}")
        .replacingOccurrences(of: "reward: -abs(x)", with: "reward: 1\nterminal: done")
}

/// Stores a model for `map` that picks `action` in every state (a random 16-16 network whose Q
/// head gives `action` a bias of +20), signed with the data directory's device key as the
/// gateway signs what it trains; made current (served at the next start) when `current`.
@discardableResult
func storeModel(favouring action: Int, for map: TopicMap, in data: URL, seed: UInt64 = 3, current: Bool = false) throws -> Int {
    let arch = Architecture(inputCount: map.stateWidth, hidden: [16, 16], actionCount: map.actions.count)
    var parameters = try MLP(arch, seed: seed).parameterArray
    let head = try #require(arch.slices.last)
    parameters[head.bias + action] += 20
    let net = try MLP(arch, parameters: parameters)
    var rng = SeededGenerator(seed: seed)
    let calibration = (0..<(map.stateWidth * 256)).map { _ in Float(rng.nextUnit() * 2 - 1) }
    let model = try QModel(network: net, actionNames: map.actions.map(\.name), normalization: .identity(map.stateWidth),
                           calibrationStates: calibration)
    let file = data.appendingPathComponent("favouring-\(action)-\(seed).safetensors")
    try model.save(to: file)
    let store = try ModelStore(dataDirectory: data)
    let v = try store.add(files: ["model.safetensors": file, "model.safetensors.sha256": QModel.checksumURL(for: file)],
                          report: Data(#"{"verdict":"passed"}"#.utf8), signer: try ModelSigner.device(dataDirectory: data, map: map))
    if current { try store.setCurrent(v, reason: "test") }
    return v
}
