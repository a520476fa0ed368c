import EdgeQModel
import EdgeQRetrain
import Foundation
import Testing

/// report.json's `distill.agreement_held_out` / `agreement_train`: `Distillation.Agreement` itself
/// (no mirror type), written with the keys and the rounding report.json has always had.
@Suite struct DistillReportJSONTests {
    /// An `agreement_held_out` object as report.json wrote it before `Distillation.Agreement` was
    /// Codable (snake_case keys, figures rounded to 6 significant digits).
    static let writtenBefore = #"{"max_regret":0.412337,"mean_regret":0.0381052,"states":201,"strict":0.472637,"teacher_near_ties":0.104478,"tolerance":0.05,"tolerant":0.950249}"#

    static func object(_ data: Data) throws -> NSDictionary {
        NSDictionary(dictionary: try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any]))
    }

    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }

    /// The object written before reads as the same figures and is written again unchanged.
    @Test func anAgreementWrittenBeforeReadsAndIsWrittenTheSame() throws {
        let a = try JSONDecoder().decode(DistillReport.Agreement.self, from: Data(Self.writtenBefore.utf8))
        #expect(a == Distillation.Agreement(states: 201, strict: 0.472637, tolerant: 0.950249, tolerance: 0.05, meanRegret: 0.0381052,
                                            maxRegret: 0.412337, teacherNearTies: 0.104478))
        #expect(try Self.object(Self.encoder.encode(a)) == Self.object(Data(Self.writtenBefore.utf8)))
    }

    /// A retraining's report with a distilled candidate: `agreement_held_out` has exactly the
    /// keys it had, the figures rounded for reading, and report.json reads back to the same
    /// agreement.
    @Test func aReportsDistillAgreementKeepsItsKeysAndRounding() throws {
        let measured = Distillation.Agreement(states: 201, strict: 95.0 / 201, tolerant: 191.0 / 201, tolerance: 0.05,
                                              meanRegret: 0.038105183, maxRegret: 0.41233731, teacherNearTies: 21.0 / 201)
        var d = DistillReport()
        d.chosen = "distilled"
        d.agreementHeldOut = measured.roundedForReading()
        d.agreementTrain = measured.roundedForReading()
        var report = RetrainReport()
        report.distill = d
        let json = report.json()
        let top = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        let distill = try #require(top["distill"] as? [String: Any])
        let held = NSDictionary(dictionary: try #require(distill["agreement_held_out"] as? [String: Any]))
        let before = try Self.object(Data(Self.writtenBefore.utf8))
        #expect(held == before, "\(held)")
        #expect((distill["agreement_train"] as? [String: Any]).map { NSDictionary(dictionary: $0) } == held)
        let back = try JSONDecoder().decode(RetrainReport.self, from: json)
        #expect(back.distill?.agreementHeldOut == d.agreementHeldOut && back.distill?.agreementTrain == d.agreementTrain)
        #expect(d.agreementHeldOut?.strict == roundedForReading(95.0 / 201))
    }

    /// A model's report.json written before the student's rounds on the model existed (no
    /// `rounds`, `rounds_made`, `student_states`) still reads: its rounds are unknown (nil), the
    /// rest as written; a report with them reads them back.
    @Test func aDistillReportWrittenBeforeTheRoundsReads() throws {
        var d = DistillReport()
        d.chosen = "distilled"
        d.statesValued = 600
        var report = RetrainReport()
        report.distill = d
        var top = try #require(try JSONSerialization.jsonObject(with: report.json()) as? [String: Any])
        var distill = try #require(top["distill"] as? [String: Any])
        for key in ["rounds", "rounds_made", "student_states"] { distill[key] = nil }
        top["distill"] = distill
        let before = try JSONSerialization.data(withJSONObject: top)
        let old = try JSONDecoder().decode(RetrainReport.self, from: before)
        #expect(old.distill?.chosen == "distilled" && old.distill?.statesValued == 600)
        #expect(old.distill?.rounds == nil && old.distill?.roundsMade == nil && old.distill?.studentStates == nil)
        d.rounds = 2
        d.roundsMade = 2
        d.studentStates = 526
        report.distill = d
        let back = try JSONDecoder().decode(RetrainReport.self, from: report.json())
        #expect(back.distill?.rounds == 2 && back.distill?.roundsMade == 2 && back.distill?.studentStates == 526)
    }
}
