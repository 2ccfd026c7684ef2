#!/usr/bin/env python3
"""Broker CPU per Fetch for a consumer of many partitions of which few get records, with
incremental fetch sessions (KIP-227, the default) and without
(`max.incremental.fetch.session.cache.slots` = 0), side by side.

Each round starts a fresh release broker per mode, creates one topic of --partitions
partitions, and runs a kafka-python consumer assigned to all of them (kafka-python uses
sessions when the broker offers them) while a producer writes --rate records a second
spread over 10 partitions. Over --seconds it counts the Fetch requests the broker
answered (gregor_requests_total) and the CPU time the broker used (/proc); it prints the
CPU per fetch of each mode, the medians and their ratio. The modes alternate within a
round.

    python3 bench/fetch_sessions.py [--rounds 3] [--partitions 10000] [--seconds 20]

Needs the release binary: cargo build --release
"""

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sendfile import ROOT, cpu_seconds, free_port, start  # noqa: E402


def fetches(metrics_port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    m = re.search(r'^gregor_requests_total\{api="Fetch"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def one(binary, partitions, seconds, rate, env):
    with tempfile.TemporaryDirectory() as tmp:
        port, metrics_port = free_port(), free_port()
        proc = start(binary, Path(tmp) / "data", port, env, metrics_port)
        bootstrap = f"127.0.0.1:{port}"
        try:
            subprocess.run([binary, "topic", "create", "wide", "--partitions", str(partitions), "--bootstrap",
                            bootstrap], check=True, capture_output=True, timeout=600)
            consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                     auto_offset_reset="earliest", fetch_max_wait_ms=500)
            consumer.assign([TopicPartition("wide", p) for p in range(partitions)])
            producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
            stop = threading.Event()

            def write():
                i = 0
                while not stop.is_set():
                    producer.send("wide", b"x" * 100, partition=(i % 10) * (partitions // 10))
                    i += 1
                    time.sleep(1 / rate)

            writer = threading.Thread(target=write)
            writer.start()
            # Warm up: the first full fetches, and the session opened.
            warm = time.monotonic() + 5
            while time.monotonic() < warm:
                consumer.poll(timeout_ms=200)
            f0, c0, t0 = fetches(metrics_port), cpu_seconds(proc.pid), time.monotonic()
            records = 0
            while time.monotonic() - t0 < seconds:
                for batch in consumer.poll(timeout_ms=200).values():
                    records += len(batch)
            f1, c1 = fetches(metrics_port), cpu_seconds(proc.pid)
            stop.set()
            writer.join()
            consumer.close()
            producer.close()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    n = f1 - f0
    return {"fetches": n, "cpu_ms_per_fetch": (c1 - c0) * 1000 / max(n, 1), "records": records,
            "cpu_share": (c1 - c0) / seconds}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rate", type=float, default=100, help="records a second, over 10 partitions")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "gregor"))
    args = ap.parse_args()
    modes = {"sessions": {}, "no sessions": {"GREGOR_MAX_INCREMENTAL_FETCH_SESSION_CACHE_SLOTS": "0"}}
    results = {m: [] for m in modes}
    for r in range(args.rounds):
        for name, env in (modes.items() if r % 2 == 0 else reversed(list(modes.items()))):
            out = one(args.binary, args.partitions, args.seconds, args.rate, env)
            results[name].append(out)
            print(f"round {r + 1}: {name}: {out['fetches']:.0f} fetches, {out['cpu_ms_per_fetch']:.3f} ms CPU each, "
                  f"broker CPU {out['cpu_share'] * 100:.0f}% of a core, {out['records']} records read", flush=True)
    print(f"\n{args.rounds} rounds, one consumer (kafka-python) of {args.partitions:,} partitions, "
          f"{args.rate:g} records/s into 10 of them, {args.seconds:g} s each:")
    medians = {}
    for name, xs in results.items():
        medians[name] = statistics.median(x["cpu_ms_per_fetch"] for x in xs)
        per_fetch = ", ".join(f"{x['cpu_ms_per_fetch']:.3f}" for x in xs)
        counts = ", ".join(f"{x['fetches']:.0f}" for x in xs)
        print(f"  {name:<12} CPU per fetch {per_fetch} ms (median {medians[name]:.3f}); fetches {counts}")
    print(f"  ratio (no sessions / sessions): {medians['no sessions'] / medians['sessions']:.1f}")


if __name__ == "__main__":
    main()
