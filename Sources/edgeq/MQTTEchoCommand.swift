import ArgumentParser
import EdgeQMQTT
import Foundation
import Synchronization

/// Set by SIGTERM/SIGINT; polled by the echo loop.
private let echoStopRequested = Atomic<Bool>(false)

/// Set by SIGUSR1: print the hand-off latency figures so far and start again.
private let echoReportRequested = Atomic<Bool>(false)

/// A free function (no actor applies) so it is safe as a signal handler.
private func echoSignalHandler(_ signal: Int32) {
    if signal == SIGUSR1 {
        echoReportRequested.store(true, ordering: .relaxed)
    } else {
        echoStopRequested.store(true, ordering: .relaxed)
    }
}

/// `edgeq mqtt-echo` (hidden): republishes every message from one topic to another with
/// EdgeQ's MQTT client. The `edgeq bench mqtt` echo (driven by the anchors' bench_client)
/// and the Last Will test's process to kill -9. Prints `ready` on standard output once
/// connected and subscribed; SIGTERM/SIGINT disconnect cleanly (no Last Will). SIGUSR1
/// prints `handoff samples=N p50_ns=… p99_ns=…` on standard error: the time from
/// libmosquitto's callback (network thread) to `receive` returning on the echo's thread.
/// With `--inline` it republishes inside libmosquitto's message callback on the network thread,
/// as the gateway decides (`MQTTClient.start(handler:)`): no hand-off, so no hand-off figures.
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

    @Flag(help: "Republish on the network thread, inside the message callback (the gateway's decision path), instead of through the hand-off.")
    var inline = false

    func validate() throws {
        guard QoS(rawValue: Int32(qos)) != nil else { throw ValidationError("--qos must be 0, 1 or 2") }
        do {
            _ = try BrokerURL(parsing: broker)
        } catch {
            throw ValidationError("--broker: \(error)")
        }
    }

    func run() throws {
        do {
            try echo()
        } catch {
            throw CLIFailure(.unavailable, "mqtt-echo: \(error)")
        }
    }

    func echo() throws {
        signal(SIGTERM, echoSignalHandler)
        signal(SIGINT, echoSignalHandler)
        signal(SIGUSR1, echoSignalHandler)
        let qos = QoS(rawValue: Int32(self.qos)) ?? .atMostOnce
        var config = MQTTConfiguration(broker: try BrokerURL(parsing: broker), clientID: clientID)
        config.inboundCapacity = capacity
        config.overflow = .dropNewest
        if let willTopic {
            config.will = LastWill(topic: willTopic, payload: Array(willPayload.utf8), qos: .atLeastOnce, retain: true)
        }
        let client = try MQTTClient(config)
        try client.subscribe(inTopic, qos: qos)
        if inline {
            let out = outTopic
            // The handler holds the client (a cycle) until `stop()` drops the handler.
            client.start { [client] m in
                _ = try? client.publish(out, m.payload, qos: qos)
                return true
            }
        } else {
            client.start()
        }
        try client.waitUntilConnected(timeout: 10)
        FileHandle.standardOutput.write(Data("ready\n".utf8))
        if inline {
            while !echoStopRequested.load(ordering: .relaxed) { usleep(100_000) }
            let c = client.counters
            client.stop()
            FileHandle.standardError.write(Data("mqtt-echo: received \(c.received) dropped \(c.dropped)\n".utf8))
            return
        }
        var handoff: [UInt64] = []
        handoff.reserveCapacity(1 << 16)
        while !echoStopRequested.load(ordering: .relaxed) {
            if echoReportRequested.exchange(false, ordering: .relaxed) {
                Self.report(&handoff)
            }
            guard let m = client.receive(timeout: 0.2) else { continue }
            let now = MonotonicClock.nanoseconds()
            _ = try? client.publish(outTopic, m.payload, qos: qos)
            if handoff.count < 1 << 22 { handoff.append(now &- m.arrival) }
        }
        let c = client.counters
        client.stop()
        Self.report(&handoff)
        FileHandle.standardError.write(Data("mqtt-echo: received \(c.received) dropped \(c.dropped)\n".utf8))
    }

    /// Prints the hand-off latency percentiles on standard error and clears the samples.
    static func report(_ samples: inout [UInt64]) {
        let s = samples.sorted()
        samples.removeAll(keepingCapacity: true)
        guard !s.isEmpty else { return }
        func pct(_ p: Double) -> UInt64 { s[min(s.count - 1, Int(Double(s.count) * p))] }
        FileHandle.standardError.write(Data("handoff samples=\(s.count) p50_ns=\(pct(0.5)) p99_ns=\(pct(0.99))\n".utf8))
    }
}
