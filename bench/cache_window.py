#!/usr/bin/env python3
"""Produce latency with and without `log.cache.window.bytes`, with the broker's own view.

For each mode, a fresh release broker takes --runs back-to-back `gregor bench e2e` runs
(16 partitions, 1 KiB records, acks=all, a consumer reading along) at --rate records/s for
10 s each. Every run prints the client's produce and end-to-end p99, the broker's Produce
request time (from its gregor_request_duration_seconds histogram: the bucket holding the
p99) and the memory left free, then each mode's median p99. The load generator is
target/release/gregor-bench (see bench/README.md).

    python3 bench/cache_window.py [--runs 5] [--rate 278000]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sendfile import ROOT, free_port  # noqa: E402

BUCKET = re.compile(r'gregor_request_duration_seconds_bucket\{api="Produce",le="([^"]+)"\} (\S+)')


def produce_buckets(url):
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {m.group(1): float(m.group(2)) for m in map(BUCKET.match, text.splitlines()) if m}


def bucket_of(before, after, q):
    """The upper bound of the histogram bucket that holds quantile q of the requests in between."""
    bounds = sorted(after, key=lambda k: float("inf") if k == "+Inf" else float(k))
    total = after["+Inf"] - before.get("+Inf", 0)
    return next((le for le in bounds if after[le] - before.get(le, 0) >= q * total), "+Inf")


def mem_free_mb():
    line = next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemFree:"))
    return int(line.split()[1]) // 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rate", type=int, default=278_000)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "gregor"))
    ap.add_argument("--load", default=os.environ.get("GREGOR_BENCH_BIN", str(ROOT / "target" / "release" / "gregor-bench")))
    args = ap.parse_args()
    modes = {"window 64 MiB (default)": {}, "window 0 (the kernel's)": {"GREGOR_LOG_CACHE_WINDOW_BYTES": "0"}}
    medians = {}
    for name, env in modes.items():
        print(f"==> {name}", flush=True)
        p99s = []
        with tempfile.TemporaryDirectory() as tmp:
            port, mport = free_port(), free_port()
            log = open(Path(tmp) / "broker.log", "wb")
            broker = subprocess.Popen([args.binary, "broker", "--data-dir", f"{tmp}/data", "--listen", f"127.0.0.1:{port}",
                                       "--metrics", f"127.0.0.1:{mport}"], stdout=log, stderr=log, env={**os.environ, **env})
            url = f"http://127.0.0.1:{mport}/metrics"
            try:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        produce_buckets(url)
                        break
                    except OSError:
                        if time.monotonic() > deadline or broker.poll() is not None:
                            sys.exit(f"broker did not start: {(Path(tmp) / 'broker.log').read_text()}")
                        time.sleep(0.1)
                for r in range(args.runs):
                    before = produce_buckets(url)
                    out = subprocess.run([args.load, "bench", "e2e", "--workload", "1-topic-16-partitions-1kb",
                                          "--records", str(args.rate * 10), "--seconds", "30", "--acks", "all",
                                          "--rate", str(args.rate), "--linger-ms", "0.5",
                                          "--bootstrap", f"127.0.0.1:{port}", "--json"],
                                         capture_output=True, text=True, timeout=600)
                    if out.returncode != 0:
                        sys.exit(f"gregor bench failed:\n{out.stderr[-2000:]}")
                    j = json.loads(out.stdout)
                    after = produce_buckets(url)
                    p99s.append(j["produce_latency"]["p99_ms"])
                    print(f"run {r + 1}: produce p99 {p99s[-1]:.2f} ms, end-to-end p99 "
                          f"{j['e2e_latency']['p99_ms']:.2f} ms, {j['records_per_sec']:,.0f} rec/s; broker Produce "
                          f"p99 <= {float(bucket_of(before, after, 0.99)) * 1000:g} ms; {mem_free_mb():,} MB free", flush=True)
            finally:
                broker.terminate()
                broker.wait()
        medians[name] = statistics.median(p99s)
    for name, m in medians.items():
        print(f"{name}: median produce p99 {m:.2f} ms")


if __name__ == "__main__":
    main()
