"""Idempotent producers: a retried batch is stored once and answered with its original
offset, across a clean restart and a kill -9; gaps, stale epochs and unknown producers get
Kafka's error codes."""

import struct

import kafka_raw as raw

OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, UNKNOWN_PRODUCER_ID = 45, 47, 59


def init_producer_id(conn):
    r = conn.request(22, 0, raw.string(None) + struct.pack(">i", 60000))
    r.take(">i")  # throttle
    err, pid, epoch = r.take(">hqh")
    assert err == 0 and pid >= 0 and epoch == 0
    return pid


def records_in_log(conn, topic):
    _, hw, records = raw.fetch_v4(conn, topic, 0, 0)
    return hw, raw.batches_in(records)


def test_the_same_produce_request_twice_is_stored_once(broker):
    c = raw.Conn(broker.bootstrap)
    pid = init_producer_id(c)
    assert init_producer_id(c) != pid, "every InitProducerId hands out a new id"
    first = raw.batch([(b"k", b"one", []), (b"k", b"two", [])], producer_id=pid, producer_epoch=0, base_sequence=0)
    assert raw.produce_v3(c, "idem", 0, first)[:2] == (0, 0)
    assert raw.produce_v3(c, "idem", 0, first)[:2] == (0, 0), "the retry is answered with the original offset"
    hw, batches = records_in_log(c, "idem")
    assert hw == 2 and len(batches) == 1, "the retried batch was stored twice"
    second = raw.batch([(b"k", b"three", [])], producer_id=pid, producer_epoch=0, base_sequence=2)
    assert raw.produce_v3(c, "idem", 0, second)[:2] == (0, 2)

    broker.restart()
    c = raw.Conn(broker.bootstrap)
    assert raw.produce_v3(c, "idem", 0, second)[:2] == (0, 2), "deduplicated after a clean restart"
    assert raw.produce_v3(c, "idem", 0, first)[:2] == (0, 0)
    broker.kill9()
    broker.start()
    c = raw.Conn(broker.bootstrap)
    assert raw.produce_v3(c, "idem", 0, second)[:2] == (0, 2), "deduplicated after kill -9"
    assert records_in_log(c, "idem")[0] == 3

    gap = raw.batch([(b"k", b"gap", [])], producer_id=pid, producer_epoch=0, base_sequence=7)
    assert raw.produce_v3(c, "idem", 0, gap)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
    newer = raw.batch([(b"k", b"new epoch", [])], producer_id=pid, producer_epoch=1, base_sequence=0)
    assert raw.produce_v3(c, "idem", 0, newer)[:2] == (0, 3)
    stale = raw.batch([(b"k", b"zombie", [])], producer_id=pid, producer_epoch=0, base_sequence=3)
    assert raw.produce_v3(c, "idem", 0, stale)[0] == INVALID_PRODUCER_EPOCH
    stranger = raw.batch([(b"k", b"who", [])], producer_id=pid + 1000, producer_epoch=0, base_sequence=5)
    assert raw.produce_v3(c, "idem", 0, stranger)[0] == UNKNOWN_PRODUCER_ID
    assert records_in_log(c, "idem")[0] == 4, "refused batches left no trace"


def test_confluent_idempotent_producer_through_broker_restarts_stores_each_record_once_in_order(broker):
    import threading
    import time

    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("idem-restart", 3, 1)])["idem-restart"].result(30)
    n = 30000
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 2,
                  "retry.backoff.ms": 50, "message.timeout.ms": 120000})
    failures = []
    sent = threading.Event()
    progress = [0]

    def produce_all():
        for i in range(n):
            while True:
                try:
                    p.produce("idem-restart", value=str(i).encode(), partition=i % 3,
                              on_delivery=lambda err, _m: err and failures.append(err))
                    break
                except BufferError:
                    p.poll(0.01)
            progress[0] = i
            if i % 500 == 0:
                p.poll(0)
                time.sleep(0.1)  # spread the records over the restarts
        sent.set()

    t = threading.Thread(target=produce_all)
    t.start()
    time.sleep(1.0)
    at_restart = progress[0]
    broker.restart()  # clean stop and start while records are in flight
    time.sleep(1.0)
    at_kill = progress[0]
    broker.kill9()
    broker.start()
    assert 0 < at_restart < at_kill < n - 1, (at_restart, at_kill)
    t.join(120)
    assert sent.is_set()
    assert p.flush(120) == 0 and not failures, failures[:3]
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "check", "enable.auto.commit": False})
    c.assign([TopicPartition("idem-restart", q, OFFSET_BEGINNING) for q in range(3)])
    got = {0: [], 1: [], 2: []}
    deadline = time.monotonic() + 60
    while sum(map(len, got.values())) < n and time.monotonic() < deadline:
        for m in c.consume(1000, 0.5):
            if m.error() is None:
                got[m.partition()].append(int(m.value()))
    time.sleep(0.5)
    for m in c.consume(1000, 0.5):  # anything further would be a duplicate
        if m.error() is None:
            got[m.partition()].append(int(m.value()))
    c.close()
    for q in range(3):
        assert got[q] == list(range(q, n, 3)), f"partition {q}: {len(got[q])} records, not each once in order"
