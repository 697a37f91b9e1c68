#!/usr/bin/env python3
"""The fault soak behind scripts/soak.sh.

Runs rounds until the time is up. Each round starts the standalone mock provider (`creditguard mock`) with
every fault enabled at random (resets before and after the request was processed, replies delayed past the
client's timeout, 5xx answers before processing and gateway errors after it, malformed and truncated
bodies, rate-limit and maintenance bursts, top-ups, and in half the rounds a foreign spender), runs
`creditguard run --base-url ... --json` against it, closes the mock's books (POST /__mock/finish-tasks
finishes every task still running, so that tasks whose create reply was lost are charged too), and judges
the round from the mock's own books and the run's JSON:

  overspend           the balance went below 0 when a task was charged. Checked in every round at submit
                      (the provider refuses creates it cannot charge) and at completion without a foreign
                      spender. With a foreign spender at completion no client can prevent it (the spender
                      can take credits a running task will be charged at its end), so there the check is
                      overspend_own.
  overspend_own       the balance with the foreign spender's share added back went below 0: this client
                      spent more than the account ever held for it. Every round.
  duplicate_submission  a job marker ("creditguard job N") created more than one task.
  uncounted_task      the provider created more tasks than the guard committed reservations: a job was
                      charged while the guard believed it never reached the provider.
  reservation_ending  granted != released + settled + refunded (+ abandoned), or reservations still live
                      when the run ended.
  unnamed_cause       a job that did not complete has no named cause (uses the run's "errors" object when
                      present, else its status counts).
  hang / crash        the run did not finish in time, or ended with a signal or an unexpected exit code.

Round parameters derive from the round's seed alone (the default first seed comes from the clock and is a
multiple of 4, so the first four rounds cover both timings with and without a foreign spender):
`--replay SEED` runs that round again. The faults are deterministic per request sequence; the CLI's
concurrency can still order requests differently, so a replay may need a few tries.
"""

import argparse
import concurrent.futures
import json
import os
import random
import select
import shlex
import signal
import subprocess
import sys
import time
import urllib.request

# The built-in provider ids, from the program (`creditguard providers --json`): see main().
PROVIDERS = []
COST = 12
KEY = "sk-soak-mock-key"  # the mock's key, passed through the environment only
# Every fault of the mock at its default rate ("all"); lost replies after processing more often, so that a
# round of a few dozen jobs sees several; replies delayed well past the client's timeout.
FAULTS = "all,reset_after=0.04,delay_after=0.03,gateway_after=0.02,delay_ms=2000"
CLIENT_TIMEOUT_S = "0.8"
# Music takes minutes at the real providers: a task nobody polls (its create reply was lost) finishes well
# after the round's jobs would have, and POST /__mock/finish-tasks charges whatever is left at the end.
FINISH_UNPOLLED_AFTER_S = "20"
RUN_TIME_LIMIT_S = 180


def round_config(seed, faults=None):
    """Everything about a round, from its seed: consecutive seeds cover both deduction timings, with and
    without a foreign spender, the run told the right timing or 'unknown'."""
    rng = random.Random(seed)
    mock_deduct = ("submit", "complete")[seed % 2]
    foreign = (seed // 2) % 2 == 1
    run_deduct = mock_deduct if (seed // 4) % 2 == 0 else "unknown"
    jobs = rng.randint(24, 48)
    return {
        "seed": seed,
        "faults": faults or FAULTS,
        "provider": PROVIDERS[rng.randrange(len(PROVIDERS))],
        "mock_deduct": mock_deduct,
        "run_deduct": run_deduct,
        # Reject rounds end fast when the first balance reads fail: most rounds queue.
        "policy": "reject" if rng.random() < 0.25 else "queue",
        "jobs": jobs,
        "concurrency": rng.randint(3, 8),
        # Between about a third and all of what the jobs need: most rounds run the account dry.
        "credits": rng.randint(jobs * COST // 3, jobs * COST),
        "foreign_per_s": round(rng.uniform(2.0, 8.0), 1) if foreign else 0.0,
        "failure_rate": rng.choice([0.0, 0.1]),
        "max_wait_s": rng.choice([2, 4]),
        # Drawn last, so that the fields above stay what they were for a seed.
        "error_style": rng.choice(["body", "body", "http", "status"]),
    }


def mock_command(binary, cfg):
    cmd = [binary, "mock", "--port", "0", "--credits", str(cfg["credits"]), "--cost", str(COST),
           "--deduct", cfg["mock_deduct"], "--polls", "2", "--seed", str(cfg["seed"]),
           "--failure-rate", str(cfg["failure_rate"]), "--random-faults", cfg["faults"],
           "--finish-unpolled-after", FINISH_UNPOLLED_AFTER_S]
    cmd += ["--provider", cfg["provider"]]  # the mock answers in that provider's dialect
    if cfg.get("error_style", "body") != "body":
        cmd += ["--error-style", cfg["error_style"]]
    if cfg["foreign_per_s"] > 0:
        cmd += ["--foreign-spend", str(cfg["foreign_per_s"])]
    return cmd


def run_command(binary, cfg, port):
    return [binary, "run", "--provider", cfg["provider"], "--base-url", f"http://127.0.0.1:{port}",
            "--jobs", str(cfg["jobs"]), "--concurrency", str(cfg["concurrency"]), "--cost", str(COST),
            "--policy", cfg["policy"], "--max-wait", str(cfg["max_wait_s"]), "--deduct", cfg["run_deduct"],
            "--timeout", CLIENT_TIMEOUT_S, "--poll-interval", "0.05", "--json"]


def shell_line(cmd, env_key):
    return f"{env_key}={KEY} " + " ".join(shlex.quote(c) for c in cmd)


def control(port, method, path):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"" if method == "POST" else None)
    with opener.open(req, timeout=30) as resp:
        return json.loads(resp.read().decode())


class Mock:
    def __init__(self, binary, cfg):
        env = dict(os.environ, CREDITGUARD_MOCK_KEY=KEY)
        self.cmd = mock_command(binary, cfg)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            self.proc.kill()
            err = self.proc.stderr.read()
            raise RuntimeError(f"the mock did not start: {line!r} {err!r}")
        self.port = int(line.strip().rsplit(":", 1)[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return out, err


def reservation_counts(run):
    """The run's reservation endings: a "reservations" object, or the same names at the top level."""
    res = run.get("reservations")
    if not isinstance(res, dict):
        res = {k: run[k] for k in ("granted", "released", "settled", "refunded", "abandoned", "live_reservations")
               if k in run}
        if "live_reservations" in res:
            res["live"] = res.pop("live_reservations")
    return res


def judge(cfg, run, books, counters):
    """The round's violations: a list of (name, detail)."""
    v = []
    foreign = cfg["foreign_per_s"] > 0
    strict = cfg["mock_deduct"] == "submit" or not foreign
    if books["lowest_balance"] < 0 and strict:
        v.append(("overspend", f"the balance reached {books['lowest_balance']} "
                               f"({books['overdrawing_charges']} charges took it below 0, {books['overspent']} credits in all)"))
    if books["lowest_balance_own"] < 0:
        v.append(("overspend_own", f"this client's own balance (foreign spending added back) reached "
                                   f"{books['lowest_balance_own']}"))
    if books["max_tasks_per_job"] > 1:
        dups = ", ".join(f"{d['job']} x{d['tasks']}" for d in books["duplicated_jobs"][:10])
        v.append(("duplicate_submission", f"{len(books['duplicated_jobs'])} jobs created more than one task: {dups}"))

    res = reservation_counts(run)
    needed = ("granted", "released", "settled", "refunded", "live")
    if all(k in res for k in needed):
        ended = res["released"] + res["settled"] + res["refunded"] + res.get("abandoned", 0)
        if res["granted"] != ended or res["live"] != 0:
            v.append(("reservation_ending", f"granted {res['granted']}, ended {ended} (released {res['released']}, "
                                            f"settled {res['settled']}, refunded {res['refunded']}, abandoned "
                                            f"{res.get('abandoned', 'n/a')}), live {res['live']}"))
        if "committed" in res and counters["tasks_created"] > res["committed"]:
            v.append(("uncounted_task", f"the provider created {counters['tasks_created']} tasks, the guard "
                                        f"committed {res['committed']} reservations"))
    else:
        v.append(("reservation_ending", "not checkable: the run's --json has no reservation counts"))

    unfinished = run["jobs"] - run["completed"]
    errors = run.get("errors")
    if isinstance(errors, dict):
        named = sum(n for k, n in errors.items() if k and k not in ("unknown", "error", "other"))
        unnamed = {k: n for k, n in errors.items() if not k or k in ("unknown", "error", "other")}
        if named != unfinished or unnamed:
            v.append(("unnamed_cause", f"{unfinished} jobs did not complete, errors names {named}: {errors}"))
    else:
        counted = run.get("rejected", 0) + run.get("failed", 0) + run.get("ambiguous", 0)
        if counted != unfinished:
            v.append(("unnamed_cause", f"{unfinished} jobs did not complete, status counts name {counted}"))
    return v


def fault_line(c):
    return (f"resets {c['resets_before_processing']}/{c['resets_after_processing']} (before/after), "
            f"delayed {c['replies_delayed']}, 5xx {c['server_errors']}+{c['gateway_errors_after_processing']} "
            f"(before/after), malformed {c['malformed_answers']}, truncated {c['truncated_answers']}, "
            f"bursts {c['burst_answers']}, top-ups {c['top_ups']}")


def run_round(binary, cfg):
    violations = []
    mock = Mock(binary, cfg)
    try:
        run_cmd = run_command(binary, cfg, mock.port)
        env = dict(os.environ, CREDITGUARD_API_KEY=KEY)
        started = time.monotonic()
        run, run_err, exit_code = None, "", None
        try:
            p = subprocess.run(run_cmd, capture_output=True, text=True, env=env, timeout=RUN_TIME_LIMIT_S)
            exit_code, run_err = p.returncode, p.stderr
            if p.returncode == 2:
                raise RuntimeError(f"usage error from the run (a soak script bug): {p.stderr.strip()}")
            if p.returncode not in (0, 1, 3):  # 3: jobs refused only for lack of credits
                violations.append(("crash", f"the run exited with {p.returncode}: {p.stderr.strip()[-400:]}"))
            try:
                run = json.loads(p.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                violations.append(("crash", f"no JSON from the run (exit {p.returncode}): {p.stderr.strip()[-400:]}"))
        except subprocess.TimeoutExpired:
            violations.append(("hang", f"the run did not finish within {RUN_TIME_LIMIT_S} s"))
        elapsed = time.monotonic() - started
        closed = control(mock.port, "POST", "/__mock/finish-tasks")  # lost-reply tasks are charged now
    finally:
        mock_out, mock_err = mock.stop()
    if mock.proc.returncode != 0:
        violations.append(("crash", f"the mock exited with {mock.proc.returncode}: {mock_err.strip()[-400:]}"))
    books, counters = closed["books"], closed["counters"]
    if run is not None:
        violations += judge(cfg, run, books, counters)
    return {"cfg": cfg, "run": run, "books": books, "counters": counters, "violations": violations,
            "elapsed": elapsed, "exit": exit_code, "run_err": run_err, "mock_cmd": mock.cmd, "run_cmd": run_cmd,
            "port": mock.port}


def run_round_safely(binary, cfg):
    """A round that could not even be judged (the mock did not start, its books could not be read) is
    reported as soak_error: not a finding about the guard, but never a pass."""
    try:
        return run_round(binary, cfg)
    except Exception as e:  # noqa: BLE001 - any failure of the harness ends up in the report
        empty = {k: 0 for k in ("lowest_balance", "lowest_balance_own", "charged", "refunded", "topped_up",
                                "foreign_spent", "tasks_created", "tasks_finished_unpolled", "max_tasks_per_job")}
        return {"cfg": cfg, "run": None, "books": empty, "counters": None, "violations": [("soak_error", str(e))],
                "elapsed": 0.0, "exit": None, "run_err": "", "mock_cmd": mock_command(binary, cfg),
                "run_cmd": run_command(binary, cfg, 0), "port": 0}


def describe(r):
    cfg, run, b = r["cfg"], r["run"], r["books"]
    head = (f"seed {cfg['seed']} {cfg['provider']} mock:{cfg['mock_deduct']} run:{cfg['run_deduct']} "
            f"{cfg['policy']} errors:{cfg['error_style']} credits {cfg['credits']} foreign {cfg['foreign_per_s']}/s "
            f"jobs {cfg['jobs']}x"
            f"{cfg['concurrency']}")
    if run is not None:
        res = reservation_counts(run)
        head += (f" | completed {run['completed']} rejected {run.get('rejected')} failed {run.get('failed')} "
                 f"ambiguous {run.get('ambiguous')} granted {res.get('granted', '?')} | {r['elapsed']:.1f} s")
    books = (f"  books: lowest {b['lowest_balance']} (own {b['lowest_balance_own']}), charged {b['charged']}, "
             f"refunded {b['refunded']}, topped up {b['topped_up']}, foreign {b['foreign_spent']}, tasks "
             f"{b['tasks_created']} ({b['tasks_finished_unpolled']} finished unpolled), max per job "
             f"{b['max_tasks_per_job']}")
    faults = fault_line(r["counters"]) if r["counters"] else "(none read)"
    return head + "\n" + books + "\n  faults: " + faults


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the creditguard program")
    ap.add_argument("--minutes", type=float, default=10.0, help="start rounds until this much time has passed")
    ap.add_argument("--seed", type=int, default=None, help="seed of the first round (default: from the time)")
    ap.add_argument("--min-rounds", type=int, default=4, help="at least this many rounds (both timings, +/- foreign)")
    ap.add_argument("--replay", type=int, default=None, help="run only the round with this seed")
    ap.add_argument("--report", default=None, help="write every round's data here (JSON)")
    ap.add_argument("--parallel", type=int, default=1, help="rounds run at the same time (each its own mock)")
    ap.add_argument("--faults", default=FAULTS, help=f"the mock's --random-faults (default '{FAULTS}')")
    args = ap.parse_args()
    # The providers a run can generate with (the others are known by their balance endpoint only).
    PROVIDERS[:] = [p["id"] for p in json.loads(subprocess.run([args.bin, "providers", "--json"], check=True,
                                                               capture_output=True, text=True).stdout) if p["tasks"]]

    if args.replay is not None:
        seeds = iter([args.replay])
    else:
        first = args.seed if args.seed is not None else int(time.time()) % 1_000_000 * 4
        seeds = (first + i for i in range(10**9))
    deadline = time.monotonic() + args.minutes * 60
    rounds = []
    print(f"soak: {args.bin}, {args.minutes:g} min, faults '{args.faults}', client timeout {CLIENT_TIMEOUT_S} s, "
          f"{args.parallel} rounds at a time", flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(args.parallel, 1)) as pool:
        while True:
            if args.replay is None and len(rounds) >= args.min_rounds and time.monotonic() >= deadline:
                break
            batch = [next(seeds) for _ in range(1 if args.replay is not None else max(args.parallel, 1))]
            for r in pool.map(lambda seed: run_round_safely(args.bin, round_config(seed, args.faults)), batch):
                rounds.append(r)
                status = "ok" if not r["violations"] else "VIOLATION " + ", ".join(
                    sorted({n for n, _ in r["violations"]}))
                print(f"round {len(rounds)}: {status}: {describe(r)}", flush=True)
                for name, detail in r["violations"]:
                    print(f"  !! {name}: {detail}", flush=True)
            if args.replay is not None or any(n == "soak_error" for r in rounds for n, _ in r["violations"]):
                break  # one round, or the harness itself is broken: more rounds would say the same

    if args.report:
        with open(args.report, "w") as f:
            json.dump(rounds, f, indent=1)

    bad = [r for r in rounds if r["violations"]]
    totals = {}
    for r in rounds:
        for name, _ in r["violations"]:
            totals[name] = totals.get(name, 0) + 1
    jobs = sum(r["run"]["jobs"] for r in rounds if r["run"])
    completed = sum(r["run"]["completed"] for r in rounds if r["run"])
    print(f"\nsoak summary: {len(rounds)} rounds, {jobs} jobs ({completed} completed), "
          f"{len(bad)} rounds with violations")
    if not bad:
        print("no overspend, every reservation ended once, no job submitted twice, every unfinished job named")
        return 0
    for name, n in sorted(totals.items()):
        seeds_of = [str(r["cfg"]["seed"]) for r in bad if any(v[0] == name for v in r["violations"])]
        more = f", ... {len(seeds_of) - 20} more" if len(seeds_of) > 20 else ""
        print(f"  {name}: {n} rounds (seeds {', '.join(seeds_of[:20])}{more})")
    again = "" if args.faults == FAULTS else f" --faults {shlex.quote(args.faults)}"
    print(f"reproduce one round:  scripts/soak.sh --replay SEED{again}   (or by hand, the mock and the run:)")
    r = bad[0]
    print("  " + shell_line(r["mock_cmd"], "CREDITGUARD_MOCK_KEY"))
    print("  " + shell_line(r["run_cmd"], "CREDITGUARD_API_KEY").replace(f":{r['port']}", ":PORT"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
