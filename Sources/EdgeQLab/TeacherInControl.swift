import EdgeQModel
import EdgeQRetrain
import EdgeQTopicMap

/// A plant in the lab with the distillation's teacher in charge (docs/learning.md, "The teacher
/// in control"): the planner on the retraining's plant model decides every step from the
/// plant's signals as the gateway decodes them (the mapping's decoder and range checks), the
/// plant's own incumbent deciding until the history holds the model's `memory` samples, after
/// an episode's end, and whenever a signal the model needs is missing or out of range.
///
/// Run it with `Lab.run(…, policy: .incumbent(dither: 0))`: the lab asks the plant's incumbent
/// once a step, and this plant's incumbent is the teacher. The exogenous forecast: the signals
/// the mapping marks `forecast: schedule` read from a copy of the plant stepped ahead (the
/// lab's plants are values; a schedule does not depend on the actions), the others held at
/// their present values — what the teacher sees on logged states, where the log shows the
/// schedule ahead.
public struct TeacherDrivenPlant<P: LabPlant>: LabPlant {
    /// The plant.
    public private(set) var plant: P
    /// Steps the teacher decided.
    public private(set) var teacherDecisions = 0
    /// Steps the plant's incumbent decided (history too short, a signal unusable).
    public private(set) var incumbentDecisions = 0

    private let teacher: PlanTeacher
    private let how: PlanTeacher.ClosedLoop
    private var planner: RecedingHorizonPlanner
    private var decoder: Decoder
    private var history = PlantSegment(controlled: [], exogenous: [], actions: [])
    /// The model's signals, decoded as the gateway decodes them.
    private struct Decoder {
        let map: TopicMap
        var table: SignalTable
        var runtime: TopicMapRuntime
        /// Where each controlled and exogenous signal sits in the logged signals.
        let controlled: [Int], exogenous: [Int]
        var logged: [Double]
        var clock: UInt64 = 1_000_000_000

        /// (controlled, exogenous) of a state message; nil when a signal is missing or invalid.
        mutating func signals(topic: String, payload: [UInt8]) -> (controlled: [Double], exogenous: [Double])? {
            clock += 1_000_000_000
            let now = clock
            _ = payload.withUnsafeBytes { map.decode(topic: topic, payload: $0, time: now, into: &table) }
            runtime.refresh(from: table, now: now)
            logged.withUnsafeMutableBufferPointer { runtime.loggedSignalValues(into: $0) }
            let c = controlled.map { logged[$0] }, e = exogenous.map { logged[$0] }
            guard c.allSatisfy(\.isFinite), e.allSatisfy(\.isFinite) else { return nil }
            return (c, e)
        }
    }

    /// `plant` driven by `teacher`, deciding as `how` says.
    ///
    /// - Throws: `PlannerError` for a bad planner configuration; `LabError.log` when the
    ///   mapping does not log a signal the model reads (a mapping built without the loader).
    public init(_ plant: P, teacher: PlanTeacher, how: PlanTeacher.ClosedLoop = .bestValue) throws {
        self.plant = plant
        self.teacher = teacher
        self.how = how
        planner = try teacher.makePlanner()
        let map = teacher.map
        let logged = map.loggedSignalNames
        let names = map.modelSignalNames
        func positions(_ wanted: [String]) throws -> [Int] {
            try wanted.map { n in
                guard let i = logged.firstIndex(of: n) else { throw LabError.log("the mapping does not log signal '\(n)', which the plant model reads") }
                return i
            }
        }
        decoder = Decoder(map: map, table: SignalTable(for: map), runtime: TopicMapRuntime(map: map),
                          controlled: try positions(names.controlled), exogenous: try positions(names.exogenous),
                          logged: [Double](repeating: .nan, count: logged.count))
    }

    public var stateTopic: String { plant.stateTopic }
    public var commandTopic: String { plant.commandTopic }
    public var commandKey: String { plant.commandKey }
    public var actionCount: Int { plant.actionCount }
    public func stateJSON() -> [UInt8] { plant.stateJSON() }
    public var score: LabScore { plant.score }

    public mutating func incumbentAction() -> Int {
        let fallback = plant.incumbentAction()   // the incumbent runs beside (its integrator), as in the lab
        guard let now = decoder.signals(topic: plant.stateTopic, payload: plant.stateJSON()) else {
            history = PlantSegment(controlled: [], exogenous: [], actions: [])
            incumbentDecisions += 1
            return fallback
        }
        if history.actions.count != history.count {   // asked twice without a step between: start again
            history = PlantSegment(controlled: [], exogenous: [], actions: [])
        }
        history.controlled.append(now.controlled)
        history.exogenous.append(now.exogenous)
        guard history.count >= teacher.model.memory, let a = teacher.decide(history: history, ahead: ahead(now.exogenous), planner: &planner, how: how),
              (0..<actionCount).contains(a) else {
            incumbentDecisions += 1
            return fallback
        }
        teacherDecisions += 1
        return a
    }

    public mutating func step(_ action: Int) {
        plant.step(action)
        if history.count == history.actions.count + 1 { history.actions.append(action) }
        // The model needs `memory` samples; keep a few more and trim in batches.
        let keep = teacher.model.memory + 2
        if history.count > 4 * keep {
            let cut = history.count - keep
            history.controlled.removeFirst(cut)
            history.exogenous.removeFirst(cut)
            history.actions.removeFirst(cut)
        }
    }

    public mutating func startNextEpisodeIfEnded() -> Bool {
        guard plant.startNextEpisodeIfEnded() else { return false }
        history = PlantSegment(controlled: [], exogenous: [], actions: [])   // the log's segments end there too
        return true
    }

    /// The exogenous values over the teacher's horizon: `now`, then the next steps' from a copy
    /// of the plant stepped with action 0 (only the scheduled signals are read from them).
    private mutating func ahead(_ now: [Double]) -> [[Double]] {
        let h = teacher.configuration.horizon
        var out = [now]
        out.reserveCapacity(h + 1)
        var copy = plant
        var peek = decoder
        for _ in 0..<h {
            copy.step(0)
            out.append(peek.signals(topic: copy.stateTopic, payload: copy.stateJSON())?.exogenous ?? out[out.count - 1])
        }
        return out
    }
}
