import EdgeQLog
import EdgeQModel
import EdgeQTopicMap

/// The planner as a teacher on logged states (docs/learning.md, "Distillation: the planner
/// teaches the int8 network"): for a row of the experience log, the learned plant model's
/// rollout starts from that row's history (its segment in `PlantDataReader`'s reading of the
/// log, at the row's sample) and the planner values each first action
/// (`RecedingHorizonPlanner.actionValues`): Q_teach(s, a), the predicted discounted return with
/// the first tick's action fixed to a and the rest of the plan optimised. The row's `state`
/// (the mapping's feature vector, the Q-network's input) is paired with those values.
///
/// The exogenous signals are held at the row's values over the horizon (persistence: what the
/// gateway knows at that tick), except those the mapping marks `forecast: schedule` (known
/// ahead: a tariff, an occupancy or comfort schedule, the clock), which take the values the log
/// shows over the horizon (`forecast(_:at:scheduled:)`; docs/learning.md, "A schedule is known
/// ahead"). Rows whose sample has less history than the model's `memory` (the first samples
/// of a segment) and rows the reader leaves out (flagged, no action, …) get no values.
public struct PlanTeacher: Sendable {
    /// The mapping (its signal roles, actions and `learning.gamma`).
    public let map: TopicMap
    /// The learned plant model the planner plans on.
    public let model: any PlantModel
    /// The planner's configuration; its `discount` is set to the mapping's `learning.gamma`.
    public let configuration: RecedingHorizonPlanner.Configuration
    /// The step's reward on predicted signals, on the scale of the log's `reward` column (the
    /// mapping's reward): (controlled at k + 1, exogenous of step k, the action mix, k).
    public let reward: @Sendable ([Double], [Double], [Double], Int) -> Double

    /// A teacher; `configuration.discount` is replaced by `map.learning.gamma`, so the values
    /// are discounted as the learner discounts.
    public init(map: TopicMap, model: any PlantModel, configuration: RecedingHorizonPlanner.Configuration,
                reward: @escaping @Sendable ([Double], [Double], [Double], Int) -> Double) {
        self.map = map
        self.model = model
        var c = configuration
        c.discount = map.learning.gamma
        self.configuration = c
        self.reward = reward
    }

    /// One logged state the teacher valued.
    public struct Sample: Sendable, Equatable {
        /// The row's index in the rows given.
        public var row: Int
        /// The row's time (its state's tick time).
        public var time: Double
        /// The logged action.
        public var loggedAction: Int
        /// The state and the teacher's value of each action.
        public var example: Distillation.Example
    }

    /// The teacher's values on every `every`-th usable row of `rows` (in log order) among those
    /// `include` accepts (by row index; default all), at most `limit` of them (the oldest);
    /// `shouldStop` is polled before each state is valued and true ends the valuing there (the
    /// states valued so far are returned, in log order).
    ///
    /// With `newestFirst` the same rows are valued newest first, so a valuing ended by
    /// `shouldStop` (a time limit) keeps the newest of them rather than the oldest; valued to
    /// the end, the result is the same.
    ///
    /// - Throws: `PlantDataError` when the mapping has no controlled signal or the data are
    ///   malformed; `PlannerError` for a bad planner configuration.
    public func samples(rows: [LoggedTransition], every: Int = 1, limit: Int = .max, include: (Int) -> Bool = { _ in true },
                        newestFirst: Bool = false, shouldStop: () -> Bool = { false }) throws -> [Sample] {
        let (data, positions) = try placed(rows: rows)
        let scheduled = scheduledSignals(data.exogenousNames)
        var planner = try RecedingHorizonPlanner(configuration)
        // The rows to value, in log order: (row, segment, sample, logged action).
        var chosen: [(i: Int, s: Int, k: Int, action: Int)] = []
        var usable = 0
        for (i, row) in rows.enumerated() {
            guard let (s, k) = positions[i], k >= model.memory - 1, let action = row.transition.action else { continue }
            defer { usable += 1 }
            guard usable % max(every, 1) == 0, include(i) else { continue }
            if chosen.count >= limit { break }
            chosen.append((i, s, k, action))
        }
        var out: [Sample] = []
        for c in newestFirst ? Array(chosen.reversed()) : chosen {
            if shouldStop() { break }
            let segment = data.segments[c.s]
            let v = planner.actionValues(from: model.rollout(from: segment, at: c.k), forecast: Self.forecast(segment.exogenous, at: c.k, scheduled: scheduled),
                                         reward: reward)
            out.append(Sample(row: c.i, time: rows[c.i].transition.time, loggedAction: c.action,
                              example: Distillation.Example(state: rows[c.i].transition.state, values: v.values)))
        }
        if newestFirst { out.reverse() }
        return out
    }

    /// How the teacher decides one state in closed loop (`decide(history:ahead:planner:)`).
    public enum ClosedLoop: Sendable, Equatable {
        /// The best of its values per first action (`RecedingHorizonPlanner.actionValues`):
        /// what the student is taught to pick.
        case bestValue
        /// The planner's own decision (`RecedingHorizonPlanner.decide`): with the relaxation, a
        /// block between two levels is realised by the sigma-delta carry, which a one-hot pick
        /// cannot do.
        case planner
    }

    /// A planner with the teacher's configuration, for `decide(history:ahead:planner:)`.
    ///
    /// - Throws: `PlannerError` for a bad configuration (the initialiser's mapping checks make
    ///   one only for a mapping built without the loader).
    public func makePlanner() throws(PlannerError) -> RecedingHorizonPlanner { try RecedingHorizonPlanner(configuration) }

    /// The teacher deciding the last sample of `history` in closed loop (the bench's teacher
    /// in control; docs/learning.md, "The teacher in control"): the model's rollout from there,
    /// with `ahead[j]` the exogenous values j ticks on (`ahead[0]` the last sample's, in the
    /// plant data's order); signals not marked `forecast: schedule` are held at `ahead[0]`'s
    /// values, as on logged states. Nil when `history` is shorter than the model's `memory`
    /// or no action has a finite value.
    public func decide(history: PlantSegment, ahead: [[Double]], planner: inout RecedingHorizonPlanner,
                       how: ClosedLoop = .bestValue) -> Int? {
        guard history.count >= max(model.memory, 1), !ahead.isEmpty else { return nil }
        let rollout = model.rollout(from: history, at: history.count - 1)
        let forecast = Self.forecast(ahead, at: 0, scheduled: scheduledSignals(map.modelSignalNames.exogenous))
        switch how {
        case .bestValue:
            let v = planner.actionValues(from: rollout, forecast: forecast, reward: reward)
            return Distillation.Example(state: [], values: v.values).best
        case .planner:
            return planner.decide(from: rollout, forecast: forecast, reward: reward).action
        }
    }

    /// For each of the exogenous signals `names` (the plant data's order): whether the mapping
    /// marks it `forecast: schedule`.
    public func scheduledSignals(_ names: [String]) -> [Bool] {
        names.map { n in map.signals.first { $0.name == n }?.forecast == .schedule }
    }

    /// The teacher's forecast from sample `k` of a stretch whose exogenous samples are
    /// `exogenous`: step j's values are sample k's (persistence), with the `scheduled` signals
    /// taken from sample k + j (the last sample's past the end of the stretch).
    static func forecast(_ exogenous: [[Double]], at k: Int, scheduled: [Bool]) -> (Int) -> [Double] {
        let now = exogenous[k]
        guard scheduled.contains(true) else { return { _ in now } }
        return { j in
            let ahead = exogenous[min(max(k + j, k), exogenous.count - 1)]
            var out = now
            for i in out.indices where i < scheduled.count && i < ahead.count && scheduled[i] { out[i] = ahead[i] }
            return out
        }
    }

    /// `rows` read as plant data (`PlantDataReader`, segments shorter than the model's memory
    /// + 1 dropped) and where each row sits in it: (segment, sample index), nil for rows the
    /// reader left out.
    ///
    /// - Throws: `PlantDataError` when the mapping has no controlled signal or the data are malformed.
    public func placed(rows: [LoggedTransition]) throws(PlantDataError) -> (data: PlantData, positions: [(segment: Int, sample: Int)?]) {
        let reader = try PlantDataReader(map: map, minimumSamples: max(model.memory + 1, 2))
        let (data, _) = try reader.read(rows: rows)
        return (data, Self.align(rows: rows, data: data, reader: reader).map { $0.map { (segment: $0.0, sample: $0.1) } })
    }

    /// Where each row sits in `data` (segment, sample index), nil for rows the reader left out.
    /// The reader's segments are runs of consecutive used rows in log order, sample k of a
    /// segment being its k-th row's signals and `actions[k]` its action; the walk matches rows
    /// to them in order, and starts a segment again when a row that looked like its start
    /// (a left-out row with the same values) is followed by one that does not continue it.
    static func align(rows: [LoggedTransition], data: PlantData, reader: PlantDataReader) -> [(Int, Int)?] {
        let wanted = reader.controlledNames + reader.exogenousNames
        let nc = reader.controlledNames.count
        var out = [(Int, Int)?](repeating: nil, count: rows.count)
        var s = 0, k = 0
        var assigned: [Int] = []   // rows given to segment s so far
        func matches(_ i: Int, _ s: Int, _ k: Int) -> Bool {
            guard s < data.segments.count else { return false }
            let seg = data.segments[s]
            let t = rows[i].transition
            guard k < seg.actions.count, t.action == seg.actions[k], let names = rows[i].signalNames,
                  let now = t.signals, let next = t.nextSignals, now.count == names.count, next.count == names.count else { return false }
            for (j, n) in wanted.enumerated() {
                guard let p = names.firstIndex(of: n) else { return false }
                let here = j < nc ? seg.controlled[k][j] : seg.exogenous[k][j - nc]
                let there = j < nc ? seg.controlled[k + 1][j] : seg.exogenous[k + 1][j - nc]
                guard now[p] == here, next[p] == there else { return false }
            }
            return true
        }
        for i in rows.indices {
            if matches(i, s, k) {
                out[i] = (s, k)
                assigned.append(i)
                k += 1
                if k == data.segments[s].actions.count { s += 1; k = 0; assigned = [] }
            } else if k > 0 {
                // A false start: the rows taken were not this segment's; try this row as its start.
                for j in assigned { out[j] = nil }
                assigned = []
                k = 0
                if matches(i, s, 0) {
                    out[i] = (s, 0)
                    assigned = [i]
                    k = 1
                    if k == data.segments[s].actions.count { s += 1; k = 0; assigned = [] }
                }
            }
        }
        return out
    }
}
