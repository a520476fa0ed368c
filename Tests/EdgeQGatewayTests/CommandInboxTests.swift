@testable import EdgeQGateway
import EdgeQMQTT
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Testing

/// The hand-off of command messages from the decision thread to the command thread is bounded
/// (a flood of commands must not grow memory without bound): at most 1,024 messages and 8 MiB
/// wait; beyond, a message is dropped unread and counted (`edgeq_commands_dropped_total`), and
/// the audit table gets one `dropped` row for them. The gateway is built but not run, so the
/// command thread takes nothing out while the test fills the inbox.
@Suite struct CommandInboxTests {
    @Test func aFloodBeyondTheBoundIsDroppedAndCounted() throws {
        let dir = try TempDir()
        var o = GatewayOptions(map: try TopicMap.parse(yaml: testMapping(), file: "test.yaml"))
        o.dataDirectory = dir.url.path
        o.broker = "mqtt://127.0.0.1:1"   // never connected
        let g = try Gateway(o)
        let topic = "edgeq/t1/cmd/mode"
        for _ in 0..<1_100 { g.enqueueCommand(MQTTMessage(topic: topic, payload: Array(#"{"mode":"control"}"#.utf8))) }
        #expect(g.commandInbox.count == Gateway.maxPendingCommands)
        #expect(g.renderMetrics().contains("edgeq_commands_dropped_total 76\n"), "\(g.renderMetrics())")

        // By bytes: 1 MiB payloads, 8 MiB in all.
        let h = try Gateway({ var p = o; p.dataDirectory = dir.url.appendingPathComponent("b").path; return p }())
        let big = [UInt8](repeating: 32, count: 1 << 20)
        for _ in 0..<10 { h.enqueueCommand(MQTTMessage(topic: topic, payload: big)) }
        #expect(h.commandInbox.count == 8)
        #expect(h.renderMetrics().contains("edgeq_commands_dropped_total 2\n"))

        // The command thread works the inbox off (all refused: no key is trusted here) and
        // audits the drops in one row.
        g.startCommandThread()
        #expect(eventually(timeout: 30) { g.commandInbox.count == 0 })
        g.stopCommandThread()
        let audit = try g.log.auditRecords().map(\.record)
        #expect(audit.filter { $0.result == .refused }.count == Gateway.maxPendingCommands)
        let dropped = audit.filter { $0.result == .dropped }
        #expect(dropped.count == 1 && dropped.first?.command == #"{"count":76}"# && dropped.first?.reason == "queue_full", "\(dropped)")
        #expect(g.renderMetrics().contains(#"edgeq_commands_refused_total{reason="no_trusted_keys"} 1024"#))
    }
}
