import EdgeQLog
import EdgeQModel
import EdgeQTopicMap

/// Turns the experience log into what a plant model is fitted on (`PlantData`): the raw values
/// of the mapping's signals with a role, in stretches the plant really went through tick by
/// tick (docs/learning.md, "The plant model's data").
///
/// A logged row is one step: the signals at tick t (`signals`), the action applied from t to
/// t+1, the signals at t+1 (`next_signals`). Consecutive rows chain into a segment of samples;
/// a segment of k rows has k+1 samples and k actions. A row is **left out** (and ends the
/// segment before it) when it is flagged `gap` or `appliedMismatch`, its action is unknown
/// (nil, or not one of the mapping's actions), or it lacks a value of one of the mapping's
/// role signals (a row from before schema 3, a run whose mapping had other roles, a missing,
/// invalid or stale signal: NaN). Two usable rows are **not chained** when the episode changes,
/// the tick is not the next one, or the first row's `next_signals` differ from the second's
/// `signals` (a restart, a row lost in between). A row whose next state is terminal or
/// truncated is kept, and ends its segment. Segments with fewer than `minimumSamples` samples
/// are dropped.
///
/// Values are read by name (the log names each row's values, `LoggedTransition.signalNames`),
/// so a log written under another mapping is never read as this one's signals.
public struct PlantDataReader: Sendable {
    /// The names of the controlled signals (the model's outputs), in mapping order.
    public let controlledNames: [String]
    /// The names of the exogenous signals (the model's given inputs), in mapping order.
    public let exogenousNames: [String]
    /// The mapping's number of actions.
    public let actionCount: Int
    /// Segments with fewer samples are dropped (at least 2: one step).
    public let minimumSamples: Int

    /// What one read found besides the data.
    public struct Summary: Sendable, Equatable {
        /// Rows read from the log.
        public var rowsRead = 0
        /// Rows in the segments kept.
        public var rowsUsed = 0
        /// Rows left out: flagged `gap` or `appliedMismatch`.
        public var rowsFlagged = 0
        /// Rows left out: no known action.
        public var rowsWithoutAction = 0
        /// Rows left out: a role signal without a finite value (or no signal values at all).
        public var rowsWithoutSignals = 0
        /// Segments dropped for being shorter than `minimumSamples`.
        public var segmentsDropped = 0
        /// Samples in the dropped segments.
        public var samplesDropped = 0

        /// An empty summary.
        public init() {}
    }

    /// A reader for `map`'s signal roles.
    ///
    /// - Parameter minimumSamples: segments with fewer samples are dropped (values below 2 are
    ///   taken as 2: a segment needs one step).
    /// - Throws: `PlantDataError` `.noControlledSignal` when no signal is `role: controlled`.
    public init(map: TopicMap, minimumSamples: Int = 2) throws(PlantDataError) {
        let names = map.modelSignalNames
        guard !names.controlled.isEmpty else {
            throw PlantDataError(.noControlledSignal, "the mapping gives no signal 'role: controlled', so a plant model has nothing to predict: mark the signals the actions move with 'role: controlled' (and weather, price, setpoints with 'role: exogenous'; docs/mapping.md, signals)")
        }
        controlledNames = names.controlled
        exogenousNames = names.exogenous
        actionCount = map.actions.count
        self.minimumSamples = max(2, minimumSamples)
    }

    /// Reads the log at `logPath` (rows in `window`, oldest first).
    ///
    /// - Throws: `PlantDataError` `.logUnreadable` when the log cannot be opened or read;
    ///   `.badData` when the assembled data is malformed (a bug: report it).
    public func read(logPath: String, window: LogWindow = .all) throws(PlantDataError) -> (data: PlantData, summary: Summary) {
        let rows: [LoggedTransition]
        do {
            let log = try ExperienceLog.open(path: logPath, create: false)
            rows = try log.transitions(window: window)
        } catch {
            throw PlantDataError(.logUnreadable, "cannot read the experience log \(logPath): \(error)")
        }
        return try read(rows: rows)
    }

    /// Assembles segments from logged rows (in id order, as `ExperienceLog.transitions` gives them).
    ///
    /// - Throws: `PlantDataError` `.badData` when the assembled data is malformed (a bug).
    public func read(rows: [LoggedTransition]) throws(PlantDataError) -> (data: PlantData, summary: Summary) {
        var summary = Summary()
        summary.rowsRead = rows.count
        let wanted = controlledNames + exogenousNames
        let nc = controlledNames.count
        // Where each wanted name sits in a row's values, per distinct list of names (nil: missing).
        var positions: [[String]: [Int]?] = [:]
        var segments: [PlantSegment] = []
        var current: PlantSegment?
        var last: (episode: Int64, tick: Int64, next: [Double])?

        func finish() {
            guard let s = current else { return }
            current = nil
            last = nil
            if s.count >= minimumSamples {
                segments.append(s)
                summary.rowsUsed += s.actions.count
            } else {
                summary.segmentsDropped += 1
                summary.samplesDropped += s.count
            }
        }

        for row in rows {
            let t = row.transition
            if !t.flags.intersection([.gap, .appliedMismatch]).isEmpty {
                summary.rowsFlagged += 1
                finish()
                continue
            }
            guard let action = t.action, (0..<actionCount).contains(action) else {
                summary.rowsWithoutAction += 1
                finish()
                continue
            }
            guard let names = row.signalNames, let now = t.signals, let next = t.nextSignals,
                  now.count == names.count, next.count == names.count else {
                summary.rowsWithoutSignals += 1
                finish()
                continue
            }
            let index: [Int]?
            if let known = positions[names] {
                index = known
            } else {
                var found: [Int] = []
                for n in wanted {
                    guard let k = names.firstIndex(of: n) else { break }
                    found.append(k)
                }
                index = found.count == wanted.count ? found : nil
                positions[names] = index
            }
            guard let index else {
                summary.rowsWithoutSignals += 1
                finish()
                continue
            }
            let a = index.map { now[$0] }, b = index.map { next[$0] }
            guard a.allSatisfy(\.isFinite), b.allSatisfy(\.isFinite) else {
                summary.rowsWithoutSignals += 1
                finish()
                continue
            }
            // Chained to the previous row only when it is the very next step of the same run.
            if let p = last, !(p.episode == t.episode && t.tick == p.tick + 1 && p.next == a) {
                finish()
            }
            if current == nil {
                current = PlantSegment(controlled: [Array(a[..<nc])], exogenous: [Array(a[nc...])], actions: [])
            }
            current?.controlled.append(Array(b[..<nc]))
            current?.exogenous.append(Array(b[nc...]))
            current?.actions.append(action)
            last = (t.episode, t.tick, b)
            if t.terminal || t.truncated { finish() }
        }
        finish()
        do {
            let data = try PlantData(controlledNames: controlledNames, exogenousNames: exogenousNames,
                                     actionCount: actionCount, segments: segments)
            return (data, summary)
        } catch {
            throw PlantDataError(.badData, "\(error)")
        }
    }
}

/// Why the log could not be read into plant data. Each message says what to do.
public struct PlantDataError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: Sendable, Equatable {
        /// The mapping marks no signal `role: controlled`.
        case noControlledSignal
        /// The experience log could not be opened or read.
        case logUnreadable
        /// The assembled data is malformed (a bug in the reader).
        case badData
    }

    /// What went wrong.
    public let kind: Kind
    /// The explanation, with what to do.
    public let message: String

    init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
