"""docs/compatibility.md cannot drift: its API table must equal what the broker answers to
ApiVersions, and its client table must name the versions the suite installs."""

import re
from importlib.metadata import version

import kafka_raw as raw
from conftest import ROOT

DOC = (ROOT / "docs" / "compatibility.md").read_text()


def served(broker):
    c = raw.Conn(broker.bootstrap)
    r = c.request(18, 0, b"")
    assert r.take(">h") == 0
    out = {}
    for _ in range(r.take(">i")):
        key, lo, hi = r.take(">h"), r.take(">h"), r.take(">h")
        out[key] = (lo, hi)
    c.close()
    return out


def test_api_table_matches_api_versions(broker):
    documented = {}
    for name, key, lo, hi in re.findall(r"^\| (\w+) \| (\d+) \| (\d+)(?:–(\d+))?", DOC, re.M):
        documented[int(key)] = (int(lo), int(hi or lo))
    assert served(broker) == documented


def test_client_table_names_the_installed_versions():
    for package, label in [("kafka-python", "kafka-python"), ("confluent-kafka", "confluent-kafka (librdkafka)"),
                           ("aiokafka", "aiokafka")]:
        assert re.search(rf"^\| {re.escape(label)} \| {re.escape(version(package))} \|", DOC, re.M), package
