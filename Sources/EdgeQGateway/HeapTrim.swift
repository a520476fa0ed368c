#if canImport(Glibc)
import Glibc
#endif
import EdgeQCore
import Foundation
import Logging
import Synchronization

/// Gives freed heap memory back to the kernel after a burst of messages or a retraining.
///
/// glibc's malloc keeps what a burst or a retraining freed inside its arenas (only the top of
/// a heap is returned by itself), so the resident set stayed at the burst's high-water mark
/// for good. `malloc_trim(0)` returns every whole free page of every arena. It runs on the
/// control queue, never on the decision path: after a retraining ends, and once a window of
/// `HeapTrim.window` seconds is quiet again after a window that received more than
/// `HeapTrim.burstMessages` messages. A trim holds an arena's lock while it walks it (well
/// under a millisecond on the gateway's heap), so it is not run on a timer in quiet times.
struct HeapTrim {
    /// Seconds per window of the burst detector.
    static let window: Double = 10
    /// Messages per window above which a window counts as a burst (500 messages/s: far above a
    /// plant's own rate). It was 20,000 (2,000/s): a flood that a busy machine let the gateway
    /// take at only 1,200–2,000 messages a second never made a burst, so it was never trimmed
    /// after it (docs/operations.md, "Memory").
    static let burstMessages: UInt64 = 5_000

    private var lastReceived: UInt64 = 0
    private var burstSeen = false

    /// Called once per window with the MQTT client's `received` counter; true when a trim is due
    /// (the previous window was a burst and this one is not).
    mutating func windowEnded(received: UInt64) -> Bool {
        let delta = received &- lastReceived
        lastReceived = received
        if delta > Self.burstMessages {
            burstSeen = true
            return false
        }
        defer { burstSeen = false }
        return burstSeen
    }

    /// glibc's `malloc_trim`, looked up at run time (malloc.h is not part of Swift's Glibc module).
    private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
#if canImport(Glibc)
        guard let symbol = dlsym(nil, "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
#else
        return nil
#endif
    }()

    /// The resident set size in bytes (`/proc/self/statm`), nil where unreadable.
    static func residentBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Hands the executable's read-only pages (code and constants) back to the kernel, as
    /// `edgeq run` does after start-up: what only the burst or the retraining ran (their code,
    /// BLAS) leaves the resident set; what the decision path runs faults back in at its next
    /// ticks. The pages are clean and file-backed, so nothing is lost. Linux ≥ 5.4
    /// (`MADV_PAGEOUT`); elsewhere nothing happens.
    static func releaseCodePages() {
#if canImport(Glibc)
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"),
              let maps = ProcFile.read("/proc/self/maps") else { return }   // whole: Foundation stops at 4 KB
        let pageout: Int32 = 21  // MADV_PAGEOUT
        for line in maps.split(separator: "\n") where line.hasSuffix(exe) {
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count == 6, fields[1].utf8.count >= 2, fields[1].utf8.dropFirst().first == UInt8(ascii: "-"),
                  fields[5].trimmingCharacters(in: .whitespaces) == exe else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let lo = UInt(range[0], radix: 16), let hi = UInt(range[1], radix: 16), hi > lo,
                  let start = UnsafeMutableRawPointer(bitPattern: lo) else { continue }
            _ = madvise(start, Int(hi - lo), pageout)
        }
#endif
    }

    /// Trims the heap (and, when `codePages`, releases the executable's read-only pages) and
    /// logs what it gave back (info).
    static func trim(after reason: String, codePages: Bool, logger: Logger) {
        guard let mallocTrim else { return }
        let before = residentBytes()
        let start = DispatchTime.now().uptimeNanoseconds
        _ = mallocTrim(0)
        if codePages { releaseCodePages() }
        let micros = (DispatchTime.now().uptimeNanoseconds - start) / 1000
        let after = residentBytes()
        let mb = { (b: Int?) -> String in b.map { String(format: "%.1f", Double($0) / 1_048_576) } ?? "?" }
        logger.info("heap trimmed after \(reason)", metadata: [
            "memory.rss_before_mb": "\(mb(before))", "memory.rss_after_mb": "\(mb(after))", "memory.trim_us": "\(micros)",
        ])
    }
}
