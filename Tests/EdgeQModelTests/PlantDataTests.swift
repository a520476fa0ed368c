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

@Suite struct SelectionHorizonTests {
    func data(_ lengths: [Int]) throws -> PlantData {
        let segments = lengths.map { n in
            PlantSegment(controlled: (0..<n).map { [Double($0)] }, exogenous: (0..<n).map { _ in [] }, actions: [Int](repeating: 0, count: n - 1))
        }
        return try PlantData(controlledNames: ["y"], exogenousNames: [], actionCount: 2, segments: segments)
    }

    @Test func shortEpisodesGetShorterHorizons() throws {
        #expect(PlantModelSelection.horizons(for: try data([5000])) == [1, 10, 60])                      // one long run
        #expect(PlantModelSelection.horizons(for: try data([Int](repeating: 961, count: 9))) == [1, 10, 60])
        #expect(PlantModelSelection.horizons(for: try data([Int](repeating: 60, count: 50))) == [1, 5, 20])  // short episodes
        #expect(PlantModelSelection.horizons(for: try data([Int](repeating: 40, count: 50))) == [1, 3, 8])   // 40 < 34 + 22
        #expect(PlantModelSelection.horizons(for: try data([Int](repeating: 12, count: 50))) == [1, 3, 8])
        // A short log, or one whose held-out quarter is cut by a gap: shorter horizons.
        #expect(PlantModelSelection.horizons(for: try data([300])) == [1, 5, 20])    // 75 held out: < 34 + 62
        #expect(PlantModelSelection.horizons(for: try data([400])) == [1, 10, 60])   // 100 held out
        #expect(PlantModelSelection.horizons(for: try data([300, 40, 60])) == [1, 5, 20])  // held out: the 40 and the 60
        #expect(PlantModelSelection.horizons(for: try data([300, 30, 45])) == [1, 3, 8])   // the longest held out: 45
    }
}
