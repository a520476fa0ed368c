import EdgeQLog
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq run` as a real process: the Last Will on kill -9, and no transition lost or
/// duplicated across broker restarts and SIGTERM.
@Suite struct RunCommandTests {
    static let mapping = processMapping(id: "p1", plant: "p", learning: "  retrain: {every_transitions: 1000000}")

    func setUp() throws -> (TempDir, String) {
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("p.yaml").path
        try Self.mapping.write(toFile: file, atomically: true, encoding: .utf8)
        return (dir, file)
    }

    func observer(_ broker: MosquittoBroker, _ filter: String) throws -> MQTTClient { try plantClient(broker, filter) }

    func waitStatus(_ c: MQTTClient, contains text: String, timeout: Double = 15) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let m = c.receive(timeout: 0.1), m.topic == "edgeq/p1/status" {
                let s = String(decoding: m.payload, as: UTF8.self)
                if s.contains(text) { return s }
            }
        }
        return nil
    }

    @Test func killDashNineLeavesTheStatusOffline() throws {
        let broker = try MosquittoBroker()
        let (dir, file) = try setUp()
        let obs = try observer(broker, "edgeq/p1/status")
        defer { obs.stop() }
        let gw = try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url, "--data", dir.url.path + "/data"],
                                  stderrPath: dir.url.appendingPathComponent("gw.log").path)
        #expect(waitStatus(obs, contains: #""state":"online""#) != nil)
        gw.signal(SIGKILL)
        gw.wait(timeout: 10)
        let offline = waitStatus(obs, contains: #""state":"offline""#)
        #expect(offline != nil, "no offline status (Last Will) after kill -9")
    }

    @Test func noTransitionLostOrDuplicatedAcrossBrokerRestartsAndSIGTERM() throws {
        let broker = try MosquittoBroker()
        let (dir, file) = try setUp()
        let data = dir.url.appendingPathComponent("data").path
        let gw = try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url, "--data", data],
                                  stderrPath: dir.url.appendingPathComponent("gw.log").path)
        defer { gw.stop(grace: 10) }
        var plant = try observer(broker, "edgeq/p1/status")
        #expect(waitStatus(plant, contains: #""state":"online""#) != nil)
        var step = 0
        for round in 0..<4 {
            // The plant publishes 50 steps (state, then the incumbent's command).
            for _ in 0..<50 {
                _ = try plant.publish("plant/p/state", "{\"step\":\(step),\"x\":\(Double(step % 9) - 4)}", qos: .atLeastOnce)
                _ = try plant.publish("plant/p/cmd", "{\"a\":\(step % 2)}", qos: .atLeastOnce)
                step += 1
                usleep(2_000)
            }
            usleep(300_000)
            guard round < 3 else { break }
            // The broker dies and comes back; both sides reconnect.
            broker.kill9()
            usleep(300_000)
            try broker.start()
            plant.stop()
            plant = try observer(broker, "edgeq/p1/status")
            // The gateway is back once its status is published again (retained: republished on connect).
            _ = waitStatus(plant, contains: #""state":"online""#, timeout: 5)
            usleep(1_500_000)
        }
        // SIGTERM: stop deciding, flush, offline status, exit 0.
        gw.signal(SIGTERM)
        let code = gw.wait(timeout: 30)
        #expect(code == 0, "edgeq run exited \(String(describing: code)); log:\n\((try? String(contentsOf: dir.url.appendingPathComponent("gw.log"), encoding: .utf8)) ?? "")")
        plant.stop()

        let log = try ExperienceLog.open(dataDirectory: data, create: false)
        let rows = try log.transitions(window: .all).map(\.transition)
        let ticks = Set(rows.map(\.tick))
        #expect(ticks.count == rows.count, "duplicated ticks in the log")
        // 200 ticks were decided; each tick but the very first closes one transition. A tick
        // lost while the broker was down would show as a gap in the states' x sequence.
        #expect(rows.count == step - 1, "\(rows.count) rows for \(step) ticks")
        #expect(try log.integrityCheck() == "ok")
    }
}
