import ArgumentParser
import EdgeQLog
import EdgeQReport
import Foundation

/// `edgeq report --data DIR [--out FILE.html] [--metrics FILE]`: a gateway's history as one
/// self-contained HTML page (docs/operations.md, "The run report").
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write a gateway's history as one self-contained HTML page.",
        discussion: """
            Reads DIR/experience.sqlite (summed up in SQL: time buckets, never single rows), the model \
            store (DIR/models: each retraining's checks, each trial's verdict and interval, every switch \
            of the served model, quarantines) and the audit table, and writes one HTML file with inline \
            SVG plots that opens without a network: whether EdgeQ is better than the incumbent here, \
            reward over time by mode and actor, shadow agreement, the timeline of retrainings, trials, \
            promotions, rollbacks, quarantines and guard trips, and fallbacks. The decision latency and \
            the fallbacks by reason are counted only on /metrics: pass a saved scrape with --metrics. \
            It may run while the gateway runs. Prints the page's path.
            """
    )

    @Option(help: "The gateway's data directory (holds experience.sqlite and models/).")
    var data: String

    @Option(help: "The HTML file to write (default: DIR/report.html).")
    var out: String?

    @Option(help: "A saved /metrics scrape (Prometheus text) for the latency histogram and the fallbacks by reason.")
    var metrics: String?

    @Option(help: "Time buckets of the plots.")
    var buckets: Int = 120

    func validate() throws {
        if buckets < 1 || buckets > 10_000 { throw ValidationError("--buckets must be between 1 and 10000") }
    }

    func run() throws {
        let dir = URL(fileURLWithPath: data)
        var metricsText: String?
        if let metrics {
            guard let text = try? String(contentsOfFile: metrics, encoding: .utf8) else {
                throw CLIFailure(.noInput, "cannot read the metrics scrape \(metrics): save one with `curl -s http://HOST:PORT/metrics > FILE`")
            }
            metricsText = text
        }
        let report: RunReport
        do {
            report = try RunReport(dataDirectory: dir, metricsText: metricsText, buckets: buckets)
        } catch let e as RunReport.Error where e.noLog {
            throw CLIFailure(.noInput, e.description)
        } catch {
            throw CLIFailure.log(error, dataDirectory: data)
        }
        let target = URL(fileURLWithPath: out ?? dir.appendingPathComponent("report.html").path)
        do {
            try report.write(to: target)
        } catch {
            throw CLIFailure(.io, "cannot write \(target.path): \(error)")
        }
        print(target.path)
    }
}
