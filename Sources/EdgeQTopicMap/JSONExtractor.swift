// A one-pass, allocation-free JSON scanner that validates a payload and captures the values
// at a fixed set of paths (compiled into a trie once, when the mapping file is loaded).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One step of a JSON path: an object key or an array index.
public enum JSONPathElement: Sendable, Hashable, CustomStringConvertible {
    case key(String)
    case index(Int)
    /// `.key` or `[index]`.
    public var description: String {
        switch self {
        case .key(let k): return ".\(k)"
        case .index(let i): return "[\(i)]"
        }
    }

    /// Parses `a.b[2].c` (keys are letters, digits, `_`, `-`, `$`, `@`, `:`; `[n]` indexes an array).
    /// Returns nil with the 0-based offset of the first bad character.
    public static func parsePath(_ text: String) -> Result<[JSONPathElement], PathError> {
        let s = Array(text.utf8)
        var out: [JSONPathElement] = []
        var i = 0
        func keyByte(_ c: UInt8) -> Bool {
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") || c == UInt8(ascii: "$")
                || c == UInt8(ascii: "@") || c == UInt8(ascii: ":") || c >= 0x80
        }
        if s.isEmpty { return .failure(PathError(offset: 0, message: "empty JSON path")) }
        var expectKey = true
        while i < s.count {
            if s[i] == UInt8(ascii: "[") {
                var j = i + 1
                var n = 0
                while j < s.count, s[j] >= 0x30, s[j] <= 0x39, n < 1_000_000 { n = n * 10 + Int(s[j] - 0x30); j += 1 }
                guard j > i + 1, j < s.count, s[j] == UInt8(ascii: "]") else {
                    return .failure(PathError(offset: i, message: "expected an array index like [0]"))
                }
                out.append(.index(n))
                i = j + 1
                expectKey = false
                continue
            }
            if !expectKey {
                guard s[i] == UInt8(ascii: ".") else {
                    return .failure(PathError(offset: i, message: "expected '.' or '[' in the JSON path"))
                }
                i += 1
            }
            let start = i
            while i < s.count, keyByte(s[i]) { i += 1 }
            guard i > start else {
                return .failure(PathError(offset: i, message: "expected a key name in the JSON path"))
            }
            out.append(.key(String(decoding: s[start..<i], as: UTF8.self)))
            expectKey = false
        }
        return .success(out)
    }

    /// A malformed JSON path.
    public struct PathError: Error, Sendable { public let offset: Int; public let message: String }
}

/// What the scanner found at one captured path.
public struct JSONCapture: Sendable {
    /// The kind of JSON value found.
    public enum Kind: UInt8, Sendable { case missing, number, bool, string, null, container, badNumber }
    /// What was found.
    public var kind: Kind = .missing
    /// The number (`.number`, or 0/1 for `.bool`).
    public var number: Double = 0
    /// Byte range of a string's contents (between the quotes, escapes not decoded).
    public var start: Int = 0
    /// End of the string's contents (the closing quote's offset).
    public var end: Int = 0
    /// True when the string contains escapes.
    public var escaped = false
    /// Nothing found yet.
    public init() {}
}

/// A compiled set of JSON paths. `extract` validates the whole payload as JSON (RFC 8259,
/// nesting up to 64 levels) and records the value found at each path, in one pass, without
/// allocating.
public struct JSONExtractor: Sendable {
    struct Node: Sendable {
        var keys: [([UInt8], Int)] = []
        var indexes: [(Int, Int)] = []
        var captures: [Int] = []
    }
    var nodes: [Node] = [Node()]
    /// Number of capture slots (one per path given to `init`).
    public let count: Int

    /// Compiles `paths`; capture `i` receives the value at `paths[i]`.
    public init(paths: [[JSONPathElement]]) {
        count = paths.count
        for (ci, path) in paths.enumerated() {
            var n = 0
            for el in path {
                switch el {
                case .key(let k):
                    let b = Array(k.utf8)
                    if let c = nodes[n].keys.first(where: { $0.0 == b }) { n = c.1 } else {
                        nodes.append(Node()); nodes[n].keys.append((b, nodes.count - 1)); n = nodes.count - 1
                    }
                case .index(let i):
                    if let c = nodes[n].indexes.first(where: { $0.0 == i }) { n = c.1 } else {
                        nodes.append(Node()); nodes[n].indexes.append((i, nodes.count - 1)); n = nodes.count - 1
                    }
                }
            }
            nodes[n].captures.append(ci)
        }
        // Flatten the trie so that scanning touches no Swift arrays of arrays (no reference
        // counting per key): node i starts at table[offsets[i]] with
        // [nKeys, nIndexes, nCaptures, nKeys × (byteOffset, length, child), nIndexes × (index, child), captures…].
        var table: [Int] = []
        var offsets: [Int] = []
        var bytes: [UInt8] = []
        for node in nodes {
            offsets.append(table.count)
            table += [node.keys.count, node.indexes.count, node.captures.count]
            for (k, c) in node.keys { table += [bytes.count, k.count, c]; bytes += k }
            for (i, c) in node.indexes { table += [i, c] }
            table += node.captures
        }
        self.table = table
        self.offsets = offsets
        self.keyBytes = bytes.isEmpty ? [0] : bytes
    }
    let table: [Int]
    let offsets: [Int]
    let keyBytes: [UInt8]

    /// What `scan` found.
    public enum Outcome: Sendable, Equatable {
        /// Valid JSON; the captures hold what was found.
        case valid
        /// Not valid JSON (RFC 8259), or nested deeper than 64 levels.
        case invalid
        /// An object names the same key twice (at any depth; found before any syntax error).
        /// RFC 8259 leaves the meaning of such an object open (parsers take the first, the last,
        /// or fail), so its values are not taken. Keys are compared as written: `"a"` and
        /// `"\u0061"` differ. Exact for keys the mapping reads and for objects whose keys fit
        /// the scan's key stack (128 keys open at once); beyond that, a repeat of a key the
        /// mapping does not read is searched within a work budget and may go unnoticed.
        case duplicateKey
    }

    /// Scans `payload`; fills `captures[0..<count]` (reset to `.missing` first).
    /// - Returns: false when the payload is not valid JSON or names a key twice in one object
    ///   (captures are then meaningless); `scan` says which.
    public func extract(_ payload: UnsafeRawBufferPointer, into captures: UnsafeMutablePointer<JSONCapture>) -> Bool {
        scan(payload, into: captures) == .valid
    }

    /// Scans `payload` like `extract` and says why it was not taken. Allocates nothing.
    public func scan(_ payload: UnsafeRawBufferPointer, into captures: UnsafeMutablePointer<JSONCapture>) -> Outcome {
        for i in 0..<count { captures[i] = JSONCapture() }
        guard let base = payload.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return .invalid }
        // The keys of the objects open during the scan, for the duplicate check: 1 KiB, which
        // withUnsafeTemporaryAllocation always places on the stack. Above 1,024 bytes the standard
        // library asks the C library for the thread's stack bounds first (pthread_getattr_np,
        // which mallocs on glibc): 4 KiB here cost one heap allocation per message
        // (`edgeq bench decode`'s allocs_per_message, 2026-12-03).
        return withUnsafeTemporaryAllocation(of: UInt64.self, capacity: Self.keyStackCapacity) { keys in
            table.withUnsafeBufferPointer { table in
                offsets.withUnsafeBufferPointer { offsets in
                    keyBytes.withUnsafeBufferPointer { keyBytes in
                        var s = Scanner(p: base, n: payload.count, table: table, offsets: offsets, keyBytes: keyBytes,
                                        captures: captures, keys: keys)
                        s.skipWS()
                        guard s.value(node: 0, depth: 0) else { return s.duplicate ? .duplicateKey : .invalid }
                        s.skipWS()
                        return s.i == s.n ? .valid : .invalid
                    }
                }
            }
        }
    }

    /// Keys remembered at once (over all open objects) for the exact duplicate check. The key
    /// stack is at most 1,024 bytes: up to that size Swift's `withUnsafeTemporaryAllocation`
    /// always uses the stack; above it, it first asks glibc for the thread's stack bounds, which
    /// mallocs once per scan (measured: 129 keys, 1 allocation per message; 128 keys, none).
    public static let keyStackCapacity = 128

    struct Scanner {
        let p: UnsafePointer<UInt8>
        let n: Int
        let table: UnsafeBufferPointer<Int>
        let offsets: UnsafeBufferPointer<Int>
        let keyBytes: UnsafeBufferPointer<UInt8>
        let captures: UnsafeMutablePointer<JSONCapture>
        var i = 0
        /// Set when the scan stopped at a key named twice in one object.
        var duplicate = false
        /// Off while re-scanning an object's earlier members (they were checked already).
        var checkDuplicates = true
        /// Bytes that duplicate checks of keys the mapping does not read may still re-scan.
        var rescanBudget: Int
        /// The keys of the open objects, innermost last: `start << 32 | length` (offsets in `p`).
        let keys: UnsafeMutableBufferPointer<UInt64>
        var keyTop = 0

        init(p: UnsafePointer<UInt8>, n: Int, table: UnsafeBufferPointer<Int>, offsets: UnsafeBufferPointer<Int>,
             keyBytes: UnsafeBufferPointer<UInt8>, captures: UnsafeMutablePointer<JSONCapture>,
             keys: UnsafeMutableBufferPointer<UInt64>) {
            self.p = p; self.n = n; self.table = table; self.offsets = offsets; self.keyBytes = keyBytes; self.captures = captures
            self.keys = keys
            rescanBudget = 8 * n + 4096
        }

        /// True when one of `keys[from..<keyTop]` is the key `p[keyStart..<keyEnd]`.
        func storedKeyMatches(from: Int, keyStart: Int, keyEnd: Int) -> Bool {
            let len = keyEnd - keyStart
            for k in from..<keyTop {
                let entry = keys[k]
                guard Int(entry & 0xFFFF_FFFF) == len else { continue }
                let s = Int(entry >> 32)
                var same = true
                for j in 0..<len where p[s + j] != p[keyStart + j] { same = false; break }
                if same { return true }
            }
            return false
        }

        /// Sets bit `bit` (0..<256) of `set`; returns whether it was set already.
        @inline(__always) static func testAndSet(_ set: inout (UInt64, UInt64, UInt64, UInt64), _ bit: Int) -> Bool {
            let word = UInt64(1) << UInt64(bit & 63)
            let was: Bool
            switch bit >> 6 {
            case 0: was = set.0 & word != 0; set.0 |= word
            case 1: was = set.1 & word != 0; set.1 |= word
            case 2: was = set.2 & word != 0; set.2 |= word
            default: was = set.3 & word != 0; set.3 |= word
            }
            return was
        }

        @inline(__always) mutating func skipWS() {
            while i < n {
                let c = p[i]
                if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i += 1 } else { break }
            }
        }

        @inline(__always) func capture(_ node: Int, _ f: (inout JSONCapture) -> Void) {
            if node < 0 { return }
            let o = offsets[node]
            let start = o + 3 + 3 * table[o] + 2 * table[o + 1]
            for k in start..<(start + table[o + 2]) { f(&captures[table[k]]) }
        }

        /// Parses one value at `i`; `node` is the trie node for this position or -1.
        mutating func value(node: Int, depth: Int) -> Bool {
            guard i < n, depth <= 64 else { return false }
            switch p[i] {
            case UInt8(ascii: "{"):
                capture(node) { $0.kind = .container }
                let objectStart = i
                i += 1
                skipWS()
                if i < n, p[i] == UInt8(ascii: "}") { i += 1; return true }
                // Duplicate keys, without allocating (two 256-bit sets per object on the stack, and
                // the scan's key stack):
                // - a key the mapping reads (a trie child) is checked exactly by its position in the
                //   node's key list;
                // - any other key goes through a filter of key hashes; on a hit it is compared with
                //   the object's earlier keys on the key stack (exact), or, when the key stack was
                //   full (over 128 keys open at once), by scanning the object again from its start
                //   within a budget of rescanned bytes per payload (`rescanBudget`), so that an
                //   object of thousands of members cannot make a scan quadratic.
                var readSeen: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
                var hashSeen: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
                let keyBase = keyTop
                var allStored = true
                while true {
                    skipWS()
                    guard i < n, p[i] == UInt8(ascii: "\"") else { return false }
                    let ks = i + 1
                    guard let (ke, _) = string() else { return false }
                    var child = -1
                    var position = -1
                    if node >= 0 {
                        let o = offsets[node]
                        let len = ke - ks
                        var e = o + 3
                        for k in 0..<table[o] {
                            if table[e + 1] == len {
                                let kb = table[e]
                                var same = true
                                for j in 0..<len where keyBytes[kb + j] != p[ks + j] { same = false; break }
                                if same { child = table[e + 2]; position = k; break }
                            }
                            e += 3
                        }
                    }
                    if checkDuplicates {
                        var repeated = false
                        if position >= 0 && position < 256 {
                            repeated = Self.testAndSet(&readSeen, position)
                        } else if Self.testAndSet(&hashSeen, Self.keyHash(p + ks, ke - ks)) {
                            if allStored {
                                repeated = storedKeyMatches(from: keyBase, keyStart: ks, keyEnd: ke)
                            } else if position >= 0 {
                                // A key the mapping reads (beyond 256 in its node): at most one
                                // rescan per such key, since a second sighting ends the scan.
                                repeated = keyAppearsEarlier(objectStart: objectStart, keyStart: ks, keyEnd: ke)
                            } else if rescanBudget >= ks - objectStart {
                                rescanBudget -= ks - objectStart
                                repeated = keyAppearsEarlier(objectStart: objectStart, keyStart: ks, keyEnd: ke)
                            }
                        }
                        if repeated {
                            duplicate = true
                            return false
                        }
                        if allStored {
                            if keyTop < keys.count {
                                keys[keyTop] = UInt64(ks) << 32 | UInt64(ke - ks)
                                keyTop += 1
                            } else {
                                allStored = false
                            }
                        }
                    }
                    skipWS()
                    guard i < n, p[i] == UInt8(ascii: ":") else { return false }
                    i += 1
                    skipWS()
                    guard value(node: child, depth: depth + 1) else { return false }
                    skipWS()
                    guard i < n else { return false }
                    if p[i] == UInt8(ascii: ",") { i += 1; continue }
                    if p[i] == UInt8(ascii: "}") { i += 1; keyTop = keyBase; return true }
                    return false
                }
            case UInt8(ascii: "["):
                capture(node) { $0.kind = .container }
                i += 1
                skipWS()
                if i < n, p[i] == UInt8(ascii: "]") { i += 1; return true }
                var index = 0
                while true {
                    skipWS()
                    var child = -1
                    if node >= 0 {
                        let o = offsets[node]
                        var e = o + 3 + 3 * table[o]
                        for _ in 0..<table[o + 1] {
                            if table[e] == index { child = table[e + 1]; break }
                            e += 2
                        }
                    }
                    guard value(node: child, depth: depth + 1) else { return false }
                    index += 1
                    skipWS()
                    guard i < n else { return false }
                    if p[i] == UInt8(ascii: ",") { i += 1; continue }
                    if p[i] == UInt8(ascii: "]") { i += 1; return true }
                    return false
                }
            case UInt8(ascii: "\""):
                let s = i + 1
                guard let (e, escaped) = string() else { return false }
                capture(node) { $0.kind = .string; $0.start = s; $0.end = e; $0.escaped = escaped }
                return true
            case UInt8(ascii: "t"):
                guard literal("true") else { return false }
                capture(node) { $0.kind = .bool; $0.number = 1 }
                return true
            case UInt8(ascii: "f"):
                guard literal("false") else { return false }
                capture(node) { $0.kind = .bool; $0.number = 0 }
                return true
            case UInt8(ascii: "n"):
                guard literal("null") else { return false }
                capture(node) { $0.kind = .null }
                return true
            default:
                // One pass: the longest JSON number here; whatever follows is checked by the caller
                // (a delimiter in a container, the end at the top level).
                guard let (v, used) = NumberParser.parseJSONPrefix(p + i, n - i) else { return false }
                i += used
                capture(node) { $0.kind = .number; $0.number = v }
                return true
            }
        }

        /// An 8-bit hash of a key's bytes (FNV-1a folded), for the duplicate filter.
        @inline(__always) static func keyHash(_ k: UnsafePointer<UInt8>, _ len: Int) -> Int {
            var h: UInt32 = 2_166_136_261
            for j in 0..<len { h = (h ^ UInt32(k[j])) &* 16_777_619 }
            return Int((h ^ (h >> 8) ^ (h >> 16) ^ (h >> 24)) & 0xFF)
        }

        /// True when the object starting at `objectStart` (its `{`, already scanned as valid up
        /// to `keyStart`) names the key `p[keyStart..<keyEnd]` before `keyStart`. Re-scans the
        /// object's earlier members with a scanner that captures nothing.
        func keyAppearsEarlier(objectStart: Int, keyStart: Int, keyEnd: Int) -> Bool {
            var r = self
            r.i = objectStart + 1
            r.checkDuplicates = false
            let len = keyEnd - keyStart
            while true {
                r.skipWS()
                guard r.i < keyStart - 1, p[r.i] == UInt8(ascii: "\"") else { return false }
                let s = r.i + 1
                guard let (e, _) = r.string() else { return false }
                if e - s == len {
                    var same = true
                    for j in 0..<len where p[s + j] != p[keyStart + j] { same = false; break }
                    if same { return true }
                }
                r.skipWS()
                guard r.i < n, p[r.i] == UInt8(ascii: ":") else { return false }
                r.i += 1
                r.skipWS()
                // Earlier members were valid (and free of duplicates) when first scanned; scan the
                // value again without captures (node -1) to reach the next key.
                guard r.value(node: -1, depth: 1) else { return false }
                r.skipWS()
                guard r.i < n, p[r.i] == UInt8(ascii: ",") else { return false }
                r.i += 1
            }
        }

        mutating func literal(_ word: StaticString) -> Bool {
            let len = word.utf8CodeUnitCount
            guard i + len <= n else { return false }
            let w = word.utf8Start
            for j in 0..<len where p[i + j] != w[j] { return false }
            i += len
            return true
        }

        /// Scans a string starting at the opening quote; returns the end offset of its contents
        /// (the closing quote's offset) and whether it had escapes; `i` ends after the quote.
        mutating func string() -> (Int, Bool)? {
            i += 1
            var escaped = false
            while i < n {
                let c = p[i]
                if c == UInt8(ascii: "\"") { let e = i; i += 1; return (e, escaped) }
                if c < 0x20 { return nil }
                if c == UInt8(ascii: "\\") {
                    escaped = true
                    guard i + 1 < n else { return nil }
                    switch p[i + 1] {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                         UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                        i += 2
                    case UInt8(ascii: "u"):
                        guard i + 6 <= n else { return nil }
                        for j in 2..<6 {
                            let h = p[i + j]
                            let hex = (h >= 0x30 && h <= 0x39) || (h >= 0x41 && h <= 0x46) || (h >= 0x61 && h <= 0x66)
                            if !hex { return nil }
                        }
                        i += 6
                    default: return nil
                    }
                    continue
                }
                i += 1
            }
            return nil
        }
    }
}

/// Decimal number parsing without allocation.
enum NumberParser {
    /// Exact powers of ten (a literal, so the compiler lays it out statically).
    static let pow10: [Double] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                  1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]

    /// Parses a whole JSON number in `p[0..<n]`; nil when malformed or followed by anything.
    static func parseJSON(_ p: UnsafePointer<UInt8>, _ n: Int) -> Double? {
        guard let (v, used) = parseJSONPrefix(p, n), used == n else { return nil }
        return v
    }

    /// Parses the JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`) at the start of
    /// `p[0..<n]` and returns it with the bytes used; nil when malformed (including a leading
    /// zero followed by a digit). Overflow gives ±infinity (the caller rejects it as non-finite).
    static func parseJSONPrefix(_ p: UnsafePointer<UInt8>, _ n: Int) -> (Double, Int)? {
        var i = 0
        var negative = false
        if i < n, p[i] == UInt8(ascii: "-") { negative = true; i += 1 }
        guard i < n, p[i] >= 0x30, p[i] <= 0x39 else { return nil }
        var mantissa: UInt64 = 0
        var digits = 0
        var exp10 = 0
        var truncated = false   // digits beyond the 19 kept
        if p[i] == 0x30 {
            i += 1
            if i < n, p[i] >= 0x30, p[i] <= 0x39 { return nil }  // leading zero
        } else {
            while i < n, p[i] >= 0x30, p[i] <= 0x39 {
                if digits < 19 { mantissa = mantissa * 10 + UInt64(p[i] - 0x30); if mantissa != 0 { digits += 1 } } else { exp10 += 1; truncated = true }
                i += 1
            }
        }
        if i < n, p[i] == UInt8(ascii: ".") {
            i += 1
            guard i < n, p[i] >= 0x30, p[i] <= 0x39 else { return nil }
            while i < n, p[i] >= 0x30, p[i] <= 0x39 {
                if digits < 19 { mantissa = mantissa * 10 + UInt64(p[i] - 0x30); if mantissa != 0 { digits += 1 }; exp10 -= 1 } else { truncated = true }
                i += 1
            }
        }
        if i < n, p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E") {
            i += 1
            var eneg = false
            if i < n, p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { eneg = p[i] == UInt8(ascii: "-"); i += 1 }
            guard i < n, p[i] >= 0x30, p[i] <= 0x39 else { return nil }
            var e = 0
            while i < n, p[i] >= 0x30, p[i] <= 0x39 { if e < 100_000 { e = e * 10 + Int(p[i] - 0x30) }; i += 1 }
            exp10 += eneg ? -e : e
        }
        // Exact (one rounding) when the digits fit a double's 53 bits and the power of ten is
        // exact (Clinger's fast path): every sensor value with up to 15 significant digits.
        // Otherwise (17-digit round-trip texts such as 0.30000000000000004, huge or tiny
        // exponents) the C library's correctly rounded strtod reads the same bytes, so the
        // value decoded (and logged) is exactly the one the plant's text denotes. That costs
        // about 125 ns a number (glibc strtod on 17-digit texts, measured with a C loop on this
        // project's 2-core machine); payloads of short decimals never take this path.
        if mantissa != 0, truncated || mantissa > 1 << 53 || exp10 < -22 || exp10 > 22, let exact = correctlyRounded(p, i) {
            return (exact, i)
        }
        var v = Double(mantissa)
        if exp10 != 0 && mantissa != 0 {
            if exp10 > 0 && exp10 <= 22 { v *= pow10[exp10] }
            else if exp10 < 0 && exp10 >= -22 { v /= pow10[-exp10] }
            else { v *= pow(10.0, Double(exp10)) }
        }
        return (negative ? -v : v, i)
    }

    /// `strtod` of the validated JSON number `p[0..<n]`, copied with its terminating NUL into a
    /// 64-byte buffer on the stack (no heap allocation; glibc's strtod allocates none for such
    /// lengths either — measured with the malloc-counting shim of `edgeq bench decode`). Nil for
    /// a number of 64 bytes or more, or when `strtod` does not read all `n` bytes (a process
    /// locale whose decimal point is not '.'): the caller keeps its own approximation then.
    static func correctlyRounded(_ p: UnsafePointer<UInt8>, _ n: Int) -> Double? {
        var buffer: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        guard n < MemoryLayout.size(ofValue: buffer) else { return nil }
        return withUnsafeMutableBytes(of: &buffer) { raw -> Double? in
            let base = raw.bindMemory(to: CChar.self)
            guard let start = base.baseAddress else { return nil }
            for k in 0..<n { start[k] = CChar(bitPattern: p[k]) }
            start[n] = 0
            var end: UnsafeMutablePointer<CChar>?
            let v = strtod(start, &end)
            guard let end, end - start == n else { return nil }
            return v
        }
    }

    /// Parses a number in a raw payload: surrounding whitespace allowed, a leading `+`
    /// allowed, `nan`/`inf` recognised (and given as non-finite).
    static func parseRaw(_ p: UnsafePointer<UInt8>, _ n: Int) -> Double? {
        var s = 0, e = n
        while s < e, isSpace(p[s]) { s += 1 }
        while e > s, isSpace(p[e - 1]) { e -= 1 }
        if s < e, p[s] == UInt8(ascii: "+") { s += 1 }
        guard s < e else { return nil }
        let len = e - s
        if len >= 3 {
            var neg = false
            var k = s
            if p[k] == UInt8(ascii: "-") { neg = true; k += 1 }
            let rest = e - k
            if rest == 3 || rest == 8 {
                let lower = { (j: Int) -> UInt8 in p[k + j] | 0x20 }
                if rest == 3, lower(0) == UInt8(ascii: "n"), lower(1) == UInt8(ascii: "a"), lower(2) == UInt8(ascii: "n") { return .nan }
                if lower(0) == UInt8(ascii: "i"), lower(1) == UInt8(ascii: "n"), lower(2) == UInt8(ascii: "f") {
                    return neg ? -.infinity : .infinity
                }
            }
        }
        return parseJSON(p + s, len)
    }

    @inline(__always) static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 }
}
