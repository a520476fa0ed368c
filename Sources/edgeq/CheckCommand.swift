import ArgumentParser
import EdgeQGateway
import EdgeQLog
import EdgeQRetrain
import EdgeQTopicMap
import Foundation

/// `edgeq check FILE`: validates a mapping file like a compiler would.
struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a mapping file; exit 0, or 65 with FILE:LINE:COL: message lines.",
        discussion: """
            Every problem is printed on standard error as FILE:LINE:COL: message (all of them, in \
            file order) and the exit status is 65; 66 when the file cannot be read. A valid file \
            exits 0 and prints a one-screen summary: signals, state width, actions, topics \
            subscribed and published. The format is described in docs/mapping.md; \
            topics/reference.yaml shows every key. A draft of `edgeq init` fails (65) while it has \
            TODO values: each is reported as FILE:LINE:COL: KEY is still TODO: what to write.

            Warnings (FILE: warning: …, on standard error, exit status still 0) say when the \
            learning settings need something the file cannot show: with `cql_weight: 0` the \
            first model needs an incumbent whose commands vary in each state (a dithered \
            incumbent). With --log, the incumbent's rows of an existing experience log are \
            measured: the share of its states whose 10 nearest logged states all show the same \
            action; above `checks.max_unsupported` it warns that the log shows no alternative \
            to learn from, or only notes it when the mapping's conservative term and exploration \
            in control cope (docs/learning.md, "Action diversity"). It also warns about a state \
            input that only grew (or only fell) over the log — a counter, a date, a cumulative \
            meter — which leaves every model's support once the plant passes the log's last \
            value (docs/mapping.md, "Outside the model's support").
            """
    )

    @Argument(help: "The mapping file (YAML) to check.")
    var file: String

    @Option(help: "An experience log (experience.sqlite, or a gateway's data directory) whose incumbent rows to measure for action diversity.")
    var log: String?

    func run() async throws {
        if let report = Self.draftReport(path: file) {
            for d in report.diagnostics { FileHandle.standardError.write(Data((d.description + "\n").utf8)) }
            FileHandle.standardError.write(Data((report.summary + "\n").utf8))
            throw ExitCode(65)
        }
        let map: TopicMap
        do {
            map = try TopicMap.load(path: file)
        } catch {
            for d in error.diagnostics { FileHandle.standardError.write(Data((d.description + "\n").utf8)) }
            let n = error.diagnostics.count
            FileHandle.standardError.write(Data("\(n) error\(n == 1 ? "" : "s")\n".utf8))
            throw ExitCode(error.code == .unreadable ? 66 : 65)
        }
        print(Self.summary(map, file: file))
        for w in Self.ditherWarnings(map) { FileHandle.standardError.write(Data("\(file): warning: \(w)\n".utf8)) }
        if let log {
            let (line, findings) = try Self.measureLog(log, map: map)
            print(line)
            for finding in findings { FileHandle.standardError.write(Data("\(file): \(finding.line)\n".utf8)) }
        }
    }

    /// The `TODO` values left in the mapping file at `path` (a draft of `edgeq init`: the choices
    /// it could not make), with the loader's other problems that are not on a `TODO` line, in
    /// file order, and a last line that counts them; nil when the file has no `TODO` value (or
    /// cannot be read: the loader says so).
    static func draftReport(path: String) -> (diagnostics: [MappingDiagnostic], summary: String)? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let todos = DraftTodos.diagnostics(yaml: text, file: path)
        guard !todos.isEmpty else { return nil }
        let todoLines = Set(todos.map(\.line))
        var others: [MappingDiagnostic] = []
        do {
            _ = try TopicMap.parse(yaml: text, file: path)
        } catch {
            others = error.diagnostics.filter { !todoLines.contains($0.line) }
        }
        let all = (todos + others).sorted { ($0.line, $0.column) < ($1.line, $1.column) }
        let n = todos.count, e = others.count
        let summary = "\(n) TODO\(n == 1 ? "" : "s") left to fill in" + (e > 0 ? " and \(e) error\(e == 1 ? "" : "s")" : "")
            + ": replace each TODO with a value, then check again (docs/mapping.md, \"Drafting a mapping from live traffic\")"
        return (all, summary)
    }

    /// What the mapping's learning settings need from the incumbent that the file cannot show:
    /// with no conservative term, the first model, learned from shadow rows alone, has values
    /// for the actions the incumbent never takes in a state that nothing trained.
    static func ditherWarnings(_ map: TopicMap) -> [String] {
        guard map.incumbent != nil, map.learning.cqlWeight == 0 else { return [] }
        return ["learning.cql_weight is 0 and the first model is learned from the incumbent's shadow rows: it needs the incumbent's commands "
            + "to vary in each state (a dithered incumbent, e.g. `edgeq sim --dither 0.5`). With a deterministic incumbent the log shows one "
            + "action per state and every candidate fails unsupported_actions (cart-pole, 5 seeds × 50,000 steps: 0 of 250 candidates served). "
            + "Set cql_weight > 0 (0.1 learns cart-pole from its deterministic rule), or measure a shadow log with --log."]
    }

    /// The `--log` line of the summary, and what to say when the incumbent's commands hardly
    /// vary: a warning when nothing in the log or the mapping will show another action, a
    /// note when the mapping's conservative term and exploration in control cope with it.
    static func measureLog(_ path: String, map: TopicMap) throws -> (line: String, findings: [Finding]) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CLIFailure(.noInput, "no experience log at \(path): --log takes a gateway's experience.sqlite or its data directory")
        }
        let file = isDirectory.boolValue ? URL(fileURLWithPath: path).appendingPathComponent(ExperienceLog.defaultFileName).path : path
        let rows: [EdgeQLog.Transition]
        do {
            rows = try ExperienceLog.open(path: file, create: false).transitions(window: .lastRows(50_000)).map(\.transition)
        } catch {
            if !FileManager.default.fileExists(atPath: file) {
                throw CLIFailure(.noInput, "no experience log at \(file): --log takes a gateway's experience.sqlite or its data directory")
            }
            if error.kind == .schema || error.code?.primary == .corrupt || error.code?.primary.rawValue == 26 {
                throw CLIFailure(.data, "\(file) is damaged or not an EdgeQ experience log: \(error)")
            }
            throw CLIFailure(.io, "cannot read the experience log \(file): \(error)")
        }
        let drifting = onlyOneWay(rows, map: map).map { Finding.warning($0) }
        let (line, finding) = actionDiversity(rows, file: file, map: map)
        return (line, (finding.map { [$0] } ?? []) + drifting)
    }

    /// The state inputs that only move one way over `rows` (log order): a counter, a date, a
    /// cumulative meter. Once the plant passes the log's last value, every state is outside the
    /// support of every model trained on the log (docs/mapping.md, "Outside the model's
    /// support"). An input qualifies when it changed at least 20 times and moved the other way on
    /// at most 1 in 1,000 of its changes (a meter's rounding); inputs that go back (a step counter
    /// that restarts each episode, a temperature) do not. Read on the newest tick's columns;
    /// cyclic and time features (sin, cos) are skipped.
    static func onlyOneWay(_ rows: [EdgeQLog.Transition], map: TopicMap) -> [String] {
        let usable = rows.filter { $0.state.count == map.stateWidth }
        guard usable.count >= 21 else { return [] }
        var out: [String] = []
        var column = 0
        for f in map.features {
            defer { column += f.width }
            guard f.width == 1 else { continue }
            var up = 0, down = 0
            var previous = usable[0].state[column]
            var low = previous, high = previous
            for r in usable.dropFirst() {
                let v = r.state[column]
                guard v.isFinite, previous.isFinite else { previous = v; continue }
                if v > previous { up += 1 } else if v < previous { down += 1 }
                low = min(low, v)
                high = max(high, v)
                previous = v
            }
            let (moves, against, word) = up >= down ? (up, down, "grew") : (down, up, "fell")
            guard moves >= 20, against * 1000 <= moves else { continue }
            out.append(String(format: "state input '%@' only %@ over the log's %d rows (%d changes, %d the other way; normalised %.4g to %.4g): "
                + "a counter, a date or a cumulative meter? Once the plant passes the log's last value, every state is outside what any model "
                + "trained on this log has seen: the support check (safety.on_unsupported) keeps the model from acting, or, with the check off "
                + "(safety.support_margin: none, or the feature's own support_margin: none), the network extrapolates. Keep it out of the state: feed its rate, or a time of day as a time feature.",
                f.name, word, usable.count, moves, against, Double(low), Double(high)))
        }
        return out
    }

    /// The action-diversity line and finding of `measureLog`.
    static func actionDiversity(_ rows: [EdgeQLog.Transition], file: String, map: TopicMap) -> (line: String, finding: Finding?) {
        guard let d = ActionDiversity.measure(rows, width: map.stateWidth, actionCount: map.actions.count) else {
            return ("log        \(rows.count) rows (last 50,000), fewer than \(ActionDiversity.neighbours + 1) incumbent rows with this mapping's state width (\(map.stateWidth)) "
                    + "and actions (\(map.actions.count)): action diversity not applicable", nil)
        }
        let shares = zip(map.actions, d.actionShare).map { String(format: "%@ %.0f%%", $0.0.name, $0.1 * 100) }.joined(separator: ", ")
        let line = String(format: "log        %d rows (last 50,000), %d from the incumbent (%@); single-action states %.1f%% of %d probed (their %d nearest incumbent states all show the same action)",
                          rows.count, d.incumbentRows, shares, d.singleActionShare * 100, d.probed, ActionDiversity.neighbours)
        let l = map.learning
        guard d.singleActionShare > l.maxUnsupported else { return (line, nil) }
        let what = String(format: "%@: the incumbent's commands hardly vary: in %.1f%% of its states (more than checks.max_unsupported %.0f%%) the %d nearest logged "
            + "states all show the same action, so the log cannot tell what another action does there; ",
            file, d.singleActionShare * 100, l.maxUnsupported * 100, ActionDiversity.neighbours)
        let explores = l.explorationBudget > 0 && max(l.epsilonStart, l.epsilonEnd) > 0
        if l.cqlWeight == 0 {
            return (line, .warning(what + "with cql_weight 0 every candidate learned from it fails unsupported_actions. Dither the incumbent in shadow "
                + "(e.g. `edgeq sim --dither 0.5`) or set cql_weight > 0."))
        }
        if !explores && l.promotion == .trial {
            // A candidate that departs from the incumbent anywhere shows what its own choices do
            // in its trial blocks, and once served in its own decisions (measured on the
            // cart-pole from the rule's log: the first model 1.8× the rule in its trial).
            return (line, .note(what + "the first models stay near the incumbent where the log shows one action (cql_weight > 0); with no exploration in control "
                + "only a candidate's own departures from it, in its trial blocks and once served, show what other actions do. "
                + "If no candidate ever departs, dither the incumbent in shadow or allow exploration in control (learning.exploration)."))
        }
        if !explores {
            return (line, .warning(what + "candidates can only copy the incumbent, and with no exploration in control nothing will show another action. "
                + "Dither the incumbent in shadow (e.g. `edgeq sim --dither 0.2`) or allow exploration in control (learning.exploration)."))
        }
        return (line, .note(what + "the first models stay near the incumbent (cql_weight > 0) until this mapping's exploration in control shows the other actions."))
    }

    /// What `--log` found worth saying: a warning (the log and the settings cannot learn
    /// anything but the incumbent, or nothing at all) or a note (the settings cope).
    enum Finding: Equatable {
        case warning(String)
        case note(String)

        var line: String {
            switch self {
            case .warning(let w): return "warning: " + w
            case .note(let n): return "note: " + n
            }
        }
    }

    /// A number as the summary prints it: whole numbers without a decimal point.
    static func fmt(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x) }

    /// The one-screen summary of a valid mapping.
    static func summary(_ map: TopicMap, file: String) -> String {
        var lines: [String] = []
        let g = map.gateway
        lines.append("\(file): ok")
        lines.append("gateway    \(g.id): prefix \(g.prefix), starts in \(g.startMode.rawValue) mode, broker \(g.brokers.joined(separator: ", "))")
        lines.append("signals    \(map.signals.count)")
        for s in map.signals {
            var d = "  \(s.name) ← \(s.topic)"
            if let sp = s.sparkplug { d += " Sparkplug metric '\(sp.metric)'" } else if let p = s.pathText { d += " \(p)" } else { d += " (raw)" }
            if let r = s.range { d += " [\(fmt(r.lowerBound)), \(fmt(r.upperBound))]" }
            if let a = s.maxAge { d += " max age \(fmt(a)) s" }
            if let r = s.role {
                d += " role \(r.rawValue)"
                if r == .applied { d += " [\(s.appliedValues.map(fmt).joined(separator: ", "))]" }
                if r == .exogenous, s.forecast == .schedule { d += " (a schedule: read ahead by the teacher)" }
            }
            lines.append(d)
        }
        let cols = map.features.map { $0.width == 2 ? "\($0.name)(sin,cos)" : $0.name }
        lines.append("state      width \(map.stateWidth) = \(map.featureWidth) columns × \(map.history) tick\(map.history == 1 ? "" : "s"): \(cols.joined(separator: ", "))")
        switch map.tick {
        case .period(let p): lines.append("tick       every \(fmt(p)) s")
        case .trigger(let t): lines.append("tick       on each message on \(t)")
        }
        lines.append("reward     \(map.rewardSource)")
        if let t = map.terminalSource { lines.append("terminal   \(t)") }
        if let t = map.truncatedSource { lines.append("truncated  \(t)") }
        switch map.modelJudging {
        case .applicable:
            var m = "model      reward \(map.modelRewardSource ?? "")"
            if let t = map.modelTerminalSource { m += "; terminal \(t)" }
            if let c = map.modelClasses { m += "; classes \(c.map(\.rawValue).joined(separator: ", ")) only" }
            lines.append(m)
        case .notApplicable(let why):
            lines.append("model      candidates cannot be judged on a plant model: \(why)")
        }
        let rollouts = map.learning.rollouts
        if rollouts.enabled {
            var line = "rollouts   \(rollouts.starts) × up to \(rollouts.horizon) steps on the plant model per retraining, ε \(fmt(rollouts.epsilon)), "
                + "uncertainty penalty \(fmt(rollouts.uncertaintyPenalty))" + (rollouts.maxUncertainty.map { ", uncertainty at most \(fmt($0))" } ?? "")
            if case .notApplicable = map.modelJudging { line += ": none will run (no plant model can be used, see the model line)" }
            lines.append(line)
        }
        let fallback = map.fallbackAction.map { map.actions[$0].name } ?? "hold"
        lines.append("actions    \(map.actions.count): \(map.actions.map(\.name).joined(separator: ", ")) (fallback \(fallback), min dwell \(map.minDwell) ticks)")
        if let i = map.incumbent { lines.append("incumbent  \(i.topic)\(i.pathText.map { " " + $0 } ?? " (raw)")") }
        lines.append("subscribes \(map.subscribedTopics.joined(separator: ", "))")
        lines.append("publishes  \(map.publishedTopics.joined(separator: ", "))")
        let h = map.handover
        if !h.take.isEmpty || !h.give.isEmpty {
            func list(_ ws: [HandoverWrite]) -> String { ws.isEmpty ? "nothing" : ws.map(\.topic).joined(separator: ", ") }
            let will = h.will.map { "Last Will on \($0.topic) (keep-alive \(h.keepAlive) s)" } ?? "no Last Will"
            lines.append("handover   take → \(list(h.take)); give → \(list(h.give)); \(will)")
        }
        let sparkplugNodes = Set(map.signals.compactMap { $0.sparkplug.map { "spBv1.0/\($0.group)/+/\($0.node)" } })
        if !sparkplugNodes.isEmpty {
            lines.append("sparkplug  reads births, data and deaths of \(sparkplugNodes.sorted().joined(separator: ", ")) (and their devices)")
        }
        if let n = map.sparkplugNode {
            lines.append("sparkplug  EdgeQ is edge node \(n.group)/\(n.node): NBIRTH/NDATA on spBv1.0/\(n.group)/NBIRTH|NDATA/\(n.node), NDEATH as its Last Will")
        }
        if let f = map.fleet {
            lines.append("fleet      ships the log on \(f.experienceTopic(gateway: map.gateway.id)) (batches of ≤ \(f.batchRows) rows, window \(f.window), QoS \(f.qos)); acknowledgements on \(f.ackTopic(gateway: map.gateway.id))")
            if f.models {
                lines.append("fleet      takes models from \(f.modelTopic) (≤ \(f.maxModelSize) bytes, signed by a key in keys/models/; then promotion \(map.learning.promotion.rawValue)); verdicts on \(f.verdictTopic(gateway: map.gateway.id))")
            }
        }
        let l = map.learning
        lines.append("learning   net \(map.stateWidth)-\(l.hidden.map(String.init).joined(separator: "-"))-\(map.actions.count), gamma \(fmt(l.gamma)), batch \(l.batchSize), CQL weight \(fmt(l.cqlWeight)), promotion \(l.promotion.rawValue)")
        lines.append(Self.explorationLine(l))
        if l.promotion == .trial {
            let t = l.trial
            let block: String
            switch t.block {
            case .ticks(let n): block = "blocks of \(n) ticks (burn-in \(t.burnIn))"
            case .episode: block = "blocks of one episode"
            }
            let test = t.margin > 0 ? "not worse than \(fmt(t.margin * 100)) %" : "better"
            let ticks = t.maxTicks.map { "at most \($0) ticks" } ?? "no tick budget"
            let guardText = l.controlShare > 0
                ? "control share \(fmt(l.controlShare)) over \(l.guardPairs) pairs"
                    + (l.probationPairs > 0 ? ", the first \(l.probationPairs) after a promotion in cycles of 2 blocks (probation)" : "")
                : "no control group"
            // Adjusted only where a baseline can exist: tick blocks and exogenous signals.
            let adjust: String
            if t.adjust == .none {
                adjust = "raw block returns (adjust: none)"
            } else if case .episode = t.block {
                adjust = "raw episode returns"
            } else if map.modelSignals.exogenous.isEmpty {
                adjust = "raw block returns (no exogenous signal to adjust for)"
            } else {
                adjust = "adjusted for the exogenous baseline when one is accepted"
            }
            let split = t.lastLookShare.map { "\(fmt($0)) of 1 − confidence at the last look" } ?? "1 − confidence split evenly over the looks"
            let futility = (t.futility.map { "futile when not \(fmt($0 * 100)) % better" } ?? "no futility stop")
                + (t.earlyStop ? "" : ", no early stop before \(t.minPairs) pairs")
            lines.append("trial      \(block), \(test) with confidence \(fmt(t.confidence)) (\(split)), \(t.minPairs)…\(t.maxPairs) pairs, \(futility), \(ticks); \(adjust); \(guardText)")
        }
        lines.append(Self.guardLine(l))
        if l.controlShare > 0 { lines.append(Self.noveltyLine(map)) }
        return lines.joined(separator: "\n")
    }

    /// The summary's `novelty` line: which exogenous signals the guard watches for conditions
    /// the served model's trial never saw, and the probation it then runs.
    static func noveltyLine(_ map: TopicMap) -> String {
        let k = map.learning.noveltyPairs
        let names = map.modelSignals.exogenous.map { map.signals[$0].name }
        guard k > 0 else { return "novelty    off (novelty_pairs 0): the guard keeps its pace when the plant goes where the served model's trial never saw it" }
        guard !names.isEmpty else { return "novelty    nothing to watch: no signal has role: exogenous (weather, price, setpoints), so no condition can be new to a trial" }
        let means: String
        if case .ticks = map.learning.trial.block { means = ", or its mean over a block," } else { means = "" }
        return "novelty    \(k) pairs of probation when \(names.joined(separator: ", "))\(means) goes beyond its range over the served model's trial (by a tenth of it)"
    }

    /// The summary's `guard` line: how soon the control-group guard can first judge a served
    /// model — the blocks (and ticks) until its first look, on its own window and with the
    /// promoting trial's noise — so a plant with long blocks sees that it waits weeks.
    static func guardLine(_ l: LearningConfig) -> String {
        guard l.controlShare > 0 else {
            return "guard      off (control_share 0): nothing compares a served model with the controller before it"
        }
        let m = ControlGroupGuard.blocksPerCycle(share: l.controlShare)
        let k = l.probationPairs
        // The n-th compared pair has ended at the latest after this many blocks.
        func blocks(_ n: Int) -> Int { n <= k ? 2 * n : 2 * k + m * (n - k) }
        let unit: (Int) -> String
        switch l.trial.block {
        case .ticks(let b): unit = { "\($0) blocks, \($0 * b) ticks" }
        case .episode: unit = { "\($0) episodes" }
        }
        let own = ControlGroupGuard.Settings(learning: l).minPairs
        return "guard      a compared pair every \(m) blocks after a promotion"
            + (k > 0 ? " (every 2 for the first \(k): probation)" : "")
            + "; its first look at most \(unit(blocks(own))) after it (\(own) pairs), \(unit(blocks(2))) (2 pairs) when it borrows the promoting trial's noise"
    }

    /// The summary's `explore` line: the ε schedule in control, and what it costs when it
    /// starts high (a model's first decisions mostly random, in its trial as when served).
    static func explorationLine(_ l: LearningConfig) -> String {
        guard l.explorationBudget > 0, max(l.epsilonStart, l.epsilonEnd) > 0 else { return "explore    none in control" }
        var line = "explore    ε \(fmt(l.epsilonStart)) → \(fmt(l.epsilonEnd)) over \(l.epsilonDecaySteps) control decisions of a model, "
            + "at most \(fmt(l.explorationBudget * 100)) % of them explorative; never in the incumbent's blocks"
        if max(l.epsilonStart, l.epsilonEnd) >= 0.5 {
            line += "; at first a model acts at random on most ticks, in its trial as when served: the plant does worse than under "
                + "the model's greedy choice, and "
                + (l.promotion == .trial
                    ? "a trial against the incumbent, which judges the model as it would serve, is unlikely to promote one until ε has decayed (only models' decisions decay it)"
                    : "may do worse than under the incumbent until ε has decayed")
        }
        return line
    }
}
