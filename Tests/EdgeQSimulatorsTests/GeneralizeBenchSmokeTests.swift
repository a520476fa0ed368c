import EdgeQTestSupport
import Foundation
import Testing

/// `edgeq bench generalize` end to end on a tiny budget: the real `edgeq` binary starts a
/// mosquitto and the real gateway process (`edgeq run`), runs the plant with its evaluation
/// twin, and prints every figure, measured or null with a reason.
@Suite struct GeneralizeBenchSmokeTests {
    static let figures = ["final_return_vs_incumbent", "final_return", "final_incumbent_return", "final_served_return", "final_served_vs_incumbent", "steps_to_475", "steps_to_first_promotion", "worst_served_vs_incumbent", "worst_served_10_windows_vs_incumbent",
                          "trial_cost", "trial_cost_pooled", "trial_switching_cost_pooled", "trial_carry_over", "guard_switching_cost_pooled", "guard_switches", "guard_trips", "novel_conditions", "support_handbacks", "trials_skipped", "quarantined_models", "retrainings", "pretrial_sign_agreement",
                          "pretrial_kept_out", "pretrial_uncalibrated", "pretrial_audits"]

    @Test func itsOptionsAreCheckedBeforeAnythingStarts() throws {
        let unknown = try EdgeQBinary.run(["bench", "generalize", "--plants", "cartpole,boiler"])
        #expect(unknown.code == 64)
        #expect(unknown.stderr.contains("boiler") && unknown.stderr.contains("mountaincar"))
        let elsewhere = try EdgeQBinary.run(["bench", "mqtt", "--seeds", "2"])
        #expect(elsewhere.code == 64)
        #expect(elsewhere.stderr.contains("generalize"))
        // --config replaces one plant's mapping: refused with two plants, or without one named.
        let mapping = PackageRoot.url.appendingPathComponent("topics/heater.yaml").path
        for plants in [["--plants", "heater,tank"], []] {
            let r = try EdgeQBinary.run(["bench", "generalize", "--config", mapping] + plants)
            #expect(r.code == 64, "\(plants)")
            #expect(r.stderr.contains("--config replaces one plant's mapping"), "\(r.stderr)")
        }
    }

    @Test func oneCartPoleSeedPrintsEveryFigure() throws {
        let r = try EdgeQBinary.run(["bench", "generalize", "--json", "--plants", "cartpole", "--seeds", "1", "--steps", "300"],
                                    timeout: 120)
        #expect(r.code == 0, "stderr: \(r.stderr.suffix(2000))")
        let (lines, problems) = BenchLines.parse(r.stdout, bench: "generalize")
        #expect(problems.isEmpty, "\(problems)")
        for (figure, o) in lines {
            // A figure that was not measured says why.
            if o["value"] is NSNull {
                #expect(!((o["reason"] as? String) ?? "").isEmpty, "\(figure) is null without a reason")
        }
        }
        for name in Self.figures {
            #expect(lines["cartpole/seed1/\(name)"] != nil, "missing cartpole/seed1/\(name)")
            #expect(lines["cartpole/\(name)"] != nil, "missing cartpole/\(name)")
        }
        #expect(lines.count == 2 * Self.figures.count)
        // 300 steps in shadow under a deterministic incumbent (the first retraining is due at
        // 1,000 transitions): the plant is its incumbent's twin, episode for episode.
        #expect((lines["cartpole/seed1/final_return_vs_incumbent"]?["value"] as? NSNumber)?.doubleValue == 0)
        let final = (lines["cartpole/seed1/final_return"]?["value"] as? NSNumber)?.doubleValue
        #expect(final != nil && final == (lines["cartpole/seed1/final_incumbent_return"]?["value"] as? NSNumber)?.doubleValue)
        #expect(lines["cartpole/seed1/steps_to_first_promotion"]?["value"] is NSNull)
        // The incumbent's rule balances ~40 steps an episode: the 475 goal is not reached, and said so.
        #expect(lines["cartpole/seed1/steps_to_475"]?["value"] is NSNull)
        #expect(((lines["cartpole/seed1/steps_to_475"]?["reason"] as? String) ?? "").contains("never reached 475"))
        // The gateway's status was read: guard trips and quarantined models are counts.
        #expect((lines["cartpole/seed1/guard_trips"]?["value"] as? NSNumber)?.intValue == 0)
        #expect((lines["cartpole/seed1/quarantined_models"]?["value"] as? NSNumber)?.intValue == 0)
        // The cart-pole mapping runs trials (promotion.policy trial): skipped trials are a count,
        // none in 300 steps without a retraining; the per-seed line on standard error says so.
        #expect((lines["cartpole/seed1/trials_skipped"]?["value"] as? NSNumber)?.intValue == 0)
        #expect((lines["cartpole/trials_skipped"]?["value"] as? NSNumber)?.intValue == 0)
        #expect(r.stderr.contains("trials skipped: 0;"), "\(r.stderr.suffix(2000))")
    }
}
