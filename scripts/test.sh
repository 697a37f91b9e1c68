#!/usr/bin/env bash
# The whole test suite: every test under AddressSanitizer + UndefinedBehaviorSanitizer, every test again
# under ThreadSanitizer (the guard's concurrency tests, and the mock provider's thread, the HTTP and Redis
# clients' strands), a clang 14 build of everything with warnings as errors (g++ 12 and clang 14 must
# both build the project), and a short smoke run of every libFuzzer target (scripts/fuzz.sh 5: it builds
# only the parsers and the targets, about half a minute, then runs each target 5 s). The asan tests include
# the consumer tests (test/cmake_test: install, then find_package and add_subdirectory consumers; ~15 s with a
# warm ccache). Installs and builds what it needs first.
# .ci/run calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# Compiler caching keyed on paths relative to the checkout, so that another clone (CI's) reuses the objects.
export CCACHE_BASEDIR="$PWD"

jobs=$(nproc 2>/dev/null || echo 2)

echo "== build (g++ 12, asan+ubsan)"
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$jobs"

echo "== build (g++ 12, tsan)"
cmake --preset tsan >/dev/null
cmake --build --preset tsan -j "$jobs"

echo "== build (clang 14, -Werror)"
cmake --preset clang -DCREDITGUARD_WERROR=ON >/dev/null
cmake --build --preset clang -j "$jobs"

echo "== fuzz smoke (clang 14, libFuzzer + asan + ubsan, 5 s per target)"
scripts/fuzz.sh 5

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== test (asan+ubsan)"
ctest --preset asan -j "$jobs" | tee -a "$log"

echo "== test (tsan)"
# High-entropy ASLR breaks TSan's memory layout on some kernels; setarch -R turns ASLR off for the run.
if setarch "$(uname -m)" -R true 2>/dev/null; then
  setarch "$(uname -m)" -R ctest --preset tsan -j "$jobs" | tee -a "$log"
else
  ctest --preset tsan -j "$jobs" | tee -a "$log"
fi

# ctest exits non-zero on any failure (set -e stops above); sum what ran for one closing line.
passed=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' "$log" || true)
failed=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(Failed|Exception|Timeout)' "$log" || true)
echo "test binaries: $passed passed, $failed failed"
