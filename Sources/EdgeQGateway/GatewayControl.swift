import EdgeQLog
import EdgeQNet
import EdgeQRetrain
import EdgeQSparkplug
import EdgeQTopicMap
import EdgeQTrust
import Foundation

// The control queue's side of the gateway: commands, status, model loading, the watchdog.
// Everything here may touch the disk; none of it runs on the decision thread.
extension Gateway {
    // MARK: - Commands

    /// Answers one verified control-plane request on `<prefix>/reply/<verb>` (never silence).
    /// Every reply names the key that signed the command (`"by"`).
    ///
    /// - Parameter by: the signing key's name (`none` under `auth: none`).
    /// - Returns: what the reply said (for the audit).
    @discardableResult
    func answer(_ request: ControlRequest, by key: String) -> (ok: Bool, error: String?) {
        let verb = request.verb
        var outcome: (ok: Bool, error: String?) = (false, nil)
        func reply(_ ok: Bool, _ error: String? = nil, _ extra: [String: JSONValue] = [:]) {
            outcome = (ok, error)
            var fields = extra
            fields["by"] = .string(key)
            publish(controlPlane.replyTopic(verb), ControlPlane.reply(id: request.id, ok: ok, error: error, extra: fields),
                    qos: 1, retain: false)
            logger.info("control command", metadata: ["control.verb": "\(verb)", "control.by": "\(key)", "control.ok": "\(ok)",
                                                      "control.error": "\(error ?? "")"])
        }
        let command: ControlCommand
        switch request.command {
        case .failure(let e):
            reply(false, e.description)
            return outcome
        case .success(let c):
            command = c
        }
        switch command {
        case .mode(let m):
            do {
                try setMode(m, reason: "command by \(key)", by: key)
                reply(true, nil, ["mode": .string(m.rawValue)])
            } catch {
                reply(false, "\(error)", ["mode": .string(mode.rawValue)])
            }
        case .promote(let version):
            do {
                let v: Int
                if let named = version.flatMap(Int.init) {
                    v = try promote(version: named, reason: "promote by \(key)", named: true)
                } else {
                    v = try promote(version: store.versions().last, reason: "promote by \(key) (newest)", named: false)
                }
                reply(true, nil, ["version": .number(Double(v))])
            } catch {
                reply(false, "\(error)")
            }
        case .rollback(let version):
            do {
                let r = try rollback(to: version.flatMap(Int.init), reason: "rollback by \(key)")
                reply(true, nil, ["version": .number(Double(r.to)), "from": r.from.map { .number(Double($0)) } ?? .null,
                                  "quarantined": r.quarantined.map { .number(Double($0)) } ?? .null])
            } catch {
                reply(false, "\(error)")
            }
        case .retrain(let steps, let seconds, let window):
            retrainRequested(steps: steps, seconds: seconds, window: window, trigger: "command by \(key)", reply: reply)
        }
        return outcome
    }

    /// Switches the mode and publishes the status. Leaving control never fails (see
    /// `leaveControl`); entering it records it first.
    ///
    /// - Throws: `GatewayError` when switching to control without a model that passed its
    ///   checks, or when control cannot be recorded in the state file.
    /// - Parameter by: the key that signed the command (status `by`, the state file), nil when
    ///   no command asked for it.
    func setMode(_ m: GatewayMode, reason: String, by: String? = nil) throws {
        switch m {
        case .shadow: leaveControl(reason: reason, by: by)
        case .control: try enterControl(reason: reason, by: by)
        }
    }

    /// Goes to shadow at once, in memory: the incumbent is in charge from the next tick on,
    /// whatever the disk says. Recording it is best effort, retried until it succeeds and
    /// reported (`persistState`).
    func leaveControl(reason: String, by: String? = nil) {
        let state = GatewayState(mode: .shadow, reason: reason, by: by)
        modeState.store(0, ordering: .relaxed)
        handOver(to: .incumbent, reason: reason)   // after the mode: no command follows the give
        modeReason.withLock { $0 = reason }
        modeChange.withLock { $0 = ModeChange(by: by, at: state.since) }
        persistState(state)
        publishStatus()
    }

    /// Goes to control, once it is recorded: a gateway in control whose state file still
    /// said shadow would silently hand the plant back to the incumbent at its next start, so
    /// control is refused (the gateway stays in shadow, the safe side) while it cannot be
    /// recorded.
    ///
    /// - Throws: `GatewayError` without a served model, or when the state file cannot be written.
    func enterControl(reason: String, by: String? = nil) throws {
        if served.withLock({ $0 == nil }) && map.learning.promotion != .trial {
            throw GatewayError("no model has passed its checks: retrain (cmd/retrain) or promote a version first")
        }
        if let v = servedVersion, store.isQuarantined(v), map.learning.promotion != .trial {
            // The guard took it out of control (fell back to shadow with nothing to roll back to).
            throw GatewayError("the served model version \(v) is quarantined (the guard found it worse than its control group): promote another version by name (cmd/promote {\"version\":V}) or retrain first")
        }
        let state = GatewayState(mode: .control, reason: reason, by: by)
        do {
            try state.save(to: dataDirectory)
        } catch {
            metrics.statePersistFailures.increment()
            throw GatewayError("control mode cannot be recorded (\(error)); staying in \(mode.rawValue) mode: free space in \(dataDirectory.path) and ask again")
        }
        statePersisted(state)
        // Before the mode: the take precedes the first command. Without a served model (allowed
        // under `promotion: trial`) the incumbent stays in charge: nothing is taken yet (the
        // decision thread hands over when a trial's candidate or a served model acts).
        if served.withLock({ $0 != nil }) {
            handOver(to: .gateway, reason: reason)
        } else {
            announceHandover(reason: "control mode without a model: the incumbent stays in charge")
        }
        modeState.store(1, ordering: .relaxed)
        modeReason.withLock { $0 = reason }
        modeChange.withLock { $0 = ModeChange(by: by, at: state.since) }
        publishStatus()
    }

    /// Loads, verifies and serves `version` (atomic switch of `current`).
    ///
    /// A quarantined version (rolled back from) is served only when `named` (an operator named
    /// it); that lifts its quarantine. Automatic promotions (`promotion: auto`, shadow-first,
    /// `cmd/promote` without a version) refuse it.
    ///
    /// - Throws: `GatewayError` when there is no such version, it is quarantined and not
    ///   named, or it fails its checks.
    @discardableResult
    func promote(version: Int?, reason: String, named: Bool = false) throws -> Int {
        guard let version else { throw GatewayError("there is no model to promote: retrain first") }
        if store.isQuarantined(version) && !named {
            throw GatewayError("model version \(version) is quarantined (it was rolled back from); it is not served again unless named: cmd/promote {\"version\":\(version)}")
        }
        let loaded = try loadVerified(version)
        if store.isQuarantined(version) {
            try store.liftQuarantine(version)
            logger.warning("an operator promoted a quarantined model version; its quarantine is lifted", metadata: ["model.version": "\(version)"])
        }
        let before = served.withLock { $0 }
        let previous = before?.version == version ? nil : before
        try store.setCurrent(version, reason: reason, controlGroup: ModelStore.ControlGroupRecord(previous?.version))
        install(loaded, previous: previous)
        store.prune(keep: map.learning.keepVersions)
        return version
    }

    /// What a rollback did.
    struct RollbackResult {
        /// The version rolled back from (nil when none was served).
        var from: Int?
        /// The version served now.
        var to: Int
        /// The version quarantined by this rollback (`from`, when there was one).
        var quarantined: Int?
    }

    /// Serves an earlier version at once and quarantines the one left. Without `version`, walks
    /// back through the served history: the newest version served before that is not
    /// quarantined and passes its checks (one that fails them is skipped, and said so).
    ///
    /// - Throws: `GatewayError` when there is nothing to roll back to (nothing is changed
    ///   then), when the named version fails its checks, or when the store cannot be written.
    @discardableResult
    func rollback(to version: Int?, reason: String) throws -> RollbackResult {
        let from = servedVersion ?? store.current()
        let candidates = version.map { [$0] } ?? store.rollbackTargets(from: from)
        var failures: [String] = []
        for target in candidates {
            let loaded: ServedModel
            do {
                loaded = try loadVerified(target)
            } catch {
                if version != nil { throw error }
                logger.error("rollback: skipping a version that fails its checks", metadata: ["model.version": "\(target)", "error": "\(error)"])
                failures.append("v\(target) fails its checks")
                continue
            }
            do {
                try store.rollBack(from: from, to: target, reason: reason)
            } catch {
                throw GatewayError("rollback to version \(target) failed: \(error); still serving \(from.map { "version \($0)" } ?? "no model")")
            }
            install(loaded)
            let quarantined = from.flatMap { $0 != target ? $0 : nil }
            logger.warning("rolled back", metadata: ["model.from": "\(from.map(String.init) ?? "none")", "model.version": "\(target)",
                                                     "model.quarantined": "\(quarantined.map(String.init) ?? "none")", "reason": "\(reason)"])
            return RollbackResult(from: from, to: target, quarantined: quarantined)
        }
        let quarantined = store.quarantined().map { "v\($0.version)" }
        throw GatewayError("there is no earlier version to roll back to\(failures.isEmpty ? "" : " (" + failures.joined(separator: ", ") + ")"): stored \(store.versions().map { "v\($0)" }.joined(separator: ", ")), quarantined \(quarantined.isEmpty ? "none" : quarantined.joined(separator: ", ")); promote one by name to serve it anyway")
    }

    /// Loads a stored version and checks it: its signature (a key trusted for models or the
    /// device key, over the file's SHA-256, this version and this mapping's fingerprint), then
    /// header, shapes and reference set of **the same bytes** (read once: what was verified is
    /// what is served), and that it fits this mapping file. A refusal is reported
    /// (`refuseModel`).
    ///
    /// - Throws: `GatewayError` saying why the version is refused and what to do.
    func loadVerified(_ version: Int) throws -> ServedModel {
        let verified: (bytes: [UInt8], signature: ModelSignature)
        do throws(ModelRefusal) {
            verified = try ModelSignature.verify(modelFile: store.modelURL(version), expectedVersion: version,
                                                 expectedMapping: modelTrust.fingerprint, trust: modelTrust.trust)
        } catch {
            refuseModel(version, reason: error.reason.rawValue, message: error.message)
            throw GatewayError("model version \(version) is refused (\(error.reason)): \(error.message)")
        }
        let model: QModel
        do {
            model = try QModel.load(bytes: verified.bytes)
        } catch {
            refuseModel(version, reason: ModelTrust.failedChecks, message: "\(error)")
            throw GatewayError("model version \(version) failed its checks: \(error)")
        }
        guard model.inputCount == map.stateWidth, model.actionCount == map.actions.count else {
            let message = "model version \(version) has \(model.inputCount) inputs and \(model.actionCount) actions; the mapping file needs \(map.stateWidth) and \(map.actions.count)"
            refuseModel(version, reason: ModelTrust.failedChecks, message: message)
            throw GatewayError(message)
        }
        return ServedModel(version: version, sha256: verified.signature.sha256, signedBy: verified.signature.key, model: model,
                           baseline: ExogenousBaseline.load(from: store.baselineURL(version)),
                           promotingTrial: PromotingTrial.load(from: store.trialURL(version)))
    }

    /// Reports a stored version that is not served: error log, the status's `model_refusals`,
    /// `edgeq_model_refusals_total{reason}`, and a `model_refused` event on `<prefix>/retrain`
    /// (those of the start once the gateway is connected).
    func refuseModel(_ version: Int, reason: String, message: String) {
        logger.error("model version refused: not served", metadata: [
            "model.version": "\(version)", "model.refusal": "\(reason)", "error": "\(message)",
        ])
        let record = ModelRefusalRecord(version: version, reason: reason, message: message, time: Date().timeIntervalSince1970)
        if modelTrust.record(record) { publishModelRefusal(record) }
    }

    /// Publishes the refusals made before the gateway was connected (control queue).
    func announceModelRefusals() {
        for r in modelTrust.takeUnannounced() { publishModelRefusal(r) }
    }

    private func publishModelRefusal(_ r: ModelRefusalRecord) {
        publishRetrain(["phase": .string("model_refused"), "version": .number(Double(r.version)),
                        "reason": .string(r.reason), "error": .string(r.message)])
    }

    /// Hands a verified model to the decision thread (picked up before its next decision).
    /// `previous` is the controller before it, the guard's control group (nil: the incumbent).
    func install(_ m: ServedModel?, previous: ServedModel? = nil) {
        // A new guard starts for it: the record of an earlier time it served (another guard) goes.
        restoredGuard.withLock { $0 = nil }
        if let m { try? FileManager.default.removeItem(at: store.guardURL(m.version)) }
        previousController.withLock { $0 = previous }
        let warmed = m.flatMap { m in warmedBaseline(m, rateOf: nil).map { (version: m.version, evaluator: $0.evaluator) } }
        servedBaseline.withLock { $0 = warmed }
        served.withLock { $0 = m }
        servedGeneration.add(1, ordering: .releasing)
        metrics.modelVersion.set(Double(m?.version ?? 0))
        publishStatus()
        logger.info("model served", metadata: ["model.version": "\(m.map { String($0.version) } ?? "none")",
                                               "model.signed_by": "\(m?.signedBy ?? "")"])
    }

    /// At start: the version of the last switch recorded in the served history, if it verifies
    /// and is not quarantined, else the newest earlier-served one that is neither quarantined
    /// nor refused (recorded as a switch of its own).
    ///
    /// Anti-rollback: the start follows the record (`ModelStore.servedRecords()`, appended
    /// before every switch), not the `current` pointer. A pointer that names another version
    /// than the record (changed by hand or by a tool, e.g. back to an older version) is refused
    /// as `unrecorded_switch` and the recorded version is served; a pointer one switch behind
    /// the record is a switch interrupted by a crash, which is completed. With no record at
    /// all, a pointer is refused and no model is served.
    func loadServedModelAtStart() {
        let pointer = store.pointer()
        let records = store.servedRecords()
        guard let last = records.last else {
            if let p = pointer {
                refuseModel(p, reason: ModelTrust.unrecordedSwitch, message: "models/current names version \(p), but models/served.log records no switch to it (EdgeQ records every switch before it makes it): current was written outside EdgeQ; not served. Serve a version with a signed cmd/promote {\"version\":V}")
            }
            return
        }
        if pointer != last {
            if records.count >= 2, pointer == records[records.count - 2] {
                logger.warning("completing a model switch interrupted by a stop (models/served.log records it, models/current was not moved yet)",
                               metadata: ["model.version": "\(last.map(String.init) ?? "none")"])
            } else if let p = pointer {
                refuseModel(p, reason: ModelTrust.unrecordedSwitch, message: "models/current names version \(p), but the last switch recorded in models/served.log is to \(last.map { "version \($0)" } ?? "no model"): current was changed outside EdgeQ (a version is served again only by a recorded switch: a signed cmd/rollback or cmd/promote); serving the recorded one")
            } else {
                logger.warning("models/current is missing; serving the last recorded version", metadata: ["model.version": "\(last.map(String.init) ?? "none")"])
            }
        }
        guard let start = last else { return }   // the record says: no model
        var candidates = store.rollbackTargets(from: start)
        if store.isQuarantined(start) {
            // A rollback was interrupted between the quarantine mark and the switch.
            logger.error("the current model version is quarantined (a rollback was interrupted); serving an earlier version",
                         metadata: ["model.quarantined": "\(start)"])
        } else {
            candidates.insert(start, at: 0)
        }
        var unsigned: [Int] = []
        for v in candidates {
            do {
                let m = try loadVerified(v)
                if v != start {
                    try? store.setCurrent(v, reason: "start: version \(start) \(store.isQuarantined(start) ? "is quarantined" : "is refused")",
                                          controlGroup: .incumbent)
                    logger.error("the recorded model version cannot be served at start; serving an earlier version",
                                 metadata: ["model.failed": "\(start)", "model.version": "\(v)"])
                } else {
                    if pointer != start {
                        try? store.setCurrent(v, reason: "start: models/current restored to the recorded version",
                                              controlGroup: store.recordedControlGroup(served: v) ?? .incumbent)
                    }
                    previousController.withLock { $0 = recordedControlGroupAtStart(served: v) }
                    restoredGuard.withLock { $0 = GuardRecord.load(from: store.guardURL(v)) }
                }
                let warmed = warmedBaseline(m, rateOf: nil).map { (version: v, evaluator: $0.evaluator) }
                servedBaseline.withLock { $0 = warmed }
                served.withLock { $0 = m }
                servedGeneration.add(1, ordering: .releasing)
                metrics.modelVersion.set(Double(v))
                logger.info("model served", metadata: ["model.version": "\(v)", "model.signed_by": "\(m.signedBy)"])
                return
            } catch {
                if !FileManager.default.fileExists(atPath: store.signatureURL(v).path),
                   FileManager.default.fileExists(atPath: store.modelURL(v).path) { unsigned.append(v) }
            }
        }
        if !unsigned.isEmpty {
            // Versions stored by an EdgeQ before signed models: refused until an operator signs them.
            logger.error("model versions without a signature (stored by an earlier EdgeQ) are not served; check each, then sign it with the device key and restart", metadata: [
                "model.unsigned": "\(unsigned.map(String.init).joined(separator: ","))",
                "command": "edgeq models sign \(unsigned[0]) --config MAPPING --data \(dataDirectory.path)",
            ])
        }
        logger.warning("no stored model version can be served: running without a model (shadow)")
    }

    /// At start, for the recorded version served again: the guard's control group recorded with
    /// its switch (`models/control-group`), loaded and verified like any model; nil (the
    /// incumbent) when none is recorded, or when the recorded version is quarantined or fails
    /// its checks (said so in the log).
    private func recordedControlGroupAtStart(served v: Int) -> ServedModel? {
        guard let record = store.recordedControlGroup(served: v) else {
            logger.info("no control group recorded for the served model version: the guard compares it with the incumbent",
                        metadata: ["model.version": "\(v)"])
            return nil
        }
        guard case .version(let p) = record else { return nil }
        if store.isQuarantined(p) {
            logger.warning("the served model's control group is quarantined: the guard compares it with the incumbent",
                           metadata: ["model.version": "\(v)", "model.control_group": "\(p)"])
            return nil
        }
        do {
            return try loadVerified(p)
        } catch {
            logger.warning("the served model's control group cannot be loaded: the guard compares it with the incumbent",
                           metadata: ["model.version": "\(v)", "model.control_group": "\(p)", "error": "\(error)"])
            return nil
        }
    }

    // MARK: - Status

    /// The retained status document.
    func statusJSON(state: String, reason: String? = nil) -> [UInt8] {
        let model: JSONValue = served.withLock { m in
            guard let m else { return .null }
            return .object(["version": .number(Double(m.version)), "sha256": .string(m.sha256), "signed_by": .string(m.signedBy)])
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
            // The run's seed (`edgeq run --seed` replays its random draws).
            "seed": .number(Double(seed)),
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
                "states_outside_support": .number(Double(metrics.outsideSupport.value)),
                "support_handbacks": .number(Double(metrics.supportHandbacks.value)),
            ]),
        ]
        if let reason { obj["reason"] = .string(reason) }
        obj["handover"] = handoverStatus()
        if let fleet {
            // The log's rows past their retention that wait for a learner's acknowledgement
            // (docs/fleet.md, "The cursor"): what the shipper owes, seen from the log.
            var f = fleet.statusJSON
            if case .object(var o) = f {
                o["log_rows_held_back"] = .number(Double(lm.rowsHeldBack))
                f = .object(o)
            }
            obj["fleet"] = f
        }
        let recoveries = log.recoveries
        if let last = recoveries.last {
            // A damaged log was moved aside (at start or while writing): say so until restart.
            obj["log"] = .object([
                "recovered_from_corruption": .string(last.movedTo),
                "problem": .string(last.problem),
                "corruptions": .number(Double(recoveries.count)),
            ])
        }
        if mq.takeoverStreak > 0 {
            // Another client uses this gateway's client id (docs/mqtt.md, "Session takeover").
            obj["mqtt_warning"] = .string("session taken over \(mq.takeoverStreak) time(s) in a row by another client with the client id '\(client.configuration.clientID)'")
        }
        for (k, v) in extraStatus() { obj[k] = v }
        for (k, v) in storeStatus() { obj[k] = v }
        for (k, v) in commandStatus() { obj[k] = v }
        return Array(JSONValue.object(obj).jsonText.utf8)
    }

    /// Status fields of the model store and the state file: the quarantined versions, where a
    /// rollback would go, whether the mode is recorded.
    func storeStatus() -> [String: JSONValue] {
        var o = persistenceStatus()
        o["quarantined"] = .array(store.quarantined().map { .number(Double($0.version)) })
        o["rollback_target"] = store.rollbackTargets(from: servedVersion).first.map { .number(Double($0)) } ?? .null
        o["model_refusals"] = .array(modelTrust.refusals.map(\.json))
        return o
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
                    // With a handover the plant's own controller takes over until decisions come
                    // again (the next tick in control takes the plant back: `handOverIfNeeded`).
                    let gaveBack = !map.handover.give.isEmpty && handOver(to: .incumbent, reason: "watchdog: no decision")
                    if gaveBack { metrics.gatewayInCharge.set(0) }   // the next tick in control sets it again
                    logger.error("watchdog: no decision for \(String(format: "%.1f", idle)) s in control mode; fallback published\(gaveBack ? ", plant given back to its incumbent" : "")")
                    publish(controlPlane.statusTopic, statusJSON(state: "online", reason: "watchdog: no decision for \(String(format: "%.1f", idle)) s, fallback published"), qos: 1, retain: true)
                }
            } else {
                tripped = false
            }
        }
        timer.resume()
        return timer
    }

    /// The decision loop's beat is refreshed at most this often (ns): ten times a second.
    static let loopBeatSpacing: UInt64 = 100_000_000

    /// systemd's watchdog (`WatchdogSec=` in deploy/edgeq@.service): every half `WATCHDOG_USEC`,
    /// sends `WATCHDOG=1` if the decision thread's loop went round (with the decision lock free)
    /// within that half. A loop stuck in a decision, or blocked on anything, stops the pings and
    /// systemd restarts the gateway. An idle plant is not a stuck gateway: the loop goes round
    /// every 0.2 s without messages. A broker that is down is not one either (libmosquitto
    /// reconnects by itself; a restart would not help). Runs on its own queue: the control
    /// queue may be busy on the disk (model checks, state files) while the gateway is healthy.
    ///
    /// - Returns: the timer (cancelled by `run()` at shutdown), or nil without a systemd watchdog.
    func startServiceWatchdog() -> DispatchSourceTimer? {
        guard let notifier = options.serviceNotifier, let interval = notifier.watchdogInterval else { return nil }
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "edgeq.service-watchdog"))
        let limit = UInt64(max(interval, 0.5) * 1e9)
        var missed = false
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { [self] in
            guard !stopping.load(ordering: .relaxed) else { return }
            let age = Self.now() &- loopBeat.load(ordering: .relaxed)
            if age <= limit {
                notifier.send("WATCHDOG=1")
                missed = false
            } else if !missed {
                missed = true
                logger.critical("the decision loop has not gone round for \(String(format: "%.1f", Double(age) / 1e9)) s: no WATCHDOG=1 to systemd (it restarts the gateway when WatchdogSec passes)")
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
        let logHeld = r.gauge("edgeq_log_rows_held_back", help: "Rows older than the log's retention kept because no fleet learner has acknowledged them yet (0 without a fleet section).")
        let logCorruptions = r.counter("edgeq_log_corruptions_total", help: "Damaged experience logs moved aside and replaced by a fresh one (at start or after SQLite reported damage while writing).")
        let log = self.log
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
            logHeld.set(Double(w.rowsHeldBack))
            logCorruptions.mirror(UInt64(log.recoveries.count))
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
        var out: [(String, [UInt8], Int, Bool)] = []
        for (j, w) in writes.enumerated() {
            // A Sparkplug write becomes its NCMD/DCMD payload (a value that does not fit: hold).
            if let sp = runtime.map.actions[action].writes[j].sparkplug {
                guard let p = SparkplugCommands.payload(sp, rendered: w.payload) else { return nil }
                out.append((w.topic, p, w.qos, w.retain))
            } else {
                out.append((w.topic, w.payload, w.qos, w.retain))
            }
        }
        return out
    }
}
