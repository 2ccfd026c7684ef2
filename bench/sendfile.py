#!/usr/bin/env python3
"""Consume throughput and broker CPU with fetches sent from the page cache (sendfile)
beside fetches read into the broker's memory, in one run.

Two release brokers on loopback, alike but for `GREGOR_FETCH_SENDFILE=false` on the second. Each
gets the same topic (16 partitions, --records 1 KiB records, written by `gregor bench
produce`); then `gregor bench consume` (librdkafka, 1 MiB partition fetches) reads it from
each in turn, --rounds times, alternating so the machine's noise falls on both alike.
Prints every round's MB/s and the broker's CPU seconds for it (from /proc), the medians,
and the ratios.

    python3 bench/sendfile.py [--rounds 5] [--records 500000]

Needs the release binary with the bench feature:
    cargo build --release --features gregor/bench
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def start(binary, data, port, env, metrics_port=None):
    log = open(data.parent / f"{data.name}.log", "wb")
    metrics = f"127.0.0.1:{metrics_port}" if metrics_port else "off"
    p = subprocess.Popen([binary, "broker", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
                          "--metrics", metrics], stdout=log, stderr=log, env={**os.environ, **env})
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p
        except OSError:
            if time.monotonic() > deadline or p.poll() is not None:
                sys.exit(f"broker did not start: {(data.parent / f'{data.name}.log').read_text()}")
            time.sleep(0.05)


def bench(binary, port, *args):
    out = subprocess.run([binary, "bench", *args, "--bootstrap", f"127.0.0.1:{port}", "--json"],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        sys.exit(f"gregor bench {args[0]} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "gregor"))
    args = ap.parse_args()
    modes = {"sendfile": {}, "read": {"GREGOR_FETCH_SENDFILE": "false"}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        brokers = {}
        try:
            for name, env in modes.items():
                port = free_port()
                brokers[name] = (start(args.binary, tmp / name, port, env), port)
                bench(args.binary, port, "produce", "--topic", "t", "--partitions", "16", "--record-bytes", "1024",
                      "--records", str(args.records), "--acks", "1")
                print(f"{name}: wrote {args.records:,} records", flush=True)
            results = {n: [] for n in modes}
            for r in range(args.rounds):
                for name, (proc, port) in brokers.items():
                    before = cpu_seconds(proc.pid)
                    out = bench(args.binary, port, "consume", "--topic", "t", "--partitions", "16",
                                "--record-bytes", "1024", "--records", str(args.records),
                                "--fetch-bytes", str(1 << 20))
                    cpu = cpu_seconds(proc.pid) - before
                    if out["records"] < args.records:
                        sys.exit(f"{name}: consumed {out['records']} of {args.records}")
                    results[name].append((out["mb_per_sec"], cpu))
                    print(f"round {r + 1}: {name:<8} {out['mb_per_sec']:7.1f} MB/s, broker CPU {cpu:.2f} s", flush=True)
        finally:
            for proc, _ in brokers.values():
                proc.terminate()
                proc.wait(timeout=30)
    print(f"\nconsume {args.records:,} × 1 KiB from 16 partitions, 1 MiB fetches, one broker:")
    med = {n: (statistics.median(x for x, _ in xs), statistics.median(c for _, c in xs)) for n, xs in results.items()}
    for name, xs in results.items():
        print(f"  {name:<8} {', '.join(f'{x:.1f}' for x, _ in xs)} MB/s; median {med[name][0]:.1f} MB/s, "
              f"broker CPU median {med[name][1]:.2f} s")
    print(f"  sendfile / read: throughput {med['sendfile'][0] / med['read'][0]:.2f}, "
          f"broker CPU {med['sendfile'][1] / med['read'][1]:.2f}")


if __name__ == "__main__":
    main()
