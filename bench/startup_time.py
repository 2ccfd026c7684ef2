#!/usr/bin/env python3
"""Broker start-up time with many partitions: after a clean stop, and after kill -9 (every
active segment verified). Creates one topic with N partitions, writes one record to each,
then restarts the broker R times per mode.

    python3 bench/startup_time.py [--partitions 10000] [--runs 3]
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from conftest import free_port  # noqa: E402


def start(binary, data, bootstrap):
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary, "broker", "--data-dir", data, "--listen", bootstrap], stderr=subprocess.DEVNULL)
    host, port = bootstrap.rsplit(":", 1)
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=0.2).close()
            return proc, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("broker exited during start-up")
            time.sleep(0.01)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fill-gb", type=float, default=0, help="also write this many GB (256 KiB records over 100 partitions)")
    args = ap.parse_args()
    binary = os.environ.get("GREGOR_BIN", str(Path(__file__).resolve().parent.parent / "target/release/gregor"))
    data = tempfile.mkdtemp(prefix="gregor-startup-")
    bootstrap = f"127.0.0.1:{free_port()}"
    proc, _ = start(binary, data, bootstrap)
    t0 = time.perf_counter()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("many", args.partitions, 1)], request_timeout=300)["many"].result(300)
    print(f"created {args.partitions:,} partitions in {time.perf_counter() - t0:.2f} s", flush=True)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(args.partitions):
        p.produce("many", b"x" * 100, partition=i)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    print("wrote one record to each partition", flush=True)
    if args.fill_gb > 0:
        t0 = time.perf_counter()
        big = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 1 << 20, "queue.buffering.max.kbytes": 1 << 20})
        chunk = os.urandom(256 * 1024)
        count = int(args.fill_gb * 1e9 / len(chunk))
        for i in range(count):
            while True:
                try:
                    big.produce("many", chunk, partition=i % 100)
                    break
                except BufferError:
                    big.poll(0.05)
            if i % 4000 == 0:
                print(f"  filled {i * len(chunk) / 1e9:.1f} GB", flush=True)
        assert big.flush(600) == 0
        print(f"wrote {args.fill_gb} GB in {time.perf_counter() - t0:.0f} s", flush=True)
    for mode in ("clean", "kill -9"):
        took = []
        for run in range(args.runs):
            proc.send_signal(signal.SIGTERM if mode == "clean" else signal.SIGKILL)
            proc.wait(120)
            proc, t = start(binary, data, bootstrap)
            took.append(t)
            print(f"start-up after {mode} stop, run {run + 1}/{args.runs}: {t:.2f} s", flush=True)
        print(f"median start-up after {mode} stop: {statistics.median(took):.2f} s ({args.partitions:,} partitions)", flush=True)
    proc.terminate()
    proc.wait(120)


if __name__ == "__main__":
    main()
