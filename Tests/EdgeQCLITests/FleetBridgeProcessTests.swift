import EdgeQGateway
import EdgeQLog
import EdgeQMQTT
import EdgeQSystem
import EdgeQTestSupport
import EdgeQTrust
import Foundation
import Testing

/// Fleet shipping across two mosquitto brokers joined by a bridge (docs/fleet.md, "On a mosquitto
/// bridge"): the gateways and the plant on a site broker, the learner on a central broker, the
/// bridge configured on the site broker exactly as the documentation shows it. Real `edgeq run`
/// and `edgeq learner` processes; the end state is compared row by row with each gateway's log.
extension FleetProcessTests {
    /// The bridge section of the site broker (docs/fleet.md shows the same lines): experience and
    /// verdicts out, acknowledgements and the model in, QoS 1, a persistent session on the central
    /// broker under a fixed client id so that acknowledgements wait there while the link is down.
    static func fleetBridge(centralPort: UInt16, fleet: String = "fleet/t") -> [String] {
        [
            "connection fleet-site-a",
            "address 127.0.0.1:\(centralPort)",
            "remote_clientid fleet-bridge-site-a",
            "cleansession false",
            "restart_timeout 1",
            "keepalive_interval 10",
            "topic \(fleet)/experience/# out 1",
            "topic \(fleet)/verdict/# out 1",
            "topic \(fleet)/ack/# in 1",
            "topic \(fleet)/model/# in 1",
        ]
    }

    /// Waits until the site broker says its bridge is connected (`$SYS/broker/connection/<remote
    /// client id>/state` = 1, retained on the site broker), or down with `state: "0"`.
    static func waitBridgeUp(_ site: MosquittoBroker, state: String = "1", timeout: Double = 60) throws -> Bool {
        let watcher = try plantClient(site, "$SYS/broker/connection/fleet-bridge-site-a/state")
        defer { watcher.stop() }
        return eventually(timeout: timeout) {
            guard let m = watcher.receive(timeout: 0.2) else { return false }
            return m.payload == Array(state.utf8)
        }
    }

    /// Waits for every gateway of `ids` to say it is online (each message counts once, whichever
    /// gateway it is from).
    static func waitAllOnline(_ rig: Rig, _ ids: Set<String>, timeout: Double = 60) -> Bool {
        var pending = ids
        let deadline = Date().addingTimeInterval(timeout)
        while !pending.isEmpty && Date() < deadline {
            guard let m = rig.plant.receive(timeout: 0.2) else { continue }
            for id in pending where m.topic == "edgeq/\(id)/status"
                && String(decoding: m.payload, as: UTF8.self).contains(#""state":"online""#) {
                pending.remove(id)
            }
        }
        return pending.isEmpty
    }

    /// Two gateways on the site broker ship through the bridge to the learner on the central
    /// broker; the site broker (the one that hosts the bridge) is killed with SIGKILL mid-stream
    /// and started again on its port, then the central broker likewise. After each, every row of
    /// each gateway's log is in the fleet log exactly once and equal to the gateway's row, and each
    /// gateway's cursor stands on its last row.
    @Test func throughABridgeEveryRowArrivesOnceAcrossBrokerKills() throws {
        let central = try MosquittoBroker()
        let site = try MosquittoBroker(extraConfig: Self.fleetBridge(centralPort: central.port))
        let rig = try Rig(gatewayBroker: site, learnerBroker: central)
        try #require(try Self.waitBridgeUp(site), "the bridge never connected:\n\(rig.processLogs())")
        try rig.startLearner("l1")
        try rig.startGateway("u", batchRows: 10, ackTimeout: "1s")
        try rig.startGateway("v", batchRows: 10, ackTimeout: "1s")
        try rig.drive("u", count: 151, firstOfRun: true)
        try rig.drive("v", count: 151, firstOfRun: true)
        try rig.waitShipped("u")
        try rig.waitShipped("v")
        #expect(try rig.expectSameRows("u") == 150)
        #expect(try rig.expectSameRows("v") == 150)

        // 1. The site broker (gateways, plant, the bridge) killed while rows are unacknowledged;
        // whatever its bridge had queued dies with it. Started again on the same port.
        try rig.drive("u", count: 100)
        try rig.drive("v", count: 100)
        let atKill = ["u", "v"].map { "\($0): cursor \(rig.cursor($0) ?? -1) of \((try? rig.gatewayRows($0).last?.id) ?? 0)" }
        site.kill9()
        try site.start()
        try #require(Self.waitAllOnline(rig, ["u", "v"]), "the gateways did not come back after the site broker's restart:\n\(rig.processLogs())")
        try rig.plant.waitUntilConnected(timeout: 30)
        try #require(try Self.waitBridgeUp(site), "the bridge did not come back:\n\(rig.processLogs())")
        try rig.drive("u", count: 100)
        try rig.drive("v", count: 100)
        try rig.waitShipped("u")
        try rig.waitShipped("v")
        #expect(try rig.expectSameRows("u") == 350)
        #expect(try rig.expectSameRows("v") == 350)

        // 2. The central broker (the learner, the bridge's persistent session) killed likewise.
        // The gateways log on meanwhile: their batches wait in the bridge's queue on the site
        // broker, unacknowledged (no learner can be reached).
        try rig.drive("u", count: 50)
        try rig.drive("v", count: 50)
        central.kill9()
        try #require(try Self.waitBridgeUp(site, state: "0"), "the site broker did not notice the central broker's death:\n\(rig.processLogs())")
        try rig.drive("u", count: 100)
        try rig.drive("v", count: 100)
        for id in ["u", "v"] {
            let last = try rig.gatewayRows(id).last?.id ?? 0
            let cursor = rig.cursor(id) ?? -1
            #expect(cursor < last, "gateway \(id): nothing left unacknowledged while the central broker was down (cursor \(cursor), last \(last))")
        }
        try central.start()
        try #require(try Self.waitBridgeUp(site), "the bridge did not come back after the central broker's restart:\n\(rig.processLogs())")
        try rig.drive("u", count: 50)
        try rig.drive("v", count: 50)
        try rig.waitShipped("u")
        try rig.waitShipped("v")
        #expect(try rig.expectSameRows("u") == 550)
        #expect(try rig.expectSameRows("v") == 550)
        let summaries = try rig.fleet().gateways()
        #expect(summaries.map(\.gateway).sorted() == ["u", "v"])
        #expect(summaries.map(\.rows) == [550, 550])
        #expect(try rig.fleet().transitions(gateway: "u").count + rig.fleet().transitions(gateway: "v").count == 1100)
        print("fleet bridge: 2 × 550 rows through two broker kills (site broker killed at \(atKill)); duplicates dropped: \(summaries.map(\.duplicates))")
        rig.stopGateway("u")
        rig.stopGateway("v")
        #expect(rig.learners["l1"]?.stop(grace: 30) == 0, "the learner did not stop in order:\n\(rig.processLogs())")
    }

    /// The other two directions of the documented bridge, for the model rollout: a retained model
    /// published on the central broker reaches a subscriber on the site broker, a verdict published
    /// on the site broker reaches the central one; experience published centrally does not travel
    /// back to the site (no loop).
    @Test func theBridgeCarriesModelsInAndVerdictsOut() throws {
        let central = try MosquittoBroker()
        let site = try MosquittoBroker(extraConfig: Self.fleetBridge(centralPort: central.port))
        try #require(try Self.waitBridgeUp(site), "the bridge never connected:\n\(site.log())")
        let atSite = try plantClient(site, "fleet/t/#")
        defer { atSite.stop() }
        let atCentral = try plantClient(central, "fleet/t/verdict/#")
        defer { atCentral.stop() }
        let publisher = try plantClient(central, "unused/none")
        defer { publisher.stop() }
        _ = try publisher.publish("fleet/t/model", "manifest-v1", qos: .atLeastOnce, retain: true)
        _ = try publisher.publish("fleet/t/experience/central-only", "x", qos: .atLeastOnce)
        _ = try atSite.publish("fleet/t/verdict/u", "accepted", qos: .atLeastOnce)
        var atSiteTopics: [String] = []
        let model = eventually(timeout: 30) {
            while let m = atSite.receive(timeout: 0.1) { atSiteTopics.append(m.topic + "=" + String(decoding: m.payload, as: UTF8.self)) }
            return atSiteTopics.contains("fleet/t/model=manifest-v1")
        }
        #expect(model, "site saw: \(atSiteTopics)")
        let verdict = eventually(timeout: 30) {
            guard let m = atCentral.receive(timeout: 0.1) else { return false }
            return m.topic == "fleet/t/verdict/u" && m.payload == Array("accepted".utf8)
        }
        #expect(verdict)
        // A round trip through the bridge after the experience message: had it come back, it would be here by now.
        _ = try publisher.publish("fleet/t/model", "manifest-v2", qos: .atLeastOnce, retain: true)
        _ = eventually(timeout: 30) {
            while let m = atSite.receive(timeout: 0.1) { atSiteTopics.append(m.topic + "=" + String(decoding: m.payload, as: UTF8.self)) }
            return atSiteTopics.contains("fleet/t/model=manifest-v2")
        }
        #expect(atSiteTopics.contains("fleet/t/model=manifest-v2"))
        #expect(!atSiteTopics.contains { $0.hasPrefix("fleet/t/experience/") }, "experience came back to the site: \(atSiteTopics)")
    }

    /// Both directions with the real thing: two gateways on the site broker ship through the
    /// bridge; the learner on the central broker trains on their rows, signs and publishes a model
    /// in chunks (retained, on the central broker); the chunks and the manifest come through the
    /// bridge, each gateway verifies and stores the very bytes the learner stored, and its verdict
    /// goes back through the bridge to the learner.
    @Test func aModelTrainedAtTheCentreReachesTheSiteGatewaysAndTheirVerdictsComeBack() throws {
        let central = try MosquittoBroker()
        let site = try MosquittoBroker(extraConfig: Self.fleetBridge(centralPort: central.port))
        try #require(try Self.waitBridgeUp(site), "the bridge never connected:\n\(site.log())")
        let dir = try TempDir()
        let plant = try plantClient(site, "edgeq/+/status")
        let verdicts = try FleetModelProcessTests.Verdicts(central)
        var processes: [ChildProcess] = []
        defer {
            plant.stop()
            verdicts.client.stop()
            for p in processes where p.isRunning {
                p.signal(SIGKILL)
                _ = p.wait(timeout: 10)
            }
        }
        func logs() -> String {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.url.path).filter { $0.hasSuffix(".log") }.sorted()) ?? []
            return files.map { f in "--- \(f)\n" + ((try? String(contentsOfFile: dir.url.appendingPathComponent(f).path, encoding: .utf8)) ?? "").suffix(3000) }
                .joined(separator: "\n") + "\n--- site broker\n" + site.log().suffix(2000) + "\n--- central broker\n" + central.log().suffix(2000)
        }
        func data(_ id: String) -> URL { dir.url.appendingPathComponent("data-\(id)") }
        let keyFiles = try KeyFile.generate(name: "fleet-t", directory: dir.url.appendingPathComponent("private"))
        for id in ["m", "n"] {
            let models = TrustStore.keysDirectory(dataDirectory: data(id)).appendingPathComponent("models")
            try FileManager.default.createDirectory(at: models, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: keyFiles.publicKey, to: models.appendingPathComponent("fleet-t.pub"))
            let file = dir.url.appendingPathComponent("\(id).yaml").path
            try FleetModelProcessTests.mapping(id, policy: "manual").write(toFile: file, atomically: true, encoding: .utf8)
            processes.append(try ChildProcess(EdgeQBinary.path, ["run", "--config", file, "--broker", site.url, "--data", data(id).path],
                                              stderrPath: dir.url.appendingPathComponent("gw-\(id).log").path))
        }
        let online = FleetModelProcessTests.waitUntilOnline(plant, gateways: 2)
        try #require(online, "the gateways did not come online:\n\(logs())")

        let learnerData = dir.url.appendingPathComponent("learner")
        let learnerFile = dir.url.appendingPathComponent("learner.yaml").path
        try FleetModelProcessTests.learnerConfig(mapping: dir.url.appendingPathComponent("m.yaml").path, key: keyFiles.privateKey.path)
            .write(toFile: learnerFile, atomically: true, encoding: .utf8)
        processes.append(try ChildProcess(EdgeQBinary.path, ["learner", "--config", learnerFile, "--broker", central.url, "--data", learnerData.path,
                                                             "--train-every", "150"],
                                          stderrPath: dir.url.appendingPathComponent("learner.log").path))
        // 101 plant states (100 transitions) per gateway, the incumbent's action with each.
        for id in ["m", "n"] {
            for s in 0...100 {
                let x = Double((s * 37) % 200) / 10 - 10
                _ = try plant.publish("plant/\(id)/state", #"{"step":\#(s),"x":\#(x)}"#, qos: .atLeastOnce)
                _ = try plant.publish("plant/\(id)/cmd", #"{"a":\#(x > 0 ? 1 : 0)}"#, qos: .atLeastOnce)
                if s % 20 == 19 { usleep(2_000) }
            }
        }
        // The learner's first model (200 rows ≥ 150), in its own store (DATA/models/vN).
        // Watched by listing the folder: opening a ModelStore on it would clear the learner's
        // staging folder under its feet (the store has one owner).
        var version: Int?
        try #require(eventually(timeout: 180) {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: learnerData.appendingPathComponent("models").path)) ?? []
            version = names.compactMap { $0.hasPrefix("v") ? Int($0.dropFirst()) : nil }.max()
            return version != nil
        }, "no model was trained:\n\(logs())")
        let v = try #require(version)
        for id in ["m", "n"] {
            #expect(verdicts.wait(id, version: v, kind: "stored", timeout: 60) != nil,
                    "gateway \(id)'s verdict on v\(v) did not reach the central broker:\n\(logs())")
        }
        let bytes = try Data(contentsOf: ModelStore(dataDirectory: learnerData).modelURL(v))
        for id in ["m", "n"] {
            #expect(try Data(contentsOf: ModelStore(dataDirectory: data(id)).modelURL(v)) == bytes, "gateway \(id) stored other bytes")
        }
        print("fleet bridge: model v\(v) (\(bytes.count) bytes) centre → site, stored by both gateways; verdicts site → centre")
    }
}

