import EdgeQLog
import EdgeQNet
import EdgeQTopicMap
import Foundation

// The control queue's side of the gateway: commands, status, model loading, the watchdog.
// Everything here may touch the disk; none of it runs on the decision thread.
extension Gateway {
    // MARK: - Commands

    /// Answers one control-plane request on `<prefix>/reply/<verb>` (never silence).
    func answer(_ request: ControlRequest) {
        let verb = request.verb
        func reply(_ ok: Bool, _ error: String? = nil, _ extra: [String: JSONValue] = [:]) {
            publish(controlPlane.replyTopic(verb), ControlPlane.reply(id: request.id, ok: ok, error: error, extra: extra),
                    qos: 1, retain: false)
            logger.info("control command", metadata: ["control.verb": "\(verb)", "control.ok": "\(ok)", "control.error": "\(error ?? "")"])
        }
        let command: ControlCommand
        switch request.command {
        case .failure(let e):
            reply(false, e.description)
            return
        case .success(let c):
            command = c
        }
        switch command {
        case .mode(let m):
            do {
                try setMode(m, reason: "operator command")
                reply(true, nil, ["mode": .string(m.rawValue)])
            } catch {
                reply(false, "\(error)", ["mode": .string(mode.rawValue)])
            }
        case .promote(let version):
            do {
                let v = try promote(version: version.flatMap(Int.init) ?? store.versions().last, reason: "operator promote")
                reply(true, nil, ["version": .number(Double(v))])
            } catch {
                reply(false, "\(error)")
            }
        case .rollback(let version):
            do {
                let v = try rollback(to: version.flatMap(Int.init), reason: "operator rollback")
                reply(true, nil, ["version": .number(Double(v))])
            } catch {
                reply(false, "\(error)")
            }
        case .retrain(let steps, let seconds, let window):
            retrainRequested(steps: steps, seconds: seconds, window: window, reply: reply)
        }
    }

    /// Switches the mode, persists it, publishes the status.
    ///
    /// - Throws: `GatewayError` when switching to control without a model that passed its
    ///   checks, or when the state file cannot be written.
    func setMode(_ m: GatewayMode, reason: String) throws {
        if m == .control && served.withLock({ $0 == nil }) {
            throw GatewayError("no model has passed its checks: retrain (cmd/retrain) or promote a version first")
        }
        try GatewayState(mode: m, reason: reason).save(to: dataDirectory)
        if m == .control { refreshGuardBaseline() }
        modeState.store(m == .control ? 1 : 0, ordering: .relaxed)
        modeReason.withLock { $0 = reason }
        publishStatus()
    }

    /// Loads, verifies and serves `version` (atomic switch of `current`).
    ///
    /// - Throws: `GatewayError` when there is no such version or it fails its checks.
    @discardableResult
    func promote(version: Int?, reason: String) throws -> Int {
        guard let version else { throw GatewayError("there is no model to promote: retrain first") }
        let loaded = try loadVerified(version)
        try store.setCurrent(version, reason: reason)
        install(loaded)
        if candidateSlot.withLock({ $0?.version == version }) { stopComparison() }
        store.prune(keep: map.learning.keepVersions)
        return version
    }

    /// Serves the previous version (or `version`) again at once.
    @discardableResult
    func rollback(to version: Int?, reason: String) throws -> Int {
        let target = version ?? store.previous()
        guard let target else {
            throw GatewayError("there is no earlier version to roll back to (stored: \(store.versions().map(String.init).joined(separator: ", ")))")
        }
        let loaded = try loadVerified(target)
        try store.setCurrent(target, reason: reason)
        install(loaded)
        return target
    }

    /// Loads a stored version and checks it: checksum, header, shapes, reference set, and
    /// that it fits this mapping file.
    func loadVerified(_ version: Int) throws -> ServedModel {
        let url = store.modelURL(version)
        let model: QModel
        do {
            model = try QModel.load(from: url)
        } catch {
            throw GatewayError("model version \(version) failed its checks: \(error)")
        }
        guard model.inputCount == map.stateWidth, model.actionCount == map.actions.count else {
            throw GatewayError("model version \(version) has \(model.inputCount) inputs and \(model.actionCount) actions; the mapping file needs \(map.stateWidth) and \(map.actions.count)")
        }
        let sha = (try? String(contentsOf: QModel.checksumURL(for: url), encoding: .utf8))?
            .split(separator: " ").first.map(String.init) ?? ""
        return ServedModel(version: version, sha256: sha, model: model)
    }

    /// Hands a verified model to the decision thread (picked up before its next decision).
    func install(_ m: ServedModel?) {
        served.withLock { $0 = m }
        servedGeneration.add(1, ordering: .releasing)
        metrics.modelVersion.set(Double(m?.version ?? 0))
        publishStatus()
        logger.info("model served", metadata: ["model.version": "\(m.map { String($0.version) } ?? "none")"])
    }

    /// At start: the current version if it verifies, else the newest earlier one that does.
    func loadServedModelAtStart() {
        guard let current = store.current() else { return }
        let candidates = [current] + store.servedHistory().reversed().filter { $0 != current }
        for v in candidates {
            do {
                let m = try loadVerified(v)
                if v != current {
                    try? store.setCurrent(v, reason: "start: version \(current) failed its checks")
                    logger.error("the current model failed its checks at start; serving an earlier version",
                                 metadata: ["model.failed": "\(current)", "model.version": "\(v)"])
                }
                served.withLock { $0 = m }
                servedGeneration.add(1, ordering: .releasing)
                metrics.modelVersion.set(Double(v))
                return
            } catch {
                logger.error("model version failed its checks at start", metadata: ["model.version": "\(v)", "error": "\(error)"])
            }
        }
        try? store.clearCurrent(reason: "start: no stored version passed its checks")
    }

    // MARK: - Status

    /// The retained status document.
    func statusJSON(state: String, reason: String? = nil) -> [UInt8] {
        let model: JSONValue = served.withLock { m in
            guard let m else { return .null }
            return .object(["version": .number(Double(m.version)), "sha256": .string(m.sha256)])
        }
        let lm = writer.metrics
        let mq = client.counters
        var fallbacks = 0.0
        for c in metrics.fallbacks.values { fallbacks += Double(c.value) }
        var obj: [String: JSONValue] = [
            "state": .string(state),
            "gateway": .string(map.gateway.id),
            "mode": .string(mode.rawValue),
            "mode_reason": .string(modeReason.withLock { $0 }),
            "model": model,
            "time": .number((Date().timeIntervalSince1970 * 1000).rounded() / 1000),
            "counters": .object([
                "ticks": .number(Double(metrics.ticks.value)),
                "fallbacks": .number(fallbacks),
                "transitions_logged": .number(Double(lm.rowsWritten)),
                "log_queue": .number(Double(lm.queueDepth)),
                "messages_received": .number(Double(mq.received)),
                "messages_dropped": .number(Double(mq.dropped)),
                "watchdog_trips": .number(Double(metrics.watchdogTrips.value)),
                "mqtt_session_takeovers": .number(Double(mq.sessionTakeovers)),
            ]),
        ]
        if let reason { obj["reason"] = .string(reason) }
        if mq.takeoverStreak > 0 {
            // Another client uses this gateway's client id (docs/mqtt.md, "Session takeover").
            obj["mqtt_warning"] = .string("session taken over \(mq.takeoverStreak) time(s) in a row by another client with the client id '\(client.configuration.clientID)'")
        }
        for (k, v) in extraStatus() { obj[k] = v }
        return Array(JSONValue.object(obj).jsonText.utf8)
    }

    /// Publishes the retained status (online).
    func publishStatus() {
        publish(controlPlane.statusTopic, statusJSON(state: "online"), qos: 1, retain: true)
    }

    // MARK: - Watchdog

    /// In control mode, publishes the fallback (and reports) when no decision was made for
    /// `watchdogSeconds` (default: 3 periods of a periodic tick; off for a trigger tick).
    func startWatchdog() -> DispatchSourceTimer? {
        var limit = options.watchdogSeconds
        if limit == nil, case .period(let p) = map.tick { limit = 3 * p }
        guard let limit, limit > 0 else { return nil }
        let timer = DispatchSource.makeTimerSource(queue: control)
        let fallbackWrites: [(String, [UInt8], Int, Bool)]? = map.fallbackAction.flatMap { fb in
            var rt = TopicMapRuntimeBox(map: map)
            return rt.renderStatic(action: fb)
        }
        var tripped = false
        timer.schedule(deadline: .now() + limit / 4, repeating: limit / 4)
        timer.setEventHandler { [self] in
            guard mode == .control else { tripped = false; return }
            let idle = Double(Self.now() &- lastDecisionNanos.load(ordering: .relaxed)) / 1e9
            if idle > limit {
                if !tripped {
                    tripped = true
                    metrics.watchdogTrips.increment()
                    metrics.fallbacks[.watchdog]?.increment()
                    for (topic, bytes, qos, retain) in fallbackWrites ?? [] { publish(topic, bytes, qos: qos, retain: retain) }
                    logger.error("watchdog: no decision for \(String(format: "%.1f", idle)) s in control mode; fallback published")
                    publish(controlPlane.statusTopic, statusJSON(state: "online", reason: "watchdog: no decision for \(String(format: "%.1f", idle)) s, fallback published"), qos: 1, retain: true)
                }
            } else {
                tripped = false
            }
        }
        timer.resume()
        return timer
    }

    // MARK: - Metrics collectors

    func registerCollectors() {
        let r = metrics.registry
        let queueDepth = r.gauge("edgeq_inbound_queue_depth", help: "Messages waiting in the MQTT inbound hand-off.")
        let dropped = r.counter("edgeq_inbound_dropped_total", help: "Messages dropped because the inbound hand-off was full.")
        let received = r.counter("edgeq_inbound_messages_total", help: "Messages received from the broker.")
        let reconnects = r.counter("edgeq_mqtt_reconnects_total", help: "Reconnections to the broker.")
        let takeovers = r.counter("edgeq_mqtt_session_takeovers_total", help: "Connections lost because another client with the same client id took the session over.")
        let rows = r.counter("edgeq_log_rows_written_total", help: "Transitions committed to the experience log.")
        let logQueue = r.gauge("edgeq_log_queue_depth", help: "Transitions waiting for the log writer.")
        let logLatency = r.gauge("edgeq_log_write_seconds", help: "Duration of the last group commit.")
        let logMax = r.gauge("edgeq_log_write_seconds_max", help: "Longest group commit so far.")
        let logOverflow = r.counter("edgeq_log_overflows_total", help: "Transitions queued beyond the writer's preallocated capacity.")
        let logDropped = r.counter("edgeq_log_dropped_total", help: "Transitions refused at the writer's hard limit (should stay 0).")
        let modeGauge = metrics.mode
        let client = self.client
        let writer = self.writer
        r.onCollect { [weak self] in
            let c = client.counters
            queueDepth.set(Double(c.queued))
            dropped.mirror(c.dropped)
            received.mirror(c.received)
            reconnects.mirror(c.reconnects)
            takeovers.mirror(c.sessionTakeovers)
            let w = writer.metrics
            rows.mirror(UInt64(w.rowsWritten))
            logQueue.set(Double(w.queueDepth))
            logLatency.set(w.lastWriteLatency)
            logMax.set(w.maxWriteLatency)
            logOverflow.mirror(UInt64(w.overflows))
            logDropped.mirror(UInt64(w.dropped))
            if let self { modeGauge.set(self.mode == .control ? 1 : 0) }
        }
    }
}

/// Renders an action's writes outside the decision thread (for the watchdog), with a
/// runtime of its own that has seen no signals: templates that need a signal value cannot
/// be rendered there, and the watchdog then holds.
struct TopicMapRuntimeBox {
    var runtime: TopicMapRuntime

    init(map: TopicMap) { runtime = TopicMapRuntime(map: map) }

    mutating func renderStatic(action: Int) -> [(String, [UInt8], Int, Bool)]? {
        guard let writes = runtime.writes(for: action) else { return nil }
        return writes.map { ($0.topic, $0.payload, $0.qos, $0.retain) }
    }
}
