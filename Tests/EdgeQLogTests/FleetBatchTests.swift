import CZlib
import EdgeQLog
import Foundation
import Testing

/// The fleet batch wire format and the learner's fleet log (docs/fleet.md).
@Suite struct FleetBatchTests {
    /// Rows with every column varied, a signal set on most of them (NaN where a value was missing).
    static func rows(_ n: Int, from first: Int64 = 1, width: Int = 4) -> [LoggedTransition] {
        (0..<n).map { i in
            var t = sample(i, width: width)
            var names: [String]?
            if i % 5 != 0 {
                names = ["zone_temp", "outdoor_temp"]
                t.signals = [20 + Double(i) / 10, i % 7 == 0 ? .nan : -3.5]
                t.nextSignals = [20.1 + Double(i) / 10, -3.25]
            }
            return LoggedTransition(id: first + Int64(i) * 2, transition: t, signalNames: names)
        }
    }

    /// Equal with NaN equal to NaN (a missing raw value travels as NaN).
    static func same(_ a: [LoggedTransition], _ b: [LoggedTransition]) -> Bool {
        func key(_ r: LoggedTransition) -> LoggedTransition {
            var r = r
            r.transition.signals = r.transition.signals?.map { $0.isNaN ? -9.75e300 : $0 }
            r.transition.nextSignals = r.transition.nextSignals?.map { $0.isNaN ? -9.75e300 : $0 }
            return r
        }
        return a.count == b.count && zip(a, b).allSatisfy { key($0) == key($1) }
    }

    @Test func aBatchReadsBackAsItWasWritten() throws {
        let rows = Self.rows(50, from: 11)
        let batch = FleetBatch(gateway: "ahu-7", origin: 3, after: 10, last: rows.last?.id ?? 10, rows: rows)
        for compress in [true, false] {
            let back = try FleetBatch.decode(batch.encode(compress: compress))
            #expect(back.gateway == "ahu-7" && back.origin == 3 && back.after == 10 && back.last == batch.last)
            #expect(Self.same(back.rows, rows))
        }
        let back = try FleetBatch.decode(batch.encode())
        #expect(back.rows.contains { $0.transition.action == nil } && back.rows.contains { $0.transition.flags.rawValue != 0 })
    }

    /// Any zlib level (the mapping's `fleet.deflate_level` 1–9 on the gateway; its 0 sends
    /// `encode(compress: false)`) reads back the same rows, and an out-of-range level is clamped to
    /// 1…9 rather than failing into an uncompressed batch.
    @Test func everyDeflateLevelReadsBackTheSameRows() throws {
        let rows = Self.plantRows(200)
        let batch = FleetBatch(gateway: "ahu-7", origin: 0, after: 0, last: rows.last?.id ?? 0, rows: rows)
        let plain = batch.encode(compress: false).count
        for level: Int32 in [0, 1, 6, 9, 42] {
            let bytes = batch.encode(level: level)
            #expect(bytes[6] == 1 && bytes.count < plain, "level \(level): flags \(bytes[6]), \(bytes.count) of \(plain) B")
            #expect(Self.same(try FleetBatch.decode(bytes).rows, rows), "level \(level)")
        }
    }

    /// Every prefix of a batch, and every single-byte change of its header, is refused with an
    /// error or read as some batch: never a trap.
    @Test(arguments: [false, true]) func damagedPayloadsAreRefusedNotTrapped(compress: Bool) throws {
        let bytes = FleetBatch(gateway: "g", origin: 0, after: 0, last: 30, rows: Self.rows(8, from: 1)).encode(compress: compress)
        var refused = 0
        for cut in 0..<bytes.count {
            do { _ = try FleetBatch.decode(Array(bytes[..<cut])) } catch { refused += 1 }
        }
        #expect(refused == bytes.count, "a truncated batch was accepted")
        for i in 0..<min(bytes.count, 200) {
            for v: UInt8 in [0, 0xff, bytes[i] ^ 0x55] {
                var b = bytes
                b[i] = v
                _ = try? FleetBatch.decode(b)
            }
        }
        #expect(throws: FleetBatchError.self) { try FleetBatch.decode(Array("EQFB".utf8) + [2, 0, 0, 0]) }
    }

    @Test func theFleetLogStoresEachRowOnceAndAcknowledgesTheContiguousPrefix() throws {
        let dir = try TempDir()
        let log = try FleetLog(dataDirectory: dir.path)
        let rows = Self.rows(30, from: 1).enumerated().map { LoggedTransition(id: Int64($0.offset + 1), transition: $0.element.transition, signalNames: $0.element.signalNames) }
        func batch(_ r: Range<Int>, origin: Int64 = 0) -> FleetBatch {
            FleetBatch(gateway: "g", origin: origin, after: Int64(r.lowerBound), last: Int64(r.upperBound), rows: Array(rows[r]))
        }
        // Out of order: rows 11–20 first wait; 1–10 joins them; 11–20 again is all duplicates.
        #expect(try log.ingest(batch(10..<20), learner: "a") == FleetIngestResult(inserted: 10, duplicates: 0, acked: 0))
        #expect(try log.ingest(batch(0..<10), learner: "b") == FleetIngestResult(inserted: 10, duplicates: 0, acked: 20))
        #expect(try log.ingest(batch(10..<20), learner: "a") == FleetIngestResult(inserted: 0, duplicates: 10, acked: 20))
        // An overlapping resend (rows 16–30) stores only the new rows.
        #expect(try log.ingest(batch(15..<30), learner: "a") == FleetIngestResult(inserted: 10, duplicates: 5, acked: 30))
        #expect(Self.same(try log.transitions(gateway: "g"), rows))
        let s = try #require(try log.gateways().first)
        #expect(s.acked == 30 && s.rows == 30 && s.duplicates == 15 && s.batches == 4)
        #expect(try log.rowsByLearner() == ["a": 20, "b": 10])
        #expect(try FleetBatch.decode(FleetBatch(gateway: "g", log: "L", origin: 0, after: 0, last: 0, rows: []).encode()).log == "L")
        // The same gateway's replaced log (another identity) is a sequence of its own: its row ids
        // 1–10 are new rows, not copies of the old file's.
        var replaced = batch(0..<10)
        replaced.log = "second-file"
        #expect(try log.ingest(replaced, learner: "a") == FleetIngestResult(inserted: 10, duplicates: 0, acked: 10))
        #expect(try log.gateways().map(\.log) == ["", "second-file"])
        #expect(try log.transitions(gateway: "g").count == 40 && log.transitions(gateway: "g", log: "second-file").count == 10)
        // A gateway first seen by a fresh fleet log starts at the batch's origin (its cursor).
        let fresh = try FleetLog(path: dir.path + "/other.sqlite")
        #expect(try fresh.ingest(batch(20..<30, origin: 20), learner: "a").acked == 30)
        // Another SQLite file (here an experience log) is refused.
        _ = try ExperienceLog.open(path: dir.path + "/x.sqlite")
        #expect(throws: LogError.self) { try FleetLog(path: dir.path + "/x.sqlite") }
    }

    /// A training window reads a gateway's newest rows, oldest first, across its logs (newest log
    /// first): exactly the tail of what the whole read returns.
    @Test func theNewestRowsOfAGatewayAreTheTailOfItsRows() throws {
        let dir = try TempDir()
        let log = try FleetLog(dataDirectory: dir.path)
        let rows = Self.rows(40, from: 1).enumerated().map { LoggedTransition(id: Int64($0.offset + 1), transition: $0.element.transition, signalNames: $0.element.signalNames) }
        #expect(try log.ingest(FleetBatch(gateway: "g", origin: 0, after: 0, last: 25, rows: Array(rows[0..<25])), learner: "a").inserted == 25)
        // The gateway's log file replaced: its rows 1–15 are a second sequence, seen later.
        var second = FleetBatch(gateway: "g", origin: 0, after: 0, last: 15, rows: Array(rows[25..<40]).enumerated().map {
            LoggedTransition(id: Int64($0.offset + 1), transition: $0.element.transition, signalNames: $0.element.signalNames)
        })
        second.log = "second-file"
        Thread.sleep(forTimeInterval: 0.01)   // first_seen is the clock: the second file is the newer
        #expect(try log.ingest(second, learner: "a").inserted == 15)
        #expect(try log.ingest(FleetBatch(gateway: "other", origin: 0, after: 0, last: 5, rows: Array(rows[0..<5])), learner: "a").inserted == 5)
        let all = try log.transitions(gateway: "g")
        #expect(all.count == 40)
        for n in [0, 1, 10, 15, 16, 30, 40, 41, 1000] {
            let newest = try log.transitions(gateway: "g", newest: n)
            #expect(Self.same(newest, Array(all.suffix(n))), "newest \(n): \(newest.count) rows")
        }
        #expect(try log.transitions(gateway: "nobody", newest: 10).isEmpty)
    }

    /// Rows like a plant's: a 12-wide normalised state drifting with noise (full-precision
    /// floats), a noisy reward, one tick a second, two raw signals, Q-values from a model.
    static func plantRows(_ n: Int, width: Int = 12) -> [LoggedTransition] {
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Double {   // splitmix64 → [-1, 1)
            seed &+= 0x9E37_79B9_7F4A_7C15
            var z = seed
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Double((z ^ (z >> 31)) >> 11) / Double(1 << 52) - 1
        }
        var s = (0..<width).map { _ in Float(next()) }
        var temp = 21.0
        return (0..<n).map { i in
            let ns = s.map { max(-1, min(1, $0 + Float(next()) * 0.05)) }
            let nextTemp = temp + next() * 0.1
            let t = Transition(time: 1_790_000_000 + Double(i) + next() * 0.002, tick: Int64(i), episode: Int64(i / 500), state: s,
                               action: Int(next() * 1.5 + 1.5), actor: .incumbent, reward: -abs(nextTemp - 21) + next() * 0.01,
                               nextState: ns, nextMask: nil, terminal: false, truncated: i % 500 == 499, mode: .shadow,
                               modelVersion: "7", qValues: (0..<3).map { _ in Float(next() * 10) }, modelAction: 1,
                               signals: [temp, 4.5 + next()], nextSignals: [nextTemp, 4.5 + next()])
            s = ns
            temp = nextTemp
            return LoggedTransition(id: Int64(i + 1), transition: t, signalNames: ["zone_temp", "outdoor_temp"])
        }
    }

    /// Bytes per row and encode time of the binary batch against compressed JSON (zlib level 6)
    /// and binary + zlib, on 5,000 plant-like rows in batches of 500. Printed for docs/fleet.md;
    /// the test asserts only what does not depend on the machine or the data (all read back).
    @Test func payloadFormatsMeasured() throws {
        let n = 5_000
        let rows = Self.plantRows(n)
        let batches = stride(from: 0, to: n, by: 500).map { i in
            FleetBatch(gateway: "ahu-7", origin: 0, after: rows[i].id - 1, last: rows[min(n, i + 500) - 1].id, rows: Array(rows[i..<min(n, i + 500)]))
        }
        let clock = ContinuousClock()
        var binary: [[UInt8]] = []
        let binaryTime = clock.measure { for b in batches { binary.append(b.encode(compress: false)) } }
        var deflated: [[UInt8]] = []
        let binaryZTime = clock.measure { for b in batches { deflated.append(b.encode()) } }
        let binaryZ = deflated.reduce(0) { $0 + $1.count }
        var jsonBytes = 0, zBytes = 0
        let encoder = JSONEncoder()
        var jsonTexts: [Data] = []
        let jsonTime = try clock.measure {
            for b in batches {
                let d = try encoder.encode(b.rows.map(JSONRow.init))
                jsonBytes += d.count
                zBytes += try Self.deflate(d).count
                jsonTexts.append(d)
            }
        }
        var decoded: [LoggedTransition] = []
        let decodeTime = try clock.measure { for b in deflated { decoded += try FleetBatch.decode(b).rows } }
        #expect(Self.same(decoded, rows))
        var raw: [LoggedTransition] = []
        for b in binary { raw += try FleetBatch.decode(b).rows }
        #expect(Self.same(raw, rows))
        #expect(try JSONDecoder().decode([JSONRow].self, from: jsonTexts[0]).count == 500)
        func us(_ d: Duration) -> Double { (Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12) / Double(n) }
        let binaryBytes = binary.reduce(0) { $0 + $1.count }
        print(String(format: "fleet payload (%d plant-like rows, state width 12, 2 signals, 3 Q-values; debug build): binary %.1f B/row, encode %.2f µs/row; binary deflated (zlib 6) %.1f B/row, encode %.2f µs/row, decode %.2f µs/row; JSON %.1f B/row, JSON+zlib-6 %.1f B/row, %.2f µs/row (encode + deflate)",
                     n, Double(binaryBytes) / Double(n), us(binaryTime), Double(binaryZ) / Double(n), us(binaryZTime), us(decodeTime),
                     Double(jsonBytes) / Double(n), Double(zBytes) / Double(n), us(jsonTime)))
        // The zlib levels the mapping offers (`fleet.deflate_level`; default 1): bytes and time,
        // every level reading back the same rows.
        var levels: [String] = []
        for level in [1, 3, 6, 9] {
            var bytes: [[UInt8]] = []
            let t = clock.measure { for b in batches { bytes.append(b.encode(compress: true, level: Int32(level))) } }
            var back: [LoggedTransition] = []
            for b in bytes { back += try FleetBatch.decode(b).rows }
            #expect(Self.same(back, rows), "level \(level)")
            levels.append(String(format: "level %d %.1f B/row, %.2f µs/row", level, Double(bytes.reduce(0) { $0 + $1.count }) / Double(n), us(t)))
        }
        print("fleet payload, binary deflated by zlib level (debug build): " + levels.joined(separator: "; "))
        // Small batches (a slow plant's part batches): the header and zlib's overhead per batch.
        for k in [1, 10, 100] {
            let b = FleetBatch(gateway: "ahu-7", log: UUID().uuidString.lowercased(), origin: 0, after: 0, last: Int64(k), rows: Array(rows[0..<k]))
            print("fleet payload: a batch of \(k) rows (with a log id) is \(b.encode().count) B deflated, \(b.encode(compress: false).count) B plain")
        }
    }

    struct JSONRow: Codable {
        var id: Int64, time: Double, tick: Int64, episode: Int64, state: [Float], action: Int?, actor: String, reward: Double
        var next_state: [Float], next_mask: UInt64?, terminal: Bool, truncated: Bool, mode: String, model_version: String?
        var q_values: [Float]?, model_action: Int?, flags: Int64, signal_names: [String]?, signals: [Double?]?, next_signals: [Double?]?
        init(_ r: LoggedTransition) {
            let t = r.transition
            id = r.id; time = t.time; tick = t.tick; episode = t.episode; state = t.state; action = t.action
            actor = t.actor.rawValue; reward = t.reward; next_state = t.nextState; next_mask = t.nextMask
            terminal = t.terminal; truncated = t.truncated; mode = t.mode.rawValue; model_version = t.modelVersion
            q_values = t.qValues; model_action = t.modelAction; flags = t.flags.rawValue; signal_names = r.signalNames
            signals = t.signals?.map { $0.isNaN ? nil : $0 }; next_signals = t.nextSignals?.map { $0.isNaN ? nil : $0 }
        }
    }

    struct ZlibFailed: Error { let code: Int32 }

    static func deflate(_ d: Data) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(compressBound(uLong(d.count))))
        var size = uLongf(out.count)
        let rc = d.withUnsafeBytes { src in
            compress2(&out, &size, src.bindMemory(to: Bytef.self).baseAddress, uLong(d.count), 6)
        }
        guard rc == Z_OK else { throw ZlibFailed(code: rc) }
        return Array(out.prefix(Int(size)))
    }
}
