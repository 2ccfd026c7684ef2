"""Each client library creates topics, produces with every codec, and reads everything back
exactly, before and after a clean restart and a kill -9."""

import pytest

from clients import CLIENTS, CODECS

PARTITIONS = 3
PER_CODEC = 24
BASE_TS = 1_700_000_000_000


def workload():
    """Per codec: keyed records, unkeyed records, records sent to an explicit partition;
    repeated header keys; distinct timestamps, increasing per codec."""
    items = []
    for ci, codec in enumerate(CODECS):
        batch = []
        for i in range(PER_CODEC):
            n = ci * PER_CODEC + i
            key = f"key-{i % 5}".encode() if i % 3 != 1 else None
            part = (i % PARTITIONS) if i % 3 == 2 else None
            headers = [("trace", b"a"), ("trace", b"b"), ("n", str(n).encode())]
            if i % 4 == 0:
                headers = []
            value = f"{codec}-{i}-".encode() * (1 + i % 7)
            batch.append((key, value, headers, BASE_TS + n * 10, part))
        items.append((codec, batch))
    return items


def produce_all(client, bootstrap, topic):
    expected = {}
    for codec, batch in workload():
        placed = client.produce(bootstrap, topic, batch, codec)
        assert len(placed) == len(batch)
        for (key, value, headers, ts, part), (p, o) in zip(batch, placed):
            if part is not None:
                assert p == part, "an explicit partition was not honoured"
            assert (p, o) not in expected, f"offset {o} of partition {p} handed out twice"
            expected[(p, o)] = (key, value, headers, ts)
    return expected


def check_read(client, bootstrap, topic, expected):
    got = client.consume(bootstrap, topic, list(range(PARTITIONS)), len(expected))
    assert len(got) == len(expected), f"read {len(got)} of {len(expected)} records"
    by_partition = {}
    for r in got:
        assert (r.partition, r.offset) in expected, f"unexpected record at {r.partition}/{r.offset}"
        key, value, headers, ts = expected[(r.partition, r.offset)]
        assert (r.key, r.value, list(map(tuple, r.headers)), r.timestamp) == (key, value, headers, ts), \
            f"record {r.partition}/{r.offset} differs"
        by_partition.setdefault(r.partition, []).append(r.offset)
    for p, offsets in by_partition.items():
        assert offsets == sorted(offsets), f"partition {p} read out of order"
        assert offsets == list(range(len(offsets))), f"partition {p} offsets are not 0..n: {offsets}"


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.name)
def test_round_trip_every_codec_across_restarts(broker, client):
    topic = f"roundtrip-{client.name}"
    client.create_topic(broker.bootstrap, topic, PARTITIONS)
    expected = produce_all(client, broker.bootstrap, topic)
    assert {p for p, _ in expected} == set(range(PARTITIONS)), "records did not spread over every partition"
    check_read(client, broker.bootstrap, topic, expected)

    assert broker.restart() == 0, "clean stop did not exit 0"
    check_read(client, broker.bootstrap, topic, expected)

    broker.kill9()
    broker.start()
    check_read(client, broker.bootstrap, topic, expected)

    # Timestamp look-ups: for a few records, the answer is the first offset in that
    # partition whose timestamp is at or after the record's.
    for (p, o), (_, _, _, ts) in list(expected.items())[::17]:
        want = min(off for (pp, off), rec in expected.items() if pp == p and rec[3] >= ts)
        got = client.offset_for_time(broker.bootstrap, topic, p, ts)
        assert got is not None and got[0] == want, f"offsets_for_times({p}, {ts}) = {got}, want offset {want}"
        if got[1] is not None:
            assert got[1] == expected[(p, want)][3]
    assert client.offset_for_time(broker.bootstrap, topic, 0, BASE_TS + 10**9) is None


@pytest.mark.parametrize("producer", CLIENTS, ids=lambda c: c.name)
def test_records_from_one_client_read_by_the_others(broker, producer):
    topic = f"cross-{producer.name}"
    producer.create_topic(broker.bootstrap, topic, PARTITIONS)
    expected = produce_all(producer, broker.bootstrap, topic)
    for consumer in CLIENTS:
        check_read(consumer, broker.bootstrap, topic, expected)
