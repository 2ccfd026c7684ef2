#!/usr/bin/env python3
"""How one broker copes with many partitions: for each count given, a fresh release broker
gets that many single-partition topics through the admin API (CreateTopics, batches of
--batch), and the script measures

  create      seconds to create them all (and topics a second);
  rss         resident memory once idle (after 5 s);
  metadata    seconds for a full Metadata request (every topic) to be answered;
  metrics     seconds for a /metrics scrape, and its size;
  stop        seconds from SIGTERM to exit (a clean stop);
  start       seconds from start to answering Metadata with every topic, after that clean stop;
  start -9    the same after kill -9 (the logs are recovered).

    python3 bench/partitions.py [--counts 1000,10000] [--batch 500] [--timeout 900]

Prints one row per count, then how each figure grew from the smallest count to each
larger one (the ratio, against the ratio of the counts). A count whose creation takes
longer than --timeout stops there and says so. Needs the release binary: cargo build --release
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import kafka_raw as raw  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary, data, port, metrics_port):
        self.binary, self.data, self.port, self.metrics_port = binary, data, port, metrics_port
        self.log = open(data.parent / "broker.log", "ab")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([self.binary, "broker", "--data-dir", str(self.data), "--listen",
                                      f"127.0.0.1:{self.port}", "--metrics", f"127.0.0.1:{self.metrics_port}"],
                                     stdout=self.log, stderr=self.log)

    def wait_port(self, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"broker exited: {(self.data.parent / 'broker.log').read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        sys.exit("broker did not listen")

    def rss_mb(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def full_metadata(port):
    """Seconds for a Metadata v1 request for every topic, and the topics in the answer."""
    c = raw.Conn(f"127.0.0.1:{port}", timeout=300)
    started = time.monotonic()
    c.send_raw(raw.frame(3, 1, 1, struct_null_array()))
    resp = c.recv_frame()
    took = time.monotonic() - started
    c.close()
    r = raw.Reader(resp)
    r.take(">i")  # correlation id
    for _ in range(r.take(">i")):  # brokers
        r.take(">i"), r.string(), r.take(">i"), r.string()
    r.take(">i")  # controller
    return took, r.take(">i")


def struct_null_array():
    return (-1).to_bytes(4, "big", signed=True)


def wait_topics(port, count, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if full_metadata(port)[1] >= count:
                return
        except (OSError, AssertionError, TypeError):
            pass
        time.sleep(0.05)
    sys.exit(f"the broker did not list {count} topics within {timeout} s")


def measure(binary, count, batch, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        b = Broker(binary, tmp / "data", free_port(), free_port())
        b.start()
        b.wait_port()
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{b.port}"})
        started = time.monotonic()
        for first in range(0, count, batch):
            names = [f"t{i:06d}" for i in range(first, min(count, first + batch))]
            futures = admin.create_topics([NewTopic(n, 1, 1) for n in names], operation_timeout=600,
                                          request_timeout=600)
            for f in futures.values():
                f.result(600)
            elapsed = time.monotonic() - started
            print(f"  {count:,}: {first + len(names):,} topics in {elapsed:.0f} s", end="\r", file=sys.stderr, flush=True)
            if elapsed > timeout:
                print(file=sys.stderr)
                b.proc.kill()
                return {"count": count, "stopped": f"{first + len(names):,} topics after {elapsed:.0f} s"}
        print(file=sys.stderr)
        create = time.monotonic() - started
        time.sleep(5)
        row = {"count": count, "create": create, "rss": b.rss_mb()}
        row["metadata"], listed = full_metadata(b.port)
        assert listed >= count, f"Metadata listed {listed} of {count} topics"
        started = time.monotonic()
        body = urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=300).read()
        row["metrics"], row["metrics_mb"] = time.monotonic() - started, len(body) / 1e6
        started = time.monotonic()
        b.proc.send_signal(signal.SIGTERM)
        b.proc.wait(timeout=600)
        row["stop"] = time.monotonic() - started
        for name, stop in (("start", None), ("start_kill9", signal.SIGKILL)):
            started = time.monotonic()
            b.start()
            b.wait_port()
            wait_topics(b.port, count)
            row[name] = time.monotonic() - started
            if stop is None:
                b.proc.send_signal(signal.SIGTERM)
                b.proc.wait(timeout=600)
            else:
                b.proc.kill()
                b.proc.wait()
        return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="1000,10000")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=900, help="seconds of creation after which a count stops")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "gregor"))
    args = ap.parse_args()
    rows = []
    print("partitions | create s (topics/s) | idle RSS MB | full Metadata s | /metrics s (MB) | clean stop s | start after stop s | start after kill -9 s")
    print("---|---|---|---|---|---|---|---")
    for count in (int(c) for c in args.counts.split(",")):
        row = measure(args.binary, count, args.batch, args.timeout)
        rows.append(row)
        if "stopped" in row:
            print(f"{count:,} | stopped: {row['stopped']} | | | | | |", flush=True)
            continue
        print(f"{count:,} | {row['create']:.1f} ({count / row['create']:,.0f}) | {row['rss']:.0f} | {row['metadata']:.3f} | "
              f"{row['metrics']:.3f} ({row['metrics_mb']:.1f}) | {row['stop']:.2f} | {row['start']:.2f} | {row['start_kill9']:.2f}",
              flush=True)
    done = [r for r in rows if "stopped" not in r]
    if len(done) > 1:
        base = done[0]
        print()
        for r in done[1:]:
            k = r["count"] / base["count"]
            growth = ", ".join(f"{key} ×{r[key] / base[key]:.1f}" for key in
                               ("create", "rss", "metadata", "metrics", "stop", "start", "start_kill9") if base[key] > 0)
            print(f"{base['count']:,} → {r['count']:,} partitions (×{k:g}): {growth}")


if __name__ == "__main__":
    main()
