import EdgeQCore
import EdgeQTopicMap
import Foundation
import Testing

/// The test's own expression tree, printer and evaluator: the reference the compiled form is
/// checked against. Written to be obviously correct, not fast.
indirect enum RefExpr {
    case num(Double), v(Int), neg(RefExpr), not(RefExpr), bin(String, RefExpr, RefExpr), call(String, [RefExpr])

    static let names = ["a", "b", "c", "d"]

    /// Precedence: or 1, and 2, not 3, comparisons 4, + - 5, * / 6, unary minus 7, atoms 8.
    var prec: Int {
        switch self {
        case .num, .v, .call: return 8
        case .neg: return 7
        case .not: return 3
        case .bin(let op, _, _):
            switch op {
            case "or": return 1
            case "and": return 2
            case "+", "-": return 5
            case "*", "/": return 6
            default: return 4
            }
        }
    }

    /// Printed with the fewest parentheses the grammar needs.
    var text: String {
        func wrap(_ e: RefExpr, _ need: Bool) -> String { need ? "(\(e.text))" : e.text }
        switch self {
        case .num(let x): return x == x.rounded() ? String(Int(x)) : String(x)
        case .v(let i): return Self.names[i]
        case .neg(let a): return "-" + wrap(a, a.prec < 7)
        case .not(let a): return "not " + wrap(a, a.prec < 3)
        case .bin(let op, let l, let r):
            let p = prec
            let lp = p == 4 ? l.prec <= 4 : l.prec < p
            return "\(wrap(l, lp)) \(op) \(wrap(r, r.prec <= p))"
        case .call(let f, let args): return "\(f)(\(args.map(\.text).joined(separator: ", ")))"
        }
    }

    func eval(_ env: [Double]) -> Double {
        func fin(_ x: Double) -> Double { x.isFinite ? x : .nan }
        func cmp(_ a: Double, _ b: Double, _ r: Bool) -> Double { a.isNaN || b.isNaN ? .nan : (r ? 1 : 0) }
        func truth(_ x: Double) -> Double { x.isNaN ? .nan : (x != 0 ? 1 : 0) }
        switch self {
        case .num(let x): return x
        case .v(let i): return env[i]
        case .neg(let a): return -a.eval(env)
        case .not(let a): let x = a.eval(env); return x.isNaN ? .nan : (x == 0 ? 1 : 0)
        case .bin(let op, let l, let r):
            if op == "and" { let x = truth(l.eval(env)); return x != 1 ? x : truth(r.eval(env)) }
            if op == "or" { let x = truth(l.eval(env)); return x != 0 ? x : truth(r.eval(env)) }
            let a = l.eval(env), b = r.eval(env)
            switch op {
            case "+": return fin(a + b)
            case "-": return fin(a - b)
            case "*": return fin(a * b)
            case "/": return fin(a / b)
            case "<": return cmp(a, b, a < b)
            case "<=": return cmp(a, b, a <= b)
            case ">": return cmp(a, b, a > b)
            case ">=": return cmp(a, b, a >= b)
            case "==": return cmp(a, b, a == b)
            default: return cmp(a, b, a != b)
            }
        case .call(let f, let args):
            let xs = { args.map { $0.eval(env) } }
            switch f {
            case "abs": return Swift.abs(args[0].eval(env))
            case "sqrt": return fin(args[0].eval(env).squareRoot())
            case "exp": return fin(Foundation.exp(args[0].eval(env)))
            case "log": return fin(Foundation.log(args[0].eval(env)))
            case "min": let v = xs(); return v.contains { $0.isNaN } ? .nan : v.min() ?? .nan
            case "max": let v = xs(); return v.contains { $0.isNaN } ? .nan : v.max() ?? .nan
            case "clamp":
                let v = xs()
                if v.contains(where: \.isNaN) { return .nan }
                return Swift.min(Swift.max(v[0], v[1]), v[2])
            default:  // if
                let c = args[0].eval(env)
                if c.isNaN { return .nan }
                return c != 0 ? args[1].eval(env) : args[2].eval(env)
            }
        }
    }

    static func random(_ g: inout SeededGenerator, depth: Int) -> RefExpr {
        let r = Int(g.next() % 100)
        if depth == 0 || r < 25 {
            if g.next() % 2 == 0 { return .v(Int(g.next() % 4)) }
            let choices: [Double] = [0, 1, 2, 0.5, 3, 10, 0.25, 100]
            return .num(choices[Int(g.next() % UInt64(choices.count))])
        }
        if r < 32 { return .neg(random(&g, depth: depth - 1)) }
        if r < 36 { return .not(random(&g, depth: depth - 1)) }
        if r < 80 {
            let ops = ["+", "-", "*", "/", "<", "<=", ">", ">=", "==", "!=", "and", "or"]
            return .bin(ops[Int(g.next() % UInt64(ops.count))], random(&g, depth: depth - 1), random(&g, depth: depth - 1))
        }
        let fs: [(String, Int)] = [("abs", 1), ("sqrt", 1), ("exp", 1), ("log", 1), ("min", 2), ("max", 3), ("clamp", 3), ("if", 3)]
        let (f, n) = fs[Int(g.next() % UInt64(fs.count))]
        return .call(f, (0..<n).map { _ in random(&g, depth: depth - 1) })
    }
}

func compile(_ text: String, names: [String] = RefExpr.names) throws -> CompiledExpression {
    let ast = try ExpressionParser.parse(text)
    return try CompiledExpression.compile(ast, source: text, resolve: { names.firstIndex(of: $0) })
}

func evaluate(_ text: String, _ env: [Double] = [0, 0, 0, 0]) throws -> Double {
    let c = try compile(text)
    return env.withUnsafeBufferPointer { c.evaluate($0.baseAddress!) }
}

@Suite struct ExpressionTests {
    @Test(arguments: [
        ("1 + 2 * 3", 7.0), ("(1 + 2) * 3", 9), ("1 - 2 - 3", -4), ("8 / 4 / 2", 1), ("-2 * 3", -6),
        ("- -2", 2), ("2 * -3", -6), ("1 < 2", 1), ("1 < 2 == 1", .nan), ("not 1 < 0", 1), ("not 0 and 0", 0),
        ("1 or 0 and 0", 1), ("(1 or 0) and 0", 0), ("abs(-3)", 3), ("min(3, 1, 2)", 1), ("max(3, 1)", 3),
        ("clamp(5, 0, 4)", 4), ("clamp(-5, 0, 4)", 0), ("if(1 > 2, 10, 20)", 20), ("sqrt(16)", 4), ("exp(0)", 1),
        ("log(1)", 0), ("1 / 0", .nan), ("0 / 0 > 1", .nan), ("sqrt(-1)", .nan), ("log(0)", .nan), ("exp(1000) * 0", .nan),
        ("if(0, 1 / 0, 5)", 5), ("0 and 1 / 0", 0), ("1 or 1 / 0", 1), ("true + false", 1), ("1e3 + .5", 1000.5),
        ("a + b * c - d", 1 + 2 * 3 - 4),
    ] as [(String, Double)])
    func evaluatesWithPrecedence(text: String, expected: Double) throws {
        if text == "1 < 2 == 1" {
            #expect(throws: ExpressionError.self) { try ExpressionParser.parse(text) }
            return
        }
        let v = try evaluate(text, [1, 2, 3, 4])
        if expected.isNaN { #expect(v.isNaN, "\(text) = \(v)") } else { #expect(v == expected, "\(text) = \(v)") }
    }

    @Test(arguments: [
        ("1 +", 3, "expression ends where a value was expected"),
        ("(1 + 2", 6, "expected ')' to close the '(' at column 1"),
        ("1 + * 2", 4, "unexpected '*' where a value was expected"),
        ("a = 1", 2, "use '==' to compare"),
        ("a ! b", 2, "use 'not' or '!='"),
        ("foo(1)", 0, "unknown function 'foo'"),
        ("min(1)", 0, "'min' takes 2 or more arguments, got 1"),
        ("clamp(1, 2)", 0, "'clamp' takes 3 arguments, got 2"),
        ("1 2", 2, "unexpected number 2.0 after the end of the expression"),
        ("a < b < c", 6, "comparisons do not chain"),
        ("max(1, 2", 8, "expected ')' to close the call of 'max'"),
        ("1.2.3", 0, "malformed number"),
        ("a # b", 2, "unexpected character '#'"),
        ("", 0, "expression ends where a value was expected"),
    ] as [(String, Int, String)])
    func syntaxErrorsPointToTheColumn(text: String, offset: Int, message: String) {
        do {
            _ = try ExpressionParser.parse(text)
            Issue.record("\(text) parsed")
        } catch {
            #expect(error.offset == offset, "\(text): \(error)")
            #expect(error.message.contains(message), "\(text): \(error)")
        }
    }

    @Test func unknownNameIsReportedWithItsOffset() {
        do {
            _ = try compile("a + zz * 2")
            Issue.record("compiled")
        } catch let e as ExpressionError {
            #expect(e.offset == 4)
            #expect(e.message.contains("'zz'"))
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func slotsListTheNamesRead() throws {
        let c = try compile("if(d > 0, b, b + a)")
        #expect(Set(c.slots) == [3, 1, 0])
    }

    /// 3,000 random expressions: printed, parsed and compiled by EdgeQ, evaluated on random
    /// variables (with zeros, so divisions by zero occur), against the reference evaluator.
    @Test func randomExpressionsMatchTheReference() throws {
        var g = SeededGenerator(seed: 42)
        var nanCount = 0
        for _ in 0..<3000 {
            let e = RefExpr.random(&g, depth: 5)
            let text = e.text
            let c = try compile(text)
            for _ in 0..<4 {
                let env = (0..<4).map { _ -> Double in
                    let r = g.next() % 5
                    return r == 0 ? 0 : (g.nextUnit() * 20 - 10).rounded() / 2
                }
                let want = e.eval(env)
                let got = env.withUnsafeBufferPointer { c.evaluate($0.baseAddress!) }
                if want.isNaN {
                    nanCount += 1
                    #expect(got.isNaN, "\(text) with \(env): got \(got), want NaN")
                } else {
                    #expect(got == want, "\(text) with \(env): got \(got), want \(want)")
                }
                if !(got.isNaN == want.isNaN && (got.isNaN || got == want)) { return }
            }
        }
        #expect(nanCount > 0, "the random expressions never produced an invalid value")
    }
}
