"""Test-side handle on group_member.py processes."""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

WORKER = Path(__file__).with_name("group_member.py")


class Member:
    def __init__(self, client, bootstrap, topic, group, assignor=None, instance_id=None, reset="earliest", session_ms=6000):
        args = [sys.executable, "-u", str(WORKER), client, bootstrap, topic, group, "--reset", reset, "--session-ms", str(session_ms)]
        if assignor:
            args += ["--assignor", assignor]
        if instance_id:
            args += ["--instance-id", instance_id]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.events = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append(ev)

    def assignment(self):
        with self.lock:
            for ev in reversed(self.events):
                if ev["ev"] == "assigned":
                    return set(ev["parts"])
        return set()

    def assignments_history(self):
        with self.lock:
            return [(ev["t"], set(ev["parts"])) for ev in self.events if ev["ev"] == "assigned"]

    def records(self):
        with self.lock:
            return [(ev["p"], ev["o"], ev["v"], ev["t"]) for ev in self.events if ev["ev"] == "rec"]

    def commit_failures(self):
        with self.lock:
            return [ev["error"] for ev in self.events if ev["ev"] == "commit_failed"]

    def close(self, timeout=30):
        """Graceful: SIGTERM, the member commits and leaves the group."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        self.reader.join(5)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)
        self.reader.join(5)

    def alive(self):
        return self.proc.poll() is None


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def produce(bootstrap, topic, partitions, start, count):
    """Produces values "v<start>".."v<start+count-1>", spread round-robin over partitions."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    for i in range(start, start + count):
        p.produce(topic, f"v{i}".encode(), partition=i % partitions)
    assert p.flush(30) == 0
    return {f"v{i}" for i in range(start, start + count)}
