import EdgeQLab
import EdgeQLog
import EdgeQRetrain
import EdgeQTopicMap
import Foundation
import Testing

/// The switchback trial's exogenous baseline (ExogenousBaseline.swift), fitted on real SQLite
/// logs: the incumbents' shadow logs of the lab's heater and thermal plants (the lab runs the
/// gateway's decision core and log writer), and logs written with the log writer where the
/// reward does or does not depend on the exogenous signals.
@Suite struct ExogenousBaselineTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func map(_ name: String) throws -> TopicMap {
        try TopicMap.load(path: root.appendingPathComponent("topics/\(name).yaml").path)
    }

    static func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-baseline-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    /// The incumbent's shadow log of a lab plant, read back.
    static func shadowLog(_ name: String, steps: Int, seed: UInt64, dir: URL) throws -> (TopicMap, [LoggedTransition]) {
        let map = try map(name)
        let path = dir.appendingPathComponent("\(name)-\(seed).sqlite").path
        switch name {
        case "heater":
            var p = HeaterLabPlant(seed: seed)
            _ = try Lab(map: map).run(&p, steps: steps, policy: .incumbent(dither: 0), seed: seed, logPath: path)
        default:
            var p = ThermalLabPlant(seed: seed)
            _ = try Lab(map: map).run(&p, steps: steps, policy: .incumbent(dither: 0), seed: seed, logPath: path)
        }
        return (map, try ExperienceLog.open(path: path, create: false).transitions(window: .all))
    }

    @Test(arguments: [("heater", 6 * 960), ("thermal", 2 * 2016)])
    func labShadowLogs(plant: String, steps: Int) throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (map, rows) = try Self.shadowLog(plant, steps: steps, seed: 11, dir: dir)
        let b = ExogenousBaseline.fit(map: map, rows: rows, reference: .incumbent)
        print("baseline \(plant): \(b.report)")
        guard case .ticks(let block) = map.learning.trial.block else { return }
        let T = Double(map.learning.trial.burnIn)
        for tau in [[T / 4, T], [T / 8, T / 2, T], [T / 4], [T / 4, T / 2, T, 2 * T]] {
            for paired in [0, 12] {
                var s = ExogenousBaseline.Settings(block: block, burnIn: map.learning.trial.burnIn)
                s.changeTimeConstants = tau
                s.maxPairedSignals = paired
                let v = ExogenousBaseline.fit(signals: map.modelSignalNames.exogenous, rows: rows, reference: .incumbent, settings: s)
                print("variant \(plant) tau \(tau) pairs \(paired): ratio \(v.report.heldOutVarianceRatio ?? -1) r2 \(v.report.heldOutTickR2 ?? -1)")
            }
        }
        #expect(b.model != nil)
    }
}
