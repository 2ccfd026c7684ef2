"""Storage lifecycle with real clients: retention deletes old segments and moves the
earliest offset; DeleteRecords does the same on request; consumers below the start reset."""

import time

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_raw as raw

FAST_RETENTION = '"log.retention.check.interval.ms" = 200\n'


def admin(b):
    if getattr(b, "_lifecycle_admin", None) is None:
        b._lifecycle_admin = AdminClient({"bootstrap.servers": b.bootstrap})
    return b._lifecycle_admin


def watermarks(b, topic, partition=0):
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "wm", "enable.auto.commit": False})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()


def produce(b, topic, values, timestamp_ms=None):
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    for v in values:
        kw = {"timestamp": timestamp_ms} if timestamp_ms else {}
        p.produce(topic, v, partition=0, **kw)
        p.poll(0)
    assert p.flush(30) == 0


def read_from_beginning(b, topic, expect):
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"reader-{time.time_ns()}", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got, deadline = [], time.monotonic() + 20
    while len(got) < expect and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.offset(), m.value()))
    c.close()
    return got


def test_retention_deletes_old_segments_and_moves_the_earliest_offset(make_broker):
    b = make_broker(FAST_RETENTION)
    admin(b).create_topics([NewTopic("short", 1, 1, config={"retention.ms": "60000", "segment.bytes": "1024"})])["short"].result(30)
    # Stamped so that they expire ten seconds from now: a retention pass runs every 200 ms,
    # and records already expired could be deleted before the first look below.
    expiring_soon = int(time.time() * 1000) - 50_000
    produce(b, "short", [b"old-%d" % i * 20 for i in range(40)], timestamp_ms=expiring_soon)
    assert watermarks(b, "short") == (0, 40)
    deadline = time.monotonic() + 30
    while watermarks(b, "short")[0] < 40 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert watermarks(b, "short") == (40, 40), "retention did not delete the expired segments"
    assert "retention deleted a segment" in b.log_text()
    produce(b, "short", [b"new-%d" % i for i in range(5)])
    time.sleep(1)
    assert watermarks(b, "short") == (40, 45), "recent records must survive retention"
    assert [v for _, v in read_from_beginning(b, "short", 5)] == [b"new-%d" % i for i in range(5)]
    c = raw.Conn(b.bootstrap)
    assert raw.fetch_v4(c, "short", 0, 3)[0] == 1, "a fetch below the start is OFFSET_OUT_OF_RANGE"
    b.restart()
    assert watermarks(b, "short") == (40, 45), "the earliest offset survives a restart"


def test_retention_bytes_bounds_the_log(make_broker):
    b = make_broker(FAST_RETENTION)
    admin(b).create_topics([NewTopic("bounded", 1, 1, config={"retention.bytes": "5000", "segment.bytes": "1024"})])["bounded"].result(30)
    produce(b, "bounded", [b"x" * 200 for _ in range(100)])

    def kept():
        total = 0
        for f in b.data_dir.glob("bounded-0/*.log"):
            try:
                total += f.stat().st_size
            except FileNotFoundError:  # deleted by retention since the listing
                pass
        return total

    # A retention pass may run while the records are still arriving (the start moves, the
    # log is not yet bounded): wait for one after the last record.
    deadline = time.monotonic() + 20
    while (watermarks(b, "bounded")[0] == 0 or kept() > 5000 + 1024) and time.monotonic() < deadline:
        time.sleep(0.2)
    low, high = watermarks(b, "bounded")
    assert high == 100 and 0 < low < 100
    assert kept() <= 5000 + 1024, f"{kept()} bytes kept for retention.bytes=5000"


def test_delete_records_moves_the_start_on_request(make_broker):
    b = make_broker()
    admin(b).create_topics([NewTopic("trim", 1, 1, config={"segment.bytes": "1024"})])["trim"].result(30)
    produce(b, "trim", [b"r-%d" % i * 30 for i in range(50)])
    result = admin(b).delete_records([TopicPartition("trim", 0, 30)])
    low = list(result.values())[0].result(30)
    assert low.low_watermark == 30
    assert watermarks(b, "trim") == (30, 50)
    got = read_from_beginning(b, "trim", 20)
    assert [o for o, _ in got] == list(range(30, 50))
    # Beyond the high watermark is refused; the start never moves backwards.
    bad = admin(b).delete_records([TopicPartition("trim", 0, 99)])
    try:
        list(bad.values())[0].result(30)
        raise AssertionError("delete beyond the high watermark was accepted")
    except Exception as e:  # KafkaException(OFFSET_OUT_OF_RANGE)
        assert "OFFSET_OUT_OF_RANGE" in str(e)
    b.kill9()
    b.start()
    assert watermarks(b, "trim") == (30, 50)


def set_configs(b, topic, ops):
    """ops: [(name, value, op)] with op one of SET, DELETE, APPEND, SUBTRACT."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    entries = [ConfigEntry(n, v, incremental_operation=getattr(AlterConfigOpType, op)) for n, v, op in ops]
    res = ConfigResource("topic", topic, incremental_configs=entries)
    return list(admin(b).incremental_alter_configs([res]).values())[0].result(30)


def describe(b, topic):
    from confluent_kafka.admin import ConfigResource
    res = ConfigResource("topic", topic)
    return admin(b).describe_configs([res])[res].result(30)


def produce_size(b, topic, size):
    """Produces one record of `size` bytes; returns the delivery error name or None."""
    p = Producer({"bootstrap.servers": b.bootstrap, "message.max.bytes": 10_000_000})
    errors = []
    p.produce(topic, b"x" * size, partition=0, on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    return errors[0].name() if errors[0] else None


def test_incremental_alter_configs_apply_at_once_and_survive_restart(make_broker):
    import pytest
    from confluent_kafka import KafkaException
    b = make_broker()
    admin(b).create_topics([NewTopic("tuned", 1, 1)])["tuned"].result(30)
    assert produce_size(b, "tuned", 5000) is None
    set_configs(b, "tuned", [("max.message.bytes", "2000", "SET"), ("cleanup.policy", "compact", "APPEND")])
    assert produce_size(b, "tuned", 5000) == "MSG_SIZE_TOO_LARGE", "the new limit applies without a restart"
    entries = describe(b, "tuned")
    assert (entries["max.message.bytes"].value, entries["max.message.bytes"].source) == ("2000", 1)
    assert entries["cleanup.policy"].value == "delete,compact"
    b.restart()
    assert describe(b, "tuned")["max.message.bytes"].value == "2000"
    assert produce_size(b, "tuned", 5000) == "MSG_SIZE_TOO_LARGE", "the limit survives a restart"
    set_configs(b, "tuned", [("max.message.bytes", None, "DELETE"), ("cleanup.policy", "compact", "SUBTRACT")])
    entries = describe(b, "tuned")
    assert entries["max.message.bytes"].source == 5 and entries["cleanup.policy"].value == "delete"
    assert produce_size(b, "tuned", 5000) is None
    for bad, named in ([("retention.ms", "soon", "SET")], "retention.ms"), ([("retention.mss", "1", "SET")], "retention.mss"):
        with pytest.raises(KafkaException) as e:
            set_configs(b, "tuned", bad)
        assert e.value.args[0].name() == "INVALID_CONFIG" and named in e.value.args[0].str()
    assert describe(b, "tuned")["retention.ms"].value == "604800000", "a refused change left a trace"


def test_short_retention_set_at_runtime_takes_effect(make_broker):
    b = make_broker(FAST_RETENTION)
    admin(b).create_topics([NewTopic("later", 1, 1, config={"segment.bytes": "1024"})])["later"].result(30)
    produce(b, "later", [b"y" * 100 for _ in range(30)], timestamp_ms=int(time.time() * 1000) - 3_600_000)
    time.sleep(1)
    assert watermarks(b, "later")[0] == 0, "default retention (7 days) keeps hour-old records"
    set_configs(b, "later", [("retention.ms", "60000", "SET")])
    deadline = time.monotonic() + 20
    while watermarks(b, "later")[0] < 30 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert watermarks(b, "later") == (30, 30)


KAFKA_STORAGE_ERROR = 56


def test_full_disk_refuses_produce_then_resumes(tmp_path):
    import os
    import shutil
    import subprocess
    from conftest import Broker
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
    assert mounted.returncode == 0, f"this test needs root to mount a 4 MiB tmpfs: {mounted.stderr}"
    b = None
    try:
        b = Broker(disk / "data").start()
        c = raw.Conn(b.bootstrap)
        record = raw.batch([(None, b"z" * 1000, [])])
        assert raw.produce_v3(c, "full", 0, record)[0] == 0
        free = shutil.disk_usage(disk).free
        with open(disk / "filler", "wb") as f:
            f.write(b"\0" * max(free - 48 * 1024, 0))
        acked, error = [], None
        for _ in range(200):
            err, base, _ = raw.produce_v3(c, "full", 0, record)
            if err:
                error = err
                break
            acked.append(base)
        assert error == KAFKA_STORAGE_ERROR, f"a full disk answered {error}"
        assert b.alive()
        assert "disk full" in b.log_text()
        # Everything acknowledged is there, nothing else.
        _, hw, _ = raw.fetch_v4(c, "full", 0, 0)
        assert hw == 1 + len(acked) and acked == list(range(1, hw))
        os.remove(disk / "filler")
        err, base, _ = raw.produce_v3(c, "full", 0, record)
        assert (err, base) == (0, hw), "produce did not resume once space was freed"
        b.restart()
        assert raw.fetch_v4(raw.Conn(b.bootstrap), "full", 0, 0)[1] == hw + 1
    finally:
        if b is not None and b.proc is not None:
            b.stop()
        subprocess.run(["umount", str(disk)], check=False)


FAST_CLEANER = '"log.cleaner.backoff.ms" = 200\n'
INVALID_RECORD = 87


def test_compaction_keeps_the_latest_value_per_key(make_broker):
    from kafka import KafkaProducer
    b = make_broker(FAST_CLEANER)
    admin(b).create_topics([NewTopic("compacted", 1, 1, config={
        "cleanup.policy": "compact", "segment.bytes": "2048", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"})])["compacted"].result(30)
    latest = {}
    p = KafkaProducer(bootstrap_servers=b.bootstrap, compression_type="gzip", linger_ms=20)
    for i in range(400):
        key = f"key-{i % 25}"
        value = f"value-{i}".encode()
        latest[key] = value
        p.send("compacted", key=key.encode(), value=value, partition=0, headers=[("h", b"1"), ("h", b"2")])
    for key in ["key-3", "key-7"]:
        p.send("compacted", key=key.encode(), value=None, partition=0)  # tombstones
        latest.pop(key)
    p.flush()
    for i in range(60):  # fill and close the segment that holds the last writes
        p.send("compacted", key=b"filler", value=b"f" * 60, partition=0)
    p.flush()
    p.close()
    # Records without a key are refused on a compacted topic.
    assert raw.produce_v3(raw.Conn(b.bootstrap), "compacted", 0, raw.batch([(None, b"no key", [])]))[0] == INVALID_RECORD
    deadline = time.monotonic() + 30
    while "log cleaned" not in b.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "log cleaned" in b.log_text()
    high = watermarks(b, "compacted")[1]

    def read_all():
        """Every record once from the start: ({key: value} of non-filler keys, duplicated
        keys, record count)."""
        seen, dups, records = {}, [], 0
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"check-{time.time_ns()}",
                      "enable.auto.commit": False})
        c.assign([TopicPartition("compacted", 0, OFFSET_BEGINNING)])
        last_offset, deadline = -1, time.monotonic() + 20
        while last_offset < high - 1 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error() is not None:
                continue
            last_offset = m.offset()
            records += 1
            key = m.key().decode()
            if key != "filler":
                if key in seen:
                    dups.append(key)
                seen[key] = m.value()
                assert m.headers() == [("h", b"1"), ("h", b"2")], "headers changed by compaction"
        c.close()
        return seen, dups, records

    # The first clean may have started before the last writes; the dirty part left is
    # cleaned by a later pass (the ratio threshold is 1%), so wait for a view without
    # duplicates.
    deadline = time.monotonic() + 30
    while True:
        seen, dups, records = read_all()
        if not dups or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not dups, f"{dups} appear twice after compaction"
    assert seen == latest, "compaction must leave exactly the latest value of every live key"
    assert records < 400, f"{records} records left: nothing was removed"
    b.restart()
    assert watermarks(b, "compacted")[1] == high


def test_dynamic_broker_configs_apply_at_once_and_survive_restart(make_broker):
    import pytest
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    b = make_broker()
    admin(b).create_topics([NewTopic("plain", 1, 1), NewTopic("own", 1, 1, config={"max.message.bytes": "100000"})])["plain"].result(30)

    def alter(ops):
        entries = [ConfigEntry(n, v, incremental_operation=getattr(AlterConfigOpType, op)) for n, v, op in ops]
        res = ConfigResource("broker", "0", incremental_configs=entries)
        return list(admin(b).incremental_alter_configs([res]).values())[0].result(30)

    alter([("message.max.bytes", "3000", "SET")])
    assert produce_size(b, "plain", 5000) == "MSG_SIZE_TOO_LARGE", "the broker default applies at once"
    assert produce_size(b, "own", 5000) is None, "a topic override still wins"
    entry = describe(b, "plain")["max.message.bytes"]
    assert (entry.value, entry.source) == ("3000", 2)  # DYNAMIC_BROKER_CONFIG
    res = ConfigResource("broker", "0")
    assert admin(b).describe_configs([res])[res].result(30)["message.max.bytes"].value == "3000"
    b.restart()
    assert produce_size(b, "plain", 5000) == "MSG_SIZE_TOO_LARGE", "the change survives a restart"
    with pytest.raises(KafkaException) as e:
        alter([("num.partitions", "4", "SET")])
    assert e.value.args[0].name() == "INVALID_CONFIG" and "num.partitions" in e.value.args[0].str()
    with pytest.raises(KafkaException) as e:
        alter([("log.retention.ms", "later", "SET")])
    assert "log.retention.ms" in e.value.args[0].str()
    alter([("message.max.bytes", None, "DELETE")])
    assert produce_size(b, "plain", 5000) is None


def test_consumer_offsets_is_compacted_and_commits_survive(make_broker):
    from test_groups import commit_v2, fetch_offset_v1
    b = make_broker(FAST_CLEANER + '"offsets.topic.segment.bytes" = 2048\n"offsets.topic.num.partitions" = 1\n')
    admin(b).create_topics([NewTopic("tracked", 1, 1)])["tracked"].result(30)
    c = raw.Conn(b.bootstrap)
    for i in range(1, 301):
        assert commit_v2(c, "busy", -1, "", "tracked", 0, i) == 0
    deadline = time.monotonic() + 30
    while "__consumer_offsets" not in "".join(l for l in b.log_text().splitlines() if "log cleaned" in l) and time.monotonic() < deadline:
        time.sleep(0.2)
    cleaned = [l for l in b.log_text().splitlines() if "log cleaned" in l and "__consumer_offsets" in l]
    assert cleaned, "the cleaner never compacted __consumer_offsets"
    size = sum(f.stat().st_size for f in b.data_dir.glob("__consumer_offsets-0/*.log"))
    assert size < 300 * 60, f"__consumer_offsets still holds {size} bytes for 300 commits of one partition"
    assert fetch_offset_v1(c, "busy", "tracked", 0) == (300, 0)
    b.restart()
    assert fetch_offset_v1(raw.Conn(b.bootstrap), "busy", "tracked", 0) == (300, 0)
