import EdgeQGateway
import EdgeQTestSupport
import EdgeQTrust
import Foundation
import Testing

@Suite struct ModelStoreTests {
    /// Every version is stored signed: here with a device key of the test's own (these tests
    /// store small text files, not models; the signature covers any bytes).
    let signer: ModelSigner

    init() throws {
        let keys = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-store-keys-\(UUID().uuidString)")
        signer = .device(try DeviceKey.loadOrCreate(dataDirectory: keys), mapping: String(repeating: "0", count: 64))
    }
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
        let v1 = try store.add(files: ["model.safetensors": try modelFile(dir, "one")], report: Data("{}".utf8), signer: signer)
        let v2 = try store.add(files: ["model.safetensors": try modelFile(dir, "two")], report: Data("{}".utf8), signer: signer)
        #expect((v1, v2) == (1, 2))
        #expect(store.current() == nil)
        try store.setCurrent(v1, reason: "first")
        try store.setCurrent(v2, reason: "retrained")
        #expect(store.current() == 2)
        #expect(store.rollbackTarget() == 1)
        #expect(try String(contentsOf: store.modelURL(2), encoding: .utf8) == "two")
        // Rollback = serve the previous one again, and quarantine the one left.
        try store.rollBack(from: 2, to: store.rollbackTarget() ?? 0, reason: "rollback")
        #expect(store.current() == 1)
        #expect(store.isQuarantined(2))
        // A reopened store sees the same.
        let again = try ModelStore(dataDirectory: dir)
        #expect(again.current() == 1)
        for i in 3...6 { _ = try again.add(files: ["model.safetensors": try modelFile(dir, "m\(i)")], report: Data(), signer: signer) }
        again.prune(keep: 3)
        let left = again.versions()
        #expect(left.count == 3)
        #expect(left.contains(1))  // current is never pruned
        #expect(!left.contains(2))  // quarantined versions go first
        #expect(throws: ModelStore.Error.self) { try again.setCurrent(99, reason: "nope") }
    }

    /// Three versions served one after the other.
    func threeServed(_ dir: URL) throws -> ModelStore {
        let store = try ModelStore(dataDirectory: dir)
        for i in 1...3 {
            let v = try store.add(files: ["model.safetensors": try modelFile(dir, "m\(i)")], report: Data("{}".utf8), signer: signer)
            try store.setCurrent(v, reason: "promote")
        }
        return store
    }

    /// The probe's "rollback twice": before, the target was the last *different* entry of the
    /// history, so after v2 → v1 it was v2 again and rollbacks toggled between two versions.
    @Test func rollbackWalksBackAndNeverTogglesBetweenTwoVersions() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try threeServed(dir)
        var served: [Int] = []
        while let target = store.rollbackTarget() {
            try store.rollBack(from: store.current(), to: target, reason: "rollback")
            served.append(target)
            #expect(served.count < 5, "rollbacks do not end: \(served)")
            if served.count >= 5 { break }
        }
        #expect(served == [2, 1])
        #expect(store.current() == 1)
        #expect(store.quarantined().map(\.version) == [2, 3])
        #expect(store.quarantined().allSatisfy { $0.reason.contains("rollback: rolled back to version") && $0.time > 0 })
        // Survives a restart (a new store on the same directory).
        let again = try ModelStore(dataDirectory: dir)
        #expect(again.quarantined().map(\.version) == [2, 3])
        #expect(again.rollbackTarget() == nil)
        // Named: a quarantined version can be served again, which lifts its mark.
        try again.rollBack(from: 1, to: 3, reason: "operator named it")
        #expect(again.current() == 3)
        #expect(!again.isQuarantined(3))
        #expect(again.isQuarantined(1))
        try again.liftQuarantine(2)
        #expect(again.rollbackTarget() == 2)
    }

    /// Every switch records the guard's control group for the version it serves: a promotion
    /// the version served before it, a rollback the incumbent. The record names its version, so
    /// it is not read for another one; pruning keeps the served version's control group.
    @Test func everySwitchRecordsTheControlGroupOfTheVersionItServes() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try threeServed(dir)
        #expect(store.recordedControlGroup(served: 3) == .version(2))
        #expect(store.recordedControlGroup(served: 2) == nil, "the record is the last switch's: to 3")
        try store.setCurrent(3, reason: "again")
        #expect(store.recordedControlGroup(served: 3) == .incumbent, "a switch to the served version has no other controller before it")
        try store.setCurrent(1, reason: "operator", controlGroup: .version(3))
        #expect(store.recordedControlGroup(served: 1) == .version(3))
        try store.rollBack(from: 1, to: 2, reason: "rollback")
        #expect(try ModelStore(dataDirectory: dir).recordedControlGroup(served: 2) == .incumbent, "after a restart too")
        // A promotion over 2 with 1 as its control group; pruning to 2 versions keeps both.
        let v4 = try store.add(files: ["model.safetensors": try modelFile(dir, "m4")], report: Data("{}".utf8), signer: signer)
        try store.setCurrent(v4, reason: "promote", controlGroup: .version(1))
        store.prune(keep: 2)
        #expect(store.versions().contains(1) && store.versions().contains(v4), "\(store.versions())")
        // A damaged record is not read.
        try Data("4 v\n".utf8).write(to: dir.appendingPathComponent("models/control-group"))
        #expect(store.recordedControlGroup(served: 4) == nil)
        try Data("4 v4\n".utf8).write(to: dir.appendingPathComponent("models/control-group"))
        #expect(store.recordedControlGroup(served: 4) == nil, "a version is not its own control group")
    }

    /// A crash between the quarantine mark and the switch leaves `current` on a quarantined
    /// version; the targets never include it, so the start-up fallback moves on from it.
    @Test func aQuarantinedCurrentIsNeverItsOwnTarget() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try threeServed(dir)
        try store.quarantine(3, reason: "interrupted rollback")
        #expect(store.current() == 3)
        #expect(store.rollbackTargets() == [2, 1])
        try store.quarantine(2, reason: "x")
        #expect(store.rollbackTargets(from: nil) == [1])
        #expect(throws: ModelStore.Error.self) { try store.quarantine(42, reason: "no such version") }
    }

    /// Prune keeps the served version and the rollback target, and deletes quarantined
    /// versions before older good ones.
    @Test func pruneKeepsTheRollbackTargetAndDropsQuarantinedFirst() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try threeServed(dir)
        for i in 4...6 {
            let v = try store.add(files: ["model.safetensors": try modelFile(dir, "m\(i)")], report: Data("{}".utf8), signer: signer)
            try store.setCurrent(v, reason: "promote")
        }
        try store.rollBack(from: 6, to: 5, reason: "guard")   // 6 quarantined
        try store.rollBack(from: 5, to: 4, reason: "guard")   // 5 quarantined; target now 3
        #expect(store.rollbackTarget() == 3)
        store.prune(keep: 2)
        #expect(store.versions() == [3, 4])
        // Never below the served version and its target, whatever `keep` says.
        store.prune(keep: 1)
        #expect(store.versions() == [3, 4])
    }

    /// Prune never deletes a candidate owed a trial: the one whose trial runs (its
    /// `trial-running.json`) and the one waiting for it (`trial-pending.json`) outlive older
    /// versions and `keep` alike; once the mark is gone they are pruned like any other.
    @Test func pruneKeepsTheCandidatesOwedATrial() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try threeServed(dir)   // 3 served, 2 its target
        let v4 = try store.add(files: ["model.safetensors": try modelFile(dir, "m4")], report: Data("{}".utf8), signer: signer)
        let v5 = try store.add(files: ["model.safetensors": try modelFile(dir, "m5")], report: Data("{}".utf8), signer: signer)
        let v6 = try store.add(files: ["model.safetensors": try modelFile(dir, "m6")], report: Data("{}".utf8), signer: signer)
        try Data(#"{"candidate":4}"#.utf8).write(to: store.runningTrialURL(v4))
        try Data(#"{"version":5,"began":false}"#.utf8).write(to: store.pendingTrialURL(v5))
        store.prune(keep: 2)
        #expect(store.versions() == [2, 3, v4, v5], "\(store.versions()): 1 and \(v6), owed nothing, go")
        // The trial decided (its record removed), the waiting one still owed: 4 may go.
        try FileManager.default.removeItem(at: store.runningTrialURL(v4))
        store.prune(keep: 2)
        #expect(store.versions() == [2, 3, v5], "\(store.versions())")
    }

    /// The served history is the record the start follows (anti-rollback): every switch is in
    /// it, and a line torn by a crash in mid-append is neither read nor glued to the next one.
    @Test func everySwitchIsRecordedAndATornLineIsCutOff() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try threeServed(dir)
        try store.rollBack(from: 3, to: 2, reason: "guard")
        #expect(store.servedRecords() == [1, 2, 3, 2])
        #expect(store.pointer() == 2)
        // A crash while appending "… 12 …" left "1700000000 1".
        let log = store.directory.appendingPathComponent("served.log")
        let h = try FileHandle(forWritingTo: log)
        try h.seekToEnd()
        try h.write(contentsOf: Data("1700000000 1".utf8))
        try h.close()
        #expect(store.servedRecords() == [1, 2, 3, 2])
        try store.setCurrent(1, reason: "operator")
        #expect(store.servedRecords() == [1, 2, 3, 2, 1])
        try store.clearCurrent(reason: "test")
        #expect(store.servedRecords() == [1, 2, 3, 2, 1, nil])
        #expect(store.pointer() == nil)
    }

    /// Version numbers only go up: an imported model must be signed as a version above every
    /// stored or served one, and a pruned served number is not given again.
    @Test func versionNumbersAreNeverReused() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try threeServed(dir)
        try store.rollBack(from: 3, to: 2, reason: "guard")   // 3 quarantined
        store.prune(keep: 2)                                   // 3 goes first
        #expect(store.versions() == [1, 2])
        #expect(try store.add(files: ["model.safetensors": try modelFile(dir, "m4")], report: Data(), signer: signer) == 4)

        let keys = dir.appendingPathComponent("lab")
        let lab = try DeviceKey.loadOrCreate(dataDirectory: keys)
        let trust = TrustStore(keys: []).adding(lab)
        let mapping = String(repeating: "a", count: 64)
        let file = try modelFile(dir, "imported")
        let bytes = try Data(contentsOf: file)
        let old = try ModelSignature.sign(modelBytes: bytes, version: 4, mapping: mapping, device: lab)
        #expect(throws: ModelStore.Error.self) {
            try store.add(files: ["model.safetensors": file], report: Data(), signer: .imported(old, trust: trust, mapping: mapping))
        }
        // Signed for another mapping than the store is told: refused, nothing stored.
        let seven = try ModelSignature.sign(modelBytes: bytes, version: 7, mapping: mapping, device: lab)
        #expect(throws: ModelStore.Error.self) {
            try store.add(files: ["model.safetensors": file], report: Data(), signer: .imported(seven, trust: trust, mapping: String(repeating: "b", count: 64)))
        }
        #expect(store.versions() == [1, 2, 4])
        #expect(try store.add(files: ["model.safetensors": file], report: Data(), signer: .imported(seven, trust: trust, mapping: mapping)) == 7)
        // The stored version carries the signature it came with, and a sha256sum file.
        let stored = try ModelSignature.verify(modelFile: store.modelURL(7), expectedVersion: 7, expectedMapping: mapping, trust: trust)
        #expect(stored.signature == seven)
        #expect(FileManager.default.fileExists(atPath: store.modelURL(7).appendingPathExtension("sha256").path))
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.directory.path).allSatisfy { !$0.hasPrefix(".incoming") })
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

    /// Opening a store (as `edgeq models` does on a live gateway's data directory) leaves
    /// another living process's write in progress alone and discards a dead one's.
    @Test func anIncomingFolderOfALiveProcessIsLeftAlone() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let sleeper = try ChildProcess("/bin/sleep", ["60"])
        defer { sleeper.stop(grace: 1) }
        let live = dir.appendingPathComponent("models/.incoming-v3-\(sleeper.pid)")
        try FileManager.default.createDirectory(at: live, withIntermediateDirectories: true)
        // A process that has exited: its pid no longer exists.
        let done = try ChildProcess("/bin/true", [])
        let deadPid = done.pid
        _ = done.wait(timeout: 10)
        let dead = dir.appendingPathComponent("models/.incoming-v2-\(deadPid)")
        try FileManager.default.createDirectory(at: dead, withIntermediateDirectories: true)
        _ = try ModelStore(dataDirectory: dir)
        #expect(FileManager.default.fileExists(atPath: live.path))
        #expect(!FileManager.default.fileExists(atPath: dead.path))
        sleeper.stop(grace: 1)
        _ = try ModelStore(dataDirectory: dir)
        #expect(!FileManager.default.fileExists(atPath: live.path))
    }
}
