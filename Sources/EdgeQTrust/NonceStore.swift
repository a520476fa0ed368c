#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Why the nonce file cannot be used (the gateway cannot promise replay protection without it).
public struct NonceStoreError: Error, Sendable, CustomStringConvertible {
    /// `FILE: what is wrong: what to do`.
    public let description: String
}

/// The nonces of accepted commands still inside the time window, remembered across restarts
/// in a small append-only file (`<data>/command-nonces`, one `<ts_ms> <nonce>` line each).
///
/// Cost: a lookup is a dictionary probe; recording appends one line and fsyncs it (a command
/// is rare and rate-limited; this runs on the control queue, never on the decision path).
/// The file is rewritten (temporary file, fsync, rename, fsync of the folder) when it holds
/// more than twice the live entries and at least 1,024 lines, and at load when it holds
/// expired entries or its last line is torn. Entries older than the window are dropped: a replay of them is refused as stale.
struct NonceStore {
    let url: URL
    let windowMs: Int64
    /// Nonce → its command's timestamp.
    private(set) var seen: [String: Int64] = [:]
    private var linesInFile = 0

    /// Loads `url` (missing: empty), dropping entries that left the window.
    init(url: URL, windowMs: Int64, nowMs: Int64) throws(NonceStoreError) {
        self.url = url
        self.windowMs = windowMs
        guard FileManager.default.fileExists(atPath: url.path) else { return }
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw NonceStoreError(description: "\(url.path): cannot read the file of used command nonces: check its permissions (without it a replayed command could be obeyed)")
        }
        var lines = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            lines += 1
            guard let text = String(bytes: line, encoding: .utf8) else { continue }
            let parts = text.split(separator: " ")
            guard parts.count == 2, let ts = Int64(parts[0]) else { continue }   // a torn line
            if nowMs - ts <= windowMs { seen[String(parts[1])] = max(seen[String(parts[1])] ?? ts, ts) }
        }
        linesInFile = lines
        // A torn last line (crash in mid-append) would glue the next entry onto it, and expired
        // lines are dead weight: rewrite (once per start at most).
        if data.last != UInt8(ascii: "\n") || lines != seen.count {
            try compact(nowMs: nowMs)
        }
    }

    /// Whether `nonce` was recorded and is still inside the window.
    func contains(_ nonce: String) -> Bool { seen[nonce] != nil }

    /// Records `nonce` durably (returns after fsync).
    mutating func record(_ nonce: String, timestampMs: Int64, nowMs: Int64) throws(NonceStoreError) {
        seen = seen.filter { nowMs - $0.value <= windowMs }
        seen[nonce] = timestampMs
        let fresh = !FileManager.default.fileExists(atPath: url.path)
        let fd = open(url.path, O_WRONLY | O_APPEND | O_CREAT, 0o600)
        guard fd >= 0 else { throw failure("cannot open") }
        let line = Array("\(timestampMs) \(nonce)\n".utf8)
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == line.count, synced else { throw failure("cannot append to") }
        if fresh { syncFolder() }
        linesInFile += 1
        if linesInFile >= 1024 && linesInFile > 2 * seen.count { try compact(nowMs: nowMs) }
    }

    /// Rewrites the file with the live entries only, crash-safely.
    private mutating func compact(nowMs: Int64) throws(NonceStoreError) {
        seen = seen.filter { nowMs - $0.value <= windowMs }
        let temp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        let text = seen.map { "\($0.value) \($0.key)\n" }.joined()
        let fd = open(temp.path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw failure("cannot create a temporary file beside") }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced, rename(temp.path, url.path) == 0 else {
            unlink(temp.path)
            throw failure("cannot rewrite")
        }
        syncFolder()
        linesInFile = seen.count
    }

    private func syncFolder() {
        let dir = open(url.deletingLastPathComponent().path, O_RDONLY)
        if dir >= 0 {
            _ = fsync(dir)
            close(dir)
        }
    }

    private func failure(_ what: String) -> NonceStoreError {
        NonceStoreError(description: "\(url.path): \(what) the file of used command nonces (\(String(cString: strerror(errno)))): check free disk space and the data directory's permissions")
    }
}
