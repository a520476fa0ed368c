/// `edgeq bench learn`: filled in by the work on the learner (issue #4).
enum LearnBench {
    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        throw BenchError.notAvailable(name: "learn")
    }
}
