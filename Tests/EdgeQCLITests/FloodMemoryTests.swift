// `edgeq run` as a real process under a flood of mixed messages (loopback only, bounded in
// count and time), its resident memory sampled from /proc/<pid>/status.
//
// What the probe saw (1.6 M messages in 32 s): 29 MB idle, a 200 MB plateau, 170-185 MB
// after. The MQTT path, the decoding and the log writer stay within ~1.3x idle; the memory
// went into retrainings: `retrain.every_transitions` was reached many times a second, so one
// retraining started after another, each reading the whole (growing) log; and glibc kept the
// freed heap afterwards. Now count-triggered retrainings are spaced (10 min by default), and the
// gateway trims the heap after a burst and after a retraining (docs/operations.md, "Memory").
import EdgeQMQTT
import EdgeQSystem
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct FloodMemoryTests {
    static func residentKB(_ pid: pid_t) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }

    /// Samples `pid`'s resident set every `interval` seconds on a thread until stopped.
    final class Sampler: @unchecked Sendable {
        // @unchecked Sendable: `samples` and `running` are only touched under `lock`.
        private let lock = NSLock()
        private var samples: [Int] = []
        private var running = true

        func start(pid: pid_t, interval: Double) {
            Thread.detachNewThread { [self] in
                while lock.withLock({ running }) {
                    if let kb = FloodMemoryTests.residentKB(pid) { lock.withLock { samples.append(kb) } }
                    usleep(UInt32(interval * 1e6))
                }
            }
        }

        func stop() -> [Int] { lock.withLock { running = false; return samples } }
    }

    @Test func residentMemoryStaysBoundedUnderAFloodAndComesBackAfter() throws {
        let broker = try MosquittoBroker()
        let dir = try TempDir()
        let file = dir.url.appendingPathComponent("m.yaml").path
        // A retraining every 500 transitions (short ones): the flood reaches that count many
        // times a second.
        try processMapping(id: "m1", plant: "m", learning: "  updates_per_retrain: 500\n  retrain: {every_transitions: 500}")
            .write(toFile: file, atomically: true, encoding: .utf8)
        let gwLog = dir.url.appendingPathComponent("gw.log").path
        let gw = try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", broker.url, "--data", dir.url.path + "/data", "--log-level", "info"],
                                  stderrPath: gwLog)
        defer { gw.stop(grace: 10) }
        let plant = try plantClient(broker, "edgeq/m1/status")
        defer { plant.stop() }
        func status(containing text: String, timeout: Double) -> [String: Any]? {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if let m = plant.receive(timeout: 0.1), m.topic == "edgeq/m1/status",
                   String(decoding: m.payload, as: UTF8.self).contains(text) {
                    return (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any]
                }
            }
            return nil
        }
        #expect(status(containing: #""state":"online""#, timeout: 20) != nil)

        // Ordinary operation first, with every kind of message the flood carries (so that the
        // code paths they run are resident in the idle figure too), then idle.
        for step in 0..<300 {
            _ = try plant.publish("plant/m/state", #"{"step":\#(step),"x":\#(Double(step % 9) - 4)}"#)
            _ = try plant.publish("plant/m/cmd", #"{"a":\#(step % 2)}"#)
            if step % 10 == 0 {
                _ = try plant.publish("edgeq/m1/cmd/nothing", #"{"id":"\#(step)"}"#)
                _ = try plant.publish("plant/m/state", #"{"step":\#(step),"x":"#)
                _ = try plant.publish("plant/m/state", #"{"step":\#(step),"x":1,"x":2}"#)
                _ = try plant.publish("plant/elsewhere/\(step)", "noise")
            }
            usleep(5_000)
        }
        usleep(3_000_000)
        var idleSamples: [Int] = []
        for _ in 0..<10 {
            if let kb = Self.residentKB(gw.pid) { idleSamples.append(kb) }
            usleep(100_000)
        }
        let idle = idleSamples.sorted()[idleSamples.count / 2]

        // The flood: mixed messages for 12 s, the sender pausing 1 ms after every 20 (some
        // 10,000 a second here, a thousand times the plant's own rate). Unpaced (2 million in
        // 45 s), it swamps the single-threaded broker: a QoS 0 subscriber in this process got
        // 700,000 of them, the gateway (QoS 1 subscriptions, so the broker waits for its
        // acknowledgements) from 700 to 180,000 in a run, by the machine's load. On a loaded
        // machine (other tests running) it may still take fewer: the flood then goes on, up to
        // 45 s, until the gateway has taken 15,000 (its status counts them).
        let enough = 15_000.0
        var received = 0.0
        func count(_ m: MQTTMessage) {
            guard m.topic == "edgeq/m1/status",
                  let s = (try? JSONSerialization.jsonObject(with: Data(m.payload))) as? [String: Any],
                  s["state"] as? String == "online",
                  let n = (s["counters"] as? [String: Any])?["messages_received"] as? Double else { return }
            received = max(received, n)
        }
        let sampler = Sampler()
        sampler.start(pid: gw.pid, interval: 0.1)
        var config = try MQTTConfiguration(url: broker.url, clientID: "flood-\(UUID().uuidString.prefix(6))")
        config.inboundCapacity = 16
        let flood = try MQTTClient(config)
        flood.start()
        try flood.waitUntilConnected(timeout: 10)
        let end = Date().addingTimeInterval(12)
        let longest = Date().addingTimeInterval(45)
        var sent = 0, accepted = 0, failed = 0
        var firstFailure: String?
        while (sent < 300_000 && Date() < end) || (received < enough && Date() < longest) {
            if sent % 500 == 0 { while let m = plant.receive(timeout: 0) { count(m) } }
            if sent % 20 == 0 { usleep(1_000) }
            let i = sent
            let (topic, payload): (String, String)
            switch i % 10 {
            case 0, 2, 4: (topic, payload) = ("plant/m/state", #"{"step":\#(i),"x":\#(Double(i % 9) - 4)}"#)
            case 1, 3, 5: (topic, payload) = ("plant/m/cmd", #"{"a":\#(i % 2)}"#)
            case 6: (topic, payload) = ("plant/m/state", #"{"step":\#(i),"x":"#)                 // invalid JSON
            case 7: (topic, payload) = ("plant/m/state", #"{"step":\#(i),"x":1,"x":2}"#)         // a key twice
            case 8: (topic, payload) = ("plant/elsewhere/\(i % 50)", "noise \(i)")               // unrouted
            default: (topic, payload) = ("edgeq/m1/cmd/nothing", #"{"id":"\#(i)"}"#)           // unknown verb
            }
            do {
                if try flood.publish(topic, payload, qos: i % 4 == 0 ? .atLeastOnce : .atMostOnce) == .accepted { accepted += 1 }
            } catch {
                failed += 1
                if firstFailure == nil { firstFailure = "\(error) after \(sent) messages" }
            }
            sent += 1
        }
        flood.stop()
        // The gateway took the flood (its status counts the messages), then give it a quiet
        // window to trim the heap: back to idle +20 % within 35 s.
        let counting = Date().addingTimeInterval(20)
        while Date() < counting && received < 0.5 * Double(sent) {
            if let m = plant.receive(timeout: 1) { count(m) }
        }
        // After: the lowest resident size once the flood is over (the trims' result), and where
        // it settles 3 s later (the code of what still runs faults back in: a few MB).
        var after = Self.residentKB(gw.pid) ?? 0
        let settle = Date().addingTimeInterval(35)
        while Date() < settle {
            after = min(after, Self.residentKB(gw.pid) ?? after)
            if Double(after) <= 1.2 * Double(idle) { break }
            usleep(250_000)
        }
        usleep(3_000_000)
        let settled = Self.residentKB(gw.pid) ?? 0
        let during = sampler.stop()
        let peak = during.max() ?? 0
        let log = (try? String(contentsOfFile: gwLog, encoding: .utf8)) ?? ""
        let notes = log.split(separator: "\n").filter { $0.contains("heap trimmed") || $0.contains("retraining") }
        let summary = "gateway log \(log.count) bytes; idle \(idle) kB, peak \(peak) kB, after \(after) kB, settled \(settled) kB; \(sent) sent (\(accepted) accepted by the client, \(failed) refused: \(firstFailure ?? "none")), \(Int(received)) received; gateway log:\n\(notes.joined(separator: "\n"))"
        print("flood memory: \(summary)")
        #expect(gw.isRunning, "edgeq run died under the flood")
        #expect(received >= enough, "the gateway took too little of the flood to prove anything: \(summary)")
        #expect(during.count >= 20, "too few samples: \(summary)")
        #expect(Double(peak) <= 2 * Double(idle), "resident memory above 2x idle during the flood: \(summary)")
        // Idle + 20 %: with the paced flood the gateway takes 30,000-94,000 messages (the
        // unpaced one let it take from 700 to 180,000), and its lowest size after the flood
        // was +2 … +13 % over this session's runs (+13.1 % in a whole-suite run), with both
        // trims logged and the peak itself that high: the flood's growth, which the trims
        // cannot give back, not a failure to come back. The failure this guards against was +66 %.
        #expect(Double(after) <= 1.2 * Double(idle), "resident memory not back to idle +20 % after the flood: \(summary)")
        #expect(Double(settled) <= 1.2 * Double(idle), "resident memory grew back after the flood: \(summary)")
    }
}
