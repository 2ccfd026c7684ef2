"""Just enough of the Kafka wire format, by hand, to send requests the clients never would."""

import socket
import struct

from kafka.record.default_records import DefaultRecordBatchBuilder


def batch(records, base_ts=1000, compression=0, producer_id=-1, producer_epoch=-1, base_sequence=-1):
    """A v2 record batch. `records` is a list of (key, value, headers)."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False,
                                  producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=base_sequence,
                                  batch_size=1 << 30)
    for i, (k, v, h) in enumerate(records):
        b.append(i, timestamp=base_ts + i, key=k, value=v, headers=h)
    return bytes(b.build())


TRANSACTIONAL = 0x10
CONTROL = 0x20


def with_attributes(batch_bytes, bits):
    """The batch with attribute `bits` set (TRANSACTIONAL, CONTROL) and its CRC made right
    again, as a client that forges one would."""
    from kafka.record.util import calc_crc32c
    b = bytearray(batch_bytes)
    (attrs,) = struct.unpack_from(">h", b, 21)
    struct.pack_into(">h", b, 21, attrs | bits)
    struct.pack_into(">I", b, 17, calc_crc32c(bytes(b[21:])))
    return bytes(b)


def marker(producer_id, producer_epoch, commit):
    """A transaction marker (a control batch) for the producer, built by hand."""
    key = struct.pack(">hh", 0, 1 if commit else 0)
    value = struct.pack(">hi", 0, 0)
    return with_attributes(batch([(key, value, [])], producer_id=producer_id, producer_epoch=producer_epoch),
                           TRANSACTIONAL | CONTROL)


def producer_of(records_bytes):
    """(producer id, producer epoch, attributes) of the first batch."""
    (attrs,) = struct.unpack_from(">h", records_bytes, 21)
    pid, epoch = struct.unpack_from(">qh", records_bytes, 43)
    return pid, epoch, attrs


def string(s):
    if s is None:
        return struct.pack(">h", -1)
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def nbytes(b):
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + b


def array(items):
    return struct.pack(">i", len(items)) + b"".join(items)


def frame(api_key, version, correlation_id, body, client_id="raw-test"):
    header = struct.pack(">hhi", api_key, version, correlation_id) + string(client_id)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def nbytes(self):
        n = self.take(">i")
        if n < 0:
            return None
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b


class Conn:
    def __init__(self, bootstrap, timeout=10):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)

    def send_raw(self, data):
        self.sock.sendall(data)

    def recv_frame(self):
        """The next response (after its size), or None if the broker closed the connection."""
        head = self._recv_exact(4)
        if head is None:
            return None
        (size,) = struct.unpack(">i", head)
        return self._recv_exact(size)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def request(self, api_key, version, body, correlation_id=1):
        self.send_raw(frame(api_key, version, correlation_id, body))
        resp = self.recv_frame()
        assert resp is not None, f"connection closed instead of answering api {api_key} v{version}"
        r = Reader(resp)
        assert r.take(">i") == correlation_id
        return r

    def closed_by_peer(self, timeout=5):
        """True once the broker has closed this connection."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def produce_v3_body(topic, partition, records_bytes, acks=1, timeout_ms=10000, transactional_id=None):
    body = string(transactional_id) + struct.pack(">hi", acks, timeout_ms)
    return body + array([string(topic) + array([struct.pack(">i", partition) + nbytes(records_bytes)])])


def produce_v3(conn, topic, partition, records_bytes, acks=1, transactional_id=None):
    """Returns (error_code, base_offset, log_append_time)."""
    r = conn.request(0, 3, produce_v3_body(topic, partition, records_bytes, acks, transactional_id=transactional_id))
    return produce_v3_answer(r, topic, partition)


def produce_v3_answer(r, topic, partition):
    """(error_code, base_offset, log_append_time) from a Produce v3 response body read
    past its correlation id."""
    assert r.take(">i") == 1
    assert r.string() == topic
    assert r.take(">i") == 1
    p, err, base, lat = r.take(">ihqq")
    assert p == partition
    return err, base, lat


def fetch_v4(conn, topic, partition, offset, max_wait_ms=0, min_bytes=1, max_bytes=1 << 20, partition_max_bytes=1 << 20):
    """Returns (error_code, high_watermark, records bytes)."""
    body = struct.pack(">iiiib", -1, max_wait_ms, min_bytes, max_bytes, 0)
    body += array([string(topic) + array([struct.pack(">iqi", partition, offset, partition_max_bytes)])])
    r = conn.request(1, 4, body)
    r.take(">i")  # throttle
    assert r.take(">i") == 1
    assert r.string() == topic
    assert r.take(">i") == 1
    p, err, hw, lso = r.take(">ihqq")
    n = r.take(">i")
    for _ in range(max(n, 0)):
        r.take(">qq")
    return err, hw, r.nbytes()


def metadata_v1(conn, topics):
    """Returns {topic: (error_code, is_internal, partition count)}."""
    body = array([string(t) for t in topics]) if topics is not None else struct.pack(">i", -1)
    r = conn.request(3, 1, body)
    for _ in range(r.take(">i")):
        r.take(">i"); r.string(); r.take(">i"); r.string()
    r.take(">i")  # controller
    out = {}
    for _ in range(r.take(">i")):
        err = r.take(">h")
        name = r.string()
        internal = r.take(">b")
        parts = r.take(">i")
        for _ in range(parts):
            r.take(">hii")  # error, partition, leader
            for _replicas_then_isr in range(2):
                for _ in range(r.take(">i")):
                    r.take(">i")
        out[name] = (err, bool(internal), parts)
    return out


def batches_in(records_bytes):
    """(base_offset, record count, total bytes) of each whole batch."""
    out, pos = [], 0
    while pos + 61 <= len(records_bytes):
        base, length = struct.unpack_from(">qi", records_bytes, pos)
        total = 12 + length
        if pos + total > len(records_bytes):
            break
        (count,) = struct.unpack_from(">i", records_bytes, pos + 57)
        out.append((base, count, total))
        pos += total
    return out
