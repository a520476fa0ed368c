import EdgeQGateway
import EdgeQLog
import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq bench fleet --parts learn` end to end on a tiny budget: the real binary starts a
/// mosquitto per configuration, the single gateway (`edgeq run` on topics/cartpole.yaml) with its
/// plant, then 2 fleet gateways with their own plants and one `edgeq learner` on one broker. Every
/// figure is printed, measured or null with a reason, and the fleet really ran: the learner's
/// fleet log holds both gateways' rows and a gateway stored a model the learner signed (read from
/// the kept work directory, not from the bench's own figures alone).
@Suite struct FleetLearnBenchSmokeTests {
    @Test func itsOptionsAreCheckedBeforeAnythingStarts() throws {
        let cases: [([String], String)] = [
            (["bench", "fleet", "--parts", "learn,boil"], "unknown part 'boil' in --parts; available: ingest, latency, rollout, learn"),
            (["bench", "fleet", "--parts", ""], "unknown part ''"),
            (["bench", "fleet", "--parts", "learn", "--gateways", "1,0"], "--gateways takes fleet sizes from 1 to 16"),
            (["bench", "fleet", "--parts", "learn", "--gateways", "2,x"], "'x' is not one"),
            (["bench", "fleet", "--parts", "learn", "--gateways", "2,2"], "names a fleet size twice"),
            (["bench", "fleet", "--parts", "learn", "--budget-seconds", "0"], "--budget-seconds must be a number of seconds above 0"),
            (["bench", "fleet", "--parts", "learn", "--seed=-3"], "--seed must be 0 or more"),
            (["bench", "fleet", "--gateways", "2"], "add --parts learn"),
            (["bench", "fleet", "--parts", "ingest", "--budget-seconds", "10"], "add --parts learn"),
            (["bench", "generalize", "--parts", "learn"], "apply to `edgeq bench fleet` only"),
            (["bench", "mqtt", "--gateways", "2"], "apply to `edgeq bench fleet` only"),
            (["bench", "fleet", "--pace", "0"], "--pace takes decisions a second, above 0"),
            (["bench", "fleet", "--pace", "nan"], "--pace takes decisions a second, above 0"),
            (["bench", "e2e", "--pace", "100"], "--pace applies to `edgeq bench fleet` only"),
        ]
        for (arguments, message) in cases {
            let started = Date()
            let r = try EdgeQBinary.run(arguments, timeout: 30)
            #expect(r.code == 64, "\(arguments): exit \(r.code), \(r.stderr)")
            #expect(r.stderr.contains(message), "\(arguments): \(r.stderr)")
            // Refused before anything started: no broker, no gateway, no progress line.
            #expect(!r.stderr.contains("[fleet]") && Date().timeIntervalSince(started) < 20, "\(arguments): \(r.stderr)")
        }
        let help = try EdgeQBinary.run(["bench", "--help"], timeout: 30)
        #expect(help.stdout.contains("--parts") && help.stdout.contains("learn") && help.stdout.contains("--budget-seconds"), "\(help.stdout)")
    }

    @Test func twoGatewaysAndALearnerPrintEveryFigureAndReallyShareExperience() throws {
        let r = try ChildProcess.run(EdgeQBinary.path, ["bench", "fleet", "--json", "--parts", "learn", "--gateways", "2", "--budget-seconds", "75"],
                                     timeout: 400, environment: ["EDGEQ_BENCH_KEEP": "1"])
        let kept = r.stderr.split(separator: "\n").compactMap { line -> String? in
            guard let range = line.range(of: "work directory kept: ") else { return nil }
            return String(line[range.upperBound...])
        }.last
        defer { if let kept { try? FileManager.default.removeItem(atPath: kept) } }
        #expect(r.code == 0, "stderr: \(r.stderr.suffix(4000))")
        let (lines, problems) = BenchLines.parse(r.stdout, bench: "fleet")
        #expect(problems.isEmpty, "\(problems)")
        for (figure, o) in lines {
            if o["value"] is NSNull {
                #expect(((o["reason"] as? String) ?? "").hasPrefix("not measured"), "\(figure) is null without a reason: \(o)")
        }
        }
        func value(_ figure: String) -> Double? { (lines[figure]?["value"] as? NSNumber)?.doubleValue }
        let common = ["seconds_to_475", "steps_to_475", "cpu_cores_used"]
        let fleetOnly = ["learner_rows", "models_published", "gateways_with_fleet_model"]
        for name in common { #expect(lines["learn/single/\(name)"] != nil, "missing learn/single/\(name): \(lines.keys.sorted())") }
        for name in common + fleetOnly { #expect(lines["learn/gateways2/\(name)"] != nil, "missing learn/gateways2/\(name): \(lines.keys.sorted())") }
        // Measured or not, the fleet's time is against the single gateway's, measured in this run.
        #expect(lines["learn/gateways2/seconds_to_475"]?["anchor"] as? String == "one gateway retraining on its own, measured in this run")
        // Seconds and steps are measured together or not at all.
        for c in ["single", "gateways2"] {
            #expect((value("learn/\(c)/seconds_to_475") == nil) == (value("learn/\(c)/steps_to_475") == nil), "\(c)")
            #expect((value("learn/\(c)/cpu_cores_used") ?? 0) > 0, "\(c)")
        }
        // The learn part replaces the placeholder; the thermal goal stays not measured.
        #expect(!lines.keys.contains { $0.hasPrefix("cart-pole:") })
        #expect(lines.keys.contains { $0.hasPrefix("thermal:") })
        #expect(lines.count == 3 + 6 + 1, "\(lines.keys.sorted())")

        // The fleet really ran: both gateways' rows in the learner's fleet log, and the learner's
        // signed models stored by the gateways (their model stores, read here).
        let rows = value("learn/gateways2/learner_rows") ?? 0
        let published = value("learn/gateways2/models_published") ?? 0
        let withModel = value("learn/gateways2/gateways_with_fleet_model") ?? 0
        #expect(rows > 0 && published >= 1 && withModel >= 1, "rows \(rows), published \(published), gateways with a fleet model \(withModel)\n\(r.stderr.suffix(4000))")
        let work = try #require(kept, "no kept work directory named on stderr")
        let config = URL(fileURLWithPath: work).appendingPathComponent("learn/gateways2")
        let summaries = try FleetLog(dataDirectory: config.appendingPathComponent("learner").path).gateways()
        let byGateway = Dictionary(grouping: summaries, by: \.gateway).mapValues { $0.reduce(0) { $0 + Int($1.rows) } }
        #expect(Set(byGateway.keys) == ["cartpole-g1", "cartpole-g2"] && byGateway.values.allSatisfy { $0 > 0 }, "\(byGateway)")
        // The bench read its figures before it stopped the gateways and the learner: what they
        // shipped, published and stored since can only add to them.
        #expect(Double(byGateway.values.reduce(0, +)) >= rows)
        let learnerVersions = Set(try ModelStore(dataDirectory: config.appendingPathComponent("learner")).versions())
        #expect(Double(learnerVersions.count) >= published)
        let stored = try (1...2).map { i in
            Set(try ModelStore(dataDirectory: config.appendingPathComponent("data-g\(i)")).versions()).intersection(learnerVersions)
        }
        #expect(Double(stored.filter { !$0.isEmpty }.count) >= withModel, "\(stored)")
        // A fleet gateway never retrained on its own: every version it holds is the learner's.
        for i in 1...2 {
            let versions = Set(try ModelStore(dataDirectory: config.appendingPathComponent("data-g\(i)")).versions())
            #expect(versions.isSubset(of: learnerVersions), "gateway \(i): \(versions.sorted()) vs the learner's \(learnerVersions.sorted())")
        }
    }
}
