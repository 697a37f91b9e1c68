#!/usr/bin/env bash
# Builds the libFuzzer targets (the `fuzz` preset: clang 14, ASan + UBSan) and runs each one for SECONDS
# (default 60) on a copy of its seed corpus (test/fuzz/corpus/NAME/, dictionary test/fuzz/dict/NAME.dict).
# New inputs go to build-fuzz/fuzz-run/, never into the repository. Prints each target's executions and a
# total; exits non-zero if a target found a crash, a sanitizer report, a leak, a timeout or a broken
# invariant, and keeps that input under build-fuzz/fuzz-artifacts/NAME/.
#
#   scripts/fuzz.sh [SECONDS] [NAME...]      e.g. scripts/fuzz.sh 5; scripts/fuzz.sh 300 resp url
#
# Reproduce a finding: build-fuzz/bin/fuzz_NAME build-fuzz/fuzz-artifacts/NAME/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
[ $# -gt 0 ] && shift
case $seconds in
'' | *[!0-9]* | 0)
    echo "usage: scripts/fuzz.sh [SECONDS per target, default 60] [NAME...]" >&2
    exit 2
    ;;
esac

scripts/setup.sh

# As in test.sh: compiler caching keyed on paths relative to the checkout, so other clones reuse the objects.
export CCACHE_BASEDIR="$PWD"

jobs=$(nproc 2>/dev/null || echo 2)
echo "== build (clang 14, libFuzzer + asan + ubsan)"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$jobs"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for src in test/fuzz/fuzz_*.cpp; do
        name=${src#test/fuzz/fuzz_}
        targets+=("${name%.cpp}")
    done
fi

run_root=build-fuzz/fuzz-run
artifact_root=build-fuzz/fuzz-artifacts
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

echo "== fuzz (${seconds}s per target, one target at a time)"
total=0
failed=()
for name in "${targets[@]}"; do
    bin=build-fuzz/bin/fuzz_$name
    if [ ! -x "$bin" ] || [ ! -d "test/fuzz/corpus/$name" ]; then
        echo "fuzz: no target or corpus named '$name'" >&2
        exit 2
    fi
    work=$run_root/$name
    rm -rf "$work"
    mkdir -p "$work/corpus" "$artifact_root/$name"
    cp test/fuzz/corpus/"$name"/* "$work/corpus/"
    options=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1 -artifact_prefix="$artifact_root/$name/")
    if [ -f "test/fuzz/dict/$name.dict" ]; then options+=(-dict="test/fuzz/dict/$name.dict"); fi
    log=$work/log
    rc=0
    # One process (no -jobs/-workers): the machine is shared, and targets run one after another.
    "$bin" "${options[@]}" "$work/corpus" >"$log" 2>&1 || rc=$?

    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    execs=${execs:-0}
    total=$((total + execs))
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[^ ]+' "$log" | tail -n 1 || true)
    seed=$(sed -n 's/^INFO: Seed: //p' "$log" | head -n 1)
    rate=$((execs / seconds))
    if [ "$rc" -eq 0 ]; then
        printf 'fuzz_%-12s %12d execs  %9d/s  %s  seed %s\n' "$name" "$execs" "$rate" "$cov" "$seed"
    else
        failed+=("$name")
        printf 'fuzz_%-12s %12d execs  FAILED (exit %d), log %s\n' "$name" "$execs" "$rc" "$log"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|==fuzz==|.*runtime error:|artifact_prefix|Test unit written)' "$log" |
            head -n 20 | sed 's/^/    /'
    fi
done

printf 'fuzz total: %d execs in %d target(s), %ds each; %d failed%s\n' "$total" "${#targets[@]}" "$seconds" \
    "${#failed[@]}" "${failed[*]:+ (${failed[*]})}"
[ ${#failed[@]} -eq 0 ]
