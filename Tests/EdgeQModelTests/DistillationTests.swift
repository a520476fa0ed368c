import EdgeQCore
import EdgeQModel
import EdgeQNet
import Testing

/// The student's training (`Distillation`, docs/learning.md, "Distillation"): on a teacher known
/// in closed form, the quantized network outputs the teacher's values on its scale, ranks the
/// actions as the teacher does, is normalised as retraining normalises, and is the same network
/// for the same seed.
@Suite struct DistillationTests {
    /// Teacher: Q(s, a) = 10 − (x − a)² / 4 + 0.1·y over states (x, y), x in [0, 4], actions 0…4:
    /// the best action is the nearest integer to x; values ~7–10, differences up to 4.
    static func examples(count: Int, seed: UInt64) -> [Distillation.Example] {
        var rng = SeededGenerator(seed: seed)
        return (0..<count).map { _ in
            let x = rng.nextUnit() * 4, y = rng.nextUnit() * 2 - 1
            return Distillation.Example(state: [Float(x), Float(y)],
                                        values: (0..<5).map { a in 10 - (x - Double(a)) * (x - Double(a)) / 4 + 0.1 * y })
        }
    }

    @Test func studentLearnsAKnownTeacher() throws {
        let train = Self.examples(count: 2000, seed: 1), held = Self.examples(count: 500, seed: 2)
        let names = ["a0", "a1", "a2", "a3", "a4"]
        let config = Distillation.Configuration(hidden: [32, 32], updates: 4000, seed: 7)
        let r = try Distillation.train(train, actionNames: names, configuration: config)
        // Normalised as Retrainer normalises: mean and spread of the training states.
        #expect(r.model.normalization == Normalization.fit(train.flatMap(\.state), inputCount: 2))
        #expect(r.model.architecture.hidden == [32, 32])
        // On the teacher's scale: fp32 values within 0.1 of the teacher's on held-out states.
        let fp32 = r.model.makeFloatEngine()
        var worst = 0.0
        for e in held {
            let q = fp32.qValues(e.state)
            for a in 0..<5 { worst = max(worst, abs(Double(q[a]) - e.values[a])) }
        }
        #expect(worst < 0.1, "largest error \(worst)")
        // int8 ranks as the teacher does, but for states near a boundary between two actions.
        // A tolerance of 0.05 is a pick within 0.1 of x of the boundary (Q(a) − Q(a+1) = (1 − 2(x − a))/4).
        let agreement = Distillation.agreement(r.model, precision: .int8, on: held, tolerance: 0.05)
        print("known teacher: int8 strict \(agreement.strict), within 0.05 \(agreement.tolerant), largest fp32 error \(worst)")
        #expect(agreement.states == 500)
        #expect(agreement.strict >= 0.95)
        #expect(agreement.tolerant >= 0.99)
        // Deterministic for a seed.
        let again = try Distillation.train(train, actionNames: names, configuration: config)
        #expect(again.model.parameters == r.model.parameters)
    }

    @Test func badExamplesAreRefused() {
        let names = ["a", "b"]
        #expect(throws: DistillationError.self) { try Distillation.train([], actionNames: names, configuration: .init()) }
        let mixed = [Distillation.Example(state: [0, 1], values: [1, 2]), Distillation.Example(state: [0], values: [1, 2])]
        #expect(throws: DistillationError.self) { try Distillation.train(mixed, actionNames: names, configuration: .init()) }
        let nan = [Distillation.Example(state: [0], values: [1, .nan])]
        #expect(throws: DistillationError.self) { try Distillation.train(nan, actionNames: names, configuration: .init()) }
    }
}
