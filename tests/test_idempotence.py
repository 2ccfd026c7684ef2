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
