#!/usr/bin/env python3
"""The long fault run, and the cluster's figures: failover time and replicated throughput.

1. Failover: three brokers on loopback, an idempotent acks=all producer (confluent-kafka)
   and a consumer group running throughout; the leader of a partition is killed with
   kill -9 --runs times (a different broker each time, restarted in between). Failover
   time is from the kill to the first acknowledgement, on a partition the victim led, of
   a record produced after the kill. At the end the checker of tests/cluster.py proves
   every acknowledged record is stored once, in order, and nothing consumed vanished.
2. Throughput: `gregor bench produce` (librdkafka, acks=all) against the same cluster,
   16 partitions of 1 KiB records, replication factor 1 and 3 alternating, --rounds each.

    python3 bench/failover.py [--runs 5] [--rounds 3] [--session-timeout-ms 2000]

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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="kill -9 failovers to time")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds per replication factor")
    ap.add_argument("--records", type=int, default=300_000, help="records per throughput round")
    ap.add_argument("--session-timeout-ms", type=int, default=2000,
                    help="broker.session.timeout.ms (Kafka's default is 9000)")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "gregor"))
    args = ap.parse_args()
    os.environ["GREGOR_BIN"] = args.binary
    import cluster as harness  # reads GREGOR_BIN

    env = {"GREGOR_BROKER_SESSION_TIMEOUT_MS": str(args.session_timeout_ms),
           "GREGOR_BROKER_HEARTBEAT_INTERVAL_MS": str(max(50, args.session_timeout_ms // 8))}
    with tempfile.TemporaryDirectory() as tmp:
        c = harness.Cluster(tmp, env=env).start()
        try:
            times = failovers(harness, c, args.runs)
            rf = throughput(c, args)
        finally:
            c.stop()
    print()
    print(f"failover (kill -9 of a leader to the first acknowledged produce there), "
          f"broker.session.timeout.ms={args.session_timeout_ms}:")
    print(f"  runs: {', '.join(f'{t:.2f}' for t in times)} s; median {statistics.median(times):.2f} s")
    m1, m3 = statistics.median(rf[1]), statistics.median(rf[3])
    print("produce throughput, 16 partitions, 1 KiB records, acks=all:")
    print(f"  replication factor 1: {', '.join(f'{x:.1f}' for x in rf[1])} MB/s; median {m1:.1f}")
    print(f"  replication factor 3: {', '.join(f'{x:.1f}' for x in rf[3])} MB/s; median {m3:.1f}")
    print(f"  ratio RF3/RF1: {m3 / m1:.2f}")


def failovers(harness, c, runs):
    topic, partitions = "failover", 3
    c.create_topic(topic, partitions, 3, {"min.insync.replicas": "2"})
    w = harness.Workload(c, topic, partitions, "failover-group").start()
    times = []
    try:
        w.wait_acks(300)
        for run in range(runs):
            parts = c.wait_leaders(topic, partitions, isr=3, timeout=60)
            victim = parts[run % partitions].leader
            led = [p for p, m in parts.items() if m.leader == victim]
            took = harness.failover_time(c, w, victim, led)
            times.append(took)
            print(f"run {run + 1}/{runs}: killed broker {victim} (leader of {led}); "
                  f"acknowledged again after {took:.2f} s", flush=True)
            w.wait_acks(200)
            c.nodes[victim].start()
        c.wait_leaders(topic, partitions, isr=3, timeout=60)
        w.wait_acks(200)
    finally:
        w.stop()
    summary = harness.check(c, w)
    assert not w.failed, f"producer failures: {w.failed[:3]}"
    print(f"checker: {summary['acked']} acknowledged, {summary['stored']} stored, "
          f"{summary['seen']} consumed; all present once and in order", flush=True)
    return times


def throughput(c, args):
    binary = args.binary
    out = {1: [], 3: []}
    for rf in (1, 3):
        c.create_topic(f"rf{rf}", 16, rf)
    for r in range(args.rounds):
        for rf in (1, 3):
            res = subprocess.run([binary, "bench", "produce", "--bootstrap", c.bootstrap,
                                  "--topic", f"rf{rf}", "--partitions", "16", "--record-bytes", "1024",
                                  "--records", str(args.records), "--acks", "all", "--json"],
                                 capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                raise SystemExit(f"gregor bench failed: {res.stderr[-2000:]}")
            report = json.loads(res.stdout)
            mb = report.get("mb_per_sec") or report.get("MB_per_sec")
            out[rf].append(mb)
            print(f"round {r + 1}/{args.rounds}, replication factor {rf}: {mb:.1f} MB/s", flush=True)
    return out


if __name__ == "__main__":
    t0 = time.monotonic()
    main()
    print(f"({time.monotonic() - t0:.0f} s)")
