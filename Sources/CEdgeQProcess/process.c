// Process-wide memory settings for `edgeq run` (EdgeQSystem.ProcessMemory is the only user),
// and one spawn action for EdgeQSystem.ChildProcess. In C because glibc's mallopt constants,
// /proc/self/maps parsing with sscanf and the _GNU_SOURCE spawn actions are simplest here;
// nothing in it is on the decision path.
#define _GNU_SOURCE 1
#include "edgeq_process.h"
// Any libc header first: __GLIBC__ comes from <features.h>, which they include. Without one,
// the checks below saw no glibc and the arena limit silently never applied.
#include <stdlib.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
int edgeq_limit_malloc_arenas(int n) {
#if defined(__GLIBC__)
    return mallopt(M_ARENA_MAX, n) == 1 ? 1 : 0;
#else
    (void)n;
    return 0;
#endif
}

#if defined(__linux__)
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
long edgeq_release_startup_pages(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 0;
    exe[n] = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return 0;
    char line[4096 + 256];
    long total = 0;
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char perms[8];
        int path_at = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &lo, &hi, perms, &path_at) < 3 || path_at == 0) continue;
        char *path = line + path_at;
        path[strcspn(path, "\n")] = 0;
        /* Only the executable's read-only (clean, file-backed) mappings: code and constants. */
        if (strcmp(path, exe) != 0 || perms[1] != '-') continue;
        if (madvise((void *)lo, hi - lo, MADV_PAGEOUT) == 0) total += (long)(hi - lo);
    }
    fclose(maps);
    return total;
}
#else
long edgeq_release_startup_pages(void) { return 0; }
#endif

#if defined(__linux__)
#include <malloc.h>   // defines __GLIBC__ (through features.h) on glibc
#endif
long long edgeq_heap_in_use(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 m = mallinfo2();
    return (long long)(m.uordblks + m.hblkhd);
#else
    return -1;
#endif
}

#include <errno.h>
int edgeq_spawn_close_from(posix_spawn_file_actions_t *actions, int lowfd) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    return posix_spawn_file_actions_addclosefrom_np(actions, lowfd);
#else
    (void)actions;
    (void)lowfd;
    return ENOSYS;
#endif
}
