// The Last Will: a process (`edgeq mqtt-echo --will-topic …`) connects with a will and
// is killed with SIGKILL; the broker sees the socket close and publishes the will, which
// a subscriber receives (retained). A clean stop, by contrast, sends no will.
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct LastWillTests {
    @Test func willIsPublishedWhenTheProcessIsKilled() throws {
        let broker = try MosquittoBroker()
        let dir = try temporaryFolder("edgeq-will")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("stdout").path
        let gateway = try ChildProcess(BuiltEdgeQ.path, [
            "mqtt-echo", "--broker", broker.url, "--in", "gw/ping", "--out", "gw/pong",
            "--will-topic", "edgeq/gw1/status", "--will-payload", #"{"state":"offline"}"#,
        ], stdoutPath: out, stderrPath: dir.appendingPathComponent("stderr").path)
        let ready = eventually(timeout: 30) {
            ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").contains("ready")
        }
        #expect(ready, "the echo process did not connect")

        let watcher = try connected(configuration(broker, "watch"), subscribing: [
            ("edgeq/gw1/status", .atLeastOnce), ("gw/pong", .atLeastOnce),
        ])
        // It is alive and connected: it echoes.
        let echoed = eventually(timeout: 10) {
            _ = try? watcher.publish("gw/ping", "ping")
            return receive(watcher, topic: "gw/pong", timeout: 0.1)?.text == "ping"
        }
        #expect(echoed, "the echo process does not echo")

        gateway.signal(SIGKILL)
        #expect(gateway.wait(timeout: 5) == 128 + SIGKILL)
        let will = receive(watcher, topic: "edgeq/gw1/status", timeout: 10)
        #expect(will?.text == #"{"state":"offline"}"#)
    }

    @Test func cleanStopSendsNoWill() throws {
        let broker = try MosquittoBroker()
        var config = try configuration(broker, "gw")
        config.will = LastWill(topic: "edgeq/gw2/status", payload: Array("offline".utf8), retain: false)
        let gw = try connected(config)
        let watcher = try connected(configuration(broker, "watch"), subscribing: [
            ("edgeq/gw2/status", .atLeastOnce), ("sync", .atLeastOnce),
        ])
        #expect(publishUntilReceived(watcher, watcher, topic: "sync", payload: "1") != nil)
        gw.stop()
        // A later message on another topic arrives; the will never does.
        #expect(publishUntilReceived(watcher, watcher, topic: "sync", payload: "2") != nil)
        #expect(receive(watcher, topic: "edgeq/gw2/status", timeout: 0.5) == nil)
    }
}
