// The choices a drafted mapping leaves open: `TODO` values (docs/mapping.md, "Drafting a
// mapping from live traffic").
import Foundation
import Yams

/// Finds the `TODO` values of a mapping file: the choices `edgeq init` could not make from the
/// traffic it saw (the reward, the actions, …), each written as the plain value `TODO` with a
/// comment on the same line that says what to write.
///
/// A mapping with a `TODO` value is not ready: `edgeq check` and `edgeq run` report each one
/// (`FILE:LINE:COL: KEY is still TODO: <the comment>`) and refuse the file until it is replaced.
/// Only a plain (unquoted) scalar that is exactly `TODO` counts; `'TODO'` in quotes and the word
/// in a comment do not.
public enum DraftTodos {
    /// One `TODO` value.
    public struct Marker: Sendable, Equatable {
        /// Where the value is (1-based line and column).
        public let line: Int
        /// 1-based column of the `TODO`.
        public let column: Int
        /// The key path of the value, e.g. `reward` or `actions.list`.
        public let key: String
        /// The comment after it on the same line (what to write), or empty.
        public let hint: String
    }

    /// The `TODO` values of `yaml`, in file order; empty when there are none or when the text is
    /// not YAML (the loader then reports the syntax error).
    public static func markers(yaml: String) -> [Marker] {
        guard yaml.contains("TODO"), let root = try? Yams.compose(yaml: yaml) else { return [] }
        let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var found: [Marker] = []
        func walk(_ node: Node, _ key: String) {
            switch node {
            case .scalar(let s):
                guard s.style == .plain, s.string == "TODO", let mark = node.mark else { return }
                let text = mark.line - 1 < lines.count ? lines[mark.line - 1] : ""
                found.append(Marker(line: mark.line, column: mark.column, key: key.isEmpty ? "the document" : key,
                                    hint: comment(in: text, after: mark.column)))
            case .mapping(let m):
                for (k, v) in m {
                    let name = k.string ?? "?"
                    walk(v, key.isEmpty ? name : key + "." + name)
                }
            case .sequence(let s):
                for (i, v) in s.enumerated() { walk(v, "\(key)[\(i)]") }
            default:
                return
            }
        }
        walk(root, "")
        return found.sorted { ($0.line, $0.column) < ($1.line, $1.column) }
    }

    /// The `TODO` values of `yaml` as diagnostics of `file`: `KEY is still TODO: <hint>`.
    public static func diagnostics(yaml: String, file: String) -> [MappingDiagnostic] {
        markers(yaml: yaml).map { m in
            let what = m.hint.isEmpty ? "a choice the draft could not make: replace TODO with a value (docs/mapping.md)" : m.hint
            return MappingDiagnostic(file: file, line: m.line, column: m.column, message: "\(m.key) is still TODO: \(what)")
        }
    }

    /// The text of the comment that follows column `column` (1-based) of `line`, without `#`.
    static func comment(in line: String, after column: Int) -> String {
        let scalars = Array(line.unicodeScalars)
        var i = max(0, column - 1)
        while i < scalars.count {
            if scalars[i] == "#", i > 0, scalars[i - 1] == " " || scalars[i - 1] == "\t" {
                return String(String.UnicodeScalarView(scalars[(i + 1)...])).trimmingCharacters(in: .whitespaces)
            }
            i += 1
        }
        return ""
    }
}
