import ArgumentParser
import EdgeQCore
import EdgeQGateway
import EdgeQMQTT
import EdgeQNet
import EdgeQTopicMap
import EdgeQTrust
import Foundation
import EdgeQRetrain

/// `edgeq models list|show|rollback|promote|import|sign`: the model store of a data directory.
struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "List, show, roll back, promote, import and sign the versioned models of a data directory.",
        discussion: """
            A version rolled back from (by the live guard or an operator) is quarantined: it is never \
            served again automatically (not by a rollback, the start-up fallback, the guard or an automatic \
            promotion). Only promoting it by name serves it again, which lifts the quarantine.

            A version is served only with a valid signature (model.safetensors.sig) over its sha256, its \
            version and the mapping's fingerprint, by the gateway's device key or a key in DATA/keys/models/ \
            (docs/security.md). Versions stored by an EdgeQ before signed models have none: check them and \
            sign them with `edgeq models sign V`.
            """,
        subcommands: [List.self, Show.self, Rollback.self, Promote.self, Import.self, Sign.self]
    )

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the stored versions; * marks the served one, → the rollback target; each version's signature, and quarantined ones say so.")
        @Option(help: "The gateway's data directory.") var data: String
        @Option(help: "The mapping file: also check that each signature is for its mapping.") var config: String?

        func run() throws {
            let mapping = try config.map { try loadMapping($0).fingerprint }
            let trust = try storedModelTrust(URL(fileURLWithPath: data))
            let store = try ModelStore(dataDirectory: URL(fileURLWithPath: data))
            let current = store.current()
            let target = store.rollbackTarget()
            let quarantine = Dictionary(uniqueKeysWithValues: store.quarantined().map { ($0.version, $0) })
            let versions = store.versions()
            if versions.isEmpty {
                print("no models in \(store.directory.path)")
                return
            }
            for v in versions {
                let report = (try? Data(contentsOf: store.reportURL(v))).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] } ?? [:]
                let verdict = report["verdict"] as? String ?? "?"
                let rows = (report["rows"] as? NSNumber).map { "\($0.intValue) rows" } ?? ""
                let trial = (try? Data(contentsOf: store.trialURL(v))).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
                    .flatMap { $0["verdict"] as? String }.map { "  trial: \($0)" }
                    ?? (FileManager.default.fileExists(atPath: store.runningTrialURL(v).path) ? "  trial: running"
                        : ModelsCommand.pendingTrial(store, v).map { $0 ? "  trial: running" : "  trial: waiting" } ?? "")
                let sha = (try? String(contentsOf: QModel.checksumURL(for: store.modelURL(v)), encoding: .utf8))?.prefix(12) ?? "?"
                let date = (try? FileManager.default.attributesOfItem(atPath: store.folder(v).path)[.modificationDate] as? Date).map {
                    ISO8601DateFormatter().string(from: $0)
                } ?? ""
                let mark = v == current ? "*" : (v == target ? "→" : " ")
                let state = quarantine[v].map { "  QUARANTINED (\($0.reason))" } ?? ""
                let signature: String
                switch verifyStored(store, v, trust: trust, mapping: mapping) {
                case .success(let (_, sig)): signature = "signed by \(sig.key)"
                case .failure(let refusal): signature = refusal.reason == .missingSignature ? "UNSIGNED" : "REFUSED (\(refusal.reason))"
                }
                print("\(mark) v\(v)  \(date)  sha256 \(sha)…  \(signature)  \(verdict)  \(rows)\(trial)\(state)")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a version's architecture, actions, quarantine and check report.")
        @Option(help: "The gateway's data directory.") var data: String
        @Option(help: "The mapping file: name the state inputs of the support and give it in the features' units, with the range the model acts in.")
        var config: String?
        @Argument(help: "The version (default: the served one).") var version: Int?

        func run() throws {
            let map = try config.map { try loadMapping($0) }
            let store = try ModelStore(dataDirectory: URL(fileURLWithPath: data))
            guard let v = version ?? store.current() else { throw ValidationError("no version served; name one (edgeq models list)") }
            let model: QModel
            do {
                model = try QModel.load(from: store.modelURL(v))
            } catch {
                throw failure("version \(v) does not load: \(error)", code: 65)
            }
            print("version    \(v)\(v == store.current() ? " (served)" : "")")
            switch verifyStored(store, v, trust: try storedModelTrust(URL(fileURLWithPath: data)), mapping: nil) {
            case .success(let (_, sig)): print("signature  by \(sig.key), for mapping \(sig.mapping.prefix(12))…")
            case .failure(let refusal): print("signature  REFUSED: \(refusal)")
            }
            if let q = store.quarantined().first(where: { $0.version == v }) {
                let when = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: q.time))
                print("quarantine since \(when): \(q.reason) (served again only when promoted by name)")
            }
            print("net        \(model.architecture.label)")
            print("format     \(model.fileFormatVersion)\(model.fileFormatVersion >= 2 ? " (16-bit head; builds before format 2 cannot read it)" : "")")
            print("actions    \(model.actionNames.joined(separator: ", "))")
            if let s = model.support, let map {
                guard map.stateWidth == s.min.count else {
                    throw failure("\(config ?? "the mapping")'s state has \(map.stateWidth) inputs and v\(v)'s support \(s.min.count): not the mapping this model was trained for", code: 65)
                }
                print("support    per state input: the range it was trained on, and the range it acts in (widened by its support margin); "
                      + "in the feature's units where its normalisation is a fixed range, else as the state vector holds it:")
                for line in ModelsCommand.supportLines(s, map: map) { print("  \(line)") }
            } else if let s = model.support {
                let ranges = zip(s.min, s.max).map { String(format: "[%.4g, %.4g]", Double($0), Double($1)) }
                print("support    per state input, the range it was trained on (safety.support_margin widens it; --config names the inputs): \(ranges.joined(separator: " "))")
            } else {
                print("support    none recorded: states are not checked against this model's training range")
            }
            for (k, val) in model.training.sorted(by: { $0.key < $1.key }) { print("training   \(k) = \(val)") }
            if let data = try? Data(contentsOf: store.reportURL(v)),
               let report = try? JSONDecoder().decode(RetrainReport.self, from: data) {
                print(ReportText.render(report))
            }
            if let baseline = ExogenousBaseline.load(from: store.baselineURL(v)) {
                print(TrialText.baseline(baseline.report))
            }
            if let data = try? Data(contentsOf: store.trialURL(v)),
               let trial = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
                print(TrialText.render(trial))
            }
            if !FileManager.default.fileExists(atPath: store.trialURL(v).path),
               let data = try? Data(contentsOf: store.runningTrialURL(v)),
               let running = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
                let blocks = (running["blocks"] as? [Any])?.count ?? 0
                print("trial      running against \(running["reference"] as? String ?? "?"): \(blocks / 2) pairs and \(blocks % 2) block so far (a restart goes on from its complete pairs)")
            } else if !FileManager.default.fileExists(atPath: store.trialURL(v).path), let began = ModelsCommand.pendingTrial(store, v) {
                print(began ? "trial      running: no block ended yet (a restart begins it again)"
                            : "trial      waiting: its trial begins when the running one is decided (a restart keeps it waiting)")
            }
            if let data = try? Data(contentsOf: store.guardURL(v)),
               let record = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
                print(TrialText.guardRecord(record))
            }
        }
    }

    /// Whether `v` is owed a trial with no block on record (`trial-pending.json`): true when its
    /// trial began, false while it waits for the running one; nil when not marked.
    static func pendingTrial(_ store: ModelStore, _ v: Int) -> Bool? {
        guard let data = try? Data(contentsOf: store.pendingTrialURL(v)) else { return nil }
        return ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any])?["began"] as? Bool ?? false
    }

    /// The switchback trial's verdict file (`trial.json`) as `edgeq models show` prints it.
    enum TrialText {
        /// The exogenous baseline's fit (`baseline.json`): accepted or not and why, the held-out
        /// placebo variance ratio.
        static func baseline(_ r: ExogenousBaseline.Report) -> String {
            let ratio = r.heldOutVarianceRatio.map { String(format: "%.3g", $0) } ?? "—"
            let rms = [r.rawRMS, r.adjustedRMS].map { $0.map { String(format: "%.4g", $0) } ?? "—" }
            var line = "baseline   \(r.accepted ? "accepted" : "not used")"
            if !r.signals.isEmpty { line += " (exogenous: \(r.signals.joined(separator: ", ")); \(r.features) features; rows of \(r.rows), \(r.fittedRows))" }
            if r.placeboPairs > 0 {
                line += "\n           held-out placebo pairs \(r.placeboPairs): variance ratio \(ratio) (accepted at ≤ \(String(format: "%.2g", r.maxRatio))), rms \(rms[0]) raw, \(rms[1]) adjusted"
            }
            if let why = r.reason { line += "\n           \(why)" }
            return line
        }

        /// The control-group guard's record (`guard.json`): what it compared while this version
        /// served, which a restart resumes.
        static func guardRecord(_ g: [String: Any]) -> String {
            let pairs = (g["pairs"] as? Int).map(String.init) ?? "?"
            let window = (g["window"] as? [[Double]]) ?? []
            let differences = window.compactMap { p in p.count == 4 ? p[0] - p[1] - (p[2] - p[3]) : nil }
            let mean = differences.isEmpty ? "—" : String(format: "%.4g", differences.reduce(0, +) / Double(differences.count))
            let when = (g["time"] as? Double).map { ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: $0)) } ?? "?"
            return "guard      \(pairs) pairs compared against \(g["control_group"] as? String ?? "?") (blocks \(g["block"] as? String ?? "?")"
                + "\(g["adjusted"] as? Bool == true ? ", adjusted" : "")); window of \(window.count): mean difference per pair \(mean)"
                + "; probation left \((g["probation_pairs_left"] as? Int).map(String.init) ?? "?"); written \(when) (a restart goes on from it)"
        }

        static func render(_ t: [String: Any]) -> String {
            func num(_ k: String) -> String {
                guard let n = t[k] as? NSNumber else { return "—" }
                return String(format: "%.4g", n.doubleValue)
            }
            var lines = ["trial      \(t["verdict"] as? String ?? "?") against \(t["reference"] as? String ?? "?")"
                         + ((t["reason"] as? String).map { ": \($0)" } ?? "")]
            lines.append("           pairs \(num("pairs")), ticks \(num("ticks")), mean difference per pair \(num("mean_difference")) "
                         + "(\(num("confidence")) interval \(num("ci_low")) … \(num("ci_high")))"
                         + (t["adjusted"] as? Bool == true ? ", adjusted for the exogenous baseline" : ""))
            if t["adjusted"] as? Bool == true {
                lines.append("           raw (unadjusted): mean difference \(num("raw_mean_difference")) (interval \(num("raw_ci_low")) … \(num("raw_ci_high")))")
            }
            if t["sd"] is NSNumber {
                lines.append("           sd of a pair difference \(num("sd"))"
                             + (t["verdict"] as? String == "promote" ? " (the control-group guard borrows it while this model serves against \(t["reference"] as? String ?? "?"))" : ""))
            }
            if let n = t["noise_from_trial"] as? [String: Any], let sd = n["sd"] as? NSNumber {
                lines.append("           early stop with the noise of \(n["version"] as? String ?? "?")'s trial (sd \(String(format: "%.4g", sd.doubleValue)) over "
                             + "\((n["pairs"] as? Int).map(String.init) ?? "?") pairs): a clearly worse candidate is rejected before min_pairs"
                             + (t["early_stop_high"] is NSNumber ? " (bound \(num("early_stop_high")))" : ""))
            }
            if let note = (t["adjustment"] as? [String: Any])?["note"] as? String { lines.append("           \(note)") }
            if let c = t["conditions"] as? [String: Any], !c.isEmpty {
                let ranges = c.keys.sorted().compactMap { k -> String? in
                    guard let r = c[k] as? [Double], r.count == 2 else { return nil }
                    return "\(k) \(String(format: "%.4g", r[0])) … \(String(format: "%.4g", r[1]))"
                }
                lines.append("           conditions seen: \(ranges.joined(separator: ", "))"
                             + (t["verdict"] as? String == "promote" ? " (beyond them the guard watches closer: promotion.novelty_pairs)" : ""))
            }
            if t["verdict"] as? String == "futile", let share = t["futility"] as? NSNumber {
                lines.append("           futile: shown not to be better than \(String(format: "%g", share.doubleValue * 100)) % of the reference's block return "
                             + "(bound \(num("futility_high")) < 0): stopped without promoting")
            }
            if let hit = t["stop_loss_hit"] as? [String: Any] {
                func f(_ k: String) -> String { (hit[k] as? NSNumber).map { String(format: "%.4g", $0.doubleValue) } ?? "?" }
                let against = (hit["before_trial"] as? Bool == true ? "the controller in charge's rate before the trial" : "the reference's latest block")
                    + (hit["adjusted"] as? Bool == true ? " (rewards less their exogenous baseline)" : "")
                lines.append("           stop-loss: the candidate's block had lost \(f("deficit")) against \(against) "
                             + "after \(f("scored_ticks")) scored ticks (limit \(f("limit"))): rejected inside the block")
            }
            lines.append("           block return: candidate \(num("candidate_mean")), reference \(num("reference_mean")); "
                         + "cost \(num("cost")) (\(num("cost_share")) of the reference's return over the trial)")
            if t["carry_over"] is NSNumber {
                lines.append("           carry-over \(num("carry_over")) ± \(num("carry_over_se")) of the mean difference (switching's own share: "
                             + "comparable to the difference, lengthen the burn-in)")
            }
            if let switches = t["switches"] as? NSNumber, switches.intValue > 0 {
                lines.append("           switching cost \(num("switching_cost")) over \(switches.intValue) switches (\(num("switching_cost_share")) of the reference's return; "
                             + "not scored): a burn-in's loss after a switch to the candidate \(num("switch_loss_candidate")), to the reference \(num("switch_loss_reference")), "
                             + "without a switch \(num("burn_in_loss_without_switch"))")
            }
            return lines.joined(separator: "\n")
        }
    }

    /// `models show --config`: one line per state input of `support` — its name, the range the
    /// model was trained on and the range it acts in (widened by the input's support margin;
    /// "not checked" without one), in the feature's units where the mapping can say them.
    static func supportLines(_ support: StateSupport, map: TopicMap) -> [String] {
        let names = map.stateInputNames
        let units = map.stateInputUnits
        let margins = map.stateSupportMargins
        let width = names.map(\.count).max() ?? 0
        func show(_ x: Double, _ i: Int) -> String { String(format: "%.4g", units[i].map { $0(x) } ?? x) }
        return names.indices.map { i in
            let lo = Double(support.min[i]), hi = Double(support.max[i])
            let name = names[i].padding(toLength: width, withPad: " ", startingAt: 0)
            let trained = "[\(show(lo, i)), \(show(hi, i))]"
            guard let m = margins.map({ Double($0[i]) }), m.isFinite else { return "\(name)  trained on \(trained), not checked" }
            let d = hi - lo
            let acts = d > 0 ? "[\(show(lo - m * d, i)), \(show(hi + m * d, i))]" : "\(show(lo, i)) only"
            return "\(name)  trained on \(trained), acts in \(acts)"
        }
    }

    struct Rollback: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve an earlier version again and quarantine the one left.",
            discussion: """
                Without --to, each rollback walks one step back through the served history (v3, then v2, \
                then v1), skipping quarantined versions; when nothing earlier is left it refuses. With --to, \
                the named version is served (even a quarantined one). Either way the version left is \
                quarantined.

                With --config, the command goes to the running gateway over MQTT (cmd/rollback), signed with \
                --key (an operator key the gateway trusts), connecting with the mapping file's broker, \
                username, password and TLS settings, and takes effect at once; the answer is printed. With --data, the data directory's store is switched for the \
                gateway's next start (do not use it on a running gateway's directory).
                """
        )
        @Option(help: "The gateway's data directory (offline rollback).") var data: String?
        @Option(help: "The mapping file of a running gateway (rollback over MQTT).") var config: String?
        @Option(help: "Broker URL instead of the mapping file's.") var broker: String?
        @Option(help: "The version to serve (default: one step back, skipping quarantined versions).") var to: Int?
        @Option(help: "With --config: the operator's private key file that signs the command (NAME.key).") var key: String?

        func validate() throws {
            if (data == nil) == (config == nil) { throw ValidationError("give either --data DIR (offline) or --config FILE (running gateway)") }
            if config != nil && key == nil { throw ValidationError("--config needs --key KEYFILE: the gateway obeys only signed commands (edgeq keys generate NAME --dir DIR)") }
        }

        func run() throws {
            if let config, let key {
                try askGateway(config: config, broker: broker, key: key, verb: "rollback", version: to)
                return
            }
            guard let data else { return }
            let store = try ModelStore(dataDirectory: URL(fileURLWithPath: data))
            let trust = try storedModelTrust(URL(fileURLWithPath: data))
            let current = store.current()
            let candidates = to.map { [$0] } ?? store.rollbackTargets()
            for target in candidates {
                do {
                    _ = try QModel.load(bytes: try verifyStored(store, target, trust: trust, mapping: nil).get().bytes)
                } catch {
                    if to != nil { throw failure("version \(target) is refused or does not pass its load checks: \(error)", code: 65) }
                    FileHandle.standardError.write(Data("skipping v\(target): it is refused or does not pass its load checks: \(error)\n".utf8))
                    continue
                }
                do {
                    try store.rollBack(from: current, to: target, reason: "edgeq models rollback")
                } catch {
                    throw failure("\(error)", code: 74)
                }
                let left = current.flatMap { $0 != target ? " (v\($0) quarantined)" : nil } ?? ""
                print("serving v\(target)\(left) from the next start of the gateway (for a running one: --config FILE)")
                return
            }
            let quarantined = store.quarantined().map { "v\($0.version)" }
            throw failure("""
                no earlier version to roll back to (stored: \(store.versions().map { "v\($0)" }.joined(separator: ", ")); \
                quarantined: \(quarantined.isEmpty ? "none" : quarantined.joined(separator: ", "))); \
                to serve a quarantined one anyway: edgeq models promote V
                """, code: 1)
        }
    }

    struct Promote: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve a named version (even a quarantined one, which lifts its quarantine).",
            discussion: """
                With --config, the command goes to the running gateway over MQTT (cmd/promote {"version":V}), \
                signed with --key (an operator key the gateway trusts), connecting with the mapping file's \
                broker, username, password and TLS settings. With --data, \
                the data directory's store is switched for the gateway's next start.
                """
        )
        @Option(help: "The gateway's data directory (offline promotion).") var data: String?
        @Option(help: "The mapping file of a running gateway (promotion over MQTT).") var config: String?
        @Option(help: "Broker URL instead of the mapping file's.") var broker: String?
        @Argument(help: "The version to serve.") var version: Int
        @Option(help: "With --config: the operator's private key file that signs the command (NAME.key).") var key: String?

        func validate() throws {
            if (data == nil) == (config == nil) { throw ValidationError("give either --data DIR (offline) or --config FILE (running gateway)") }
            if config != nil && key == nil { throw ValidationError("--config needs --key KEYFILE: the gateway obeys only signed commands (edgeq keys generate NAME --dir DIR)") }
        }

        func run() throws {
            if let config, let key {
                try askGateway(config: config, broker: broker, key: key, verb: "promote", version: version)
                return
            }
            guard let data else { return }
            let store = try ModelStore(dataDirectory: URL(fileURLWithPath: data))
            do {
                let trust = try storedModelTrust(URL(fileURLWithPath: data))
                _ = try QModel.load(bytes: try verifyStored(store, version, trust: trust, mapping: nil).get().bytes)
            } catch {
                throw failure("version \(version) is refused or does not pass its load checks: \(error)", code: 65)
            }
            let wasQuarantined = store.isQuarantined(version)
            do {
                try store.liftQuarantine(version)
                try store.setCurrent(version, reason: "edgeq models promote")
            } catch {
                throw failure("\(error)", code: 74)
            }
            print("serving v\(version)\(wasQuarantined ? " (its quarantine is lifted)" : "") from the next start of the gateway (for a running one: --config FILE)")
        }
    }
}

extension ModelsCommand {
    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Store a model signed elsewhere (a lab, a fleet learner) as a new version, after checking its signature.",
            discussion: """
                The signature (SIGFILE, the JSON of docs/security.md) must be by a key in DATA/keys/models/ \
                (or this device's key), over FILE's sha256, the version it is signed as and the fingerprint of \
                the mapping (--config); the version must be above every stored one. Refused otherwise, with the \
                reason (exit 65). The version is stored, not served: serve it with a signed cmd/promote \
                (`edgeq cmd promote --set version=V`) or, offline, `edgeq models promote V --data DIR`.
                """
        )
        @Argument(help: "The model file (safetensors).") var file: String
        @Option(help: "Its signature file.") var sig: String
        @Option(help: "The gateway's mapping file (its fingerprint must be the signed one).") var config: String
        @Option(help: "The gateway's data directory (default: the mapping file's).") var data: String?

        func run() throws {
            let map = try loadMapping(config)
            let dir = URL(fileURLWithPath: data ?? map.gateway.dataDirectory)
            let trust = try storedModelTrust(dir)
            guard let sigData = FileManager.default.contents(atPath: sig) else { throw failure("cannot read the signature file \(sig)", code: 66) }
            guard let modelData = FileManager.default.contents(atPath: file) else { throw failure("cannot read the model file \(file)", code: 66) }
            let bytes = Array(modelData)
            let signature: ModelSignature
            do throws(ModelRefusal) {
                let parsed = try ModelSignature.parse(sigData)
                signature = try ModelSignature.verify(modelBytes: bytes, signature: parsed, expectedVersion: parsed.modelVersion,
                                                      expectedMapping: map.fingerprint, trust: trust)
            } catch {
                throw failure("refused (\(error.reason)): \(error.message)", code: 65)
            }
            let model: QModel
            do {
                model = try QModel.load(bytes: bytes)
            } catch {
                throw failure("refused (failed_checks): \(file) does not load: \(error)", code: 65)
            }
            guard model.inputCount == map.stateWidth, model.actionCount == map.actions.count else {
                throw failure("refused (failed_checks): the model has \(model.inputCount) inputs and \(model.actionCount) actions; the mapping needs \(map.stateWidth) and \(map.actions.count)", code: 65)
            }
            let store: ModelStore
            do { store = try ModelStore(dataDirectory: dir) } catch { throw failure("\(error)", code: 74) }
            let report = "{\"verdict\":\"imported\",\"signed_by\":\(jsonString(signature.key)),\"source\":\(jsonString(file))}"
            let version: Int
            do {
                // The store checks the signature again over the bytes it stored.
                version = try store.add(files: ["model.safetensors": URL(fileURLWithPath: file)], report: Data(report.utf8),
                                        signer: .imported(signature, trust: trust, mapping: map.fingerprint))
            } catch {
                throw failure("refused: \(error)", code: 65)
            }
            print("stored as v\(version) (signed by \(signature.key)); serve it with a signed `edgeq cmd promote --config \(config) --key KEYFILE --set version=\(version)` (or offline: edgeq models promote \(version) --data \(dir.path))")
        }
    }

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sign",
            abstract: "Sign a stored version with the gateway's device key (versions stored by an earlier EdgeQ), or a model file with a key of yours.",
            discussion: """
                `edgeq models sign V --config FILE [--data DIR]` signs stored version V with DATA/keys/device.key \
                (made if missing) for the mapping's fingerprint, after checking that it loads (its sha256 file \
                and reference set) and fits the mapping. Do this only for a version you trust: its signature \
                says this device vouches for it. Run it as the gateway's user, then restart the gateway. A \
                version whose signature already verifies is left alone.

                `edgeq models sign --file MODEL --key KEYFILE --as-version N --config FILE` writes MODEL.sig, \
                signed with KEYFILE (its name is the file's stem) as version N, for `edgeq models import` on a \
                gateway that trusts the key under DATA/keys/models/.
                """
        )
        @Argument(help: "The stored version to sign with the device key.") var version: Int?
        @Option(help: "The gateway's mapping file (the signature covers its fingerprint).") var config: String
        @Option(help: "The gateway's data directory (default: the mapping file's).") var data: String?
        @Option(help: "A model file to sign with --key (instead of a stored version).") var file: String?
        @Option(help: "The private key file for --file (NAME.key).") var key: String?
        @Option(name: .customLong("as-version"), help: "The version --file is signed as (above every version stored on the gateway).") var asVersion: Int?

        func validate() throws {
            if file == nil {
                guard version != nil else { throw ValidationError("name the stored VERSION to sign, or give --file MODEL --key KEYFILE --as-version N") }
                if key != nil || asVersion != nil { throw ValidationError("--key and --as-version go with --file") }
            } else {
                guard version == nil else { throw ValidationError("give either VERSION (a stored version) or --file") }
                guard key != nil, let n = asVersion, n >= 1 else { throw ValidationError("--file needs --key KEYFILE and --as-version N (N ≥ 1)") }
            }
        }

        func run() throws {
            let map = try loadMapping(config)
            if let file, let key, let asVersion {
                let url = URL(fileURLWithPath: file)
                guard let bytes = FileManager.default.contents(atPath: file) else { throw failure("cannot read \(file)", code: 66) }
                do {
                    let keyURL = URL(fileURLWithPath: key)
                    let name = keyURL.deletingPathExtension().lastPathComponent
                    let sig = try ModelSignature.sign(modelBytes: bytes, version: asVersion, mapping: map.fingerprint,
                                                      keyName: name, privateKey: try KeyFile.readPrivateKey(keyURL))
                    try sig.write(for: url)
                    print("\(ModelSignature.url(for: url).path): signed by \(name) as version \(asVersion) for mapping \(map.fingerprint.prefix(12))…")
                } catch {
                    throw failure("\(error)", code: 65)
                }
                return
            }
            guard let version else { return }
            let dir = URL(fileURLWithPath: data ?? map.gateway.dataDirectory)
            let store = try ModelStore(dataDirectory: dir)
            guard store.versions().contains(version) else {
                throw failure("no version \(version) in \(store.directory.path) (stored: \(store.versions().map { "v\($0)" }.joined(separator: ", ")))", code: 66)
            }
            let trust = try storedModelTrust(dir)
            if case .success(let (_, sig)) = verifyStored(store, version, trust: trust, mapping: map.fingerprint) {
                print("v\(version) is already signed by \(sig.key) for this mapping: nothing to do")
                return
            }
            let bytes: [UInt8]
            do {
                let model = try QModel.load(from: store.modelURL(version))
                guard model.inputCount == map.stateWidth, model.actionCount == map.actions.count else {
                    throw failure("v\(version) has \(model.inputCount) inputs and \(model.actionCount) actions; the mapping needs \(map.stateWidth) and \(map.actions.count): not signed", code: 65)
                }
                bytes = Array(try Data(contentsOf: store.modelURL(version)))
            } catch let e as ExitCode {
                throw e
            } catch {
                throw failure("v\(version) does not pass its load checks (\(error)): not signed", code: 65)
            }
            do {
                let device = try DeviceKey.loadOrCreate(dataDirectory: dir)
                let sig = try ModelSignature.sign(modelBytes: bytes, version: version, mapping: map.fingerprint, device: device)
                try sig.write(for: store.modelURL(version))
                print("signed v\(version) (sha256 \(sig.sha256.prefix(12))…) with the device key for mapping \(map.fingerprint.prefix(12))…; restart the gateway to serve it if it is the current version")
            } catch {
                throw failure("\(error)", code: 74)
            }
        }
    }
}

/// The keys a data directory trusts for models: `keys/models/*.pub` and the device's public key
/// (`keys/device.pub`) when it has one. Only public keys are read.
func storedModelTrust(_ data: URL) throws -> TrustStore {
    do {
        var keys = try TrustStore.load(dataDirectory: data).keys.filter { $0.role == .models }
        let devicePub = TrustStore.keysDirectory(dataDirectory: data).appendingPathComponent("device.pub")
        if FileManager.default.fileExists(atPath: devicePub.path) {
            keys.append(TrustedKey(name: DeviceKey.name, role: .models, publicKey: try KeyFile.readPublicKey(devicePub), file: devicePub.path))
        }
        return TrustStore(keys: keys)
    } catch {
        throw failure("\(error)", code: 65)
    }
}

/// Reads stored version `v` once and checks its signature; with `mapping`, also that it was
/// signed for that mapping (without, the signed mapping is taken as it is: the gateway checks it
/// at its start).
func verifyStored(_ store: ModelStore, _ v: Int, trust: TrustStore, mapping: String?) -> Result<(bytes: [UInt8], signature: ModelSignature), ModelRefusal> {
    let sigURL = store.signatureURL(v)
    guard let sigData = FileManager.default.contents(atPath: sigURL.path) else {
        return .failure(ModelRefusal(reason: .missingSignature, message: "\(sigURL.path) is missing"))
    }
    do throws(ModelRefusal) {
        let sig = try ModelSignature.parse(sigData)
        return .success(try ModelSignature.verify(modelFile: store.modelURL(v), expectedVersion: v, expectedMapping: mapping ?? sig.mapping, trust: trust))
    } catch {
        return .failure(error)
    }
}

/// A run-time failure of `edgeq models` (not a usage error, which ArgumentParser answers with the
/// usage text and 64): prints the message on standard error and gives the sysexits code to exit
/// with (65 data, 69 unavailable, 74 I/O; 1 when the gateway or the store refused).
func failure(_ message: String, code: Int32) -> ExitCode {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    return ExitCode(code)
}

extension ParsableCommand {
    /// Sends `cmd/<verb>` (with `version` when given), signed with the private key file `key`,
    /// to the gateway of the mapping file `config`, connecting as the gateway does (broker,
    /// credentials, TLS from the mapping file), and prints its answer (`CmdCommand.send`).
    /// Exits 1 when the gateway refuses, 66 for a key file that cannot be read, 69 when the
    /// broker cannot be reached, 75 when no answer came.
    func askGateway(config: String, broker: String?, key: String, verb: String, version: Int?) throws {
        let map = try loadMapping(config)
        let keyURL = URL(fileURLWithPath: key)
        let name = keyURL.deletingPathExtension().lastPathComponent
        let privateKey: SigningPrivateKey
        do {
            privateKey = try KeyFile.readPrivateKey(keyURL)
        } catch {
            throw failure("\(error)", code: 66)
        }
        let id = "cli-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fields = version.map { ["version=\($0)"] } ?? []
        let command = try CmdCommand.commandText(id: id, fields: fields)
        let reply = try CmdCommand.send(map: map, broker: broker, verb: verb, command: command, requestID: id,
                                        keyName: name, privateKey: privateKey, timeout: 10)
        print(reply.text)
        if !reply.ok { throw ExitCode(1) }
    }
}
