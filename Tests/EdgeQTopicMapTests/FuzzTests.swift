import EdgeQCore
import EdgeQTopicMap
import Foundation
import Testing

/// Random and mutated inputs to the YAML loader, the expression parser and the payload
/// decoder: nothing may crash or hang, and every rejection must say why. Seeded, with a
/// bounded number of iterations (a few seconds in all).
@Suite struct FuzzTests {
    static func mutate(_ bytes: [UInt8], _ g: inout SeededGenerator, alphabet: [UInt8]) -> [UInt8] {
        var b = bytes
        let edits = 1 + Int(g.next() % 4)
        for _ in 0..<edits {
            let pos = b.isEmpty ? 0 : Int(g.next() % UInt64(b.count))
            switch g.next() % 6 {
            case 0: if !b.isEmpty { b.remove(at: pos) }
            case 1: b.insert(alphabet[Int(g.next() % UInt64(alphabet.count))], at: pos)
            case 2: if !b.isEmpty { b[pos] = alphabet[Int(g.next() % UInt64(alphabet.count))] }
            case 3:  // duplicate a slice
                let len = min(b.count - pos, Int(g.next() % 40))
                b.insert(contentsOf: b[pos..<(pos + len)], at: pos)
            case 4:  // delete a slice
                let len = min(b.count - pos, Int(g.next() % 40))
                b.removeSubrange(pos..<(pos + len))
            default: b.insert(UInt8(truncatingIfNeeded: g.next()), at: pos)
            }
        }
        return b
    }

    @Test func mutatedMappingFilesNeverCrashTheLoader() throws {
        var g = SeededGenerator(seed: 7)
        let seeds = try Repo.topicFiles.map { try String(contentsOfFile: $0, encoding: .utf8) }
        let alphabet = Array(" \n:-[]{}#'\",.+/|>&*!%@`0123456789abcxyz_".utf8)
        var accepted = 0, rejected = 0
        for i in 0..<400 {
            let seed = Array(seeds[i % seeds.count].utf8)
            let text = String(decoding: Self.mutate(seed, &g, alphabet: alphabet), as: UTF8.self)
            do {
                let m = try TopicMap.parse(yaml: text, file: "f.yaml")
                #expect(m.stateWidth > 0)
                accepted += 1
            } catch {
                #expect(!error.diagnostics.isEmpty)
                for d in error.diagnostics { #expect(d.line >= 1 && d.column >= 1 && !d.message.isEmpty) }
                rejected += 1
            }
        }
        #expect(accepted > 0 && rejected > 0, "accepted \(accepted), rejected \(rejected)")
    }

    @Test func randomTextNeverCrashesTheExpressionParser() {
        var g = SeededGenerator(seed: 11)
        let pieces = ["a", "b", "1", "2.5", "+", "-", "*", "/", "(", ")", ",", "<", "<=", "==", "!=", "and", "or", "not",
                      "min", "max", "clamp", "if", "abs", "sqrt", " ", "1e9", "=", "!", ".", "e", "$"]
        for _ in 0..<5000 {
            let n = Int(g.next() % 16)
            let text = (0..<n).map { _ in pieces[Int(g.next() % UInt64(pieces.count))] }.joined(separator: g.next() % 2 == 0 ? " " : "")
            do {
                let ast = try ExpressionParser.parse(text)
                let c = try CompiledExpression.compile(ast, source: text, resolve: { ["a": 0, "b": 1][$0] })
                let v = [0.0, 3].withUnsafeBufferPointer { c.evaluate($0.baseAddress!) }
                #expect(v.isNaN || v.isFinite)
            } catch {
                #expect(error.offset >= 0 && error.offset <= text.unicodeScalars.count, "\(text): \(error)")
            }
        }
        // Deep nesting is an error, not a stack overflow.
        let deep = String(repeating: "(", count: 10_000) + "1" + String(repeating: ")", count: 10_000)
        #expect(throws: ExpressionError.self) { try ExpressionParser.parse(deep) }
        let longNeg = String(repeating: "-", count: 100_000) + "1"
        #expect(throws: ExpressionError.self) { try ExpressionParser.parse(longNeg) }
    }

    @Test func randomAndMutatedPayloadsNeverCrashTheDecoder() throws {
        let map = try TopicMap.parse(yaml: decodeMapping)
        var table = SignalTable(for: map)
        var g = SeededGenerator(seed: 13)
        let good = Array(#"{"temp": 21.5, "a":{"b":[0,{"c":-3e2}]}, "on": true, "mode":"hand"}"#.utf8)
        let alphabet = Array(#"{}[]":,0123456789.eE+-tfnul \"#.utf8) + [0x5C, 0x00, 0xFF]
        var total = 0
        for i in 0..<20_000 {
            let payload: [UInt8]
            if i % 4 == 0 {
                payload = (0..<Int(g.next() % 80)).map { _ in UInt8(truncatingIfNeeded: g.next()) }
            } else {
                payload = Self.mutate(good, &g, alphabet: alphabet)
            }
            let topic = ["s/json", "s/raw", "s/flag", "dev/9/v", "s/word"][i % 5]
            payload.withUnsafeBytes { _ = map.decode(topic: topic, payload: $0, time: UInt64(i), into: &table) }
            total += 1
            for s in 0..<map.signals.count {
                switch table.status(of: s) {
                case .valid: #expect(table.values[s].isFinite)
                case .invalid: #expect(table.values[s].isNaN)
                case .missing: break
                case .stale: Issue.record("signal \(s) stale: no topic message marks a signal stale")
                }
            }
        }
        let rejected = DecodeFailure.allCases.reduce(0) { $0 + table.count($1) }
        #expect(rejected > 0 && total == 20_000)
        // Very deep nesting is rejected without exhausting the stack.
        let deep = Array(String(repeating: "[", count: 200_000).utf8)
        let big = try TopicMap.parse(yaml: decodeMapping.replacingOccurrences(of: "max_payload: 256", with: "max_payload: 1000000"))
        var t2 = SignalTable(for: big)
        deep.withUnsafeBytes { _ = big.decode(topic: "s/json", payload: $0, time: 1, into: &t2) }
        #expect(t2.status(of: 0) == .invalid(.invalidJSON))
    }
}
