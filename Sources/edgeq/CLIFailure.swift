import ArgumentParser
import EdgeQLog
import EdgeQTopicMap
import Foundation

/// A run-time failure of a command, with its sysexits(3) exit status. Usage errors (a bad or
/// missing option, found while parsing or in `validate()`) stay ArgumentParser's
/// `ValidationError`, which prints the usage and exits 64; everything that goes wrong while a
/// command runs is a `CLIFailure`: `edgeq: <message>` on standard error, no usage text, and
/// the status that says what kind of failure it was (docs/operations.md, "Exit codes").
struct CLIFailure: Error, CustomStringConvertible {
    /// sysexits(3) statuses used by `edgeq`.
    enum Code: Int32 {
        /// EX_DATAERR: the input was read but is wrong (a mapping with errors, a corrupt log).
        case data = 65
        /// EX_NOINPUT: an input file or directory does not exist or cannot be read.
        case noInput = 66
        /// EX_UNAVAILABLE: a service or resource is not available (the broker, a free port).
        case unavailable = 69
        /// EX_SOFTWARE: an internal error (a bug: please report it with the message).
        case software = 70
        /// EX_IOERR: an error while reading or writing a file that exists.
        case io = 74
    }

    let code: Code
    let message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    var description: String { message }

    /// Writes the message and exits with the status.
    func exit() -> Never {
        FileHandle.standardError.write(Data("edgeq: \(message)\n".utf8))
        Foundation.exit(code.rawValue)
    }

    /// A failure to open or read the experience log of `dataDirectory`: missing → 66, a file
    /// that is not a usable database → 65, anything else → 74.
    static func log(_ error: any Error, dataDirectory: String) -> CLIFailure {
        let path = URL(fileURLWithPath: dataDirectory).appendingPathComponent(ExperienceLog.defaultFileName).path
        guard FileManager.default.fileExists(atPath: path) else {
            return CLIFailure(.noInput, "no experience log at \(path): --data must be a gateway's data directory")
        }
        if let e = error as? LogError {
            let primary = e.code?.primary
            // SQLITE_CORRUPT, SQLITE_NOTADB (26), or a file that is not an EdgeQ log.
            if e.kind == .schema || primary == .corrupt || primary?.rawValue == 26 {
                return CLIFailure(.data, "the experience log \(path) is damaged or not an EdgeQ log: \(e)")
            }
            if e.kind == .open {
                return CLIFailure(.noInput, "cannot open the experience log \(path) (check its permissions): \(e)")
            }
        }
        return CLIFailure(.io, "cannot read the experience log \(path): \(error)")
    }
}

/// Loads a mapping file, or fails with its diagnostics on standard error: 65 when it has
/// errors or `TODO` values left (a draft of `edgeq init`), 66 when it cannot be read.
func loadMapping(_ path: String) throws -> TopicMap {
    // A draft of `edgeq init` with choices left open is refused with those first.
    if let report = CheckCommand.draftReport(path: path) {
        for d in report.diagnostics { FileHandle.standardError.write(Data((d.description + "\n").utf8)) }
        throw CLIFailure(.data, "\(path): \(report.summary)")
    }
    do {
        return try TopicMap.load(path: path)
    } catch {
        for d in error.diagnostics { FileHandle.standardError.write(Data((d.description + "\n").utf8)) }
        let n = error.diagnostics.count
        throw CLIFailure(error.code == .unreadable ? .noInput : .data,
                         error.code == .unreadable ? "cannot read the mapping file \(path)" : "\(path): \(n) error\(n == 1 ? "" : "s")")
    }
}
