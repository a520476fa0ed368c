import ArgumentParser
import EdgeQMQTT
import EdgeQSystem
import EdgeQTopicMap
import Foundation
import Synchronization

/// `edgeq init --broker URL --topics FILTER`: listens to a plant's traffic for a while and drafts
/// a mapping file from it (docs/mapping.md, "Drafting a mapping from live traffic").
struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Listen to a plant's MQTT traffic and draft a mapping file from it.",
        discussion: """
            Subscribes to FILTER (repeatable) for --seconds and drafts a mapping: one signal per JSON \
            field (or raw value) seen, with its type and a valid range around the values seen; a tick \
            (the topic the incumbent answers, or a period from the message rates); the incumbent's \
            command topic (a topic whose messages follow the sensor messages within a short lag, \
            consistently); roles it can tell from the data (applied: a readback of the command; \
            controlled: moves with the command). Every choice it cannot make (the reward, the \
            actions) is the value TODO with a comment saying what to write: `edgeq check` reports \
            each one and fails until it is filled in. The draft goes to --out (refused when the file \
            exists, unless --force) or standard output. SIGINT (Ctrl-C) ends the window early and \
            drafts from what was heard so far.
            Exit status: 0; 64 for a bad option or filter, or an existing --out; 69 when the broker \
            cannot be reached; 66 when no message arrived in the window (or a password source is \
            missing).
            """
    )

    @Option(help: "Broker URL (mqtt://HOST[:PORT], or mqtts://… for TLS).")
    var broker: String
    @Option(name: .customLong("topics"), help: "Topic filter to listen to, e.g. 'plant/boiler/#' (repeatable).")
    var topics: [String] = []
    @Option(help: "Seconds to listen (long enough for the plant to show its usual range).")
    var seconds: Double = 60
    @Option(help: "Write the draft to this file (default: standard output).")
    var out: String?
    @Flag(help: "Replace --out when it exists.")
    var force = false
    @Option(help: "The gateway id written into the draft (default: the last level of the topics' common prefix).")
    var id: String?
    @Option(help: "Broker user name; needs --password.")
    var username: String?
    @Option(help: "Broker password: env:VARIABLE or file:/path (never the password itself).")
    var password: String?
    @Option(help: "TLS: PEM file of the CA that signs the broker's certificate (default: the system's CAs).")
    var tlsCa: String?
    @Option(help: "TLS: PEM client certificate, when the broker asks for one (with --tls-key).")
    var tlsCert: String?
    @Option(help: "TLS: PEM private key of --tls-cert.")
    var tlsKey: String?
    @Option(help: "Seconds to wait for the broker before giving up.")
    var connectTimeout: Double = 10

    func validate() throws {
        guard !topics.isEmpty else { throw ValidationError("give at least one --topics FILTER, e.g. --topics 'plant/boiler/#'") }
        for f in topics {
            if let p = Self.filterProblem(f) { throw ValidationError("--topics '\(f)': \(p)") }
        }
        guard seconds > 0, seconds.isFinite else { throw ValidationError("--seconds must be a positive number") }
        guard connectTimeout > 0 else { throw ValidationError("--connect-timeout must be positive") }
        do {
            _ = try BrokerURL(parsing: broker)
        } catch let e as MQTTError {
            throw ValidationError("--broker: \(e.message)")
        }
        guard (username == nil) == (password == nil) else {
            throw ValidationError("give --username and --password together, or neither")
        }
        if let password, !password.hasPrefix("env:"), !password.hasPrefix("file:") {
            throw ValidationError("--password takes env:VARIABLE or file:/path, never the password itself")
        }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("give --tls-cert and --tls-key together, or neither") }
        if let id, id.isEmpty || !id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) {
            throw ValidationError("--id '\(id)': a gateway id is letters, digits, '-' and '_'")
        }
        if let out, !force, FileManager.default.fileExists(atPath: out) {
            throw ValidationError("--out \(out) exists: give --force to replace it, or another file name")
        }
    }

    /// What is wrong with an MQTT topic filter, or nil (MQTT 3.1.1 §4.7: `+` fills a whole level,
    /// `#` fills a whole level and is last).
    static func filterProblem(_ f: String) -> String? {
        if f.isEmpty { return "an empty filter; write e.g. 'plant/#'" }
        if f.utf8.contains(0) { return "a filter may not contain NUL" }
        let levels = f.split(separator: "/", omittingEmptySubsequences: false)
        for (i, l) in levels.enumerated() {
            if l.contains("+") && l != "+" { return "'+' must fill a whole level (plant/+/temp), found '\(l)'" }
            if l.contains("#") && (l != "#" || i != levels.count - 1) { return "'#' must be the whole last level (plant/#), found '\(l)'" }
        }
        return nil
    }

    func run() throws {
        // The client's connect/disconnect lines are noise here; its warnings and errors are not.
        LoggingSetup.bootstrap(.warning)
        var mqtt: MQTTConfiguration
        do {
            mqtt = try MQTTConfiguration(url: broker, clientID: "edgeq-init-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))")
        } catch let e as MQTTError {
            throw ValidationError("--broker: \(e.message)")
        }
        mqtt.session = .clean
        mqtt.inboundCapacity = 1 << 16
        mqtt.overflow = .dropNewest
        if let username, let password {
            mqtt.username = username
            do {
                mqtt.password = try Secret(source: password)
            } catch let e as MQTTError {
                throw CLIFailure(.noInput, "--password: \(e.message)")
            }
        }
        if tlsCa != nil || tlsCert != nil {
            mqtt.tls = TLSConfiguration(caFile: tlsCa, certificateFile: tlsCert, keyFile: tlsKey)
        }
        let client: MQTTClient
        do {
            client = try MQTTClient(mqtt)
            for f in topics { try client.subscribe(f, qos: .atLeastOnce) }
        } catch let e as MQTTError {
            throw CLIFailure(.unavailable, "cannot set up the connection to \(mqtt.broker): \(e.message)")
        }
        defer { client.stop() }
        client.start()
        do {
            try client.waitUntilConnected(timeout: connectTimeout)
        } catch let e as MQTTError {
            throw CLIFailure(.unavailable, "cannot reach the broker \(mqtt.broker) within \(fmtNumber(connectTimeout)) s: \(e.message). "
                + "Check the URL (mqtt://HOST:PORT, mqtts:// for TLS), --username/--password and the --tls-* files")
        }
        let filters = topics.joined(separator: ", ")
        FileHandle.standardError.write(Data("edgeq init: listening to \(filters) on \(mqtt.broker) for \(fmtNumber(seconds)) s…\n".utf8))

        // SIGINT/SIGTERM end the window early: the draft is made from what was heard so far.
        let interrupted = Interrupted()
        let watcher = SignalWatcher { _ in interrupted.set() }
        defer { withExtendedLifetime(watcher) {} }
        var traffic = Traffic()
        let start = MonotonicClock.nanoseconds()
        let end = start + UInt64(seconds * 1e9)
        while !interrupted.isSet {
            let now = MonotonicClock.nanoseconds()
            guard now < end else { break }
            guard let m = client.receive(timeout: min(0.2, Double(end - now) / 1e9)) else { continue }
            if traffic.messageCount >= Traffic.maxMessages { continue }
            traffic.add(m)
        }
        let dropped = client.counters.dropped
        guard traffic.messageCount > 0 else {
            throw CLIFailure(.noInput, "no message on \(filters) at \(mqtt.broker) within \(fmtNumber(seconds)) s. Check the broker URL and the filter "
                + "(is the plant publishing there? `mosquitto_sub -h HOST -p PORT -t '\(topics[0])' -v` shows what arrives), or listen longer with --seconds")
        }
        let heard = interrupted.isSet ? Double(MonotonicClock.nanoseconds() - start) / 1e9 : seconds
        let draft = Draft(traffic: traffic, options: DraftOptions(
            broker: mqtt.broker.description, filters: topics, seconds: (heard * 10).rounded() / 10, id: id,
            username: username, password: password, tlsCa: tlsCa.map(Self.absolute), tlsCert: tlsCert.map(Self.absolute),
            tlsKey: tlsKey.map(Self.absolute), dropped: dropped, capped: traffic.messageCount >= Traffic.maxMessages))
        let text = draft.render()
        if let out {
            do {
                try text.write(toFile: out, atomically: true, encoding: .utf8)
            } catch {
                throw CLIFailure(.io, "cannot write the draft to \(out): \(error.localizedDescription)")
            }
            let n = DraftTodos.markers(yaml: text).count
            FileHandle.standardError.write(Data(("edgeq init: drafted \(out) from \(traffic.messageCount) messages on \(traffic.topics.count) topic\(traffic.topics.count == 1 ? "" : "s"): "
                + "\(draft.signalCount) signals" + (draft.incumbent.map { ", incumbent \($0.command.topic)" } ?? ", no incumbent found")
                + "; \(n) TODO\(n == 1 ? "" : "s") to fill in (`edgeq check \(out)` lists them)\n").utf8))
        } else {
            print(text, terminator: "")
        }
    }

    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(path).standardized.path
    }
}

/// Set by SIGINT/SIGTERM while listening.
final class Interrupted: Sendable {
    private let flag = Mutex(false)
    var isSet: Bool { flag.withLock { $0 } }
    func set() { flag.withLock { $0 = true } }
}

// MARK: - What was heard

/// A value at one JSON path (or the raw payload) of one message.
enum Leaf: Equatable {
    case number(Double)
    case bool(Bool)
    case string(String)
}

/// The messages of one topic: arrival times and the leaves of each payload.
struct TopicTraffic {
    let topic: String
    var arrivals: [UInt64] = []
    /// Per message: path → value (`""` for a raw payload).
    var samples: [[String: Leaf]] = []
    /// Paths in the order first seen.
    var paths: [String] = []
    var pathSet: Set<String> = []
    /// Messages whose payload was JSON (an object or array at the top).
    var jsonMessages = 0
    /// Messages that were retained (sent at subscription time).
    var retained = 0
    /// Paths left out because their keys cannot be written as a mapping's JSON path, or were too deep.
    var unreachable: Set<String> = []
}

/// Everything heard in the window, by topic in the order first heard.
struct Traffic {
    static let maxMessages = 200_000
    static let maxDepth = 8
    static let maxArray = 16

    var topics: [TopicTraffic] = []
    var index: [String: Int] = [:]
    var messageCount = 0

    mutating func add(_ m: MQTTMessage) {
        let i: Int
        if let j = index[m.topic] {
            i = j
        } else {
            i = topics.count
            index[m.topic] = i
            topics.append(TopicTraffic(topic: m.topic))
        }
        messageCount += 1
        var leaves: [String: Leaf] = [:]
        var t = topics[i]
        if m.retain { t.retained += 1 }
        let text = String(decoding: m.payload, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if let object = try? JSONSerialization.jsonObject(with: Data(m.payload), options: [.fragmentsAllowed]),
           object is [String: Any] || object is [Any] {
            t.jsonMessages += 1
            Self.flatten(object, path: "", depth: 0, into: &leaves, unreachable: &t.unreachable)
        } else if let d = Double(text), d.isFinite, !text.isEmpty {
            leaves[""] = .number(d)
        } else if let b = Self.boolWord(text) {
            leaves[""] = .bool(b)
        } else if !text.isEmpty {
            var s = text
            if s.count >= 2, s.hasPrefix("\""), s.hasSuffix("\"") { s = String(s.dropFirst().dropLast()) }
            leaves[""] = .string(s)
        }
        for k in leaves.keys.sorted() where t.pathSet.insert(k).inserted { t.paths.append(k) }
        t.arrivals.append(m.arrival)
        t.samples.append(leaves)
        topics[i] = t
    }

    /// The raw payload words the mapping's `bool` type reads.
    static func boolWord(_ s: String) -> Bool? {
        switch s.lowercased() {
        case "true", "on": return true
        case "false", "off": return false
        default: return nil
        }
    }

    /// A key that a mapping's JSON path can name (docs/mapping.md, `json`).
    static func pathKey(_ k: String) -> Bool {
        !k.isEmpty && k.unicodeScalars.allSatisfy {
            ($0.isASCII && (CharacterSet.alphanumerics.contains($0) || "_-$@:".unicodeScalars.contains($0))) || $0.value >= 0x80
        }
    }

    static func flatten(_ v: Any, path: String, depth: Int, into leaves: inout [String: Leaf], unreachable: inout Set<String>) {
        if let o = v as? [String: Any] {
            guard depth < maxDepth else { unreachable.insert(path); return }
            for (k, x) in o {
                let p = path.isEmpty ? k : path + "." + k
                guard pathKey(k) else { unreachable.insert(p); continue }
                flatten(x, path: p, depth: depth + 1, into: &leaves, unreachable: &unreachable)
            }
        } else if let a = v as? [Any] {
            guard depth < maxDepth else { unreachable.insert(path); return }
            for (i, x) in a.prefix(maxArray).enumerated() {
                flatten(x, path: "\(path)[\(i)]", depth: depth + 1, into: &leaves, unreachable: &unreachable)
            }
        } else if let n = v as? NSNumber {
            // JSON true/false come back as NSNumber of type char.
            if String(cString: n.objCType) == "c" { leaves[path] = .bool(n.boolValue) } else if n.doubleValue.isFinite { leaves[path] = .number(n.doubleValue) }
        } else if let s = v as? String {
            leaves[path] = .string(s)
        }
    }
}

// MARK: - What the traffic shows

/// One field of one topic and what its values look like.
struct FieldSummary {
    enum Kind: Equatable { case number, bool, enumeration([String]), unusable(String) }

    let path: String
    let kind: Kind
    /// Per message of the topic: the number (bool as 0/1, enum as its index), or nil when absent.
    let values: [Double?]
    var seen: [Double] { values.compactMap { $0 } }
    var low: Double { seen.min() ?? 0 }
    var high: Double { seen.max() ?? 0 }
    var isInteger: Bool { seen.allSatisfy { $0 == $0.rounded() && abs($0) < 1e15 } }
    var distinct: [Double] { Array(Set(seen)).sorted() }

    /// A step counter: whole numbers, one more than the previous message's in most messages.
    var isCounter: Bool {
        guard kind == .number, isInteger, values.count >= 3 else { return false }
        var pairs = 0, plusOne = 0
        for i in 1..<values.count {
            guard let a = values[i - 1], let b = values[i] else { continue }
            pairs += 1
            if b == a + 1 { plusOne += 1 }
        }
        return pairs >= 2 && Double(plusOne) >= 0.8 * Double(pairs)
    }

    /// Only grew in the window (never fell, took at least 3 values): a clock, an episode count,
    /// a total. The values seen say nothing about its range.
    var isGrowing: Bool {
        guard kind == .number, distinct.count >= 3 else { return false }
        var previous: Double?
        for v in values {
            guard let v else { continue }
            if let p = previous, v < p { return false }
            previous = v
        }
        return true
    }

    /// Changes from one message to the next in at least half of the cases.
    var changesOften: Bool {
        var pairs = 0, changed = 0
        for i in values.indices.dropFirst() {
            guard let a = values[i - 1], let b = values[i] else { continue }
            pairs += 1
            if a != b { changed += 1 }
        }
        return pairs > 0 && 2 * changed >= pairs
    }

    init(path: String, samples: [[String: Leaf]]) {
        self.path = path
        let leaves = samples.map { $0[path] }
        var numbers = 0, bools = 0
        var strings: [String] = []
        for l in leaves {
            switch l {
            case .number?: numbers += 1
            case .bool?: bools += 1
            case .string(let s)?: if !strings.contains(s) { strings.append(s) }
            case nil: break
            }
        }
        let stringCount = leaves.filter { if case .string? = $0 { return true } else { return false } }.count
        if stringCount > 0 && numbers + bools > 0 {
            kind = .unusable("mixed strings and numbers")
        } else if numbers > 0 && bools > 0 {
            kind = .unusable("mixed numbers and booleans")
        } else if stringCount > 0 {
            if strings.count > 16 {
                kind = .unusable("\(strings.count) different strings (text, not a state: an id or a time?)")
            } else if strings.contains(where: { $0.contains("\\") || $0.contains("\"") || $0.isEmpty }) {
                kind = .unusable("strings with quotes or escapes")
            } else {
                kind = .enumeration(strings)
            }
        } else if bools > 0 {
            kind = .bool
        } else {
            kind = .number
        }
        values = leaves.map { l -> Double? in
            switch l {
            case .number(let d)?: return d
            case .bool(let b)?: return b ? 1 : 0
            case .string(let s)?: return strings.firstIndex(of: s).map(Double.init)
            case nil: return nil
            }
        }
    }
}

/// A topic whose messages follow another's (the sensors') within a short lag, consistently:
/// the incumbent controller answering each state.
struct IncumbentGuess {
    /// The sensor topic it answers (the tick's trigger).
    let sensor: String
    /// The command topic.
    let command: TopicTraffic
    /// Its command field (nil: the raw payload) and the values it took.
    let field: FieldSummary
    /// Command messages that followed a sensor message within the lag, of all.
    let followed: Int
    let total: Int
    /// The median lag, seconds.
    let medianLag: Double
    /// Other fields of the command that echo a sensor field (path → the sensor's path).
    let echoes: [String: String]
    /// Other fields that were constant (path → value).
    let constants: [String: Leaf]
    /// Pairs (sensor message index, command message index, next sensor message index or nil).
    let pairs: [(s: Int, c: Int, next: Int?)]
}

/// The choices `edgeq init` makes, and how it writes them down.
struct DraftOptions {
    var broker: String
    var filters: [String]
    var seconds: Double
    var id: String?
    var username: String?
    var password: String?
    var tlsCa: String?
    var tlsCert: String?
    var tlsKey: String?
    var dropped: UInt64
    var capped: Bool
}

struct Draft {
    /// One drafted signal.
    struct Signal {
        var name: String
        let topic: String
        let field: FieldSummary
        var range: (Double, Double)?
        var role: String?
        var notes: [String] = []
        var review: String?
        var isCounter: Bool { field.isCounter }
    }

    let traffic: Traffic
    let options: DraftOptions
    let incumbent: IncumbentGuess?
    var signals: [Signal] = []
    /// Topics not drafted, with why.
    var skipped: [(String, String)] = []
    var signalCount: Int { signals.count }

    init(traffic: Traffic, options: DraftOptions) {
        self.traffic = traffic
        self.options = options
        incumbent = Self.findIncumbent(traffic)
        var used: Set<String> = []
        for t in traffic.topics {
            if t.topic == incumbent?.command.topic { continue }
            guard t.arrivals.count >= 2 else {
                skipped.append((t.topic, t.retained > 0 ? "1 message (retained): too little to draft a signal from" : "1 message: too little to draft a signal from"))
                continue
            }
            for p in t.paths {
                let f = FieldSummary(path: p, samples: t.samples)
                if case .unusable(let why) = f.kind {
                    skipped.append((t.topic + (p.isEmpty ? "" : " " + p), why))
                    continue
                }
                let name = Self.uniqueName(path: p, topic: t.topic, used: &used)
                var s = Signal(name: name, topic: t.topic, field: f)
                if f.kind == .number && !f.isCounter && !f.isGrowing { s.range = Self.validRange(f) }
                signals.append(s)
            }
            for p in t.unreachable.sorted() { skipped.append((t.topic + " " + p, "its key cannot be written as a JSON path (docs/mapping.md, json), or it is nested too deep")) }
        }
        guessRoles()
    }

    // MARK: Names and ranges

    /// The expression language's words and functions, and the words YAML reads as something else.
    static let reserved: Set<String> = ["and", "or", "not", "true", "false", "value", "action", "action_name", "if", "abs", "min", "max",
                                        "clamp", "sqrt", "exp", "log", "null", "yes", "no", "on", "off", "y", "n"]

    static func sanitize(_ s: String) -> String {
        var out = String(s.unicodeScalars.map { $0.isASCII && CharacterSet.alphanumerics.contains($0) ? Character($0) : "_" })
        while out.contains("__") { out = out.replacingOccurrences(of: "__", with: "_") }
        out = out.trimmingCharacters(in: CharacterSet(charactersIn: "_"))
        if out.isEmpty { out = "value" }
        if let f = out.unicodeScalars.first, CharacterSet.decimalDigits.contains(f) { out = "v_" + out }
        if reserved.contains(out) { out += "_signal" }
        return out
    }

    /// The signal's name: its path (or, for a raw payload, the topic's last level); when taken,
    /// with more of the topic's levels in front (`b_temp` beside `a_temp`), then a number.
    static func uniqueName(path: String, topic: String, used: inout Set<String>) -> String {
        let levels = topic.split(separator: "/").map(String.init)
        var candidates: [String] = []
        if path.isEmpty {
            for k in 1...max(1, levels.count) { candidates.append(sanitize(levels.suffix(k).joined(separator: "_"))) }
        } else {
            for k in 0...levels.count { candidates.append(sanitize((levels.suffix(k) + [path]).joined(separator: "_"))) }
        }
        if let free = candidates.first(where: { !used.contains($0) }) {
            used.insert(free)
            return free
        }
        let base = candidates[0]
        var k = 2
        while used.contains("\(base)_\(k)") { k += 1 }
        used.insert("\(base)_\(k)")
        return "\(base)_\(k)"
    }

    /// The values seen, widened on each side by their span (for a few whole numbers, a stage or
    /// a mode: by one step, the smallest gap between them; by half the value, or 1, when every
    /// value was the same), rounded outwards: a valid range that real values stay in, and broken
    /// or absurd ones (a sensor fault, a unit changed) fall out of.
    static func validRange(_ field: FieldSummary) -> (Double, Double) {
        let low = field.low, high = field.high
        let span = high - low
        let levels = field.distinct
        let discrete = field.isInteger && levels.count <= 16
        let gap = zip(levels.dropFirst(), levels).map { $0 - $1 }.min() ?? span
        let margin = span > 0 ? (discrete ? gap : span) : max(abs(low) / 2, 1)
        var lo = low - margin, hi = high + margin
        let step = pow(10, floor(log10(margin)) - 1)
        lo = (lo / step).rounded(.down) * step
        hi = (hi / step).rounded(.up) * step
        if !(lo < hi) { hi = lo + 1 }
        return (lo, hi)
    }

    // MARK: The incumbent

    /// For each command message of `c`: the latest message of `s` since the previous command
    /// message (nil when none), and the next message of `s` after it.
    static func follow(_ s: TopicTraffic, _ c: TopicTraffic) -> [(s: Int?, next: Int?)] {
        var out: [(s: Int?, next: Int?)] = []
        var j = 0
        var previous: UInt64 = 0
        for t in c.arrivals {
            while j < s.arrivals.count && s.arrivals[j] <= t { j += 1 }
            let last = j - 1
            let fresh = last >= 0 && s.arrivals[last] >= previous
            out.append((fresh ? last : nil, j < s.arrivals.count ? j : nil))
            previous = t
        }
        return out
    }

    static func median(_ xs: [Double]) -> Double {
        guard !xs.isEmpty else { return .infinity }
        let s = xs.sorted()
        return s[s.count / 2]
    }

    /// The sensor/command pair whose command messages follow the sensor messages within a short
    /// lag (at most half the sensor's median interval, and at most 1 s) in at least 80 % of cases,
    /// and much sooner than the sensor messages follow the commands; the command must carry a
    /// value that changes. Nil when no pair qualifies.
    static func findIncumbent(_ traffic: Traffic) -> IncumbentGuess? {
        let busy = traffic.topics.filter { $0.arrivals.count >= 5 }
        var summaries: [String: [FieldSummary]] = [:]
        for t in busy { summaries[t.topic] = t.paths.map { FieldSummary(path: $0, samples: t.samples) } }
        var best: (score: Double, guess: IncumbentGuess)?
        for c in busy {
            // The command's value: a field that changes, is not a counter.
            let fields = summaries[c.topic] ?? []
            for s in busy where s.topic != c.topic {
                let sIntervals = zip(s.arrivals.dropFirst(), s.arrivals).map { Double($0 - $1) / 1e9 }
                let maxLag = min(1, median(sIntervals) / 2)
                let f = follow(s, c)
                var lags: [Double] = []
                var pairs: [(s: Int, c: Int, next: Int?)] = []
                for (ci, x) in f.enumerated() {
                    guard let si = x.s else { continue }
                    let lag = Double(c.arrivals[ci] - s.arrivals[si]) / 1e9
                    if lag <= maxLag {
                        lags.append(lag)
                        pairs.append((si, ci, x.next))
                    }
                }
                guard Double(lags.count) >= 0.8 * Double(c.arrivals.count) else { continue }
                // The other way round: sensor messages after commands.
                let back = follow(c, s).enumerated().compactMap { (si, x) -> Double? in
                    x.s.map { Double(s.arrivals[si] - c.arrivals[$0]) / 1e9 }
                }
                let lag = median(lags), backLag = median(back)
                if !back.isEmpty && !(lag < backLag / 2) && !(lag == 0 && backLag == 0) { continue }
                let sFields = summaries[s.topic] ?? []
                var echoes: [String: String] = [:]
                var constants: [String: Leaf] = [:]
                var candidates: [FieldSummary] = []
                var constantFields: [FieldSummary] = []
                for g in fields {
                    if case .unusable = g.kind { continue }
                    if g.distinct.count == 1, let v = c.samples.first?[g.path] {
                        constants[g.path] = v
                        if g.kind == .number { constantFields.append(g) }
                        continue
                    }
                    // An echo of a sensor value that changes (a step number, a request id); a
                    // command that seldom changes equals the readback of the previous one, and
                    // is not an echo.
                    if g.changesOften, let e = sFields.first(where: { sf in
                        guard sf.kind == .number || sf.kind == .bool else { return false }
                        let same = pairs.filter { p in g.values[p.c] != nil && g.values[p.c] == sf.values[p.s] }.count
                        return Double(same) >= 0.9 * Double(pairs.count)
                    }) {
                        echoes[g.path] = e.path
                        continue
                    }
                    if g.isCounter { continue }
                    if g.kind == .number || g.kind == .bool { candidates.append(g) }
                }
                // The command value: the field with the fewest distinct values above one (a
                // discrete command); a constant one when none changed in the window.
                guard let field = candidates.min(by: { $0.distinct.count < $1.distinct.count }) ?? constantFields.first else { continue }
                if field.distinct.count == 1 { constants[field.path] = nil }
                let score = Double(lags.count) / Double(c.arrivals.count) + (backLag.isFinite && backLag > 0 ? min(1, 1 - lag / backLag) : 0)
                let guess = IncumbentGuess(sensor: s.topic, command: c, field: field, followed: lags.count, total: c.arrivals.count,
                                           medianLag: lag, echoes: echoes, constants: constants, pairs: pairs)
                if score > best?.score ?? -1 { best = (score, guess) }
            }
        }
        return best?.guess
    }

    // MARK: Roles

    /// applied: a field of the sensor topic that equals, in the next sensor message, the command
    /// just sent (the plant's readback of the action it applied). controlled: a number whose change
    /// to the next sensor message moves with the command (|correlation| ≥ 0.3 over at least 10
    /// steps). The rest: no role, with a note.
    mutating func guessRoles() {
        guard let inc = incumbent else {
            for i in signals.indices where signals[i].field.kind == .number && !signals[i].isCounter && signals[i].field.distinct.count > 1 {
                signals[i].review = "role? no incumbent was found to tell what the actions move"
            }
            return
        }
        for i in signals.indices {
            let s = signals[i]
            guard s.topic == inc.sensor, !s.isCounter, s.field.kind == .number || s.field.kind == .bool else { continue }
            var same = 0, n = 0
            var xs: [Double] = [], ys: [Double] = []
            for p in inc.pairs {
                guard let next = p.next, let cmd = inc.field.values[p.c] else { continue }
                if let after = s.field.values[next] {
                    n += 1
                    if after == cmd { same += 1 }
                    if let before = s.field.values[p.s] {
                        xs.append(cmd)
                        ys.append(after - before)
                    }
                }
            }
            if n >= 5 && Double(same) >= 0.9 * Double(n) && inc.field.distinct.count >= 2 {
                signals[i].role = "applied"
                signals[i].notes.append("applied: equals the command sent before (\(same) of \(n))")
                continue
            }
            // A readback scaled from the command (power = 25 % × stage): applied, with a value per action.
            if n >= 5, inc.field.distinct.count >= 2, let (a, b) = Self.linear(inc, s.field), a != 0 {
                signals[i].review = "a readback of the command (= \(fmtNumber(a)) × \(inc.field.path.isEmpty ? "command" : inc.field.path)\(b == 0 ? "" : " + \(fmtNumber(b))")): role: applied, with applied: [its value for each action]"
                continue
            }
            let r = Self.correlation(xs, ys)
            if s.field.kind == .number, !s.field.isInteger, xs.count >= 10, let r, abs(r) >= 0.5 {
                signals[i].role = "controlled"
                signals[i].notes.append(String(format: "controlled: its change follows the command (r = %.2f)", r))
                continue
            }
            if s.field.kind == .number && s.field.distinct.count > 1 {
                signals[i].review = "role? exogenous if the actions do not move it (weather, a setpoint, a price); none for a reward term or a count"
            }
        }
    }

    /// `field` in the next sensor message = a × the command + b, exactly (to 1e-9 of the span), for every pair.
    static func linear(_ inc: IncumbentGuess, _ field: FieldSummary) -> (Double, Double)? {
        var points: [(Double, Double)] = []
        for p in inc.pairs {
            guard let next = p.next, let c = inc.field.values[p.c], let v = field.values[next] else { continue }
            points.append((c, v))
        }
        guard let lo = points.min(by: { $0.0 < $1.0 }), let hi = points.max(by: { $0.0 < $1.0 }), hi.0 > lo.0 else { return nil }
        let a = (hi.1 - lo.1) / (hi.0 - lo.0), b = lo.1 - a * lo.0
        let tolerance = 1e-9 * max(1, abs(hi.1 - lo.1))
        return points.allSatisfy({ abs(a * $0.0 + b - $0.1) <= tolerance }) ? (a, b) : nil
    }

    static func correlation(_ x: [Double], _ y: [Double]) -> Double? {
        guard x.count >= 3 else { return nil }
        let n = Double(x.count)
        let mx = x.reduce(0, +) / n, my = y.reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for (a, b) in zip(x, y) {
            sxy += (a - mx) * (b - my)
            sxx += (a - mx) * (a - mx)
            syy += (b - my) * (b - my)
        }
        guard sxx > 0, syy > 0 else { return nil }
        return sxy / (sxx * syy).squareRoot()
    }

    // MARK: Writing

    var gatewayID: String {
        if let id = options.id { return id }
        let topics = signals.map(\.topic) + (incumbent.map { [$0.command.topic] } ?? [])
        let all = Array(Set(topics.isEmpty ? traffic.topics.map(\.topic) : topics)).sorted()
        var common = all.first.map { $0.split(separator: "/", omittingEmptySubsequences: false).map(String.init) } ?? []
        for t in all.dropFirst() {
            let l = t.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            var k = 0
            while k < common.count, k < l.count, common[k] == l[k] { k += 1 }
            common = Array(common.prefix(k))
        }
        if all.count == 1, common.count > 1 { common.removeLast() }
        let id = String((common.last ?? "plant").unicodeScalars.map { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "-" || $0 == "_") ? Character($0) : "_" })
        return id.isEmpty || id.allSatisfy({ $0 == "_" }) ? "plant" : id
    }

    func render() -> String {
        var y: [String] = []
        let messages = traffic.messageCount
        let stamp = ISO8601DateFormatter().string(from: Date())
        y.append("# A mapping drafted by `edgeq init` from \(fmtNumber(options.seconds)) s of traffic on \(options.filters.joined(separator: ", ")) at \(options.broker)")
        y.append("# (\(stamp)): \(messages) message\(messages == 1 ? "" : "s") on \(traffic.topics.count) topic\(traffic.topics.count == 1 ? "" : "s").")
        if options.dropped > 0 || options.capped {
            let why = [options.dropped > 0 ? "\(options.dropped) dropped while the draft could not keep up" : nil,
                       options.capped ? "only the first \(Traffic.maxMessages) kept" : nil].compactMap { $0 }
            y.append("# Not every message was kept (\(why.joined(separator: "; "))): the ranges and rates may miss some.")
        }
        y.append("# Each value TODO is a choice the draft could not make: `edgeq check` reports each one and fails until it is")
        y.append("# replaced. `review:` comments are guesses worth a look. Every key: docs/mapping.md.")
        y.append("gateway:")
        y.append("  id: \(gatewayID)")
        y.append("  brokers: [\(options.broker)]")
        if options.username != nil {
            y.append("  username: TODO   # the gateway's broker user, by reference: {env: VARIABLE} or {file: /path} (you listened as \(yamlText(options.username ?? "")))")
        }
        if let p = options.password {
            let ref = p.hasPrefix("env:") ? "{env: \(yamlText(String(p.dropFirst(4))))}" : "{file: \(yamlText(String(p.dropFirst(5))))}"
            y.append("  password: \(ref)   # review: the password you listened with; the gateway's own, where it runs")
        }
        if options.tlsCa != nil || options.tlsCert != nil {
            var parts: [String] = []
            if let a = options.tlsCa { parts.append("ca: \(yamlText(a))") }
            if let c = options.tlsCert { parts.append("cert: \(yamlText(c))") }
            if let k = options.tlsKey { parts.append("key: \(yamlText(k))") }
            y.append("  tls: {\(parts.joined(separator: ", "))}")
        }
        y.append("  mode: shadow                   # the incumbent stays in charge: watch the gateway before handing it control")
        y.append("")

        // Signals, by topic.
        y.append("signals:")
        var byTopic: [String: [Signal]] = [:]
        for s in signals { byTopic[s.topic, default: []].append(s) }
        for t in traffic.topics {
            guard let list = byTopic[t.topic] else { continue }
            y.append("  # \(t.topic): \(rateText(t))\(t.topic == incumbent?.sensor ? "; the incumbent answers each one (the tick below)" : "")")
            for s in list { y.append("  " + signalLine(s)) }
        }
        if signals.isEmpty { y.append("  []   # no sensor values were heard") }
        for (what, why) in skipped { y.append("  # not drafted: \(what): \(why)") }
        y.append("")

        // State: every signal but the counters.
        // Not in the state: counters, counts that only grew, and values that never changed in the
        // window (nothing to learn from, and a later change would fall outside their range).
        let constant = signals.filter { !$0.isCounter && $0.field.distinct.count <= 1 }
        let features = signals.filter { !$0.isCounter && !($0.field.isGrowing && $0.field.isInteger) && $0.field.distinct.count > 1 }
        y.append("state:")
        y.append("  features:                      # review: every value heard; drop what does not matter to the decision")
        if features.isEmpty {
            y.append("    - TODO   # the state's columns: {signal: NAME} for the signals above")
        }
        if !constant.isEmpty {
            y.append("    # review: \(constant.map(\.name).joined(separator: ", ")) never changed in the window: add them if they vary")
        }
        for s in features {
            if let r = s.range {
                y.append("    - {signal: \(s.name), normalize: [\(fmtNumber(r.0)), \(fmtNumber(r.1))]}")
            } else {
                y.append("    - {signal: \(s.name)}")
            }
        }
        y.append("")

        // Tick.
        y.append("tick:")
        if let inc = incumbent {
            y.append("  trigger: \(yamlText(inc.sensor))   # the incumbent answered \(inc.followed) of its \(inc.total) commands within \(lagText(inc.medianLag)) (median) of a message here")
            if let counter = signals.first(where: { $0.topic == inc.sensor && $0.isCounter }) {
                y.append("  sequence: \(counter.name)       # one more per message: a transition that skips a step is flagged gap")
            }
        } else if let busiest = traffic.topics.filter({ t in signals.contains { $0.topic == t.topic } }).max(by: { $0.arrivals.count < $1.arrivals.count }), busiest.arrivals.count >= 2 {
            let interval = Self.median(zip(busiest.arrivals.dropFirst(), busiest.arrivals).map { Double($0 - $1) / 1e9 })
            y.append("  period: \(durationText(niceDuration(interval)))   # review: \(busiest.topic) came every \(lagText(interval)) (median); no topic answered the sensors, so a period")
            y.append("  # trigger: \(yamlText(busiest.topic))   # instead, to decide on each message there")
        } else {
            y.append("  period: TODO   # how often to decide, e.g. 10s (too few messages to tell)")
        }
        y.append("")

        // Reward.
        y.append("reward: TODO   # what counts as good, larger is better: an expression over the signals (docs/mapping.md), e.g. \(rewardExample())")
        let bools = signals.filter { $0.field.kind == .bool }
        if !bools.isEmpty {
            let which = bools.count == 1 ? bools[0].name : "one of " + bools.map(\.name).joined(separator: ", ")
            y.append("# review: terminal: NAME (an end state) or truncated: NAME (a time limit), if \(which) says so")
        }
        y.append("")

        // Actions.
        y.append("actions:")
        y.append("  fallback: hold                 # publish nothing when unsure: the plant keeps its own controller's command")
        y.append(contentsOf: actionLines())
        y.append("")

        if let inc = incumbent {
            y.append("incumbent:                       # the controller in charge now: its commands follow \(inc.sensor)")
            y.append("  topic: \(yamlText(inc.command.topic))")
            if !inc.field.path.isEmpty { y.append("  json: \(yamlText(inc.field.path))") }
        } else {
            y.append("# incumbent: none found: no topic's messages followed the sensor messages consistently. If a controller publishes")
            y.append("# its commands, give its topic (and json field) here: shadow mode compares with it and learning starts from it.")
        }
        return y.joined(separator: "\n") + "\n"
    }

    func rateText(_ t: TopicTraffic) -> String {
        let n = t.arrivals.count
        var text = "\(n) message\(n == 1 ? "" : "s")"
        if n >= 2 {
            let span = Double(t.arrivals[n - 1] - t.arrivals[0]) / 1e9
            let interval = Self.median(zip(t.arrivals.dropFirst(), t.arrivals).map { Double($0 - $1) / 1e9 })
            if span > 0 { text += String(format: ", %.3g/s", Double(n - 1) / span) }
            text += ", every \(lagText(interval)) (median)"
        }
        if t.retained > 0 { text += ", \(t.retained) retained" }
        return text
    }

    func signalLine(_ s: Signal) -> String {
        var parts = ["name: \(s.name)", "topic: \(yamlText(s.topic))"]
        if !s.field.path.isEmpty { parts.append("json: \(yamlText(s.field.path))") }
        var comment: [String] = []
        switch s.field.kind {
        case .bool:
            parts.append("type: bool")
            let d = s.field.distinct
            comment.append(d == [0] ? "seen false only" : d == [1] ? "seen true only" : "seen true and false")
        case .enumeration(let words):
            parts.append("type: enum")
            parts.append("values: {" + words.enumerated().map { "\(yamlText($0.element)): \($0.offset)" }.joined(separator: ", ") + "}")
            comment.append("review: the numbers given to each word")
        case .number:
            if let r = s.range {
                parts.append("range: [\(fmtNumber(r.0)), \(fmtNumber(r.1))]")
                comment.append(s.field.low == s.field.high ? "seen \(fmtNumber(s.field.low)) only" : "seen \(fmtNumber(s.field.low))…\(fmtNumber(s.field.high))")
            }
            if s.isCounter {
                comment.append("a counter: one more per message (\(fmtNumber(s.field.low))…\(fmtNumber(s.field.high)))")
            } else if s.field.isGrowing {
                comment.append("review: only grew (\(fmtNumber(s.field.low))…\(fmtNumber(s.field.high))): a clock or a count? no range drafted")
            }
        case .unusable:
            break
        }
        if let role = s.role { parts.append("role: \(role)") }
        comment += s.notes
        if let r = s.review { comment.append("review: " + r) }
        return "- {" + parts.joined(separator: ", ") + "}" + (comment.isEmpty ? "" : "   # " + comment.joined(separator: "; "))
    }

    func rewardExample() -> String {
        if let r = signals.first(where: { ["reward", "step_reward"].contains($0.field.path.lowercased()) }) {
            return "\(r.name) (the plant publishes a reward)"
        }
        if let c = signals.first(where: { $0.field.path.lowercased().contains("cost") }) { return "-\(c.name)" }
        let controlled = signals.filter { $0.role == "controlled" }.map(\.name)
        if let sp = signals.first(where: { $0.name.lowercased().contains("setpoint") || $0.name.lowercased().hasSuffix("_sp") }), let c = controlled.first {
            return "-abs(\(c) - \(sp.name))"
        }
        if let c = controlled.first { return "-abs(\(c) - TARGET)" }
        return "-abs(temp - setpoint)"
    }

    /// `list: TODO` and, commented out below it, the actions the incumbent's commands suggest.
    func actionLines() -> [String] {
        guard let inc = incumbent else {
            return ["  list: TODO   # EdgeQ's actions (the network's outputs): for each, a name and the writes it publishes (docs/mapping.md, actions)"]
        }
        let f = inc.field
        let last = f.path.isEmpty ? inc.command.topic.split(separator: "/").last.map(String.init) ?? "cmd" : f.path.split(separator: ".").last.map(String.init) ?? f.path
        let name = String(last.unicodeScalars.map { $0.isASCII && CharacterSet.alphanumerics.contains($0) ? Character($0) : "_" })
        let values = f.distinct
        var lines = ["  list: TODO   # EdgeQ's actions: one per command; the incumbent sent \(f.path.isEmpty ? "" : "\(f.path) = ")"
            + "\(values.prefix(12).map(fmtNumber).joined(separator: ", "))\(values.count > 12 ? ", …" : "") on \(inc.command.topic) (a suggestion follows)"]
        guard case .number = f.kind, f.isInteger, values.count <= 16 else {
            lines.append("  # the commands took \(values.count) values in [\(fmtNumber(f.low)), \(fmtNumber(f.high))]: choose a few levels as actions")
            return lines
        }
        // The payload: the command value, the echoed sensor fields, the constants.
        let template: String
        if f.path.isEmpty {
            template = "{{value}}"
        } else {
            var fields: [String] = []
            let flat = inc.command.paths.allSatisfy { !$0.contains(".") && !$0.contains("[") }
            guard flat else {
                lines.append("  # the commands are nested JSON: write the payload template from one of them (docs/mapping.md, payload templates)")
                return lines
            }
            for p in [f.path] + inc.command.paths.filter({ $0 != f.path }) {
                if p == f.path {
                    fields.append("\"\(p)\":{{value}}")
                } else if let e = inc.echoes[p], let sig = signals.first(where: { $0.topic == inc.sensor && $0.field.path == e }) {
                    fields.append("\"\(p)\":{{\(sig.name)}}")
                } else if let c = inc.constants[p] {
                    switch c {
                    case .number(let d): fields.append("\"\(p)\":\(fmtNumber(d))")
                    case .bool(let b): fields.append("\"\(p)\":\(b)")
                    case .string(let s): fields.append("\"\(p)\":\"\(s)\"")
                    }
                }
            }
            template = "{" + fields.joined(separator: ",") + "}"
        }
        lines.append("  # Suggested from the incumbent's commands (the values it sent; add any it did not): replace the line above with")
        lines.append("  # list:")
        for v in values {
            let actionName = "\(name)_\(fmtNumber(v).replacingOccurrences(of: "-", with: "m"))"
            lines.append("  #   - {name: \(actionName), publish: {topic: \(yamlText(inc.command.topic)), payload: '\(template)', value: \(fmtNumber(v))}}")
        }
        return lines
    }
}

// MARK: - Formatting

/// A number as a mapping file writes it: whole numbers without a decimal point, else up to 6
/// significant digits.
func fmtNumber(_ x: Double) -> String {
    if x == x.rounded() && abs(x) < 1e15 { return String(Int(x)) }
    var s = String(format: "%.6g", x)
    if s.contains("e") { return s }
    if s.contains(".") {
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
    }
    return s
}

/// A text as a YAML scalar: plain when safe, else single-quoted.
func yamlText(_ s: String) -> String {
    let plainSafe = !s.isEmpty && s.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "/_.-".unicodeScalars.contains($0)) }
        && !["true", "false", "yes", "no", "on", "off", "null", "y", "n", "todo"].contains(s.lowercased())
        && Double(s) == nil && !s.hasPrefix("-") && !s.hasPrefix(".")
    return plainSafe ? s : "'" + s.replacingOccurrences(of: "'", with: "''") + "'"
}

/// A lag or interval for people: µs, ms or s.
func lagText(_ seconds: Double) -> String {
    if seconds < 1e-3 { return "\(max(1, Int((seconds * 1e6).rounded()))) µs" }
    if seconds < 1 { return "\(fmtNumber((seconds * 1e3 * 10).rounded() / 10)) ms" }
    return "\(fmtNumber((seconds * 100).rounded() / 100)) s"
}

/// The nearest of 1, 2, 5 × 10ⁿ seconds (at least 10 ms).
func niceDuration(_ seconds: Double) -> Double {
    let s = max(0.01, seconds)
    let e = floor(log10(s))
    let base = pow(10, e)
    let m = s / base
    let nice: Double = m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10
    return nice * base
}

/// A duration as the mapping writes it (`500ms`, `2s`, `5m`).
func durationText(_ seconds: Double) -> String {
    if seconds < 1 { return "\(Int((seconds * 1000).rounded()))ms" }
    if seconds >= 60, (seconds / 60).rounded() == seconds / 60 { return "\(Int(seconds / 60))m" }
    return "\(fmtNumber(seconds))s"
}
