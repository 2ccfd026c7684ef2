#!/usr/bin/env python3
"""Client quotas on one broker: a producer held to its producer_byte_rate, and an
unthrottled producer beside it that keeps its throughput.

Each round starts a fresh release broker, sets `producer_byte_rate` for the client id
`throttled` (`gregor quota set`), and measures with `gregor bench produce` (1 KiB records,
one partition each, one librdkafka producer each):
  1. the unthrottled producer (client id `free`) alone;
  2. a warm-up of the throttled producer (12 s, so that its rate is measured over a full
     window: a client new to the broker may first send about ten seconds' worth at once,
     as in Kafka), then both at once: the throttled one and `free`.
It prints every round, the medians, the throttled rate against its quota, and the free
producer's rate with the throttled one beside it against alone.

    python3 bench/quotas.py [--rounds 3] [--seconds 30] [--quota-mb 10]

Needs the release binary with the bench feature:
    cargo build --release --features gregor/bench
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sendfile import ROOT, bench, free_port, start  # noqa: E402


def produce(binary, port, client_id, topic, seconds, rate=0):
    """`gregor bench produce`; `rate` records a second offered (0: as fast as it goes)."""
    # Retention keeps the disk from filling: the free producer writes over 600 MB/s.
    return bench(binary, port, "produce", "--topic", topic, "--partitions", "1", "--record-bytes", "1024",
                 "--records", "1000000000", "--seconds", str(seconds), "--rate", str(int(rate)),
                 "--topic-config", "retention.bytes=2147483648", "--topic-config", "segment.bytes=268435456",
                 "-X", f"client.id={client_id}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--quota-mb", type=float, default=10, help="the throttled client's quota, MB/s (10^6 bytes)")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "gregor"))
    args = ap.parse_args()
    quota = args.quota_mb * 1e6
    alone, beside, throttled = [], [], []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            proc = start(args.binary, Path(tmp) / "data", port, {"GREGOR_LOG_RETENTION_CHECK_INTERVAL_MS": "1000"})
            try:
                subprocess.run([args.binary, "quota", "set", "--bootstrap", f"127.0.0.1:{port}", "--client-id",
                                "throttled", f"producer_byte_rate={quota:.0f}"], check=True, capture_output=True)
                alone.append(produce(args.binary, port, "free", "free-alone", args.seconds)["mb_per_sec"])
                # The throttled producer offers half as much again as its quota: what it
                # queues beyond the quota it sends after --seconds, still at the quota,
                # and that time counts too (gregor bench waits for every delivery).
                offered = 1.5 * quota / 1024
                produce(args.binary, port, "throttled", "warm-up", 12, offered)
                out = {}
                t = threading.Thread(target=lambda: out.update(
                    throttled=produce(args.binary, port, "throttled", "held", args.seconds, offered)))
                t.start()
                out["free"] = produce(args.binary, port, "free", "free-beside", args.seconds)
                t.join()
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        beside.append(out["free"]["mb_per_sec"])
        throttled.append(out["throttled"]["mb_per_sec"])
        print(f"round {r + 1}: free alone {alone[-1]:,.1f} MB/s; together: free {beside[-1]:,.1f} MB/s, "
              f"throttled {throttled[-1]:,.2f} MB/s (quota {args.quota_mb:g})", flush=True)
    med = statistics.median
    print(f"\n{args.rounds} rounds of {args.seconds:g} s, 1 KiB records, one broker:")
    print(f"  throttled producer: {', '.join(f'{x:,.2f}' for x in throttled)} MB/s (median {med(throttled):,.2f}); "
          f"quota {args.quota_mb:g} MB/s; ratio {med(throttled) / args.quota_mb:.3f}")
    print(f"  free producer alone: {', '.join(f'{x:,.1f}' for x in alone)} MB/s (median {med(alone):,.1f})")
    print(f"  free producer beside the throttled one: {', '.join(f'{x:,.1f}' for x in beside)} MB/s "
          f"(median {med(beside):,.1f}); ratio to alone {med(beside) / med(alone):.2f}")


if __name__ == "__main__":
    main()
