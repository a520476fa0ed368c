import EdgeQNet
import EdgeQRetrain
import EdgeQTopicMap
import EdgeQTrust
import Foundation

/// A fleet model on the gateway (docs/fleet.md, "Models"): reassembled on the shipper's thread,
/// then checked like a model imported by hand (`edgeq models import`) — its signature by a key
/// under `keys/models/`, its sha256, this mapping's fingerprint, a version above every stored
/// one, a model that loads and fits the mapping — stored as a version, and then handled as a
/// locally retrained candidate that passed its checks: `promotion: trial` starts this gateway's
/// own switchback trial, `auto` serves it, `manual` leaves it stored.
///
/// A fleet model comes without the trial's exogenous baseline: that describes this plant's
/// exogenous signals and this gateway's log, not the model. The gateway fits it here, as a
/// retraining fits its candidate's (`Retrainer.fitBaseline`), and stores it with the version.
extension Gateway {
    /// Checks, stores and routes a complete fleet model; the verdict object for
    /// `<fleet>/verdict/<gateway>` (`verdict`: refused with `reason` and `message`, stored,
    /// trial_started, trial_queued, promoted), or, when this version is already stored (a
    /// retained manifest seen again after a restart), what `standingVerdict` says (usually nil:
    /// nothing new). Runs on the shipper thread, never on the decision path; the promotion
    /// itself goes through the control queue.
    func fleetModelArrived(_ m: FleetModelManifest, _ bytes: [UInt8]) -> [String: JSONValue]? {
        func refused(_ reason: String, _ message: String) -> [String: JSONValue] {
            ["verdict": .string("refused"), "reason": .string(reason), "message": .string(message)]
        }
        if store.versions().contains(m.version),
           let stored = try? ModelSignature.parse(Data(contentsOf: store.signatureURL(m.version))), stored.sha256 == m.sha256 {
            return standingVerdict(m.version)
        }
        // The same check a local model gets before it is served (keys/models/ and the device key).
        do throws(ModelRefusal) {
            _ = try ModelSignature.verify(modelBytes: bytes, signature: m.signature, expectedVersion: m.version,
                                          expectedMapping: modelTrust.fingerprint, trust: modelTrust.trust)
        } catch {
            return refused(error.reason.rawValue, error.message)
        }
        let newest = max(store.versions().last ?? 0, store.servedRecords().compactMap { $0 }.max() ?? 0)
        guard m.version > newest else {
            return refused(FleetModelRefusal.notNewer, "the fleet model is version \(m.version), this gateway already has version \(newest): a version number is never reused or gone back to")
        }
        do {
            let model = try QModel.load(bytes: bytes)
            guard model.inputCount == map.stateWidth, model.actionCount == map.actions.count else {
                return refused(FleetModelRefusal.failedChecks, "the model has \(model.inputCount) inputs and \(model.actionCount) actions; the mapping needs \(map.stateWidth) and \(map.actions.count)")
            }
        } catch {
            return refused(FleetModelRefusal.failedChecks, "the model does not load: \(error)")
        }
        let baseline = fleetModelBaseline(version: m.version)
        let incoming = dataDirectory.appendingPathComponent("fleet-model.incoming")
        let incomingBaseline = dataDirectory.appendingPathComponent("fleet-model-baseline.incoming")
        let version: Int
        do {
            try Data(bytes).write(to: incoming)
            defer {
                try? FileManager.default.removeItem(at: incoming)
                try? FileManager.default.removeItem(at: incomingBaseline)
            }
            var files = ["model.safetensors": incoming]
            if let baseline {
                try DurableFile.write(baseline.json(), to: incomingBaseline)
                files["baseline.json"] = incomingBaseline
            }
            var gateways: [String: JSONValue] = [:]
            for (g, n) in m.gateways { gateways[g] = .number(Double(n)) }
            let report = JSONValue.object([
                "verdict": .string("imported"), "source": .string("fleet"), "signed_by": .string(m.signer),
                "learner": .string(m.learner), "rows": .number(Double(m.rows)), "gateways": .object(gateways),
            ]).jsonText
            // The store checks the signature again over the bytes it stored; the baseline goes
            // into the version's folder with it (one rename), so it survives a restart.
            version = try store.add(files: files, report: Data(report.utf8),
                                    signer: .imported(m.signature, trust: modelTrust.trust, mapping: modelTrust.fingerprint))
        } catch {
            return refused(FleetModelRefusal.storeFailed, "the fleet model could not be stored: \(error)")
        }
        lastCandidate.withLock { $0 = version }
        logger.notice("fleet model stored", metadata: [
            "model.version": "\(version)", "fleet.model.signer": "\(m.signer)", "fleet.model.learner": "\(m.learner)",
            "fleet.model.rows": "\(m.rows)", "learning.promotion": "\(map.learning.promotion.rawValue)",
        ])
        var verdict: [String: JSONValue] = ["verdict": .string("stored")]
        switch map.learning.promotion {
        case .auto:
            var problem: String?
            control.sync {
                do { try promote(version: version, reason: "fleet model from \(m.learner) (signed by \(m.signer)), promotion auto") } catch { problem = "\(error)" }
            }
            if let problem {
                verdict["message"] = .string("stored, not served: \(problem)")
            } else {
                verdict["verdict"] = .string("promoted")
            }
        case .trial, .shadowFirst:
            // The path a retrained candidate takes: this gateway's own switchback trial against the
            // controller in charge (queued behind a trial under way). A fleet model gets no
            // pre-trial estimate: the plant model is fitted by the gateway's own retraining. Like
            // a retrained candidate, it is kept out of the trial while the log is too short to
            // check its exogenous baseline.
            if let why = keptOutForShortLog(version, baseline: baseline,
                                            next: "a later retraining's candidate, or the next fleet model, is trialled") {
                verdict["message"] = .string("stored, not trialled: \(why)")
                break
            }
            let queued = trialRunning.load(ordering: .relaxed)
            var problem: String?
            control.sync {
                do { try startTrial(version) } catch { problem = "\(error)" }
            }
            if let problem {
                verdict["message"] = .string("stored; the trial could not start: \(problem)")
                logger.error("the switchback trial of a fleet model could not start", metadata: ["model.version": "\(version)", "error": "\(problem)"])
            } else {
                verdict["verdict"] = .string(queued ? "trial_queued" : "trial_started")
                verdict["waiting_for_control"] = .bool(mode != .control)
            }
        case .manual:
            verdict["message"] = .string("stored; promotion manual: serve it with a signed cmd/promote {\"version\":\(version)}")
        }
        publishRetrain(["phase": .string("fleet_model"), "event": verdict["verdict"] ?? .null, "version": .number(Double(version)),
                        "signed_by": .string(m.signer), "learner": .string(m.learner), "baseline": Self.baselineSummary(baseline)])
        control.async { self.publishStatus() }
        return verdict
    }

    /// The exogenous baseline of fleet model `version`'s trial, fitted on this gateway's log as a
    /// retraining fits its candidate's: against the controller the trial would run against now
    /// (`baselineReference`: the served model, else the incumbent), on every row logged so far
    /// (the writer's queue committed first). Nil — nothing is fitted, the log is not read — when
    /// the mapping rules a baseline out (`adjust: none`, episode blocks, no exogenous signal: the
    /// trial runs unadjusted, as before) or the log cannot be read (logged; the trial then runs
    /// unadjusted and its note says the model came without a baseline).
    ///
    /// Runs on the shipper thread: it reads the whole log, as a retraining does (seconds on a
    /// long one), and no tick waits for it (the decision thread neither reads the log nor waits
    /// for this thread).
    func fleetModelBaseline(version: Int) -> ExogenousBaseline? {
        guard ExogenousBaseline.ruledOut(by: map) == nil else { return nil }
        // Waits on the writer, never on the decision thread.
        try? writer.flush(timeout: 10)
        var fitter = Retrainer(map: map, policy: checkPolicy)
        fitter.baselineReference = baselineReference
        let started = Date()
        do {
            let baseline = try fitter.fitBaseline(logPath: log.path)
            if let r = baseline?.report {
                logger.info("fleet model: exogenous baseline fitted", metadata: [
                    "model.version": "\(version)", "baseline.accepted": "\(r.accepted)", "baseline.rows": "\(r.rows)",
                    "baseline.placebo_pairs": "\(r.placeboPairs)", "baseline.needs_longer_log": "\(r.needsLongerLog)",
                    "baseline.reason": "\(r.reason ?? "")", "baseline.seconds": "\(String(format: "%.2f", Date().timeIntervalSince(started)))",
                ])
            }
            return baseline
        } catch {
            logger.error("fleet model: the exogenous baseline could not be fitted; its trial runs unadjusted",
                         metadata: ["model.version": "\(version)", "error": "\(error)"])
            return nil
        }
    }

    /// The stored versions that came from the fleet (their `report.json` says `source: fleet`).
    func storedFleetVersions() -> Set<Int> {
        Set(store.versions().filter { v in
            guard let data = try? Data(contentsOf: store.reportURL(v)),
                  let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return false }
            return o["source"] as? String == "fleet"
        })
    }

    /// A fleet model this gateway already stored came again (the retained manifest after a
    /// restart). It is never stored twice and never trialled twice. Its standing verdict (retained
    /// on `<fleet>/verdict/<gateway>`) still holds — nil, nothing is published — unless it says
    /// a trial is owed that no longer exists. The trials marked on disk were resumed before the
    /// first fleet message was handled (`resumeTrialAtStart`); under `promotion: trial`, a
    /// version that is neither served, nor in (or waiting for) the running trial, nor decided
    /// (`trial.json`), nor quarantined, nor kept out of the trial (its `baseline.json` needs a
    /// longer log: it had no trial, and its `stored` verdict stands) was never marked as owed its
    /// trial (the gateway stopped between storing and beginning it). That is said once:
    /// `trial_abandoned` with the reason, and `trial.json` written (`verdict: abandoned`), so the
    /// next restart is silent.
    func standingVerdict(_ version: Int) -> [String: JSONValue]? {
        guard map.learning.promotion == .trial || map.learning.promotion == .shadowFirst else { return nil }
        if servedVersion == version || candidateSlot.withLock({ $0?.version == version })
            || waitingCandidate.withLock({ $0?.version == version }) || store.isQuarantined(version)
            || FileManager.default.fileExists(atPath: store.trialURL(version).path)
            || ExogenousBaseline.load(from: store.baselineURL(version))?.report.needsLongerLog == true {
            return nil
        }
        let reason = "the gateway restarted before this model's trial was marked on disk (it stopped between storing the model and beginning its trial), so there is no trial to resume; serve it with a signed cmd/promote {\"version\":\(version)} or wait for the next fleet model"
        let record: [String: JSONValue] = [
            "version": .number(Double(version)), "verdict": .string("abandoned"), "reason": .string(reason), "promoted": .bool(false),
            "time": .number((Date().timeIntervalSince1970 * 1000).rounded() / 1000),
        ]
        try? DurableFile.write(Data(JSONValue.object(record).jsonText.utf8), to: store.trialURL(version))
        logger.notice("fleet model: its trial was cut short by a restart", metadata: ["model.version": "\(version)"])
        return ["verdict": .string("trial_abandoned"), "reason": .string(reason), "trial": .object(record)]
    }
}
