import EdgeQModel
import Testing

@Suite struct PlantDataTests {
    @Test func shapesAreChecked() throws {
        let good = PlantSegment(controlled: [[1], [2], [3]], exogenous: [[0], [0], [0]], actions: [0, 1])
        let data = try PlantData(controlledNames: ["t"], exogenousNames: ["a"], actionCount: 2, segments: [good, good])
        #expect(data.sampleCount == 6)
        let bad = PlantSegment(controlled: [[1], [2], [3]], exogenous: [[0], [0], [0]], actions: [0, 2])
        #expect(throws: PlantModelError.self) {
            try PlantData(controlledNames: ["t"], exogenousNames: ["a"], actionCount: 2, segments: [bad])
        }
    }
}
