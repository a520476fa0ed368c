import ArgumentParser
import EdgeQLog
import Foundation

/// `edgeq export --data DIR [--table transitions|audit] [--format csv|jsonl] [--out FILE]
/// [--since …] [--last N]`: streams the experience log (or its audit table of control-plane
/// commands) for analysis elsewhere (docs/log.md).
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export the experience log as CSV or JSON lines.",
        discussion: """
            Reads DIR/experience.sqlite while the gateway runs (it never blocks the gateway) and \
            writes the rows oldest first. CSV expands state vectors into s0…, next states into ns0…, \
            Q-values into q0…, and the raw values of the mapping's signals with a role into \
            signal.NAME… and next_signal.NAME…; JSON lines keep vectors as arrays and the signals as \
            objects by name. --table audit exports the audit table \
            instead: every control-plane command the gateway received, accepted or refused (time, key, \
            verb, command, result, reason). docs/log.md describes every column.
            """
    )

    @Option(help: "The gateway's data directory (holds experience.sqlite).")
    var data: String

    @Option(help: "The table: transitions (the experience) or audit (the control-plane commands).")
    var table: ExportTableArgument = .transitions

    @Option(help: "Output format: csv or jsonl.")
    var format: ExportFormatArgument = .csv

    @Option(help: "Write to this file instead of standard output.")
    var out: String?

    @Option(help: "Only rows at or after this time: an ISO 8601 instant (2026-11-28T06:00:00Z), or an age such as 90m, 24h, 7d.")
    var since: String?

    @Option(help: "Only the last N rows.")
    var last: Int?

    func validate() throws {
        if since != nil && last != nil { throw ValidationError("give --since or --last, not both") }
        if let last, last <= 0 { throw ValidationError("--last must be positive") }
        if let since, ExportCommand.parseSince(since, now: Date()) == nil {
            throw ValidationError("--since '\(since)': expected an ISO 8601 instant or an age like 90m, 24h, 7d")
        }
    }

    func run() throws {
        let log: ExperienceLog
        do {
            log = try ExperienceLog.open(dataDirectory: data, create: false)
        } catch {
            throw CLIFailure.log(error, dataDirectory: data)
        }
        var window = LogWindow.all
        if let last { window = .lastRows(last) }
        if let since, let t = ExportCommand.parseSince(since, now: Date()) { window = .since(t) }
        let rows: Int
        do {
            let output: ExportOutput = out.map { .file($0) } ?? .standardOutput
            switch table {
            case .transitions: rows = try log.export(format: format.value, window: window, to: output)
            case .audit: rows = try log.exportAudit(format: format.value, window: window, to: output)
            }
        } catch where error.kind == .export {
            throw CLIFailure(.io, "export: \(error)")
        } catch {
            throw CLIFailure.log(error, dataDirectory: data)
        }
        if out != nil { FileHandle.standardError.write(Data("exported \(rows) rows\n".utf8)) }
    }

    /// Seconds since 1970 for an ISO 8601 instant or an age (`30s`, `90m`, `24h`, `7d`) before `now`.
    static func parseSince(_ text: String, now: Date) -> Double? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = text.last, let scale = units[unit], let n = Double(text.dropLast()), n >= 0, n.isFinite {
            return now.timeIntervalSince1970 - n * scale
        }
        let iso = ISO8601DateFormatter()
        if let d = iso.date(from: text) { return d.timeIntervalSince1970 }
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return iso.date(from: text)?.timeIntervalSince1970
    }
}

/// `--table` values.
enum ExportTableArgument: String, ExpressibleByArgument, CaseIterable {
    case transitions, audit
}

/// `--format` values.
enum ExportFormatArgument: String, ExpressibleByArgument, CaseIterable {
    case csv, jsonl
    var value: ExportFormat { self == .csv ? .csv : .jsonl }
}
