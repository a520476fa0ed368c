import EdgeQTrust
import Foundation
import Logging

/// The fleet models this gateway refused, remembered across restarts in
/// `DATA/fleet-refused.json` (docs/fleet.md, "After a restart").
///
/// The model on `<fleet>/model` is retained: after every restart the gateway gets it again. A
/// model refused for what it is — its signature, its key, its mapping, its size, its version,
/// its fit — is refused again for the same reason, so the gateway remembers the refusal by
/// (version, sha256) and does not check that model again or publish its verdict again (the
/// retained verdict still stands). Refusals that say nothing about the model are not
/// remembered: a chunk altered or lost on the way (`sha_mismatch`, a chunk count that does not
/// match: `malformed`) and a store that could not write (`store_failed`) are checked again.
///
/// A refusal holds for what the gateway trusted when it refused: the keys trusted for models,
/// the mapping's fingerprint and `fleet.max_model_size` (`context`). Change any of them (add the
/// learner's key under `keys/models/`, say) and the model is checked again at the next start.
/// The newest `limit` refusals are kept.
struct RefusedFleetModels: Sendable {
    /// The file inside the data directory.
    static let fileName = "fleet-refused.json"
    /// At most this many refusals are kept (the newest).
    static let limit = 32
    /// Refusals that are not remembered: about the transport or the gateway, not the model.
    static let notRemembered: Set<String> = [FleetModelRefusal.shaMismatch, FleetModelRefusal.malformed, FleetModelRefusal.storeFailed]

    /// One remembered refusal.
    struct Entry: Codable, Sendable, Equatable {
        /// The model version (the manifest's, signed).
        var version: Int
        /// SHA-256 (hex) of the model, as the manifest announced it.
        var sha256: String
        /// Why it was refused (`edgeq_fleet_models_refused_total{reason}`).
        var reason: String
        /// What the gateway trusted then (`RefusedFleetModels.context`).
        var context: String
        /// When (Unix seconds).
        var time: Double
    }

    private struct File: Codable {
        var format = 1
        var refused: [Entry]
    }

    let url: URL
    /// What the gateway trusts now.
    let context: String
    private(set) var entries: [Entry]

    /// What a refusal depends on besides the model: SHA-256 over the mapping's fingerprint,
    /// `fleet.max_model_size` and every key trusted for models (name and public key).
    static func context(mapping: String, maxModelSize: Int, modelKeys: [TrustedKey]) -> String {
        var text = "mapping \(mapping)\nmax_model_size \(maxModelSize)\n"
        for k in modelKeys.sorted(by: { $0.name < $1.name }) {
            text += "key \(k.name) \(k.rawPublicKey.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined())\n"
        }
        return hexDigest(Array(text.utf8))
    }

    /// Reads `DATA/fleet-refused.json`; a missing file is no refusal, an unreadable one is
    /// logged and read as none (the models are then checked again, which is safe).
    init(dataDirectory: URL, context: String, logger: Logger) {
        url = dataDirectory.appendingPathComponent(Self.fileName)
        self.context = context
        guard let data = try? Data(contentsOf: url) else {
            entries = []
            return
        }
        do {
            entries = Array(try JSONDecoder().decode(File.self, from: data).refused.suffix(Self.limit))
        } catch {
            logger.warning("fleet: the file of refused models cannot be read; refused models are checked again",
                           metadata: ["fleet.refused_file": "\(url.path)", "error": "\(error)"])
            entries = []
        }
    }

    /// The refusal of this model under what the gateway trusts now, if it was refused.
    func refusal(version: Int, sha256: String) -> Entry? {
        entries.last { $0.version == version && $0.sha256 == sha256 && $0.context == context }
    }

    /// Remembers a refusal (unless its reason is not remembered) and writes the file durably.
    /// Returns whether it was remembered.
    ///
    /// - Throws: `DurableFile.Error` when the file cannot be written (the refusal then holds
    ///   until the gateway stops).
    @discardableResult
    mutating func remember(version: Int, sha256: String, reason: String) throws -> Bool {
        guard !Self.notRemembered.contains(reason), !sha256.isEmpty else { return false }
        entries.removeAll { $0.version == version && $0.sha256 == sha256 }
        entries.append(Entry(version: version, sha256: sha256, reason: reason, context: context,
                             time: (Date().timeIntervalSince1970 * 1000).rounded() / 1000))
        if entries.count > Self.limit { entries.removeFirst(entries.count - Self.limit) }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        try DurableFile.write(try e.encode(File(refused: entries)) + Data("\n".utf8), to: url)
        return true
    }
}
