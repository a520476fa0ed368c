import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq check`, run as the real command on real files.
@Suite struct CheckCommandTests {
    static var root: URL { PackageRoot.url }
    static let topicFiles = PackageRoot.topicFiles

    @Test func everyFileInTopicsPasses() throws {
        #expect(Self.topicFiles.count >= 5)
        for f in Self.topicFiles {
            let r = try EdgeQBinary.run(["check", f])
            #expect(r.code == 0, "edgeq check \(f):\n\(r.stderr)")
            #expect(r.stdout.contains("\(f): ok"))
            for part in ["signals", "state      width", "actions", "subscribes", "publishes"] {
                #expect(r.stdout.contains(part), "summary of \(f) lacks \(part):\n\(r.stdout)")
            }
        }
    }

    @Test func thermalSummaryShowsWidthsAndTopics() throws {
        let f = Self.root.appendingPathComponent("topics/thermal.yaml").path
        let r = try EdgeQBinary.run(["check", f])
        #expect(r.code == 0)
        #expect(r.stdout.contains("state      width 12 = 12 columns × 1 tick"))
        #expect(r.stdout.contains("subscribes plant/thermal/state, plant/thermal/cmd"))
        #expect(r.stdout.contains("publishes  plant/thermal/cmd"))
        #expect(r.stdout.contains("handover   take → plant/thermal/mode; give → plant/thermal/mode; Last Will on plant/thermal/mode (keep-alive 5 s)"), "\(r.stdout)")
    }

    /// The switchback trial's settings are summarized when the policy is `trial`.
    @Test func referenceSummaryShowsTheTrial() throws {
        let f = Self.root.appendingPathComponent("topics/reference.yaml").path
        let r = try EdgeQBinary.run(["check", f])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout.contains("promotion trial"), "\(r.stdout)")
        #expect(r.stdout.contains("trial      blocks of 96 ticks (burn-in 8), better with confidence 0.95, 4…30 pairs, no tick budget; control share 0.1 over 20 pairs"),
                "\(r.stdout)")
    }

    @Test func invalidFileExits65WithEveryErrorAtItsPlace() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("bad.yaml").path
        try """
        gateway:
          id: t
          brokrs: [mqtt://x:1]
        signals:
          - {name: a, topic: p/a, range: [5, 1]}
        state:
          features:
            - {name: e, expr: a + c * 2}
        tick: {trigger: p/a}
        reward: a
        actions:
          list: []

        """.write(toFile: file, atomically: true, encoding: .utf8)
        let r = try EdgeQBinary.run(["check", file])
        #expect(r.code == 65)
        let lines = r.stderr.split(separator: "\n").map(String.init)
        #expect(lines.contains("\(file):3:3: unknown key 'brokrs' in gateway; did you mean 'brokers'?"), "\(r.stderr)")
        #expect(lines.contains("\(file):5:34: range [5, 1] is empty: min must be less than max"), "\(r.stderr)")
        #expect(lines.contains { $0.hasPrefix("\(file):8:27: in feature 'e': unknown signal or feature 'c'") }, "\(r.stderr)")
        #expect(lines.contains("\(file):12:9: actions list is empty: give at least one action"), "\(r.stderr)")
    }

    @Test func missingFileExits66() throws {
        let r = try EdgeQBinary.run(["check", "/nonexistent/\(UUID().uuidString).yaml"])
        #expect(r.code == 66)
        #expect(r.stderr.contains("cannot read the file"))
    }
}
