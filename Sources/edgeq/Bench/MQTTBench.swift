/// `edgeq bench mqtt`: filled in by the work on the MQTT client (issue #2).
enum MQTTBench {
    static func run(_ context: BenchContext) async throws -> [BenchFigure] {
        throw BenchError.notAvailable(name: "mqtt")
    }
}
