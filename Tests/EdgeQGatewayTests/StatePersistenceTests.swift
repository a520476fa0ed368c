#if canImport(Glibc)
import Glibc
#endif
import EdgeQGateway
import EdgeQMQTT
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import Testing

/// A small tmpfs mounted as a data directory, for the probe's full-disk reproduction. Needs
/// root (CI runs as root); `available` says whether this machine can, by mounting one.
final class SmallTmpfs {
    let url: URL
    private var mounted = true

    /// Whether a tmpfs can be mounted here (root, mount(8), and the right to mount).
    static let available: Bool = {
        guard getuid() == 0, let probe = try? SmallTmpfs(sizeKiB: 64) else { return false }
        probe.unmount()
        return true
    }()

    /// Mounts a tmpfs of `sizeKiB` on a new folder.
    init(sizeKiB: Int) throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("edgeq-tmpfs-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        let r = try ChildProcess.run("mount", ["-t", "tmpfs", "-o", "size=\(sizeKiB)k", "tmpfs", url.path], timeout: 30)
        guard r.code == 0 else {
            try? FileManager.default.removeItem(at: url)
            throw HarnessError("mount -t tmpfs failed (\(r.code)): \(r.stderr)")
        }
    }

    /// Unmounts (lazily if it is still busy) and removes the folder. Idempotent.
    func unmount() {
        guard mounted else { return }
        mounted = false
        if (try? ChildProcess.run("umount", [url.path], timeout: 30))?.code != 0 {
            _ = try? ChildProcess.run("umount", ["-l", url.path], timeout: 30)
        }
        try? FileManager.default.removeItem(at: url)
    }

    deinit { unmount() }

    /// Fills the file system, appending to `filler` until a write fails with ENOSPC.
    @discardableResult
    func fill() throws -> URL {
        let filler = url.appendingPathComponent("filler")
        let fd = open(filler.path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { throw HarnessError("cannot create \(filler.path)") }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0xA5, count: 4096)
        while true {
            let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                guard errno == ENOSPC else { throw HarnessError("filling: \(String(cString: strerror(errno)))") }
                return filler
            }
        }
    }
}

/// "Back to shadow is refused on a full disk" (issue 11): with the data directory full, the
/// probe's `cmd/mode {"mode":"shadow"}` was answered ok:false ("cannot write
/// .gateway-state.json.tmp: No space left") and the gateway stayed in control. Leaving
/// control must succeed at once, in memory; recording it is retried and reported. Runs the
/// gateway in process against a real broker on a real (small, full) tmpfs.
@Suite struct StatePersistenceTests {
    func state(_ step: Int, x: Double) -> String { "{\"step\":\(step),\"x\":\(x),\"y\":0}" }

    @Test(.enabled(if: SmallTmpfs.available,
                   "needs root to mount a small tmpfs as the data directory (CI runs as root); this machine cannot, so the full-disk reproduction did not run"))
    func leavingControlSucceedsAtOnceOnAFullDiskAndIsRecordedOnceSpaceIsBack() throws {
        let disk = try SmallTmpfs(sizeKiB: 16 * 1024)
        defer { disk.unmount() }  // declared first: runs after the gateway has stopped
        let yaml = testMapping(extraLearning: RetrainingTests.guarded)
        let map = try TopicMap.parse(yaml: yaml, file: "test.yaml")
        // A served model that does worse than its control group (the incumbent) in part 2.
        try storeModel(favouring: 1, for: map, in: disk.url, current: true)
        let h = try GatewayHarness(yaml: yaml) { $0.dataDirectory = disk.url.path }
        defer { h.stop() }
        func status(_ match: @escaping ([String: Any]) -> Bool) throws -> [String: Any] {
            GatewayHarness.json(try h.waitFor(topic: "edgeq/t1/status", timeout: 10) { match(GatewayHarness.json($0)) })
        }

        // Shadow ticks logged while there is space.
        for i in 0..<60 {
            try h.send("plant/t/state", state(i, x: sin(Double(i) * 0.7)))
            try h.send("plant/t/cmd", "{\"a\":\(sin(Double(i) * 0.7) > 0 ? 1 : 0),\"step\":\(i)}")
        }
        #expect(eventually(timeout: 20) { h.metric("edgeq_log_rows_written_total") >= 55 })

        // 1. In control (recorded), then the disk fills up: cmd/mode shadow is ok at once.
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        #expect(try GatewayState.load(from: disk.url)?.mode == .control)
        var filler = try disk.fill()
        let shadow = try h.ask("mode", #"{"id":"s","mode":"shadow"}"#)
        #expect(shadow["ok"] as? Bool == true, "\(shadow)")
        #expect(shadow["mode"] as? String == "shadow", "\(shadow)")
        #expect(h.gateway.mode == .shadow)
        let unrecorded = try status { $0["mode"] as? String == "shadow" }
        #expect(unrecorded["state_persisted"] as? Bool == false, "\(unrecorded)")
        #expect((unrecorded["state_persist_error"] as? String)?.contains("No space left") == true, "\(unrecorded)")
        #expect(h.metric("edgeq_state_persist_failures_total") >= 1)
        // The file that said control is gone: a restart now would not bring control back.
        #expect(try GatewayState.load(from: disk.url)?.mode != .control)
        // Removing it gave a page back: take it, so that the disk stays full.
        try disk.fill()
        // Going to control needs the record first: refused while the disk is full.
        let control = try h.ask("mode", #"{"mode":"control"}"#)
        #expect(control["ok"] as? Bool == false, "\(control)")
        #expect((control["error"] as? String)?.contains("cannot be recorded") == true, "\(control)")
        #expect(h.gateway.mode == .shadow)
        // Retried: still failing while full (the count goes on), recorded once space is back.
        #expect(eventually(timeout: 10) { h.metric("edgeq_state_persist_failures_total") >= 3 })
        try FileManager.default.removeItem(at: filler)
        #expect(eventually(timeout: 10) { (try? GatewayState.load(from: disk.url))??.mode == .shadow })
        _ = try status { $0["state_persisted"] as? Bool == true && $0["mode"] as? String == "shadow" }

        // 2. The control-group guard's fallback on a full disk: shadow at once as well. The
        // served model picks a1, after which the plant does badly; in the guard's control blocks
        // the incumbent (played here: a0) does well.
        #expect(try h.ask("mode", #"{"mode":"control"}"#)["ok"] as? Bool == true)
        filler = try disk.fill()
        let plant = ClosedLoop(h, firstStep: 5000, incumbent: { _ in 0 }, dynamics: RetrainingTests.aOneIsBad)
        try plant.run(until: { h.gateway.mode == .shadow })
        #expect(h.gateway.mode == .shadow, "the guard did not take the gateway out of control in \(plant.acted.count) ticks")
        #expect(plant.acted.contains(.gateway(1)) && plant.acted.contains(.incumbent(0)))
        // (The status the guard published may have arrived during the ticks above.)
        func isGuardStatus(_ m: MQTTMessage) -> Bool {
            m.topic == "edgeq/t1/status" && (GatewayHarness.json(m)["reason"] as? String)?.contains("below its control group") == true
        }
        let guarded = GatewayHarness.json(try h.received.last(where: isGuardStatus) ?? h.waitFor(topic: "edgeq/t1/status", timeout: 10, isGuardStatus))
        #expect(guarded["mode"] as? String == "shadow", "\(guarded)")
        #expect(guarded["state_persisted"] as? Bool == false, "\(guarded)")
        try FileManager.default.removeItem(at: filler)
        #expect(eventually(timeout: 10) { (try? GatewayState.load(from: disk.url))??.reason.contains("worse than its control group") == true })
        #expect(try GatewayState.load(from: disk.url)?.mode == .shadow)
    }
}
