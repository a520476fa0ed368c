import EdgeQMQTT
import EdgeQTestSupport
import Foundation
import Logging
import Testing

/// A configuration for `broker` with a unique client id and a fast backoff cap suited to tests.
func configuration(_ broker: MosquittoBroker, _ name: String = "c", version: MQTTProtocolVersion = .v5) throws -> MQTTConfiguration {
    var c = try MQTTConfiguration(url: broker.url, clientID: "\(name)-\(UUID().uuidString.prefix(8))")
    c.protocolVersion = version
    return c
}

/// The tests' logger: the client's info lines (connected, stopped) would drown the
/// test output; warnings and errors still show.
let testLogger: Logger = {
    var l = Logger(label: "edgeq.mqtt.test")
    l.logLevel = .warning
    return l
}()

/// Makes a client with the tests' logger.
func makeClient(_ config: MQTTConfiguration) throws -> MQTTClient {
    try MQTTClient(config, logger: testLogger)
}

/// Starts a client and waits until it is connected (10 s at most).
func connected(_ config: MQTTConfiguration, subscribing filters: [(String, QoS)] = []) throws -> MQTTClient {
    let client = try makeClient(config)
    for (f, q) in filters { try client.subscribe(f, qos: q) }
    client.start()
    try client.waitUntilConnected(timeout: 10)
    return client
}

/// Receives messages until one on `topic` arrives (others are skipped), or `timeout` s pass.
func receive(_ client: MQTTClient, topic: String? = nil, timeout: Double = 5) -> MQTTMessage? {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if let m = client.receive(timeout: max(0.01, deadline.timeIntervalSinceNow)) {
            if topic == nil || m.topic == topic { return m }
        }
    }
    return nil
}

/// Publishes until `subscriber` receives the message on `topic` (a fresh subscription's
/// SUBACK may still be on its way), at most `timeout` s. Returns the message received.
func publishUntilReceived(_ publisher: MQTTClient, _ subscriber: MQTTClient, topic: String, payload: String,
                          qos: QoS = .atMostOnce, timeout: Double = 5) -> MQTTMessage? {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        _ = try? publisher.publish(topic, payload, qos: qos)
        if let m = receive(subscriber, topic: topic, timeout: 0.1), String(decoding: m.payload, as: UTF8.self) == payload {
            return m
        }
    }
    return nil
}

extension MQTTMessage {
    var text: String { String(decoding: payload, as: UTF8.self) }
}
