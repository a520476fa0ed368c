// The expression language of mapping files (reward, terminal, derived features, `allowed`):
// tokenizer → Pratt parser → syntax tree → closure tree. Evaluation allocates nothing.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A syntax error or an unknown name in an expression, with the 0-based column in the
/// expression text where it was found.
public struct ExpressionError: Error, Sendable, Equatable, CustomStringConvertible {
    /// 0-based offset (in Unicode scalars) of the problem inside the expression text.
    public let offset: Int
    /// What is wrong, for people.
    public let message: String
    /// `column N: message` (1-based).
    public var description: String { "column \(offset + 1): \(message)" }
}

/// The parsed form of an expression, before names are bound to slots.
public indirect enum ExpressionNode: Sendable, Equatable {
    /// A literal (`true` is 1, `false` 0).
    case number(Double)
    /// A signal or feature name, with its 0-based offset in the text.
    case variable(String, offset: Int)
    /// Unary minus.
    case negate(ExpressionNode)
    /// Logical not.
    case not(ExpressionNode)
    /// A binary operator.
    case binary(BinaryOperator, ExpressionNode, ExpressionNode)
    /// A built-in function call.
    case call(Function, [ExpressionNode])

    /// Binary operators, from lowest to highest precedence: `or`; `and`; comparisons; `+ -`; `* /`.
    public enum BinaryOperator: String, Sendable, CaseIterable {
        case or, and
        case less = "<", lessEqual = "<=", greater = ">", greaterEqual = ">=", equal = "==", notEqual = "!="
        case add = "+", subtract = "-", multiply = "*", divide = "/"
    }

    /// Built-in functions and their number of arguments (`min`/`max` take two or more).
    public enum Function: String, Sendable, CaseIterable {
        case abs, min, max, clamp, sqrt, exp, log
        case `if`
        /// Allowed argument counts.
        var arity: ClosedRange<Int> {
            switch self {
            case .abs, .sqrt, .exp, .log: return 1...1
            case .min, .max: return 2...16
            case .clamp, .if: return 3...3
            }
        }
    }

    /// Every variable name used, in order of first use.
    public var variables: [String] {
        var out: [String] = []
        func walk(_ n: ExpressionNode) {
            switch n {
            case .number: break
            case .variable(let name, _): if !out.contains(name) { out.append(name) }
            case .negate(let a), .not(let a): walk(a)
            case .binary(_, let a, let b): walk(a); walk(b)
            case .call(_, let args): args.forEach(walk)
            }
        }
        walk(self)
        return out
    }
}

/// Parses the expression language:
///
///     expr    := expr ('or' | 'and' | '<' | '<=' | '>' | '>=' | '==' | '!=' | '+' | '-' | '*' | '/') expr
///              | 'not' expr | '-' expr | NUMBER | NAME | NAME '(' expr (',' expr)* ')' | '(' expr ')'
///
/// with the usual precedence (`or` < `and` < `not` < comparisons < `+ -` < `* /` < unary minus);
/// comparisons do not chain (`a < b < c` is an error). `true` and `false` are 1 and 0.
public enum ExpressionParser {
    /// Parses `text`, or throws the first error with its column.
    /// - Throws: `ExpressionError` for a syntax error, an unknown function, a wrong argument count,
    ///   or an input longer than 4096 characters or nested deeper than 64 levels.
    public static func parse(_ text: String) throws(ExpressionError) -> ExpressionNode {
        let scalars = Array(text.unicodeScalars)
        guard scalars.count <= 4096 else { throw ExpressionError(offset: 0, message: "expression longer than 4096 characters") }
        var p = Parser(tokens: try tokenize(scalars), end: scalars.count)
        let node = try p.expression(0, depth: 0)
        if let t = p.peek {
            throw ExpressionError(offset: t.offset, message: "unexpected \(t.kind.display) after the end of the expression")
        }
        return node
    }

    enum TokenKind: Equatable {
        case number(Double), name(String), op(String), lparen, rparen, comma
        var display: String {
            switch self {
            case .number(let v): return "number \(v)"
            case .name(let n): return "'\(n)'"
            case .op(let o): return "'\(o)'"
            case .lparen: return "'('"
            case .rparen: return "')'"
            case .comma: return "','"
            }
        }
    }
    struct Token { let kind: TokenKind; let offset: Int }

    static func tokenize(_ s: [Unicode.Scalar]) throws(ExpressionError) -> [Token] {
        var out: [Token] = []
        var i = 0
        func isDigit(_ c: Unicode.Scalar) -> Bool { c >= "0" && c <= "9" }
        func isNameStart(_ c: Unicode.Scalar) -> Bool { (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c == "_" }
        while i < s.count {
            let c = s[i]
            if c == " " || c == "\t" || c == "\n" || c == "\r" { i += 1; continue }
            let start = i
            if isDigit(c) || (c == "." && i + 1 < s.count && isDigit(s[i + 1])) {
                while i < s.count, isDigit(s[i]) || s[i] == "." { i += 1 }
                if i < s.count, s[i] == "e" || s[i] == "E" {
                    var j = i + 1
                    if j < s.count, s[j] == "+" || s[j] == "-" { j += 1 }
                    if j < s.count, isDigit(s[j]) {
                        i = j
                        while i < s.count, isDigit(s[i]) { i += 1 }
                    }
                }
                let text = String(String.UnicodeScalarView(s[start..<i]))
                guard let v = Double(text), v.isFinite else {
                    throw ExpressionError(offset: start, message: "malformed number '\(text)'")
                }
                out.append(Token(kind: .number(v), offset: start))
                continue
            }
            if isNameStart(c) {
                while i < s.count, isNameStart(s[i]) || isDigit(s[i]) { i += 1 }
                let name = String(String.UnicodeScalarView(s[start..<i]))
                switch name {
                case "and", "or", "not": out.append(Token(kind: .op(name), offset: start))
                case "true": out.append(Token(kind: .number(1), offset: start))
                case "false": out.append(Token(kind: .number(0), offset: start))
                default: out.append(Token(kind: .name(name), offset: start))
                }
                continue
            }
            let next: Unicode.Scalar? = i + 1 < s.count ? s[i + 1] : nil
            switch c {
            case "(": out.append(Token(kind: .lparen, offset: i)); i += 1
            case ")": out.append(Token(kind: .rparen, offset: i)); i += 1
            case ",": out.append(Token(kind: .comma, offset: i)); i += 1
            case "+", "-", "*", "/": out.append(Token(kind: .op(String(c)), offset: i)); i += 1
            case "<", ">":
                if next == "=" { out.append(Token(kind: .op(String(c) + "="), offset: i)); i += 2 }
                else { out.append(Token(kind: .op(String(c)), offset: i)); i += 1 }
            case "=", "!":
                guard next == "=" else {
                    let hint = c == "=" ? " (use '==' to compare)" : " (use 'not' or '!=')"
                    throw ExpressionError(offset: i, message: "unexpected character '\(c)'\(hint)")
                }
                out.append(Token(kind: .op(String(c) + "="), offset: i)); i += 2
            default:
                throw ExpressionError(offset: i, message: "unexpected character '\(c)'")
            }
        }
        return out
    }

    struct Parser {
        let tokens: [Token]
        let end: Int
        var pos = 0
        var peek: Token? { pos < tokens.count ? tokens[pos] : nil }

        /// Left binding power of a binary operator token.
        static func binding(_ op: String) -> (Int, ExpressionNode.BinaryOperator)? {
            switch op {
            case "or": return (1, .or)
            case "and": return (2, .and)
            case "<": return (4, .less)
            case "<=": return (4, .lessEqual)
            case ">": return (4, .greater)
            case ">=": return (4, .greaterEqual)
            case "==": return (4, .equal)
            case "!=": return (4, .notEqual)
            case "+": return (5, .add)
            case "-": return (5, .subtract)
            case "*": return (6, .multiply)
            case "/": return (6, .divide)
            default: return nil
            }
        }

        mutating func expression(_ minPower: Int, depth: Int) throws(ExpressionError) -> ExpressionNode {
            guard depth < 64 else {
                throw ExpressionError(offset: peek?.offset ?? end, message: "expression nested deeper than 64 levels")
            }
            var left = try prefix(depth: depth)
            while let t = peek, case .op(let o) = t.kind, let (power, op) = Self.binding(o), power > minPower {
                pos += 1
                let right = try expression(power, depth: depth + 1)
                if power == 4, let n = peek, case .op(let o2) = n.kind, Self.binding(o2)?.0 == 4 {
                    throw ExpressionError(offset: n.offset, message: "comparisons do not chain; write 'a < b and b < c'")
                }
                left = .binary(op, left, right)
            }
            return left
        }

        mutating func prefix(depth: Int) throws(ExpressionError) -> ExpressionNode {
            guard let t = peek else {
                throw ExpressionError(offset: end, message: "expression ends where a value was expected")
            }
            pos += 1
            switch t.kind {
            case .number(let v): return .number(v)
            case .op("-"): return .negate(try expression(6, depth: depth + 1))
            case .op("+"): return try expression(6, depth: depth + 1)
            case .op("not"): return .not(try expression(3, depth: depth + 1))
            case .lparen:
                let inner = try expression(0, depth: depth + 1)
                guard let c = peek, c.kind == .rparen else {
                    throw ExpressionError(offset: peek?.offset ?? end, message: "expected ')' to close the '(' at column \(t.offset + 1)")
                }
                pos += 1
                return inner
            case .name(let name):
                guard let open = peek, open.kind == .lparen else { return .variable(name, offset: t.offset) }
                guard let f = ExpressionNode.Function(rawValue: name) else {
                    let known = ExpressionNode.Function.allCases.map(\.rawValue).joined(separator: ", ")
                    throw ExpressionError(offset: t.offset, message: "unknown function '\(name)' (known: \(known))")
                }
                pos += 1
                var args: [ExpressionNode] = []
                if let c = peek, c.kind == .rparen {
                    pos += 1
                } else {
                    while true {
                        args.append(try expression(0, depth: depth + 1))
                        guard let sep = peek else {
                            throw ExpressionError(offset: end, message: "expected ')' to close the call of '\(name)'")
                        }
                        pos += 1
                        if sep.kind == .rparen { break }
                        guard sep.kind == .comma else {
                            throw ExpressionError(offset: sep.offset, message: "expected ',' or ')' in the call of '\(name)', found \(sep.kind.display)")
                        }
                    }
                }
                guard f.arity.contains(args.count) else {
                    let want = f.arity.count == 1 ? "\(f.arity.lowerBound)" : "\(f.arity.lowerBound) or more"
                    throw ExpressionError(offset: t.offset, message: "'\(name)' takes \(want) argument\(want == "1" ? "" : "s"), got \(args.count)")
                }
                return .call(f, args)
            default:
                throw ExpressionError(offset: t.offset, message: "unexpected \(t.kind.display) where a value was expected")
            }
        }
    }
}

/// An expression compiled to a tree of closures over a slot array (signals, then derived
/// values). Evaluation allocates nothing.
///
/// Semantics: every intermediate result that is not finite (division by zero, `sqrt` of a
/// negative, `log 0`, overflow) becomes NaN and NaN propagates through every operator,
/// comparison, `and`/`or`/`not` and `if` condition, so the final value is NaN exactly when
/// some evaluated step was not finite. `if(c, a, b)` evaluates only the branch taken;
/// `and`/`or` evaluate their right side only when needed. Truth: non-zero is true;
/// comparisons and logic give 1 or 0.
public struct CompiledExpression: Sendable {
    /// The expression's source text.
    public let source: String
    /// Slot indices read by the expression (so callers can check their validity first).
    public let slots: [Int]
    let eval: @Sendable (UnsafePointer<Double>) -> Double

    /// Evaluates over `slots` (indexed as at compile time); NaN means invalid.
    public func evaluate(_ values: UnsafePointer<Double>) -> Double { eval(values) }

    /// Compiles `node`, resolving names with `resolve` (name → slot index).
    /// - Throws: `ExpressionError` at the first name `resolve` does not know.
    public static func compile(
        _ node: ExpressionNode, source: String, resolve: (String) -> Int?,
        suggest: (String) -> String? = { _ in nil }
    ) throws(ExpressionError) -> CompiledExpression {
        var used: [Int] = []
        let root = try build(node, resolve: resolve, suggest: suggest, used: &used)
        return CompiledExpression(source: source, slots: used, eval: root)
    }

    typealias Fn = @Sendable (UnsafePointer<Double>) -> Double

    @inline(__always) static func fin(_ x: Double) -> Double { x.isFinite ? x : .nan }
    @inline(__always) static func truth(_ x: Double) -> Double { x.isNaN ? .nan : (x != 0 ? 1 : 0) }

    static func build(
        _ node: ExpressionNode, resolve: (String) -> Int?, suggest: (String) -> String?, used: inout [Int]
    ) throws(ExpressionError) -> Fn {
        switch node {
        case .number(let v):
            return { _ in v }
        case .variable(let name, let offset):
            guard let slot = resolve(name) else {
                let hint = suggest(name).map { "; did you mean '\($0)'?" } ?? ""
                throw ExpressionError(offset: offset, message: "unknown signal or feature '\(name)'\(hint)")
            }
            if !used.contains(slot) { used.append(slot) }
            return { v in v[slot] }
        case .negate(let a):
            let fa = try build(a, resolve: resolve, suggest: suggest, used: &used)
            return { v in -fa(v) }
        case .not(let a):
            let fa = try build(a, resolve: resolve, suggest: suggest, used: &used)
            return { v in let x = fa(v); return x.isNaN ? .nan : (x == 0 ? 1 : 0) }
        case .binary(let op, let a, let b):
            let fa = try build(a, resolve: resolve, suggest: suggest, used: &used)
            let fb = try build(b, resolve: resolve, suggest: suggest, used: &used)
            switch op {
            case .add: return { v in fin(fa(v) + fb(v)) }
            case .subtract: return { v in fin(fa(v) - fb(v)) }
            case .multiply: return { v in fin(fa(v) * fb(v)) }
            case .divide: return { v in fin(fa(v) / fb(v)) }
            case .less: return { v in compare(fa(v), fb(v)) { $0 < $1 } }
            case .lessEqual: return { v in compare(fa(v), fb(v)) { $0 <= $1 } }
            case .greater: return { v in compare(fa(v), fb(v)) { $0 > $1 } }
            case .greaterEqual: return { v in compare(fa(v), fb(v)) { $0 >= $1 } }
            case .equal: return { v in compare(fa(v), fb(v)) { $0 == $1 } }
            case .notEqual: return { v in compare(fa(v), fb(v)) { $0 != $1 } }
            case .and:
                return { v in
                    let x = truth(fa(v))
                    if x != 1 { return x }  // 0 or NaN
                    return truth(fb(v))
                }
            case .or:
                return { v in
                    let x = truth(fa(v))
                    if x != 0 { return x }  // 1 or NaN
                    return truth(fb(v))
                }
            }
        case .call(let f, let args):
            var fs: [Fn] = []
            for a in args { fs.append(try build(a, resolve: resolve, suggest: suggest, used: &used)) }
            switch f {
            case .abs: let a = fs[0]; return { v in Swift.abs(a(v)) }
            case .sqrt: let a = fs[0]; return { v in fin(a(v).squareRoot()) }
            case .exp: let a = fs[0]; return { v in fin(exp(a(v))) }
            case .log: let a = fs[0]; return { v in fin(log(a(v))) }
            case .min:
                let (a, b) = (fs[0], fs[1])
                if fs.count == 2 { return { v in nanMin(a(v), b(v)) } }
                let all = fs
                return { v in var m = all[0](v); for i in 1..<all.count { m = nanMin(m, all[i](v)) }; return m }
            case .max:
                let (a, b) = (fs[0], fs[1])
                if fs.count == 2 { return { v in nanMax(a(v), b(v)) } }
                let all = fs
                return { v in var m = all[0](v); for i in 1..<all.count { m = nanMax(m, all[i](v)) }; return m }
            case .clamp:
                let (x, lo, hi) = (fs[0], fs[1], fs[2])
                return { v in nanMin(nanMax(x(v), lo(v)), hi(v)) }
            case .if:
                let (c, a, b) = (fs[0], fs[1], fs[2])
                return { v in
                    let t = c(v)
                    if t.isNaN { return .nan }
                    return t != 0 ? a(v) : b(v)
                }
            }
        }
    }

    @inline(__always) static func compare(_ a: Double, _ b: Double, _ op: (Double, Double) -> Bool) -> Double {
        if a.isNaN || b.isNaN { return .nan }
        return op(a, b) ? 1 : 0
    }
    @inline(__always) static func nanMin(_ a: Double, _ b: Double) -> Double {
        if a.isNaN || b.isNaN { return .nan }
        return a < b ? a : b
    }
    @inline(__always) static func nanMax(_ a: Double, _ b: Double) -> Double {
        if a.isNaN || b.isNaN { return .nan }
        return a > b ? a : b
    }
}
