#!/usr/bin/env python3
"""Produce throughput over TLS beside plaintext, on one broker in one run.

One release broker with three listeners (PLAINTEXT, SSL, and SASL_SSL with a SCRAM-SHA-512
user created offline) and `gregor bench produce` (librdkafka, 16 partitions of 1 KiB
records, acks=1) against each in turn, --rounds times, alternating so the machine's noise
falls on all alike. Prints every round, the medians, and the ratios to plaintext.

    python3 bench/tls.py [--rounds 3] [--records 300000]

The load generator is target/release/gregor-bench where it exists (see bench/README.md),
else the broker binary, which then needs the bench feature:
    cargo build --release --features gregor/bench
"""

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from certs import Authority, write_identity  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "gregor"))
    ap.add_argument("--load", default=str(ROOT / "target" / "release" / "gregor-bench"),
                    help="the load generator (default: gregor-bench, else --binary)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ca = Authority()
        ca_file = ca.write_ca(tmp / "ca.pem")
        _, _, pem = write_identity(tmp, "server", *ca.issue("localhost", server=True))
        data = tmp / "data"
        ports = {n: free_port() for n in ("PLAINTEXT", "SSL", "SASL_SSL")}
        (tmp / "broker.toml").write_text(f'''
"listeners" = "{','.join(f'{n}://127.0.0.1:{p}' for n, p in ports.items())}"
"inter.broker.listener.name" = "PLAINTEXT"
"ssl.keystore.location" = "{pem}"
"sasl.enabled.mechanisms" = "SCRAM-SHA-512"
"log.dirs" = "{data}"
"metrics.listener" = "off"
''')
        (tmp / "password").write_text("bench-secret")
        subprocess.run([args.binary, "user", "create", "bench", "--data-dir", str(data), "--mechanism",
                        "SCRAM-SHA-512", "--password-file", str(tmp / "password")], check=True, capture_output=True)
        load = args.load if Path(args.load).exists() else args.binary
        log = open(tmp / "broker.log", "wb")
        broker = subprocess.Popen([args.binary, "broker", "--config", str(tmp / "broker.toml")], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            for p in ports.values():
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", p), timeout=0.2).close()
                        break
                    except OSError:
                        assert time.monotonic() < deadline and broker.poll() is None, (tmp / "broker.log").read_text()
                        time.sleep(0.05)
            client = {
                "PLAINTEXT": [],
                "SSL": ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={ca_file}"],
                "SASL_SSL": ["-X", "security.protocol=SASL_SSL", "-X", f"ssl.ca.location={ca_file}",
                             "-X", "sasl.mechanism=SCRAM-SHA-512", "-X", "sasl.username=bench",
                             "-X", "sasl.password=bench-secret"],
            }
            results = {n: [] for n in ports}
            for r in range(args.rounds):
                for name, port in ports.items():
                    out = subprocess.run(
                        [load, "bench", "produce", "--bootstrap", f"127.0.0.1:{port}",
                         "--topic", f"tls-{name.lower()}-{r}", "--partitions", "16", "--record-bytes", "1024",
                         "--records", str(args.records), "--acks", "1", "--json", *client[name]],
                        capture_output=True, text=True, timeout=600)
                    if out.returncode != 0:
                        sys.exit(f"gregor bench against {name} failed:\n{out.stderr}")
                    mb = json.loads(out.stdout)["mb_per_sec"]
                    results[name].append(mb)
                    print(f"round {r + 1}: {name:<9} {mb:7.1f} MB/s", flush=True)
        finally:
            broker.terminate()
            broker.wait(timeout=30)
    base = statistics.median(results["PLAINTEXT"])
    print("\nproduce, 16 partitions, 1 KiB records, acks=1, one broker:")
    for name, xs in results.items():
        m = statistics.median(xs)
        print(f"  {name:<9} {', '.join(f'{x:.1f}' for x in xs)} MB/s; median {m:.1f} MB/s ({m / base:.2f} of plaintext)")


if __name__ == "__main__":
    main()
