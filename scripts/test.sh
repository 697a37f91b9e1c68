#!/usr/bin/env bash
# The whole test suite: every test under AddressSanitizer + UndefinedBehaviorSanitizer, every test again
# under ThreadSanitizer (the guard's concurrency tests, and the mock provider's thread, the HTTP and Redis
# clients' strands), a clang 14 build of every target with warnings as errors (g++ 12 and clang 14 must
# both build the project), and a short smoke run of every libFuzzer target (scripts/fuzz.sh 5: it builds
# only the parsers and the targets, then runs each target 5 s). Installs and builds what it needs first.
# .ci/run calls exactly this script.
#
# Order, for a 2-core CI machine: the test runs mostly wait on sockets, timers and child processes, the
# builds keep both cores busy, so each test run goes in the background while the next build compiles:
#   build asan -> test asan  | build tsan
#              -> test tsan  | build clang -Werror, fuzz build + smoke
# The two test runs never overlap each other. A test run's output is printed, in one piece, when it is
# waited for. Every phase prints its wall time and the CPU time (user + sys) of what it ran.
set -euo pipefail
cd "$(dirname "$0")/.."

TIMEFORMAT='   %R s wall, %U s user + %S s sys'
started=$SECONDS

time scripts/setup.sh

# Compiler caching keyed on paths relative to the checkout, so that another clone (CI's) reuses the objects.
export CCACHE_BASEDIR="$PWD"

jobs=$(nproc 2>/dev/null || echo 2)

logdir=$(mktemp -d)
declare -A bg_pid=()
cleanup() {
  # A failed phase stops any test run still in the background, with everything it started (its own group).
  local pid
  for pid in "${bg_pid[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
  rm -rf "$logdir"
}
trap cleanup EXIT

# bg_start NAME CMD...: runs CMD in the background, in its own process group, timed, output to $logdir/NAME.
bg_start() {
  local name=$1
  shift
  # shellcheck disable=SC2016  # $1 and $@ belong to the inner bash
  setsid bash -c 'TIMEFORMAT=$1; shift; time "$@"' bash "$TIMEFORMAT" "$@" >"$logdir/$name" 2>&1 &
  bg_pid[$name]=$!
}
# bg_wait NAME: waits for it, prints its output, returns its exit status.
bg_wait() {
  local name=$1 rc=0
  wait "${bg_pid[$name]}" || rc=$?
  unset "bg_pid[$name]"
  echo "== result: $name"
  cat "$logdir/$name"
  return "$rc"
}

# High-entropy ASLR breaks TSan's memory layout on some kernels; setarch -R turns ASLR off for the run.
tsan_run=()
if setarch "$(uname -m)" -R true 2>/dev/null; then tsan_run=(setarch "$(uname -m)" -R); fi

echo "== configure (asan, tsan, clang-werror)"
for preset in asan tsan clang-werror; do cmake --preset "$preset" >/dev/null; done

echo "== build (g++ 12, asan+ubsan)"
time cmake --build --preset asan -j "$jobs"

echo "== test (asan+ubsan): in the background, output below when done"
bg_start "test-asan" ctest --preset asan -j "$jobs"

echo "== build (g++ 12, tsan)"
time cmake --build --preset tsan -j "$jobs"

bg_wait "test-asan"

echo "== test (tsan): in the background, output below when done"
bg_start "test-tsan" "${tsan_run[@]}" ctest --preset tsan -j "$jobs"

echo "== build (clang 14, -Werror, no debug info)"
time cmake --build --preset clang-werror -j "$jobs"

echo "== fuzz smoke (clang 14, libFuzzer + asan + ubsan, 5 s per target)"
time scripts/fuzz.sh 5

bg_wait "test-tsan"

# ctest exits non-zero on any failure (bg_wait returns it, set -e stops above); sum what ran for one closing line.
passed=$(cat "$logdir"/test-* | grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' || true)
failed=$(cat "$logdir"/test-* | grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(Failed|Exception|Timeout)' || true)
echo "test binaries: $passed passed, $failed failed; $((SECONDS - started)) s in all"
