import EdgeQLab
import EdgeQLog
import EdgeQTopicMap
import Foundation
import Testing

@Suite struct LabTests {
    static func thermalMap() throws -> TopicMap {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try TopicMap.load(path: root.appendingPathComponent("topics/thermal.yaml").path)
    }

    static func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-lab-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    @Test func shadowLogHasTheIncumbentsActions() throws {
        let map = try Self.thermalMap()
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("log.sqlite").path
        var plant = ThermalLabPlant(seed: 7)
        let r = try Lab(map: map).run(&plant, steps: 2016 + 100, policy: .incumbent(dither: 0.1), seed: 7, logPath: path)
        let rows = try ExperienceLog.open(path: path, create: false).transitions(window: .all).map(\.transition)
        // One week and 100 steps: the week's last state closes a transition and opens none.
        #expect(rows.count == 2016 + 100)
        #expect(r.rowsLogged == rows.count)
        #expect(rows.allSatisfy { $0.actor == .incumbent && $0.action != nil && $0.mode == .shadow })
        #expect(rows.filter(\.truncated).count == 1)
        // No transition links two episodes.
        #expect(Set(rows.map(\.episode)) == [0, 1])
    }
}
