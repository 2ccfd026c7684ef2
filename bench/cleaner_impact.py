#!/usr/bin/env python3
"""Produce throughput while the log cleaner compacts a backlog, against the same run with
no cleaning. Per mode: start a broker, fill a topic with 100 MB of 1 KiB records over 1,000
keys (cleanup.policy compact, or delete for the baseline), then time 300,000 x 1 KiB
records to another topic through confluent-kafka while the cleaner works.

    python3 bench/cleaner_impact.py [--runs 3]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from client_throughput import produce  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from conftest import free_port  # noqa: E402


def run(binary, policy):
    data = tempfile.mkdtemp(prefix="gregor-clean-")
    config = Path(data).with_suffix(".toml")
    config.write_text('"log.cleaner.backoff.ms" = 100\n')
    bootstrap = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([binary, "broker", "--data-dir", data, "--listen", bootstrap, "--config", str(config)], stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        fs = admin.create_topics([
            NewTopic("backlog", 1, 1, config={"cleanup.policy": policy, "segment.bytes": str(8 << 20), "min.cleanable.dirty.ratio": "0.01"}),
            NewTopic("bench", 16, 1),
        ])
        for f in fs.values():
            f.result(30)
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000})
        payload = os.urandom(1024)
        for i in range(100_000):
            while True:
                try:
                    p.produce("backlog", payload, key=f"k{i % 1000}".encode())
                    break
                except BufferError:
                    p.poll(0.01)
        assert p.flush(120) == 0
        seconds = produce(bootstrap, "bench", 300_000, 1024)
        return 300_000 / seconds
    finally:
        proc.terminate()
        proc.wait(60)
        log = proc.stderr.read()
        if policy == "compact":
            print(f"   cleaner passes during the run: {log.count('log cleaned')}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    binary = os.environ.get("GREGOR_BIN", str(Path(__file__).resolve().parent.parent / "target/release/gregor"))
    results = {"delete": [], "compact": []}
    for run_no in range(args.runs):
        for policy in ("delete", "compact"):
            rate = run(binary, policy)
            results[policy].append(rate)
            print(f"run {run_no + 1}/{args.runs}, backlog {policy}: produce {rate:,.0f} records/s ({rate * 1024 / 1e6:.1f} MB/s)", flush=True)
    base, busy = statistics.median(results["delete"]), statistics.median(results["compact"])
    print(f"median without cleaning: {base:,.0f} records/s; while cleaning: {busy:,.0f} records/s ({busy / base:.0%})")


if __name__ == "__main__":
    main()
