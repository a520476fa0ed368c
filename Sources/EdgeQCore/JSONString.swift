/// `s` as a JSON string literal, quotes included (RFC 8259): `"`, `\` and control characters
/// escaped (`\n`, `\r`, `\t`, else `\u00XX`), everything else (non-ASCII included) as is, in
/// UTF-8. The one escaper of EdgeQ: the log's export, the control plane's replies, the command
/// envelope, the mapping fingerprint's canonical text and the benchmarks' JSON lines.
public func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}
