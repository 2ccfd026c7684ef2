#!/usr/bin/env python3
"""How a broker copes with many partitions: for each count given, a fresh release broker
(or, with --brokers 3, a cluster of three on loopback) gets that many single-partition
topics through the admin API (CreateTopics, batches of --batch, replication factor
--rf), and the script measures

  create      seconds to create them all (and topics a second);
  rss         resident memory once idle (after 5 s; the largest broker's);
  metadata    seconds for a full Metadata request (every topic) to be answered;
  metrics     seconds for a /metrics scrape, and its size;
  stop        seconds from SIGTERM to exit (a clean stop; every broker at once);
  start       seconds from start until Metadata shows every partition with a leader,
              after that clean stop;
  start -9    the same after kill -9 (the logs are recovered).

    python3 bench/partitions.py [--counts 1000,10000] [--batch 500] [--timeout 900]
                                [--brokers 1|3] [--rf N] [--set KEY=VALUE ...] [--logs DIR]

--set passes a broker setting (as GREGOR_KEY_NAME), e.g. --set metrics.partition.series=topic.
Prints one row per count, then how each figure grew from the smallest count to each
larger one (the ratio, against the ratio of the counts). A count whose creation takes
longer than --timeout stops there and says so. Needs the release binary: cargo build --release
"""

import argparse
import os
import shutil
import signal
import socket
import struct
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
    def __init__(self, binary, data, port, metrics_port, env=None, controllers=None, node_id=1):
        self.binary, self.data, self.port, self.metrics_port = binary, data, port, metrics_port
        self.env, self.controllers, self.node_id = env or {}, controllers, node_id
        data.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(data.parent / f"broker{node_id}.log", "ab")
        self.proc = None

    def start(self):
        args = [self.binary, "broker", "--data-dir", str(self.data), "--listen",
                f"127.0.0.1:{self.port}", "--metrics", f"127.0.0.1:{self.metrics_port}"]
        if self.controllers:
            args += ["--node-id", str(self.node_id), "--controllers", self.controllers]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, env={**os.environ, **self.env})

    def wait_port(self, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"broker exited: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.proc.kill()
        sys.exit(f"broker {self.node_id} did not listen within {timeout} s; its log ends:\n{self.log_tail()}")

    def log_tail(self):
        return (self.data.parent / f"broker{self.node_id}.log").read_text(errors="replace")[-3000:]

    def rss_mb(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def full_metadata(port):
    """Seconds for a Metadata v1 request for every topic, the topics in the answer, and
    how many of their partitions have a leader."""
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
    topics = r.take(">i")
    led = 0
    for _ in range(topics):
        r.take(">h"), r.string(), r.take(">b")  # error, name, internal
        for _ in range(r.take(">i")):
            error, _, leader = r.take(">h"), r.take(">i"), r.take(">i")
            for _ in range(2):  # replicas, isr
                for _ in range(r.take(">i")):
                    r.take(">i")
            led += error == 0 and leader >= 0
    return took, topics, led


def struct_null_array():
    return (-1).to_bytes(4, "big", signed=True)


def wait_topics(port, count, timeout=600):
    """Waits until Metadata lists `count` topics and every partition has a leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, topics, led = full_metadata(port)
            if topics >= count and led >= count:
                return
        except (OSError, AssertionError, TypeError, struct.error):
            pass
        time.sleep(0.05)
    sys.exit(f"the broker did not list {count} topics, each with a leader, within {timeout} s")


def stop_all(brokers, sig):
    for b in brokers:
        b.proc.send_signal(sig)
    for b in brokers:
        b.proc.wait(timeout=600)


RUNNING = []


def kill_running():
    for b in RUNNING:
        if b.proc is not None and b.proc.poll() is None:
            b.proc.kill()


def measure(binary, count, batch, timeout, brokers, rf, env, logs=None):
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        try:
            return measure_in(tmp, binary, count, batch, timeout, brokers, rf, env)
        finally:
            if logs:
                Path(logs).mkdir(parents=True, exist_ok=True)
                for log in tmp.glob("broker*.log"):
                    shutil.copy(log, Path(logs) / f"{count}-{log.name}")


def measure_in(tmp, binary, count, batch, timeout, brokers, rf, env):
    ports = [free_port() for _ in range(brokers)]
    controllers = None
    if brokers > 1:
        # The metadata quorum's ports, beside the Kafka listeners.
        controllers = ",".join(f"{i + 1}@127.0.0.1:{free_port()}" for i in range(brokers))
    nodes = [Broker(binary, tmp / f"data{i + 1}", ports[i], free_port(), env, controllers, i + 1)
             for i in range(brokers)]
    RUNNING[:] = nodes
    for b in nodes:
        b.start()
    for b in nodes:
        b.wait_port()
    b = nodes[0]
    bootstrap = ",".join(f"127.0.0.1:{n.port}" for n in nodes)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 60
    while len(admin.list_topics(timeout=10).brokers) < brokers:
        if time.monotonic() > deadline:
            sys.exit(f"{brokers} brokers did not register within 60 s")
        time.sleep(0.2)
    started = time.monotonic()
    for first in range(0, count, batch):
        names = [f"t{i:06d}" for i in range(first, min(count, first + batch))]
        futures = admin.create_topics([NewTopic(n, 1, rf) for n in names], operation_timeout=600,
                                      request_timeout=600)
        for f in futures.values():
            f.result(600)
        elapsed = time.monotonic() - started
        print(f"  {count:,}: {first + len(names):,} topics in {elapsed:.0f} s", end="\r", file=sys.stderr, flush=True)
        if elapsed > timeout:
            print(file=sys.stderr)
            for n in nodes:
                n.proc.kill()
            return {"count": count, "stopped": f"{first + len(names):,} topics after {elapsed:.0f} s"}
    print(file=sys.stderr)
    create = time.monotonic() - started
    wait_topics(b.port, count)
    time.sleep(5)
    row = {"count": count, "create": create, "rss": max(n.rss_mb() for n in nodes)}
    row["metadata"], listed, _ = full_metadata(b.port)
    assert listed >= count, f"Metadata listed {listed} of {count} topics"
    started = time.monotonic()
    body = urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=300).read()
    row["metrics"], row["metrics_mb"] = time.monotonic() - started, len(body) / 1e6
    started = time.monotonic()
    stop_all(nodes, signal.SIGTERM)
    row["stop"] = time.monotonic() - started
    for name, stop in (("start", signal.SIGTERM), ("start_kill9", signal.SIGKILL)):
        started = time.monotonic()
        for n in nodes:
            n.start()
        for n in nodes:
            n.wait_port()
        wait_topics(b.port, count)
        row[name] = time.monotonic() - started
        stop_all(nodes, stop)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="1000,10000")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=900, help="seconds of creation after which a count stops")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "gregor"))
    ap.add_argument("--brokers", type=int, default=1)
    ap.add_argument("--rf", type=int, default=1, help="replication factor of each topic")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a broker setting")
    ap.add_argument("--logs", metavar="DIR", help="keep each run's broker logs in DIR (COUNT-brokerN.log)")
    args = ap.parse_args()
    env = {}
    for kv in args.set:
        key, _, val = kv.partition("=")
        env["GREGOR_" + key.upper().replace(".", "_")] = val
    if args.brokers > 1:
        # Kafka's default timeouts: a busy 2-core machine must not fence a broker.
        env.setdefault("GREGOR_BROKER_SESSION_TIMEOUT_MS", "9000")
        env.setdefault("GREGOR_BROKER_HEARTBEAT_INTERVAL_MS", "2000")
    print(f"brokers: {args.brokers}, replication factor {args.rf}, settings: {' '.join(args.set) or 'defaults'}")
    rows = []
    print("partitions | create s (topics/s) | idle RSS MB | full Metadata s | /metrics s (MB) | clean stop s | start after stop s | start after kill -9 s")
    print("---|---|---|---|---|---|---|---")
    for count in (int(c) for c in args.counts.split(",")):
        row = measure(args.binary, count, args.batch, args.timeout, args.brokers, args.rf, env, args.logs)
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
    import atexit

    atexit.register(kill_running)
    main()
