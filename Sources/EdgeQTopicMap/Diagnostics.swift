// Errors with FILE:LINE:COL, and typed reading of Yams nodes that records every problem
// instead of stopping at the first.
import Foundation
import Yams

/// One problem in a mapping file, at a 1-based line and column.
public struct MappingDiagnostic: Sendable, Equatable, CustomStringConvertible {
    /// The file as given to the loader.
    public let file: String
    /// 1-based line.
    public let line: Int
    /// 1-based column (in Unicode scalars).
    public let column: Int
    /// What is wrong and, where possible, what to write instead.
    public let message: String
    /// `FILE:LINE:COL: message`, the form compilers print.
    public var description: String { "\(file):\(line):\(column): \(message)" }
}

/// Why a mapping file was not loaded.
///
/// `code` says whether the file could not be read (`edgeq check` exits 66) or is invalid
/// (exit 65); `diagnostics` lists every problem found, in file order; fix them and check again.
public struct MappingError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public enum Code: Sendable, Equatable {
        /// The file could not be read (missing, unreadable, not UTF-8).
        case unreadable
        /// The file was read but is not a valid mapping.
        case invalid
    }
    /// Unreadable or invalid.
    public let code: Code
    /// Every problem found, in file order.
    public let diagnostics: [MappingDiagnostic]
    /// The diagnostics, one `FILE:LINE:COL: message` per line.
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// Reads Yams nodes into typed values, recording diagnostics.
final class NodeReader {
    let file: String
    private(set) var diagnostics: [MappingDiagnostic] = []

    init(file: String) { self.file = file }

    func error(line: Int, column: Int, _ message: String) {
        diagnostics.append(MappingDiagnostic(file: file, line: line, column: column, message: message))
    }

    func error(_ node: Node, _ message: String, offset: Int = 0) {
        let m = node.mark
        var col = (m?.column ?? 1) + offset
        if case .scalar(let s) = node, offset > 0, s.style == .singleQuoted || s.style == .doubleQuoted { col += 1 }
        error(line: m?.line ?? 1, column: col, message)
    }

    /// The keys of a mapping, checked against `known` (unknown → "did you mean") and `required`.
    func mapping(_ node: Node, _ what: String, known: [String], required: [String] = []) -> Fields? {
        guard case .mapping(let m) = node else {
            error(node, "\(what) must be a mapping (key: value lines), found \(describe(node))")
            return nil
        }
        var fields = Fields(node: node)
        for (k, v) in m {
            guard case .scalar(let ks) = k else { error(k, "keys must be plain words"); continue }
            let key = ks.string
            if fields.values[key] != nil {
                error(k, "duplicate key '\(key)' in \(what)")
                continue
            }
            guard known.contains(key) else {
                let hint = suggestion(key, known).map { "; did you mean '\($0)'?" } ?? ""
                error(k, "unknown key '\(key)' in \(what)\(hint)")
                continue
            }
            fields.values[key] = v
            fields.keys[key] = k
        }
        for r in required where fields.values[r] == nil {
            error(node, "missing required key '\(r)' in \(what)")
        }
        return fields
    }

    func describe(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case .scalar(let s):
            if s.style == .plain && (s.string.isEmpty || s.string == "~" || s.string == "null") { return "nothing (null)" }
            return "'\(s.string)'"
        }
    }

    func string(_ node: Node, _ what: String) -> String? {
        guard case .scalar(let s) = node, !(s.style == .plain && (s.string.isEmpty || s.string == "~" || s.string == "null")) else {
            error(node, "\(what) must be a text, found \(describe(node))")
            return nil
        }
        return s.string
    }

    /// Whether `node` is the word `none`: a setting turned off (`retrain_every: none`).
    func isNone(_ node: Node) -> Bool {
        if case .scalar(let s) = node, s.string == "none" { return true }
        return false
    }

    /// Whether `node` is written as no value: plain `null`, `~`, `none` or nothing at all.
    func isNull(_ node: Node) -> Bool {
        guard case .scalar(let s) = node, s.style == .plain else { return false }
        return s.string == "null" || s.string == "none" || s.string == "~" || s.string.isEmpty
    }

    func number(_ node: Node, _ what: String) -> Double? {
        if case .scalar(let s) = node, s.style == .plain, let v = Double(s.string.replacingOccurrences(of: "_", with: "")), v.isFinite {
            return v
        }
        error(node, "\(what) must be a number, found \(describe(node))")
        return nil
    }

    func int(_ node: Node, _ what: String, min: Int = Int.min, max: Int = Int.max) -> Int? {
        guard case .scalar(let s) = node, s.style == .plain, let v = Int(s.string.replacingOccurrences(of: "_", with: "")) else {
            error(node, "\(what) must be a whole number, found \(describe(node))")
            return nil
        }
        guard v >= min, v <= max else {
            let range = max == Int.max ? "≥ \(min)" : "in \(min)...\(max)"
            error(node, "\(what) must be \(range), found \(v)")
            return nil
        }
        return v
    }

    func bool(_ node: Node, _ what: String) -> Bool? {
        if case .scalar(let s) = node, s.style == .plain {
            switch s.string {
            case "true", "yes", "on": return true
            case "false", "no", "off": return false
            default: break
            }
        }
        error(node, "\(what) must be true or false, found \(describe(node))")
        return nil
    }

    /// A duration: a number of seconds, or a text with a unit (`500ms`, `30s`, `5m`, `2h`, `7d`).
    /// A duration's value, or nil (no diagnostic: `duration` reports it where it is read).
    func quietDuration(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let v = Double(t), v.isFinite, v > 0 { return v }
        for (u, f) in [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)] where t.hasSuffix(u) {
            if let v = Double(t.dropLast(u.count).trimmingCharacters(in: .whitespaces)), v.isFinite, v > 0 { return v * f }
        }
        return nil
    }

    func duration(_ node: Node, _ what: String) -> Double? {
        if case .scalar(let s) = node, s.style == .plain {
            let t = s.string.trimmingCharacters(in: .whitespaces)
            if let v = Double(t), v.isFinite, v > 0 { return v }
            let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
            for (u, f) in units where t.hasSuffix(u) {
                if let v = Double(t.dropLast(u.count).trimmingCharacters(in: .whitespaces)), v.isFinite, v > 0 { return v * f }
            }
        }
        error(node, "\(what) must be a positive duration (seconds, or e.g. 500ms, 30s, 5m, 2h, 7d), found \(describe(node))")
        return nil
    }

    /// `[min, max]` with min < max.
    func range(_ node: Node, _ what: String) -> ClosedRange<Double>? {
        guard case .sequence(let seq) = node, seq.count == 2 else {
            error(node, "\(what) must be a list of two numbers [min, max], found \(describe(node))")
            return nil
        }
        guard let lo = number(seq[0], "\(what) min"), let hi = number(seq[1], "\(what) max") else { return nil }
        guard lo < hi else {
            error(node, "\(what) [\(fmt(lo)), \(fmt(hi))] is empty: min must be less than max")
            return nil
        }
        return lo...hi
    }

    /// A key that takes one item or a list of them: the list's items, or the node itself.
    func oneOrList(_ node: Node) -> [Node] {
        if case .sequence(let seq) = node { return Array(seq) }
        return [node]
    }

    func list(_ node: Node, _ what: String) -> [Node]? {
        guard case .sequence(let seq) = node else {
            error(node, "\(what) must be a list (lines starting with '- '), found \(describe(node))")
            return nil
        }
        return Array(seq)
    }

    func choice<T: RawRepresentable & CaseIterable>(_ node: Node, _ what: String, _ type: T.Type) -> T? where T.RawValue == String {
        guard let s = string(node, what) else { return nil }
        if let v = T(rawValue: s) { return v }
        let all = T.allCases.map(\.rawValue)
        let hint = suggestion(s, all).map { "; did you mean '\($0)'?" } ?? ""
        error(node, "\(what) must be one of \(all.joined(separator: ", ")), found '\(s)'\(hint)")
        return nil
    }

    func fmt(_ x: Double) -> String { x == x.rounded() && Swift.abs(x) < 1e15 ? String(Int(x)) : String(x) }
}

/// The checked keys of one mapping.
struct Fields {
    let node: Node
    var values: [String: Node] = [:]
    var keys: [String: Node] = [:]
    subscript(_ key: String) -> Node? { values[key] }
}

/// The closest of `candidates` to `word` when it is close enough to be a likely typo.
func suggestion(_ word: String, _ candidates: [String]) -> String? {
    var best: (String, Int)?
    for c in candidates {
        let d = editDistance(word.lowercased(), c.lowercased())
        guard d <= max(1, min(3, c.count / 3)) else { continue }
        if let b = best, b.1 <= d { continue }
        best = (c, d)
    }
    return best?.0
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.unicodeScalars), b = Array(b.unicodeScalars)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count)
    var cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            cur[j] = Swift.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&prev, &cur)
    }
    return prev[b.count]
}
