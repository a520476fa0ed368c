import EdgeQTestSupport
import Testing

/// `edgeq run` limits glibc's malloc arenas at start (docs/operations.md, "Memory"). The C
/// shim once checked for glibc before including any libc header, so it never saw glibc and the
/// limit silently never applied; this is the check that it does.
@Suite struct ProcessMemoryTests {
    @Test func theMallocArenaLimitTakesEffectOnGlibc() {
        // 8 is glibc's own default per core on 64-bit systems' small machines: harmless to set
        // in the test process.
        #expect(ProcessMemory.limitMallocArenas(8), "mallopt(M_ARENA_MAX) was not applied")
        #expect(ProcessMemory.heapInUse() != nil, "glibc's mallinfo2 did not answer")
    }
}
