#ifndef EDGEQ_PROCESS_H
#define EDGEQ_PROCESS_H

#include <spawn.h>

/// Limits glibc's malloc to n arenas (mallopt M_ARENA_MAX; each arena a thread touches costs
/// resident memory). Returns 1 when set, 0 when not (not glibc, or refused).
int edgeq_limit_malloc_arenas(int n);

/// Asks the kernel to reclaim the resident pages of the executable's read-only mappings
/// (code and constants; madvise MADV_PAGEOUT, Linux ≥ 5.4): what only start-up needed
/// leaves resident memory, what runs faults back in. Returns the bytes advised (0 when not
/// supported). Safe at any time: the pages are clean and file-backed.
long edgeq_release_startup_pages(void);

/// The bytes of heap in use, in every malloc arena (glibc mallinfo2: uordblks + hblkhd); -1
/// when the C library cannot tell. For measurements (what a piece of code keeps allocated).
long long edgeq_heap_in_use(void);

/// Adds to `actions` the closing, in the child, of every file descriptor from `lowfd` up (glibc
/// ≥ 2.34 posix_spawn_file_actions_addclosefrom_np, which Swift does not see: it needs
/// _GNU_SOURCE). Without it a child inherits every descriptor the parent opened without
/// O_CLOEXEC (sockets, SQLite files). Returns 0 when added, else an errno value (ENOSYS when
/// the C library has no such action).
int edgeq_spawn_close_from(posix_spawn_file_actions_t *actions, int lowfd);

#endif
