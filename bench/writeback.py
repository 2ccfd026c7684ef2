#!/usr/bin/env python3
"""Produce and end-to-end latency over a long write, with and without the background
writeback of `log.writeback.bytes`.

For each mode, a fresh release broker takes --runs back-to-back `gregor bench e2e` runs
(16 partitions, 1 KiB records, acks=all, a consumer reading along) at --rate records/s for
10 s each, so that several GB are written and the kernel's dirty-page thresholds are
crossed. Prints every run's p99s and the page cache's dirty memory after it (from
/proc/meminfo), then the medians. The modes run one after the other (not interleaved: the
dirty pages one leaves behind would fall on the other), the writeback-off mode first
unless --on-first.

    python3 bench/writeback.py [--runs 4] [--rate 200000]

Needs the release binary with the bench feature:
    cargo build --release --features gregor/bench
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sendfile import ROOT, bench, free_port, start  # noqa: E402


def dirty_mb():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Dirty:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--rate", type=int, default=200_000)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "gregor"))
    ap.add_argument("--on-first", action="store_true", help="run the writeback-on mode first")
    args = ap.parse_args()
    modes = {"writeback off": {"GREGOR_LOG_WRITEBACK_BYTES": "0"}, "writeback on (default)": {}}
    if args.on_first:
        modes = dict(reversed(list(modes.items())))
    results = {}
    for name, env in modes.items():
        subprocess.run(["sync"], check=False)
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            proc = start(args.binary, Path(tmp) / "data", port, env)
            try:
                results[name] = []
                for r in range(args.runs):
                    out = bench(args.binary, port, "e2e", "--workload", "1-topic-16-partitions-1kb",
                                "--records", str(args.rate * 10), "--seconds", "30", "--acks", "all",
                                "--rate", str(args.rate), "--linger-ms", "0.5")
                    p99, e2e = out["produce_latency"]["p99_ms"], out["e2e_latency"]["p99_ms"]
                    results[name].append((p99, e2e))
                    print(f"{name}: run {r + 1}: produce p99 {p99:.2f} ms, end-to-end p99 {e2e:.2f} ms, "
                          f"dirty {dirty_mb():,.0f} MB", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print(f"\n{args.runs} × 10 s at {args.rate:,} records/s of 1 KiB, acks=all, one broker:")
    for name, xs in results.items():
        print(f"  {name:<24} produce p99 {', '.join(f'{p:.2f}' for p, _ in xs)} ms "
              f"(median {statistics.median(p for p, _ in xs):.2f}); end-to-end p99 "
              f"{', '.join(f'{e:.2f}' for _, e in xs)} ms (median {statistics.median(e for _, e in xs):.2f})")


if __name__ == "__main__":
    main()
