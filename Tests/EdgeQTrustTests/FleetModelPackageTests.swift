import EdgeQTrust
import Foundation
import Testing

/// The fleet model on the wire (docs/fleet.md, "Models"): manifest, chunks, reassembly from
/// retained messages in any order, and what is refused before the signature is looked at.
@Suite struct FleetModelPackageTests {
    static let mapping = String(repeating: "ab", count: 32)
    static let otherMapping = String(repeating: "cd", count: 32)

    /// A model-like byte string of `n` bytes and its signature as `version` by a real key.
    func signed(_ n: Int, version: Int, mapping: String = mapping) throws -> ([UInt8], ModelSignature) {
        let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ version) }
        let fixture = try TrustFixture()
        let sig = try ModelSignature.sign(modelBytes: bytes, version: version, mapping: mapping, keyName: "mo", privateKey: try fixture.privateKey("mo"))
        return (bytes, sig)
    }

    @Test func splitChunksFitTheMessageSizeAndTheManifestRoundTrips() throws {
        let (bytes, sig) = try signed(5000, version: 7)
        let (manifest, chunks) = FleetModelChunk.split(modelBytes: bytes, signature: sig, maxMessage: 1024, learner: "l1", rows: 300, gateways: ["a": 100, "b": 200])
        #expect(chunks.count == 5 && manifest.chunks == 5 && manifest.size == 5000 && manifest.chunkSize == 1000)
        #expect(chunks.allSatisfy { $0.encode().count <= 1024 })
        #expect(chunks.flatMap(\.bytes) == bytes)
        #expect(chunks.map { FleetModelChunk.decode($0.encode()) } == chunks.map { Optional($0) })
        let parsed = try FleetModelManifest.parse(Array(manifest.jsonText.utf8))
        #expect(parsed == manifest)
        #expect(parsed.version == 7 && parsed.signer == "mo" && parsed.mapping == Self.mapping && parsed.gateways == ["a": 100, "b": 200])
        // A model that fits: one chunk.
        #expect(FleetModelChunk.split(modelBytes: bytes, signature: sig, maxMessage: 1 << 20, learner: "l1", rows: 0, gateways: [:]).chunks.count == 1)
    }

    @Test func chunksAndManifestInAnyOrderCompleteOnceAndLeftoversAreIgnored() throws {
        let (old, oldSig) = try signed(3000, version: 3)
        let (bytes, sig) = try signed(4500, version: 4)
        let (oldManifest, oldChunks) = FleetModelChunk.split(modelBytes: old, signature: oldSig, maxMessage: 1024, learner: "l", rows: 0, gateways: [:])
        let (manifest, chunks) = FleetModelChunk.split(modelBytes: bytes, signature: sig, maxMessage: 1024, learner: "l", rows: 0, gateways: [:])
        var a = FleetModelAssembler(maxSize: 1 << 20)
        // The old model, complete.
        var last: FleetModelAssembler.Event = .waiting
        for c in oldChunks { last = a.chunk(c.encode()) }
        #expect(last == .waiting)
        #expect(a.manifest(Array(oldManifest.jsonText.utf8), mapping: Self.mapping) == .complete(oldManifest, old))
        // The new one: two chunks before its manifest, an old leftover, the rest after, one twice.
        var events: [FleetModelAssembler.Event] = []
        events.append(a.chunk(chunks[3].encode()))
        events.append(a.chunk(chunks[0].encode()))
        events.append(a.chunk(oldChunks[1].encode()))
        events.append(a.manifest(Array(manifest.jsonText.utf8), mapping: Self.mapping))
        events.append(a.chunk(chunks[1].encode()))
        events.append(a.chunk(chunks[1].encode()))
        events.append(a.chunk(chunks[4].encode()))
        events.append(a.chunk(chunks[2].encode()))
        #expect(events.filter { $0 != .waiting } == [.complete(manifest, bytes)], "\(events)")
        // Seen again (a reconnect's retained copies): nothing new.
        #expect(a.manifest(Array(manifest.jsonText.utf8), mapping: Self.mapping) == .waiting)
        #expect(chunks.map { a.chunk($0.encode()) }.allSatisfy { $0 == .waiting })
        // An empty retained payload (a cleared chunk topic) is nothing.
        #expect(a.chunk([]) == .waiting)
    }

    @Test func whatIsRefusedBeforeTheSignature() throws {
        let (bytes, sig) = try signed(2500, version: 9)
        let (manifest, chunks) = FleetModelChunk.split(modelBytes: bytes, signature: sig, maxMessage: 1024, learner: "l", rows: 0, gateways: [:])
        func reason(_ e: FleetModelAssembler.Event) -> String? {
            if case .refused(_, let r, _) = e { return r }
            return nil
        }
        // Another mapping: refused at the manifest, once.
        var a = FleetModelAssembler(maxSize: 1 << 20)
        #expect(reason(a.manifest(Array(manifest.jsonText.utf8), mapping: Self.otherMapping)) == FleetModelRefusal.otherMapping)
        #expect(a.manifest(Array(manifest.jsonText.utf8), mapping: Self.otherMapping) == .waiting)
        // Too large for this gateway.
        var small = FleetModelAssembler(maxSize: 2000)
        #expect(reason(small.manifest(Array(manifest.jsonText.utf8), mapping: Self.mapping)) == FleetModelRefusal.tooLarge)
        // An altered chunk: the reassembled sha256 is not the manifest's.
        var b = FleetModelAssembler(maxSize: 1 << 20)
        _ = b.manifest(Array(manifest.jsonText.utf8), mapping: Self.mapping)
        var altered = chunks
        altered[1].bytes[5] ^= 1
        let events = altered.map { b.chunk($0.encode()) }
        #expect(events.compactMap(reason) == [FleetModelRefusal.shaMismatch])
        // A manifest that contradicts its signature, not JSON, a newer format.
        let lying = manifest.jsonText.replacingOccurrences(of: "\"version\":9,\"sha256\"", with: "\"version\":10,\"sha256\"")
        #expect(lying != manifest.jsonText)
        var c = FleetModelAssembler(maxSize: 1 << 20)
        #expect(reason(c.manifest(Array(lying.utf8), mapping: Self.mapping)) == FleetModelRefusal.malformed)
        #expect(reason(c.manifest(Array("nope".utf8), mapping: Self.mapping)) == FleetModelRefusal.malformed)
        let newer = manifest.jsonText.replacingOccurrences(of: "\"format\":1", with: "\"format\":2")
        #expect(reason(c.manifest(Array(newer.utf8), mapping: Self.mapping)) == FleetModelRefusal.malformed)
    }

    @Test func aChunkCutAtEveryByteNeverTraps() throws {
        let (bytes, sig) = try signed(300, version: 2)
        let payload = FleetModelChunk.split(modelBytes: bytes, signature: sig, maxMessage: 4096, learner: "l", rows: 0, gateways: [:]).chunks[0].encode()
        for n in 0..<payload.count {
            let d = FleetModelChunk.decode(Array(payload.prefix(n)))
            #expect(n < FleetModelChunk.headerSize ? d == nil : d?.bytes.count == n - FleetModelChunk.headerSize)
        }
        let manifest = FleetModelChunk.split(modelBytes: bytes, signature: sig, maxMessage: 4096, learner: "l", rows: 0, gateways: [:]).manifest
        let text = Array(manifest.jsonText.utf8)
        for n in 0..<text.count {
            #expect(throws: ModelRefusal.self) { try FleetModelManifest.parse(Array(text.prefix(n))) }
        }
    }
}
