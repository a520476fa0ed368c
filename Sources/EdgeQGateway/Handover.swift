import EdgeQMQTT
import EdgeQTopicMap
import Foundation
import Logging
import Synchronization

// Bumpless handover (docs/operations.md, "Handover"): the mapping's `handover` writes tell the
// plant who is in charge. `take` when the gateway enters control; `give` when it leaves it (to
// shadow, by the live guard, by a fault, on shutdown) and, through the Last Will of a second,
// minimal MQTT connection that is open only while the gateway is in charge, when it dies.

/// Who is in charge of the plant.
public enum Controller: String, Sendable, CaseIterable {
    /// The gateway's decisions are applied (`handover.take` was published).
    case gateway
    /// The plant's own controller is in charge (`handover.give` was published, or nothing
    /// was taken yet).
    case incumbent
}

/// The handover's own state: who the plant was last told is in charge, and the handover
/// connection that carries the `give` Last Will while the gateway is.
final class HandoverState: Sendable {
    /// Who the plant was last told is in charge (`.incumbent` at start: the gateway has taken
    /// nothing yet), and whether the gateway is shutting down (then nothing is taken again).
    /// Held while the handover writes are published, so that two handovers never interleave.
    let state = Mutex<(controller: Controller, closed: Bool)>((.incumbent, false))
    /// The configuration of the handover connection; nil when the mapping has no Last Will.
    let linkConfiguration: MQTTConfiguration?
    /// The open handover connection, if any (used on `queue` only).
    let link = Mutex<MQTTClient?>(nil)
    /// Opens and closes the handover connection, so that no caller waits for the broker.
    let queue = DispatchQueue(label: "edgeq.handover")
    let handovers: [Controller: Counter]
    let failures: Counter
    /// `edgeq_handover_will_armed`, set when the metrics are collected.
    let willArmed: Gauge

    /// - Parameter base: the broker settings of the gateway's connection (URL, credentials, TLS).
    init(map: TopicMap, base: MQTTConfiguration, registry: MetricsRegistry) {
        if let will = map.handover.will {
            var c = base
            c.clientID = map.gateway.clientID + "-handover"
            c.keepAlive = Int32(map.handover.keepAlive)
            c.session = .clean
            c.inboundCapacity = 1
            c.will = LastWill(topic: will.topic, payload: will.payload,
                              qos: QoS(rawValue: Int32(will.qos)) ?? .atLeastOnce, retain: will.retain)
            linkConfiguration = c
        } else {
            linkConfiguration = nil
        }
        var counters: [Controller: Counter] = [:]
        for c in Controller.allCases {
            counters[c] = registry.counter("edgeq_handovers_total", help: "Handovers published, by who was put in charge (gateway: take, incumbent: give).",
                                           labels: [("to", c.rawValue)])
        }
        handovers = counters
        failures = registry.counter("edgeq_handover_link_failures_total",
                                    help: "Times the handover connection (the one carrying the give Last Will) could not be opened or did not connect within 5 s.")
        let armed = registry.gauge("edgeq_handover_will_armed",
                                   help: "1 while the handover connection carrying the give Last Will is connected (the broker tells the plant if the gateway dies).")
        willArmed = armed
        registry.onCollect { [weak self] in
            armed.set(self?.link.withLock { $0?.state } == .connected ? 1 : 0)
        }
    }
}

extension Gateway {
    /// Tells the plant who is in charge: publishes the mapping's `handover.take` writes when
    /// `controller` is `.gateway`, `handover.give` when it is `.incumbent`, at once (the writes
    /// are rendered when the mapping is loaded). Idempotent: nothing is published when the
    /// plant was already told so. Never blocks and never fails: a write that cannot be
    /// published is logged, and the handover connection (its Last Will is the `give`) is
    /// opened after a `take` and closed cleanly after a `give` on a queue of its own.
    ///
    /// Called on every change of mode; the switchback trial calls it when a block passes
    /// between the gateway and the incumbent. Callable from any thread, including the decision
    /// thread: it takes only the handover's own lock and never waits for the broker (a
    /// handover is an event, not a per-message cost: it hands one log line to the handover queue).
    ///
    /// - Returns: true when the writes were published, false when nothing changed (or a take
    ///   was refused because the gateway is shutting down).
    @discardableResult
    func handOver(to controller: Controller, reason: String) -> Bool {
        let changed = handover.state.withLock { s -> Bool in
            guard s.controller != controller, !(s.closed && controller == .gateway) else { return false }
            s.controller = controller
            for w in controller == .gateway ? map.handover.take : map.handover.give {
                publish(w.topic, w.payload, qos: w.qos, retain: w.retain)
            }
            return true
        }
        guard changed else { return false }
        handover.handovers[controller]?.increment()
        if controller == .gateway { openHandoverLink() } else { closeHandoverLink() }
        // Logged on the handover queue: a log line allocates, the decision thread must not.
        handover.queue.async { [logger] in
            logger.info("handover", metadata: ["handover.to": "\(controller.rawValue)", "handover.reason": "\(reason)"])
        }
        return true
    }

    /// Tells the plant again who is in charge (the writes of the current state, take or give),
    /// without changing anything: at start, so that a plant on a fresh broker (no retained
    /// handover) does not wait out its command timeout for a gateway that is not in charge, and
    /// when control mode is entered without a model (the incumbent stays in charge).
    func announceHandover(reason: String) {
        let told = handover.state.withLock { s -> Controller in
            for w in s.controller == .gateway ? map.handover.take : map.handover.give {
                publish(w.topic, w.payload, qos: w.qos, retain: w.retain)
            }
            return s.controller
        }
        handover.queue.async { [logger] in
            logger.info("handover announced", metadata: ["handover.to": "\(told.rawValue)", "handover.reason": "\(reason)"])
        }
    }

    /// Who the plant was last told is in charge.
    var controller: Controller { handover.state.withLock { $0.controller } }

    /// Shutdown: gives control back (if the gateway had it), refuses any later take, and waits
    /// until the handover connection is closed cleanly (so that the broker does not publish
    /// its Last Will as well).
    func handOverAtShutdown() {
        handOver(to: .incumbent, reason: "shutdown")
        handover.state.withLock { $0.closed = true }
        handover.queue.sync {}
    }

    /// The handover connection, opened after a take: its Last Will is the `give` write, so the
    /// broker tells the plant when the gateway dies while in charge. Waits (on the handover
    /// queue only) up to 5 s for it to connect, then counts a failure and leaves the client
    /// retrying in the background.
    private func openHandoverLink() {
        guard let config = handover.linkConfiguration else { return }
        let h = handover
        handover.queue.async { [logger] in
            // A give queued after this take closes the link again; a later take reopens it.
            guard h.state.withLock({ $0.controller == .gateway }), h.link.withLock({ $0 == nil }) else { return }
            do {
                let c = try MQTTClient(config, logger: logger)
                c.start()
                h.link.withLock { $0 = c }
                do {
                    try c.waitUntilConnected(timeout: 5)
                } catch {
                    h.failures.increment()
                    logger.error("the handover connection did not connect within 5 s: until it does, the broker cannot tell the plant if the gateway dies (it keeps trying; check that the broker accepts the client id \(config.clientID))",
                                 metadata: ["error": "\(error)"])
                }
            } catch {
                h.failures.increment()
                logger.error("the handover connection cannot be made: the broker will not tell the plant if the gateway dies", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Closes the handover connection with a DISCONNECT (the broker discards its Last Will),
    /// after the `give` writes were published on the gateway's connection.
    private func closeHandoverLink() {
        guard handover.linkConfiguration != nil else { return }
        let h = handover
        handover.queue.async {
            guard h.state.withLock({ $0.controller == .incumbent }) else { return }
            let c = h.link.withLock { l -> MQTTClient? in
                defer { l = nil }
                return l
            }
            c?.stop()
        }
    }

    /// The status's `handover` field: who the plant was last told is in charge, and whether
    /// the Last Will is armed.
    func handoverStatus() -> JSONValue {
        var o: [String: JSONValue] = ["controller": .string(controller.rawValue)]
        if handover.linkConfiguration != nil {
            let state = handover.link.withLock { $0?.state }
            o["will"] = .string(state == .connected ? "armed" : (state == nil ? "off" : "connecting"))
        } else {
            o["will"] = .string("none")
        }
        return .object(o)
    }
}
