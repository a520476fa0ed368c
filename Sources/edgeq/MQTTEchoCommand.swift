import ArgumentParser
import EdgeQMQTT
import Foundation
import Synchronization

/// Set by SIGTERM/SIGINT; polled by the echo loop.
private let echoStopRequested = Atomic<Bool>(false)

/// A free function (no actor applies) so it is safe as a signal handler.
private func echoSignalHandler(_: Int32) {
    echoStopRequested.store(true, ordering: .relaxed)
}

/// `edgeq mqtt-echo` (hidden): republishes every message from one topic to another with
/// EdgeQ's MQTT client. The `edgeq bench mqtt` echo (driven by the anchors' bench_client)
/// and the Last Will test's process to kill -9. Prints `ready` on standard output once
/// connected and subscribed; SIGTERM/SIGINT disconnect cleanly (no Last Will).
struct MQTTEchoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqtt-echo",
        abstract: "Republish every message from --in to --out (benchmark echo and test helper).",
        shouldDisplay: false
    )

    @Option(help: "Broker URL, mqtt://HOST[:PORT].")
    var broker: String

    @Option(help: "QoS of the subscription and of the republished messages (0, 1, 2).")
    var qos: Int = 0

    @Option(name: .customLong("in"), help: "Topic (filter) to subscribe to.")
    var inTopic: String = "bench/a"

    @Option(name: .customLong("out"), help: "Topic to republish on.")
    var outTopic: String = "bench/b"

    @Option(help: "Client id (empty: random).")
    var clientID: String = ""

    @Option(help: "Last Will topic: the broker publishes --will-payload there (retained) if this process dies.")
    var willTopic: String?

    @Option(help: "Last Will payload.")
    var willPayload: String = "offline"

    @Option(help: "Capacity of the inbound hand-off.")
    var capacity: Int = 8192

    func validate() throws {
        guard QoS(rawValue: Int32(qos)) != nil else { throw ValidationError("--qos must be 0, 1 or 2") }
    }

    func run() throws {
        signal(SIGTERM, echoSignalHandler)
        signal(SIGINT, echoSignalHandler)
        let qos = QoS(rawValue: Int32(self.qos)) ?? .atMostOnce
        var config = MQTTConfiguration(broker: try BrokerURL(parsing: broker), clientID: clientID)
        config.inboundCapacity = capacity
        config.overflow = .dropNewest
        if let willTopic {
            config.will = LastWill(topic: willTopic, payload: Array(willPayload.utf8), qos: .atLeastOnce, retain: true)
        }
        let client = try MQTTClient(config)
        try client.subscribe(inTopic, qos: qos)
        client.start()
        try client.waitUntilConnected(timeout: 10)
        FileHandle.standardOutput.write(Data("ready\n".utf8))
        while !echoStopRequested.load(ordering: .relaxed) {
            guard let m = client.receive(timeout: 0.2) else { continue }
            _ = try? client.publish(outTopic, m.payload, qos: qos)
        }
        let c = client.counters
        client.stop()
        FileHandle.standardError.write(Data("mqtt-echo: received \(c.received) dropped \(c.dropped)\n".utf8))
    }
}
