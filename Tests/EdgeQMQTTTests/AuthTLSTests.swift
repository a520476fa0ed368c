// Credentials and TLS against a real mosquitto: a wrong password is refused with an
// error naming the cause and retried with backoff; an untrusted CA is refused; the
// right CA with a client certificate works. Passwords never show in descriptions.
import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Testing

@Suite struct AuthTLSTests {
    @Test(arguments: [MQTTProtocolVersion.v5, .v311])
    func wrongPasswordIsRefusedClearlyAndRetried(version: MQTTProtocolVersion) throws {
        let broker = try MosquittoBroker(auth: .passwords(["plant": "s3cret"]))
        var config = try configuration(broker, version: version)
        config.username = "plant"
        config.password = Secret("wrong-password")
        let client = try makeClient(config)
        client.start()
        do {
            try client.waitUntilConnected(timeout: 1.5)
            Issue.record("connected with a wrong password")
        } catch let e as MQTTError {
            #expect(e.code == .timeout)
            #expect(e.message.contains("credentials"), "\(e.message)")
            #expect(!e.message.contains("wrong-password"))
        }
        guard case .reconnecting(let failure) = client.state else {
            Issue.record("state is \(client.state), not reconnecting")
            return
        }
        #expect(failure.code == .notAuthorized)
        #expect(failure.message.contains("password"))
        // Retried with backoff (0.1 + 0.2 + 0.4 + 0.8 s): several attempts in 1.5 s, not hundreds.
        let failures = client.counters.failures
        #expect(failures >= 3 && failures <= 10, "\(failures) attempts")
        #expect(client.counters.connects == 0)
    }

    @Test func passwordFromFileAndEnvironmentWorks() throws {
        let broker = try MosquittoBroker(auth: .passwords(["plant": "s3cret"]))
        let dir = try temporaryFolder("edgeq-secret")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("pw")
        try "s3cret\n".write(to: file, atomically: true, encoding: .utf8)
        var config = try configuration(broker)
        config.username = "plant"
        config.password = try Secret(source: "file:\(file.path)")
        let c = try connected(config)
        #expect(c.state == .connected)

        let variable = "EDGEQ_TEST_PW_\(UUID().uuidString.prefix(8))"
        setenv(variable, "s3cret", 1)
        config.password = try Secret(source: "env:\(variable)")
        config.clientID += "-env"
        _ = try connected(config)

        #expect(throws: MQTTError.self) { _ = try Secret(source: "env:EDGEQ_NO_SUCH_VARIABLE_\(variable)") }
        #expect(throws: MQTTError.self) { _ = try Secret(source: "s3cret") }
        // Never printed.
        #expect(!String(describing: config).contains("s3cret"))
        #expect(!String(reflecting: config).contains("s3cret"))
    }

    @Test func untrustedCAIsRefusedWithATLSError() throws {
        let dir = try temporaryFolder("edgeq-pki")
        defer { try? FileManager.default.removeItem(at: dir) }
        let pki = try TestCertificates(in: dir)
        let broker = try MosquittoBroker(tls: .init(certificates: pki))
        var config = try configuration(broker)
        config.tls = TLSConfiguration(caFile: pki.untrustedCAFile)
        let client = try makeClient(config)
        client.start()
        #expect(throws: MQTTError.self) { try client.waitUntilConnected(timeout: 1) }
        guard case .reconnecting(let failure) = client.state else {
            Issue.record("state is \(client.state), not reconnecting")
            return
        }
        #expect(failure.code == .tls, "\(failure)")
        #expect(failure.message.contains("CA"), "\(failure.message)")
    }

    @Test func rightCAWithClientCertificateWorks() throws {
        let dir = try temporaryFolder("edgeq-pki")
        defer { try? FileManager.default.removeItem(at: dir) }
        let pki = try TestCertificates(in: dir)
        let broker = try MosquittoBroker(tls: .init(certificates: pki, requireClientCertificate: true))
        #expect(broker.url.hasPrefix("mqtts://"))
        var config = try configuration(broker)
        config.tls = TLSConfiguration(caFile: pki.caFile, certificateFile: pki.clientCertificateFile,
                                      keyFile: pki.clientKeyFile)
        let sub = try connected(config, subscribing: [("secure/#", .atLeastOnce)])
        config.clientID += "-pub"
        let pub = try connected(config)
        #expect(publishUntilReceived(pub, sub, topic: "secure/t", payload: "over-tls", qos: .atLeastOnce) != nil)

        // Without the client certificate the broker refuses us.
        var anonymous = try configuration(broker)
        anonymous.tls = TLSConfiguration(caFile: pki.caFile)
        let refused = try makeClient(anonymous)
        refused.start()
        #expect(throws: MQTTError.self) { try refused.waitUntilConnected(timeout: 1) }
        if case .reconnecting(let failure) = refused.state {
            #expect(failure.code == .tls, "\(failure)")
            #expect(failure.message.contains("client certificate"))
        } else {
            Issue.record("state is \(refused.state), not reconnecting")
        }
    }

    /// A plain client (mqtt://) on a TLS listener: the broker reads our CONNECT as a broken TLS
    /// handshake and closes the connection. libmosquitto only says "The connection was lost";
    /// the client says it may be a TLS listener and to use mqtts://.
    @Test(arguments: [MQTTProtocolVersion.v5, .v311])
    func plainClientOnATLSListenerIsToldToUseTLS(version: MQTTProtocolVersion) throws {
        let dir = try temporaryFolder("edgeq-pki")
        defer { try? FileManager.default.removeItem(at: dir) }
        let pki = try TestCertificates(in: dir)
        let broker = try MosquittoBroker(tls: .init(certificates: pki))
        var config = try MQTTConfiguration(url: "mqtt://127.0.0.1:\(broker.port)", clientID: "plain-\(UUID().uuidString.prefix(8))")
        config.protocolVersion = version
        let client = try makeClient(config)
        client.start()
        do {
            try client.waitUntilConnected(timeout: 1.5)
            Issue.record("a plain client connected to a TLS listener")
        } catch let e as MQTTError {
            #expect(e.code == .timeout)
            #expect(e.message.contains("TLS listener") && e.message.contains("mqtts://"), "\(e.message)")
        }
        guard case .reconnecting(let failure) = client.state else {
            Issue.record("state is \(client.state), not reconnecting")
            return
        }
        #expect(failure.code == .connectFailed)
        #expect(failure.message.contains("before CONNACK"), "\(failure.message)")
        #expect(client.counters.connects == 0)
    }

    @Test func brokerURLsParse() throws {
        #expect(try BrokerURL(parsing: "mqtt://10.0.0.5") == BrokerURL(host: "10.0.0.5", port: 1883, tls: false))
        #expect(try BrokerURL(parsing: "mqtts://broker.plant:9883/") == BrokerURL(host: "broker.plant", port: 9883, tls: true))
        #expect(try BrokerURL(parsing: "mqtts://[::1]") == BrokerURL(host: "::1", port: 8883, tls: true))
        for bad in ["http://x", "mqtt://", "mqtt://h:0", "mqtt://h:port", "mqtt://u:pw@h", "broker:1883", "mqtt://h/path"] {
            do {
                _ = try BrokerURL(parsing: bad)
                Issue.record("\(bad) parsed")
            } catch let e as MQTTError {
                #expect(e.code == .invalidURL)
                #expect(!e.message.contains("pw@"))
            }
        }
    }
}

/// The lab opt-out: with verification off, a broker whose CA we do not trust is accepted.
@Suite struct TLSOptOutTests {
    @Test func verificationOffAcceptsAnUntrustedBroker() throws {
        let dir = try temporaryFolder("edgeq-pki")
        defer { try? FileManager.default.removeItem(at: dir) }
        let pki = try TestCertificates(in: dir)
        let broker = try MosquittoBroker(tls: .init(certificates: pki))
        var config = try configuration(broker)
        config.tls = TLSConfiguration(caFile: pki.untrustedCAFile, verifyPeer: false)
        let c = try connected(config)
        #expect(c.state == .connected)
    }
}
