#!/usr/bin/env bash
# The whole test suite: every test under AddressSanitizer + UndefinedBehaviorSanitizer, then the
# concurrency tests again under ThreadSanitizer. Installs and builds what it needs first.
# .ci/run calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

jobs=$(nproc 2>/dev/null || echo 2)

echo "== build (asan+ubsan)"
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$jobs"

echo "== test (asan+ubsan)"
ctest --preset asan -j "$jobs"

echo "== build (tsan, concurrency tests)"
cmake --preset tsan >/dev/null
cmake --build --preset tsan -j "$jobs"

echo "== test (tsan, concurrency tests)"
# ASLR with high entropy breaks TSan's memory layout on some kernels; setarch turns it off.
if setarch "$(uname -m)" -R true 2>/dev/null; then
  setarch "$(uname -m)" -R ctest --preset tsan -j "$jobs"
else
  ctest --preset tsan -j "$jobs"
fi
