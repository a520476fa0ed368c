@testable import EdgeQGateway
import Foundation
import Logging
import Testing

/// The shipper's durable cursor file (docs/fleet.md, "The cursor"): the first write replaces the
/// file crash-safe, later moves overwrite its one-sector record in place; what the loader reads
/// back is the last value written, whatever was there before.
@Suite struct FleetCursorFileTests {
    let dir: URL
    var url: URL { dir.appendingPathComponent(FleetShipper.cursorFileName) }
    let logger = Logger(label: "edgeq.fleet.test")

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-cursor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    func json(_ acked: Int64, log: String = "log-1", topic: String = "fleet/t") -> String {
        #"{"acked":\#(acked),"log":"\#(log)","topic":"\#(topic)","gateway":"g1"}"#
    }

    func inode() throws -> UInt64 {
        try #require((try FileManager.default.attributesOfItem(atPath: url.path)[.systemFileNumber] as? NSNumber)?.uint64Value)
    }

    /// Moves after the first overwrite the record in place: the same file (inode), one sector
    /// long, a single JSON object that reads back as the newest value — also after a longer
    /// record (longer log id) was followed by a shorter one.
    @Test func laterMovesOverwriteTheRecordInPlace() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        // A cursor left by an earlier build (a short file): replaced by the first write.
        try Data((json(7) + "\n").utf8).write(to: url)
        let before = try inode()
        var file = FleetShipper.CursorFile(url: url)
        try file.write(json(1200, log: "a-much-longer-log-identity-than-the-next-one"))
        let first = try inode()
        #expect(first != before, "the first write replaces the file")
        for acked: Int64 in [1300, 99_999_999_999, 1400] {
            try file.write(json(acked))
            #expect(try inode() == first, "a move is written in place")
            let data = try Data(contentsOf: url)
            #expect(data.count == FleetShipper.CursorFile.recordSize)
            let loaded = FleetShipper.loadCursor(url, topic: "fleet/t", logger: logger)
            #expect(loaded.acked == acked && loaded.log == "log-1")
            let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            #expect((object["acked"] as? NSNumber)?.int64Value == acked)
        }
    }

    /// A record longer than a sector (a very long fleet topic) is written by replacing the file,
    /// every time, and still reads back.
    @Test func aRecordLongerThanASectorReplacesTheFile() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let topic = "fleet/" + String(repeating: "t", count: 600)
        var file = FleetShipper.CursorFile(url: url)
        try file.write(json(5, topic: topic))
        let first = try inode()
        try file.write(json(6, topic: topic))
        #expect(try inode() != first, "not in place: the record does not fit")
        #expect(FleetShipper.loadCursor(url, topic: topic, logger: logger).acked == 6)
        // Back to a short record: in place again after one replacement.
        try file.write(json(7))
        let short = try inode()
        try file.write(json(8))
        #expect(try inode() == short)
        #expect(FleetShipper.loadCursor(url, topic: "fleet/t", logger: logger).acked == 8)
    }

    /// The cursor deleted, or replaced by another file, while the shipper runs (an operator, a
    /// restore from a backup): the next move writes a new cursor at the path rather than into
    /// the open file nobody reads any more.
    @Test func aCursorDeletedOrReplacedFromOutsideIsWrittenAnew() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        var file = FleetShipper.CursorFile(url: url)
        try file.write(json(100))
        try file.write(json(110))
        try FileManager.default.removeItem(at: url)
        try file.write(json(120))
        #expect(FleetShipper.loadCursor(url, topic: "fleet/t", logger: logger).acked == 120)
        try file.write(json(130))
        let other = dir.appendingPathComponent("restored.json")
        try Data((json(5) + "\n").utf8).write(to: other)
        #expect(rename(other.path, url.path) == 0)
        try file.write(json(140))
        #expect(FleetShipper.loadCursor(url, topic: "fleet/t", logger: logger).acked == 140)
        let inPlace = try inode()
        try file.write(json(150))
        #expect(try inode() == inPlace, "in place again once the new file is open")
        #expect(FleetShipper.loadCursor(url, topic: "fleet/t", logger: logger).acked == 150)
    }

    /// A record that no longer parses (a torn write) makes the shipper start from the log's
    /// beginning (the learner stores every row once), never from a wrong position.
    @Test func aDamagedRecordShipsFromTheStart() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        var file = FleetShipper.CursorFile(url: url)
        try file.write(json(1200))
        try file.write(json(1300))
        let handle = try FileHandle(forWritingTo: url)
        try handle.write(contentsOf: Data(#"{"acked":13"#.utf8) + Data(repeating: 0, count: 20))
        try handle.close()
        let loaded = FleetShipper.loadCursor(url, topic: "fleet/t", logger: logger)
        #expect(loaded.acked == 0 && loaded.log == "")
    }
}
