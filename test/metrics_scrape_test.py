#!/usr/bin/env python3
"""Scrapes a real `creditguard run --metrics-port 0` while it runs and parses the body with the Prometheus
client library's own parser for the text exposition format (Debian's python3-prometheus-client).

Usage: metrics_scrape_test.py PATH_TO_CREDITGUARD
Checks: the body parses; every family has HELP and TYPE; every sample carries the provider and account labels;
histogram buckets are cumulative and end in +Inf == _count; counters end in _total; the run's numbers add up;
other paths and methods are refused; no secret appears.
"""
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

MOCK_KEY = "mock-provider-key"


def fail(message):
    print(f"metrics_scrape_test: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def scrape(url, method="GET"):
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers.get("Content-Type"), response.read().decode()


def check_body(body, complete=True):
    if MOCK_KEY in body:
        fail("the API key appears in the scrape")
    helps = set(re.findall(r"^# HELP (\S+) ", body, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M))
    if helps != set(types):
        fail(f"HELP and TYPE lines differ: {sorted(helps ^ set(types))}")
    families = list(text_string_to_metric_families(body))  # raises on anything the format does not allow
    samples = {}
    for family in families:
        for s in family.samples:
            if s.labels.get("provider") != "sunoapi" or s.labels.get("account") != "sunoapi":
                fail(f"{s.name} lacks the provider and account labels: {s.labels}")
            samples.setdefault(s.name, []).append(s)
    for name, kind in types.items():
        if kind == "counter" and not name.endswith("_total"):
            fail(f"counter {name} does not end in _total")
        if kind == "histogram":
            buckets = [s for s in samples.get(name + "_bucket", [])]
            values = [s.value for s in buckets]
            if values != sorted(values) or not buckets or buckets[-1].labels["le"] != "+Inf":
                fail(f"{name}: buckets not cumulative or no +Inf: {[(s.labels['le'], s.value) for s in buckets]}")
            if buckets[-1].value != samples[name + "_count"][0].value:
                fail(f"{name}: +Inf bucket differs from _count")
    if not complete:
        return samples
    for needed in ("creditguard_available_credits", "creditguard_held_credits", "creditguard_pending_credits",
                   "creditguard_admissions_total", "creditguard_reservations_ended_total",
                   "creditguard_provider_signals_total", "creditguard_balance_reads_total",
                   "creditguard_admission_wait_seconds_bucket", "creditguard_request_permits_total",
                   "creditguard_request_permit_wait_seconds_bucket", "creditguard_http_requests_total",
                   "creditguard_run_jobs_done_total"):
        if needed not in samples:
            fail(f"no {needed} in the scrape")
    return samples


def main():
    cli = sys.argv[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGUARD_")}
    run = subprocess.Popen(
        [cli, "run", "--jobs", "6", "--concurrency", "2", "--cost", "10", "--mock-task-seconds", "0.5",
         "--mock-rate-limit", "50/1s", "--metrics-port", "0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
    url = None
    for line in run.stderr:
        m = re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        run.kill()
        fail("the run never printed its metrics address")

    status, content_type, body = scrape(url)
    if status != 200 or not content_type.startswith("text/plain; version=0.0.4"):
        fail(f"GET /metrics answered {status} {content_type}")
    samples = check_body(body, complete=False)
    # The estimate is exported once the first balance read has succeeded.
    while samples["creditguard_balance_known"][0].value != 1:
        body = scrape(url)[2]
        samples = check_body(body, complete=False)
    check_body(body)
    try:
        scrape(url.replace("/metrics", "/other"))
        fail("GET /other was answered")
    except urllib.error.HTTPError as e:
        if e.code != 404:
            fail(f"GET /other answered {e.code}, not 404")
    try:
        scrape(url, method="POST")
        fail("POST /metrics was answered")
    except urllib.error.HTTPError as e:
        if e.code != 405:
            fail(f"POST /metrics answered {e.code}, not 405")

    # Scrape until the run ends: the last body seen must account for every job.
    last = body
    while run.poll() is None:
        try:
            last = scrape(url)[2]
        except (urllib.error.URLError, ConnectionError):
            break
    out, err = run.communicate(timeout=60)
    if run.returncode != 0:
        fail(f"the run exited {run.returncode}: {err}")
    samples = check_body(last)
    completed = sum(s.value for s in samples["creditguard_run_jobs_done_total"] if s.labels["result"] == "completed")
    granted = [s.value for s in samples["creditguard_admissions_total"] if s.labels["result"] == "granted"]
    print(f"metrics_scrape_test: ok: {len(samples)} sample names; last scrape saw {completed:.0f} jobs completed, "
          f"{granted[0]:.0f} admissions granted")


if __name__ == "__main__":
    main()
