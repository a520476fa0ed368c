// Sparkplug B against an independent implementation: pysparkplug (PyPI), run as a real process
// (python/sparkplug_peer.py in the virtual environment scripts/setup.sh makes), through a real
// mosquitto, with the gateway running in process.
@testable import EdgeQGateway
import EdgeQMQTT
import EdgeQSparkplug
import EdgeQTestSupport
import EdgeQTopicMap
import Foundation
import SwiftProtobuf
import Testing

/// The plant's Sparkplug edge node, played by pysparkplug (`sparkplug_peer.py node`).
final class SparkplugPeer: @unchecked Sendable {
    // @unchecked Sendable: every property is a `let` set in init; the child process and the
    // folder are thread-safe or immutable.
    let process: ChildProcess
    let output: URL
    let control: String
    let dir: TempDir

    /// The peer's Python: the virtual environment scripts/setup.sh makes for pysparkplug.
    static var python: String { PackageRoot.url.appendingPathComponent(".venv-sparkplug/bin/python").path }
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("python/sparkplug_peer.py").path

    init(port: UInt16, group: String, node: String, device: String? = nil, role: String = "node") throws {
        guard FileManager.default.isExecutableFile(atPath: Self.python) else {
            throw HarnessError("\(Self.python) is missing: run scripts/setup.sh (it installs pysparkplug in its own virtual environment)")
        }
        dir = try TempDir()
        output = dir.url.appendingPathComponent("peer.out")
        control = "test/\(node)/\(role)/control"
        process = try ChildProcess(Self.python, [Self.script, role, "--port", "\(port)", "--group", group, "--node", node,
                                                 "--control", control] + (device.map { ["--device", $0] } ?? []),
                                   stdoutPath: output.path, stderrPath: dir.url.appendingPathComponent("peer.err").path)
    }

    /// The events printed so far, one per line.
    var lines: [String] {
        ((try? String(contentsOf: output, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// Its standard error (for failure messages).
    var errors: String { (try? String(contentsOf: dir.url.appendingPathComponent("peer.err"), encoding: .utf8)) ?? "" }

    /// Waits until a line satisfies `match`.
    func waitFor(_ timeout: Double = 15, _ match: (String) -> Bool) -> Bool {
        eventually(timeout: timeout) { lines.contains(where: match) }
    }

    func kill() { process.signal(SIGKILL); _ = process.wait(timeout: 10) }
    deinit { if process.isRunning { kill() } }
}

@Suite struct SparkplugGatewayTests {
    /// Control mode, actions as DCMD metrics: the burner's stage (Int32) on the device, and a
    /// Double setpoint on the node (NCMD). Action `off` is never allowed, so every decision is
    /// `high`.
    static let controlMapping = """
        gateway:
          id: sp2
        signals:
          - {name: temp, sparkplug: {group: plant1, node: plc2, device: burner, metric: Supply/Temperature}}
          - {name: stage, sparkplug: {group: plant1, node: plc2, device: burner, metric: Burner/Stage}}
        state:
          features:
            - {signal: temp}
        tick:
          trigger: plant1/tick
        reward: -abs(temp - 20)
        actions:
          fallback: high
          list:
            - name: off
              allowed: temp > 1000
              publish: {sparkplug: {group: plant1, node: plc2, device: burner, metric: Burner/Stage, type: Int32}, value: 0}
            - name: high
              publish:
                - {sparkplug: {group: plant1, node: plc2, device: burner, metric: Burner/Stage, type: Int32}, value: -3 + 5}
                - {sparkplug: {group: plant1, node: plc2, metric: Setpoint, type: Double}, value: temp + 0.5}
        safety:
          ood_margin: none
        learning:
          hidden: [16, 16]
          retrain: {every_transitions: 1000000}
          promotion: {control_share: 0}
        """

    @Test func actionsAreDCMDAndNCMDMetricsTheNodeReceives() throws {
        let h = try GatewayHarness(yaml: Self.controlMapping, mode: .control, withModel: true)
        defer { h.stop() }
        let peer = try SparkplugPeer(port: h.broker.port, group: "plant1", node: "plc2", device: "burner")
        defer { peer.kill() }
        #expect(peer.waitFor { $0 == "ready" }, "the peer did not start: \(peer.errors)")
        #expect(eventually(timeout: 10) { signal(h, "temp") == (.valid, 20.0) && signal(h, "stage") == (.valid, 0) })
        try h.send("plant1/tick", "1")
        // pysparkplug decodes the DCMD: the metric, its value and its datatype.
        #expect(peer.waitFor { $0 == "dcmd Burner/Stage 2 INT32" }, "\(peer.lines)")
        #expect(peer.waitFor { $0 == "ncmd Setpoint 20.5" }, "\(peer.lines)")
        // The peer applies it and reports it back in a DDATA: the loop is closed.
        #expect(eventually(timeout: 10) { signal(h, "stage") == (.valid, 2) })
    }

    static let mapping = """
        gateway:
          id: sp1
          mode: shadow
        signals:
          - {name: temp, sparkplug: {group: plant1, node: plc1, device: burner, metric: Supply/Temperature}, range: [-50, 150]}
          - {name: ambient, sparkplug: {group: plant1, node: plc1, metric: Node/Ambient}}
          - {name: burner_mode, sparkplug: {group: plant1, node: plc1, device: burner, metric: Mode}, type: enum, values: {auto: 1, manual: 0}}
        state:
          features:
            - {signal: temp}
            - {signal: ambient}
        tick:
          trigger: plant1/tick
        reward: -abs(temp - 20)
        actions:
          fallback: a0
          list:
            - name: a0
              publish: {topic: plant/cmd, payload: '{{value}}', value: 0}
            - name: a1
              publish: {topic: plant/cmd, payload: '{{value}}', value: 1}
        safety:
          ood_margin: none
        learning:
          hidden: [16, 16]
          retrain: {every_transitions: 1000000}
        """

    /// A signal's status and value as the gateway's decision state holds them.
    func signal(_ h: GatewayHarness, _ name: String) -> (SignalStatus, Double) {
        guard let i = h.map.signalIndex(named: name) else { return (.missing, .nan) }
        return h.gateway.decision.withLock { ($0.core.table.status(of: i), $0.core.table.values[i]) }
    }

    /// Publishes a tick and returns the shadow report's `status`.
    func tick(_ h: GatewayHarness) throws -> String? {
        try h.send("plant1/tick", "1")
        let m = try h.waitFor(topic: "\(h.map.gateway.prefix)/shadow")
        return GatewayHarness.json(m)["status"] as? String
    }

    @Test func birthDataDeathAndRebirthWithPysparkplug() throws {
        let h = try GatewayHarness(yaml: Self.mapping, withModel: true)
        defer { h.stop() }
        let peer = try SparkplugPeer(port: h.broker.port, group: "plant1", node: "plc1", device: "burner")
        defer { peer.kill() }
        #expect(peer.waitFor { $0 == "ready" }, "the peer did not start: \(peer.errors)")

        // Births establish names, aliases, datatypes and the first values.
        #expect(eventually(timeout: 10) { signal(h, "temp") == (.valid, 20.0) && signal(h, "ambient") == (.valid, 7.25) })
        #expect(signal(h, "burner_mode") == (.valid, 1))   // the String metric "auto", through the enum's values
        #expect(try tick(h) == "ok")

        // DDATA by alias only, then by name: values the gateway decides on.
        try h.send(peer.control, #"{"op":"ddata","values":{"Supply/Temperature":21.5},"by":"alias"}"#)
        #expect(eventually(timeout: 10) { signal(h, "temp") == (.valid, 21.5) })
        try h.send(peer.control, #"{"op":"ddata","values":{"Supply/Temperature":-3.75,"Mode":"manual"},"by":"name"}"#)
        #expect(eventually(timeout: 10) { signal(h, "temp") == (.valid, -3.75) && signal(h, "burner_mode") == (.valid, 0) })
        #expect(try tick(h) == "ok")
        // A value outside the signal's range is invalid, as from any topic.
        try h.send(peer.control, #"{"op":"ddata","values":{"Supply/Temperature":151},"by":"alias"}"#)
        #expect(eventually(timeout: 10) { signal(h, "temp").0 == .invalid(.outOfRange) })
        try h.send(peer.control, #"{"op":"ddata","values":{"Supply/Temperature":22},"by":"alias"}"#)
        #expect(eventually(timeout: 10) { signal(h, "temp") == (.valid, 22) })

        // An alias no birth announced: the gateway asks the node for a rebirth, pysparkplug
        // sees the NCMD, births again, and the signals are valid again from the new birth.
        try h.send(peer.control, #"{"op":"ddata_unknown_alias"}"#)
        #expect(peer.waitFor { $0 == "rebirth_request" }, "no rebirth request reached the peer: \(peer.lines)")
        #expect(peer.waitFor { $0 == "births 2" })
        #expect(eventually(timeout: 10) { signal(h, "temp") == (.valid, 22) && signal(h, "ambient") == (.valid, 7.25) })
        #expect(h.gateway.decision.withLock { $0.sparkplug.rebirthRequests } == 1)
        #expect(h.metric(#"edgeq_sparkplug_events_total{event="rebirth_request"}"#) == 1)
        #expect(h.metric(#"edgeq_sparkplug_events_total{event="birth"}"#) == 4)   // NBIRTH + DBIRTH, twice
        #expect(try tick(h) == "ok")

        // DDEATH: the device's signals are stale at once and stop decisions; the node's stay.
        try h.send(peer.control, #"{"op":"ddeath"}"#)
        #expect(eventually(timeout: 10) { signal(h, "temp").0 == .stale })
        #expect(signal(h, "ambient") == (.valid, 7.25))
        #expect(try tick(h) == "stale")
        // A new DBIRTH brings them back.
        try h.send(peer.control, #"{"op":"dbirth"}"#)
        #expect(eventually(timeout: 10) { signal(h, "temp") == (.valid, 22) })
        #expect(try tick(h) == "ok")

        // The node dies (killed: the broker publishes its Will, an NDEATH with its bdSeq):
        // every signal of the node and its devices is stale at once.
        peer.kill()
        #expect(eventually(timeout: 10) { signal(h, "ambient").0 == .stale && signal(h, "temp").0 == .stale })
        #expect(try tick(h) == "stale")
    }
}

/// EdgeQ as a Sparkplug B edge node, watched by pysparkplug as the host application.
@Suite struct SparkplugEdgeNodeTests {
    /// The host's lines of one type (`nbirth`, `ndata`, `ndeath`), each's JSON object.
    func messages(_ peer: SparkplugPeer, _ type: String) -> [[String: Any]] {
        peer.lines.filter { $0.hasPrefix(type + " ") }.compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.dropFirst(type.count + 1).utf8))) as? [String: Any]
        }
    }

    func metrics(_ m: [String: Any]) -> [String: Any] { m["metrics"] as? [String: Any] ?? [:] }

    @Test func birthDataRebirthAndDeathDecodedByPysparkplugHost() throws {
        let broker = try MosquittoBroker()
        let host = try SparkplugPeer(port: broker.port, group: "plant1", node: "edgeq-t1", role: "host")
        defer { host.kill() }
        #expect(host.waitFor { $0 == "ready" }, "the host did not start: \(host.errors)")
        let h = try GatewayHarness(yaml: testMapping() + "\nsparkplug: {group: plant1, node: edgeq-t1}\n", withModel: true, broker: broker)
        defer { h.stop() }

        // NBIRTH: bdSeq, the rebirth control, EdgeQ's metrics with their first values.
        #expect(host.waitFor { $0.hasPrefix("nbirth ") }, "no NBIRTH decoded: \(host.lines) \(host.errors)")
        guard let birth = messages(host, "nbirth").first else { return }
        let b = metrics(birth)
        #expect(b["EdgeQ/Mode"] as? String == "shadow")
        #expect(b["EdgeQ/Model Version"] as? Int == 1)
        #expect(b["EdgeQ/Decisions"] as? Int == 0)
        #expect(b["EdgeQ/Last Action"] as? String == "")
        #expect(b["Node Control/Rebirth"] as? Bool == false)
        #expect(birth["seq"] as? Int == 0)
        let bdSeq = b["bdSeq"] as? Int
        #expect(bdSeq != nil)

        // Decisions: NDATA with the changed metrics, aliases resolved by pysparkplug.
        try h.send("plant/t/state", #"{"step":1,"x":1,"y":2}"#)
        try h.send("plant/t/state", #"{"step":2,"x":1.5,"y":2}"#)
        // The decision count is counted as a decision starts, its reward stored a moment later: a
        // snapshot can carry the count before the reward, whose NDATA then follows.
        #expect(eventually(timeout: 10) {
            let data = messages(host, "ndata")
            return data.contains { (metrics($0)["EdgeQ/Decisions"] as? Int) == 2 } && data.contains { metrics($0)["EdgeQ/Reward"] as? Double == -1.5 }
        }, "\(host.lines)")
        let data = messages(host, "ndata")
        #expect(data.allSatisfy { ($0["seq"] as? Int ?? 0) >= 1 })
        let actions = Set(data.compactMap { metrics($0)["EdgeQ/Last Action"] as? String })
        #expect(!actions.isEmpty && actions.isSubset(of: ["a0", "a1", "hold"]), "\(actions)")
        #expect(data.contains { metrics($0)["EdgeQ/Reward"] as? Double == -1.5 }, "\(data)")   // the first transition closes at x = 1.5: -abs(x)

        // A rebirth request from the host: a new NBIRTH (seq 0, same bdSeq, current values).
        try h.send(host.control, #"{"op":"rebirth"}"#)
        #expect(eventually(timeout: 10) { messages(host, "nbirth").count == 2 }, "\(host.lines)")
        if let again = messages(host, "nbirth").last {
            #expect(metrics(again)["bdSeq"] as? Int == bdSeq && again["seq"] as? Int == 0)
            #expect(metrics(again)["EdgeQ/Decisions"] as? Int == 2)
        }

        // Stopping: the NDEATH carries the birth's bdSeq.
        h.stop()
        #expect(host.waitFor { $0.hasPrefix("ndeath ") }, "\(host.lines)")
        #expect(messages(host, "ndeath").first.map { metrics($0)["bdSeq"] as? Int } == bdSeq)
    }
}

/// What decoding a Sparkplug B message costs in heap bytes (docs/benchmarks.md, "Sparkplug B
/// decoding"): the protobuf decoder allocates per message; the decoded messages are kept, so the
/// growth of the heap in use is what they took.
@Suite struct SparkplugDecodeCostTests {
    /// A DDATA of the test peer's shape: 3 metrics by alias, each with a timestamp.
    static func ddata(seq: UInt64) -> [UInt8] {
        var p = SparkplugBPayload()
        p.timestamp = 1_767_225_600_000
        p.seq = seq
        for (alias, v) in [(UInt64(10), 21.5), (11, 2), (12, 0)] {
            var m = SparkplugBPayload.Metric()
            m.alias = alias
            m.timestamp = 1_767_225_600_000
            if alias == 10 { m.value = .doubleValue(v) } else { m.value = .intValue(UInt32(v)) }
            p.metrics.append(m)
        }
        return (try? p.serializedBytes()) ?? []
    }

    static func heapInUse() throws -> Int {
        guard let b = ProcessMemory.heapInUse() else { throw HarnessError("the C library does not report its heap (glibc mallinfo2)") }
        return b
    }

    @Test func decodeBytesPerMessageAndApplyWithoutAllocating() throws {
        let map = try TopicMap.parse(yaml: SparkplugGatewayTests.mapping, file: "sp.yaml")
        let layout = SparkplugLayout(map: map)
        let topic = "spBv1.0/plant1/DDATA/plc1/burner"
        let payload = Self.ddata(seq: 1)
        #expect(payload.count > 40 && payload.count < 100)
        let n = 20_000
        var perMessage: [Double] = []
        for _ in 0..<5 {
            var kept: [SparkplugInbound?] = []
            kept.reserveCapacity(n)
            let before = try Self.heapInUse()
            for _ in 0..<n { kept.append(layout.inbound(topic: topic, payload: payload)) }
            let after = try Self.heapInUse()
            #expect(kept.allSatisfy { $0?.payload?.metrics.count == 3 })
            perMessage.append(Double(after - before) / Double(n))
        }
        let median = perMessage.sorted()[2]
        print("[sparkplug] heap bytes per decoded DDATA (\(payload.count) bytes, 3 metrics): median \(median) of \(perMessage)")
        // The decoder allocates (the metric array, each metric's storage); a regression that
        // copies the payload or adds per-metric buffers shows here.
        #expect(median > 0 && median < 2048)

        // Encoding an action's DCMD (one Int32 metric): the bytes the command keeps. The heap is
        // the process's, shared with the suites running beside this one: the median of 5 rounds,
        // as for decoding (one round read 1,242 bytes a command while other suites allocated).
        let write = SparkplugWrite(group: "plant1", node: "plc1", device: "burner", metric: "Burner/Stage", datatype: .int32)
        var perCommandRounds: [Double] = []
        var commandBytes = 0
        for _ in 0..<5 {
            var encoded: [[UInt8]?] = []
            encoded.reserveCapacity(n)
            let e0 = try Self.heapInUse()
            for i in 0..<n { encoded.append(SparkplugCommands.payload(write, rendered: i & 1 == 0 ? [0x32] : [0x2D, 0x37])) }
            let e1 = try Self.heapInUse()
            #expect(encoded.allSatisfy { $0 != nil })
            commandBytes = encoded[0]?.count ?? 0
            perCommandRounds.append(Double(e1 - e0) / Double(n))
        }
        let perCommand = perCommandRounds.sorted()[2]
        print("[sparkplug] heap bytes kept per encoded DCMD (\(commandBytes) bytes): median \(perCommand) of \(perCommandRounds)")
        #expect(perCommand > 0 && perCommand < 1024)

        // Applying decoded data: values land in the table through the aliases of the birth.
        var receiver = SparkplugReceiver(map: map)
        var table = SignalTable(for: map)
        var birth = SparkplugBPayload()
        birth.seq = 0
        var bd = SparkplugBPayload.Metric()
        bd.name = "bdSeq"
        bd.value = .longValue(0)
        birth.metrics = [bd]
        var dbirth = SparkplugBPayload()
        dbirth.seq = 1
        for (name, alias, type) in [("Supply/Temperature", UInt64(10), SparkplugBDataType.double), ("Burner/Stage", 11, .int32), ("Mode", 12, .string)] {
            var m = SparkplugBPayload.Metric()
            m.name = name
            m.alias = alias
            m.datatype = UInt32(type.rawValue)
            m.isNull = true
            dbirth.metrics.append(m)
        }
        _ = receiver.apply(SparkplugInbound(type: .nbirth, node: 0, device: -1, payload: birth), time: 1, into: &table)
        _ = receiver.apply(SparkplugInbound(type: .dbirth, node: 0, device: 0, payload: dbirth), time: 2, into: &table)
        for seq in 2..<1000 {
            guard let m = layout.inbound(topic: topic, payload: Self.ddata(seq: UInt64(seq % 256))) else { continue }
            let e = receiver.apply(m, time: UInt64(seq), into: &table)
            if e.rebirth != nil { Issue.record("a rebirth was asked for at seq \(seq): \(e)") ; break }
        }
        let temp = map.signalIndex(named: "temp") ?? -1
        #expect(table.status(of: temp) == .valid && table.values[temp] == 21.5)
        #expect(receiver.rebirthRequests == 0)
    }
}

/// The receiver's session rules, message by message (the payloads encoded by EdgeQ's own schema;
/// the interop tests above use pysparkplug's).
@Suite struct SparkplugReceiverTests {
    let map: TopicMap
    let temp: Int, ambient: Int

    init() throws {
        map = try TopicMap.parse(yaml: SparkplugGatewayTests.mapping, file: "sp.yaml")
        temp = map.signalIndex(named: "temp") ?? -1
        ambient = map.signalIndex(named: "ambient") ?? -1
    }

    func metric(_ name: String?, alias: UInt64, _ value: Double? = nil, type: SparkplugBDataType = .double) -> SparkplugBPayload.Metric {
        var m = SparkplugBPayload.Metric()
        if let name { m.name = name; m.datatype = UInt32(type.rawValue) }
        m.alias = alias
        if let value { m.value = .doubleValue(value) }
        return m
    }

    func payload(seq: UInt64?, _ metrics: [SparkplugBPayload.Metric]) -> SparkplugBPayload {
        var p = SparkplugBPayload()
        if let seq { p.seq = seq }
        p.timestamp = 1
        p.metrics = metrics
        return p
    }

    /// A receiver after NBIRTH (bdSeq 7, seq 0) and DBIRTH (seq 1): temp 20, ambient 5.
    func born() -> (SparkplugReceiver, SignalTable) {
        var r = SparkplugReceiver(map: map)
        var t = SignalTable(for: map)
        var bd = SparkplugBPayload.Metric()
        bd.name = "bdSeq"
        bd.value = .longValue(7)
        _ = r.apply(SparkplugInbound(type: .nbirth, node: 0, device: -1, payload: payload(seq: 0, [bd, metric("Node/Ambient", alias: 1, 5)])), time: 1, into: &t)
        _ = r.apply(SparkplugInbound(type: .dbirth, node: 0, device: 0, payload: payload(seq: 1, [metric("Supply/Temperature", alias: 10, 20)])), time: 2, into: &t)
        return (r, t)
    }

    @Test func aSequenceGapMakesTheNodeStaleAndAsksForOneRebirthPerInterval() {
        var (r, t) = born()
        #expect(t.status(of: temp) == .valid && t.values[temp] == 20 && t.values[ambient] == 5)
        let e = r.apply(SparkplugInbound(type: .ddata, node: 0, device: 0, payload: payload(seq: 3, [metric(nil, alias: 10, 21)])), time: 3, into: &t)
        #expect(e.rebirth == 0 && e.reason == "a gap in the sequence numbers")
        #expect(t.status(of: temp) == .stale && t.status(of: ambient) == .stale)
        // Data until the new birth is not taken and asks again only after the interval.
        let again = r.apply(SparkplugInbound(type: .ddata, node: 0, device: 0, payload: payload(seq: 4, [metric(nil, alias: 10, 22)])), time: 4, into: &t)
        #expect(again.rebirth == nil && t.status(of: temp) == .stale)
        let later = r.apply(SparkplugInbound(type: .ddata, node: 0, device: 0, payload: payload(seq: 5, [metric(nil, alias: 10, 22)])), time: 4 + r.rebirthInterval, into: &t)
        #expect(later.rebirth == 0 && r.rebirthRequests == 2)
    }

    @Test func anOldSessionsDeathIsIgnoredAndTheCurrentOnesMakesEverythingStale() {
        var (r, t) = born()
        var old = SparkplugBPayload.Metric()
        old.name = "bdSeq"
        old.value = .longValue(6)
        _ = r.apply(SparkplugInbound(type: .ndeath, node: 0, device: -1, payload: payload(seq: nil, [old])), time: 3, into: &t)
        #expect(t.status(of: temp) == .valid && t.status(of: ambient) == .valid && r.deaths == 0)
        var current = old
        current.value = .longValue(7)
        _ = r.apply(SparkplugInbound(type: .ndeath, node: 0, device: -1, payload: payload(seq: nil, [current])), time: 4, into: &t)
        #expect(t.status(of: temp) == .stale && t.status(of: ambient) == .stale && r.deaths == 1)
    }

    @Test func dataBeforeTheDevicesBirthAndUndecodablePayloadsAskForARebirth() {
        var r = SparkplugReceiver(map: map)
        var t = SignalTable(for: map)
        let early = r.apply(SparkplugInbound(type: .ddata, node: 0, device: 0, payload: payload(seq: 0, [metric(nil, alias: 10, 21)])), time: 1, into: &t)
        #expect(early.rebirth == 0 && t.status(of: temp) == .stale)
        let layout = SparkplugLayout(map: map)
        let junk = layout.inbound(topic: "spBv1.0/plant1/NDATA/plc1", payload: [0xFF, 0xFF, 0xFF])
        #expect(junk != nil && junk?.payload == nil)
        if let junk {
            let e = r.apply(junk, time: 1 + r.rebirthInterval, into: &t)
            #expect(e.undecodable && e.rebirth == 0 && r.undecodable == 1)
        }
        // Other nodes, commands and other namespaces are not ours.
        #expect(layout.inbound(topic: "spBv1.0/plant1/NDATA/plc9", payload: []) == nil)
        #expect(layout.inbound(topic: "spBv1.0/plant1/DCMD/plc1/burner", payload: []) == nil)
        #expect(layout.inbound(topic: "spBv1.0/plant1/NDATA/plc1/extra/level", payload: []) == nil)
        #expect(layout.classify(topic: "spBv1.0/plant1/DDATA/plc1/other")?.device == SparkplugInbound.unmappedDevice)
        #expect(layout.subscriptions == ["spBv1.0/plant1/+/plc1", "spBv1.0/plant1/+/plc1/+"])
    }

    @Test func writesEncodeEachDatatypeAndRefuseWhatDoesNotFit() throws {
        func decoded(_ type: SparkplugDataType, _ v: Double) throws -> SparkplugBPayload.Metric? {
            let w = SparkplugWrite(group: "g", node: "n", metric: "m", datatype: type)
            guard let bytes = SparkplugCommands.payload(w, value: v) else { return nil }
            let p = try SparkplugBPayload(serializedBytes: bytes)
            #expect(p.hasTimestamp && p.metrics.count == 1 && p.metrics[0].datatype == UInt32(type.rawValue))
            return p.metrics.first
        }
        #expect(try decoded(.int8, -3)?.value == .intValue(UInt32(bitPattern: -3)))
        #expect(try decoded(.int8, 128) == nil)
        #expect(try decoded(.uint16, 65535.4)?.value == .intValue(65535))
        #expect(try decoded(.uint16, -1) == nil)
        #expect(try decoded(.int64, -5)?.value == .longValue(UInt64(bitPattern: -5)))
        #expect(try decoded(.float, 2.5)?.value == .floatValue(2.5))
        #expect(try decoded(.double, .nan) == nil)
        #expect(try decoded(.boolean, 0)?.value == .booleanValue(false))
        #expect(try decoded(.boolean, 2)?.value == .booleanValue(true))
    }
}
