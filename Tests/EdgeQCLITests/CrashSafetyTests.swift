import EdgeQLog
import EdgeQMQTT
import EdgeQTestSupport
import EdgeQTrust
import Foundation
import Testing

/// kill -9 at several points of retraining and promotion (EDGEQ_FAULT, see
/// Sources/EdgeQGateway/FaultInjection.swift): on restart the served model loads (checksum and
/// reference set verified) and the log passes `PRAGMA integrity_check`.
@Suite struct CrashSafetyTests {
    static let mapping = processMapping(id: "c1", plant: "c", learning: """
          hidden: [16, 16]
          retrain: {every_transitions: none}
          checks: {quantization_agreement: 0, max_unsupported: 1, min_rows: 100}
          promotion: {policy: auto, min_agreement: 0}
        """)

    func client(_ broker: MosquittoBroker, _ filter: String) throws -> MQTTClient { try plantClient(broker, filter) }

    /// Forgets what the client received so far (older statuses must not satisfy a wait).
    func drain(_ c: MQTTClient) {
        while c.receive(timeout: 0.05) != nil {}
    }

    /// Bounds on waiting, not measurements: a retraining takes seconds alone and over a minute
    /// with the whole suite and a busy loop on two cores (all five cases missed 30 s so).
    func waitFor(_ c: MQTTClient, topic: String, contains text: String, timeout: Double = 120) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let m = c.receive(timeout: 0.1), m.topic == topic else { continue }
            let s = String(decoding: m.payload, as: UTF8.self)
            if s.contains(text) { return s }
        }
        return nil
    }

    func gateway(_ file: String, _ broker: MosquittoBroker, _ data: String, log: String, fault: String? = nil) throws -> ChildProcess {
        try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url, "--data", data],
                         stderrPath: log, environment: fault.map { ["EDGEQ_FAULT": $0] } ?? [:])
    }

    @Test(arguments: ["retrain-before-save", "store-before-rename", "store-after-rename", "current-before-rename", "current-after-rename"])
    func killDashNineDuringRetrainingOrPromotion(point: String) throws {
        let broker = try MosquittoBroker()
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("c.yaml").path
        try Self.mapping.write(toFile: file, atomically: true, encoding: .utf8)
        let data = dir.url.appendingPathComponent("data").path
        let alice = try TestKey("alice", in: dir.url.appendingPathComponent("private"), data: URL(fileURLWithPath: data))
        let plant = try client(broker, "edgeq/c1/#")
        defer { plant.stop() }

        // 1. A gateway logs 250 shadow ticks; then a first model v1 is trained and served.
        var gw = try gateway(file, broker, data, log: dir.url.appendingPathComponent("gw1.log").path)
        #expect(waitFor(plant, topic: "edgeq/c1/status", contains: #""state":"online""#) != nil)
        for i in 0..<250 {
            let x = 3 * sin(Double(i) * 0.7)
            _ = try plant.publish("plant/c/state", "{\"step\":\(i),\"x\":\(x)}", qos: .atLeastOnce)
            _ = try plant.publish("plant/c/cmd", "{\"a\":\(x > 0 ? 1 : 0)}", qos: .atLeastOnce)
        }
        _ = try plant.publish("edgeq/c1/cmd/retrain", try alice.signed("c1", "retrain", #"{"steps":300}"#), qos: .atLeastOnce)
        #expect(waitFor(plant, topic: "edgeq/c1/retrain", contains: #""promoted":true"#) != nil, "the first model was not served")

        // 2. Restart with the crash point armed, retrain again: the process dies there.
        gw.signal(SIGTERM)
        #expect(gw.wait(timeout: 30) == 0)
        drain(plant)
        gw = try gateway(file, broker, data, log: dir.url.appendingPathComponent("gw2.log").path, fault: point)
        #expect(waitFor(plant, topic: "edgeq/c1/status", contains: #""version":1"#) != nil)
        _ = try plant.publish("edgeq/c1/cmd/retrain", try alice.signed("c1", "retrain", #"{"steps":300}"#), qos: .atLeastOnce)
        let code = gw.wait(timeout: 180)
        #expect(code == 128 + SIGKILL, "the gateway was not killed at \(point) (exit \(String(describing: code)))")
        let log2 = (try? String(contentsOf: dir.url.appendingPathComponent("gw2.log"), encoding: .utf8)) ?? ""
        #expect(log2.contains("EDGEQ_FAULT: killing the process at \(point)"))

        drain(plant)
        // 3. Restart: a complete, verified model is served (v1, or v2 once the switch was
        //    recorded in models/served.log: the record is written before `current` is moved,
        //    and a start completes a recorded switch), and the log is intact.
        gw = try gateway(file, broker, data, log: dir.url.appendingPathComponent("gw3.log").path)
        let status = waitFor(plant, topic: "edgeq/c1/status", contains: #""state":"online""#)
        let text = try #require(status)
        #expect(text.contains(#""sha256":""#), "no model served after the crash at \(point): \(text)")
        let expected = point == "current-after-rename" || point == "current-before-rename" ? #""version":2"# : #""version":1"#
        #expect(text.contains(expected), "after a crash at \(point): \(text)")
        gw.signal(SIGTERM)
        #expect(gw.wait(timeout: 30) == 0)
        let log = try ExperienceLog.open(dataDirectory: data, create: false)
        #expect(try log.integrityCheck() == "ok")
        #expect(try log.rowCount() >= 240)
        // No half-written version folder is left behind.
        let models = try FileManager.default.contentsOfDirectory(atPath: data + "/models")
        #expect(!models.contains { $0.hasPrefix(".incoming") })
    }
}
