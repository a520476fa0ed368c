#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import EdgeQCore
import EdgeQTrust
import Foundation

/// Versioned models in the data directory, with an atomically switched `current` pointer,
/// the history of what was served, for instant rollback, and the quarantine of versions
/// rolled back from.
///
/// Layout (`DATA/models/`):
/// ```
/// v1/model.safetensors        the model file (its checksum file beside it)
/// v1/model.safetensors.sig    its signature (EdgeQTrust.ModelSignature): only a signed model is served
/// v1/report.json              the checks' figures and verdict
/// v1/quarantined              present when v1 was rolled back from: "<unix time> <reason>"
/// current                     "1\n": the served version (replaced atomically)
/// served.log                  one line per switch: "<unix time> <version> <reason>" (version
///                             "none" when a failed switch re-records that no model was served)
/// control-group               "<served version> <version|incumbent>\n": the control group of the
///                             guard for the version switched to last (`ControlGroupRecord`)
/// ```
/// Every change is crash-safe: a version folder is written under a temporary name and
/// renamed into place; `current` and a quarantine mark are written with temp file + fsync +
/// rename + fsync of the folder. After kill -9 at any point, `current` names a complete
/// version or is absent.
///
/// **The served history is the record, `current` the pointer.** Every switch appends its
/// line to served.log (fsynced) *before* it moves `current`, so the last line names the
/// version EdgeQ last chose to serve. The gateway starts from that record
/// (`servedRecords()`), never from a pointer it did not write: `current` rewritten by hand to
/// an older version is not served (docs/operations.md, "Anti-rollback").
///
/// **Only signed versions are stored.** `add` signs the bytes it stored (or verifies the
/// signature an imported model came with) inside its lock and writes the `.sig` into the
/// version folder before the folder is renamed into place.
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
        // Leftovers of a crash while adding a version are incomplete by construction. A folder
        // of a process still alive is its write in progress (a gateway storing a candidate while
        // `edgeq models` opens the same store): it is left alone.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] where name.hasPrefix(".incoming-") {
            if let pid = Self.writer(ofIncoming: name), Self.alive(pid) { continue }
            try? FileManager.default.removeItem(at: directory.appendingPathComponent(name))
        }
    }

    /// The process id in an incoming folder's name (`.incoming-v<version>-<pid>`); nil for the
    /// names of earlier releases (`.incoming-v<version>`).
    static func writer(ofIncoming name: String) -> pid_t? {
        let parts = name.split(separator: "-")
        guard parts.count == 3, let pid = pid_t(parts[2]), pid > 0 else { return nil }
        return pid
    }

    /// Whether process `pid` exists (this one included: another store of this process may be
    /// adding a version).
    static func alive(_ pid: pid_t) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }

    /// The folder of `version`.
    public func folder(_ version: Int) -> URL { directory.appendingPathComponent("v\(version)") }
    /// The model file of `version`.
    public func modelURL(_ version: Int) -> URL { folder(version).appendingPathComponent("model.safetensors") }
    /// The check report of `version`.
    public func reportURL(_ version: Int) -> URL { folder(version).appendingPathComponent("report.json") }
    /// The switchback trial's verdict of `version` (written when its trial ends; docs/operations.md, "The trial").
    public func trialURL(_ version: Int) -> URL { folder(version).appendingPathComponent("trial.json") }
    /// The exogenous baseline its trial adjusts with, and the report of its fit (written by the
    /// retraining that made it; docs/learning.md, "Adjusting for the weather").
    public func baselineURL(_ version: Int) -> URL { folder(version).appendingPathComponent("baseline.json") }
    /// What the control-group guard compared while `version` served (its window, written after
    /// every compared pair; docs/operations.md, "The control-group guard").
    public func guardURL(_ version: Int) -> URL { folder(version).appendingPathComponent("guard.json") }
    /// The switchback trial of `version` while it runs (its blocks so far, written after every
    /// block and removed at its verdict; docs/operations.md, "The trial and the guard").
    public func runningTrialURL(_ version: Int) -> URL { folder(version).appendingPathComponent("trial-running.json") }
    /// Marks `version` as a candidate owed a trial that has no block on record yet: waiting for
    /// the running trial to be decided (`began` false), or begun and no block ended (`began`
    /// true). Removed when its trial records its first block or ends, or when a newer waiting
    /// candidate replaces it; so a restart forgets no candidate (docs/operations.md, "A restart
    /// during a trial").
    public func pendingTrialURL(_ version: Int) -> URL { folder(version).appendingPathComponent("trial-pending.json") }

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
        guard let v = readPointer(), FileManager.default.fileExists(atPath: folder(v).path) else { return nil }
        return v
    }

    /// The version `current` names, whether or not its folder exists (nil: no readable file).
    public func pointer() -> Int? {
        lock.lock()
        defer { lock.unlock() }
        return readPointer()
    }

    private func readPointer() -> Int? {
        guard let text = try? String(contentsOf: directory.appendingPathComponent("current"), encoding: .utf8) else { return nil }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// The signature file of `version`: `v<N>/model.safetensors.sig`.
    public func signatureURL(_ version: Int) -> URL { ModelSignature.url(for: modelURL(version)) }

    /// Adds a new version from `files` (name in the version folder → source file; it must
    /// hold `model.safetensors`), which are copied, plus `report`. Does not serve it.
    ///
    /// The stored model's bytes are read back and handed to `signer` inside the store's lock;
    /// its signature is written as `model.safetensors.sig` (and a `model.safetensors.sha256`
    /// in `sha256sum` format when `files` has none) into the incoming folder before it is
    /// renamed into place, so a version is never visible without its signature.
    ///
    /// - Parameter signer: signs the version with the device key (`ModelSigner.device`), or
    ///   checks the signature a model came with (`ModelSigner.imported`, which also fixes the
    ///   version number).
    /// - Returns: the new version number: one above every version stored or ever served, or
    ///   the signed version of an imported model.
    /// - Throws: `ModelStore.Error` when `model.safetensors` is missing, an imported model's
    ///   signed version is not above every stored or served version, the signer refuses the
    ///   bytes, or a file cannot be written (nothing is stored then).
    public func add(files: [String: URL], report: Data, signer: ModelSigner) throws -> Int {
        lock.lock()
        defer { lock.unlock() }
        guard files["model.safetensors"] != nil else {
            throw Error(description: "no model.safetensors among the files to store (\(files.keys.sorted().joined(separator: ", ")))")
        }
        // Never reuse a number that was served (a pruned version's number stays taken in the
        // served history) or stored.
        let newest = max(versions().last ?? 0, readRecords().compactMap { $0 }.max() ?? 0)
        let version: Int
        if let fixed = signer.version {
            guard fixed > newest else {
                throw Error(description: "the model is signed as version \(fixed), but this store already has version \(newest): a version number is never reused or gone back to; ask its signer to sign it as version \(newest + 1) or later")
            }
            version = fixed
        } else {
            version = newest + 1
        }
        let incoming = directory.appendingPathComponent(".incoming-v\(version)-\(getpid())")
        do {
            try? FileManager.default.removeItem(at: incoming)
            try FileManager.default.createDirectory(at: incoming, withIntermediateDirectories: true)
            for (name, source) in files {
                try DurableFile.copy(source, to: incoming.appendingPathComponent(name))
            }
            let stored = incoming.appendingPathComponent("model.safetensors")
            let bytes = Array(try Data(contentsOf: stored))
            let signature: ModelSignature
            do {
                signature = try signer.sign(bytes, version)
            } catch {
                throw Error(description: "model version \(version) is not stored: \(error)")
            }
            try DurableFile.write(Data(signature.jsonText.utf8), to: ModelSignature.url(for: stored))
            if files["model.safetensors.sha256"] == nil {
                try DurableFile.write(Data("\(signature.sha256)  model.safetensors\n".utf8), to: incoming.appendingPathComponent("model.safetensors.sha256"))
            }
            try DurableFile.write(report, to: incoming.appendingPathComponent("report.json"))
            FaultInjection.point("store-before-rename")
            try DurableFile.rename(incoming, to: folder(version))
            FaultInjection.point("store-after-rename")
        } catch let e as Error {
            try? FileManager.default.removeItem(at: incoming)
            throw e
        } catch {
            try? FileManager.default.removeItem(at: incoming)
            throw Error(description: "cannot store model version \(version): \(error) (check free disk space)")
        }
        return version
    }

    /// Serves `version` from now on (atomic switch of `current`) and records why, and the
    /// control group the live guard compares it with (`recordedControlGroup(served:)`).
    ///
    /// - Parameter controlGroup: the controller before it, as the gateway's guard takes it; nil:
    ///   the version `current` named before this switch (when it is another one), else the
    ///   incumbent — what a promotion does.
    public func setCurrent(_ version: Int, reason: String, controlGroup: ControlGroupRecord? = nil) throws {
        lock.lock()
        defer { lock.unlock() }
        let group = controlGroup ?? readPointer().flatMap { $0 != version ? .version($0) : nil } ?? .incumbent
        try writeCurrent(version, reason: reason, controlGroup: group)
    }

    /// Who the live guard compares a served version with: the controller before it.
    public enum ControlGroupRecord: Sendable, Equatable, CustomStringConvertible {
        /// The plant's own controller (the model's switch came with no model before it, or was
        /// a rollback).
        case incumbent
        /// A stored model version.
        case version(Int)

        /// `version` N, or the incumbent for nil.
        public init(_ version: Int?) { self = version.map { .version($0) } ?? .incumbent }

        /// Parses `description` ("incumbent" or "v<N>"); nil for anything else.
        public init?(name: String) {
            if name == "incumbent" {
                self = .incumbent
            } else if name.hasPrefix("v"), let v = Int(name.dropFirst()) {
                self = .version(v)
            } else {
                return nil
            }
        }

        /// The model version, nil for the incumbent.
        public var version: Int? {
            if case .version(let v) = self { return v }
            return nil
        }

        /// "incumbent" or "v<N>".
        public var description: String {
            switch self {
            case .incumbent: "incumbent"
            case .version(let v): "v\(v)"
            }
        }
    }

    /// The control group recorded with the last switch, when that switch was to `served`; nil
    /// when none is recorded for it (a store of an earlier release, a switch whose record could
    /// not be written, or a last switch to another version).
    public func recordedControlGroup(served: Int) -> ControlGroupRecord? {
        lock.lock()
        defer { lock.unlock() }
        return readControlGroup().flatMap { $0.served == served ? $0.group : nil }
    }

    private func readControlGroup() -> (served: Int, group: ControlGroupRecord)? {
        guard let text = try? String(contentsOf: directory.appendingPathComponent("control-group"), encoding: .utf8) else { return nil }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard parts.count == 2, let served = Int(parts[0]) else { return nil }
        guard let group = ControlGroupRecord(name: String(parts[1])), group.version != served else { return nil }
        return (served, group)
    }

    private func writeCurrent(_ version: Int, reason: String, controlGroup: ControlGroupRecord) throws {
        guard FileManager.default.fileExists(atPath: folder(version).path) else {
            throw Error(description: "model version \(version) does not exist; stored: \(versions().map(String.init).joined(separator: ", "))")
        }
        // The control group first, naming the version it belongs to: a switch that fails after
        // it leaves a record of another version than the served one, which is not used. Best
        // effort: without it a restart compares with the incumbent (what it did before the
        // record existed), so a full disk does not stop a rollback; a record that cannot be
        // replaced is removed rather than left naming an older switch of the same version.
        let groupURL = directory.appendingPathComponent("control-group")
        do {
            try DurableFile.write(Data("\(version) \(controlGroup)\n".utf8), to: groupURL)
        } catch {
            try? FileManager.default.removeItem(at: groupURL)
        }
        // The record first (fsynced), then the pointer: after a crash in between, the record
        // names the version being switched to and the next start completes the switch; a
        // pointer never names a version the record does not (that is what the start-up
        // anti-rollback check relies on).
        let previous = readPointer()
        try appendRecord(String(version), reason: reason)
        do {
            try DurableFile.write(Data("\(version)\n".utf8), to: directory.appendingPathComponent("current"),
                                  beforeRename: { FaultInjection.point("current-before-rename") })
        } catch {
            // The switch did not happen: say so in the record (best effort; a start that
            // finds the record ahead of the pointer completes the switch instead).
            try? appendRecord(previous.map(String.init) ?? "none", reason: "switch to version \(version) failed: \(error)")
            throw Error(description: "cannot switch to model version \(version): \(error) (check free disk space)")
        }
        FaultInjection.point("current-after-rename")
    }

    /// Appends one line to served.log and fsyncs it. A torn last line (a crash in mid-append,
    /// which the reader ignores) is cut off first, so that it cannot run into the new one.
    private func appendRecord(_ version: String, reason: String) throws {
        let url = directory.appendingPathComponent("served.log")
        let line = "\(Int(Date().timeIntervalSince1970)) \(version) \(reason.replacingOccurrences(of: "\n", with: " "))\n"
        let fresh = !FileManager.default.fileExists(atPath: url.path)
        let fd = open(url.path, O_RDWR | O_APPEND | O_CREAT, 0o644)
        guard fd >= 0 else { throw Error(description: "cannot open \(url.path): \(String(cString: strerror(errno))) (check the data directory's permissions)") }
        defer { close(fd) }
        let bytes = Array(line.utf8)
        let size = lseek(fd, 0, SEEK_END)
        if size > 0 {
            var last: UInt8 = 0
            if pread(fd, &last, 1, size - 1) == 1, last != UInt8(ascii: "\n") {
                let whole = FileManager.default.contents(atPath: url.path) ?? Data()
                let keep = whole.lastIndex(of: UInt8(ascii: "\n")).map { whole.distance(from: whole.startIndex, to: $0) + 1 } ?? 0
                guard ftruncate(fd, off_t(keep)) == 0 else {
                    throw Error(description: "cannot repair \(url.path): \(String(cString: strerror(errno))) (check the data directory's permissions)")
                }
            }
        }
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(fd) == 0 else {
            throw Error(description: "cannot record the switch in \(url.path): \(String(cString: strerror(errno))) (check free disk space)")
        }
        if fresh { try DurableFile.syncDirectory(directory) }
    }

    /// The served history as recorded, oldest first: the version of each complete line of
    /// served.log (nil for a "none" line), whether or not its folder still exists. The last
    /// entry is the version EdgeQ last chose to serve.
    public func servedRecords() -> [Int?] {
        lock.lock()
        defer { lock.unlock() }
        return readRecords()
    }

    private func readRecords() -> [Int?] {
        guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent("served.log").path) else { return [] }
        var lines = data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        lines.removeLast()   // the part after the last newline: empty, or a torn line
        return lines.compactMap { line -> Int?? in
            let parts = line.split(separator: UInt8(ascii: " "), maxSplits: 2)
            guard parts.count >= 2, let field = String(bytes: parts[1], encoding: .utf8) else { return nil }
            if field == "none" { return .some(nil) }
            guard let v = Int(field) else { return nil }
            return .some(v)
        }
    }

    /// Removes the served pointer (the gateway then runs without a model, in shadow).
    public func clearCurrent(reason: String) throws {
        lock.lock()
        defer { lock.unlock() }
        try appendRecord("none", reason: reason)
        try? FileManager.default.removeItem(at: directory.appendingPathComponent("current"))
        try DurableFile.syncDirectory(directory)
    }

    /// The versions served so far, oldest first (from served.log), existing ones only.
    public func servedHistory() -> [Int] {
        lock.lock()
        defer { lock.unlock() }
        return readHistory()
    }

    private func readHistory() -> [Int] {
        let existing = Set(versions())
        return readRecords().compactMap { v in v.flatMap { existing.contains($0) ? $0 : nil } }
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
        // After a rollback the guard compares with the incumbent: the version rolled back from
        // is quarantined, and the one before it is not known to be better than the plant's own.
        try writeCurrent(target, reason: reason, controlGroup: .incumbent)
    }

    /// Deletes the oldest versions so that at most `keep` remain; never the current one, the
    /// rollback target, the served version's control group, nor a candidate owed a trial (its
    /// `trial-running.json` or `trial-pending.json`: the running trial's and the one waiting for
    /// it). Quarantined versions go first (they are never served again automatically, so they
    /// are the least useful to keep), then the oldest others.
    public func prune(keep: Int) {
        lock.lock()
        defer { lock.unlock() }
        let current = readCurrent()
        // Also the served version's control group: the guard needs it after a restart.
        let group: Int? = current.flatMap { c in
            readControlGroup().flatMap { r in
                guard r.served == c, case .version(let v) = r.group else { return nil }
                return v
            }
        }
        var all = versions()
        // A candidate in (or waiting for) its trial: deleting it would end the trial unseen.
        let owedATrial = all.filter { v in
            [runningTrialURL(v), pendingTrialURL(v)].contains { FileManager.default.fileExists(atPath: $0.path) }
        }
        let protected = Set([current, targets(from: current).first, group].compactMap { $0 } + owedATrial)
        while all.count > max(keep, protected.count) {
            let candidates = all.filter { !protected.contains($0) }
            guard let victim = candidates.first(where: isQuarantined) ?? candidates.first else { break }
            try? FileManager.default.removeItem(at: folder(victim))
            all.removeAll { $0 == victim }
        }
    }
}
