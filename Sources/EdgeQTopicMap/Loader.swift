// Reading and validating a mapping file: YAML → typed sections → compiled TopicMap.
import Foundation
import Yams

extension TopicMap {
    /// Loads and validates the mapping file at `path`.
    /// - Throws: `MappingError` with code `.unreadable` when the file cannot be read, or
    ///   `.invalid` with every problem found (`FILE:LINE:COL: message`).
    public static func load(path: String) throws(MappingError) -> TopicMap {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MappingError(code: .unreadable, diagnostics: [
                MappingDiagnostic(file: path, line: 1, column: 1, message: "cannot read the file (does it exist, and may we read it?)"),
            ])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw MappingError(code: .unreadable, diagnostics: [
                MappingDiagnostic(file: path, line: 1, column: 1, message: "the file is not UTF-8 text"),
            ])
        }
        return try parse(yaml: text, file: path)
    }

    /// Parses and validates mapping-file text; `file` is used in the diagnostics.
    /// - Throws: `MappingError` (`.invalid`) listing every problem found, in file order.
    public static func parse(yaml: String, file: String = "<mapping>") throws(MappingError) -> TopicMap {
        let r = NodeReader(file: file)
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let e as YamlError {
            throw MappingError(code: .invalid, diagnostics: [yamlDiagnostic(e, file: file)])
        } catch {
            throw MappingError(code: .invalid, diagnostics: [MappingDiagnostic(file: file, line: 1, column: 1, message: "YAML error: \(error)")])
        }
        guard let root else {
            throw MappingError(code: .invalid, diagnostics: [
                MappingDiagnostic(file: file, line: 1, column: 1, message: "the file is empty; start from topics/reference.yaml"),
            ])
        }
        var b = Builder(r: r)
        let map = b.build(root)
        let diags = r.diagnostics.sorted { ($0.line, $0.column) < ($1.line, $1.column) }
        guard diags.isEmpty, let map else { throw MappingError(code: .invalid, diagnostics: diags) }
        return map
    }

    static func yamlDiagnostic(_ e: YamlError, file: String) -> MappingDiagnostic {
        switch e {
        case .scanner(let ctx, let problem, let mark, _), .parser(let ctx, let problem, let mark, _),
             .composer(let ctx, let problem, let mark, _):
            let c = ctx.map { " (\($0.text) at line \($0.mark.line))" } ?? ""
            return MappingDiagnostic(file: file, line: mark.line, column: mark.column, message: "YAML syntax: \(problem)\(c)")
        case .duplicatedKeysInMapping(let dups, let ctx):
            return MappingDiagnostic(file: file, line: ctx.mark.line, column: ctx.mark.column,
                                     message: "duplicate key \(dups.map { "'\($0)'" }.joined(separator: ", ")) in this mapping")
        case .reader(let problem, _, _, _):
            return MappingDiagnostic(file: file, line: 1, column: 1, message: "YAML reader: \(problem)")
        default:
            return MappingDiagnostic(file: file, line: 1, column: 1, message: "YAML error: \(e)")
        }
    }
}

/// Names that may not be used for signals and features.
let reservedNames: Set<String> = ["and", "or", "not", "true", "false", "value", "action", "action_name"]

/// Checks an MQTT topic filter: non-empty, no NUL, `+` alone in its level, and (when
/// `allowWildcards` is false) no wildcard at all. `#` is never accepted: a signal needs a known shape.
/// Returns a message, or nil when valid.
func topicProblem(_ topic: String, allowWildcards: Bool) -> String? {
    if topic.isEmpty { return "a topic cannot be empty" }
    if topic.utf8.count > 65535 { return "a topic is at most 65535 bytes" }
    if topic.contains("\u{0}") { return "a topic cannot contain NUL" }
    if topic.hasPrefix("$") { return "topics starting with '$' are reserved for the broker" }
    for level in topic.split(separator: "/", omittingEmptySubsequences: false) {
        if level.contains("#") {
            return allowWildcards ? "'#' is not supported here (a signal needs a known topic shape); use '+' for one level"
                : "a published topic cannot contain the wildcard '#'"
        }
        if level.contains("+") {
            if !allowWildcards { return "a published topic cannot contain the wildcard '+'" }
            if level != "+" { return "'+' must occupy a whole topic level (like a/+/b), found '\(level)'" }
        }
    }
    return nil
}

/// Checks a Sparkplug id (group, edge node or device id): non-empty, one topic level, no
/// wildcard (Sparkplug 3.0.0, 4.1.1). Nil when it is fine.
func sparkplugIDProblem(_ id: String) -> String? {
    if id.isEmpty { return "an id cannot be empty" }
    if id.contains("/") || id.contains("+") || id.contains("#") { return "an id is one topic level: no '/', '+' or '#'" }
    if id.contains("\u{0}") { return "an id cannot contain NUL" }
    return nil
}

/// True when `topic` (no wildcards) matches `filter` (`+` wildcards only).
func topicMatches(filter: String, topic: String) -> Bool {
    var f = filter.utf8[...], t = topic.utf8[...]
    while true {
        let fe = f.firstIndex(of: UInt8(ascii: "/")) ?? f.endIndex
        let te = t.firstIndex(of: UInt8(ascii: "/")) ?? t.endIndex
        let fl = f[f.startIndex..<fe], tl = t[t.startIndex..<te]
        if !(fl.count == 1 && fl.first == UInt8(ascii: "+")) && !fl.elementsEqual(tl) { return false }
        let fDone = fe == f.endIndex, tDone = te == t.endIndex
        if fDone || tDone { return fDone && tDone }
        f = f[f.index(after: fe)...]
        t = t[t.index(after: te)...]
    }
}

/// True when two filters can match a common topic.
func filtersOverlap(_ a: String, _ b: String) -> Bool {
    let la = a.split(separator: "/", omittingEmptySubsequences: false)
    let lb = b.split(separator: "/", omittingEmptySubsequences: false)
    guard la.count == lb.count else { return false }
    for (x, y) in zip(la, lb) where x != "+" && y != "+" && x != y { return false }
    return true
}

func isIdentifier(_ s: String) -> Bool {
    guard let f = s.unicodeScalars.first, f == "_" || (f.isASCII && f.properties.isAlphabetic) else { return false }
    return s.unicodeScalars.allSatisfy { $0.isASCII && ($0 == "_" || $0.properties.isAlphabetic || ("0"..."9").contains($0)) }
}

/// Builds a TopicMap from the root node, recording every problem in `r`.
struct Builder {
    let r: NodeReader
    var signals: [SignalConfig] = []
    var signalNodes: [Node] = []
    /// Per signal with `role: applied`: its index, the role's node and its `applied` list (if given).
    var appliedRoles: [(signal: Int, role: Node, list: Node?)] = []
    /// Name → slot: signals, then expression features.
    var slotOf: [String: Int] = [:]
    var slotCount = 0

    init(r: NodeReader) { self.r = r }

    static let topKeys = ["gateway", "signals", "state", "tick", "reward", "terminal", "truncated", "actions", "incumbent", "applied", "safety", "learning", "control_plane", "handover", "model", "fleet", "sparkplug"]

    mutating func build(_ root: Node) -> TopicMap? {
        guard let top = r.mapping(root, "the mapping file", known: Self.topKeys,
                                  required: ["gateway", "signals", "state", "tick", "reward", "actions"]) else { return nil }
        let gateway = top["gateway"].flatMap { readGateway($0) }
        if let n = top["signals"] { readSignals(n) }
        for (i, s) in signals.enumerated() { slotOf[s.name] = i }
        slotCount = signals.count
        let state = top["state"].flatMap { readState($0) }
        let tick = top["tick"].flatMap { readTick($0) }
        let reward = top["reward"].flatMap { expression($0, "reward") }
        let terminal = top["terminal"].flatMap { expression($0, "terminal") }
        let truncated = top["truncated"].flatMap { expression($0, "truncated") }
        let actions = top["actions"].flatMap { readActions($0) }
        let incumbent = top["incumbent"].flatMap { readIncumbent($0) }
        let applied = top["applied"].flatMap { readIncumbent($0, section: "applied") }
        var safety = SafetyConfig()
        var handOverride: CompiledExpression?
        if let n = top["safety"] { (safety, handOverride) = readSafety(n) }
        var learning = LearningConfig()
        if let n = top["learning"], let l = readLearning(n) { learning = l }
        var controlPlane = ControlPlaneConfig()
        if let n = top["control_plane"], let f = r.mapping(n, "control_plane", known: ["auth"]) {
            if let a = f["auth"], let v = r.choice(a, "control_plane auth", ControlPlaneConfig.Auth.self) { controlPlane.auth = v }
        }

        let handover = top["handover"].flatMap { readHandover($0) }
        // Outside the served model's support the plant goes back to its incumbent when the
        // gateway can tell it so (a `handover` section), else to the mapping's fallback.
        if let n = top["safety"]?["on_unsupported"] {
            if safety.onUnsupported == .incumbent, top["handover"] == nil {
                r.error(n, "on_unsupported: incumbent needs a 'handover' section (the writes that tell the plant its own controller is in charge); add one, or use fallback, hold or none")
            }
        } else {
            safety.onUnsupported = top["handover"] != nil ? .incumbent : .fallback
        }
        let fleet = top["fleet"].flatMap { readFleet($0) }
        var sparkplugNode: SparkplugNodeConfig?
        if let n = top["sparkplug"], let f = r.mapping(n, "sparkplug (EdgeQ as an edge node)", known: ["group", "node"], required: ["group", "node"]),
           let gn = f["group"], let group = sparkplugID(gn, "Sparkplug group id"),
           let nn = f["node"], let node = sparkplugID(nn, "Sparkplug edge node id") {
            sparkplugNode = SparkplugNodeConfig(group: group, node: node)
            // EdgeQ's own node may not be one whose metrics it reads: it would read its own births.
            for (i, s) in signals.enumerated() where s.sparkplug?.group == group && s.sparkplug?.node == node {
                r.error(nn, "edge node '\(group)/\(node)' is EdgeQ's own, and signal '\(s.name)' (line \(signalNodes[i].mark?.line ?? 0)) reads a metric of it; give EdgeQ a node id of its own")
                break
            }
        }
        if let fleet, let g = gateway, fleet.topic == g.prefix || fleet.topic.hasPrefix(g.prefix + "/") || g.prefix.hasPrefix(fleet.topic + "/"),
           let n = top["fleet"]?["topic"] {
            r.error(n, "fleet topic '\(fleet.topic)' overlaps the gateway's control-plane prefix '\(g.prefix)'; give the fleet a prefix of its own (e.g. fleet/<plant kind>)")
        }
        if let actions { resolveAppliedValues(actions) }
        var model = ModelObjective()
        if let state, let reward {
            model = readModel(top["model"], state: state, reward: reward, terminal: terminal,
                              allowed: actions?.allowed ?? [], actionNames: actions?.configs.map(\.name) ?? [],
                              handOverride: handOverride)
        }

        // Cross-section checks.
        if let actions {
            for (a, writes) in actions.writes.enumerated() {
                for w in writes {
                    for (si, s) in signals.enumerated() where filtersOverlap(s.topic, w.config.topic) {
                        r.error(w.topicNode, "action '\(actions.configs[a].name)' publishes to '\(w.config.topic)', which is also read as a sensor (signal '\(s.name)', line \(signalNodes[si].mark?.line ?? 0)); the gateway would decode its own commands")
                        break
                    }
                    if case .trigger(let t) = tick?.0, filtersOverlap(t, w.config.topic) {
                        r.error(w.topicNode, "action '\(actions.configs[a].name)' publishes to the tick trigger topic '\(t)'; every command would cause another decision")
                    }
                }
            }
            if let (inc, _) = incumbent {
                for (i, a) in actions.configs.enumerated() where a.incumbentValue == nil {
                    r.error(actions.nodes[i], "action '\(a.name)' needs 'incumbent_value' (or a constant 'value') so that the incumbent's commands on '\(inc.topic)' can be mapped to it")
                }
            }
            if let (app, appNode) = applied {
                if incumbent == nil {
                    for (i, a) in actions.configs.enumerated() where a.incumbentValue == nil {
                        r.error(actions.nodes[i], "action '\(a.name)' needs 'incumbent_value' (or a constant 'value') so that the plant's reports on '\(app.topic)' can be mapped to it")
                    }
                }
                // The gateway's own commands must not read as the plant's report of what it applied.
                outer: for (a, writes) in actions.writes.enumerated() {
                    for w in writes where filtersOverlap(app.topic, w.config.topic) {
                        r.error(appNode, "applied topic '\(app.topic)' is also where action '\(actions.configs[a].name)' publishes (line \(w.topicNode.mark?.line ?? 0)): the gateway would read its own commands as the plant's reports; give the plant's report a topic of its own (e.g. plant/applied)")
                        break outer
                    }
                }
            }
        }
        if learning.trial.block == .episode, terminal == nil, truncated == nil,
           let block = top["learning"]?["promotion"]?["trial"]?["block"] {
            r.error(block, "trial block 'episode' needs the mapping to say when an episode ends: add 'terminal:' or 'truncated:' (or give the block in ticks)")
        }
        if let g = gateway {
            let cp = g.prefix + "/"
            for (i, s) in signals.enumerated() where s.topic.hasPrefix(cp) || s.topic == g.prefix {
                r.error(signalNodes[i], "signal '\(s.name)' reads from the control-plane prefix '\(g.prefix)'")
            }
        }

        if let (h, nodes) = handover {
            checkHandover(h, nodes: nodes, gateway: gateway, tick: tick?.0, actions: actions?.configs ?? [],
                          incumbent: incumbent?.0, applied: applied?.0)
        }

        guard r.diagnostics.isEmpty, let gateway, let state, let tick, let reward, let actions else { return nil }
        return TopicMap(
            gateway: gateway, signals: signals, features: state.features, history: state.history,
            featureEval: state.eval, tick: tick.0, reward: reward, terminal: terminal, truncated: truncated,
            actions: actions.configs, writes: actions.writes.map { $0.map(\.compiled) }, allowed: actions.allowed,
            fallback: actions.fallback, minDwell: actions.minDwell, incumbent: incumbent?.0,
            safety: safety, handOverride: handOverride, learning: learning, slotCount: slotCount, slotNames: slotNames(),
            applied: applied?.0, continuity: tick.2, controlPlane: controlPlane, handover: handover?.0 ?? HandoverConfig(),
            model: model, fleet: fleet, sparkplugNode: sparkplugNode)
    }

    func slotNames() -> [String] {
        var names = [String](repeating: "", count: slotCount)
        for (n, i) in slotOf { names[i] = n }
        return names
    }

    // MARK: gateway

    func readGateway(_ node: Node) -> GatewayConfig? {
        guard let f = r.mapping(node, "gateway", known: ["id", "brokers", "client_id", "username", "password", "tls", "prefix", "data", "mode", "max_payload"], required: ["id"]) else { return nil }
        guard let idNode = f["id"], let id = r.string(idNode, "gateway id") else { return nil }
        if id.isEmpty || !id.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") }) {
            r.error(idNode, "gateway id '\(id)' may contain only letters, digits, '-' and '_'")
        }
        var g = GatewayConfig(id: id, clientID: "edgeq-\(id)", prefix: "edgeq/\(id)")
        if let n = f["brokers"] {
            let list = r.oneOrList(n)
            var urls: [String] = []
            for u in list {
                guard let s = r.string(u, "broker URL") else { continue }
                if !(s.hasPrefix("mqtt://") || s.hasPrefix("mqtts://")) || URLComponents(string: s)?.host?.isEmpty != false {
                    r.error(u, "broker URL '\(s)' must look like mqtt://host:1883 or mqtts://host:8883")
                }
                urls.append(s)
            }
            if urls.isEmpty { r.error(n, "gateway brokers: give at least one broker URL") }
            g.brokers = urls
        }
        if let n = f["client_id"], let s = r.string(n, "client_id") { g.clientID = s }
        if let n = f["username"] { g.username = secret(n, "username") }
        if let n = f["password"] { g.password = secret(n, "password") }
        if let n = f["tls"], let t = r.mapping(n, "gateway tls", known: ["ca", "cert", "key"]) {
            var tls = TLSConfig()
            if let c = t["ca"] { tls.caFile = r.string(c, "tls ca") }
            if let c = t["cert"] { tls.certFile = r.string(c, "tls cert") }
            if let c = t["key"] { tls.keyFile = r.string(c, "tls key") }
            if (tls.certFile == nil) != (tls.keyFile == nil) { r.error(n, "tls: give both 'cert' and 'key' for a client certificate, or neither") }
            g.tls = tls
        }
        if let n = f["prefix"], let s = r.string(n, "prefix") {
            if let p = topicProblem(s, allowWildcards: false) { r.error(n, "prefix: \(p)") }
            else if s.hasSuffix("/") { r.error(n, "prefix must not end with '/'") }
            g.prefix = s
        }
        if let n = f["data"], let s = r.string(n, "data") { g.dataDirectory = s }
        if let n = f["mode"], let m = r.choice(n, "mode", GatewayConfig.Mode.self) { g.startMode = m }
        if let n = f["max_payload"], let v = r.int(n, "max_payload", min: 16, max: 256 * 1024 * 1024) { g.maxPayloadBytes = v }
        return g
    }

    func secret(_ node: Node, _ what: String) -> SecretReference? {
        if case .scalar = node {
            r.error(node, "\(what) must not be written inline; use {env: VARIABLE} or {file: /path/to/secret}")
            return nil
        }
        guard let f = r.mapping(node, what, known: ["env", "file"]) else { return nil }
        if let e = f["env"], let s = r.string(e, "\(what) env") {
            if f["file"] != nil { r.error(node, "\(what): give 'env' or 'file', not both") }
            return .environment(s)
        }
        if let e = f["file"], let s = r.string(e, "\(what) file") { return .file(s) }
        r.error(node, "\(what): give {env: VARIABLE} or {file: PATH}")
        return nil
    }

    // MARK: signals

    mutating func readSignals(_ node: Node) {
        guard let items = r.list(node, "signals") else { return }
        if items.isEmpty { r.error(node, "signals: the list is empty; declare at least one signal") }
        var names: [String: Node] = [:]
        var rawTopics: [String: String] = [:], jsonTopics: [String: String] = [:]
        var sparkplugMetrics: [SparkplugSource: String] = [:]
        for item in items {
            guard let f = r.mapping(item, "signal", known: ["name", "topic", "json", "sparkplug", "type", "values", "scale", "offset", "range", "max_age", "role", "applied", "forecast"], required: ["name"]),
                  let nameNode = f["name"], let name = r.string(nameNode, "signal name") else { continue }
            // A signal comes from a topic (raw or JSON) or from a Sparkplug B metric, never both.
            var source: SparkplugSource?
            if let sp = f["sparkplug"] {
                if let t = f["topic"] { r.error(t, "signal '\(name)' gives both 'topic' and 'sparkplug': a Sparkplug metric's topic follows from its group, node and device; remove 'topic'") }
                if let j = f["json"] { r.error(j, "'json' does not apply to a Sparkplug signal (its payload is a Sparkplug B message: the metric is named by 'sparkplug.metric')") }
                source = readSparkplugSource(sp, signal: name)
                guard source != nil else { continue }
            } else if f["topic"] == nil {
                r.error(item, "signal '\(name)' needs 'topic' (an MQTT topic) or 'sparkplug' (a Sparkplug B metric: {group, node, device, metric})")
                continue
            }
            let topicNode = f["topic"] ?? f["sparkplug"] ?? item
            // A Sparkplug source with an error (reported) still declares the signal, so that its
            // uses are not reported as unknown as well.
            let invalidSource = f["sparkplug"] != nil && source == nil
            guard let topic = source?.dataTopic ?? (invalidSource ? "" : r.string(topicNode, "signal topic")) else { continue }
            if !isIdentifier(name) || reservedNames.contains(name) {
                r.error(nameNode, "signal name '\(name)' must be a word of letters, digits and '_' (not starting with a digit, not one of \(reservedNames.sorted().joined(separator: " ")))")
            } else if let prev = names[name] {
                r.error(nameNode, "duplicate signal name '\(name)' (first declared at line \(prev.mark?.line ?? 0))")
            }
            names[name] = names[name] ?? nameNode
            if source == nil, !invalidSource, let p = topicProblem(topic, allowWildcards: true) { r.error(topicNode, "invalid topic filter '\(topic)': \(p)") }
            if source == nil, !invalidSource, topic.hasPrefix("spBv1.0/") {
                r.error(topicNode, "topic '\(topic)' is in the Sparkplug B namespace, whose payloads are protobuf: read the metric with 'sparkplug: {group, node, device, metric}' instead of 'topic'")
            }
            var s = SignalConfig(name: name, topic: topic)
            s.sparkplug = source
            if let src = source, let other = sparkplugMetrics[src] {
                r.error(topicNode, "signal '\(name)' reads the same Sparkplug metric as signal '\(other)'; one signal per metric")
            }
            if let src = source { sparkplugMetrics[src] = sparkplugMetrics[src] ?? name }
            if source == nil, let pn = f["json"], let text = r.string(pn, "json path") {
                switch JSONPathElement.parsePath(text) {
                case .success(let p): s.path = p; s.pathText = text
                case .failure(let e): r.error(pn, "json path '\(text)': \(e.message)", offset: e.offset)
                }
            }
            if source != nil || invalidSource {
                // Sparkplug: neither raw nor JSON.
            } else if s.path == nil {
                if let other = jsonTopics[topic] { r.error(topicNode, "topic '\(topic)' carries JSON (signal '\(other)') and a raw value (signal '\(name)'); a raw signal needs a topic of its own") }
                rawTopics[topic] = rawTopics[topic] ?? name
            } else {
                if let other = rawTopics[topic] { r.error(topicNode, "topic '\(topic)' carries a raw value (signal '\(other)') and JSON (signal '\(name)'); a raw signal needs a topic of its own") }
                jsonTopics[topic] = jsonTopics[topic] ?? name
            }
            let type = f["type"].flatMap { r.choice($0, "signal type", SignalType.self) } ?? (f["values"] != nil ? .enum : .number)
            switch type {
            case .number: if let v = f["values"] { r.error(v, "'values' applies only to type enum") }
            case .bool: s.kind = .bool; if let v = f["values"] { r.error(v, "'values' applies only to type enum") }
            case .enum:
                guard let vn = f["values"] else {
                    r.error(item, "signal '\(name)' of type enum needs 'values' (a mapping from each string to a number)")
                    break
                }
                if case .mapping = vn {} else { r.error(vn, "enum values must be a mapping (string: number), found \(r.describe(vn))") }
                var table: [String: Double] = [:]
                if case .mapping(let m) = vn {
                    for (k, v) in m {
                        guard let ks = r.string(k, "enum string"), let x = r.number(v, "enum value") else { continue }
                        if table[ks] != nil { r.error(k, "duplicate enum string '\(ks)'") }
                        table[ks] = x
                    }
                }
                if table.isEmpty { r.error(vn, "enum values: give at least one string: number pair") }
                s.kind = .enumeration(table)
            }
            if let n = f["scale"], let v = r.number(n, "scale") {
                if v == 0 { r.error(n, "scale must not be 0") }
                s.scale = v
            }
            if let n = f["offset"], let v = r.number(n, "offset") { s.offset = v }
            if let n = f["range"] { s.range = r.range(n, "range") }
            if let n = f["max_age"] { s.maxAge = r.duration(n, "max_age") }
            if let n = f["role"], let role = r.choice(n, "signal role (what a plant model does with '\(name)')", SignalRole.self) {
                switch (s.kind, role) {
                case (.number, _), (.bool, .exogenous), (.bool, .applied):
                    s.role = role
                    if role == .applied { appliedRoles.append((signals.count, n, f["applied"])) }
                case (.bool, .controlled):
                    r.error(n, "signal '\(name)' is a bool: a plant model predicts numbers only, so a bool can only be 'role: exogenous' (given to the model as 0/1)")
                case (.enumeration, _):
                    r.error(n, "signal '\(name)' is an enum (strings): a role needs a number signal (or a bool, as exogenous); leave 'role' out, or give the value as a number")
                }
            }
            if let n = f["forecast"], let forecast = r.choice(n, "signal forecast (how a teaching planner forecasts '\(name)')", SignalForecast.self) {
                if s.role == .exogenous {
                    s.forecast = forecast
                } else {
                    r.error(n, "'forecast' applies only to a signal with 'role: exogenous' (the teacher predicts the controlled ones with the plant model); add 'role: exogenous' to '\(name)' or remove 'forecast'")
                }
            }
            if let a = f["applied"], s.role != .applied {
                r.error(a, "'applied' (the value per action in the plant model's world) applies only to a signal with 'role: applied'; add 'role: applied' to '\(name)' or remove 'applied'")
            }
            signals.append(s)
            signalNodes.append(item)
        }
    }

    /// Reads a signal's `sparkplug: {group, node, device, metric}`: the ids must be usable as one
    /// MQTT topic level each (Sparkplug 3.0.0, 4.1.1: no `/`, `+`, `#`), the metric non-empty.
    func readSparkplugSource(_ node: Node, signal name: String) -> SparkplugSource? {
        guard let f = r.mapping(node, "sparkplug source of signal '\(name)'", known: ["group", "node", "device", "metric"],
                                required: ["group", "node", "metric"]),
              let gn = f["group"], let group = sparkplugID(gn, "Sparkplug group id"),
              let nn = f["node"], let edge = sparkplugID(nn, "Sparkplug edge node id"),
              let mn = f["metric"], let metric = r.string(mn, "Sparkplug metric name") else { return nil }
        var device: String?
        if let dn = f["device"] {
            guard let d = sparkplugID(dn, "Sparkplug device id") else { return nil }
            device = d
        }
        if metric.isEmpty { r.error(mn, "the Sparkplug metric name is empty; give the name its birth certificate announces (e.g. Supply/Temperature)"); return nil }
        return SparkplugSource(group: group, node: edge, device: device, metric: metric)
    }

    /// Reads a write's `sparkplug: {group, node, device, metric, type}`.
    func readSparkplugWrite(_ node: Node) -> SparkplugWrite? {
        guard let f = r.mapping(node, "Sparkplug write", known: ["group", "node", "device", "metric", "type"],
                                required: ["group", "node", "metric", "type"]),
              let gn = f["group"], let group = sparkplugID(gn, "Sparkplug group id"),
              let nn = f["node"], let edge = sparkplugID(nn, "Sparkplug edge node id"),
              let mn = f["metric"], let metric = r.string(mn, "Sparkplug metric name"),
              let tn = f["type"], let typeName = r.string(tn, "Sparkplug datatype") else { return nil }
        var device: String?
        if let dn = f["device"] {
            guard let d = sparkplugID(dn, "Sparkplug device id") else { return nil }
            device = d
        }
        if metric.isEmpty { r.error(mn, "the Sparkplug metric name is empty"); return nil }
        guard let type = SparkplugDataType.allCases.first(where: { $0.name == typeName }) else {
            let names = SparkplugDataType.allCases.map(\.name)
            let hint = suggestion(typeName, names).map { "; did you mean '\($0)'?" } ?? ""
            r.error(tn, "Sparkplug datatype '\(typeName)' cannot be written: give one of \(names.joined(separator: ", "))\(hint)")
            return nil
        }
        return SparkplugWrite(group: group, node: edge, device: device, metric: metric, datatype: type)
    }

    /// A Sparkplug id (group, edge node, device): one MQTT topic level.
    func sparkplugID(_ node: Node, _ what: String) -> String? {
        guard let s = r.string(node, what) else { return nil }
        if let p = sparkplugIDProblem(s) { r.error(node, "\(what) '\(s)': \(p)"); return nil }
        return s
    }

    /// Fills `appliedValues` of every `role: applied` signal: its `applied` list (one number per
    /// action), or else each action's constant publish `value`.
    mutating func resolveAppliedValues(_ actions: ActionsResult) {
        let n = actions.configs.count
        for (i, roleNode, listNode) in appliedRoles {
            let name = signals[i].name
            if let listNode {
                guard let items = r.list(listNode, "applied values of '\(name)'") else { continue }
                var values: [Double] = []
                for item in items { if let v = r.number(item, "applied value of '\(name)'") { values.append(v) } }
                if items.count != n {
                    r.error(listNode, "'applied' of signal '\(name)' gives \(items.count) value\(items.count == 1 ? "" : "s") for \(n) action\(n == 1 ? "" : "s"): give one number per action, in the order of actions.list (\(actions.configs.map(\.name).joined(separator: ", ")))")
                    continue
                }
                if values.count == n { signals[i].appliedValues = values }
                continue
            }
            var values: [Double] = []
            for (a, writes) in actions.writes.enumerated() {
                guard let v = writes.first?.config.value, let x = Double(v.trimmingCharacters(in: .whitespaces)) else {
                    r.error(roleNode, "signal '\(name)' has 'role: applied' but action '\(actions.configs[a].name)' publishes no constant number 'value' to take as its readback: give the value per action, 'applied: [v0, v1, …]' (\(n) numbers, in the order of actions.list)")
                    values = []
                    break
                }
                values.append(x)
            }
            if values.count == n { signals[i].appliedValues = values }
        }
    }

    // MARK: model

    /// Reads the optional `model` section and decides whether a policy can be judged on a plant
    /// model: the reward and the end condition as the model sees them (each defaulting to the
    /// mapping's own when that reads only signals with a role), and whether the state's features
    /// and the action masks read only such signals.
    func readModel(_ node: Node?, state: StateResult, reward: CompiledExpression, terminal: CompiledExpression?,
                   allowed: [CompiledExpression?], actionNames: [String], handOverride: CompiledExpression?) -> ModelObjective {
        let deps = TopicMap.dependencies(signalCount: signals.count, slotCount: slotCount, featureEval: state.eval)
        /// The first signal without a role that `c` reads (directly or through a feature).
        func roleless(_ c: CompiledExpression) -> String? {
            for slot in c.slots {
                for sig in deps.slots[slot] where signals[sig].role == nil { return signals[sig].name }
            }
            return nil
        }
        var modelReward: CompiledExpression?, modelTerminal: CompiledExpression?
        var explicitReward = false, explicitTerminal = false
        var classes: [PlantModelClassName]?
        if let node, let f = r.mapping(node, "model", known: ["reward", "terminal", "classes"]) {
            if let n = f["classes"] {
                let list = r.oneOrList(n)
                var names: [PlantModelClassName] = []
                for c in list {
                    guard let name = r.choice(c, "model class", PlantModelClassName.self) else { continue }
                    if names.contains(name) { r.error(c, "model class '\(name.rawValue)' is named twice: name each class once") }
                    names.append(name)
                }
                if list.isEmpty { r.error(n, "model classes: name at least one class (\(PlantModelClassName.allCases.map(\.rawValue).joined(separator: ", "))), or leave the key out to try them all") }
                // The selection's order, whatever the file's.
                classes = PlantModelClassName.allCases.filter { names.contains($0) }
            }
            if let n = f["reward"], let c = expression(n, "model reward") {
                explicitReward = true
                if let s = roleless(c) {
                    r.error(n, "model reward reads signal '\(s)', which has no role: the plant model neither predicts nor is given it. Give '\(s)' a role (controlled, exogenous, or applied for a readback of the action), or write model.reward over signals with a role")
                } else {
                    modelReward = c
                }
            }
            if let n = f["terminal"], let c = expression(n, "model terminal") {
                explicitTerminal = true
                if let s = roleless(c) {
                    r.error(n, "model terminal reads signal '\(s)', which has no role: the plant model neither predicts nor is given it. Give '\(s)' a role (controlled, exogenous, or applied), or write model.terminal over signals with a role")
                } else {
                    modelTerminal = c
                }
            }
        }
        var problems: [String] = []
        if !signals.contains(where: { $0.role == .controlled }) {
            problems.append("no signal has 'role: controlled', so a plant model has nothing to predict: mark the signals the actions move with 'role: controlled'")
        }
        if !explicitReward {
            if let s = roleless(reward) {
                problems.append("the reward reads signal '\(s)', which has no role: give '\(s)' a role (controlled, exogenous, or applied for a readback of the action), or write model.reward over signals with a role")
            } else {
                modelReward = reward
            }
        }
        if !explicitTerminal, let terminal {
            if let s = roleless(terminal) {
                problems.append("the terminal condition reads signal '\(s)', which has no role: give '\(s)' a role, or write model.terminal over signals with a role")
            } else {
                modelTerminal = terminal
            }
        }
        for (fi, f) in state.features.enumerated() {
            if case .timeOfDay = f.source {
                problems.append("state feature '\(f.name)' reads the gateway's wall clock, which the model world does not replay: give the plant's clock as an exogenous signal and use a cyclic feature")
            } else if case .dayOfWeek = f.source {
                problems.append("state feature '\(f.name)' reads the gateway's wall clock, which the model world does not replay: give the plant's clock as an exogenous signal and use a cyclic feature")
            } else if let s = deps.features[fi].first(where: { $0 < signals.count && signals[$0].role == nil }) {
                problems.append("state feature '\(f.name)' reads signal '\(signals[s].name)', which has no role: give '\(signals[s].name)' a role (applied, for a readback of the action)")
            }
        }
        for (a, c) in allowed.enumerated() {
            if let c, let s = roleless(c) {
                problems.append("the mask of action '\(actionNames.indices.contains(a) ? actionNames[a] : String(a))' reads signal '\(s)', which has no role: give '\(s)' a role")
            }
        }
        if let h = handOverride, let s = roleless(h) {
            problems.append("safety.hand_override reads signal '\(s)', which has no role: give '\(s)' a role (exogenous: whether the plant is in hand is not caused by the actions)")
        }
        if let first = problems.first {
            return ModelObjective(reward: nil, terminal: nil, judging: .notApplicable(first), classes: classes)
        }
        return ModelObjective(reward: modelReward, terminal: modelTerminal, judging: .applicable, classes: classes)
    }

    /// The `type` of a signal.
    enum SignalType: String, CaseIterable { case number, bool, `enum` }

    // MARK: state

    struct StateResult {
        var features: [FeatureConfig]
        var history: Int
        var eval: [FeatureEval]
    }

    mutating func readState(_ node: Node) -> StateResult? {
        guard let f = r.mapping(node, "state", known: ["features", "history"], required: ["features"]) else { return nil }
        var history = 1
        if let n = f["history"], let h = r.int(n, "history", min: 1, max: 64) { history = h }
        guard let fn = f["features"], let items = r.list(fn, "state features") else { return nil }
        if items.isEmpty { r.error(fn, "state features: the list is empty; the state needs at least one feature") }
        var features: [FeatureConfig] = []
        var eval: [FeatureEval] = []
        var seen: [String: Node] = [:]
        for item in items {
            guard let g = r.mapping(item, "feature", known: ["name", "signal", "expr", "cyclic", "period", "time", "normalize", "support_margin"]) else { continue }
            let sources = ["signal", "expr", "cyclic", "time"].filter { g[$0] != nil }
            guard sources.count == 1 else {
                r.error(item, sources.isEmpty ? "a feature needs one of 'signal', 'expr', 'cyclic' or 'time'"
                        : "a feature takes only one of 'signal', 'expr', 'cyclic', 'time' (found \(sources.joined(separator: ", ")))")
                continue
            }
            var name: String?
            if let n = g["name"], let s = r.string(n, "feature name") {
                if !isIdentifier(s) || reservedNames.contains(s) { r.error(n, "feature name '\(s)' must be a word of letters, digits and '_'") }
                name = s
            }
            var fc: FeatureConfig?
            var ev: FeatureEval?
            if let n = g["signal"], let s = r.string(n, "feature signal") {
                if let slot = slotOf[s], slot < signals.count {
                    fc = FeatureConfig(name: name ?? s, source: .signal(s))
                    ev = .slot(slot)
                } else {
                    let hint = suggestion(s, signals.map(\.name)).map { "; did you mean '\($0)'?" } ?? ""
                    r.error(n, "unknown signal '\(s)'\(hint)")
                }
                if let nm = name, nm != s, slotOf[nm] != nil { r.error(g["name"] ?? n, "feature name '\(nm)' is already a signal or feature") }
            } else if let n = g["expr"] {
                guard let nm = name else { r.error(item, "a feature with 'expr' needs a 'name'"); continue }
                if let c = expression(n, "feature '\(nm)'") {
                    fc = FeatureConfig(name: nm, source: .expression(c.source))
                    if slotOf[nm] != nil { r.error(g["name"] ?? n, "feature name '\(nm)' is already a signal or feature") }
                    let slot = slotCount
                    slotCount += 1
                    slotOf[nm] = slotOf[nm] ?? slot
                    ev = .expression(c, slot: slot)
                }
            } else if let n = g["cyclic"] {
                guard let pn = g["period"] else { r.error(item, "a 'cyclic' feature needs a 'period' (e.g. 24 for an hour of the day)"); continue }
                if let c = expression(n, "cyclic feature"), let p = r.number(pn, "period") {
                    if p <= 0 { r.error(pn, "period must be positive") }
                    fc = FeatureConfig(name: name ?? "cyclic_\(features.count)", source: .cyclic(c.source, period: p))
                    ev = .cyclic(c, period: p)
                }
            } else if let n = g["time"], let t = r.choice(n, "time feature", TimeFeature.self) {
                fc = FeatureConfig(name: name ?? t.rawValue, source: t == .time_of_day ? .timeOfDay : .dayOfWeek)
                ev = t == .time_of_day ? .timeOfDay : .dayOfWeek
            }
            guard var feature = fc, let e = ev else { continue }
            if let prev = seen[feature.name] {
                r.error(g["name"] ?? item, "duplicate feature '\(feature.name)' (first at line \(prev.mark?.line ?? 0))")
            }
            seen[feature.name] = seen[feature.name] ?? item
            if let n = g["normalize"] {
                if feature.width == 2 {
                    r.error(n, "cyclic and time features are already in [-1, 1]; remove 'normalize'")
                } else if case .scalar(let s) = n, s.string == "learned" || s.string == "none" {
                    feature.normalization = s.string == "learned" ? .learned : .none
                } else if case .sequence = n, let rg = r.range(n, "normalize range") {
                    feature.normalization = .range(rg.lowerBound, rg.upperBound)
                } else if case .scalar = n {
                    r.error(n, "normalize must be [min, max], learned or none, found \(r.describe(n))")
                }
            }
            if let n = g["support_margin"] {
                if r.isNone(n) {
                    feature.supportMargin = .infinity
                } else if let v = r.number(n, "feature support_margin") {
                    if !(v >= 0) {
                        r.error(n, "feature support_margin must be ≥ 0 (a share of each of the feature's inputs' training range, e.g. 0.1) or none (its inputs are not checked), found \(r.fmt(v))")
                    }
                    feature.supportMargin = v
                }
            }
            features.append(feature)
            eval.append(e)
        }
        return StateResult(features: features, history: history, eval: eval)
    }

    enum TimeFeature: String, CaseIterable { case time_of_day, day_of_week }

    // MARK: tick

    func readTick(_ node: Node) -> (TickConfig, Node, TickContinuity)? {
        guard let f = r.mapping(node, "tick", known: ["period", "trigger", "sequence", "max_gap"]) else { return nil }
        if f["period"] != nil && f["trigger"] != nil { r.error(node, "tick: give 'period' or 'trigger', not both"); return nil }
        var continuity = TickContinuity()
        if let n = f["sequence"], let name = r.string(n, "tick sequence") {
            if f["period"] != nil {
                r.error(n, "tick sequence counts the plant's steps, one per trigger message; a periodic tick finds missed ticks by the clock ('max_gap'): remove 'sequence' or use 'trigger'")
            } else if !signals.contains(where: { $0.name == name }) {
                let hint = suggestion(name, signals.map(\.name)).map { "; did you mean '\($0)'?" } ?? ""
                r.error(n, "tick sequence '\(name)' is not a signal\(hint)")
            }
            continuity.sequence = name
        }
        if let n = f["max_gap"] {
            if r.isNone(n) {
                continuity.maxGap = .off
            } else if let d = r.duration(n, "tick max_gap") {
                if let pn = f["period"], case .scalar(let ps) = pn, let p = r.quietDuration(ps.string), d <= p {
                    r.error(n, "tick max_gap (\(r.fmt(d)) s) must be longer than the period (\(r.fmt(p)) s), or every transition would be flagged")
                }
                continuity.maxGap = .seconds(d)
            }
        }
        if let n = f["period"], let d = r.duration(n, "tick period") { return (.period(d), n, continuity) }
        if let n = f["trigger"], let t = r.string(n, "tick trigger") {
            if let p = topicProblem(t, allowWildcards: true) { r.error(n, "invalid topic filter '\(t)': \(p)"); return nil }
            return (.trigger(t), n, continuity)
        }
        if f["period"] == nil && f["trigger"] == nil { r.error(node, "tick: give 'period' (e.g. 5s) or 'trigger' (a topic)") }
        return nil
    }

    // MARK: expressions

    func expression(_ node: Node, _ what: String) -> CompiledExpression? {
        var text: String?
        if case .scalar(let s) = node, s.style == .plain || s.style == .singleQuoted || s.style == .doubleQuoted {
            text = s.string
        } else if case .scalar(let s) = node {
            text = s.string  // block scalars: columns are approximate
        }
        guard let text, !text.trimmingCharacters(in: .whitespaces).isEmpty else {
            r.error(node, "\(what) must be an expression (e.g. -abs(temp - setpoint)), found \(r.describe(node))")
            return nil
        }
        do {
            let ast = try ExpressionParser.parse(text)
            let names = Array(slotOf.keys)
            let slots = slotOf
            return try CompiledExpression.compile(ast, source: text, resolve: { slots[$0] }, suggest: { suggestion($0, names) })
        } catch {
            r.error(node, "in \(what): \(error.message)", offset: error.offset)
            return nil
        }
    }

    // MARK: actions

    struct ReadWrite {
        var config: WriteConfig
        var compiled: CompiledWrite
        var topicNode: Node
    }
    struct ActionsResult {
        var configs: [ActionConfig]
        var nodes: [Node]
        var writes: [[ReadWrite]]
        var allowed: [CompiledExpression?]
        var fallback: Int?
        var minDwell: Int
    }

    func readActions(_ node: Node) -> ActionsResult? {
        guard let f = r.mapping(node, "actions", known: ["list", "fallback", "min_dwell"], required: ["list"]) else { return nil }
        var res = ActionsResult(configs: [], nodes: [], writes: [], allowed: [], fallback: nil, minDwell: 0)
        if let n = f["min_dwell"], let v = r.int(n, "min_dwell", min: 0, max: 1_000_000) { res.minDwell = v }
        guard let ln = f["list"], let items = r.list(ln, "actions list") else { return nil }
        if items.isEmpty { r.error(ln, "actions list is empty: give at least one action") }
        var seen: [String: Node] = [:]
        for item in items {
            guard let g = r.mapping(item, "action", known: ["name", "publish", "allowed", "incumbent_value"], required: ["name"]),
                  let nn = g["name"], let name = r.string(nn, "action name") else { continue }
            if let prev = seen[name] { r.error(nn, "duplicate action name '\(name)' (first at line \(prev.mark?.line ?? 0))") }
            seen[name] = seen[name] ?? nn
            if name == "hold" { r.error(nn, "'hold' is reserved (it means: publish nothing); name the action differently") }
            var writes: [ReadWrite] = []
            if let pn = g["publish"] {
                for w in r.oneOrList(pn) { if let rw = readWrite(w, action: name, index: res.configs.count) { writes.append(rw) } }
            }
            let allowed = g["allowed"].flatMap { expression($0, "allowed of '\(name)'") }
            var incumbentValue: Double?
            if let n = g["incumbent_value"] { incumbentValue = r.number(n, "incumbent_value") }
            else if let w = writes.first, let v = w.config.value, let x = Double(v.trimmingCharacters(in: .whitespaces)) { incumbentValue = x }
            res.configs.append(ActionConfig(name: name, writes: writes.map(\.config), allowed: allowed?.source, incumbentValue: incumbentValue))
            res.nodes.append(item)
            res.writes.append(writes)
            res.allowed.append(allowed)
        }
        if let n = f["fallback"], let s = r.string(n, "fallback") {
            if s != "hold" {
                if let i = res.configs.firstIndex(where: { $0.name == s }) { res.fallback = i } else {
                    let hint = suggestion(s, res.configs.map(\.name) + ["hold"]).map { "; did you mean '\($0)'?" } ?? ""
                    r.error(n, "fallback '\(s)' is not an action (nor 'hold')\(hint)")
                }
            }
        }
        return res
    }

    func readWrite(_ node: Node, action: String, index: Int) -> ReadWrite? {
        guard let f = r.mapping(node, "publish", known: ["topic", "payload", "sparkplug", "value", "step", "from", "min", "max", "qos", "retain"]) else { return nil }
        // A Sparkplug B write: the topic and the payload follow from the metric; the value is the
        // write's `value` (or `step`), sent as the metric's datatype.
        var sparkplug: SparkplugWrite?
        if let sn = f["sparkplug"] {
            for k in ["topic", "payload"] {
                if let n = f[k] { r.error(n, "'\(k)' does not apply to a Sparkplug write (its \(k) follows from 'sparkplug'); remove it") }
            }
            if f["value"] == nil && f["step"] == nil { r.error(sn, "a Sparkplug write needs 'value' (or 'step'): the number the metric is set to") }
            guard let sw = readSparkplugWrite(sn) else { return nil }
            sparkplug = sw
        } else {
            for k in ["topic", "payload"] where f[k] == nil { r.error(node, "missing required key '\(k)' in publish") }
        }
        guard let tn = f["topic"] ?? f["sparkplug"],
              let topic = sparkplug?.commandTopic ?? r.string(tn, "publish topic"),
              let pn = f["payload"] ?? f["sparkplug"],
              let template = sparkplug != nil ? "{{value}}" : r.string(pn, "payload") else { return nil }
        if sparkplug == nil, let p = topicProblem(topic, allowWildcards: false) { r.error(tn, "invalid publish topic '\(topic)': \(p)") }
        if sparkplug == nil, topic.hasPrefix("spBv1.0/") {
            r.error(tn, "topic '\(topic)' is in the Sparkplug B namespace, whose payloads are protobuf: write the metric with 'sparkplug: {group, node, device, metric, type}' instead of 'topic' and 'payload'")
        }
        var w = WriteConfig(topic: topic, template: template)
        w.sparkplug = sparkplug
        if let n = f["qos"], let q = r.int(n, "qos", min: 0, max: 2) { w.qos = q }
        if let n = f["retain"], let b = r.bool(n, "retain") { w.retain = b }
        var valueExpr: CompiledExpression?
        if let vn = f["value"] {
            if f["step"] != nil { r.error(vn, "give 'value' (absolute) or 'step' (relative), not both") }
            if case .scalar(let s) = vn { w.value = s.string }
            valueExpr = expression(vn, "value of '\(action)'")
        } else if let sn = f["step"] {
            guard let step = r.number(sn, "step") else { return nil }
            guard let fromN = f["from"], let lo = f["min"].flatMap({ r.number($0, "min") }), let hi = f["max"].flatMap({ r.number($0, "max") }) else {
                r.error(sn, "a relative 'step' needs 'from' (the current value's signal or expression), 'min' and 'max' (the clamps)")
                return nil
            }
            if lo >= hi { r.error(f["min"] ?? sn, "step clamps [\(r.fmt(lo)), \(r.fmt(hi))] are empty: min must be less than max") }
            guard let from = expression(fromN, "from of '\(action)'") else { return nil }
            let text = "clamp((\(from.source)) + (\(r.fmt(step))), \(r.fmt(lo)), \(r.fmt(hi)))"
            w.value = text
            let slots = slotOf
            valueExpr = try? CompiledExpression.compile(ExpressionParser.parse(text), source: text, resolve: { slots[$0] })
        } else {
            for k in ["from", "min", "max"] { if let n = f[k] { r.error(n, "'\(k)' belongs to a relative 'step'") } }
        }
        let compiled: CompiledWrite
        switch PayloadTemplate.parse(template, resolve: { slotOf[$0] }) {
        case .failure(let e):
            r.error(pn, "payload template: \(e.message)", offset: e.offset)
            return nil
        case .success(let t):
            if t.usesValue && valueExpr == nil && sparkplug == nil { r.error(pn, "the payload uses {{value}} but the write has no 'value' or 'step'") }
            if let first = template.trimmingCharacters(in: .whitespaces).first, first == "{" || first == "[" {
                let sample = t.renderSample()
                let ok = sample.withUnsafeBytes { buf -> Bool in
                    let ex = JSONExtractor(paths: [])
                    var cap = JSONCapture()
                    return ex.extract(buf, into: &cap)
                }
                if !ok { r.error(pn, "payload looks like JSON but is not valid JSON once filled in (sample: \(String(decoding: sample, as: UTF8.self)))") }
            }
            compiled = CompiledWrite(topic: topic, template: t, value: valueExpr, qos: w.qos, retain: w.retain)
        }
        return ReadWrite(config: w, compiled: compiled, topicNode: tn)
    }

    // MARK: fleet

    /// The `fleet` section: `topic` (required), `batch_rows`, `interval`, `qos`, `window`,
    /// `ack_timeout`, `models`, `max_model_size`, `priority`, `deflate_level` (docs/fleet.md).
    func readFleet(_ node: Node) -> FleetConfig? {
        guard let f = r.mapping(node, "fleet", known: ["topic", "batch_rows", "interval", "qos", "window", "ack_timeout", "models", "max_model_size",
                                                       "priority", "deflate_level"], required: ["topic"]),
              let tn = f["topic"], let topic = r.string(tn, "fleet topic") else { return nil }
        var ok = true
        if let p = topicProblem(topic, allowWildcards: false) {
            r.error(tn, "invalid fleet topic '\(topic)': \(p)")
            ok = false
        } else if topic.hasSuffix("/") {
            r.error(tn, "fleet topic '\(topic)' must not end with '/': write the prefix alone (e.g. fleet/ahu)")
            ok = false
        }
        var c = FleetConfig(topic: topic)
        if let n = f["batch_rows"] {
            if let v = r.int(n, "fleet batch_rows", min: 1, max: 10_000) { c.batchRows = v } else { ok = false }
        }
        if let n = f["interval"] {
            if let v = r.duration(n, "fleet interval") {
                if v > 3600 { r.error(n, "fleet interval must be at most 1 h, found \(r.fmt(v)) s"); ok = false } else { c.interval = v }
            } else { ok = false }
        }
        if let n = f["qos"] {
            if let v = r.int(n, "fleet qos", min: 1, max: 2) { c.qos = v } else { ok = false }
        }
        if let n = f["window"] {
            if let v = r.int(n, "fleet window (batches in flight)", min: 1, max: 64) { c.window = v } else { ok = false }
        }
        if let n = f["ack_timeout"] {
            if let v = r.duration(n, "fleet ack_timeout") {
                if v < 0.1 { r.error(n, "fleet ack_timeout must be at least 100ms, found \(r.fmt(v)) s"); ok = false } else { c.ackTimeout = v }
            } else { ok = false }
        }
        if let n = f["models"] {
            if let v = r.bool(n, "fleet models") { c.models = v } else { ok = false }
        }
        if let n = f["max_model_size"] {
            if let v = r.int(n, "fleet max_model_size (bytes)", min: 1024, max: 256 << 20) { c.maxModelSize = v } else { ok = false }
        }
        if let n = f["priority"] {
            if let v = r.choice(n, "fleet priority (of the shipper's threads)", FleetConfig.Priority.self) { c.priority = v } else { ok = false }
        }
        if let n = f["deflate_level"] {
            if let v = r.int(n, "fleet deflate_level (zlib; 0: not compressed)", min: 0, max: 9) { c.deflateLevel = v } else { ok = false }
        }
        return ok ? c : nil
    }

    // MARK: handover

    /// The topic node of each `take` and `give` write, for the cross-section checks.
    struct HandoverNodes {
        var take: [Node] = []
        var give: [Node] = []
    }

    /// The `handover` section: `take` and `give` lists of writes with constant payloads, which
    /// `give` write is the Last Will, and the handover connection's keep-alive.
    func readHandover(_ node: Node) -> (HandoverConfig, HandoverNodes)? {
        guard let f = r.mapping(node, "handover", known: ["take", "give", "keepalive"]) else { return nil }
        var h = HandoverConfig()
        var nodes = HandoverNodes()
        if let n = f["keepalive"], let d = r.duration(n, "handover keepalive") {
            if d < 5 || d > 65535 || d != d.rounded() {
                r.error(n, "handover keepalive must be a whole number of seconds from 5 s to 65535 s (the broker declares the gateway gone after 1.5 × keepalive), found \(r.fmt(d)) s")
            } else {
                h.keepAlive = Int(d)
            }
        }
        var explicitWill: [Int] = []
        var noWill = 0
        for key in ["take", "give"] {
            guard let ln = f[key] else { continue }
            let list = r.oneOrList(ln)
            if list.isEmpty { r.error(ln, "handover \(key): the list is empty; give at least one write or remove '\(key)'") }
            for item in list {
                guard let (w, will, topicNode) = readHandoverWrite(item, key) else { continue }
                if key == "take" {
                    h.take.append(w)
                    nodes.take.append(topicNode)
                } else {
                    if will == true { explicitWill.append(h.give.count) }
                    if will == false { noWill += 1 }
                    h.give.append(w)
                    nodes.give.append(topicNode)
                }
            }
        }
        if explicitWill.count > 1 {
            r.error(f["give"] ?? node, "handover give: \(explicitWill.count) writes say 'will: true'; MQTT allows one Last Will per connection: mark only the write the broker should publish when the gateway dies")
        } else if let w = explicitWill.first {
            h.willIndex = w
        } else if h.give.count == 1 && noWill == 0 {
            h.willIndex = 0
        } else if h.give.count > 1 && noWill < h.give.count {
            r.error(f["give"] ?? node, "handover give has \(h.give.count) writes, and only one can be the Last Will the broker publishes when the gateway dies: mark it with 'will: true' (or write 'will: false' on every write for no Last Will)")
        }
        if f["take"] != nil && f["give"] == nil {
            r.error(node, "handover has 'take' but no 'give': the plant would never be told that the gateway gave control back; add a 'give' list")
        }
        return (h, nodes)
    }

    /// One handover write: `topic`, `payload` (a template whose only placeholder is
    /// `{{value}}`) and/or `value` (a number), `qos`, `retain`, and for `give` writes `will`.
    func readHandoverWrite(_ node: Node, _ key: String) -> (HandoverWrite, Bool?, Node)? {
        let known = key == "give" ? ["topic", "payload", "value", "qos", "retain", "will"] : ["topic", "payload", "value", "qos", "retain"]
        guard let f = r.mapping(node, "handover \(key) write", known: known, required: ["topic"]),
              let tn = f["topic"], let topic = r.string(tn, "handover \(key) topic") else { return nil }
        if let p = topicProblem(topic, allowWildcards: false) { r.error(tn, "invalid handover \(key) topic '\(topic)': \(p)") }
        var value: Double?
        if let vn = f["value"] {
            guard let v = r.number(vn, "handover \(key) value") else { return nil }
            if !v.isFinite { r.error(vn, "handover \(key) value must be a finite number") }
            value = v
        }
        var text = "{{value}}"
        var payloadNode: Node = tn
        if let pn = f["payload"] {
            guard let s = r.string(pn, "handover \(key) payload") else { return nil }
            text = s
            payloadNode = pn
        } else if value == nil {
            r.error(node, "handover \(key) write to '\(topic)' needs a 'payload' (e.g. '{\"controller\":\"incumbent\"}') or a 'value' (a number)")
            return nil
        }
        let template: PayloadTemplate
        switch PayloadTemplate.parse(text, resolve: { _ in nil }) {
        case .failure(let e):
            r.error(payloadNode, "handover \(key) payload: \(e.message.replacingOccurrences(of: "(use value, action, action_name, model, or a signal or feature name)", with: "(a handover payload is fixed: the only placeholder is {{value}}, the write's constant 'value')"))", offset: e.offset)
            return nil
        case .success(let t): template = t
        }
        for p in template.parts {
            switch p {
            case .actionIndex, .actionName, .modelVersion, .slot:
                r.error(payloadNode, "handover \(key) payload: a handover payload is fixed (it must be publishable whatever the signals say, and a Last Will is set in advance): the only placeholder is {{value}}")
                return nil
            case .value, .literal: break
            }
        }
        if template.usesValue && value == nil { r.error(payloadNode, "handover \(key) payload uses {{value}} but the write has no 'value'") }
        var payload: [UInt8] = []
        let zero = [0.0]
        let ok = zero.withUnsafeBufferPointer { z -> Bool in
            guard let base = z.baseAddress else { return false }
            return template.render(into: &payload, value: value ?? 0, action: 0, actionName: [], slots: base)
        }
        if !ok { r.error(payloadNode, "handover \(key) payload cannot be rendered"); return nil }
        if let first = text.trimmingCharacters(in: .whitespaces).first, first == "{" || first == "[" {
            let valid = payload.withUnsafeBytes { buf -> Bool in
                var cap = JSONCapture()
                return JSONExtractor(paths: []).extract(buf, into: &cap)
            }
            if !valid { r.error(payloadNode, "handover \(key) payload looks like JSON but is not valid JSON: \(String(decoding: payload, as: UTF8.self))") }
        }
        var w = HandoverWrite(topic: topic, payload: payload)
        if let n = f["qos"], let q = r.int(n, "qos", min: 0, max: 2) { w.qos = q }
        if let n = f["retain"], let b = r.bool(n, "retain") { w.retain = b }
        var will: Bool?
        if let n = f["will"] { will = r.bool(n, "will") }
        return (w, will, tn)
    }

    /// Handover writes must not be read back by the gateway as something else.
    func checkHandover(_ h: HandoverConfig, nodes: HandoverNodes, gateway: GatewayConfig?, tick: TickConfig?,
                       actions: [ActionConfig], incumbent: IncumbentConfig?, applied: IncumbentConfig?) {
        let all = zip(h.take, nodes.take).map { ("take", $0.0, $0.1) } + zip(h.give, nodes.give).map { ("give", $0.0, $0.1) }
        for (key, w, tn) in all {
            if let g = gateway, w.topic == g.prefix || w.topic.hasPrefix(g.prefix + "/") {
                r.error(tn, "handover \(key) publishes to '\(w.topic)' under the gateway's own control-plane prefix '\(g.prefix)'; use the plant's topic (e.g. plant/<name>/mode)")
            }
            if case .trigger(let t) = tick, filtersOverlap(t, w.topic) {
                r.error(tn, "handover \(key) publishes to the tick trigger topic '\(t)'; every handover would cause a decision")
            }
            if let inc = incumbent, filtersOverlap(inc.topic, w.topic) {
                r.error(tn, "handover \(key) publishes to the incumbent's topic '\(inc.topic)': the gateway would read the handover as the incumbent's command; give the plant's mode a topic of its own (e.g. plant/<name>/mode)")
            }
            if let app = applied, filtersOverlap(app.topic, w.topic) {
                r.error(tn, "handover \(key) publishes to the applied topic '\(app.topic)': the gateway would read the handover as the plant's report; give the plant's mode a topic of its own (e.g. plant/<name>/mode)")
            }
            for s in signals where filtersOverlap(s.topic, w.topic) {
                r.error(tn, "handover \(key) publishes to '\(w.topic)', which is also read as a sensor (signal '\(s.name)'); the gateway would decode its own handover")
                break
            }
            for a in actions {
                if let aw = a.writes.first(where: { filtersOverlap($0.topic, w.topic) }) {
                    r.error(tn, "handover \(key) publishes to '\(aw.topic)', where action '\(a.name)' sends its commands: a handover payload would read as a command; give the plant's mode a topic of its own (e.g. plant/<name>/mode)")
                    break
                }
            }
        }
    }

    // MARK: incumbent, safety, learning

    func readIncumbent(_ node: Node, section: String = "incumbent") -> (IncumbentConfig, Node)? {
        guard let f = r.mapping(node, section, known: ["topic", "json", "max_distance"], required: ["topic"]),
              let tn = f["topic"], let topic = r.string(tn, "\(section) topic") else { return nil }
        if let p = topicProblem(topic, allowWildcards: true) { r.error(tn, "invalid topic filter '\(topic)': \(p)") }
        var inc = IncumbentConfig(topic: topic)
        if let pn = f["json"], let text = r.string(pn, "json path") {
            switch JSONPathElement.parsePath(text) {
            case .success(let p): inc.path = p; inc.pathText = text
            case .failure(let e): r.error(pn, "json path '\(text)': \(e.message)", offset: e.offset)
            }
        }
        if let n = f["max_distance"], let v = r.number(n, "max_distance") {
            if v < 0 { r.error(n, "max_distance must be ≥ 0") }
            inc.maxDistance = v
        }
        return (inc, tn)
    }

    func readSafety(_ node: Node) -> (SafetyConfig, CompiledExpression?) {
        var s = SafetyConfig()
        guard let f = r.mapping(node, "safety", known: ["on_stale", "on_invalid", "on_ood", "ood_margin", "hand_override",
                                                        "support_margin", "on_unsupported", "support_hold"]) else { return (s, nil) }
        if let n = f["on_stale"], let v = r.choice(n, "on_stale", SafetyConfig.Response.self) { s.onStale = v }
        if let n = f["on_invalid"], let v = r.choice(n, "on_invalid", SafetyConfig.Response.self) { s.onInvalid = v }
        if let n = f["on_ood"], let v = r.choice(n, "on_ood", SafetyConfig.Response.self) { s.onOOD = v }
        if let n = f["ood_margin"] {
            if r.isNone(n) { s.oodMargin = nil }
            else if let v = r.number(n, "ood_margin") {
                if v < 0 { r.error(n, "ood_margin must be ≥ 0 (or none)") }
                s.oodMargin = v
            }
        }
        if let n = f["support_margin"] {
            if r.isNone(n) { s.supportMargin = nil }
            else if let v = r.number(n, "support_margin") {
                if !(v >= 0) { r.error(n, "support_margin must be ≥ 0 (a share of each state input's training range, e.g. 0.5) or none") }
                s.supportMargin = v
            }
        }
        if let n = f["on_unsupported"], let v = r.choice(n, "on_unsupported", SafetyConfig.SupportResponse.self) { s.onUnsupported = v }
        if let n = f["support_hold"], let v = r.number(n, "support_hold") {
            if v < 1 || v > 1_000_000 || v != v.rounded() { r.error(n, "support_hold must be a whole number of ticks from 1 to 1000000, found \(r.fmt(v))") }
            else { s.supportHold = Int(v) }
        }
        var hand: CompiledExpression?
        if let n = f["hand_override"] {
            hand = expression(n, "hand_override")
            s.handOverride = hand?.source
        }
        return (s, hand)
    }

    func readLearning(_ node: Node) -> LearningConfig? {
        guard let f = r.mapping(node, "learning", known: [
            "hidden", "dueling", "gamma", "batch_size", "learning_rate", "target_update", "n_step", "exploration",
            "cql_weight", "updates_per_retrain", "retrain", "retention", "promotion", "checks",
            "cql_on_all_transitions", "double_dqn", "polyak_tau", "huber_delta", "max_grad_norm", "prioritized_replay", "distill", "rollouts",
            "warm_start",
        ]) else { return nil }
        var l = LearningConfig()
        if let n = f["hidden"], let items = r.list(n, "hidden") {
            let widths = items.compactMap { r.int($0, "hidden width", min: 1, max: 4096) }
            if items.isEmpty || items.count > 8 { r.error(n, "hidden: give 1 to 8 layer widths, e.g. [64, 64]") }
            l.hidden = widths
        }
        if let n = f["dueling"], let v = r.bool(n, "dueling") { l.dueling = v }
        if let n = f["gamma"], let v = r.number(n, "gamma") {
            if !(v >= 0 && v < 1) { r.error(n, "gamma must be in [0, 1), found \(r.fmt(v))") }
            l.gamma = v
        }
        if let n = f["batch_size"], let v = r.int(n, "batch_size", min: 1, max: 65536) { l.batchSize = v }
        if let n = f["learning_rate"], let v = r.number(n, "learning_rate") {
            if !(v > 0 && v < 1) { r.error(n, "learning_rate must be in (0, 1), found \(r.fmt(v))") }
            l.learningRate = v
        }
        if let n = f["target_update"], let v = r.int(n, "target_update", min: 1) { l.targetUpdate = v }
        if let n = f["n_step"], let v = r.int(n, "n_step", min: 1, max: 100) { l.nStep = v }
        if let n = f["cql_weight"], let v = r.number(n, "cql_weight") {
            if v < 0 { r.error(n, "cql_weight must be ≥ 0") }
            l.cqlWeight = v
        }
        if let n = f["updates_per_retrain"], let v = r.int(n, "updates_per_retrain", min: 1) { l.updatesPerRetrain = v }
        if let n = f["warm_start"], let v = r.choice(n, "warm_start", LearningConfig.WarmStart.self) { l.warmStart = v }
        if let n = f["cql_on_all_transitions"], let v = r.bool(n, "cql_on_all_transitions") { l.cqlOnAllTransitions = v }
        if let n = f["double_dqn"], let v = r.bool(n, "double_dqn") { l.doubleDQN = v }
        if let n = f["polyak_tau"] {
            if r.isNone(n) { l.polyakTau = nil }
            else if let v = r.number(n, "polyak_tau") {
                if !(v > 0 && v <= 1) { r.error(n, "polyak_tau must be in (0, 1] (or none for hard copies every target_update), found \(r.fmt(v))") }
                l.polyakTau = v
            }
        }
        if let n = f["huber_delta"], let v = r.number(n, "huber_delta") {
            if !(v > 0 && v.isFinite) { r.error(n, "huber_delta must be > 0, found \(r.fmt(v))") }
            l.huberDelta = v
        }
        if let n = f["max_grad_norm"], let v = r.number(n, "max_grad_norm") {
            if !(v > 0 && v.isFinite) { r.error(n, "max_grad_norm must be > 0, found \(r.fmt(v))") }
            l.maxGradNorm = v
        }
        if let n = f["prioritized_replay"] {
            if r.isNone(n) { l.prioritizedAlpha = nil }
            else if let e = r.mapping(n, "prioritized_replay", known: ["alpha", "beta", "beta_anneal_updates"]) {
                l.prioritizedAlpha = 0.6
                if let x = e["alpha"], let v = r.number(x, "prioritized_replay alpha") {
                    if !(v > 0 && v <= 1) { r.error(x, "prioritized_replay alpha must be in (0, 1], found \(r.fmt(v))") }
                    l.prioritizedAlpha = v
                }
                if let x = e["beta"], let v = r.number(x, "prioritized_replay beta") {
                    if !(0...1).contains(v) { r.error(x, "prioritized_replay beta must be in [0, 1], found \(r.fmt(v))") }
                    l.prioritizedBeta = v
                }
                if let x = e["beta_anneal_updates"], let v = r.int(x, "beta_anneal_updates", min: 1) { l.betaAnnealUpdates = v }
            }
        }
        if let n = f["exploration"], let e = r.mapping(n, "exploration", known: ["start", "end", "decay_steps", "budget"]) {
            func prob(_ k: String) -> Double? {
                guard let x = e[k], let v = r.number(x, "exploration \(k)") else { return nil }
                if !(0...1).contains(v) { r.error(x, "exploration \(k) must be in [0, 1], found \(r.fmt(v))") }
                return v
            }
            if let v = prob("start") { l.epsilonStart = v }
            if let v = prob("end") { l.epsilonEnd = v }
            if let v = prob("budget") { l.explorationBudget = v }
            if let x = e["decay_steps"], let v = r.int(x, "decay_steps", min: 0) { l.epsilonDecaySteps = v }
        }
        if let n = f["retrain"], let e = r.mapping(n, "retrain", known: ["every_transitions", "interval", "min_spacing", "seconds"]) {
            if let x = e["every_transitions"] {
                if r.isNone(x) { l.retrainEveryTransitions = nil }
                else if let v = r.int(x, "every_transitions", min: 1) { l.retrainEveryTransitions = v }
            }
            if let x = e["interval"] { l.retrainInterval = r.duration(x, "retrain interval") }
            if let x = e["seconds"] {
                if r.isNone(x) { l.retrainSeconds = nil }
                else if let v = r.duration(x, "retrain seconds (a retraining's time limit)") { l.retrainSeconds = v }
            }
            if let x = e["min_spacing"] {
                if r.isNone(x) { l.retrainMinSpacing = 0 }
                else if let v = r.duration(x, "retrain min_spacing") { l.retrainMinSpacing = v }
            }
        }
        if let n = f["retention"], let v = r.duration(n, "retention") { l.retention = v }
        if let n = f["distill"], let e = r.mapping(n, "distill", known: ["enabled", "horizon", "states", "updates", "teacher_seconds", "rounds", "support"]) {
            if let x = e["enabled"], let v = r.bool(x, "distill enabled") { l.distill.enabled = v }
            if let x = e["horizon"], let v = r.int(x, "distill horizon", min: 1, max: 10_000) { l.distill.horizon = v }
            if let x = e["states"], let v = r.int(x, "distill states", min: 10, max: 10_000_000) { l.distill.states = v }
            if let x = e["updates"], let v = r.int(x, "distill updates", min: 1, max: 100_000_000) { l.distill.updates = v }
            if let x = e["rounds"], let v = r.int(x, "distill rounds (the student's rounds on the plant model, 0 for none)", min: 0, max: 10) { l.distill.rounds = v }
            if let x = e["support"], let v = r.choice(x, "distill support (the distilled candidate's support box: the log's states, or also those it was taught on)", DistillConfig.Support.self) { l.distill.support = v }
            if let x = e["teacher_seconds"] {
                if r.isNone(x) { l.distill.teacherSeconds = nil }
                else if let v = r.duration(x, "distill teacher_seconds (the teacher's time limit, or none)") { l.distill.teacherSeconds = v }
            }
        }
        if let n = f["rollouts"], let e = r.mapping(n, "rollouts", known: ["enabled", "starts", "horizon", "epsilon", "uncertainty_penalty", "max_uncertainty"]) {
            if let x = e["enabled"], let v = r.bool(x, "rollouts enabled") { l.rollouts.enabled = v }
            if let x = e["starts"], let v = r.int(x, "rollouts starts", min: 1, max: 10_000_000) { l.rollouts.starts = v }
            if let x = e["horizon"], let v = r.int(x, "rollouts horizon", min: 1, max: 10_000) { l.rollouts.horizon = v }
            if let x = e["epsilon"], let v = r.number(x, "rollouts epsilon") {
                if !(0...1).contains(v) { r.error(x, "rollouts epsilon must be in [0, 1] (the share of random decisions in a rollout)") }
                l.rollouts.epsilon = v
            }
            if let x = e["uncertainty_penalty"], let v = r.number(x, "rollouts uncertainty_penalty") {
                if !(v >= 0 && v.isFinite) { r.error(x, "rollouts uncertainty_penalty must be a finite number ≥ 0 (0: no penalty)") }
                l.rollouts.uncertaintyPenalty = v
            }
            if l.rollouts.starts * l.rollouts.horizon > RolloutConfig.maxTransitions {
                r.error(n, "rollouts starts × horizon is \(l.rollouts.starts * l.rollouts.horizon) synthetic transitions a retraining; at most \(RolloutConfig.maxTransitions) fit beside the log in the replay: fewer starts or a shorter horizon")
            }
            if let x = e["max_uncertainty"] {
                if r.isNone(x) { l.rollouts.maxUncertainty = nil }
                else if let v = r.number(x, "rollouts max_uncertainty") {
                    if !(v > 0) { r.error(x, "rollouts max_uncertainty must be > 0, or none for no limit") }
                    l.rollouts.maxUncertainty = v
                }
            }
        }
        if let n = f["checks"], let e = r.mapping(n, "checks", known: ["quantization_agreement", "q_bound_slack", "max_unsupported", "min_rows", "teacher_agreement",
                                                                         "fqe_updates", "agreement_tie"]) {
            if let x = e["quantization_agreement"], let v = r.number(x, "quantization_agreement") {
                if !(0...1).contains(v) { r.error(x, "quantization_agreement must be in [0, 1]") }
                l.minQuantizationAgreement = v
            }
            if let x = e["q_bound_slack"], let v = r.number(x, "q_bound_slack") {
                if !(v > 0) { r.error(x, "q_bound_slack must be > 0") }
                l.qBoundSlack = v
            }
            if let x = e["max_unsupported"], let v = r.number(x, "max_unsupported") {
                if !(0...1).contains(v) { r.error(x, "max_unsupported must be in [0, 1]") }
                l.maxUnsupported = v
            }
            if let x = e["agreement_tie"], let v = r.number(x, "agreement_tie") {
                if !(0...1).contains(v) { r.error(x, "agreement_tie must be in [0, 1] (a share of the incumbent's 99.9th-percentile one-step |reward|; 0 for strict agreement)") }
                l.agreementTie = v
            }
            if let x = e["min_rows"], let v = r.int(x, "min_rows", min: 1) { l.minRows = v }
            if let x = e["fqe_updates"] {
                if r.isNone(x) { l.fqeUpdates = 0 }
                else if let v = r.int(x, "fqe_updates (the fitted Q evaluation's updates, or none)", min: 0, max: 10_000_000) { l.fqeUpdates = v }
            }
            if let x = e["teacher_agreement"], let v = r.number(x, "teacher_agreement") {
                if !(0...1).contains(v) { r.error(x, "teacher_agreement must be in [0, 1]") }
                l.minTeacherAgreement = v
            }
        }
        if let n = f["promotion"], let e = r.mapping(n, "promotion", known: [
            "policy", "min_agreement", "rollback_margin", "guard_window", "keep_versions", "shadow_ticks", "trial", "control_share", "guard_pairs",
            "pretrial_audit", "probation_pairs", "novelty_pairs",
        ]) {
            if let x = e["pretrial_audit"] {
                if r.isNone(x) { l.pretrialAuditEvery = nil }
                else if let v = r.int(x, "pretrial_audit (every how many candidates in a row predicted worse one gets its trial anyway, or none)", min: 1, max: 1_000_000) {
                    l.pretrialAuditEvery = v
                }
            }
            if let x = e.keys["shadow_ticks"] {
                r.error(x, "shadow_ticks belonged to the shadow-first policy, which was replaced by 'trial'; remove it (a trial's length is set by trial: {block, max_pairs, max_ticks})")
            }
            if let x = e["guard_window"], let v = r.int(x, "guard_window", min: 1, max: 10_000_000) { l.guardWindow = v }
            if let x = e["keep_versions"], let v = r.int(x, "keep_versions", min: 2, max: 1000) { l.keepVersions = v }
            if let x = e["policy"], let v = r.string(x, "promotion policy") {
                let offered: [LearningConfig.Promotion] = [.trial, .manual, .auto]
                if v == LearningConfig.Promotion.shadowFirst.rawValue {
                    r.error(x, "promotion policy 'shadow-first' was replaced by 'trial': shadow-first compared the candidate's own promises with the live outcomes, which cannot show that it controls better (a candidate that overrates every action passed); write 'policy: trial' (the candidate and the current controller take turns on the plant and it is promoted only when it is better with the configured confidence), or 'manual'")
                } else if let p = LearningConfig.Promotion(rawValue: v), offered.contains(p) {
                    l.promotion = p
                } else {
                    let all = offered.map(\.rawValue)
                    let hint = suggestion(v, all).map { "; did you mean '\($0)'?" } ?? ""
                    r.error(x, "promotion policy must be one of \(all.joined(separator: ", ")), found '\(v)'\(hint)")
                }
            }
            if let x = e["trial"] { l.trial = readTrial(x) }
            if let x = e["control_share"], let v = r.number(x, "control_share") {
                if !(0...0.5).contains(v) {
                    r.error(x, "control_share must be in [0, 0.5] (the share of blocks the previous controller keeps after a promotion; 0 turns the control-group guard off), found \(r.fmt(v))")
                }
                l.controlShare = v
            }
            if let x = e["guard_pairs"], let v = r.int(x, "guard_pairs", min: 2, max: 100_000) { l.guardPairs = v }
            if let x = e["probation_pairs"], let v = r.int(x, "probation_pairs (the control-group guard's first pairs after a promotion, a control block beside every served block; 0: none)", min: 0, max: 100_000) {
                l.probationPairs = v
            }
            if let x = e["novelty_pairs"], let v = r.int(x, "novelty_pairs (the control-group guard's pairs, a control block beside every served block, when an exogenous signal leaves the range the served model's trial saw; 0: off)", min: 0, max: 100_000) {
                l.noveltyPairs = v
            }
            if let x = e["min_agreement"], let v = r.number(x, "min_agreement") {
                if !(0...1).contains(v) { r.error(x, "min_agreement must be in [0, 1]") }
                l.minAgreement = v
            }
            if let x = e["rollback_margin"], let v = r.number(x, "rollback_margin") {
                if v < 0 { r.error(x, "rollback_margin must be ≥ 0") }
                l.rollbackMargin = v
            }
        }
        return l
    }

    /// `promotion.trial`: `{block: 96 | episode, burn_in, confidence, margin, max_pairs, max_ticks, min_pairs, stop_confidence, last_look, futility, early_stop, adjust, stop_loss}`.
    func readTrial(_ node: Node) -> TrialConfig {
        var t = TrialConfig()
        guard let e = r.mapping(node, "trial", known: ["block", "burn_in", "confidence", "margin", "max_pairs", "max_ticks", "min_pairs", "stop_confidence", "last_look", "futility",
                                                       "early_stop", "adjust", "stop_loss"]) else { return t }
        if let x = e["early_stop"], let v = r.bool(x, "trial early_stop") { t.earlyStop = v }
        if let x = e["adjust"], let v = r.choice(x, "trial adjust", TrialConfig.Adjustment.self) {
            t.adjust = v
        }
        if let x = e["block"] {
            if case .scalar(let s) = x, s.style == .plain, s.string == "episode" {
                t.block = .episode
                t.burnIn = 0
            } else if case .scalar(let s) = x, s.style == .plain, let v = Int(s.string.replacingOccurrences(of: "_", with: "")) {
                if v < 1 { r.error(x, "trial block must be ≥ 1 tick (or 'episode' on an episodic plant), found \(v)") } else { t.block = .ticks(v) }
            } else {
                r.error(x, "trial block must be a whole number of ticks or 'episode', found \(r.describe(x))")
            }
        }
        if let x = e["burn_in"], let v = r.int(x, "trial burn_in", min: 0) {
            switch t.block {
            case .episode where v > 0:
                r.error(x, "trial burn_in applies to blocks of ticks; an episode block is scored whole (it starts with the episode), remove burn_in or set it to 0")
            case .ticks(let b) where v >= b:
                r.error(x, "trial burn_in (\(v)) must be less than the block (\(b) ticks): a block needs scored ticks after the burn-in")
            default:
                t.burnIn = v
            }
        } else if case .ticks(let b) = t.block, t.burnIn >= b {
            // The default burn-in does not fit a short block: no burn-in (said in docs/mapping.md).
            t.burnIn = 0
        }
        if let x = e["confidence"], let v = r.number(x, "trial confidence") {
            if !(v > 0.5 && v < 1) { r.error(x, "trial confidence must be in (0.5, 1), e.g. 0.95, found \(r.fmt(v))") }
            t.confidence = v
        }
        if let x = e["margin"], let v = r.number(x, "trial margin") {
            if !(v >= 0 && v < 1) {
                r.error(x, "trial margin must be in [0, 1) (a share of the reference's |block return| the candidate may be worse by; 0: it must be better), found \(r.fmt(v))")
            }
            t.margin = v
        }
        if let x = e["min_pairs"], let v = r.int(x, "trial min_pairs", min: 2, max: 100_000) { t.minPairs = v }
        if let x = e["stop_confidence"] {
            if r.isNull(x) {
                t.stopConfidence = nil
            } else if let v = r.number(x, "trial stop_confidence") {
                if !(v > 0.5 && v < 1) {
                    r.error(x, "trial stop_confidence must be in (0.5, 1), e.g. 0.9, or null (stop only with the promotion's corrected confidence), found \(r.fmt(v))")
                }
                t.stopConfidence = v
            }
        }
        if let x = e["last_look"] {
            if case .scalar(let sc) = x, sc.style == .plain, sc.string == "even" {
                t.lastLookShare = nil
            } else if let v = r.number(x, "trial last_look (a share in (0, 1), or even)") {
                if !(v > 0 && v < 1) {
                    r.error(x, "trial last_look must be in (0, 1), e.g. 0.5 (the share of 1 − confidence spent at the budget's last look), or 'even' (every look the same level), found \(r.fmt(v))")
                }
                t.lastLookShare = v
            }
        }
        if let x = e["futility"] {
            if r.isNull(x) {
                t.futility = nil
            } else if let v = r.number(x, "trial futility (a share in (0, 1), or none)") {
                if !(v > 0 && v < 1) {
                    r.error(x, "trial futility must be in (0, 1), e.g. 0.01 (stop when the candidate is shown not to be better than this share of the reference's block return), or none (no futility stop), found \(r.fmt(v))")
                }
                t.futility = v
            }
        }
        if let x = e["stop_loss"] {
            if r.isNull(x) {
                t.stopLoss = nil
            } else if let v = r.number(x, "trial stop_loss (a share > 0 of the reference's block return, or none)") {
                if !(v > 0 && v <= 10) {
                    r.error(x, "trial stop_loss must be in (0, 10], e.g. 0.5 (reject at once when the candidate's block has lost half a reference block), or none (no stop-loss), found \(r.fmt(v))")
                }
                t.stopLoss = v
            }
        }
        if let x = e["max_pairs"], let v = r.int(x, "trial max_pairs", min: 2, max: 100_000) { t.maxPairs = v }
        if t.maxPairs < t.minPairs, let x = e["max_pairs"] ?? e["min_pairs"] {
            r.error(x, "trial max_pairs (\(t.maxPairs)) must be at least min_pairs (\(t.minPairs)): no verdict could come before the budget ends")
        }
        if let x = e["max_ticks"] {
            if r.isNull(x) {
                t.maxTicks = nil
            } else if let v = r.int(x, "trial max_ticks", min: 1) {
                t.maxTicks = v
            }
        }
        return t
    }
}
