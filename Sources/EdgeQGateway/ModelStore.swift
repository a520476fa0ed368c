import EdgeQCore
import Foundation

/// Versioned models in the data directory, with an atomically switched `current` pointer,
/// the history of what was served, for instant rollback, and the quarantine of versions
/// rolled back from.
///
/// Layout (`DATA/models/`):
/// ```
/// v1/model.safetensors        the model file (its checksum file beside it)
/// v1/report.json              the checks' figures and verdict
/// v1/quarantined              present when v1 was rolled back from: "<unix time> <reason>"
/// current                     "1\n": the served version (replaced atomically)
/// served.log                  one line per switch: "<unix time> <version> <reason>"
/// ```
/// Every change is crash-safe: a version folder is written under a temporary name and
/// renamed into place; `current` and a quarantine mark are written with temp file + fsync +
/// rename + fsync of the folder. After kill -9 at any point, `current` names a complete
/// version or is absent.
///
/// **Rollback walks back.** The rollback target is the newest version in the served history
/// that is neither the one rolled back from nor quarantined; rolling back quarantines the
/// version left, so v3 → v2 → v1 and then "nothing left", never v2 ↔ v1. A quarantined version
/// is never chosen automatically (rollback, the start-up fallback, promotion of the newest);
/// only an operator naming it serves it again (`promote(version)`, `rollBack(to:)` with that
/// version), which lifts the mark.
public final class ModelStore: @unchecked Sendable {
    // @unchecked Sendable: every method takes `lock` around all file-system work and
    // holds no other mutable state; the directory URL is immutable.

    /// The models folder.
    public let directory: URL
    private let lock = NSLock()

    /// Errors from the model store; each says what to do.
    public struct Error: Swift.Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// Opens (and creates) `DATA/models`.
    public init(dataDirectory: URL) throws {
        directory = dataDirectory.appendingPathComponent("models")
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw Error(description: "cannot create \(directory.path): \(error.localizedDescription) (check the data directory's permissions)")
        }
        // Leftovers of a crash while adding a version are incomplete by construction.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] where name.hasPrefix(".incoming-") {
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))
        }
    }

    /// The folder of `version`.
    public func folder(_ version: Int) -> URL { directory.appendingPathComponent("v\(version)") }
    /// The model file of `version`.
    public func modelURL(_ version: Int) -> URL { folder(version).appendingPathComponent("model.safetensors") }
    /// The check report of `version`.
    public func reportURL(_ version: Int) -> URL { folder(version).appendingPathComponent("report.json") }

    /// Every stored version, ascending.
    public func versions() -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.compactMap { $0.hasPrefix("v") ? Int($0.dropFirst()) : nil }.sorted()
    }

    /// The served version, or nil when none was ever promoted (or its folder is gone).
    public func current() -> Int? {
        lock.lock()
        defer { lock.unlock() }
        return readCurrent()
    }

    private func readCurrent() -> Int? {
        guard let text = try? String(contentsOf: directory.appendingPathComponent("current"), encoding: .utf8),
              let v = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)),
              FileManager.default.fileExists(atPath: folder(v).path) else { return nil }
        return v
    }

    /// Adds a new version from `files` (name in the version folder → source file), which
    /// are copied, plus `report`. Does not serve it. Returns the new version number.
    public func add(files: [String: URL], report: Data) throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        let version = (versions().last ?? 0) + 1
        let incoming = directory.appendingPathComponent(".incoming-v\(version)")
        do {
            try? FileManager.default.removeItem(at: incoming)
            try FileManager.default.createDirectory(at: incoming, withIntermediateDirectories: true)
            for (name, source) in files {
                try DurableFile.copy(source, to: incoming.appendingPathComponent(name))
            }
            try DurableFile.write(report, to: incoming.appendingPathComponent("report.json"))
            FaultInjection.point("store-before-rename")
            try DurableFile.rename(incoming, to: folder(version))
            FaultInjection.point("store-after-rename")
        } catch {
            try? FileManager.default.removeItem(at: incoming)
            throw Error(description: "cannot store model version \(version): \(error) (check free disk space)")
        }
        return version
    }

    /// Serves `version` from now on (atomic switch of `current`) and records why.
    public func setCurrent(_ version: Int, reason: String) throws {
        lock.lock()
        defer { lock.unlock() }
        try writeCurrent(version, reason: reason)
    }

    private func writeCurrent(_ version: Int, reason: String) throws {
        guard FileManager.default.fileExists(atPath: folder(version).path) else {
            throw Error(description: "model version \(version) does not exist; stored: \(versions().map(String.init).joined(separator: ", "))")
        }
        try DurableFile.write(Data("\(version)\n".utf8), to: directory.appendingPathComponent("current"),
                              beforeRename: { FaultInjection.point("current-before-rename") })
        FaultInjection.point("current-after-rename")
        let line = "\(Int(Date().timeIntervalSince1970)) \(version) \(reason.replacingOccurrences(of: "\n", with: " "))\n"
        // The history is best effort once `current` is switched (a full disk must not undo a
        // switch that happened); the throwing FileHandle calls, as the non-throwing `write`
        // traps on an I/O error.
        let log = directory.appendingPathComponent("served.log")
        if let handle = try? FileHandle(forWritingTo: log) {
            _ = try? handle.seekToEnd()
            try? handle.write(contentsOf: Data(line.utf8))
            try? handle.synchronize()
            try? handle.close()
        } else {
            try? DurableFile.write(Data(line.utf8), to: log)
        }
    }

    /// Removes the served pointer (the gateway then runs without a model, in shadow).
    public func clearCurrent(reason: String) throws {
        lock.lock()
        defer { lock.unlock() }
        try? FileManager.default.removeItem(at: directory.appendingPathComponent("current"))
        try DurableFile.syncDirectory(directory)
        _ = reason
    }

    /// The versions served so far, oldest first (from served.log), existing ones only.
    public func servedHistory() -> [Int] {
        lock.lock()
        defer { lock.unlock() }
        return readHistory()
    }

    private func readHistory() -> [Int] {
        let text = (try? String(contentsOf: directory.appendingPathComponent("served.log"), encoding: .utf8)) ?? ""
        let existing = Set(versions())
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, let v = Int(parts[1]), existing.contains(v) else { return nil }
            return v
        }
    }

    // MARK: - Quarantine and rollback

    /// Why a version is quarantined: it was rolled back from (by the live guard or an operator).
    public struct Quarantine: Sendable, Equatable {
        /// The version.
        public let version: Int
        /// When it was quarantined (Unix seconds).
        public let time: Double
        /// Why (e.g. "live guard: rolled back to version 2").
        public let reason: String
    }

    /// The quarantine mark of `version` (present while it is quarantined).
    public func quarantineURL(_ version: Int) -> URL { folder(version).appendingPathComponent("quarantined") }

    /// Whether `version` is quarantined (never served again automatically).
    public func isQuarantined(_ version: Int) -> Bool {
        FileManager.default.fileExists(atPath: quarantineURL(version).path)
    }

    /// The quarantined versions, ascending, with when and why.
    public func quarantined() -> [Quarantine] {
        versions().compactMap { v in
            guard let text = try? String(contentsOf: quarantineURL(v), encoding: .utf8) else { return nil }
            let parts = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ", maxSplits: 1)
            return Quarantine(version: v, time: parts.first.flatMap { Double($0) } ?? 0,
                              reason: parts.count > 1 ? String(parts[1]) : "")
        }
    }

    /// Quarantines `version`: it is never served again automatically (crash-safe mark in its
    /// folder, kept across restarts).
    ///
    /// - Throws: `ModelStore.Error` when the version does not exist or the mark cannot be
    ///   written (full or read-only disk).
    public func quarantine(_ version: Int, reason: String) throws {
        lock.lock()
        defer { lock.unlock() }
        try writeQuarantine(version, reason: reason)
    }

    private func writeQuarantine(_ version: Int, reason: String) throws {
        guard FileManager.default.fileExists(atPath: folder(version).path) else {
            throw Error(description: "model version \(version) does not exist; stored: \(versions().map(String.init).joined(separator: ", "))")
        }
        let line = "\(Int(Date().timeIntervalSince1970)) \(reason.replacingOccurrences(of: "\n", with: " "))\n"
        do {
            try DurableFile.write(Data(line.utf8), to: quarantineURL(version))
        } catch {
            throw Error(description: "cannot quarantine model version \(version): \(error) (check free disk space)")
        }
    }

    /// Lifts the quarantine of `version` (an operator chose to serve it again by name).
    ///
    /// - Throws: `ModelStore.Error` when the mark cannot be removed.
    public func liftQuarantine(_ version: Int) throws {
        lock.lock()
        defer { lock.unlock() }
        try removeQuarantine(version)
    }

    private func removeQuarantine(_ version: Int) throws {
        let mark = quarantineURL(version)
        guard FileManager.default.fileExists(atPath: mark.path) else { return }
        do {
            try FileManager.default.removeItem(at: mark)
            try DurableFile.syncDirectory(folder(version))
        } catch {
            throw Error(description: "cannot lift the quarantine of model version \(version): \(error)")
        }
    }

    /// Where a rollback from `from` may go, best first: the versions of the served history,
    /// newest first, without `from`, without quarantined ones, each once.
    public func rollbackTargets(from: Int?) -> [Int] {
        lock.lock()
        defer { lock.unlock() }
        return targets(from: from)
    }

    /// Where a rollback from the current version may go, best first (see `rollbackTargets(from:)`).
    public func rollbackTargets() -> [Int] {
        lock.lock()
        defer { lock.unlock() }
        return targets(from: readCurrent())
    }

    private func targets(from: Int?) -> [Int] {
        var seen = Set<Int>()
        var out: [Int] = []
        for v in readHistory().reversed() where v != from && !seen.contains(v) {
            seen.insert(v)
            if !isQuarantined(v) { out.append(v) }
        }
        return out
    }

    /// The rollback target: the newest earlier-served version that is not quarantined, or nil.
    public func rollbackTarget() -> Int? { rollbackTargets().first }

    /// Rolls back from `from` to `target`: quarantines `from` (when given and different), lifts
    /// a quarantine `target` may carry (it was named), then serves `target`. The mark is
    /// written before the switch: after a crash in between, `current` still names the
    /// quarantined version, and the start-up fallback moves on from it.
    ///
    /// - Throws: `ModelStore.Error` when `target` does not exist or a file cannot be written;
    ///   nothing is switched then (a written quarantine mark stays).
    public func rollBack(from: Int?, to target: Int, reason: String) throws {
        lock.lock()
        defer { lock.unlock() }
        guard FileManager.default.fileExists(atPath: folder(target).path) else {
            throw Error(description: "model version \(target) does not exist; stored: \(versions().map(String.init).joined(separator: ", "))")
        }
        if let from, from != target, FileManager.default.fileExists(atPath: folder(from).path) {
            try writeQuarantine(from, reason: "\(reason): rolled back to version \(target)")
        }
        try removeQuarantine(target)
        try writeCurrent(target, reason: reason)
    }

    /// Deletes the oldest versions so that at most `keep` remain; never the current one nor
    /// the rollback target. Quarantined versions go first (they are never served again
    /// automatically, so they are the least useful to keep), then the oldest others.
    public func prune(keep: Int) {
        lock.lock()
        defer { lock.unlock() }
        let current = readCurrent()
        let protected = Set([current, targets(from: current).first].compactMap { $0 })
        var all = versions()
        while all.count > max(keep, protected.count) {
            let candidates = all.filter { !protected.contains($0) }
            guard let victim = candidates.first(where: isQuarantined) ?? candidates.first else { break }
            try? FileManager.default.removeItem(at: folder(victim))
            all.removeAll { $0 == victim }
        }
    }
}
