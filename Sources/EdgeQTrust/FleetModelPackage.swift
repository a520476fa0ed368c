// The fleet model on the wire (docs/fleet.md, "Models"): a manifest retained on `<fleet>/model`
// and the model file in chunks retained on `<fleet>/model/chunk/<index>`.
import EdgeQCore
import Foundation

/// Why a gateway refused a fleet model, beyond the signature's own reasons
/// (`ModelRefusalReason`): the label of `edgeq_fleet_models_refused_total{reason}` and the
/// `reason` of the verdict.
public enum FleetModelRefusal {
    /// The manifest or a chunk does not decode, or the manifest contradicts its signature.
    public static let malformed = "malformed"
    /// The reassembled bytes' SHA-256 is not the manifest's.
    public static let shaMismatch = "sha_mismatch"
    /// The model is for another mapping (its fingerprint is not the gateway's).
    public static let otherMapping = ModelRefusalReason.otherMapping.rawValue
    /// The manifest announces more bytes than `fleet.max_model_size`.
    public static let tooLarge = "too_large"
    /// The gateway already stores this version or a newer one.
    public static let notNewer = "not_newer"
    /// The model does not load or does not fit the mapping's state and actions.
    public static let failedChecks = "failed_checks"
    /// The model could not be written to the store.
    public static let storeFailed = "store_failed"

    /// Every reason a gateway counts (the signature's reasons and the ones above).
    public static let all: [String] = [malformed, shaMismatch, tooLarge, notNewer, failedChecks, storeFailed]
        + ModelRefusalReason.allCases.map(\.rawValue).filter { $0 != ModelRefusalReason.missingSignature.rawValue }
}

/// The manifest of a fleet model, retained on `<fleet>/model` (JSON):
/// ```
/// {"format":1,"version":1796300000,"sha256":"<64 hex>","size":12345,"chunks":1,"chunk_size":262100,
///  "mapping":"<64 hex>","signer":"fleet-ahu","learner":"learner-1","time":1796300000.5,
///  "rows":4000,"gateways":{"ahu-1":2000,"ahu-2":2000},
///  "signature":{"key":"fleet-ahu","sha256":"…","version":1796300000,"mapping":"…","sig":"<base64>"}}
/// ```
/// `signature` is the model's `.sig` (docs/security.md), so the gateway checks the model with the
/// same code and keys (`keys/models/`) as a model imported by hand; the manifest's `version`,
/// `sha256`, `mapping` and `signer` must equal the signature's.
public struct FleetModelManifest: Sendable, Equatable {
    /// The manifest format this code writes and reads.
    public static let format = 1
    /// The model version (the signed one).
    public var version: Int
    /// SHA-256 (hex) of the model file.
    public var sha256: String
    /// The model file's size in bytes.
    public var size: Int
    /// How many chunks carry it (1 when it fits in one message).
    public var chunks: Int
    /// Bytes per chunk (the last may be shorter).
    public var chunkSize: Int
    /// The mapping fingerprint it was trained and signed for.
    public var mapping: String
    /// The signing key's name.
    public var signer: String
    /// The learner that trained it.
    public var learner: String
    /// When it was published (seconds since 1970).
    public var time: Double
    /// Fleet-log rows it was trained on, in all and per gateway.
    public var rows: Int
    public var gateways: [String: Int]
    /// The signature (`.sig` JSON).
    public var signature: ModelSignature

    /// A manifest; `version`, `sha256`, `mapping` and `signer` are taken from `signature`.
    public init(signature: ModelSignature, size: Int, chunks: Int, chunkSize: Int, learner: String, time: Double,
                rows: Int, gateways: [String: Int]) {
        version = signature.modelVersion
        sha256 = signature.sha256
        mapping = signature.mapping
        signer = signature.key
        self.signature = signature
        self.size = size
        self.chunks = chunks
        self.chunkSize = chunkSize
        self.learner = learner
        self.time = (time * 1000).rounded() / 1000   // as the JSON text carries it
        self.rows = rows
        self.gateways = gateways
    }

    /// The JSON text.
    public var jsonText: String {
        let gws = gateways.keys.sorted().map { "\(jsonString($0)):\(gateways[$0] ?? 0)" }.joined(separator: ",")
        let sig = signature.jsonText.trimmingCharacters(in: .whitespacesAndNewlines)
        return "{\"format\":\(Self.format),\"version\":\(version),\"sha256\":\(jsonString(sha256)),\"size\":\(size),\"chunks\":\(chunks),"
            + "\"chunk_size\":\(chunkSize),\"mapping\":\(jsonString(mapping)),\"signer\":\(jsonString(signer)),\"learner\":\(jsonString(learner)),"
            + "\"time\":\(time),\"rows\":\(rows),\"gateways\":{\(gws)},\"signature\":\(sig)}"
    }

    /// Parses a manifest.
    /// - Throws: `ModelRefusal` (`.malformed`) naming what is wrong: not JSON, a newer format, a
    ///   field missing or out of range, fields that contradict the signature.
    public static func parse(_ bytes: [UInt8]) throws(ModelRefusal) -> FleetModelManifest {
        func bad(_ what: String) -> ModelRefusal {
            ModelRefusal(reason: .malformed, message: "the fleet model manifest \(what): the learner must publish it again (docs/fleet.md, \"Models\")")
        }
        guard let o = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else { throw bad("is not a JSON object") }
        guard let f = o["format"] as? NSNumber, f.intValue == Self.format else {
            throw bad("has format \(String(describing: o["format"])), this gateway reads format \(Self.format) (upgrade the gateway if the learner is newer)")
        }
        func int(_ k: String, min: Int, max: Int) throws(ModelRefusal) -> Int {
            guard let n = o[k] as? NSNumber, String(cString: n.objCType) != "c", n.doubleValue == n.doubleValue.rounded(),
                  n.doubleValue >= Double(min), n.doubleValue <= Double(max) else { throw bad("has no whole-number '\(k)' in \(min)…\(max)") }
            return n.intValue
        }
        let size = try int("size", min: 1, max: 1 << 40)
        let chunks = try int("chunks", min: 1, max: 1 << 20)
        let chunkSize = try int("chunk_size", min: 1, max: 1 << 30)
        let rows = try int("rows", min: 0, max: Int(1e15))
        guard chunkSize.multipliedReportingOverflow(by: chunks).partialValue >= size, chunkSize * (chunks - 1) < size else {
            throw bad("announces \(chunks) chunks of \(chunkSize) bytes for \(size) bytes")
        }
        guard let sigObject = o["signature"] as? [String: Any], let sigData = try? JSONSerialization.data(withJSONObject: sigObject) else {
            throw bad("has no 'signature' object")
        }
        let signature = try ModelSignature.parse(sigData)
        let version = try int("version", min: 0, max: Int(1e15))
        guard version == signature.modelVersion, (o["sha256"] as? String)?.lowercased() == signature.sha256,
              o["mapping"] as? String == signature.mapping, o["signer"] as? String == signature.key else {
            throw bad("contradicts its signature (version, sha256, mapping or signer differ)")
        }
        var gateways: [String: Int] = [:]
        for (k, v) in (o["gateways"] as? [String: Any]) ?? [:] { gateways[k] = (v as? NSNumber)?.intValue ?? 0 }
        return FleetModelManifest(signature: signature, size: size, chunks: chunks, chunkSize: chunkSize,
                                  learner: o["learner"] as? String ?? "", time: (o["time"] as? NSNumber)?.doubleValue ?? 0,
                                  rows: rows, gateways: gateways)
    }
}

/// A chunk of a fleet model, retained on `<fleet>/model/chunk/<index>`: a 24-byte little-endian
/// header, then the bytes.
/// ```
/// "EQMC"  u16 format = 1  u16 0  i64 version  u32 index  u32 count  bytes…
/// ```
/// The version binds a chunk to its manifest: chunks left retained by an older model are ignored.
public struct FleetModelChunk: Sendable, Equatable {
    /// The header's length.
    public static let headerSize = 24
    /// The model version the chunk belongs to.
    public var version: Int
    /// Its position, from 0.
    public var index: Int
    /// How many chunks the model has.
    public var count: Int
    /// Its bytes of the model file.
    public var bytes: [UInt8]

    public init(version: Int, index: Int, count: Int, bytes: [UInt8]) {
        self.version = version
        self.index = index
        self.count = count
        self.bytes = bytes
    }

    /// The payload.
    public func encode() -> [UInt8] {
        var out: [UInt8] = Array("EQMC".utf8)
        out.reserveCapacity(Self.headerSize + bytes.count)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        put(UInt16(1))
        put(UInt16(0))
        put(Int64(version))
        put(UInt32(truncatingIfNeeded: index))
        put(UInt32(truncatingIfNeeded: count))
        out.append(contentsOf: bytes)
        return out
    }

    /// Decodes a payload; nil when it is not a chunk of format 1 (never traps).
    public static func decode(_ p: [UInt8]) -> FleetModelChunk? {
        guard p.count >= headerSize, p[0] == 0x45, p[1] == 0x51, p[2] == 0x4D, p[3] == 0x43 else { return nil }
        func read<T: FixedWidthInteger>(_ at: Int, _: T.Type) -> T {
            var v: T = 0
            for i in 0..<MemoryLayout<T>.size { v |= T(truncatingIfNeeded: p[at + i]) << (8 * i) }
            return v
        }
        guard read(4, UInt16.self) == 1 else { return nil }
        let version = read(8, Int64.self)
        let index = Int(read(16, UInt32.self))
        let count = Int(read(20, UInt32.self))
        guard version >= 0, count >= 1, index < count else { return nil }
        return FleetModelChunk(version: Int(version), index: index, count: count, bytes: Array(p[headerSize...]))
    }

    /// Splits a signed model into chunks that, with their header, fit `maxMessage` bytes, and
    /// makes the manifest announcing them.
    public static func split(modelBytes: [UInt8], signature: ModelSignature, maxMessage: Int, learner: String,
                             rows: Int, gateways: [String: Int], time: Double = Date().timeIntervalSince1970) -> (manifest: FleetModelManifest, chunks: [FleetModelChunk]) {
        let size = max(1, maxMessage - headerSize)
        var chunks: [FleetModelChunk] = []
        var start = 0
        let count = max(1, (modelBytes.count + size - 1) / size)
        while start < modelBytes.count || chunks.isEmpty {
            let end = min(modelBytes.count, start + size)
            chunks.append(FleetModelChunk(version: signature.modelVersion, index: chunks.count, count: count, bytes: Array(modelBytes[start..<end])))
            start = end
        }
        let manifest = FleetModelManifest(signature: signature, size: modelBytes.count, chunks: count, chunkSize: size,
                                          learner: learner, time: time, rows: rows, gateways: gateways)
        return (manifest, chunks)
    }
}

/// Puts a fleet model together from its retained manifest and chunks, which arrive in any order
/// (retained messages of several topics), possibly mixed with chunks of an older model.
///
/// Holds the chunks of at most the newest announced version plus one unannounced version
/// (chunks that arrived before their manifest), each bounded by `maxSize`.
public struct FleetModelAssembler: Sendable {
    /// What an arriving message completed.
    public enum Event: Sendable, Equatable {
        /// Nothing to do yet.
        case waiting
        /// Every chunk of the announced model is here, and their SHA-256 is the manifest's.
        case complete(FleetModelManifest, [UInt8])
        /// The announced model is refused before its signature is looked at.
        case refused(FleetModelManifest?, reason: String, message: String)
    }

    /// The largest model accepted.
    public let maxSize: Int
    /// The manifest being assembled.
    public private(set) var manifest: FleetModelManifest?
    private var chunks: [Int: [UInt8]] = [:]
    /// The announced model was handed out (complete or refused): its chunks are no longer kept.
    private var finished = false
    private var refusedManifest: FleetModelManifest?
    private var early: (version: Int, chunks: [Int: [UInt8]], bytes: Int)?

    public init(maxSize: Int) { self.maxSize = maxSize }

    /// A manifest arrived. A manifest for the version being assembled again changes nothing.
    /// - Parameter mapping: the gateway's mapping fingerprint (another one is refused at once,
    ///   before any chunk is kept).
    public mutating func manifest(_ payload: [UInt8], mapping: String) -> Event {
        let m: FleetModelManifest
        do {
            m = try FleetModelManifest.parse(payload)
        } catch {
            return .refused(nil, reason: FleetModelRefusal.malformed, message: error.message)
        }
        if let current = manifest, current == m { return .waiting }
        if let r = refusedManifest, r == m { return .waiting }   // the same manifest again (a reconnect's retained copy)
        guard m.mapping == mapping else {
            refusedManifest = m
            return .refused(m, reason: FleetModelRefusal.otherMapping,
                            message: "the fleet model v\(m.version) is for the mapping \(m.mapping.prefix(12))…, this gateway's is \(mapping.prefix(12))… (its state or actions differ): a mixed fleet needs one learner per mapping")
        }
        guard m.size <= maxSize else {
            refusedManifest = m
            return .refused(m, reason: FleetModelRefusal.tooLarge,
                            message: "the fleet model v\(m.version) has \(m.size) bytes, more than fleet.max_model_size (\(maxSize)): raise it in the mapping if the model is right")
        }
        manifest = m
        finished = false
        chunks = [:]
        if let e = early, e.version == m.version { chunks = e.chunks }
        early = nil
        return completed()
    }

    /// A chunk arrived (its payload).
    public mutating func chunk(_ payload: [UInt8]) -> Event {
        guard let c = FleetModelChunk.decode(payload) else { return .waiting }   // an empty retained payload clears a topic
        if let m = manifest, c.version == m.version {
            if finished { return .waiting }
            guard c.count == m.chunks, c.index < m.chunks else {
                let m2 = m
                finished = true
                chunks = [:]
                return .refused(m2, reason: FleetModelRefusal.malformed, message: "a chunk of v\(m2.version) says \(c.count) chunks, the manifest \(m2.chunks): the learner must publish it again")
            }
            chunks[c.index] = c.bytes
            return completed()
        }
        if let m = manifest, c.version <= m.version { return .waiting }   // an older model's leftover
        // A newer model whose manifest has not arrived yet: keep its chunks (bounded).
        if early?.version != c.version {
            if let e = early, e.version > c.version { return .waiting }
            early = (c.version, [:], 0)
        }
        guard var e = early, e.bytes + c.bytes.count <= maxSize else { return .waiting }
        if e.chunks[c.index] == nil { e.bytes += c.bytes.count }
        e.chunks[c.index] = c.bytes
        early = e
        return .waiting
    }

    private mutating func completed() -> Event {
        guard let m = manifest, chunks.count == m.chunks else { return .waiting }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(m.size)
        for i in 0..<m.chunks {
            guard let b = chunks[i] else { return .waiting }
            bytes.append(contentsOf: b)
        }
        chunks = [:]
        finished = true
        let sha = hexDigest(bytes)
        guard bytes.count == m.size, sha == m.sha256 else {
            return .refused(m, reason: FleetModelRefusal.shaMismatch,
                            message: "the reassembled fleet model v\(m.version) has \(bytes.count) bytes with sha256 \(sha.prefix(12))…, the manifest says \(m.size) bytes, \(m.sha256.prefix(12))…: a chunk was altered or lost; the learner must publish it again")
        }
        return .complete(m, bytes)
    }
}
