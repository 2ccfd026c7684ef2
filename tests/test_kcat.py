"""kcat 1.7 (Debian's, on librdkafka 2.0.2: an old client worth staying compatible with):
metadata, produce with keys, consume to the end, and a balanced consumer group, against
the real broker; the records it writes read back through `gregor consume`."""

import json
import shutil
import subprocess

import pytest
from kafka.partitioner.default import murmur2

from conftest import BIN

KCAT = shutil.which("kcat")


def kcat(*args, input=None, timeout=60):
    if KCAT is None:
        pytest.fail("kcat is missing: apt-get install kcat (scripts/test.sh installs it)")
    p = subprocess.run([KCAT, *map(str, args)], input=input, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"kcat {' '.join(map(str, args))}: {p.stderr}"
    return p.stdout


def test_kcat_metadata_produce_and_consume(broker):
    b = ("-b", broker.bootstrap)
    subprocess.run([str(BIN), "topic", "create", "kc", "--partitions", "3", "--bootstrap", broker.bootstrap],
                   check=True, capture_output=True)
    md = json.loads(kcat(*b, "-L", "-J", "-t", "kc"))
    assert md["brokers"][0]["id"] == 0
    assert [len(t["partitions"]) for t in md["topics"] if t["topic"] == "kc"] == [3]

    lines = "".join(f"k{i}:v{i}\n" for i in range(30))
    # With the Java client's partitioner, kcat places keys where gregor and Java do.
    kcat(*b, "-P", "-t", "kc", "-K", ":", "-X", "partitioner=murmur2_random", input=lines)
    out = kcat(*b, "-C", "-t", "kc", "-e", "-f", "%k=%s %p\\n")
    rows = [line.split(" ") for line in out.splitlines()]
    assert sorted(r[0] for r in rows) == sorted(f"k{i}=v{i}" for i in range(30))
    for key_value, partition in rows:
        key = key_value.split("=")[0].encode()
        assert int(partition) == (murmur2(key) & 0x7FFFFFFF) % 3, key
    # The same records through gregor consume, on the same partitions.
    mine = subprocess.run([str(BIN), "consume", "kc", "--from-beginning", "--exit", "--format", "%k=%s %p\\n",
                           "--bootstrap", broker.bootstrap], capture_output=True, text=True, check=True).stdout
    assert sorted(mine.splitlines()) == sorted(out.splitlines())

    # Records gregor produced, by key with the Java partitioner, read by kcat's balanced
    # consumer group (then visible as the group's committed offsets).
    subprocess.run([str(BIN), "produce", "kc", "--key-separator", ":", "--bootstrap", broker.bootstrap],
                   input="".join(f"g{i}:w{i}\n" for i in range(10)), text=True, check=True, capture_output=True)
    out = kcat(*b, "-G", "kcat-group", "-X", "auto.offset.reset=earliest", "-e", "-f", "%k\\n", "kc", timeout=90)
    keys = set(out.split())
    assert {f"g{i}" for i in range(10)} <= keys and len(keys) == 40
