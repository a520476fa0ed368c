/// `edgeq bench inference`: filled in by the work on the Q-network (issue #4).
enum InferenceBench {
    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        throw BenchError.notAvailable(name: "inference")
    }
}
