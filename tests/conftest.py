"""Fixtures that run the real `gregor` binary on a free loopback port with a temporary
data directory. Set GREGOR_BIN to test another build (default: target/debug/gregor)."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("GREGOR_BIN", ROOT / "target" / "debug" / "gregor"))


_HANDED_OUT = set()


def free_port():
    """A loopback port nothing listens on, never the same one twice in this process: the
    kernel may give a port back as soon as its probe socket closes, and a cluster that got
    one port for two listeners would fail to start ("Address already in use")."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class Broker:
    """One broker process; can be stopped cleanly, killed with SIGKILL, and restarted on the
    same port and data directory."""

    def __init__(self, data_dir, config_text=None, preexec_fn=None):
        if not BIN.exists():
            raise RuntimeError(f"{BIN} not found: run `cargo build` first or set GREGOR_BIN")
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.config = None
        if config_text is not None:
            self.config = self.data_dir.parent / f"gregor-{self.port}.toml"
            self.config.write_text(config_text)
        self.log_path = self.data_dir.parent / f"broker-{self.port}.log"
        self.proc = None
        # Run in the child before the broker starts (a test lowers a resource limit).
        self.preexec_fn = preexec_fn

    def start(self):
        args = [str(BIN), "broker", "--data-dir", str(self.data_dir), "--listen", self.bootstrap,
                "--metrics", f"127.0.0.1:{self.metrics_port}"]
        if self.config:
            args += ["--config", str(self.config)]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"broker did not listen within 30 s:\n{self.log_text()}")

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stops the broker; returns its exit code."""
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            raise AssertionError(f"broker did not stop within {timeout} s after {sig!r}")
        finally:
            self.proc = None
            self.log.close()
        return code

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def restart(self, sig=signal.SIGTERM):
        code = self.stop(sig)
        self.start()
        return code

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data").start()
    yield b
    if b.proc is not None:
        assert b.alive(), f"broker died during the test:\n{b.log_text()}"
        b.stop()


@pytest.fixture
def make_broker(tmp_path):
    """A factory for brokers with a config file: make_broker('"num.partitions" = 3')."""
    made = []

    def make(config_text=None):
        b = Broker(tmp_path / f"data{len(made)}", config_text).start()
        made.append(b)
        return b

    yield make
    for b in made:
        if b.proc is not None:
            b.stop()
