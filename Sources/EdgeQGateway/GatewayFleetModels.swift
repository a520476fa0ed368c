import EdgeQNet
import EdgeQTopicMap
import EdgeQTrust
import Foundation

/// A fleet model on the gateway (docs/fleet.md, "Models"): reassembled on the shipper's thread,
/// then checked like a model imported by hand (`edgeq models import`) — its signature by a key
/// under `keys/models/`, its sha256, this mapping's fingerprint, a version above every stored
/// one, a model that loads and fits the mapping — stored as a version, and then handled as a
/// locally retrained candidate that passed its checks: `promotion: trial` starts this gateway's
/// own switchback trial, `auto` serves it, `manual` leaves it stored.
extension Gateway {
    /// Checks, stores and routes a complete fleet model; the verdict object for
    /// `<fleet>/verdict/<gateway>` (`verdict`: refused with `reason` and `message`, stored,
    /// trial_started, trial_queued, promoted), or nil when this version is already stored (a
    /// retained manifest seen again after a restart). Runs on the shipper thread, never on the
    /// decision path; the promotion itself goes through the control queue.
    func fleetModelArrived(_ m: FleetModelManifest, _ bytes: [UInt8]) -> [String: JSONValue]? {
        func refused(_ reason: String, _ message: String) -> [String: JSONValue] {
            ["verdict": .string("refused"), "reason": .string(reason), "message": .string(message)]
        }
        if store.versions().contains(m.version),
           let stored = try? ModelSignature.parse(Data(contentsOf: store.signatureURL(m.version))), stored.sha256 == m.sha256 {
            return nil
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
        let incoming = dataDirectory.appendingPathComponent("fleet-model.incoming")
        let version: Int
        do {
            try Data(bytes).write(to: incoming)
            defer { try? FileManager.default.removeItem(at: incoming) }
            var gateways: [String: JSONValue] = [:]
            for (g, n) in m.gateways { gateways[g] = .number(Double(n)) }
            let report = JSONValue.object([
                "verdict": .string("imported"), "source": .string("fleet"), "signed_by": .string(m.signer),
                "learner": .string(m.learner), "rows": .number(Double(m.rows)), "gateways": .object(gateways),
            ]).jsonText
            // The store checks the signature again over the bytes it stored.
            version = try store.add(files: ["model.safetensors": incoming], report: Data(report.utf8),
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
            // pre-trial estimate: the plant model is fitted by the gateway's own retraining.
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
                        "signed_by": .string(m.signer), "learner": .string(m.learner)])
        control.async { self.publishStatus() }
        return verdict
    }
}
