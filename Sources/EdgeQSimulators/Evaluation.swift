import EdgeQCore
import EdgeQPlants
import Foundation

/// How a simulator evaluates whoever controls it against its incumbent (`edgeq sim --eval`,
/// docs/simulators.md, "Evaluation twin").
///
/// The simulator keeps, in process, a twin of the plant that its incumbent drives (no dither)
/// on the same exogenous randomness: the same weather, inflow, setpoints and sensor noise on
/// continuing plants (thermal, tank, heater: their random draws do not depend on the actions,
/// so a plant with the same seed stepped in lockstep sees the same ones), and the same
/// initial state per episode on episodic plants (cart-pole, mountain car: the start of
/// episode k comes from (seed, k), for the plant and the twin alike). Per evaluation window
/// it reports the return of the real plant and of the twin, and who was in control.
public struct EvaluationOptions: Sendable, Equatable {
    /// Steps per window on continuing plants; nil: the plant's default
    /// (`PlantKind.defaultEvaluationWindow`). Episodic plants report per episode.
    public var windowSteps: Int?
    /// Append every window as one JSON line to this file (created when missing).
    public var file: String?
    /// Publish every window (QoS 1, not retained) on `plant/<name>/eval`.
    public var publish = true

    /// Windows of the plant's default length, published, no file.
    public init() {}
}

extension PlantKind {
    /// True for plants whose episodes end by themselves (cart-pole, mountain car): they are
    /// evaluated per episode. The others run on and are evaluated per window of steps.
    public var isEpisodic: Bool {
        switch self {
        case .cartpole, .mountaincar: return true
        case .thermal, .tank, .heater: return false
        }
    }

    /// The evaluation window of a continuing plant, in steps: thermal 288 (a day of 5-minute
    /// steps), tank 360 (an hour of 10 s steps), heater 960 (a shift of 30 s steps); nil for
    /// episodic plants (one window per episode).
    public var defaultEvaluationWindow: Int? {
        switch self {
        case .thermal: return 288
        case .tank: return 360
        case .heater: return 960
        case .cartpole, .mountaincar: return nil
        }
    }
}

/// The seed of episode `episode`'s initial state on an evaluated episodic plant: the plant and
/// its twin both start episode k from it.
public func episodeSeed(seed: UInt64, episode: Int) -> UInt64 {
    var g = SeededGenerator(seed: ((seed &* 0x9E37_79B9_7F4A_7C15) ^ UInt64(truncatingIfNeeded: episode)) &+ 0xE7A1)
    return g.next()
}

/// Each switchback trial's cost as a share (%) of the reference's return over it, from the
/// gateway's trial events on `<prefix>/retrain` (`phase` "trial"): per candidate version, its
/// last event with a `cost_share` — the verdict, the abandonment, or the last progress of a
/// trial the run's end cut off (its cost was paid all the same) —, in the order the trials
/// started. A trial that ended before its first pair has none and is not counted.
public func trialCostShares(_ events: [[String: Any]]) -> [Double] {
    lastTrialFigures(events) { e in
        guard let share = (e["cost_share"] as? NSNumber)?.doubleValue, share.isFinite else { return nil }
        return share * 100
    }
}

/// Per trial (candidate version), `read` of its last verdict, abandonment or progress event
/// that `read` finds a figure in, in the order the trials started.
private func lastTrialFigures<T>(_ events: [[String: Any]], _ read: ([String: Any]) -> T?) -> [T] {
    var order: [Int] = []
    var last: [Int: T] = [:]
    for e in events {
        guard ["verdict", "abandoned", "progress"].contains(e["event"] as? String ?? ""), let v = e["version"] as? Int,
              let figure = read(e) else { continue }
        if last[v] == nil { order.append(v) }
        last[v] = figure
    }
    return order.compactMap { last[$0] }
}

/// The switchback trials' cost pooled (%): Σ cost / Σ what the reference would have earned
/// over them (`cost_base`), each trial at its last event with both (as `trialCostShares`) — a
/// short trial of a wrecking candidate weighs by what it ran, not as one share among the rest.
/// Nil when no event carries both (no trial completed a pair, or a gateway without
/// `cost_base`).
public func trialCostPooled(_ events: [[String: Any]]) -> Double? {
    pooledOverCostBase(events, key: "cost")
}

/// The switchback trials' switching cost pooled (%): Σ `switching_cost` (what the burn-ins lost
/// at the hand-overs, which no trial score counts) / Σ `cost_base`, each trial at its last
/// event with both (as `trialCostPooled`). Nil when no event carries both (a gateway before the
/// figure, or no trial with a pair).
public func trialSwitchingCostPooled(_ events: [[String: Any]]) -> Double? {
    pooledOverCostBase(events, key: "switching_cost")
}

/// 100 × Σ `key` / Σ `cost_base` over the trials, each at its last event with both finite (and
/// a positive base); nil when none has.
private func pooledOverCostBase(_ events: [[String: Any]], key: String) -> Double? {
    let trials = lastTrialFigures(events) { e -> (cost: Double, base: Double)? in
        guard let cost = (e[key] as? NSNumber)?.doubleValue, let base = (e["cost_base"] as? NSNumber)?.doubleValue,
              cost.isFinite, base.isFinite, base > 0 else { return nil }
        return (cost, base)
    }
    guard !trials.isEmpty else { return nil }
    return 100 * trials.reduce(0) { $0 + $1.cost } / trials.reduce(0) { $0 + $1.base }
}

/// One evaluation window: the real plant's return beside the incumbent twin's on the same
/// exogenous randomness, and who decided the real plant's steps.
public struct EvaluationWindow: Sendable, Equatable {
    /// What a window spans.
    public enum Kind: String, Sendable { case steps, episode }

    /// The plant's name.
    public var plant: String
    /// The simulator's seed.
    public var seed: UInt64
    /// 0, 1, 2, … in the order the windows closed.
    public var index: Int
    /// `steps` (continuing plants) or `episode` (episodic plants: `index` is the episode).
    public var kind: Kind
    /// Steps the simulator had run before the window's first step.
    public var firstStep: Int
    /// Steps of the real plant in the window.
    public var steps: Int
    /// Sum of the real plant's rewards over the window (the plant's own reward, as in its
    /// state messages).
    public var realReturn: Double
    /// Sum of the twin's rewards over the same window (the same steps, or the same episode
    /// run to its end by the incumbent).
    public var incumbentReturn: Double
    /// The twin's steps (differs from `steps` on an episodic plant when the episode lasted
    /// longer or shorter under the incumbent).
    public var incumbentSteps: Int
    /// Steps of the window per controller: `incumbent` (the plant's own controller: in shadow,
    /// or after a command did not come in time), `vN` (the gateway's command chosen by model
    /// version N, as the command's `"model"` says — the mapping's `{{model}}` —, or without it
    /// the version its status named as served), `gateway` (its command with no version known,
    /// or a fallback).
    public var stepsBy: [String: Int]

    /// The controller that decided every step of the window, or `mixed`.
    public var controller: String {
        stepsBy.count == 1 ? stepsBy.keys.first ?? "mixed" : "mixed"
    }

    /// 100 × (real − incumbent) / |incumbent|: positive when the real plant did better than
    /// the incumbent would have on the same window; nil when the incumbent's return is 0.
    public var vsIncumbentPercent: Double? {
        incumbentReturn == 0 ? nil : 100 * (realReturn - incumbentReturn) / abs(incumbentReturn)
    }

    /// The JSON object published on `plant/<name>/eval` and written to `--eval-file` (keys
    /// sorted): plant, seed, window, kind, first_step, steps, return, incumbent_return,
    /// incumbent_steps, vs_incumbent_pct (null when the incumbent's return is 0),
    /// controller, steps_by.
    public func json() -> [UInt8] {
        let by = stepsBy.keys.sorted().map { "\(jsonString($0)):\(stepsBy[$0] ?? 0)" }.joined(separator: ",")
        func num(_ x: Double?) -> String {
            guard let x, x.isFinite else { return "null" }
            return String(format: "%.17g", x)
        }
        let s = "{\"controller\":\(jsonString(controller)),\"first_step\":\(firstStep),\"incumbent_return\":\(num(incumbentReturn)),"
            + "\"incumbent_steps\":\(incumbentSteps),\"kind\":\(jsonString(kind.rawValue)),\"plant\":\(jsonString(plant)),"
            + "\"return\":\(num(realReturn)),\"seed\":\(seed),\"steps\":\(steps),\"steps_by\":{\(by)},"
            + "\"vs_incumbent_pct\":\(num(vsIncumbentPercent)),\"window\":\(index)}"
        return Array(s.utf8)
    }

    /// Reads a window back from its JSON (`json()`); nil when a field is missing.
    public init?(json bytes: [UInt8]) {
        guard let o = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any],
              let plant = o["plant"] as? String, let seed = (o["seed"] as? NSNumber)?.uint64Value,
              let index = (o["window"] as? NSNumber)?.intValue, let kind = (o["kind"] as? String).flatMap(Kind.init),
              let first = (o["first_step"] as? NSNumber)?.intValue, let steps = (o["steps"] as? NSNumber)?.intValue,
              let real = (o["return"] as? NSNumber)?.doubleValue,
              let inc = (o["incumbent_return"] as? NSNumber)?.doubleValue,
              let incSteps = (o["incumbent_steps"] as? NSNumber)?.intValue,
              let by = o["steps_by"] as? [String: Any] else { return nil }
        self.init(plant: plant, seed: seed, index: index, kind: kind, firstStep: first, steps: steps, realReturn: real,
                  incumbentReturn: inc, incumbentSteps: incSteps,
                  stepsBy: by.compactMapValues { ($0 as? NSNumber)?.intValue })
    }

    /// A window from its parts.
    public init(plant: String, seed: UInt64, index: Int, kind: Kind, firstStep: Int, steps: Int, realReturn: Double,
                incumbentReturn: Double, incumbentSteps: Int, stepsBy: [String: Int]) {
        self.plant = plant
        self.seed = seed
        self.index = index
        self.kind = kind
        self.firstStep = firstStep
        self.steps = steps
        self.realReturn = realReturn
        self.incumbentReturn = incumbentReturn
        self.incumbentSteps = incumbentSteps
        self.stepsBy = stepsBy
    }
}

/// The twin and the window bookkeeping of one evaluated simulator run (used by the thread
/// that runs the simulator only).
struct Evaluator {
    private enum Twin {
        /// A continuing plant of the same kind and seed, stepped once per real step.
        case lockstep(any SimPlant)
        /// An episodic plant: the incumbent's return and length on episode k.
        case episodes((Int) -> (return: Double, steps: Int))
    }

    let plant: PlantKind
    let seed: UInt64
    let windowSteps: Int
    private var twin: Twin
    private(set) var windows: [EvaluationWindow] = []
    private var stepsRun = 0
    private var firstStep = 0
    private var steps = 0
    private var realReturn = 0.0
    private var twinReturn = 0.0
    private var stepsBy: [String: Int] = [:]
    private var episode = 0

    init(plant: PlantKind, seed: UInt64, options: EvaluationOptions) {
        self.plant = plant
        self.seed = seed
        windowSteps = max(options.windowSteps ?? plant.defaultEvaluationWindow ?? 1, 1)
        switch plant {
        case .thermal: twin = .lockstep(ThermalSim(seed: seed))
        case .tank: twin = .lockstep(TankSim(seed: seed))
        case .heater: twin = .lockstep(HeaterSim(seed: seed))
        case .cartpole:
            twin = .episodes { k in
                var env = CartPole(seed: episodeSeed(seed: seed, episode: k))
                let rule = CartPoleRule()
                var total = 0.0
                while true {
                    let s = env.step(rule.decide(env.observation))
                    total += s.reward
                    if s.terminal || s.truncated { return (total, env.steps) }
                }
            }
        case .mountaincar:
            twin = .episodes { k in
                var env = MountainCar(seed: episodeSeed(seed: seed, episode: k))
                let rule = MountainCarRule()
                var total = 0.0
                while true {
                    let s = env.step(rule.decide(velocity: env.velocity))
                    total += s.reward
                    if s.terminal || s.truncated { return (total, env.steps) }
                }
            }
        }
    }

    /// After the real plant's step (before its state is published): the step's reward and
    /// who decided it. Returns the window it closed, if any (continuing plants).
    mutating func afterStep(reward: Double, controller: String) -> EvaluationWindow? {
        stepsRun += 1
        steps += 1
        realReturn += reward
        stepsBy[controller, default: 0] += 1
        guard case .lockstep(var t) = twin else { return nil }
        t.step(t.incumbentAction())
        twinReturn += t.lastReward
        _ = t.startNextEpisodeIfEnded()  // the real plant resets at the same step
        twin = .lockstep(t)
        guard steps >= windowSteps else { return nil }
        return close(kind: .steps, index: windows.count, twinSteps: steps)
    }

    /// The real plant's episode ended (episodic plants): returns its window, beside the
    /// incumbent's run of the same episode.
    mutating func episodeEnded() -> EvaluationWindow? {
        guard case .episodes(let run) = twin else { return nil }
        let (r, n) = run(episode)
        twinReturn = r
        defer { episode += 1 }
        return close(kind: .episode, index: episode, twinSteps: n)
    }

    private mutating func close(kind: EvaluationWindow.Kind, index: Int, twinSteps: Int) -> EvaluationWindow {
        let w = EvaluationWindow(plant: plant.rawValue, seed: seed, index: index, kind: kind, firstStep: firstStep,
                                 steps: steps, realReturn: realReturn, incumbentReturn: twinReturn,
                                 incumbentSteps: twinSteps, stepsBy: stepsBy)
        windows.append(w)
        firstStep = stepsRun
        steps = 0
        realReturn = 0
        twinReturn = 0
        stepsBy = [:]
        return w
    }
}

/// Cart-pole whose episode k starts from `episodeSeed(seed, k)` (evaluated runs): the same
/// messages and score as `CartPoleSim`, with starts the twin can repeat.
struct SeededCartPoleSim: SimPlant {
    let name = "cartpole"
    let commandKey = "action"
    let actionCount = CartPole.actionCount
    let seed: UInt64
    var env: CartPole
    let rule = CartPoleRule()
    var message: CartPoleState
    var returns = EpisodeReturns()
    var episode = 0
    var pendingReset = false

    init(seed: UInt64) {
        self.seed = seed
        env = CartPole(seed: episodeSeed(seed: seed, episode: 0))
        message = CartPoleState(step: 0, episode: 0, observation: env.observation)
    }

    var stepIndex: Int { message.step }
    var lastReward: Double { message.reward }
    func stateJSON() throws -> [UInt8] { Array(try stateEncoder.encode(message)) }
    mutating func incumbentAction() -> Int { rule.decide(env.observation) }
    mutating func step(_ action: Int) {
        let s = env.step(action)
        returns.add(reward: s.reward, ended: s.terminal || s.truncated)
        message = CartPoleState(step: env.steps, episode: episode, observation: s.observation,
                                reward: s.reward, terminal: s.terminal, truncated: s.truncated)
        if s.terminal || s.truncated { pendingReset = true }
    }
    mutating func startNextEpisodeIfEnded() -> Bool {
        guard pendingReset else { return false }
        pendingReset = false
        episode += 1
        env = CartPole(seed: episodeSeed(seed: seed, episode: episode))
        message = CartPoleState(step: 0, episode: episode, observation: env.observation)
        return true
    }
    func scoreJSON() throws -> [UInt8] {
        let o: [String: Any] = ["plant": name, "episodes": returns.returns.count, "mean_return": returns.mean]
        return Array(try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]))
    }
    func scoreText() -> String {
        String(format: "cartpole: %d episodes, mean return %.2f", returns.returns.count, returns.mean)
    }
}

/// Mountain car whose episode k starts from `episodeSeed(seed, k)` (evaluated runs): the same
/// messages and score as `MountainCarSim`, with starts the twin can repeat.
struct SeededMountainCarSim: SimPlant {
    let name = "mountaincar"
    let commandKey = "action"
    let actionCount = MountainCar.actionCount
    let seed: UInt64
    var env: MountainCar
    let rule = MountainCarRule()
    var message: MountainCarState
    var returns = EpisodeReturns()
    var episode = 0
    var totalSteps = 0
    var pendingReset = false

    init(seed: UInt64) {
        self.seed = seed
        env = MountainCar(seed: episodeSeed(seed: seed, episode: 0))
        message = Self.message(step: 0, episode: 0, position: env.position, velocity: env.velocity)
    }

    private static let template = MountainCarEpisodes(seed: 0).message

    /// A state message (the plant module's type has no public memberwise initializer; its
    /// fields are public).
    static func message(step: Int, episode: Int, position: Double, velocity: Double, reward: Double = 0,
                        terminal: Bool = false, truncated: Bool = false) -> MountainCarState {
        var m = template
        m.step = step
        m.episode = episode
        m.position = position
        m.velocity = velocity
        m.reward = reward
        m.terminal = terminal
        m.truncated = truncated
        return m
    }

    var stepIndex: Int { message.step }
    var lastReward: Double { message.reward }
    func stateJSON() throws -> [UInt8] { Array(try stateEncoder.encode(message)) }
    mutating func incumbentAction() -> Int { rule.decide(velocity: env.velocity) }
    mutating func step(_ action: Int) {
        let s = env.step(action)
        totalSteps += 1
        returns.add(reward: s.reward, ended: s.terminal || s.truncated)
        message = Self.message(step: env.steps, episode: episode, position: s.position, velocity: s.velocity,
                               reward: s.reward, terminal: s.terminal, truncated: s.truncated)
        if s.terminal || s.truncated { pendingReset = true }
    }
    mutating func startNextEpisodeIfEnded() -> Bool {
        guard pendingReset else { return false }
        pendingReset = false
        episode += 1
        env = MountainCar(seed: episodeSeed(seed: seed, episode: episode))
        message = Self.message(step: 0, episode: episode, position: env.position, velocity: env.velocity)
        return true
    }
    func scoreJSON() throws -> [UInt8] {
        let o: [String: Any] = ["plant": name, "steps": totalSteps, "episodes": returns.returns.count, "mean_return": returns.mean]
        return Array(try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]))
    }
    func scoreText() -> String {
        String(format: "mountaincar: %d steps, %d episodes, mean return %.2f", totalSteps, returns.returns.count, returns.mean)
    }
}
