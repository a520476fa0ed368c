#!/usr/bin/env bash
# The test half of `make test` (after `swift build --build-tests`): runs the whole suite and, when
# it fails, prints every issue it recorded once more at the very end — a CI log keeps only its
# tail, and a failing expectation's message is otherwise lost among a thousand passing lines.
# The full log of a failed run is kept (its path is printed).
set -uo pipefail
SWIFT=${SWIFT:-swift}
# OpenBLAS's AVX2 kernels wherever the CPU has AVX2 (the Makefile says why).
if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=Haswell; fi
log=$(mktemp "${TMPDIR:-/tmp}/edgeq-test.XXXXXX")
"$SWIFT" test --skip-build 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
    echo
    echo "==== the suite failed (exit $rc); what it recorded, once more (full log: $log) ===="
    # An issue's line and its comment's lines (↳); a crash prints no ✘ line, only its own.
    awk '/^✘ Test .*recorded an issue/ { p = 1; print; next }
         p && /^↳/ { print; next }
         { p = 0 }
         /Fatal error|signal code|^error: / { print }' "$log" | head -200
    grep -E '^✘ Test .*failed after|^✘ Test run with' "$log" | tail -40
else
    rm -f "$log"
fi
exit "$rc"
