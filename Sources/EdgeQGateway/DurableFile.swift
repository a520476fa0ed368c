#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Crash-safe file replacement: write a temporary file in the same folder, fsync it,
/// rename it over the target, fsync the folder. After a crash at any point the target is
/// either the old content or the new content, never a mix (rename is atomic in POSIX).
enum DurableFile {
    /// Errors from a durable write, naming the file and the failing call.
    struct Error: Swift.Error, CustomStringConvertible {
        let description: String
    }

    /// Replaces `url`'s content with `data` atomically and durably.
    static func write(_ data: Data, to url: URL, beforeRename: () -> Void = {}) throws {
        let dir = url.deletingLastPathComponent()
        let temp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        let fd = open(temp.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw Error(description: "cannot create \(temp.path): \(String(cString: strerror(errno)))") }
        var ok = data.withUnsafeBytes { buf -> Bool in
            var off = 0
            while off < buf.count {
                let n = Glibc.write(fd, buf.baseAddress! + off, buf.count - off)
                if n <= 0 { return false }
                off += n
            }
            return true
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok else {
            unlink(temp.path)
            throw Error(description: "cannot write \(temp.path): \(String(cString: strerror(errno)))")
        }
        beforeRename()
        try rename(temp, to: url)
    }

    /// Renames `from` to `to` (same file system) and fsyncs the destination folder.
    static func rename(_ from: URL, to: URL) throws {
        guard Glibc.rename(from.path, to.path) == 0 else {
            throw Error(description: "cannot rename \(from.path) to \(to.path): \(String(cString: strerror(errno)))")
        }
        try syncDirectory(to.deletingLastPathComponent())
    }

    /// fsyncs a folder so that a rename or a new entry in it survives power loss.
    static func syncDirectory(_ dir: URL) throws {
        let fd = open(dir.path, O_RDONLY)
        guard fd >= 0 else { throw Error(description: "cannot open folder \(dir.path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw Error(description: "cannot fsync folder \(dir.path): \(String(cString: strerror(errno)))") }
    }

    /// Copies a file and fsyncs the copy.
    static func copy(_ from: URL, to: URL) throws {
        let data = try Data(contentsOf: from)
        try write(data, to: to)
    }
}
