#!/usr/bin/env bash
# Runs every benchmark (issue 5) and writes benchmarks/results/: one Google Benchmark JSON per binary,
# summary.json + summary.md (ratios vs targets, machine) and ratios.svg (gnuplot).
# Every ratio compares two benchmarks of the same process run; no absolute time is a target.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

scripts/setup.sh --bench

# The release preset (build-release/) turns the benchmarks on; the library, the benchmarks and the CLI (the
# fleet in case 8 runs `creditguard run` processes) are built.
cmake --preset release \
  -DCREDITGUARD_BUILD_TESTS=OFF -DCREDITGUARD_BUILD_EXAMPLES=OFF -DCREDITGUARD_BUILD_TOOLS=ON >/dev/null
cmake --build --preset release -j2

bin="$root/build-release/bin"
out="$root/benchmarks/results"
mkdir -p "$out"

run() {
  local name="$1"
  shift
  echo "== $name" >&2
  "$bin/$name" --benchmark_out="$out/$name.json" --benchmark_out_format=json "$@"
}

# Cases 1-3: medians of 5 repetitions (the machine is shared; medians resist a noisy neighbour).
run bench_guard --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
# Case 4: 10k/50k/100k waiters, 3 repetitions each (set in the binary).
run bench_waiters --benchmark_report_aggregates_only=true
# Cases 5-6: 10,000 jobs (guarded and naive) and the keep-alive balance fetch, 3 repetitions.
run bench_provider --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
# Case 7: shared Redis ledger vs redis-benchmark on one redis-server it starts (needs redis-server,
# redis-cli and redis-benchmark); 1 and 4 worker processes at depth 16 and 64, about 40 s per repetition.
run bench_redis_ledger --benchmark_repetitions=3 --benchmark_report_aggregates_only=true

# Case 8: paced vs unpaced against the mock enforcing a rate limit (known, learned, and a fleet of 4 CLI
# processes sharing one Redis); about 5 minutes per run, bound by the limit, not by the machine. Three runs
# in separate processes: summarize.py reports min / median / max and calls a target met only if all meet it.
# CREDITGUARD_PACING_RUNS=N changes the number of runs.
rm -f "$out"/bench_pacing.json "$out"/bench_pacing.run*.json
for i in $(seq 1 "${CREDITGUARD_PACING_RUNS:-3}"); do
  echo "== bench_pacing, run $i" >&2
  "$bin/bench_pacing" --benchmark_out="$out/bench_pacing.run$i.json" --benchmark_out_format=json
done

python3 benchmarks/summarize.py --results "$out" --work "$root/build-release/bench-plot" \
  --gnuplot-script benchmarks/ratios.gp
