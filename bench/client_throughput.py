#!/usr/bin/env python3
"""Produce and consume throughput through confluent-kafka (librdkafka) against a broker,
and the broker's resident memory idle and under that load.

    python3 bench/client_throughput.py [--records N] [--record-bytes B] [--partitions P] [--runs R]

Starts target/release/gregor (or GREGOR_BIN) on a free loopback port with a temporary data
directory, unless --bootstrap points at a running broker. Prints one line per run and the
median of each figure. Bounded: N records per run, R runs."""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop_flag = pid, 0.0, False

    def run(self):
        while not self.stop_flag:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.05)


def produce(bootstrap, topic, n, size):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1 << 20,
                  "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1 << 21,
                  "acks": "1", "compression.type": "none"})
    payload = os.urandom(size)
    failures = []
    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, payload, on_delivery=(lambda err, msg: failures.append(err) if err else None))
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    left = p.flush(120)
    elapsed = time.perf_counter() - start
    assert left == 0 and not failures, f"{left} undelivered, {len(failures)} failed: {failures[:3]}"
    return elapsed


def consume(bootstrap, topic, partitions, n):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False,
                  "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 1 << 20})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got, start = 0, time.perf_counter()
    deadline = start + 300
    while got < n and time.perf_counter() < deadline:
        for m in c.consume(10000, 1.0):
            if m.error() is None:
                got += 1
    elapsed = time.perf_counter() - start
    c.close()
    assert got == n, f"consumed {got} of {n}"
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--record-bytes", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bootstrap")
    args = ap.parse_args()

    proc = None
    if args.bootstrap:
        bootstrap, pid = args.bootstrap, None
    else:
        from conftest import free_port
        binary = os.environ.get("GREGOR_BIN", str(Path(__file__).resolve().parent.parent / "target/release/gregor"))
        data = tempfile.mkdtemp(prefix="gregor-bench-")
        bootstrap = f"127.0.0.1:{free_port()}"
        proc = subprocess.Popen([binary, "broker", "--data-dir", data, "--listen", bootstrap],
                                stderr=subprocess.DEVNULL)
        pid = proc.pid
        time.sleep(1)
    try:
        if pid:
            print(f"broker rss idle: {rss_mb(pid):.1f} MB", flush=True)
        mb = args.records * args.record_bytes / 1e6
        rows = []
        for run in range(args.runs):
            topic = f"bench-{run}-{time.time_ns()}"
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
            sampler = RssSampler(pid) if pid else None
            if sampler:
                sampler.start()
            tp = produce(bootstrap, topic, args.records, args.record_bytes)
            tc = consume(bootstrap, topic, args.partitions, args.records)
            peak = sampler.peak if sampler else float("nan")
            if sampler:
                sampler.stop_flag = True
            rows.append((args.records / tp, mb / tp, args.records / tc, mb / tc, peak))
            print(f"run {run + 1}/{args.runs}: produce {rows[-1][0]:,.0f} rec/s {rows[-1][1]:.1f} MB/s | "
                  f"consume {rows[-1][2]:,.0f} rec/s {rows[-1][3]:.1f} MB/s | broker rss peak {peak:.1f} MB", flush=True)
        med = [statistics.median(col) for col in zip(*rows)]
        print(f"median of {args.runs}: produce {med[0]:,.0f} rec/s {med[1]:.1f} MB/s | "
              f"consume {med[2]:,.0f} rec/s {med[3]:.1f} MB/s | broker rss peak {med[4]:.1f} MB "
              f"({args.records:,} x {args.record_bytes} B records, {args.partitions} partitions, acks=1)")
        if pid:
            time.sleep(1)
            print(f"broker rss after load: {rss_mb(pid):.1f} MB")
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
