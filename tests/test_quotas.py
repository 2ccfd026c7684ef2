"""Client quotas as in Kafka: set, listed and removed with `gregor quota` (AlterClientQuotas
and DescribeClientQuotas), kept across a restart; a producer or consumer over its byte
rate is throttled (throttle_time_ms, its connection muted) while another client on the
same broker is not."""

import json
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from test_cli import gregor, ok
from test_metrics import scrape, value

# Rates measured over 2 samples of 1 s, so a test need not outlast an 11 s window.
SHORT_WINDOW = '"quota.window.num" = 2\n"quota.window.size.seconds" = 1\n'


def listed(b, *entity):
    return json.loads(ok("quota", "list", "--bootstrap", b.bootstrap, *entity, "--json"))


def test_quotas_are_set_listed_removed_and_kept_across_a_restart(make_broker):
    b = make_broker()
    ok("quota", "set", "--bootstrap", b.bootstrap, "--client-id", "slow", "producer_byte_rate=1024",
       "consumer_byte_rate=2048")
    ok("quota", "set", "--bootstrap", b.bootstrap, "--default-user", "request_percentage=50")
    ok("quota", "set", "--bootstrap", b.bootstrap, "--user", "alice", "--client-id", "app",
       "producer_byte_rate=4096")
    rows = listed(b)
    assert {(r["user"], r["client_id"]): dict(r["quotas"]) for r in rows} == {
        (None, "slow"): {"producer_byte_rate": 1024, "consumer_byte_rate": 2048},
        ("<default>", None): {"request_percentage": 50},
        ("alice", "app"): {"producer_byte_rate": 4096},
    }
    # A filter on one entity, as DescribeClientQuotas matches it.
    assert [r["client_id"] for r in listed(b, "--client-id", "slow")] == ["slow"]
    assert [r["user"] for r in listed(b, "--default-user")] == ["<default>"]
    # Refusals say what is wrong and change nothing.
    code, _, err = gregor("quota", "set", "--bootstrap", b.bootstrap, "--client-id", "slow", "controller_mutation_rate=5")
    assert code != 0 and "producer_byte_rate" in err, err
    code, _, err = gregor("quota", "set", "--bootstrap", b.bootstrap, "producer_byte_rate=5")
    assert code != 0 and "--client-id" in err, err
    code, _, err = gregor("quota", "set", "--bootstrap", b.bootstrap, "--client-id", "x", "producer_byte_rate=-1")
    assert code != 0 and "at least 1" in err, err
    ok("quota", "remove", "--bootstrap", b.bootstrap, "--client-id", "slow", "consumer_byte_rate")
    b.restart()
    rows = {(r["user"], r["client_id"]): dict(r["quotas"]) for r in listed(b)}
    assert rows[(None, "slow")] == {"producer_byte_rate": 1024}, "a removed quota came back, or a kept one was lost"
    assert len(rows) == 3


def produce(b, client_id, n, size=1024, throttles=None):
    # Batches of 16 KiB: a quota throttles the requests after the one that went over it.
    conf = {"bootstrap.servers": b.bootstrap, "client.id": client_id, "linger.ms": 5, "batch.size": 16384}
    if throttles is not None:
        conf["throttle_cb"] = lambda event: throttles.append(event.throttle_time)
    p = Producer(conf)
    started = time.monotonic()
    for i in range(n):
        while True:
            try:
                p.produce("q", b"x" * size, partition=0)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0
    return time.monotonic() - started


def test_a_producer_over_its_byte_rate_is_throttled_and_another_is_not(make_broker):
    b = make_broker(SHORT_WINDOW)
    ok("topic", "create", "q", "--bootstrap", b.bootstrap, "--partitions", "1")
    ok("quota", "set", "--bootstrap", b.bootstrap, "--client-id", "slow", "producer_byte_rate=102400")
    throttles = []
    slow = produce(b, "slow", 600, throttles=throttles)
    fast = produce(b, "fast", 600)
    # 600 KiB at 100 KiB/s, less what the first sample lets through: about 5 s.
    assert slow >= 3.0, f"600 KiB at a 100 KiB/s quota took {slow:.1f} s"
    assert fast < 3.0, f"a client without a quota took {fast:.1f} s for 600 KiB"
    assert throttles and max(throttles) > 0, "the producer was never told to back off (throttle_time_ms)"
    m = scrape(b)
    assert value(m, "gregor_client_throttled_responses_total", quota="produce", user="", client_id="slow") > 0
    assert value(m, "gregor_client_throttled_responses_total", quota="produce", user="", client_id="fast") == 0


def test_a_consumer_over_its_byte_rate_is_throttled_and_gets_every_record(make_broker):
    b = make_broker(SHORT_WINDOW)
    ok("topic", "create", "q", "--bootstrap", b.bootstrap, "--partitions", "1")
    produce(b, "writer", 600)
    ok("quota", "set", "--bootstrap", b.bootstrap, "--client-id", "slowreader", "consumer_byte_rate=102400")

    def read_all(client_id):
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": client_id, "client.id": client_id,
                      "enable.auto.commit": False, "message.max.bytes": 65536, "fetch.max.bytes": 65536,
                      "max.partition.fetch.bytes": 65536})
        c.assign([TopicPartition("q", 0, 0)])
        offsets, started = [], time.monotonic()
        while len(offsets) < 600 and time.monotonic() - started < 60:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                offsets.append(m.offset())
        took = time.monotonic() - started
        c.close()
        return offsets, took

    offsets, slow = read_all("slowreader")
    assert offsets == list(range(600)), "a throttled consumer lost or reordered records"
    assert slow >= 3.0, f"600 KiB at a 100 KiB/s fetch quota took {slow:.1f} s"
    offsets, fast = read_all("fastreader")
    assert offsets == list(range(600))
    assert fast < 3.0, f"a consumer without a quota took {fast:.1f} s"
    m = scrape(b)
    assert value(m, "gregor_client_throttled_responses_total", quota="fetch", user="", client_id="slowreader") > 0


def test_the_quota_commands_in_the_operations_guide_work_as_written(tmp_path):
    """Runs docs/operations.md's quota block as written, against a broker on the default
    port in a private network namespace."""
    import re
    import shutil
    import subprocess

    from conftest import BIN, ROOT

    if shutil.which("unshare") is None:
        raise AssertionError("this test needs unshare (util-linux)")
    doc = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"<!-- quota-commands -->\s*```sh\n(.*?)```", doc, re.S)
    assert block, "docs/operations.md lost its quota block"
    script = "\n".join([
        "set -euo pipefail",
        "ip link set lo up",
        f"export PATH={BIN.parent}:$PATH",
        f"gregor broker --data-dir {tmp_path / 'data'} --metrics off & broker=$!",
        "trap 'kill $broker; wait $broker || true' EXIT",
        "for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null && break; sleep 0.1; done",
        block.group(1),
        "echo '--- json'",
        "gregor quota list --json",
    ])
    run = subprocess.run(["unshare", "--net", "bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"the guide's commands failed:\n{run.stdout}\n{run.stderr}"
    table, js = run.stdout.split("--- json\n")
    assert "reports" in table and "consumer_byte_rate=2097152" in table, table
    rows = {(r["user"], r["client_id"]): dict(r["quotas"]) for r in json.loads(js)}
    assert rows == {(None, "reports"): {"producer_byte_rate": 1048576},
                    ("<default>", None): {"request_percentage": 200}}, rows
