// `edgeq mqtt-echo --inline` (the `edgeq bench mqtt` echo of the gateway's decision path):
// the real process republishes inside libmosquitto's message callback; every message comes
// back once, in order, with its payload, and SIGTERM stops it cleanly with the count.
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct InlineEchoTests {
    @Test func inlineEchoReturnsEveryMessageInOrder() throws {
        let broker = try MosquittoBroker()
        let dir = try temporaryFolder("edgeq-inline-echo")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("stdout").path, err = dir.appendingPathComponent("stderr").path
        let echo = try ChildProcess(BuiltEdgeQ.path, [
            "mqtt-echo", "--broker", broker.url, "--in", "e/in", "--out", "e/out", "--qos", "1", "--inline",
        ], stdoutPath: out, stderrPath: err)
        let ready = eventually(timeout: 30) {
            ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").contains("ready")
        }
        #expect(ready, "the echo process did not connect")
        let client = try connected(configuration(broker, "drive"), subscribing: [("e/out", .atLeastOnce)])
        // The subscription is in place once one probe comes back.
        let echoed = eventually(timeout: 10) {
            _ = try? client.publish("e/in", "probe")
            return receive(client, topic: "e/out", timeout: 0.1)?.text == "probe"
        }
        #expect(echoed, "the inline echo does not echo")
        while receive(client, topic: "e/out", timeout: 0.3) != nil {}
        for i in 0..<200 { _ = try client.publish("e/in", Array("m\(i)".utf8), qos: .atLeastOnce) }
        var got: [String] = []
        while got.count < 200, let m = receive(client, topic: "e/out", timeout: 10) { got.append(m.text) }
        #expect(got == (0..<200).map { "m\($0)" })
        echo.signal(SIGTERM)
        #expect(echo.wait(timeout: 10) == 0)
        let text = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        #expect(text.contains("dropped 0"), "stderr: \(text)")
    }
}
