import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq run` as a Sparkplug B edge node, killed: the broker publishes its Will, the NDEATH,
/// which pysparkplug (as the host application; Tests/EdgeQGatewayTests/python/sparkplug_peer.py)
/// decodes with the bdSeq of the birth; the next start announces the next bdSeq.
@Suite struct SparkplugProcessTests {
    static let mapping = processMapping(id: "spk", plant: "spk", learning: "  retrain: {every_transitions: 1000000}")
        + "\nsparkplug: {group: plant1, node: edgeq-spk}\n"

    /// The host's lines of one type, each's `metrics` object.
    static func metrics(_ file: URL, _ type: String) -> [[String: Any]] {
        let text = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").filter { $0.hasPrefix(type + " ") }.compactMap {
            let o = (try? JSONSerialization.jsonObject(with: Data($0.dropFirst(type.count + 1).utf8))) as? [String: Any]
            return o?["metrics"] as? [String: Any]
        }
    }

    @Test func killDashNineMakesTheBrokerPublishTheNDEATHWithTheBirthsBdSeq() throws {
        let python = PackageRoot.url.appendingPathComponent(".venv-sparkplug/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: python) else {
            Issue.record("\(python) is missing: run scripts/setup.sh (it installs pysparkplug in its own virtual environment)")
            return
        }
        let script = PackageRoot.url.appendingPathComponent("Tests/EdgeQGatewayTests/python/sparkplug_peer.py").path
        let broker = try MosquittoBroker()
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("spk.yaml").path
        try Self.mapping.write(toFile: file, atomically: true, encoding: .utf8)
        let out = dir.url.appendingPathComponent("host.out")
        let host = try ChildProcess(python, [script, "host", "--port", "\(broker.port)", "--group", "plant1", "--node", "edgeq-spk",
                                             "--control", "test/spk/host"],
                                    stdoutPath: out.path, stderrPath: dir.url.appendingPathComponent("host.err").path)
        defer { host.signal(SIGKILL); _ = host.wait(timeout: 10) }
        #expect(eventually(timeout: 15) { ((try? String(contentsOf: out, encoding: .utf8)) ?? "").contains("ready") })

        let data = dir.url.appendingPathComponent("data").path
        func start() throws -> ChildProcess {
            try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url, "--data", data],
                             stderrPath: dir.url.appendingPathComponent("gw.log").path)
        }
        let gw = try start()
        #expect(eventually(timeout: 20) { Self.metrics(out, "nbirth").count == 1 }, "\(String(describing: try? String(contentsOf: out, encoding: .utf8)))")
        let bdSeq = Self.metrics(out, "nbirth").first?["bdSeq"] as? Int
        #expect(bdSeq == 0)
        gw.signal(SIGKILL)
        _ = gw.wait(timeout: 10)
        // The kernel closes the killed process's socket: the broker publishes the Will.
        #expect(eventually(timeout: 10) { Self.metrics(out, "ndeath").count == 1 }, "broker log:\n\(broker.log())")
        #expect(Self.metrics(out, "ndeath").first?["bdSeq"] as? Int == bdSeq)

        // The next run is a new session: its NBIRTH carries the next bdSeq.
        let again = try start()
        defer { _ = again.stop(grace: 10) }
        #expect(eventually(timeout: 20) { Self.metrics(out, "nbirth").count == 2 })
        #expect(Self.metrics(out, "nbirth").last?["bdSeq"] as? Int == 1)
        #expect(Self.metrics(out, "nbirth").last?["EdgeQ/Mode"] as? String == "shadow")
    }
}
