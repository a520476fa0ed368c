import Foundation

// Payload templates of actuator writes: `{"level":{{value}}}`, `{"id":{{id}},"a":{{action}}}`.

/// A payload template compiled into literal bytes and placeholders.
///
/// Placeholders: `{{value}}` (the write's value), `{{action}}` (the action's index),
/// `{{action_name}}` (its name, as is: put quotes around it for JSON), `{{model}}` (the version of
/// the model whose choice it is, or `null`: a fallback, or no model), and `{{NAME}}` for any
/// signal or named feature (its current value). Numbers are written as integers when whole,
/// else with up to 6 decimals, trailing zeros removed.
struct PayloadTemplate: Sendable {
    enum Part: Sendable { case literal([UInt8]), value, actionIndex, actionName, modelVersion, slot(Int) }
    let parts: [Part]
    /// The slots the placeholders read (computed once: `render`'s callers check them per tick).
    let slots: [Int]
    var usesValue: Bool { parts.contains { if case .value = $0 { return true } else { return false } } }

    init(parts: [Part]) {
        self.parts = parts
        slots = parts.compactMap { if case .slot(let s) = $0 { return s } else { return nil } }
    }

    struct TemplateError: Error { let offset: Int; let message: String }

    static func parse(_ text: String, resolve: (String) -> Int?) -> Result<PayloadTemplate, TemplateError> {
        let s = Array(text.unicodeScalars)
        var parts: [Part] = []
        var literal = ""
        var i = 0
        while i < s.count {
            if s[i] == "{", i + 1 < s.count, s[i + 1] == "{" {
                var j = i + 2
                while j + 1 < s.count, !(s[j] == "}" && s[j + 1] == "}") { j += 1 }
                guard j + 1 < s.count else { return .failure(TemplateError(offset: i, message: "'{{' is not closed by '}}'")) }
                let name = String(String.UnicodeScalarView(s[(i + 2)..<j])).trimmingCharacters(in: .whitespaces)
                if !literal.isEmpty { parts.append(.literal(Array(literal.utf8))); literal = "" }
                switch name {
                case "value": parts.append(.value)
                case "action": parts.append(.actionIndex)
                case "action_name": parts.append(.actionName)
                case "model":
                    guard resolve(name) == nil else {
                        return .failure(TemplateError(offset: i, message: "'{{model}}' is the version of the model that chose the action, and a signal or feature is also named 'model': rename that one to use it in a payload"))
                    }
                    parts.append(.modelVersion)
                default:
                    guard let slot = resolve(name) else {
                        return .failure(TemplateError(offset: i, message: "unknown placeholder '{{\(name)}}' (use value, action, action_name, model, or a signal or feature name)"))
                    }
                    parts.append(.slot(slot))
                }
                i = j + 2
                continue
            }
            literal.unicodeScalars.append(s[i])
            i += 1
        }
        if !literal.isEmpty { parts.append(.literal(Array(literal.utf8))) }
        return .success(PayloadTemplate(parts: parts))
    }

    /// The template filled with zeros and the name "a" (for checking that JSON templates stay JSON).
    func renderSample() -> [UInt8] {
        var out: [UInt8] = []
        let zeros = [Double](repeating: 0, count: 1 + (slots.max() ?? 0))
        zeros.withUnsafeBufferPointer { z in
            if let base = z.baseAddress {
                _ = render(into: &out, value: 0, action: 0, actionName: Array("a".utf8), slots: base)
            }
        }
        return out
    }

    /// Appends the filled payload to `out`; false when a needed number is not finite. `model`:
    /// the version `{{model}}` writes (nil: `null`).
    func render(into out: inout [UInt8], value: Double, action: Int, actionName: [UInt8], model: Int? = nil, slots: UnsafePointer<Double>) -> Bool {
        for p in parts {
            switch p {
            case .literal(let b): out.append(contentsOf: b)
            case .value: guard appendNumber(value, to: &out) else { return false }
            case .actionIndex: _ = appendNumber(Double(action), to: &out)
            case .actionName: out.append(contentsOf: actionName)
            case .modelVersion:
                if let model { _ = appendNumber(Double(model), to: &out) } else { out.append(contentsOf: [110, 117, 108, 108]) }   // null
            case .slot(let s): guard appendNumber(slots[s], to: &out) else { return false }
            }
        }
        return true
    }
}

/// Appends `x` in decimal: a whole number without decimals, else up to 6 decimals with
/// trailing zeros removed. False (nothing appended) when `x` is not finite.
@discardableResult
func appendNumber(_ x: Double, to out: inout [UInt8]) -> Bool {
    guard x.isFinite else { return false }
    if Swift.abs(x) >= 1e15 {
        out.append(contentsOf: Array("\(x)".utf8))  // rare: large values take the general path
        return true
    }
    var v = x
    if v < 0 { out.append(UInt8(ascii: "-")); v = -v }
    var scaled = (v * 1_000_000).rounded()
    if scaled >= 1e21 { scaled = v.rounded() * 1_000_000 }
    let total = UInt64(scaled)
    let whole = total / 1_000_000
    var frac = total % 1_000_000
    if whole == 0 && frac == 0, out.last == UInt8(ascii: "-") { out.removeLast() }
    appendInteger(whole, to: &out)
    if frac != 0 {
        out.append(UInt8(ascii: "."))
        var digits = 6
        while frac % 10 == 0 { frac /= 10; digits -= 1 }
        var buf: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (48, 48, 48, 48, 48, 48)
        withUnsafeMutableBytes(of: &buf) { b in
            var f = frac
            for k in stride(from: digits - 1, through: 0, by: -1) { b[k] = UInt8(48 + f % 10); f /= 10 }
            for k in 0..<digits { out.append(b[k]) }
        }
    }
    return true
}

func appendInteger(_ n: UInt64, to out: inout [UInt8]) {
    if n == 0 { out.append(48); return }
    var buf: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes ≥ 20 digits
    withUnsafeMutableBytes(of: &buf) { b in
        var k = 0
        var m = n
        while m > 0 { b[k] = UInt8(48 + m % 10); m /= 10; k += 1 }
        while k > 0 { k -= 1; out.append(b[k]) }
    }
}
