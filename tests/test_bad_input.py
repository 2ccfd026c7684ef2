"""Bad input closes only the offending connection (one log line), or gets Kafka's error
code; the broker keeps serving everyone else."""

import struct

import kafka_raw as raw

UNKNOWN_TOPIC_OR_PARTITION = 3
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
UNSUPPORTED_VERSION = 35
INVALID_TOPIC_EXCEPTION = 17
INVALID_REQUIRED_ACKS = 21
UNSUPPORTED_FOR_MESSAGE_FORMAT = 43


def still_serving(broker):
    """A fresh connection gets a full ApiVersions answer."""
    c = raw.Conn(broker.bootstrap)
    r = c.request(18, 0, b"")
    assert r.take(">h") == 0
    assert r.take(">i") >= 10
    c.close()
    return True


def test_oversized_frame_closes_the_connection(broker):
    c = raw.Conn(broker.bootstrap)
    c.send_raw(struct.pack(">i", 100 * 1024 * 1024 + 1) + b"\0" * 64)
    assert c.closed_by_peer()
    assert still_serving(broker)
    assert "exceeds socket.request.max.bytes" in broker.log_text()


def test_negative_frame_size_closes_the_connection(broker):
    c = raw.Conn(broker.bootstrap)
    c.send_raw(struct.pack(">i", -5))
    assert c.closed_by_peer()
    assert still_serving(broker)


def test_truncated_frame_closes_only_that_connection(broker):
    c = raw.Conn(broker.bootstrap)
    c.send_raw(struct.pack(">i", 1000) + b"\0\x03\0\x01")
    c.sock.shutdown(1)  # half-close: the rest of the frame never comes
    assert c.closed_by_peer()
    assert still_serving(broker)
    assert "truncated frame" in broker.log_text()


def test_garbage_frames_close_the_connection(broker):
    for garbage in [b"\xff" * 3, b"\x00\x03\x00\x01\x00\x00\x00\x01\xff", b"\x00\x00\x00\x07" + b"\xee" * 40]:
        c = raw.Conn(broker.bootstrap)
        c.send_raw(struct.pack(">i", len(garbage)) + garbage)
        assert c.closed_by_peer(), garbage
    assert still_serving(broker)


def test_hostile_array_count_is_refused_without_aborting(broker):
    # MetadataRequest v1 whose topic count is 0x7fffffff: unpatched kafka-protocol 0.18
    # tries to allocate ~154 GB and aborts the process.
    c = raw.Conn(broker.bootstrap)
    c.send_raw(raw.frame(3, 1, 9, b"\x7f\xff\xff\xff"))
    assert c.closed_by_peer()
    assert broker.alive()
    assert still_serving(broker)


def test_unknown_api_key_closes_the_connection(broker):
    c = raw.Conn(broker.bootstrap)
    c.send_raw(raw.frame(9999, 0, 1, b""))
    assert c.closed_by_peer()
    assert still_serving(broker)
    assert "unknown API key 9999" in broker.log_text()


def test_unsupported_api_versions_version_gets_a_v0_answer(broker):
    c = raw.Conn(broker.bootstrap)
    r = c.request(18, 99, b"")
    assert r.take(">h") == UNSUPPORTED_VERSION
    apis = {}
    for _ in range(r.take(">i")):
        key, lo, hi = r.take(">hhh")
        apis[key] = (lo, hi)
    assert apis[0][0] == 3 and apis[1][0] == 4, "produce >= 3 and fetch >= 4 must be advertised"
    # The same connection keeps working.
    assert c.request(18, 0, b"", correlation_id=2).take(">h") == 0


def test_unsupported_version_of_another_api_closes_the_connection(broker):
    c = raw.Conn(broker.bootstrap)
    c.send_raw(raw.frame(0, 2, 1, b""))  # Produce v2: below Kafka 4's floor
    assert c.closed_by_peer()
    assert still_serving(broker)


def test_unknown_topics_and_partitions(make_broker):
    broker = make_broker('"auto.create.topics.enable" = false')
    c = raw.Conn(broker.bootstrap)
    md = raw.metadata_v1(c, ["nope", "bad name!"])
    assert md["nope"][0] == UNKNOWN_TOPIC_OR_PARTITION
    assert md["bad name!"][0] == INVALID_TOPIC_EXCEPTION
    err, _, _ = raw.produce_v3(c, "nope", 0, raw.batch([(None, b"x", [])]))
    assert err == UNKNOWN_TOPIC_OR_PARTITION
    err, _, _ = raw.fetch_v4(c, "nope", 0, 0)
    assert err == UNKNOWN_TOPIC_OR_PARTITION


def test_fetch_outside_the_log_and_unknown_partition(broker):
    c = raw.Conn(broker.bootstrap)
    err, base, _ = raw.produce_v3(c, "oor", 0, raw.batch([(None, b"a", []), (None, b"b", [])]))
    assert (err, base) == (0, 0)
    assert raw.fetch_v4(c, "oor", 0, 3)[0] == OFFSET_OUT_OF_RANGE
    assert raw.fetch_v4(c, "oor", 0, -1)[0] == OFFSET_OUT_OF_RANGE
    err, hw, records = raw.fetch_v4(c, "oor", 0, 2)
    assert (err, hw, records) == (0, 2, b"")
    assert raw.fetch_v4(c, "oor", 7, 0)[0] == UNKNOWN_TOPIC_OR_PARTITION
    assert raw.produce_v3(c, "oor", 7, raw.batch([(None, b"x", [])]))[0] == UNKNOWN_TOPIC_OR_PARTITION


def test_corrupt_batches_are_refused_and_nothing_is_appended(broker):
    c = raw.Conn(broker.bootstrap)
    good = raw.batch([(b"k", b"v" * 50, [("h", b"1")])])
    assert raw.produce_v3(c, "crc", 0, good)[0] == 0
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF
    assert raw.produce_v3(c, "crc", 0, bytes(flipped))[0] == CORRUPT_MESSAGE
    assert raw.produce_v3(c, "crc", 0, good[:-3])[0] == CORRUPT_MESSAGE
    old_magic = bytearray(good)
    old_magic[16] = 1
    assert raw.produce_v3(c, "crc", 0, bytes(old_magic))[0] == UNSUPPORTED_FOR_MESSAGE_FORMAT
    assert raw.produce_v3(c, "crc", 0, good, acks=5)[0] == INVALID_REQUIRED_ACKS
    # Only the good batch is in the log, served back byte for byte apart from offsets.
    err, hw, records = raw.fetch_v4(c, "crc", 0, 0)
    assert (err, hw) == (0, 1)
    assert records[12:16] == b"\0\0\0\0" and records[16:] == good[16:]
    assert still_serving(broker)


def test_batch_over_max_message_bytes_is_refused(make_broker):
    broker = make_broker('"message.max.bytes" = 10000')
    c = raw.Conn(broker.bootstrap)
    assert raw.produce_v3(c, "big", 0, raw.batch([(None, b"x" * 20000, [])]))[0] == MESSAGE_TOO_LARGE
    assert raw.produce_v3(c, "big", 0, raw.batch([(None, b"x" * 5000, [])]))[0] == 0
    assert raw.fetch_v4(c, "big", 0, 0)[1] == 1


def test_acks_0_sends_no_response_but_appends(broker):
    import struct as st
    c = raw.Conn(broker.bootstrap)
    body = raw.string(None) + st.pack(">hi", 0, 10000)
    body += raw.array([raw.string("fire") + raw.array([st.pack(">i", 0) + raw.nbytes(raw.batch([(None, b"x", [])]))])])
    c.send_raw(raw.frame(0, 3, 41, body))
    # The next answer on this connection is for the next request: nothing was sent for acks=0.
    err, hw, _ = raw.fetch_v4(c, "fire", 0, 0)  # correlation id 1, checked by request()
    assert (err, hw) == (0, 1)
