#!/usr/bin/env bash
# The whole test suite: every test under AddressSanitizer + UndefinedBehaviorSanitizer, every test again
# under ThreadSanitizer (the guard's concurrency tests, and the mock provider's thread, the HTTP and Redis
# clients' strands), a clang 14 build of every target with warnings as errors (g++ 12 and clang 14 must
# both build the project), and a short smoke run of every libFuzzer target (scripts/fuzz.sh 5: it builds
# only the parsers and the targets, then runs each target 5 s). The asan tests include the consumer tests
# (test/cmake_test: install, then find_package and add_subdirectory consumers). Installs and builds what it
# needs first. .ci/run calls exactly this script. Every phase prints its wall time and the CPU time (user + sys)
# of what it ran, to show where CI's time goes.
#
# The test runs do not overlap the builds: some end-to-end tests wait on 20 ms timers and fail when a
# build shares the 2 cores (e2e_test.cpp's the_reject_policy_leaves_no_refunded_credits_unused failed 6
# runs of 8 next to two busy loops, 2 of 32 even with the busy loops at nice 19, 0 of 48 without).
set -euo pipefail
cd "$(dirname "$0")/.."

TIMEFORMAT='   %R s wall, %U s user + %S s sys'
started=$SECONDS

time scripts/setup.sh

# Compiler caching keyed on paths relative to the checkout, so that another clone (CI's) reuses the objects.
export CCACHE_BASEDIR="$PWD"

jobs=$(nproc 2>/dev/null || echo 2)

echo "== build (g++ 12, asan+ubsan)"
cmake --preset asan >/dev/null
time cmake --build --preset asan -j "$jobs"

echo "== build (g++ 12, tsan)"
cmake --preset tsan >/dev/null
time cmake --build --preset tsan -j "$jobs"

echo "== build (clang 14, -Werror, no debug info)"
cmake --preset clang-werror >/dev/null
time cmake --build --preset clang-werror -j "$jobs"

echo "== fuzz smoke (clang 14, libFuzzer + asan + ubsan, 5 s per target)"
time scripts/fuzz.sh 5

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== test (asan+ubsan)"
time ctest --preset asan -j "$jobs" | tee -a "$log"

echo "== test (tsan)"
# High-entropy ASLR breaks TSan's memory layout on some kernels; setarch -R turns ASLR off for the run.
tsan_run=()
if setarch "$(uname -m)" -R true 2>/dev/null; then tsan_run=(setarch "$(uname -m)" -R); fi
time "${tsan_run[@]}" ctest --preset tsan -j "$jobs" | tee -a "$log"

# ctest exits non-zero on any failure (set -e stops above); sum what ran for one closing line.
passed=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' "$log" || true)
failed=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(Failed|Exception|Timeout)' "$log" || true)
echo "test binaries: $passed passed, $failed failed; $((SECONDS - started)) s in all"
