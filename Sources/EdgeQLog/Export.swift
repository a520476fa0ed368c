#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import EdgeQCore
import Foundation

/// The formats `export` writes.
public enum ExportFormat: String, Sendable, CaseIterable {
    /// Comma-separated values with a header; vectors expanded into `s0…`, `ns0…`, `q0…`.
    case csv
    /// One JSON object per line; vectors as arrays.
    case jsonl
}

/// Where `export` writes.
public enum ExportOutput: Sendable {
    /// Standard output.
    case standardOutput
    /// A file, created or truncated.
    case file(String)
}

extension ExperienceLog {
    /// Streams the rows in `window` to `output`, oldest first, one row in memory at a time.
    /// docs/log.md shows both formats.
    ///
    /// CSV columns: `id, gateway_id, time, tick, episode, action, actor, reward, terminal,
    /// truncated, mode, model_version, model_action, next_mask, flags, s0…, ns0…, q0…,
    /// signal.NAME…, next_signal.NAME…`; the number of `s`/`ns` columns is the widest state in
    /// the window, of `q` the widest Q-vector; the signal columns are the names of every signal
    /// set the window's rows use (first set first, each name once). Shorter rows, rows without
    /// a signal, and unknown values leave the cell empty. Non-finite values are written empty
    /// (CSV) or `null` (JSON). JSON lines carry `signals` and `next_signals` as objects from
    /// name to value (`null` for a row without signal values).
    ///
    /// - Returns: the number of rows written.
    /// - Throws: `LogError` `.export` when the output cannot be opened or written; `.query`
    ///   when reading fails.
    @discardableResult
    public func export(format: ExportFormat, window: LogWindow = .all, to output: ExportOutput) throws(LogError) -> Int {
        // A connection of its own: a long export holds a WAL snapshot, never the writer.
        let db = try SQLiteConnection(path: path, create: false)
        let sink = try OutputSink(output)
        var rows = 0
        let gateway = jsonString(gatewayID)
        switch format {
        case .csv:
            let widths = try db.prepare("SELECT max(state_width), max(length(q_values)) / 4 FROM (\(Schema.windowed(window, select: "SELECT id, state_width, q_values FROM transitions")))")
            var stateWidth = 0
            var qWidth = 0
            if try widths.step() {
                stateWidth = widths.isNull(0) ? 0 : Int(widths.int64(0))
                qWidth = widths.isNull(1) ? 0 : Int(widths.int64(1))
            }
            var header = ["id", "gateway_id", "time", "tick", "episode", "action", "actor", "reward", "terminal",
                          "truncated", "mode", "model_version", "model_action", "next_mask", "flags"]
            header += (0..<stateWidth).map { "s\($0)" }
            header += (0..<stateWidth).map { "ns\($0)" }
            header += (0..<qWidth).map { "q\($0)" }
            // The signal columns: the names of the sets the window uses, in set order.
            let sets = try Schema.signalSets(db)
            let used = try db.prepare("SELECT DISTINCT signal_set FROM (\(Schema.windowed(window, select: "SELECT id, signal_set FROM transitions"))) WHERE signal_set IS NOT NULL ORDER BY signal_set")
            var signalColumns: [String] = []
            var columnOf: [String: Int] = [:]
            while try used.step() {
                for name in sets[used.int64(0)] ?? [] where columnOf[name] == nil {
                    columnOf[name] = signalColumns.count
                    signalColumns.append(name)
                }
            }
            header += signalColumns.map { csvCell("signal." + $0) }
            header += signalColumns.map { csvCell("next_signal." + $0) }
            try sink.write(header.joined(separator: ",") + "\n")
            let gatewayCell = csvCell(gatewayID)
            let s = try db.prepare(Schema.windowed(window))
            var now = [String](repeating: "", count: signalColumns.count)
            var next = now
            while try s.step() {
                let r = Schema.read(s, signalSets: sets)
                let t = r.transition
                var cells: [String] = [
                    String(r.id), gatewayCell, number(t.time), String(t.tick), String(t.episode),
                    t.action.map(String.init) ?? "", t.actor.rawValue, number(t.reward),
                    t.terminal ? "1" : "0", t.truncated ? "1" : "0", t.mode.rawValue,
                    t.modelVersion.map(csvCell) ?? "", t.modelAction.map(String.init) ?? "",
                    t.nextMask.map { String($0) } ?? "", String(t.flags.rawValue),
                ]
                cells += padded(t.state, stateWidth)
                cells += padded(t.nextState, stateWidth)
                cells += padded(t.qValues ?? [], qWidth)
                for k in now.indices { now[k] = ""; next[k] = "" }
                for (k, name) in (r.signalNames ?? []).enumerated() {
                    guard let c = columnOf[name] else { continue }
                    if let v = t.signals, k < v.count { now[c] = number(v[k]) }
                    if let v = t.nextSignals, k < v.count { next[c] = number(v[k]) }
                }
                cells += now
                cells += next
                try sink.write(cells.joined(separator: ",") + "\n")
                rows += 1
            }
        case .jsonl:
            let sets = try Schema.signalSets(db)
            let s = try db.prepare(Schema.windowed(window))
            while try s.step() {
                let r = Schema.read(s, signalSets: sets)
                let t = r.transition
                var line = "{\"id\":\(r.id),\"gateway_id\":\(gateway),\"time\":\(jsonNumber(t.time)),\"tick\":\(t.tick),\"episode\":\(t.episode)"
                line += ",\"state\":\(jsonArray(t.state)),\"action\":\(t.action.map(String.init) ?? "null")"
                line += ",\"actor\":\"\(t.actor.rawValue)\",\"reward\":\(jsonNumber(t.reward))"
                line += ",\"next_state\":\(jsonArray(t.nextState)),\"next_mask\":\(t.nextMask.map { String($0) } ?? "null")"
                line += ",\"terminal\":\(t.terminal),\"truncated\":\(t.truncated),\"mode\":\"\(t.mode.rawValue)\""
                line += ",\"model_version\":\(t.modelVersion.map(jsonString) ?? "null")"
                line += ",\"q_values\":\(t.qValues.map(jsonArray) ?? "null"),\"model_action\":\(t.modelAction.map(String.init) ?? "null")"
                line += ",\"flags\":\(t.flags.rawValue)"
                line += ",\"signals\":\(jsonObject(r.signalNames, t.signals)),\"next_signals\":\(jsonObject(r.signalNames, t.nextSignals))}\n"
                try sink.write(line)
                rows += 1
            }
        }
        try sink.finish()
        return rows
    }
}

extension ExperienceLog {
    /// Streams the audit rows in `window` to `output`, oldest first (docs/log.md, "Audit").
    ///
    /// CSV columns: `id, gateway_id, time, key, verb, command, result, reason, ok, error`
    /// (`command` is the command's JSON text, quoted as CSV needs; unknown values empty). JSON
    /// lines: the same fields, `command` as a JSON string, `ok` true/false/null.
    ///
    /// - Returns: the number of rows written.
    /// - Throws: `LogError` `.export` when the output cannot be opened or written; `.query`
    ///   when reading fails.
    @discardableResult
    public func exportAudit(format: ExportFormat, window: LogWindow = .all, to output: ExportOutput) throws(LogError) -> Int {
        let db = try SQLiteConnection(path: path, create: false)
        let s = try db.prepare(Schema.windowed(window, select: "SELECT id, \(Self.auditColumns) FROM audit"))
        let sink = try OutputSink(output)
        var rows = 0
        switch format {
        case .csv:
            try sink.write("id,gateway_id,time,key,verb,command,result,reason,ok,error\n")
            let gatewayCell = csvCell(gatewayID)
            while try s.step() {
                let a = Self.readAudit(s)
                let r = a.record
                let cells = [String(a.id), gatewayCell, number(r.time), r.key.map(csvCell) ?? "", csvCell(r.verb),
                             r.command.map(csvCell) ?? "", r.result.rawValue, r.reason.map(csvCell) ?? "",
                             r.ok.map { $0 ? "1" : "0" } ?? "", r.error.map(csvCell) ?? ""]
                try sink.write(cells.joined(separator: ",") + "\n")
                rows += 1
            }
        case .jsonl:
            let gateway = jsonString(gatewayID)
            while try s.step() {
                let a = Self.readAudit(s)
                let r = a.record
                var line = "{\"id\":\(a.id),\"gateway_id\":\(gateway),\"time\":\(jsonNumber(r.time)),\"key\":\(r.key.map(jsonString) ?? "null")"
                line += ",\"verb\":\(jsonString(r.verb)),\"command\":\(r.command.map(jsonString) ?? "null"),\"result\":\"\(r.result.rawValue)\""
                line += ",\"reason\":\(r.reason.map(jsonString) ?? "null"),\"ok\":\(r.ok.map { $0 ? "true" : "false" } ?? "null")"
                line += ",\"error\":\(r.error.map(jsonString) ?? "null")}\n"
                try sink.write(line)
                rows += 1
            }
        }
        try sink.finish()
        return rows
    }
}

private func number(_ x: Double) -> String { x.isFinite ? "\(x)" : "" }
private func number(_ x: Float) -> String { x.isFinite ? "\(x)" : "" }
private func jsonNumber(_ x: Double) -> String { x.isFinite ? "\(x)" : "null" }
private func jsonArray(_ v: [Float]) -> String {
    "[" + v.map { $0.isFinite ? "\($0)" : "null" }.joined(separator: ",") + "]"
}
/// `{"name":value,…}` for a row's signal values, `null` without them.
private func jsonObject(_ names: [String]?, _ values: [Double]?) -> String {
    guard let names, let values, names.count == values.count else { return "null" }
    return "{" + zip(names, values).map { "\(jsonString($0)):\(jsonNumber($1))" }.joined(separator: ",") + "}"
}
private func padded(_ v: [Float], _ width: Int) -> [String] {
    (0..<width).map { $0 < v.count ? number(v[$0]) : "" }
}

/// RFC 4180 quoting when needed.
private func csvCell(_ s: String) -> String {
    guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
    return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}

/// A buffered writer on a file descriptor (64 KiB), so export streams without holding rows.
private final class OutputSink {
    private let fd: Int32
    private let owned: Bool
    private let name: String
    private var buffer: [UInt8] = []

    init(_ output: ExportOutput) throws(LogError) {
        switch output {
        case .standardOutput:
            fd = 1
            owned = false
            name = "standard output"
        case .file(let path):
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            owned = true
            name = path
            guard fd >= 0 else {
                throw LogError(.export, path: path, message: "cannot create: \(String(cString: strerror(errno)))")
            }
        }
        buffer.reserveCapacity(1 << 16)
    }

    deinit {
        if owned { _ = Glibc_close(fd) }
    }

    func write(_ s: String) throws(LogError) {
        buffer.append(contentsOf: s.utf8)
        if buffer.count >= 1 << 16 { try drain() }
    }

    func finish() throws(LogError) {
        try drain()
        if owned && fsync(fd) != 0 {
            throw LogError(.export, path: name, message: "fsync: \(String(cString: strerror(errno)))")
        }
    }

    private func drain() throws(LogError) {
        var offset = 0
        while offset < buffer.count {
            let n = buffer[offset...].withUnsafeBytes { raw in
                systemWrite(fd, raw.baseAddress, raw.count)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw LogError(.export, path: name, message: "write: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

#if canImport(Glibc)
private func systemWrite(_ fd: Int32, _ p: UnsafeRawPointer?, _ n: Int) -> Int { Glibc.write(fd, p, n) }
private func Glibc_close(_ fd: Int32) -> Int32 { Glibc.close(fd) }
#elseif canImport(Darwin)
private func systemWrite(_ fd: Int32, _ p: UnsafeRawPointer?, _ n: Int) -> Int { Darwin.write(fd, p, n) }
private func Glibc_close(_ fd: Int32) -> Int32 { Darwin.close(fd) }
#endif
