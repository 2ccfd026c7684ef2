"""Fetch semantics, topic administration, configs, identity across restarts, shutdown."""

import signal
import threading
import time

import pytest
from confluent_kafka import KafkaException, Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

import kafka_raw as raw


def admin(broker):
    """One admin client per broker process, kept alive (librdkafka fails the futures of an
    admin client that is garbage-collected before they complete)."""
    key = (broker.bootstrap, id(broker.proc))
    if getattr(broker, "_admin_key", None) != key:
        broker._admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        broker._admin_key = key
    return broker._admin


def create(broker, name, partitions=1, config=None, validate_only=False):
    fs = admin(broker).create_topics([NewTopic(name, partitions, 1, config=config or {})], validate_only=validate_only)
    return fs[name].result(30)


def error_name(exc_info):
    return exc_info.value.args[0].name()


def test_fetch_long_poll_is_woken_by_new_data(broker):
    c = raw.Conn(broker.bootstrap, timeout=30)
    raw.produce_v3(c, "poll", 0, raw.batch([(None, b"first", [])]))
    result = {}

    def fetch():
        conn = raw.Conn(broker.bootstrap, timeout=30)
        start = time.monotonic()
        result["answer"] = raw.fetch_v4(conn, "poll", 0, 1, max_wait_ms=10000, min_bytes=1)
        result["elapsed"] = time.monotonic() - start

    t = threading.Thread(target=fetch)
    t.start()
    time.sleep(0.5)
    raw.produce_v3(c, "poll", 0, raw.batch([(None, b"second", [])]))
    t.join(15)
    err, hw, records = result["answer"]
    assert (err, hw) == (0, 2)
    assert raw.batches_in(records)[0][0] == 1
    assert 0.4 < result["elapsed"] < 5, f"fetch returned after {result['elapsed']:.2f} s"


def test_fetch_waits_max_wait_when_min_bytes_is_not_reached(broker):
    c = raw.Conn(broker.bootstrap, timeout=30)
    raw.produce_v3(c, "minbytes", 0, raw.batch([(None, b"x", [])]))
    start = time.monotonic()
    err, hw, records = raw.fetch_v4(c, "minbytes", 0, 0, max_wait_ms=700, min_bytes=1 << 20)
    elapsed = time.monotonic() - start
    assert err == 0 and len(raw.batches_in(records)) == 1, "what there is is returned at the deadline"
    assert 0.6 < elapsed < 5, f"returned after {elapsed:.2f} s, expected ~0.7 s"


def test_fetch_limits_and_kip74_first_batch_whole(broker):
    c = raw.Conn(broker.bootstrap)
    for i in range(3):
        raw.produce_v3(c, "limits", 0, raw.batch([(None, bytes([i]) * 5000, [])]))
    # A limit below one batch still returns the first batch whole, and only it.
    err, _, records = raw.fetch_v4(c, "limits", 0, 0, max_bytes=100, partition_max_bytes=100)
    batches = raw.batches_in(records)
    assert err == 0 and len(batches) == 1 and batches[0][2] == len(records) > 5000
    # A limit of two batches returns exactly two.
    two = 2 * batches[0][2]
    _, _, records = raw.fetch_v4(c, "limits", 0, 0, partition_max_bytes=two + 10)
    assert [b[0] for b in raw.batches_in(records)] == [0, 1]
    # The response limit applies across partitions too.
    _, _, records = raw.fetch_v4(c, "limits", 0, 1, max_bytes=two - 1)
    assert [b[0] for b in raw.batches_in(records)] == [1]


def test_create_topics_validation(broker):
    create(broker, "ok-topic", 4, {"retention.ms": "3600000", "cleanup.policy": "delete"})
    md = admin(broker).list_topics(timeout=10)
    assert len(md.topics["ok-topic"].partitions) == 4
    with pytest.raises(KafkaException) as e:
        create(broker, "ok-topic")
    assert error_name(e) == "TOPIC_ALREADY_EXISTS"
    with pytest.raises(KafkaException) as e:
        create(broker, "bad/name")
    assert error_name(e) == "TOPIC_EXCEPTION"  # librdkafka's name for INVALID_TOPIC_EXCEPTION (17)
    with pytest.raises(KafkaException) as e:
        admin(broker).create_topics([NewTopic("rf3", 1, 3)])["rf3"].result(30)
    assert error_name(e) == "INVALID_REPLICATION_FACTOR"
    with pytest.raises(KafkaException) as e:
        create(broker, "cfg", 1, {"retention.mss": "1"})
    assert error_name(e) == "INVALID_CONFIG"
    with pytest.raises(KafkaException) as e:
        create(broker, "cfg", 1, {"retention.ms": "soon"})
    assert error_name(e) == "INVALID_CONFIG"
    create(broker, "dry-run", 2, validate_only=True)
    assert "dry-run" not in admin(broker).list_topics(timeout=10).topics
    # replication factor -1 takes the broker default
    admin(broker).create_topics([NewTopic("rf-default", 2, -1)])["rf-default"].result(30)
    assert len(admin(broker).list_topics(timeout=10).topics["rf-default"].partitions) == 2


def test_delete_and_add_partitions(broker):
    create(broker, "grow", 1)
    admin(broker).create_partitions([NewPartitions("grow", 3)])["grow"].result(30)
    assert len(admin(broker).list_topics(timeout=10).topics["grow"].partitions) == 3
    with pytest.raises(KafkaException) as e:
        admin(broker).create_partitions([NewPartitions("grow", 2)])["grow"].result(30)
    assert error_name(e) == "INVALID_PARTITIONS"
    c = raw.Conn(broker.bootstrap)
    assert raw.produce_v3(c, "grow", 2, raw.batch([(None, b"p2", [])]))[0] == 0
    admin(broker).delete_topics(["grow"])["grow"].result(30)
    assert "grow" not in admin(broker).list_topics(timeout=10).topics
    with pytest.raises(KafkaException) as e:
        admin(broker).delete_topics(["grow"])["grow"].result(30)
    assert error_name(e) == "UNKNOWN_TOPIC_OR_PART"
    # Recreated under the same name, it starts empty.
    create(broker, "grow", 1)
    assert raw.fetch_v4(c, "grow", 0, 0)[1] == 0
    broker.restart()
    assert len(admin(broker).list_topics(timeout=10).topics["grow"].partitions) == 1
    assert not list(broker.data_dir.glob("*-delete")), "deleted partition directories were left behind"


def test_auto_creation_uses_num_partitions_and_can_be_disabled(make_broker):
    b = make_broker('"num.partitions" = 3')
    p = Producer({"bootstrap.servers": b.bootstrap})
    p.produce("auto-made", b"x")
    assert p.flush(30) == 0
    assert len(admin(b).list_topics(timeout=10).topics["auto-made"].partitions) == 3
    off = make_broker('"auto.create.topics.enable" = false')
    c = raw.Conn(off.bootstrap)
    assert raw.metadata_v1(c, ["never"])["never"][0] == 3


def test_a_metadata_request_creates_internal_topics_as_their_coordinators_would(make_broker):
    """A client naming `__consumer_offsets` or `__transaction_state` before they exist
    gets them as Kafka creates them (its AutoTopicCreationManager): the coordinators'
    partition counts, compacted; never as an ordinary topic of `num.partitions`."""
    b = make_broker('"offsets.topic.num.partitions" = 4\n'
                    '"transaction.state.log.num.partitions" = 3\n')
    c = raw.Conn(b.bootstrap)
    md = raw.metadata_v1(c, ["__consumer_offsets", "__transaction_state"])
    assert md["__consumer_offsets"][2] == 4, md
    assert md["__transaction_state"][2] == 3, md
    for name in ("__consumer_offsets", "__transaction_state"):
        res = ConfigResource("topic", name)
        entries = admin(b).describe_configs([res])[res].result(30)
        assert entries["cleanup.policy"].value == "compact", name


def test_internal_topics_are_flagged(broker):
    create(broker, "__consumer_offsets", 2)
    create(broker, "plain", 1)
    md = raw.metadata_v1(raw.Conn(broker.bootstrap), None)
    assert md["__consumer_offsets"][1] is True
    assert md["plain"][1] is False


def test_describe_configs_values_defaults_and_sources(make_broker):
    b = make_broker('"log.retention.ms" = 1234567')
    create(b, "described", 1, {"segment.bytes": "1048576"})
    res = ConfigResource("topic", "described")
    entries = admin(b).describe_configs([res])[res].result(30)
    seg, ret, ts = entries["segment.bytes"], entries["retention.ms"], entries["message.timestamp.type"]
    assert (seg.value, seg.source) == ("1048576", 1)          # DYNAMIC_TOPIC_CONFIG
    assert (ret.value, ret.source) == ("1234567", 4)          # STATIC_BROKER_CONFIG
    assert (ts.value, ts.source, ts.is_default) == ("CreateTime", 5, True)  # DEFAULT_CONFIG
    assert {s.name for s in ret.synonyms.values()} >= {"log.retention.ms"}
    broker_res = ConfigResource("broker", "0")
    entries = admin(b).describe_configs([broker_res])[broker_res].result(30)
    assert entries["num.partitions"].value == "1"
    assert entries["log.retention.ms"].value == "1234567"


def test_describe_cluster_and_topic_ids_survive_restart(broker):
    from confluent_kafka import TopicCollection
    create(broker, "ids", 2)
    a = admin(broker)
    desc = a.describe_cluster().result(30)
    assert [n.id for n in desc.nodes] == [0] and desc.controller.id == 0 and desc.cluster_id
    before = str(a.describe_topics(TopicCollection(["ids"]))["ids"].result(30).topic_id)
    assert str(before) not in ("", "AAAAAAAAAAAAAAAAAAAAAA")
    broker.kill9()
    broker.start()
    a = admin(broker)
    assert str(a.describe_topics(TopicCollection(["ids"]))["ids"].result(30).topic_id) == before
    assert a.describe_cluster().result(30).cluster_id == desc.cluster_id


def test_log_append_time_restamps_records(broker):
    create(broker, "lat", 1, {"message.timestamp.type": "LogAppendTime"})
    c = raw.Conn(broker.bootstrap)
    before = int(time.time() * 1000)
    err, base, log_append_time = raw.produce_v3(c, "lat", 0, raw.batch([(None, b"x", []), (None, b"y", [])], base_ts=5))
    assert err == 0 and before - 1000 <= log_append_time <= int(time.time() * 1000) + 1000
    cons = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused", "enable.auto.commit": False})
    cons.assign([TopicPartition("lat", 0, 0)])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 2 and time.monotonic() < deadline:
        m = cons.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.timestamp())
    cons.close()
    assert got == [(2, log_append_time)] * 2  # TIMESTAMP_LOG_APPEND_TIME


def test_flush_messages_1_with_concurrent_producers_survives_kill9(broker):
    create(broker, "durable", 2, {"flush.messages": "1"})
    acked = []
    lock = threading.Lock()

    def run(n):
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "acks": "all"})
        for i in range(100):
            def cb(err, msg, i=i):
                if err is None:
                    with lock:
                        acked.append((msg.partition(), msg.offset()))
            p.produce("durable", f"{n}-{i}".encode(), partition=i % 2, on_delivery=cb)
            p.poll(0)
        assert p.flush(30) == 0

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(acked) == 400
    broker.kill9()
    broker.start()
    c = raw.Conn(broker.bootstrap)
    for p in (0, 1):
        assert raw.fetch_v4(c, "durable", p, 0)[1] == sum(1 for pp, _ in acked if pp == p)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_answers_in_flight_requests_and_exits_cleanly(broker, sig):
    c = raw.Conn(broker.bootstrap, timeout=30)
    raw.produce_v3(c, "bye", 0, raw.batch([(None, b"x", [])]))
    result = {}

    def long_poll():
        conn = raw.Conn(broker.bootstrap, timeout=30)
        result["answer"] = raw.fetch_v4(conn, "bye", 0, 1, max_wait_ms=20000)

    t = threading.Thread(target=long_poll)
    t.start()
    time.sleep(0.5)
    start = time.monotonic()
    assert broker.stop(sig) == 0
    t.join(10)
    assert result["answer"][0] == 0, "the in-flight fetch was answered"
    assert time.monotonic() - start < 10
    assert "broker stopped cleanly" in broker.log_text()
    broker.start()
    assert raw.fetch_v4(raw.Conn(broker.bootstrap), "bye", 0, 0)[1] == 1
    assert "truncated" not in broker.log_text()
