import CZlib
import Foundation

/// One batch of logged transitions shipped from a gateway to the fleet learner
/// (`<fleet>/experience/<gateway id>`, docs/fleet.md "Payload").
///
/// A batch covers the gateway's log rows with ids in `after < id <= last`: every row of the log
/// in that range is in `rows` (ids the log never had, or retention removed, are simply absent).
/// `origin` is the shipper's durable cursor when the batch was made: everything up to it was
/// acknowledged before, so a learner that has never seen this gateway starts counting there.
///
/// The wire format is little-endian binary with a versioned header (`encode()`, `decode(_:)`):
///
/// ```
/// "EQFB" u16 version=1 u16 flags      flags bit 0: the body is deflated (zlib), preceded by
///                                     its u32 length before compression
/// body:
/// str gateway   str log   i64 origin   i64 after   i64 last   u32 rowCount
/// u16 setCount  { u16 nameCount { str name } }        signal-name sets used by the rows
/// rows { i64 id  f64 time  i64 tick  i64 episode  u8 bits  u8 actor  u8 mode
///        vec32 state  vec32 nextState  f64 reward  i64 flags  i32 action(-1: none)
///        [u64 nextMask] [str modelVersion] [vec32 qValues] [i32 modelAction]
///        [u16 set  f64×n signals] [f64×n nextSignals] }
/// str = u16 byte count + UTF-8; vec32 = u16 count + f32×count; [..] present when its bit is set
/// ```
public struct FleetBatch: Sendable, Equatable {
    /// The format version this build writes and reads.
    public static let version: UInt16 = 1
    static let magic: [UInt8] = Array("EQFB".utf8)

    /// The gateway that logged the rows (its mapping's `gateway.id`).
    public var gateway: String
    /// The identity of the gateway's log file (`meta.log_id`): row ids count within one file, so
    /// a replaced log (a damaged file moved aside, a wiped data directory) starts a new sequence.
    public var log: String
    /// The shipper's acknowledged cursor when the batch was made.
    public var origin: Int64
    /// The batch covers rows with `after < id <= last`.
    public var after: Int64
    /// The last row id covered (≥ `after`; equal only for an empty batch).
    public var last: Int64
    /// The rows, in id order, each with its signal names.
    public var rows: [LoggedTransition]

    /// A batch.
    public init(gateway: String, log: String = "", origin: Int64, after: Int64, last: Int64, rows: [LoggedTransition]) {
        self.gateway = gateway
        self.log = log
        self.origin = origin
        self.after = after
        self.last = last
        self.rows = rows
    }

    // Bits of a row's `bits` byte.
    private static let bTerminal: UInt8 = 1, bTruncated: UInt8 = 2, bMask: UInt8 = 4, bSignals: UInt8 = 8
    private static let bNextSignals: UInt8 = 16, bQ: UInt8 = 32, bModelAction: UInt8 = 64, bModelVersion: UInt8 = 128

    /// The largest body a reader inflates (a deflated payload claiming more is refused).
    public static let maxBodyBytes = 64 << 20

    /// The batch in the wire format; `compress`: deflate the body (zlib `level`, 1 fastest … 9
    /// smallest; 6 by default), which halves a plant's rows (a row's `next_state` is the next
    /// row's `state`; docs/fleet.md "Payload"). Every level decodes the same way.
    public func encode(compress: Bool = true, level: Int32 = 6) -> [UInt8] {
        let body = encodeBody()
        var w = ByteWriter()
        w.bytes(Self.magic)
        w.u16(Self.version)
        if compress, body.count <= Self.maxBodyBytes, let z = Self.deflate(body, level: min(9, max(1, level))) {
            w.u16(1)
            w.u32(UInt32(body.count))
            w.bytes(z)
        } else {
            w.u16(0)
            w.bytes(body)
        }
        return w.out
    }

    static func deflate(_ body: [UInt8], level: Int32 = 6) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: Int(compressBound(uLong(body.count))))
        var size = uLongf(out.count)
        let rc = compress2(&out, &size, body, uLong(body.count), level)
        guard rc == Z_OK else { return nil }
        out.removeSubrange(Int(size)...)
        return out
    }

    static func inflate(_ z: ArraySlice<UInt8>, length: Int) throws(FleetBatchError) -> [UInt8] {
        guard length <= maxBodyBytes else { throw FleetBatchError("a deflated body of \(length) bytes is over the limit of \(maxBodyBytes)") }
        var out = [UInt8](repeating: 0, count: max(1, length))
        var size = uLongf(length)
        let src = Array(z)
        let rc = uncompress(&out, &size, src, uLong(src.count))
        guard rc == Z_OK, Int(size) == length else { throw FleetBatchError("the deflated body cannot be inflated to its \(length) bytes (zlib \(rc))") }
        return Array(out.prefix(length))
    }

    private func encodeBody() -> [UInt8] {
        var w = ByteWriter()
        w.reserve(64 + rows.count * (64 + (rows.first.map { $0.transition.state.count * 8 } ?? 0)))
        w.string(gateway)
        w.string(log)
        w.i64(origin)
        w.i64(after)
        w.i64(last)
        w.u32(UInt32(rows.count))
        // The signal-name sets, in first-use order.
        var sets: [[String]] = []
        var setIndex: [[String]: Int] = [:]
        for r in rows {
            if let n = r.signalNames, setIndex[n] == nil {
                setIndex[n] = sets.count
                sets.append(n)
            }
        }
        w.u16(UInt16(sets.count))
        for s in sets {
            w.u16(UInt16(s.count))
            for n in s { w.string(n) }
        }
        for r in rows {
            let t = r.transition
            let set = r.signalNames.flatMap { setIndex[$0] }
            var bits: UInt8 = 0
            if t.terminal { bits |= Self.bTerminal }
            if t.truncated { bits |= Self.bTruncated }
            if t.nextMask != nil { bits |= Self.bMask }
            // Values go only with names of the same count (the log never reads them otherwise).
            let width = r.signalNames?.count
            if set != nil, let s = t.signals, s.count == width { bits |= Self.bSignals }
            if set != nil, let s = t.nextSignals, s.count == width { bits |= Self.bNextSignals }
            if t.qValues != nil { bits |= Self.bQ }
            if t.modelAction != nil { bits |= Self.bModelAction }
            if t.modelVersion != nil { bits |= Self.bModelVersion }
            w.i64(r.id)
            w.f64(t.time)
            w.i64(t.tick)
            w.i64(t.episode)
            w.u8(bits)
            w.u8(UInt8(Actor.allCases.firstIndex(of: t.actor) ?? 0))
            w.u8(t.mode == .control ? 1 : 0)
            w.floats(t.state)
            w.floats(t.nextState)
            w.f64(t.reward)
            w.i64(t.flags.rawValue)
            w.i32(t.action.map { Int32(truncatingIfNeeded: $0) } ?? -1)
            if let m = t.nextMask { w.u64(m) }
            if let v = t.modelVersion { w.string(v) }
            if let q = t.qValues { w.floats(q) }
            if let a = t.modelAction { w.i32(Int32(truncatingIfNeeded: a)) }
            if bits & (Self.bSignals | Self.bNextSignals) != 0, let set {
                w.u16(UInt16(set))
                if bits & Self.bSignals != 0, let s = t.signals { for v in s { w.f64(v) } }
                if bits & Self.bNextSignals != 0, let s = t.nextSignals { for v in s { w.f64(v) } }
            }
        }
        return w.out
    }

    /// Reads a batch from the wire format.
    ///
    /// - Throws: `FleetBatchError` when the bytes are not a batch of this version (the message
    ///   says what was wrong and where); never traps on any input.
    public static func decode(_ bytes: [UInt8]) throws(FleetBatchError) -> FleetBatch {
        var h = ByteReader(bytes)
        guard try h.bytes(4) == magic else { throw FleetBatchError("not a fleet batch (the payload does not start with EQFB)") }
        let v = try h.u16()
        guard v == version else { throw FleetBatchError("fleet batch version \(v); this build reads version \(version): upgrade the learner") }
        let flags = try h.u16()
        guard flags & ~1 == 0 else { throw FleetBatchError("unknown fleet batch flags \(flags): upgrade the learner") }
        var r: ByteReader
        if flags & 1 != 0 {
            let length = Int(try h.u32())
            r = ByteReader(try inflate(bytes[h.at...], length: length))
        } else {
            r = ByteReader(Array(bytes[h.at...]))
        }
        let gateway = try r.string()
        let log = try r.string()
        let origin = try r.i64(), after = try r.i64(), last = try r.i64()
        guard after <= last else { throw FleetBatchError("fleet batch range is empty or reversed (after \(after), last \(last))") }
        let count = Int(try r.u32())
        guard count <= r.remaining / 40 + 1 else { throw FleetBatchError("fleet batch claims \(count) rows in \(r.data.count) bytes") }
        var sets: [[String]] = []
        for _ in 0..<Int(try r.u16()) {
            var names: [String] = []
            for _ in 0..<Int(try r.u16()) { names.append(try r.string()) }
            sets.append(names)
        }
        var rows: [LoggedTransition] = []
        rows.reserveCapacity(count)
        var previous = after
        for _ in 0..<count {
            let id = try r.i64()
            guard id > previous, id <= last else { throw FleetBatchError("row id \(id) is out of order or outside the batch's range (\(after), \(last)]") }
            previous = id
            let time = try r.f64(), tick = try r.i64(), episode = try r.i64()
            let bits = try r.u8()
            let actorIndex = Int(try r.u8())
            guard actorIndex < Actor.allCases.count else { throw FleetBatchError("row \(id): unknown actor code \(actorIndex)") }
            let mode: ControlMode = try r.u8() == 1 ? .control : .shadow
            let state = try r.floats(), nextState = try r.floats()
            let reward = try r.f64()
            let flags = TransitionFlags(rawValue: try r.i64())
            let action = try r.i32()
            let mask = bits & bMask != 0 ? try r.u64() : nil
            let modelVersion = bits & bModelVersion != 0 ? try r.string() : nil
            let q = bits & bQ != 0 ? try r.floats() : nil
            let modelAction = bits & bModelAction != 0 ? Int(try r.i32()) : nil
            var signals: [Double]?, nextSignals: [Double]?, names: [String]?
            if bits & (bSignals | bNextSignals) != 0 {
                let s = Int(try r.u16())
                guard s < sets.count else { throw FleetBatchError("row \(id): signal set \(s) is not in the batch's \(sets.count) sets") }
                names = sets[s]
                if bits & bSignals != 0 { signals = try r.doubles(sets[s].count) }
                if bits & bNextSignals != 0 { nextSignals = try r.doubles(sets[s].count) }
            }
            let t = Transition(
                time: time, tick: tick, episode: episode, state: state, action: action < 0 ? nil : Int(action),
                actor: Actor.allCases[actorIndex], reward: reward, nextState: nextState, nextMask: mask,
                terminal: bits & bTerminal != 0, truncated: bits & bTruncated != 0, mode: mode,
                modelVersion: modelVersion, qValues: q, modelAction: modelAction, flags: flags,
                signals: signals, nextSignals: nextSignals)
            rows.append(LoggedTransition(id: id, transition: t, signalNames: names))
        }
        guard r.remaining == 0 else { throw FleetBatchError("\(r.remaining) bytes after the last row") }
        return FleetBatch(gateway: gateway, log: log, origin: origin, after: after, last: last, rows: rows)
    }
}

/// A payload that is not a fleet batch this build can read; the message says why.
public struct FleetBatchError: Error, Sendable, CustomStringConvertible {
    /// What was wrong.
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Appends little-endian values.
struct ByteWriter {
    var out: [UInt8] = []
    mutating func reserve(_ n: Int) { out.reserveCapacity(n) }
    mutating func bytes(_ b: [UInt8]) { out.append(contentsOf: b) }
    mutating func u8(_ v: UInt8) { out.append(v) }
    mutating func u16(_ v: UInt16) { out.append(UInt8(v & 0xff)); out.append(UInt8(v >> 8)) }
    mutating func u32(_ v: UInt32) { for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
    mutating func u64(_ v: UInt64) { for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
    mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func f64(_ v: Double) { u64(v.bitPattern) }
    mutating func string(_ s: String) {
        let b = Array(s.utf8.prefix(Int(UInt16.max)))
        u16(UInt16(b.count))
        out.append(contentsOf: b)
    }
    mutating func floats(_ v: [Float]) {
        let n = min(v.count, Int(UInt16.max))
        u16(UInt16(n))
        for x in v.prefix(n) { u32(x.bitPattern) }
    }
}

/// Reads little-endian values; every read checks the bounds and throws past the end.
struct ByteReader {
    let data: [UInt8]
    var at = 0
    init(_ data: [UInt8]) { self.data = data }
    var remaining: Int { data.count - at }

    mutating func take(_ n: Int) throws(FleetBatchError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= remaining else { throw FleetBatchError("the batch ends early (byte \(at), \(n) more needed)") }
        defer { at += n }
        return data[at..<(at + n)]
    }
    mutating func bytes(_ n: Int) throws(FleetBatchError) -> [UInt8] { Array(try take(n)) }
    mutating func u8() throws(FleetBatchError) -> UInt8 { try take(1).first ?? 0 }
    mutating func uint(_ n: Int) throws(FleetBatchError) -> UInt64 {
        guard n >= 0, n <= 8, n <= remaining else { throw FleetBatchError("the batch ends early (byte \(at), \(n) more needed)") }
        var v: UInt64 = 0
        data.withUnsafeBufferPointer { b in
            for i in 0..<n { v |= UInt64(b[at + i]) << (8 * UInt64(i)) }
        }
        at += n
        return v
    }
    mutating func u16() throws(FleetBatchError) -> UInt16 { UInt16(try uint(2)) }
    mutating func u32() throws(FleetBatchError) -> UInt32 { UInt32(try uint(4)) }
    mutating func u64() throws(FleetBatchError) -> UInt64 { try uint(8) }
    mutating func i32() throws(FleetBatchError) -> Int32 { Int32(bitPattern: try u32()) }
    mutating func i64() throws(FleetBatchError) -> Int64 { Int64(bitPattern: try u64()) }
    mutating func f64() throws(FleetBatchError) -> Double { Double(bitPattern: try u64()) }
    mutating func string() throws(FleetBatchError) -> String {
        let n = Int(try u16())
        guard let s = String(validating: try take(n), as: UTF8.self) else { throw FleetBatchError("a text at byte \(at - n) is not UTF-8") }
        return s
    }
    mutating func floats() throws(FleetBatchError) -> [Float] {
        let n = Int(try u16())
        guard n * 4 <= remaining else { throw FleetBatchError("the batch ends early (byte \(at), \(n * 4) more needed)") }
        let start = at
        at += n * 4
        // One bounds check for the vector, then unaligned little-endian loads.
        return data.withUnsafeBytes { raw in
            (0..<n).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: start + 4 * $0, as: UInt32.self))) }
        }
    }
    mutating func doubles(_ n: Int) throws(FleetBatchError) -> [Double] {
        guard n >= 0, n * 8 <= remaining else { throw FleetBatchError("the batch ends early (byte \(at), \(n * 8) more needed)") }
        let start = at
        at += n * 8
        return data.withUnsafeBytes { raw in
            (0..<n).map { Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: start + 8 * $0, as: UInt64.self))) }
        }
    }
}
