import Foundation

/// Versioned models in the data directory, with an atomically switched `current` pointer
/// and the history of what was served, for instant rollback.
///
/// Layout (`DATA/models/`):
/// ```
/// v1/model.safetensors        the model file (its checksum file beside it)
/// v1/report.json              the checks' figures and verdict
/// current                     "1\n": the served version (replaced atomically)
/// served.log                  one line per switch: "<unix time> <version> <reason>"
/// ```
/// Every change is crash-safe: a version folder is written under a temporary name and
/// renamed into place; `current` is replaced with temp file + fsync + rename + fsync of the
/// folder. After kill -9 at any point, `current` names a complete version or is absent.
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
        guard FileManager.default.fileExists(atPath: folder(version).path) else {
            throw Error(description: "model version \(version) does not exist; stored: \(versions().map(String.init).joined(separator: ", "))")
        }
        try DurableFile.write(Data("\(version)\n".utf8), to: directory.appendingPathComponent("current"),
                              beforeRename: { FaultInjection.point("current-before-rename") })
        FaultInjection.point("current-after-rename")
        let line = "\(Int(Date().timeIntervalSince1970)) \(version) \(reason.replacingOccurrences(of: "\n", with: " "))\n"
        let log = directory.appendingPathComponent("served.log")
        if let handle = try? FileHandle(forWritingTo: log) {
            handle.seekToEndOfFile()
            handle.write(Data(line.utf8))
            try? handle.synchronize()
            try? handle.close()
        } else {
            try DurableFile.write(Data(line.utf8), to: log)
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
        let text = (try? String(contentsOf: directory.appendingPathComponent("served.log"), encoding: .utf8)) ?? ""
        let existing = Set(versions())
        return text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, let v = Int(parts[1]), existing.contains(v) else { return nil }
            return v
        }
    }

    /// The version served before the current one (the rollback target), or nil.
    public func previous() -> Int? {
        let cur = current()
        var history = servedHistory()
        while let last = history.last, last == cur { history.removeLast() }
        return history.last
    }

    /// Deletes the oldest versions so that at most `keep` remain; never the current one
    /// nor the rollback target.
    public func prune(keep: Int) {
        let protected = Set([current(), previous()].compactMap { $0 })
        lock.lock()
        defer { lock.unlock() }
        var all = versions()
        while all.count > max(keep, protected.count) {
            guard let victim = all.first(where: { !protected.contains($0) }) else { break }
            try? FileManager.default.removeItem(at: folder(victim))
            all.removeAll { $0 == victim }
        }
    }
}
