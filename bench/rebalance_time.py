#!/usr/bin/env python3
"""How long a rebalance takes: from a member's departure to the survivors' first record
from the partitions it owned. Three confluent-kafka members on six partitions; the
departing member either closes (LeaveGroup) or is killed (its session, 6 s, must time out).

    python3 bench/rebalance_time.py [--runs N] [--assignor range|cooperative-sticky]

Starts target/release/gregor (or GREGOR_BIN) on a free loopback port. Prints each run and
the median per mode."""

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
from conftest import free_port  # noqa: E402
from members import Member, wait_for  # noqa: E402

PARTITIONS = 6


def one_run(bootstrap, run, mode, assignor):
    topic, group = f"rb-{mode}-{run}", f"rb-{mode}-{run}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until its future completes
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    members = [Member("confluent", bootstrap, topic, group, assignor) for _ in range(3)]
    try:
        wait_for(lambda: all(len(m.assignment()) == 2 for m in members) and len(set().union(*(m.assignment() for m in members))) == 6, 60, "balance")
        gone = members[0].assignment()
        t0 = time.time()
        if mode == "close":
            members[0].close()
        else:
            members[0].kill()
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        for part in gone:
            p.produce(topic, b"after", partition=part)
        p.flush(10)
        survivors = members[1:]

        def first():
            times = [t for m in survivors for (part, _, v, t) in m.records() if part in gone and v == "after"]
            return min(times) if times else None

        wait_for(lambda: first() is not None, 60, "a survivor to read a departed partition")
        return first() - t0
    finally:
        for m in members:
            if m.alive():
                m.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--assignor", default="range")
    args = ap.parse_args()
    binary = os.environ.get("GREGOR_BIN", str(Path(__file__).resolve().parent.parent / "target/release/gregor"))
    bootstrap = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([binary, "broker", "--data-dir", tempfile.mkdtemp(prefix="gregor-rb-"), "--listen", bootstrap], stderr=subprocess.DEVNULL)
    time.sleep(1)
    try:
        for mode in ("close", "kill"):
            took = []
            for run in range(args.runs):
                took.append(one_run(bootstrap, run, mode, args.assignor))
                print(f"{mode} run {run + 1}/{args.runs}: {took[-1]:.2f} s", flush=True)
            print(f"median {mode} ({args.assignor}): {statistics.median(took):.2f} s over {args.runs} runs", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
