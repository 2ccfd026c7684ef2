#!/usr/bin/env python3
"""Produce throughput on one broker with unreplicated partitions fsynced before they are
acknowledged (`log.flush.unreplicated.enable`, the default) and without (Kafka's
behaviour: the page cache only), side by side.

Each round starts a fresh release broker per mode and runs `gregor bench produce` (1 KiB
records, 16 partitions, --acks, as fast as one librdkafka producer goes) against it; the
modes alternate within a round. Prints every round, the medians, and the ratio of the
medians (the goal: the fsynced default keeps at least 80% of the throughput).

    python3 bench/durable_default.py [--rounds 5] [--records 1000000] [--acks 1]

Needs the release binary with the bench feature:
    cargo build --release --features gregor/bench
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sendfile import ROOT, bench, free_port, start  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--acks", default="1")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "gregor"))
    args = ap.parse_args()
    modes = {"fsync before ack (default)": {},
             "page cache only (Kafka)": {"GREGOR_LOG_FLUSH_UNREPLICATED_ENABLE": "false"}}
    results = {m: [] for m in modes}
    for r in range(args.rounds):
        for name, env in (modes.items() if r % 2 == 0 else reversed(list(modes.items()))):
            subprocess.run(["sync"], check=False)
            with tempfile.TemporaryDirectory() as tmp:
                port = free_port()
                proc = start(args.binary, Path(tmp) / "data", port, env)
                try:
                    out = bench(args.binary, port, "produce", "--workload", "1-topic-16-partitions-1kb",
                                "--records", str(args.records), "--seconds", "60", "--acks", args.acks)
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
            results[name].append(out["mb_per_sec"])
            print(f"round {r + 1}: {name}: {out['mb_per_sec']:,.1f} MB/s", flush=True)
    print(f"\n{args.rounds} rounds, {args.records:,} records of 1 KiB, 16 partitions, acks={args.acks}, one broker:")
    medians = {}
    for name, xs in results.items():
        medians[name] = statistics.median(xs)
        print(f"  {name:<28} {', '.join(f'{x:,.1f}' for x in xs)} MB/s (median {medians[name]:,.1f})")
    a, b = list(medians.values())
    print(f"  ratio (fsync / page cache): {a / b:.2f}")


if __name__ == "__main__":
    main()
