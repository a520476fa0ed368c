// The broker's share of EdgeQ's security: a real mosquitto started with the shipped
// deploy/mosquitto-acl.conf and a password file made with `mosquitto_passwd -b` (one user per
// role, docs/security.md "The broker's share"). Each refusal is shown by an observer that may
// read the topic: the refused message never arrives, although a marker the same client published
// right after it does (mosquitto delivers one client's messages in order), and an authorized
// publish on the same topic does arrive (the positive control: the observer would have seen it).
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct BrokerACLTests {
    /// The users of the shipped ACL's thermal example, plus a second gateway `tank` (which has
    /// no block of its own: the patterns alone give it its `edgeq/tank/...` subtree).
    static let users = ["thermal", "tank", "plant-thermal", "incumbent-thermal", "op-alice"]

    /// deploy/mosquitto-acl.conf in this checkout, as shipped.
    static var aclFile: String { PackageRoot.url.appendingPathComponent("deploy/mosquitto-acl.conf").path }

    /// A broker with the shipped ACL and one password per user (`pw-<user>`).
    static func broker() throws -> MosquittoBroker {
        try MosquittoBroker(auth: .passwords(Dictionary(uniqueKeysWithValues: users.map { ($0, "pw-\($0)") })),
                            extraConfig: ["acl_file \(aclFile)"])
    }

    /// A connected client with `user`'s credential.
    static func client(_ broker: MosquittoBroker, _ user: String, _ version: MQTTProtocolVersion,
                       subscribing filters: [String] = []) throws -> MQTTClient {
        var config = try configuration(broker, user, version: version)
        config.username = user
        config.password = Secret("pw-\(user)")
        return try connected(config, subscribing: filters.map { ($0, .atLeastOnce) })
    }

    /// Publishes `payload` on `topic` from `publisher` (QoS 1), then `marker` on `markerTopic`,
    /// and returns what `observer` got on `topic` until the marker arrived plus 0.3 s.
    /// Records an issue when the marker does not arrive within 5 s (nothing would be proven).
    static func deliveredBeforeMarker(_ publisher: MQTTClient, topic: String, payload: String, retain: Bool = false,
                                      observer: MQTTClient, markerTopic: String) -> [MQTTMessage] {
        // The observer's subscriptions are active once a first marker gets through.
        guard publishUntilReceived(publisher, observer, topic: markerTopic, payload: "ready-\(UUID())", qos: .atLeastOnce) != nil else {
            Issue.record("the marker on \(markerTopic) never reached the observer: the test proves nothing")
            return []
        }
        let marker = "after-\(UUID())"
        _ = try? publisher.publish(topic, payload, qos: .atLeastOnce, retain: retain)
        _ = try? publisher.publish(markerTopic, marker, qos: .atLeastOnce)
        var got: [MQTTMessage] = []
        var sawMarker = false
        var deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            guard let m = observer.receive(timeout: 0.05) else { continue }
            if m.topic == markerTopic, m.text == marker, !sawMarker {
                sawMarker = true
                deadline = Date().addingTimeInterval(0.3)
            } else if m.topic == topic {
                got.append(m)
            }
        }
        if !sawMarker { Issue.record("the marker after \(topic) never arrived: the test proves nothing") }
        return got
    }

    /// The plant's sensor credential cannot command: not the gateway (`cmd/mode`), not the
    /// heater (the actuator topic), not the gateway's status (a forged `"mode":"control"` there
    /// would silence the incumbent). The credentials that may do each of these can.
    @Test(arguments: [MQTTProtocolVersion.v5, .v311])
    func plantCredentialCannotPublishCommands(version: MQTTProtocolVersion) throws {
        let broker = try Self.broker()
        let plant = try Self.client(broker, "plant-thermal", version)
        let gateway = try Self.client(broker, "thermal", version,
                                      subscribing: ["plant/thermal/state", "plant/thermal/cmd", "edgeq/thermal/cmd/#"])
        let incumbent = try Self.client(broker, "incumbent-thermal", version,
                                        subscribing: ["plant/thermal/state", "edgeq/thermal/status"])
        let operatorClient = try Self.client(broker, "op-alice", version)

        let forgedMode = Self.deliveredBeforeMarker(plant, topic: "edgeq/thermal/cmd/mode", payload: #"{"id":"x","mode":"control"}"#,
                                                    observer: gateway, markerTopic: "plant/thermal/state")
        #expect(forgedMode.isEmpty, "the plant's credential published a command: \(forgedMode.map(\.text))")
        let forgedHeater = Self.deliveredBeforeMarker(plant, topic: "plant/thermal/cmd", payload: #"{"level":4,"step":1}"#,
                                                      observer: gateway, markerTopic: "plant/thermal/state")
        #expect(forgedHeater.isEmpty, "the plant's credential published an actuator command: \(forgedHeater.map(\.text))")
        let forgedStatus = Self.deliveredBeforeMarker(plant, topic: "edgeq/thermal/status", payload: #"{"state":"online","mode":"control"}"#,
                                                      retain: true, observer: incumbent, markerTopic: "plant/thermal/state")
        #expect(forgedStatus.isEmpty, "the plant's credential published the gateway's status: \(forgedStatus.map(\.text))")

        // Positive controls: the operator commands the gateway, the incumbent the heater, the
        // gateway writes its status; each observer sees it.
        #expect(publishUntilReceived(operatorClient, gateway, topic: "edgeq/thermal/cmd/mode", payload: #"{"id":"1","mode":"shadow"}"#, qos: .atLeastOnce) != nil)
        #expect(publishUntilReceived(incumbent, gateway, topic: "plant/thermal/cmd", payload: #"{"level":2,"step":1}"#, qos: .atLeastOnce) != nil)
        #expect(publishUntilReceived(gateway, incumbent, topic: "edgeq/thermal/status", payload: #"{"state":"online","mode":"shadow"}"#, qos: .atLeastOnce) != nil)
    }

    /// An operator's credential commands gateways but cannot forge the plant: no sensor value,
    /// no actuator command. The plant's own credential can publish the sensor value.
    @Test(arguments: [MQTTProtocolVersion.v5, .v311])
    func operatorCredentialCannotPublishSensorValues(version: MQTTProtocolVersion) throws {
        let broker = try Self.broker()
        let operatorClient = try Self.client(broker, "op-alice", version)
        let plant = try Self.client(broker, "plant-thermal", version)
        let gateway = try Self.client(broker, "thermal", version,
                                      subscribing: ["plant/thermal/state", "plant/thermal/cmd", "edgeq/thermal/cmd/#"])

        let forgedState = Self.deliveredBeforeMarker(operatorClient, topic: "plant/thermal/state", payload: #"{"step":7,"zone_temp":35}"#,
                                                     observer: gateway, markerTopic: "edgeq/thermal/cmd/mode")
        #expect(forgedState.isEmpty, "the operator's credential published a sensor value: \(forgedState.map(\.text))")
        let forgedHeater = Self.deliveredBeforeMarker(operatorClient, topic: "plant/thermal/cmd", payload: #"{"level":4,"step":7}"#,
                                                      observer: gateway, markerTopic: "edgeq/thermal/cmd/mode")
        #expect(forgedHeater.isEmpty, "the operator's credential published an actuator command: \(forgedHeater.map(\.text))")

        #expect(publishUntilReceived(plant, gateway, topic: "plant/thermal/state", payload: #"{"step":7,"zone_temp":21}"#, qos: .atLeastOnce) != nil)
    }

    /// A gateway's credential stays in its own subtree: it cannot command or impersonate another
    /// gateway, and cannot forge its own plant's sensors. Inside its subtree and on its
    /// actuator topic it can publish; the other gateway can publish in its own.
    @Test(arguments: [MQTTProtocolVersion.v5, .v311])
    func gatewayCredentialCannotPublishOnAnotherGatewaysSubtree(version: MQTTProtocolVersion) throws {
        let broker = try Self.broker()
        let thermal = try Self.client(broker, "thermal", version)
        let tank = try Self.client(broker, "tank", version, subscribing: ["edgeq/tank/cmd/#"])
        let operatorClient = try Self.client(broker, "op-alice", version, subscribing: ["edgeq/#"])
        let incumbent = try Self.client(broker, "incumbent-thermal", version,
                                        subscribing: ["plant/thermal/state", "edgeq/thermal/status"])
        let plant = try Self.client(broker, "plant-thermal", version, subscribing: ["plant/thermal/cmd"])

        for (topic, payload) in [("edgeq/tank/cmd/mode", #"{"id":"x","mode":"control"}"#),
                                 ("edgeq/tank/status", #"{"state":"online","mode":"control"}"#),
                                 ("edgeq/tank/reply/mode", #"{"id":"1","ok":true}"#)] {
            let got = Self.deliveredBeforeMarker(thermal, topic: topic, payload: payload,
                                                 observer: operatorClient, markerTopic: "edgeq/thermal/status")
            #expect(got.isEmpty, "gateway thermal published on \(topic): \(got.map(\.text))")
        }
        let forgedState = Self.deliveredBeforeMarker(thermal, topic: "plant/thermal/state", payload: #"{"step":3,"zone_temp":10}"#,
                                                     observer: incumbent, markerTopic: "edgeq/thermal/status")
        #expect(forgedState.isEmpty, "the gateway's credential published a sensor value: \(forgedState.map(\.text))")

        // Positive controls: tank in its subtree, thermal on its actuator, the operator to tank.
        #expect(publishUntilReceived(tank, operatorClient, topic: "edgeq/tank/status", payload: #"{"state":"online"}"#, qos: .atLeastOnce) != nil)
        #expect(publishUntilReceived(thermal, plant, topic: "plant/thermal/cmd", payload: #"{"level":1,"step":3}"#, qos: .atLeastOnce) != nil)
        #expect(publishUntilReceived(operatorClient, tank, topic: "edgeq/tank/cmd/mode", payload: #"{"id":"2","mode":"shadow"}"#, qos: .atLeastOnce) != nil)
    }

    /// A retained command (which the gateway refuses) can be cleared by the gateway it is
    /// addressed to — an empty retained message on its topic — but not by a plant's credential
    /// or by another gateway's.
    @Test func onlyTheGatewayClearsARetainedCommandOnItsTopics() throws {
        let broker = try Self.broker()
        let version = MQTTProtocolVersion.v5
        let operatorClient = try Self.client(broker, "op-alice", version)
        let plant = try Self.client(broker, "plant-thermal", version)
        let tank = try Self.client(broker, "tank", version)
        let thermal = try Self.client(broker, "thermal", version)
        let topic = "edgeq/thermal/cmd/mode"
        let retained = #"{"id":"r","mode":"control"}"#
        _ = try operatorClient.publish(topic, retained, qos: .atLeastOnce, retain: true)

        /// The retained message a fresh subscriber of the gateway's credential gets on `topic`:
        /// retained messages come right after the SUBACK, before a marker the operator sends then.
        func retainedNow() throws -> String? {
            let fresh = try Self.client(broker, "thermal", version, subscribing: ["edgeq/thermal/cmd/#"])
            defer { fresh.stop() }
            var found: String?
            let marker = "marker-\(UUID())"
            let deadline = Date().addingTimeInterval(5)
            var sawMarker = false
            while Date() < deadline, !sawMarker {
                _ = try? operatorClient.publish("edgeq/thermal/cmd/ping", marker, qos: .atLeastOnce)
                while let m = fresh.receive(timeout: 0.1) {
                    if m.topic == topic, m.retain { found = m.text }
                    if m.topic == "edgeq/thermal/cmd/ping", m.text == marker { sawMarker = true; break }
                }
            }
            if !sawMarker { Issue.record("no marker reached the fresh subscriber: the test proves nothing") }
            return found
        }

        #expect(try retainedNow() == retained, "the retained command is not there to clear: the test proves nothing")
        for (who, client) in [("plant-thermal", plant), ("tank", tank)] {
            _ = try client.publish(topic, "", qos: .atLeastOnce, retain: true)
            // Its own topic after the empty message: once it arrives, the clearing was handled.
            let ownTopic = who == "tank" ? "edgeq/tank/status" : "plant/thermal/state"
            let watcher = try Self.client(broker, who == "tank" ? "op-alice" : "thermal", version, subscribing: [ownTopic])
            #expect(publishUntilReceived(client, watcher, topic: ownTopic, payload: "done-\(UUID())", qos: .atLeastOnce) != nil)
            watcher.stop()
            #expect(try retainedNow() == retained, "\(who) cleared the gateway thermal's retained command")
        }
        _ = try thermal.publish(topic, "", qos: .atLeastOnce, retain: true)
        #expect(try eventually(timeout: 5) { try retainedNow() == nil }, "the gateway could not clear its retained command")
    }

    /// deploy/mosquitto-secure.conf as shipped, with only its paths and ports replaced: it starts,
    /// refuses anonymous clients and wrong passwords, serves TLS with passwords, and applies the ACL.
    @Test func theShippedSecureConfigurationWorks() throws {
        let dir = try temporaryFolder("edgeq-secure")
        defer { try? FileManager.default.removeItem(at: dir) }
        let pki = try TestCertificates(in: dir)
        let passwd = dir.appendingPathComponent("edgeq.passwd").path
        _ = FileManager.default.createFile(atPath: passwd, contents: Data())
        for user in ["thermal", "op-alice", "plant-thermal"] {
            let r = try ChildProcess.run("mosquitto_passwd", ["-b", passwd, user, "pw-\(user)"], timeout: 30)
            try #require(r.code == 0, "mosquitto_passwd: \(r.stderr)")
        }
        let tlsPort = try FreePort.find()
        let conf = PackageRoot.url.appendingPathComponent("deploy/mosquitto-secure.conf").path
        let broker = try MosquittoBroker(configFile: conf, replacing: [
            ("listener 1883 127.0.0.1", ""),            // the fixture's loopback listener instead
            ("listener 8883", "listener \(tlsPort) 127.0.0.1"),
            ("/etc/mosquitto/certs/ca.crt", pki.caFile),
            ("/etc/mosquitto/certs/server.crt", pki.serverCertificateFile),
            ("/etc/mosquitto/certs/server.key", pki.serverKeyFile),
            ("password_file /etc/mosquitto/edgeq.passwd", "password_file \(passwd)"),
            ("acl_file /etc/mosquitto/edgeq-acl.conf", "acl_file \(Self.aclFile)"),
            ("/var/lib/mosquitto/", dir.path + "/"),
        ])

        // Anonymous, and a wrong password: refused.
        for user in [nil, "op-alice"] as [String?] {
            var config = try configuration(broker, "anon")
            config.username = user
            config.password = user.map { _ in Secret("wrong") }
            let c = try makeClient(config)
            c.start()
            #expect(throws: MQTTError.self) { try c.waitUntilConnected(timeout: 1) }
            c.stop()
        }
        // TLS with the CA and a password; the ACL applies there too.
        func overTLS(_ user: String, subscribing filters: [String] = []) throws -> MQTTClient {
            var config = try MQTTConfiguration(url: "mqtts://127.0.0.1:\(tlsPort)", clientID: "\(user)-\(UUID().uuidString.prefix(8))")
            config.tls = TLSConfiguration(caFile: pki.caFile)
            config.username = user
            config.password = Secret("pw-\(user)")
            return try connected(config, subscribing: filters.map { ($0, .atLeastOnce) })
        }
        let gateway = try overTLS("thermal", subscribing: ["plant/thermal/state", "edgeq/thermal/cmd/#"])
        let plant = try overTLS("plant-thermal")
        let operatorClient = try Self.client(broker, "op-alice", .v5)   // the loopback listener
        let forged = Self.deliveredBeforeMarker(plant, topic: "edgeq/thermal/cmd/mode", payload: #"{"id":"x","mode":"control"}"#,
                                                observer: gateway, markerTopic: "plant/thermal/state")
        #expect(forged.isEmpty, "the plant's credential published a command over TLS: \(forged.map(\.text))")
        #expect(publishUntilReceived(operatorClient, gateway, topic: "edgeq/thermal/cmd/mode", payload: #"{"id":"1","mode":"shadow"}"#, qos: .atLeastOnce) != nil)
    }

    /// Client-id takeover: with the default settings another credential connecting with the
    /// gateway's client id disconnects the gateway; with `use_username_as_clientid true` (offered,
    /// commented out, in deploy/mosquitto-secure.conf) its client id becomes its own user name
    /// and the gateway stays connected.
    @Test(arguments: [false, true])
    func usernameAsClientIDStopsAClientIDTakeover(usernameAsClientID: Bool) throws {
        let broker = try MosquittoBroker(auth: .passwords(Dictionary(uniqueKeysWithValues: Self.users.map { ($0, "pw-\($0)") })),
                                         extraConfig: ["acl_file \(Self.aclFile)"] + (usernameAsClientID ? ["use_username_as_clientid true"] : []))
        func connect(_ user: String, clientID: String, subscribing filters: [String] = []) throws -> MQTTClient {
            var config = try MQTTConfiguration(url: broker.url, clientID: clientID)
            config.username = user
            config.password = Secret("pw-\(user)")
            return try connected(config, subscribing: filters.map { ($0, .atLeastOnce) })
        }
        let gateway = try connect("thermal", clientID: "edgeq-thermal", subscribing: ["plant/thermal/state"])
        #expect(gateway.counters.connects == 1)
        let intruder = try connect("plant-thermal", clientID: "edgeq-thermal")
        if usernameAsClientID {
            // The intruder's CONNECT was handled before its publish reaches the gateway.
            #expect(publishUntilReceived(intruder, gateway, topic: "plant/thermal/state", payload: "after-takeover", qos: .atLeastOnce) != nil)
            #expect(gateway.counters.connects == 1, "the gateway was disconnected \(gateway.counters.connects - 1) times")
        } else {
            #expect(eventually(timeout: 5) { gateway.counters.connects >= 2 }, "the takeover did not disconnect the gateway: the test proves nothing")
        }
        intruder.stop()
    }
}
