#if canImport(Glibc)
import Glibc
#endif

/// Reading a file of the kernel's pseudo file systems (/proc, /sys) whole.
///
/// Such a file has size 0 to `stat`, and Foundation's `String(contentsOfFile:)` then reads only
/// its first page: /proc/PID/maps of a Swift process or /proc/net/tcp on a busy host come back
/// cut at 4 KB. This reads with read(2) until the end.
public enum ProcFile {
    /// The whole text of the file at `path`, or nil when it cannot be opened.
    public static func read(_ path: String) -> String? {
#if canImport(Glibc)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
#else
        return nil
#endif
    }
}
