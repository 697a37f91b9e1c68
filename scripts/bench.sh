#!/usr/bin/env bash
# Runs every benchmark case and writes benchmarks/results/: one Google Benchmark JSON per case group and
# process run (<binary>.<group>.run<i>.json), summary.json + summary.md (ratios vs targets, the machine, the
# commit measured), ratios.svg (gnuplot), and the README's benchmark table.
#
# Every ratio divides two benchmarks of the same process. Each case group runs in processes of its own, so no
# case depends on what ran before it in a binary, and in CREDITGUARD_BENCH_RUNS (default 3) separate processes:
# summarize.py reports min / median / max and calls a target met only when every run meets it.
# Results describe a commit: run this on a clean tree and commit what it writes on its own.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

scripts/setup.sh --bench
export CCACHE_BASEDIR="$root"

# The release preset (build-release/) turns the benchmarks on; the library, the benchmarks and the CLI (the
# fleet in case 8 runs `creditguard run` processes) are built.
cmake --preset release \
  -DCREDITGUARD_BUILD_TESTS=OFF -DCREDITGUARD_BUILD_EXAMPLES=OFF -DCREDITGUARD_BUILD_TOOLS=ON >/dev/null
cmake --build --preset release -j2

commit="$(git rev-parse --short=12 HEAD)"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then commit="$commit+uncommitted changes"; fi

bin="$root/build-release/bin"
out="$root/benchmarks/results"
mkdir -p "$out"
rm -f "$out"/*.json
runs="${CREDITGUARD_BENCH_RUNS:-3}"

# group BINARY GROUP FILTER [ARGS...]: one case group, $runs times, each in a process of its own.
group() {
  local binary="$1" name="$2" filter="$3"
  shift 3
  for i in $(seq 1 "$runs"); do
    echo "== $binary $name, run $i of $runs" >&2
    "$bin/$binary" --benchmark_filter="$filter" --benchmark_out="$out/$binary.$name.run$i.json" \
      --benchmark_out_format=json "$@"
  done
}

# Cases 1-3: 5 repetitions per process, interleaved at random (a slow spell of the machine hits all alike);
# the ratio of medians per process.
timed=(--benchmark_repetitions=5 --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true)
group bench_guard case1 '^BM_(mutex|cas)_acquire_release$|^BM_guard_try_reserve_release$' "${timed[@]}"
group bench_guard case2 '^BM_job_' "${timed[@]}"
group bench_guard case3 'threads:2' "${timed[@]}"
# Case 4: 10k/50k/100k waiters, 3 repetitions each (set in the binary); each kind of waiter in its own process.
group bench_waiters coroutine 'coroutine_waiters' --benchmark_report_aggregates_only=true
group bench_waiters timer 'timer_coroutines' --benchmark_report_aggregates_only=true
group bench_waiters callback '^BM_wake_all_waiters/' --benchmark_report_aggregates_only=true
# Case 5: 10,000 jobs, guarded and naive. Case 6: the keep-alive balance fetch.
group bench_provider case5 '^BM_jobs_'
group bench_provider case6 '^BM_balance_' "${timed[@]}"
# Case 7: shared Redis ledger vs redis-benchmark on one redis-server it starts (needs redis-server, redis-cli and
# redis-benchmark); 1 and 4 worker processes at depth 16 and 64, about 15 s each.
group bench_redis_ledger case7 '.'
# Case 8: paced vs unpaced against the mock enforcing a rate limit (known, learned, and a fleet of 4 CLI processes
# sharing one Redis); about 5 minutes per run, bound by the limit, not by the machine.
group bench_pacing case8 '.'

python3 benchmarks/summarize.py --results "$out" --work "$root/build-release/bench-plot" \
  --gnuplot-script benchmarks/ratios.gp --commit "$commit" --readme README.md
