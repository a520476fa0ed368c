import EdgeQLog
import EdgeQTestSupport
import Foundation
import Testing

/// The audit table of control-plane commands (docs/log.md, "Audit"): rows written in one
/// transaction per batch through a connection of their own, beside a running transition writer;
/// only the newest rows kept; exported as CSV (quoted as needed) and JSON lines.
@Suite struct AuditTests {
    func record(_ i: Int) -> AuditRecord {
        AuditRecord(time: 1_790_000_000 + Double(i), key: i % 2 == 0 ? "alice" : nil, verb: "mode",
                    command: #"{"id":"\#(i)","mode":"control"}"#, result: i % 2 == 0 ? .accepted : .refused,
                    reason: i % 2 == 0 ? nil : "unsigned", ok: i % 2 == 0, error: i % 2 == 0 ? nil : "unsigned command, sign it")
    }

    @Test func batchesAreKeptToTheNewestRowsAndExported() throws {
        let dir = try TempDir()
        let log = try ExperienceLog.open(path: dir.logPath, gatewayID: "gw")
        let writer = try log.makeWriter()
        defer { try? writer.close() }
        for k in 0..<50 { _ = writer.submit(sample(k)) }   // the transition writer commits meanwhile
        try log.appendAudit((0..<6).map(record), keep: 4)
        try log.appendAudit([record(6)], keep: 4)
        try writer.flush()
        let rows = try log.auditRecords()
        #expect(rows.map(\.record) == (3...6).map(record), "\(rows)")
        #expect(try log.rowCount() == 50)

        let csv = dir.path + "/audit.csv"
        #expect(try log.exportAudit(format: .csv, to: .file(csv)) == 4)
        let lines = try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n")
        #expect(lines.first == "id,gateway_id,time,key,verb,command,result,reason,ok,error")
        #expect(lines[1].hasSuffix(#","{""id"":""3"",""mode"":""control""}",refused,unsigned,0,"unsigned command, sign it""#), "\(lines[1])")
        let jsonl = dir.path + "/audit.jsonl"
        #expect(try log.exportAudit(format: .jsonl, window: .lastRows(1), to: .file(jsonl)) == 1)
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: jsonl))) as? [String: Any]
        #expect(object?["key"] as? String == "alice" && object?["ok"] as? Bool == true && object?["result"] as? String == "accepted")
        #expect(object?["command"] as? String == #"{"id":"6","mode":"control"}"#)
    }
}
