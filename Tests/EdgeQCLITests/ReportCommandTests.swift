import EdgeQCore
import EdgeQLog
import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq report` as a process, on logs written by the real log writer: the page's path on
/// standard output, the verdict without a trial (the per-tick comparison, and "cannot be
/// answered" when EdgeQ never ran the plant), and the exit statuses of what cannot be read.
@Suite struct ReportCommandTests {
    /// Writes `shadow` incumbent rows then `control` model rows (rewards seeded, the model's
    /// 0.5 higher on average) to DIR/experience.sqlite, 10 ms apart.
    static func writeLog(_ dir: URL, shadow: Int, control: Int) throws {
        let log = try ExperienceLog.open(dataDirectory: dir.path, gatewayID: "report-test")
        let writer = try log.makeWriter()
        var rng = SeededGenerator(seed: 4)
        let t0 = 1_796_000_000.0
        for k in 0..<(shadow + control) {
            let inControl = k >= shadow
            let reward = (inControl ? -1.0 : -1.5) + rng.nextUnit() - 0.5
            writer.submit(Transition(time: t0 + Double(k) * 0.01, tick: Int64(k), episode: 0, state: [0.1, 0.2], action: k % 2,
                                     actor: inControl ? .model : .incumbent, reward: reward, nextState: [0.2, 0.3],
                                     mode: inControl ? .control : .shadow, modelVersion: "1", qValues: [0, 1],
                                     modelAction: (k / 3) % 2))
        }
        try writer.flush()
        try writer.close()
    }

    /// A number in `attribute="…"` of the element with `id` in `html`.
    static func attribute(_ name: String, of id: String, in html: String) -> String? {
        guard let start = html.range(of: "id=\"\(id)\"") else { return nil }
        let tag = html[start.lowerBound...].prefix { $0 != ">" }
        guard let r = tag.range(of: "\(name)=\"") else { return nil }
        return String(tag[r.upperBound...].prefix { $0 != "\"" })
    }

    @Test func withoutATrialTheVerdictIsThePerTickComparisonOfTheLog() throws {
        let dir = try TempDir()
        try Self.writeLog(dir.url, shadow: 3000, control: 2000)
        let out = dir.url.appendingPathComponent("r.html").path
        let r = try EdgeQBinary.run(["report", "--data", dir.url.path, "--out", out])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout == out + "\n")
        let html = try String(contentsOfFile: out, encoding: .utf8)
        #expect(Self.attribute("data-source", of: "verdict", in: html) == "per_tick")
        // The difference of the two means, as the log has it (the writer's rows, read back).
        let rows = try ExperienceLog.open(dataDirectory: dir.url.path, create: false).transitions(window: .all)
        let edgeq = rows.filter { $0.transition.mode == .control }.map(\.transition.reward)
        let incumbent = rows.filter { $0.transition.actor == .incumbent }.map(\.transition.reward)
        let want = edgeq.reduce(0, +) / Double(edgeq.count) - incumbent.reduce(0, +) / Double(incumbent.count)
        let got = try #require(Self.attribute("data-difference", of: "verdict", in: html).flatMap(Double.init), "\(html.prefix(2000))")
        #expect(abs(got - want) <= 1e-9, "\(got) vs \(want)")
        let low = try #require(Self.attribute("data-low", of: "verdict", in: html).flatMap(Double.init))
        let high = try #require(Self.attribute("data-high", of: "verdict", in: html).flatMap(Double.init))
        #expect(low < want && want < high)
        // 0.5 better by construction, with 5,000 rows: the interval lies above 0.
        #expect(Self.attribute("data-answer", of: "verdict", in: html) == "better", "\(low) … \(high)")
        #expect(Self.attribute("data-value", of: "fig-rows", in: html) == "5000.0")
        // Self-contained: nothing to load (no script, no link, no source of any kind).
        #expect(!html.contains("<script") && !html.contains("<link") && !html.contains("src=") && !html.contains("href=") && !html.contains("url("))
    }

    @Test func whenEdgeQNeverRanThePlantThePageSaysItCannotBeAnswered() throws {
        let dir = try TempDir()
        try Self.writeLog(dir.url, shadow: 500, control: 0)
        let r = try EdgeQBinary.run(["report", "--data", dir.url.path])
        #expect(r.code == 0, "\(r.stderr)")
        let path = dir.url.appendingPathComponent("report.html").path
        #expect(r.stdout == path + "\n")
        let html = try String(contentsOfFile: path, encoding: .utf8)
        #expect(Self.attribute("data-answer", of: "verdict", in: html) == "unknown")
        #expect(html.contains("Cannot be answered from this data directory: EdgeQ never ran the plant"))
        #expect(html.contains("Not recorded on disk: the log has no latency column"))
    }

    @Test func aMissingLogExits66AndAMissingMetricsScrapeToo() throws {
        let dir = try TempDir()
        let r = try EdgeQBinary.run(["report", "--data", dir.url.path])
        #expect(r.code == 66, "\(r.stderr)")
        #expect(r.stderr.hasPrefix("edgeq: no experience log at "), "\(r.stderr)")
        try Self.writeLog(dir.url, shadow: 10, control: 0)
        let m = try EdgeQBinary.run(["report", "--data", dir.url.path, "--metrics", dir.url.appendingPathComponent("none.prom").path])
        #expect(m.code == 66, "\(m.stderr)")
        #expect(m.stderr.contains("cannot read the metrics scrape"), "\(m.stderr)")
    }
}
