#!/usr/bin/env python3
"""Produce throughput through confluent-kafka (librdkafka) with idempotence off and on, and
with transactions of 100 and of 10,000 records, in one run (modes interleaved per round).

    python3 bench/txn_throughput.py [--records N] [--record-bytes B] [--partitions P] [--runs R]

Every mode uses acks=all (idempotence requires it), linger 5 ms, no compression. Starts
target/release/gregor (or GREGOR_BIN) on a free loopback port with a temporary data
directory, unless --bootstrap points at a running broker. Prints one line per run and the
median of each mode with its ratio to plain produce. Bounded: N records per run, R rounds."""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

BASE = {"linger.ms": 5, "batch.size": 1 << 20, "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1 << 21, "acks": "all", "compression.type": "none"}

MODES = {
    "idempotence off": ({"enable.idempotence": False}, None),
    "idempotence on": ({"enable.idempotence": True}, None),
    "transactions of 100": ({}, 100),
    "transactions of 10,000": ({}, 10_000),
}


def produce(bootstrap, topic, n, size, extra, txn_size, txn_id):
    conf = {"bootstrap.servers": bootstrap, **BASE, **extra}
    if txn_size:
        conf["transactional.id"] = txn_id
    p = Producer(conf)
    if txn_size:
        p.init_transactions(30)
    payload = os.urandom(size)
    failures = []

    def on_delivery(err, _msg):
        if err:
            failures.append(err)

    start = time.perf_counter()
    for i in range(n):
        if txn_size and i % txn_size == 0:
            if i:
                p.commit_transaction(60)
            p.begin_transaction()
        while True:
            try:
                p.produce(topic, payload, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    if txn_size:
        p.commit_transaction(60)
    left = p.flush(120)
    elapsed = time.perf_counter() - start
    assert left == 0 and not failures, f"{left} undelivered, {len(failures)} failed: {failures[:3]}"
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--record-bytes", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bootstrap")
    args = ap.parse_args()

    proc = None
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        from conftest import free_port
        binary = os.environ.get("GREGOR_BIN", str(Path(__file__).resolve().parent.parent / "target/release/gregor"))
        data = tempfile.mkdtemp(prefix="gregor-bench-")
        bootstrap = f"127.0.0.1:{free_port()}"
        proc = subprocess.Popen([binary, "broker", "--data-dir", data, "--listen", bootstrap],
                                stderr=subprocess.DEVNULL)
        time.sleep(1)
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        results = {m: [] for m in MODES}
        for run in range(args.runs):
            for mode, (extra, txn_size) in MODES.items():
                topic = f"txbench-{run}-{len(results[mode])}-{time.time_ns()}"
                admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
                elapsed = produce(bootstrap, topic, args.records, args.record_bytes, extra, txn_size,
                                  f"bench-{run}-{mode}")
                rate = args.records / elapsed
                results[mode].append(rate)
                print(f"run {run + 1}/{args.runs} {mode}: {rate:,.0f} rec/s "
                      f"{rate * args.record_bytes / 1e6:.1f} MB/s", flush=True)
        base = statistics.median(results["idempotence off"])
        print(f"medians of {args.runs} ({args.records:,} x {args.record_bytes} B records, "
              f"{args.partitions} partitions, acks=all):")
        for mode, rates in results.items():
            med = statistics.median(rates)
            print(f"  {mode:24} {med:>10,.0f} rec/s {med * args.record_bytes / 1e6:7.1f} MB/s "
                  f"x{med / base:.2f} of idempotence off")
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
