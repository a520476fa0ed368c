/// `edgeq bench decode`: filled in by the work on the topic map (issue #3).
enum DecodeBench {
    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        throw BenchError.notAvailable(name: "decode")
    }
}
