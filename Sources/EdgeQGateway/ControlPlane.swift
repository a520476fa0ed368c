import EdgeQCore
import EdgeQLog
import Foundation

/// The gateway's operating mode (DESIGN.md): shadow decides and reports while the
/// incumbent stays in charge; control publishes the model's commands.
public enum GatewayMode: String, Sendable, Codable, CaseIterable {
    case shadow
    case control
}

/// A JSON value for the open parts of control-plane messages (request ids, extra fields).
public enum JSONValue: Sendable, Equatable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case null
    case array([JSONValue])
    case object([String: JSONValue])

    /// Converts a JSONSerialization result.
    init?(any: Any) {
        switch any {
        case let s as String: self = .string(s)
        case let n as NSNumber:
            if isJSONBool(n) { self = .bool(n.boolValue) } else { self = .number(n.doubleValue) }
        case is NSNull: self = .null
        case let a as [Any]:
            var out: [JSONValue] = []
            for x in a {
                guard let v = JSONValue(any: x) else { return nil }
                out.append(v)
            }
            self = .array(out)
        case let o as [String: Any]:
            var out: [String: JSONValue] = [:]
            for (k, x) in o {
                guard let v = JSONValue(any: x) else { return nil }
                out[k] = v
            }
            self = .object(out)
        default: return nil
        }
    }

    /// The value as JSONSerialization accepts it.
    var foundation: Any {
        switch self {
        case .string(let s): return s
        case .number(let n): return n == n.rounded() && abs(n) < 1e15 ? NSNumber(value: Int64(n)) : NSNumber(value: n)
        case .bool(let b): return NSNumber(value: b)
        case .null: return NSNull()
        case .array(let a): return a.map(\.foundation)
        case .object(let o): return o.mapValues(\.foundation)
        }
    }

    /// Compact JSON text with sorted keys (Unicode scalar order); a non-finite number is `null`.
    ///
    /// Written here rather than with JSONSerialization: its `.sortedKeys` compares keys with
    /// ICU's collator, and loading ICU's collation data for the status message cost the
    /// running gateway ≈ 2 MB of resident memory (docs/benchmarks.md, e2e).
    public var jsonText: String {
        var out = ""
        write(into: &out)
        return out
    }

    private func write(into out: inout String) {
        switch self {
        case .string(let s): out += jsonString(s)
        case .number(let n):
            if !n.isFinite {
                out += "null"
            } else if n == n.rounded() && abs(n) < 1e15 {
                out += String(Int64(n))
            } else {
                out += n.description
            }
        case .bool(let b): out += b ? "true" : "false"
        case .null: out += "null"
        case .array(let a):
            out += "["
            for (i, v) in a.enumerated() {
                if i > 0 { out += "," }
                v.write(into: &out)
            }
            out += "]"
        case .object(let o):
            out += "{"
            for (i, key) in o.keys.sorted().enumerated() {
                if i > 0 { out += "," }
                out += jsonString(key)
                out += ":"
                o[key]?.write(into: &out)
            }
            out += "}"
        }
    }
}

/// A control-plane command, parsed and checked (`<prefix>/cmd/<verb>`).
public enum ControlCommand: Sendable, Equatable {
    /// Switch to shadow or control.
    case mode(GatewayMode)
    /// Retrain now, with optional limits (gradient steps, wall seconds, rows of log).
    case retrain(steps: Int?, seconds: Double?, window: Int?)
    /// Promote the candidate (or a named version) to be served.
    case promote(version: String?)
    /// Serve the previous (or a named) version again.
    case rollback(version: String?)
}

/// A request as received: the verb from the topic, the optional id, and the command or
/// the reason it was refused.
public struct ControlRequest: Sendable {
    /// The verb (last topic level), also the reply topic's last level.
    public var verb: String
    /// The request's `id`, echoed in the reply (any JSON value), or nil.
    public var id: JSONValue?
    /// The parsed command, or why it is invalid.
    public var command: Result<ControlCommand, ControlError>
}

/// Why a control-plane request was refused; the text goes into the reply's `error`.
public struct ControlError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Parses and answers control-plane messages. Pure: no MQTT here.
public struct ControlPlane: Sendable {
    /// The verbs the gateway answers.
    public static let verbs = ["mode", "retrain", "promote", "rollback"]
    /// Keys every command may carry besides its verb's fields: `id` (echoed in the reply).
    /// The signature is not a key of the command: it wraps it (docs/security.md, the envelope).
    static let envelopeKeys: Set<String> = ["id"]

    /// The prefix, e.g. `edgeq/gw1`.
    public let prefix: String
    /// `<prefix>/cmd/` as bytes, for the decision thread's check without allocating.
    let commandHead: [UInt8]

    /// A control plane under `prefix`.
    public init(prefix: String) {
        self.prefix = prefix
        commandHead = Array((prefix + "/cmd/").utf8)
    }

    /// Whether `topic` is `<prefix>/cmd/<verb>` (one non-empty level after `cmd/`). Allocates
    /// nothing: the decision thread asks it for every message.
    public func isCommandTopic(_ topic: String) -> Bool {
        var t = topic
        return t.withUTF8 { bytes -> Bool in
            guard bytes.count > commandHead.count else { return false }
            for i in 0..<commandHead.count where bytes[i] != commandHead[i] { return false }
            for i in commandHead.count..<bytes.count where bytes[i] == UInt8(ascii: "/") { return false }
            return true
        }
    }

    /// The verb of a command topic `<prefix>/cmd/<verb>`, or nil for any other topic.
    public func verb(ofCommandTopic topic: String) -> String? {
        guard isCommandTopic(topic) else { return nil }
        return String(decoding: topic.utf8.dropFirst(commandHead.count), as: UTF8.self)
    }

    /// The `id` of a command object's JSON text, if it is one and has one (to echo it in the
    /// reply to a refused command; nothing else of an unverified command is used).
    public static func requestID(in command: [UInt8]) -> JSONValue? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(command)) as? [String: Any] else { return nil }
        return object["id"].flatMap(JSONValue.init(any:))
    }

    /// `<prefix>/cmd/+`: what the gateway subscribes to.
    public var commandFilter: String { "\(prefix)/cmd/+" }
    /// `<prefix>/status` (retained).
    public var statusTopic: String { "\(prefix)/status" }
    /// `<prefix>/shadow`.
    public var shadowTopic: String { "\(prefix)/shadow" }
    /// `<prefix>/retrain`.
    public var retrainTopic: String { "\(prefix)/retrain" }
    /// `<prefix>/reply/<verb>`.
    public func replyTopic(_ verb: String) -> String { "\(prefix)/reply/\(verb)" }

    /// Parses a message on `<prefix>/cmd/<verb>`; nil when the topic is not a command topic.
    public func parse(topic: String, payload: [UInt8]) -> ControlRequest? {
        let head = prefix + "/cmd/"
        guard topic.hasPrefix(head) else { return nil }
        let verb = String(topic.dropFirst(head.count))
        guard !verb.isEmpty, !verb.contains("/") else { return nil }

        let body: [String: Any]
        if payload.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 10 || $0 == 13 }) {
            body = [:]
        } else {
            let object: Any
            do {
                object = try JSONSerialization.jsonObject(with: Data(payload), options: [.fragmentsAllowed])
            } catch {
                return ControlRequest(verb: verb, id: nil, command: .failure(ControlError("malformed JSON: the payload must be a JSON object such as {\"id\":\"1\"}")))
            }
            guard let dict = object as? [String: Any] else {
                return ControlRequest(verb: verb, id: nil, command: .failure(ControlError("the payload must be a JSON object, not \(type(of: object))")))
            }
            body = dict
        }
        let id = body["id"].flatMap(JSONValue.init(any:))
        return ControlRequest(verb: verb, id: id, command: Self.command(verb: verb, body: body))
    }

    static func command(verb: String, body: [String: Any]) -> Result<ControlCommand, ControlError> {
        func unknownKeys(_ allowed: Set<String>) -> ControlError? {
            let extra = Set(body.keys).subtracting(allowed).subtracting(envelopeKeys).sorted()
            guard !extra.isEmpty else { return nil }
            return ControlError("unknown key\(extra.count > 1 ? "s" : "") \(extra.map { "'\($0)'" }.joined(separator: ", ")) for \(verb); allowed: \((allowed.union(envelopeKeys)).sorted().joined(separator: ", "))")
        }
        func positiveInt(_ key: String) -> Result<Int?, ControlError> {
            guard let v = body[key] else { return .success(nil) }
            guard let n = v as? NSNumber, !isJSONBool(n),
                  n.doubleValue == n.doubleValue.rounded(), n.doubleValue >= 1, n.doubleValue <= 1e9 else {
                return .failure(ControlError("'\(key)' must be a whole number from 1 to 1e9"))
            }
            return .success(n.intValue)
        }
        func version(_ key: String) -> Result<String?, ControlError> {
            guard let v = body[key] else { return .success(nil) }
            if let s = v as? String, !s.isEmpty { return .success(s) }
            if let n = v as? NSNumber, !isJSONBool(n), n.doubleValue == n.doubleValue.rounded(), n.doubleValue >= 0 {
                return .success(String(n.intValue))
            }
            return .failure(ControlError("'\(key)' must be a version number or name"))
        }

        switch verb {
        case "mode":
            if let e = unknownKeys(["mode"]) { return .failure(e) }
            guard let raw = body["mode"] else {
                return .failure(ControlError("'mode' is required: {\"mode\":\"shadow\"} or {\"mode\":\"control\"}"))
            }
            guard let s = raw as? String, let m = GatewayMode(rawValue: s) else {
                return .failure(ControlError("'mode' must be \"shadow\" or \"control\""))
            }
            return .success(.mode(m))
        case "retrain":
            if let e = unknownKeys(["steps", "seconds", "window"]) { return .failure(e) }
            let steps: Int?
            let window: Int?
            switch positiveInt("steps") { case .success(let v): steps = v; case .failure(let e): return .failure(e) }
            switch positiveInt("window") { case .success(let v): window = v; case .failure(let e): return .failure(e) }
            var seconds: Double?
            if let v = body["seconds"] {
                guard let n = v as? NSNumber, !isJSONBool(n), n.doubleValue > 0, n.doubleValue <= 86_400 else {
                    return .failure(ControlError("'seconds' must be a number greater than 0 and at most 86400"))
                }
                seconds = n.doubleValue
            }
            return .success(.retrain(steps: steps, seconds: seconds, window: window))
        case "promote":
            if let e = unknownKeys(["version"]) { return .failure(e) }
            return version("version").map { .promote(version: $0) }
        case "rollback":
            if let e = unknownKeys(["version"]) { return .failure(e) }
            return version("version").map { .rollback(version: $0) }
        default:
            return .failure(ControlError("unknown verb '\(verb)'; known verbs: \(verbs.joined(separator: ", "))"))
        }
    }

    /// The reply payload: `{"id":…, "ok":…, "error":…, …extra}` (id null when absent).
    public static func reply(id: JSONValue?, ok: Bool, error: String? = nil, extra: [String: JSONValue] = [:]) -> [UInt8] {
        var object = extra
        object["id"] = id ?? .null
        object["ok"] = .bool(ok)
        if let error { object["error"] = .string(error) }
        return Array(JSONValue.object(object).jsonText.utf8)
    }
}

/// True when a JSONSerialization number is a JSON boolean. Foundation on Linux has no
/// CFBooleanGetTypeID; JSON booleans are the only numbers it types as `char` ("c").
func isJSONBool(_ n: NSNumber) -> Bool {
    String(cString: n.objCType) == "c"
}
