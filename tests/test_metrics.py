"""Prometheus metrics: the counters move by exactly what was produced and consumed, a
group's lag is its partition's log end offset minus its committed offset, and requests,
errors, latency, log sizes, connections and memory are all there to scrape."""

import re
import subprocess
import time
import urllib.request

import pytest

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(broker):
    """{(name, frozenset(labels)): value} from the broker's /metrics."""
    text = urllib.request.urlopen(broker.metrics_url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(metrics, name, **labels):
    return metrics.get((name, frozenset((k, str(v)) for k, v in labels.items())), 0.0)


def wait_until(check, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_counters_follow_produce_and_fetch_and_lag_is_end_minus_committed(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("metered", 3, 1)])["metered"].result(30)
    counts = {0: 1200, 1: 700, 2: 100}
    before = scrape(broker)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    mid_scrapes = []
    for part, n in counts.items():
        for i in range(n):
            p.produce("metered", value=b"v" * 50, partition=part)
        p.flush(30)
        mid_scrapes.append(scrape(broker))  # during the load
    after = scrape(broker)
    for part, n in counts.items():
        moved = value(after, "gregor_produce_records_total", topic="metered", partition=part) - \
            value(before, "gregor_produce_records_total", topic="metered", partition=part)
        assert moved == n, f"partition {part}: produce counter moved {moved}, {n} produced"
    produced = [sum(value(s, "gregor_produce_records_total", topic="metered", partition=q) for q in counts)
                for s in mid_scrapes]
    assert produced == sorted(produced) and produced[0] == counts[0], produced
    assert value(after, "gregor_produce_bytes_total", topic="metered", partition=0) > 1200 * 50

    # Consume everything once, by assignment, and commit part of it for a group.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "metered-group",
                  "enable.auto.commit": False})
    c.assign([TopicPartition("metered", q, OFFSET_BEGINNING) for q in counts])
    got = 0
    deadline = time.monotonic() + 30
    while got < sum(counts.values()) and time.monotonic() < deadline:
        got += sum(1 for m in c.consume(1000, 0.5) if m.error() is None)
    assert got == sum(counts.values())
    c.commit(offsets=[TopicPartition("metered", 0, 1000), TopicPartition("metered", 1, 700)], asynchronous=False)
    fetched = scrape(broker)
    for part, n in counts.items():
        moved = value(fetched, "gregor_fetch_records_total", topic="metered", partition=part) - \
            value(before, "gregor_fetch_records_total", topic="metered", partition=part)
        assert moved == n, f"partition {part}: fetch counter moved {moved}, {n} consumed"

    def lag_settled():
        m = scrape(broker)
        return value(m, "gregor_consumer_group_lag", group="metered-group", topic="metered", partition=0) == 200
    wait_until(lag_settled, "the lag gauge")
    m = scrape(broker)
    for part, committed in ((0, 1000), (1, 700)):
        end = value(m, "gregor_log_end_offset", topic="metered", partition=part)
        low, high = c.get_watermark_offsets(TopicPartition("metered", part), timeout=10)
        assert end == high == counts[part]
        assert value(m, "gregor_consumer_group_committed_offset", group="metered-group", topic="metered", partition=part) == committed
        assert value(m, "gregor_consumer_group_lag", group="metered-group", topic="metered", partition=part) == end - committed
    c.close()
    assert value(m, "gregor_log_size_bytes", topic="metered", partition=0) > 1200 * 50
    assert value(m, "gregor_log_segments", topic="metered", partition=0) == 1
    assert value(m, "process_resident_memory_bytes") > 1e6
    assert value(m, "gregor_requests_total", api="Produce") >= 3
    assert value(m, "gregor_request_duration_seconds_count", api="Produce") >= 3
    assert value(m, "gregor_request_duration_seconds_bucket", api="Produce", le="+Inf") >= 3
    assert value(m, "gregor_connections_accepted_total") >= 2


def test_a_long_poll_woken_by_appends_counts_its_records_once(broker):
    """A fetch waiting for fetch.min.bytes re-reads its partition at every append that
    wakes it; only the answer it finally sends is counted."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("polled", 1, 1)])["polled"].result(30)
    before = scrape(broker)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "polled-group",
                  "fetch.min.bytes": 1_000_000, "fetch.wait.max.ms": 3000})
    c.assign([TopicPartition("polled", 0, OFFSET_BEGINNING)])
    c.consume(1, 0.5)  # the consumer is now fetching
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(20):
        p.produce("polled", value=b"w" * 100, partition=0)
        p.flush(10)
        time.sleep(0.05)
    got = 0
    deadline = time.monotonic() + 20
    while got < 20 and time.monotonic() < deadline:
        got += sum(1 for m in c.consume(100, 0.5) if m.error() is None)
    c.close()
    assert got == 20
    after = scrape(broker)
    moved = value(after, "gregor_fetch_records_total", topic="polled", partition=0) - \
        value(before, "gregor_fetch_records_total", topic="polled", partition=0)
    assert moved == 20, f"fetch counter moved {moved} for 20 records consumed once"


def test_group_members_and_errors_are_counted(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("watched", 1, 1)])["watched"].result(30)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watchers", "session.timeout.ms": 6000})
    c.subscribe(["watched"])
    try:
        deadline = time.monotonic() + 20
        while not c.assignment() and time.monotonic() < deadline:
            c.poll(0.2)
        wait_until(lambda: value(scrape(broker), "gregor_consumer_group_members", group="watchers") == 1,
                   "one member in the gauge")
        assert value(scrape(broker), "gregor_connections") >= 1
    finally:
        c.close()
    wait_until(lambda: value(scrape(broker), "gregor_consumer_group_members", group="watchers") == 0,
               "the member to leave the gauge")
    # A fetch from an offset past the end is an error answered per partition.
    import kafka_raw as raw
    conn = raw.Conn(broker.bootstrap)
    err, _, _ = raw.fetch_v4(conn, "watched", 0, 10_000)
    assert err == 1  # OFFSET_OUT_OF_RANGE
    assert value(scrape(broker), "gregor_request_errors_total", api="Fetch", error="OffsetOutOfRange") == 1


def flushes(broker):
    return value(scrape(broker), "gregor_log_flush_duration_seconds_count")


def produce_kib(broker, topic, kib):
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "1", "linger.ms": 5})
    for i in range(kib):
        p.produce(topic, b"w" * 1000, partition=0)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(30) == 0


def test_background_writeback_fsyncs_after_log_writeback_bytes(make_broker):
    """With log.writeback.bytes, the flusher fsyncs a partition once that many bytes have
    piled up since its last fsync (checked every 100 ms); below it, or with 0 (and no
    flush.messages or flush.ms), nothing is fsynced. Per-acknowledgement fsyncs of
    unreplicated partitions are turned off here, so only the writeback's are counted."""
    no_ack_sync = '"log.flush.unreplicated.enable" = false\n'
    on = make_broker(no_ack_sync + '"log.writeback.bytes" = 1048576')
    off = make_broker(no_ack_sync + '"log.writeback.bytes" = 0')
    for b in (on, off):
        admin = AdminClient({"bootstrap.servers": b.bootstrap})  # kept alive until the result
        admin.create_topics([NewTopic("wb", 1, 1)])["wb"].result(30)
    before = flushes(on)
    for step in range(4):
        # 600 KiB a step: the threshold (1 MiB) is crossed on every second step only.
        produce_kib(on, "wb", 600)
        produce_kib(off, "wb", 600)
        expected = (step + 1) // 2
        if expected:
            wait_until(lambda: flushes(on) - before >= expected, f"fsync {expected} after step {step + 1}")
        time.sleep(0.5)  # five checks of the flusher
        assert flushes(on) - before == expected, f"after {step + 1} × 600 KiB: {flushes(on) - before} fsyncs"
    assert flushes(off) == 0, "writeback off: no fsync"


def resident_bytes(path):
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def test_log_cache_window_bytes_drops_what_lies_behind_it_from_the_page_cache(make_broker):
    """After each fsync, a partition's active segment keeps in the page cache only its last
    log.cache.window.bytes; with 0 the kernel keeps all of it."""
    # The scrubber is off: it reads segments too, and this measures the window alone.
    no_scrub = '"log.scrub.bytes.per.second" = 0\n'
    window = make_broker(no_scrub + '"log.writeback.bytes" = 1048576\n"log.cache.window.bytes" = 2097152')
    kernel = make_broker(no_scrub + '"log.writeback.bytes" = 1048576\n"log.cache.window.bytes" = 0')
    for b in (window, kernel):
        admin = AdminClient({"bootstrap.servers": b.bootstrap})  # kept alive until the result
        admin.create_topics([NewTopic("cached", 1, 1)])["cached"].result(30)
        produce_kib(b, "cached", 8000)
        wait_until(lambda: flushes(b) >= 1, "the writeback fsyncs")
    time.sleep(0.5)  # five checks of the flusher: less than 1 MiB is left unflushed
    segments = {name: sorted((b.data_dir / "cached-0").glob("*.log"))
                for name, b in (("window", window), ("kernel", kernel))}
    assert all(len(s) == 1 for s in segments.values()), segments
    size = segments["window"][0].stat().st_size
    assert size > 8_000_000
    kept, all_of_it = resident_bytes(segments["window"][0]), resident_bytes(segments["kernel"][0])
    assert kept <= 2097152 + 2 * 1048576, f"{kept} bytes of {size} still cached with a 2 MiB window"
    assert all_of_it >= size - 65536, f"without a window {all_of_it} of {size} bytes cached"


@pytest.mark.parametrize("level", ["topic", "broker"])
def test_partition_series_can_be_summed_per_topic_or_over_the_broker(make_broker, level):
    """metrics.partition.series = topic | broker: the per-partition series are summed (so a
    scrape of many partitions stays small), and a deleted topic's share is taken back."""
    b = make_broker(f'"metrics.partition.series" = "{level}"')
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("summed", 3, 1)])["summed"].result(30)
    admin.create_topics([NewTopic("other", 2, 1)])["other"].result(30)
    p = Producer({"bootstrap.servers": b.bootstrap})
    for i, n in enumerate((10, 20, 0)):
        for _ in range(n):
            p.produce("summed", b"x", partition=i)
    p.produce("other", b"y", partition=1)
    assert p.flush(30) == 0
    labels = {"topic": "summed"} if level == "topic" else {}
    want = 30 if level == "topic" else 31
    segments = 3 if level == "topic" else 5
    wait_until(lambda: value(scrape(b), "gregor_produce_records_total", **labels) == want, "summed counter")
    wait_until(lambda: value(scrape(b), "gregor_log_segments", **labels) == segments, "summed segments")
    m = scrape(b)
    assert not [k for k in m if ("partition", "0") in k[1] and k[0].startswith("gregor_")], "a partition label"
    if level == "broker":
        assert not [k for k in m if any(l[0] == "topic" for l in k[1])], "a topic label"
    assert value(m, "gregor_log_end_offset", **labels) == 0  # offsets are per partition only
    admin.delete_topics(["summed"])["summed"].result(30)
    gone = {"topic": "summed"} if level == "topic" else {}
    wait_until(lambda: value(scrape(b), "gregor_log_segments", **gone) == (0 if level == "topic" else 2),
               "the deleted topic's share taken back")
