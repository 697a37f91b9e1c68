#!/usr/bin/env python3
"""Turns the Google Benchmark JSON of one scripts/bench.sh run into ratios vs the targets.

Reads benchmarks/results/bench_*.json, writes summary.json and summary.md there, and the data and
gnuplot script for ratios.svg into a scratch directory (then runs gnuplot). Every ratio divides two
benchmarks of the SAME run (same process, same machine state); medians of the repetitions are used.
A binary run several times in separate processes (bench_X.run1.json, bench_X.run2.json, ...) gives one
value per process: its rows report min / median / max, and a target is met only when every run meets it.
"""
import argparse
import glob
import json
import os
import platform
import re
import subprocess
import sys

UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def load(path):
    with open(path) as f:
        return json.load(f)


class Results:
    def __init__(self, docs):
        self.rows = []
        self.context = {}
        for doc in docs:
            self.context.setdefault("date", doc["context"].get("date"))
            self.context.setdefault("host_name", doc["context"].get("host_name"))
            self.context.setdefault("num_cpus", doc["context"].get("num_cpus"))
            self.context.setdefault("mhz_per_cpu", doc["context"].get("mhz_per_cpu"))
            self.rows.extend(doc["benchmarks"])

    def row(self, run_name):
        """The median aggregate of `run_name` when there are repetitions, else its single iteration row."""
        rows = [r for r in self.rows if r.get("run_name") == run_name]
        if not rows:
            raise KeyError(run_name)
        for r in rows:
            if r.get("run_type") == "aggregate" and r.get("aggregate_name") == "median":
                return r
        iters = [r for r in rows if r.get("run_type") == "iteration"]
        if not iters:
            raise KeyError(run_name)
        iters.sort(key=lambda r: r["real_time"])
        return iters[len(iters) // 2]

    def time_ns(self, run_name):
        r = self.row(run_name)
        return r["real_time"] * UNIT_NS[r.get("time_unit", "ns")]

    def counter(self, run_name, name):
        return float(self.row(run_name)[name])


class Runs:
    """The same binary run in separate processes: one Results per process."""

    def __init__(self, docs):
        self.runs = [Results([doc]) for doc in docs]

    def counters(self, run_name, name):
        if not self.runs:
            raise KeyError(run_name)
        return [r.counter(run_name, name) for r in self.runs]


def median(values):
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        compiler = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        compiler = "unknown"
    try:
        boost = "unknown"
        with open("/usr/include/boost/version.hpp") as f:
            m = re.search(r'#define BOOST_LIB_VERSION "([^"]+)"', f.read())
            if m:
                boost = m.group(1).replace("_", ".")
    except OSError:
        pass
    try:
        redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    except (OSError, IndexError):
        redis = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "compiler": compiler,
        "boost": boost,
        "redis": redis,
        "kernel": platform.release(),
        "build": "CMake preset release (-O3, NDEBUG), Google Benchmark from Debian libbenchmark-dev",
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True, help="directory with bench_*.json; summaries are written here")
    ap.add_argument("--work", required=True, help="scratch directory for the plot data and script")
    ap.add_argument("--gnuplot-script", required=True)
    args = ap.parse_args()

    docs = []
    for name in ("bench_guard", "bench_waiters", "bench_provider", "bench_redis_ledger"):
        path = os.path.join(args.results, name + ".json")
        if os.path.exists(path):
            docs.append(load(path))
        else:
            print(f"summarize: {path} missing", file=sys.stderr)
    res = Results(docs)
    pacing_paths = sorted(glob.glob(os.path.join(args.results, "bench_pacing.run*.json")))
    if not pacing_paths:
        print("summarize: no bench_pacing.run*.json", file=sys.stderr)
    pacing = Runs([load(p) for p in pacing_paths])
    for doc in pacing.runs[:1]:
        for key in ("date", "host_name", "num_cpus", "mhz_per_cpu"):
            res.context.setdefault(key, doc.context.get(key))
    rows = []

    def add(case, metric, value, target=None, op="<=", baseline=None, plot=None, note=""):
        """`value` is one number, or a list of one per separate process run (reported as min/median/max;
        the target is met only when every run meets it, and the plot shows the worst run)."""
        values = value if isinstance(value, list) else [value]
        meets = {"<=": lambda v: v <= target, ">=": lambda v: v >= target, "==": lambda v: v == target}[op]
        ok = None if target is None else all(meets(v) for v in values)
        worst = (min(values) if op == ">=" else max(values)) if target is not None else median(values)
        row = {"case": case, "metric": metric, "value": median(values), "worst": worst, "target": target, "op": op,
               "pass": ok, "baseline": baseline, "plot": plot, "note": note}
        if len(values) > 1:
            row.update({"runs": len(values), "min": min(values), "max": max(values), "values": values})
        rows.append(row)

    def ratio(a, b):
        return res.time_ns(a) / res.time_ns(b)

    def guarded(fn):
        try:
            fn()
        except KeyError as e:
            print(f"summarize: missing benchmark {e}", file=sys.stderr)

    def case1():
        add(1, "try_reserve+release / mutex (1 thread)", ratio("BM_guard_try_reserve_release", "BM_mutex_acquire_release"),
            2.0, baseline="std::mutex + int64", plot="1 try_reserve vs mutex")
        add(1, "try_reserve+release / CAS loop (1 thread)", ratio("BM_guard_try_reserve_release", "BM_cas_acquire_release"),
            note="information")
        add(1, "CAS loop / mutex (1 thread)", ratio("BM_cas_acquire_release", "BM_mutex_acquire_release"), note="information")

    def case2():
        add(2, "co_await reserve+commit / co_await trivial awaitable",
            ratio("BM_coro_guard_reserve_commit", "BM_coro_trivial_awaitable"), 2.0,
            baseline="co_await awaitable<int>", plot="2 co_await reserve",
            note="settling each batch of 1024 jobs and the read that sweeps them run with the timer paused")
        add(2, "co_await reserve+commit+settle / co_await trivial awaitable",
            ratio("BM_coro_guard_reserve_commit_settle", "BM_coro_trivial_awaitable"),
            note="information; includes a balance read every 1024 iterations (answered inline)")
        add(2, "co_await reserve+release / co_await trivial awaitable",
            ratio("BM_coro_guard_reserve_release", "BM_coro_trivial_awaitable"), note="information")

    def case3():
        add(3, "try_reserve+release / mutex (2 threads, one guard)",
            ratio("BM_guard_try_reserve_release/real_time/threads:2", "BM_mutex_acquire_release/real_time/threads:2"),
            2.0, baseline="std::mutex + int64, 2 threads", plot="3 two threads vs mutex")
        add(3, "CAS loop / mutex (2 threads)",
            ratio("BM_cas_acquire_release/real_time/threads:2", "BM_mutex_acquire_release/real_time/threads:2"),
            note="information")

    def case4():
        name = "BM_wake_all_waiters/{}/iterations:1/repeats:3/manual_time"
        big = name.format(100000)
        add(4, "bytes per parked waiter (100k)", res.counter(big, "bytes_per_waiter"), 256.0,
            plot="4 bytes/waiter (/256)")
        add(4, "allocations per parked waiter (100k)", res.counter(big, "allocs_per_waiter"), note="information")
        per = {}
        for n in (10000, 50000, 100000):
            per[n] = res.counter(name.format(n), "wake_ns_per_waiter")
            add(4, f"wake-all time per waiter, {n // 1000}k waiters (ns)", per[n], note="information")
            add(4, f"wake-all time, {n // 1000}k waiters (ms)", res.counter(name.format(n), "wake_all_ms"), note="information")
        add(4, "linearity: per-waiter wake time 100k / 10k", per[100000] / per[10000], 2.0,
            note="1.0 = perfectly linear; the target (<= 2) is ours, the issue asks for linear",
            plot="4 wake-all linearity")
        add(4, "p50 wake latency, 100k waiters (us)", res.counter(big, "p50_us"), note="from the release to the handler")
        add(4, "p99 wake latency, 100k waiters (us)", res.counter(big, "p99_us"), note="from the release to the handler")
        add(4, "bytes allocated per waiter while waking (100k)", res.counter(big, "wake_bytes_per_waiter"),
            note="information")

    def case5():
        g = "BM_jobs_guarded/iterations:1/manual_time"
        n = "BM_jobs_naive/iterations:1/manual_time"
        add(5, "balance calls for 10,000 jobs (guarded)", res.counter(g, "balance_calls"), 50.0,
            baseline="naive: 10,000", plot="5 balance calls (/50)")
        add(5, "overspend: mock insufficient answers (guarded)", res.counter(g, "insufficient"), 0.0, op="==")
        add(5, "jobs completed (guarded)", res.counter(g, "jobs_ok"), note="of 10,000")
        add(5, "balance calls (naive)", res.counter(n, "balance_calls"), note="information")
        add(5, "wall time guarded / naive", res.counter(g, "wall_s") / res.counter(n, "wall_s"),
            note="reported, no target", plot=None)
        add(5, "connections opened by the task client (guarded)", res.counter(g, "task_conn_opened"), note="information")
        add(5, "connections opened by the task client (naive)", res.counter(n, "task_conn_opened"), note="information")

    def case6():
        add(6, "Provider::async_balance / sync Beast (keep-alive)",
            ratio("BM_balance_provider_async/real_time", "BM_balance_beast_sync/real_time"), 1.3,
            baseline="synchronous Beast client", plot="6 balance fetch")

    def case7():
        # One row per (processes, depth): jobs/s summed over the worker processes, and the ratios to
        # redis-benchmark -c procs -P depth on the same server in the same run (target >= 0.5 for both).
        for procs in (1, 4):
            for depth in (16, 64):
                name = f"BM_redis_ledger/procs:{procs}/depth:{depth}/iterations:1/manual_time"
                where = f"{procs} process{'es' if procs > 1 else ''}, depth {depth}"
                add(7, f"ledger jobs/s (reserve+commit+settle), {where}", res.counter(name, "jobs_per_s"),
                    note="information")
                add(7, f"jobs/s / redis-benchmark EVALSHA (trivial script) req/s, {where}",
                    res.counter(name, "ratio_vs_evalsha"), 0.5, op=">=", baseline="redis-benchmark EVALSHA",
                    plot=f"7 EVALSHA {procs}p P{depth} (0.5/ratio)")
                add(7, f"jobs/s / redis-benchmark INCR req/s, {where}", res.counter(name, "ratio_vs_incr"), 0.5,
                    op=">=", baseline="redis-benchmark -t incr")
                add(7, f"ledger operations per script call, {where}", res.counter(name, "ops_per_batch"),
                    note="information")

    def case8():
        # Paced runs against the mock enforcing a limit; the baseline (pacing off) runs in the same process.
        # The binary runs in several separate processes: each value is one per process run.
        def spread(values, form):
            return "/".join(form.format(v) for v in (min(values), median(values), max(values)))

        for which, wall_target, limited_target, label in (
                ("known", 1.10, 0.01, "known limit (20/2 s)"),
                ("unknown", 1.3, 0.05, "unknown limit, learned (10/s, no Retry-After)"),
                ("fleet", 1.10, 0.01, "4 processes, one Redis-shared budget (20/2 s)")):
            paced = f"BM_pacing_{which}/iterations:1/manual_time"
            base = f"BM_pacing_{which}_baseline/iterations:1/manual_time"
            base_wall = spread(pacing.counters(base, "wall_over_physical"), "{:.2f}")
            base_limited = spread(pacing.counters(base, "rate_limited_share"), "{:.2f}")
            base_lost = spread(pacing.counters(base, "lost"), "{:.0f}")
            add(8, f"wall / physical limit, {label}", pacing.counters(paced, "wall_over_physical"), wall_target,
                baseline=f"pacing off: {base_wall}x", plot=f"8 wall, {which}", note=f"pacing off: {base_wall}x")
            add(8, f"share of requests answered rate limited, {label}", pacing.counters(paced, "rate_limited_share"),
                limited_target, baseline=f"pacing off: {base_limited}", note=f"pacing off: {base_limited}")
            add(8, f"jobs lost of 100, {label}", pacing.counters(paced, "lost"), 0.0, op="==",
                baseline=f"pacing off: {base_lost}", note=f"pacing off: {base_lost}")
            add(8, f"status polls per job, {label}", pacing.counters(paced, "polls_per_job"), note="information")

    for fn in (case1, case2, case3, case4, case5, case6, case7, case8):
        guarded(fn)

    summary = {"machine": machine(), "benchmark_context": res.context, "rows": rows}
    with open(os.path.join(args.results, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)

    def fmt(v):
        if v is None:
            return ""
        if float(v).is_integer():
            return f"{int(v):,}"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"

    m = summary["machine"]
    lines = [
        f"Machine: {m['nproc']} CPUs, {m['cpu_model']}; {m['compiler']}; Boost {m['boost']}; Redis {m['redis']}; "
        f"Linux {m['kernel']}; run {res.context.get('date')}",
        "",
        "Rows measured over several separate process runs show min / median / max; their target is met only",
        "when every run meets it.",
        "",
        "| case | metric | measured | target | result |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        sign = {"<=": "≤", ">=": "≥", "==": "="}[r["op"]]
        target = "" if r["target"] is None else f"{sign} {fmt(r['target'])}"
        verdict = "" if r["pass"] is None else ("met" if r["pass"] else "**missed**")
        metric = r["metric"] + (f" ({r['note']})" if r["note"] and r["note"] != "information" else "")
        measured = fmt(r["value"]) if "runs" not in r else "/".join(fmt(v) for v in (r["min"], r["value"], r["max"]))
        lines.append(f"| {r['case']} | {metric} | {measured} | {target} | {verdict} |")
    with open(os.path.join(args.results, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")

    # Plot: measured / target for every targeted metric (below 1.0 = met), labelled with the raw value; for a
    # "at least" target (case 7) target / measured, so that below 1.0 still means met.
    os.makedirs(args.work, exist_ok=True)
    dat = os.path.join(args.work, "ratios.dat")
    with open(dat, "w") as f:
        for r in rows:
            if r["plot"] and r["target"]:
                norm = r["target"] / max(r["worst"], 1e-9) if r["op"] == ">=" else r["worst"] / r["target"]
                f.write(f"\"{r['plot']}\" {norm:.4f} \"{fmt(r['worst'])}\"\n")
    svg = os.path.join(args.results, "ratios.svg")
    subprocess.run(["gnuplot", "-e", f"datafile='{dat}'; outfile='{svg}'", args.gnuplot_script], check=True)
    print(open(os.path.join(args.results, "summary.md")).read())


if __name__ == "__main__":
    main()
