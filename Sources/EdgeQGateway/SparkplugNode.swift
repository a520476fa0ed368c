// EdgeQ as a Sparkplug B edge node (the mapping's `sparkplug` section): a connection of its own
// whose MQTT Will is the NDEATH, an NBIRTH on every connect and rebirth request, NDATA when a
// metric changed. docs/operations.md, "Sparkplug B".
import EdgeQMQTT
import EdgeQSparkplug
import EdgeQTopicMap
import Foundation
import Logging
import Synchronization

/// EdgeQ's edge node: owns its MQTT connection (the gateway's own carries the status Will, and a
/// connection has one Will) and a timer on its own queue; reads the gateway's figures through
/// `snapshot`, never the decision state.
final class SparkplugNode: Sendable {
    let config: SparkplugNodeConfig
    let client: MQTTClient
    let bdSeq: UInt64
    /// The gateway's figures, given at `start`.
    let snapshot = Mutex<(@Sendable () -> EdgeNodeSnapshot)?>(nil)
    let logger: Logger
    let queue = DispatchQueue(label: "edgeq.sparkplug-node")
    /// Used on `queue` only (the Mutex makes the compiler's Sendable proof hold).
    let state = Mutex<State>(State())
    /// The periodic look runs while true.
    let running = Atomic<Bool>(false)
    /// How often a change of a metric is looked for (seconds).
    static let period = 0.5

    struct State {
        var connects: UInt64 = 0
        var seq: UInt64 = 0
        var last: EdgeNodeSnapshot?
        var births = 0
    }

    var nbirthTopic: String { SparkplugTopic.topic(.nbirth, group: config.group, node: config.node) }
    var ndataTopic: String { SparkplugTopic.topic(.ndata, group: config.group, node: config.node) }
    var ncmdTopic: String { SparkplugTopic.topic(.ncmd, group: config.group, node: config.node) }

    /// - Parameters:
    ///   - base: the gateway connection's broker settings (URL, credentials, TLS).
    ///   - bdSeq: this run's birth/death sequence number (the data directory keeps the next).
    init(config: SparkplugNodeConfig, base: MQTTConfiguration, bdSeq: UInt64, logger: Logger) throws {
        self.config = config
        self.bdSeq = bdSeq
        self.logger = logger
        var c = base
        c.clientID = base.clientID + "-sparkplug"
        c.session = .clean
        c.inboundCapacity = 64
        // Sparkplug 3.0.0, 7.1: the NDEATH is the Will, QoS 1, not retained.
        c.will = LastWill(topic: SparkplugTopic.topic(.ndeath, group: config.group, node: config.node),
                          payload: SparkplugEdgeNodeMessages.death(bdSeq: bdSeq), qos: .atLeastOnce, retain: false)
        client = try MQTTClient(c, logger: logger)
    }

    /// Connects and starts the timer: NBIRTH after each connect, NDATA on change, rebirth on request.
    func start(snapshot read: @escaping @Sendable () -> EdgeNodeSnapshot) throws {
        snapshot.withLock { $0 = read }
        try client.subscribe(ncmdTopic, qos: .atLeastOnce)
        client.start()
        running.store(true, ordering: .relaxed)
        schedule(after: 0.05)
    }

    func schedule(after seconds: Double) {
        queue.asyncAfter(deadline: .now() + seconds) { [self] in
            guard running.load(ordering: .relaxed) else { return }
            step()
            schedule(after: Self.period)
        }
    }

    /// One look: a new connection or a rebirth request → NBIRTH; else changed metrics → NDATA.
    func step() {
        var rebirth = false
        while let m = client.receive(timeout: 0) {
            if m.topic == ncmdTopic, SparkplugEdgeNodeMessages.isRebirthRequest(m.payload) { rebirth = true }
        }
        let connects = client.counters.connects
        guard client.state == .connected else { return }
        guard let read = snapshot.withLock({ $0 }) else { return }
        let now = read()
        state.withLock { s in
            if connects != s.connects || rebirth || s.last == nil {
                s.connects = connects
                s.seq = 0
                publish(nbirthTopic, SparkplugEdgeNodeMessages.birth(now, bdSeq: bdSeq, seq: 0))
                s.last = now
                s.births += 1
                if rebirth { logger.info("Sparkplug: rebirth requested; NBIRTH published", metadata: ["sparkplug.node": "\(config.group)/\(config.node)"]) }
                return
            }
            guard let last = s.last, last != now else { return }
            let seq = (s.seq + 1) % 256
            if let p = SparkplugEdgeNodeMessages.data(from: last, to: now, seq: seq) {
                publish(ndataTopic, p)
                s.seq = seq
            }
            s.last = now
        }
    }

    func publish(_ topic: String, _ payload: [UInt8]) {
        do {
            _ = try client.publish(topic, payload, qos: .atMostOnce, retain: false)
        } catch {
            logger.error("Sparkplug publish failed", metadata: ["mqtt.topic": "\(topic)", "error": "\(error)"])
        }
    }

    /// Stops the timer, publishes the NDEATH (a clean disconnect sends no Will) and disconnects.
    func stop() {
        running.store(false, ordering: .relaxed)
        queue.sync {}
        if client.state == .connected {
            publish(SparkplugTopic.topic(.ndeath, group: config.group, node: config.node), SparkplugEdgeNodeMessages.death(bdSeq: bdSeq))
            // Written before the disconnect (QoS 0: handed to the socket).
            if !client.waitUntilSent(timeout: 5) {
                logger.warning("the Sparkplug NDEATH was not written within 5 s: host applications learn of the node's death from its missing data only")
            }
        }
        client.stop()
    }

    /// The bdSeq for this run, from `DATA/sparkplug-bdseq` (0 when absent), and the next one
    /// written back (modulo 256), so that a restart's NBIRTH carries a new bdSeq.
    static func nextBdSeq(dataDirectory: URL) -> UInt64 {
        let file = dataDirectory.appendingPathComponent("sparkplug-bdseq")
        let current = (try? String(contentsOf: file, encoding: .utf8)).flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
        try? "\((current + 1) % 256)\n".write(to: file, atomically: true, encoding: .utf8)
        return current % 256
    }
}
