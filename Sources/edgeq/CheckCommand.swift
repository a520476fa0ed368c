import ArgumentParser
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
            topics/reference.yaml shows every key.
            """
    )

    @Argument(help: "The mapping file (YAML) to check.")
    var file: String

    func run() async throws {
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
    }

    /// The one-screen summary of a valid mapping.
    static func summary(_ map: TopicMap, file: String) -> String {
        func fmt(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x) }
        var lines: [String] = []
        let g = map.gateway
        lines.append("\(file): ok")
        lines.append("gateway    \(g.id): prefix \(g.prefix), starts in \(g.startMode.rawValue) mode, broker \(g.brokers.joined(separator: ", "))")
        lines.append("signals    \(map.signals.count)")
        for s in map.signals {
            var d = "  \(s.name) ← \(s.topic)"
            if let p = s.pathText { d += " \(p)" } else { d += " (raw)" }
            if let r = s.range { d += " [\(fmt(r.lowerBound)), \(fmt(r.upperBound))]" }
            if let a = s.maxAge { d += " max age \(fmt(a)) s" }
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
        let l = map.learning
        lines.append("learning   net \(map.stateWidth)-\(l.hidden.map(String.init).joined(separator: "-"))-\(map.actions.count), gamma \(fmt(l.gamma)), batch \(l.batchSize), CQL weight \(fmt(l.cqlWeight)), promotion \(l.promotion.rawValue)")
        if l.promotion == .trial {
            let t = l.trial
            let block: String
            switch t.block {
            case .ticks(let n): block = "blocks of \(n) ticks (burn-in \(t.burnIn))"
            case .episode: block = "blocks of one episode"
            }
            let test = t.margin > 0 ? "not worse than \(fmt(t.margin * 100)) %" : "better"
            let ticks = t.maxTicks.map { "at most \($0) ticks" } ?? "no tick budget"
            let guardText = l.controlShare > 0 ? "control share \(fmt(l.controlShare)) over \(l.guardPairs) pairs" : "no control group"
            lines.append("trial      \(block), \(test) with confidence \(fmt(t.confidence)), \(t.minPairs)…\(t.maxPairs) pairs, \(ticks); \(guardText)")
        }
        return lines.joined(separator: "\n")
    }
}
