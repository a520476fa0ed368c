import ArgumentParser
import EdgeQLog
import Foundation

/// `edgeq log-stress --data DIR` (hidden): writes transitions continuously, as a gateway
/// would, and prints `submitted=N committed=M` lines, for the kill -9 durability test
/// (Tests/EdgeQLogTests). Row k has tick k and a state whose entries encode k.
struct LogStressCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log-stress",
        abstract: "Write transitions to DIR/experience.sqlite until killed (durability tests).",
        shouldDisplay: false
    )

    @Option(help: "The data directory.")
    var data: String

    @Option(help: "State width.")
    var width = 8

    @Option(help: "Rows per burst (one burst every millisecond).")
    var burst = 10

    @Option(help: "Stop after this many rows (0: run until killed).")
    var rows = 0

    func run() throws {
        do {
            try stress()
        } catch {
            throw CLIFailure(.io, "log-stress: \(error)")
        }
    }

    func stress() throws {
        let log = try ExperienceLog.open(dataDirectory: data, gatewayID: "log-stress")
        let writer = try log.makeWriter()
        var tick: Int64 = 0
        var lastReport = Date.distantPast
        while rows == 0 || tick < rows {
            for _ in 0..<burst {
                writer.submit(LogStressCommand.row(tick, width: width))
                tick += 1
            }
            if Date().timeIntervalSince(lastReport) > 0.02 {
                // Metrics are read after the commit they count returned: a committed count
                // printed here is on disk (in the WAL) before the line is written.
                let m = writer.metrics
                FileHandle.standardOutput.write(Data("submitted=\(m.rowsSubmitted) committed=\(m.rowsWritten)\n".utf8))
                lastReport = Date()
            }
            usleep(1_000)
        }
        try writer.flush()
        try writer.close()
        FileHandle.standardOutput.write(Data("submitted=\(writer.metrics.rowsSubmitted) committed=\(writer.metrics.rowsWritten) done\n".utf8))
    }

    /// The row for tick `k`: state[i] = k + i/100, next state = state + 1.
    static func row(_ k: Int64, width: Int) -> Transition {
        let s = (0..<width).map { Float(k % 1_000_000) + Float($0) / 100 }
        return Transition(time: Date().timeIntervalSince1970, tick: k, episode: k / 500, state: s,
                          action: Int(k % 3), actor: .incumbent, reward: Double(k % 7),
                          nextState: s.map { $0 + 1 }, mode: .shadow)
    }
}
