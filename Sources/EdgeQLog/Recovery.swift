#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CSQLite
import Foundation

/// A damaged log that was moved aside and replaced by a fresh one (docs/log.md, "Damage").
public struct LogRecovery: Sendable, Equatable {
    /// Where the damaged file is now (`experience.sqlite.corrupt-<UTC time>`; its `-wal` and
    /// `-shm` files were moved beside it with the same name).
    public var movedTo: String
    /// What SQLite found (the first lines of `PRAGMA quick_check`, or its error).
    public var problem: String
    /// When it was moved, seconds since 1970.
    public var time: Double
}

/// What a bounded `PRAGMA quick_check` found.
public enum QuickCheckResult: Sendable, Equatable {
    /// SQLite found no problem.
    case ok
    /// The file is damaged: SQLite's first lines (at most 10) or its error.
    case damaged(String)
    /// The check did not finish within its time limit (a big file on a slow disk); nothing
    /// was found in the part checked.
    case unfinished(seconds: Double)
}

extension ExperienceLog {
    /// Runs `PRAGMA quick_check` on the file at `path`, stopped after `timeLimit` seconds
    /// (a progress handler interrupts SQLite every 10,000 virtual-machine steps once the time
    /// is spent). quick_check reads every page and checks the b-tree structure (not the index
    /// contents): about the cost of reading the file (docs/log.md, "Damage", has figures).
    ///
    /// - Returns: `.ok`, `.damaged` with SQLite's findings, or `.unfinished`.
    /// - Throws: `LogError` when the file cannot be opened for a reason other than damage
    ///   (permissions, a read-only folder) or SQLite fails otherwise (I/O error, busy).
    public static func quickCheck(path: String, timeLimit: Double) throws(LogError) -> QuickCheckResult {
        let db: SQLiteConnection
        do {
            db = try SQLiteConnection(path: path, create: false)
        } catch {
            if let c = error.code?.primary, c == .corrupt || c == .notADatabase { return .damaged(error.message) }
            throw error
        }
        let deadline = Deadline(nanos: monotonicNanos() &+ UInt64(max(0, timeLimit) * 1e9))
        sqlite3_progress_handler(db.handle, 10_000, { ctx in
            guard let ctx else { return 0 }
            return monotonicNanos() > Unmanaged<Deadline>.fromOpaque(ctx).takeUnretainedValue().nanos ? 1 : 0
        }, Unmanaged.passUnretained(deadline).toOpaque())
        defer { sqlite3_progress_handler(db.handle, 0, nil, nil) }
        return try withExtendedLifetime(deadline) { () -> Result<QuickCheckResult, LogError> in
            do throws(LogError) {
                let s = try db.prepare("PRAGMA quick_check(10)")
                var lines: [String] = []
                while try s.step() { lines.append(s.text(0)) }
                return .success(lines == ["ok"] ? .ok : .damaged(lines.joined(separator: "; ")))
            } catch {
                guard let c = error.code?.primary else { return .failure(error) }
                if c == .interrupt { return .success(.unfinished(seconds: timeLimit)) }
                if c == .corrupt || c == .notADatabase { return .success(.damaged(error.message)) }
                return .failure(error)
            }
        }.get()
    }

    /// Moves the file at `path` and its `-wal`/`-shm` files aside as
    /// `PATH.corrupt-<UTC time>` (+ `-wal`, `-shm`). No connection may be open on it.
    ///
    /// - Throws: `LogError` `.open` when a rename fails (the message says why).
    static func moveAside(path: String, problem: String) throws(LogError) -> LogRecovery {
        let now = Date()
        var t = time_t(now.timeIntervalSince1970.rounded(.down))
        var tmv = tm()
        gmtime_r(&t, &tmv)
        let stamp = String(format: "%04d%02d%02dT%02d%02d%02dZ", Int(tmv.tm_year) + 1900, Int(tmv.tm_mon) + 1, Int(tmv.tm_mday),
                           Int(tmv.tm_hour), Int(tmv.tm_min), Int(tmv.tm_sec))
        var target = "\(path).corrupt-\(stamp)"
        var n = 1
        while FileManager.default.fileExists(atPath: target) {
            n += 1
            target = "\(path).corrupt-\(stamp)-\(n)"
        }
        for suffix in ["-wal", "-shm", ""] where FileManager.default.fileExists(atPath: path + suffix) {
            if rename(path + suffix, target + suffix) != 0 {
                let reason = String(cString: strerror(errno))
                throw LogError(.open, path: path, message: "the log is damaged (\(problem)) and could not be moved aside to \(target + suffix): \(reason); move or delete it by hand")
            }
        }
        return LogRecovery(movedTo: target, problem: problem, time: now.timeIntervalSince1970)
    }
}

/// A deadline for the progress handler (passed as its context pointer).
final class Deadline: Sendable {
    let nanos: UInt64
    init(nanos: UInt64) { self.nanos = nanos }
}

func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Why the log's folder or file cannot be written, found by trying (root ignores permission
/// bits, so only a real attempt tells: a read-only mount, an immutable folder, a full disk).
enum WriteAccess {
    /// A sentence saying what is wrong and what to do, or nil when the folder takes a new file
    /// and the file (if it exists) opens for writing.
    static func problem(forFileAt path: String) -> String? {
        let folder = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            return "the data directory \(folder) does not exist: create it or give --data an existing directory"
        }
        let probe = "\(folder)/.edgeq-write-probe-\(getpid())"
        let fd = Glibc.open(probe, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        if fd >= 0 {
            close(fd)
            unlink(probe)
        } else {
            let e = errno
            return explain(e, what: "the data directory \(folder)", fix: "the directory")
        }
        if FileManager.default.fileExists(atPath: path) {
            let f = Glibc.open(path, O_WRONLY)
            if f >= 0 { close(f) } else { return explain(errno, what: "the log file \(path)", fix: "the file") }
        }
        return nil
    }

    static func explain(_ e: Int32, what: String, fix: String) -> String {
        switch e {
        case EROFS:
            return "\(what) is on a read-only file system: remount it read-write, or give --data a directory on a writable file system"
        case EACCES:
            return "\(what) is read-only for this user (uid \(getuid())): make \(fix) writable for the user edgeq runs as (chown/chmod), or give --data another directory"
        case EPERM:
            return "\(what) is read-only (immutable or append-only attribute, `lsattr`): clear it with `chattr -i`, or give --data another directory"
        case ENOSPC, EDQUOT:
            return "\(what) has no space left (or the quota is used up): free some space"
        default:
            return "\(what) cannot be written: \(String(cString: strerror(e)))"
        }
    }
}
