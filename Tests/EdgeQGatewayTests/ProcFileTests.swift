import EdgeQCore
import Foundation
import Testing

/// `ProcFile.read` reads a /proc file whole. Foundation's `String(contentsOfFile:)` stops at the
/// first 4 KB of such a file (its size is 0 to `stat`): the e2e bench's check for a shared Swift
/// runtime, the gateway's release of its code pages and the broker fixture's listening check
/// read /proc/PID/maps and /proc/net/tcp, which are longer than that.
@Suite struct ProcFileTests {
    @Test func aProcFileIsReadWholeAndAnOrdinaryFileAsItIs() throws {
        // This test process maps dozens of files: its maps are several pages long.
        let maps = try #require(ProcFile.read("/proc/self/maps"))
        #expect(maps.utf8.count > 8192, "\(maps.utf8.count) bytes")
        #expect(maps.hasSuffix("\n"))
        let lines = maps.split(separator: "\n")
        #expect(lines.allSatisfy { $0.split(separator: " ", omittingEmptySubsequences: true).count >= 5 }, "a line cut short")
        // The stack is mapped high: its line comes near the end, past the first page.
        #expect(lines.contains { $0.hasSuffix("[stack]") })
        let foundation = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
        #expect(foundation.utf8.count <= maps.utf8.count)

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("procfile-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = (0..<20_000).map { "line \($0)\n" }.joined()
        let url = dir.appendingPathComponent("plain.txt")
        try Data(text.utf8).write(to: url)
        #expect(ProcFile.read(url.path) == text)
        #expect(ProcFile.read(dir.appendingPathComponent("missing").path) == nil)
    }
}
