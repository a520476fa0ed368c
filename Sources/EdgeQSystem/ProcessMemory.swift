import CEdgeQProcess

/// Process-wide memory settings of `edgeq run` (docs/operations.md, "Memory").
public enum ProcessMemory {
    /// Limits glibc's malloc to `count` arenas (each arena a thread touches costs resident
    /// memory). Returns false when the setting was refused or the C library is not glibc.
    @discardableResult
    public static func limitMallocArenas(_ count: Int) -> Bool {
        edgeq_limit_malloc_arenas(Int32(clamping: count)) == 1
    }

    /// Asks the kernel to reclaim the resident pages of the executable's read-only mappings
    /// (code and constants that only start-up needed; `MADV_PAGEOUT`, Linux ≥ 5.4). Safe at
    /// any time: the pages are clean and file-backed and fault back in when used.
    /// Returns the bytes advised (0 when not supported).
    @discardableResult
    public static func releaseStartupPages() -> Int {
        Int(edgeq_release_startup_pages())
    }

    /// The bytes of heap in use in every malloc arena (glibc `mallinfo2`: in-use chunks plus
    /// mmapped blocks), or nil when the C library cannot tell. For measurements: the growth
    /// across code whose results are kept is what they took.
    public static func heapInUse() -> Int? {
        let v = edgeq_heap_in_use()
        return v < 0 ? nil : Int(v)
    }
}
