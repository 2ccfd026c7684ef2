"""Incremental fetch sessions (KIP-227) with a client that uses them: kafka-python opens a
session over 100 partitions and reads every record through it, in order, as records
arrive in a few partitions."""

import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from test_cli import ok
from test_metrics import scrape, value, wait_until


def test_kafka_python_reads_through_a_session_of_100_partitions(broker):
    ok("topic", "create", "wide", "--bootstrap", broker.bootstrap, "--partitions", "100")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for p in (3, 50, 97):
        for i in range(5):
            producer.send("wide", f"{p}-{i}".encode(), partition=p)
    producer.flush()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                             auto_offset_reset="earliest", consumer_timeout_ms=500)
    consumer.assign([TopicPartition("wide", p) for p in range(100)])
    got = {}

    def read_until(n):
        deadline = time.monotonic() + 30
        while sum(len(v) for v in got.values()) < n and time.monotonic() < deadline:
            for m in consumer:
                got.setdefault(m.partition, []).append(m.value.decode())

    read_until(15)
    assert got == {p: [f"{p}-{i}" for i in range(5)] for p in (3, 50, 97)}
    wait_until(lambda: value(scrape(broker), "gregor_fetch_sessions") >= 1, "a fetch session")
    assert value(scrape(broker), "gregor_fetch_session_partitions") >= 100
    # Records arriving later in another partition come through the same session.
    producer.send("wide", b"late", partition=61)
    producer.flush()
    read_until(16)
    assert got[61] == ["late"]
    m = scrape(broker)
    for error in ("FetchSessionIdNotFound", "InvalidFetchSessionEpoch"):
        assert value(m, "gregor_request_errors_total", api="Fetch", error=error) == 0, f"the session was refused: {error}"
    consumer.close()
    producer.close()
