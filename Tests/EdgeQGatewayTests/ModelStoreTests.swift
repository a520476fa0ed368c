import EdgeQGateway
import Foundation
import Testing

@Suite struct ModelStoreTests {
    func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    func modelFile(_ dir: URL, _ text: String) throws -> URL {
        let u = dir.appendingPathComponent("src-\(UUID().uuidString)")
        try Data(text.utf8).write(to: u)
        return u
    }

    @Test func addServeRollbackPrune() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try ModelStore(dataDirectory: dir)
        #expect(store.current() == nil)
        let v1 = try store.add(files: ["model.safetensors": try modelFile(dir, "one")], report: Data("{}".utf8))
        let v2 = try store.add(files: ["model.safetensors": try modelFile(dir, "two")], report: Data("{}".utf8))
        #expect((v1, v2) == (1, 2))
        #expect(store.current() == nil)
        try store.setCurrent(v1, reason: "first")
        try store.setCurrent(v2, reason: "retrained")
        #expect(store.current() == 2)
        #expect(store.previous() == 1)
        #expect(try String(contentsOf: store.modelURL(2), encoding: .utf8) == "two")
        // Rollback = serve the previous one again.
        try store.setCurrent(store.previous() ?? 0, reason: "rollback")
        #expect(store.current() == 1)
        // A reopened store sees the same.
        let again = try ModelStore(dataDirectory: dir)
        #expect(again.current() == 1)
        for i in 3...6 { _ = try again.add(files: ["model.safetensors": try modelFile(dir, "m\(i)")], report: Data()) }
        again.prune(keep: 3)
        let left = again.versions()
        #expect(left.count == 3)
        #expect(left.contains(1))  // current is never pruned
        #expect(throws: ModelStore.Error.self) { try again.setCurrent(99, reason: "nope") }
    }

    @Test func incompleteIncomingFolderIsDiscarded() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let models = dir.appendingPathComponent("models/.incoming-v1")
        try FileManager.default.createDirectory(at: models, withIntermediateDirectories: true)
        let store = try ModelStore(dataDirectory: dir)
        #expect(store.versions().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: models.path))
    }
}
