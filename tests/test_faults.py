"""The fault suite: the faults an outside campaign used to find lost acknowledged writes,
data served corrupted, and brokers that would not stop, run against real brokers on
loopback with hand-built requests and real clients, each judged by a checker that reads
every partition back and does not trust the broker's own account.

Each scenario runs `FAULT_RUNS` times (default 1: the bounded profile that
`./scripts/test.sh` runs); `./scripts/faults.sh --runs N` is the long profile (see
docs/reliability.md for what it found).
"""

import os
import signal
import struct
import subprocess
import time

import pytest

from cluster import BIN, Cluster
from kafka_raw import Conn, Reader, batch, frame, produce_v3, produce_v3_answer, produce_v3_body

RUNS = int(os.environ.get("FAULT_RUNS", "1"))
runs = pytest.mark.parametrize("run", range(RUNS))

NOT_LEADER_OR_FOLLOWER = 6
MEMBER_CLIENT = os.environ.get("FAULT_MEMBER_CLIENT", "confluent")
# Megabytes of other groups' commits in the failover group's offsets partition: 64
# reproduces the campaign's item 7 on a build without the loading guard (3 of 4 runs). Off
# in the bounded profile: padded runs also stalled, on both builds, about once in 16 runs
# (members stopped reaching the new coordinator; see docs/reliability.md), not yet
# explained.
PAD_MB = int(os.environ.get("FAULT_PAD_MB", "0"))
# The members' session in the group failover. Before a killed broker was fenced on a
# refused knock, the failover waited for the broker's 9 s session and took 9.2-9.3 s, so a
# 10 s member session could expire on the client's side; now it takes 2-3.5 s. Item 7's
# reproduction runs 10 s with the padding (FAULT_MEMBER_SESSION_MS=10000 FAULT_PAD_MB=64).
MEMBER_SESSION_MS = int(os.environ.get("FAULT_MEMBER_SESSION_MS", "20000"))
REQUEST_TIMED_OUT = 7
NOT_ENOUGH_REPLICAS = 19


def log_of(cluster, topic, partition, timeout=60):
    """{offset: value} of one partition, read back from whichever broker leads it, from the
    log start to its high watermark, with confluent-kafka (not the broker's own tools)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "fault-checker",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        c.assign([TopicPartition(topic, partition, low)])
        out = {}
        while high > low and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF and m.offset() >= high:
                    break
                continue
            out[m.offset()] = m.value().decode()
            if m.offset() + 1 >= high:
                break
        return out
    finally:
        c.close()


def judge(acked, log):
    """The checker for hand-built produces: `acked` maps each value whose Produce was
    answered with no error to the base offset the broker gave it. Returns the lost, moved
    and duplicated values."""
    where = {}
    duplicated = []
    for offset, value in log.items():
        if value in where:
            duplicated.append(value)
        where[value] = offset
    lost = [v for v in acked if v not in where]
    moved = [(v, acked[v], where[v]) for v in acked if v in where and where[v] != acked[v]]
    return lost, moved, duplicated


def one(value):
    return batch([(None, value.encode(), [])])


@runs
def test_a_paused_leader_acknowledges_nothing_it_then_truncates(tmp_path, run):
    """Item 1 of the fault campaign: SIGSTOP the leader past the session timeout with
    acks=all Produce requests queued on its connections, let the new leader take writes,
    then SIGCONT. Every Produce the resumed broker answers with no error must be in the
    log at the offset it gave."""
    cluster = Cluster(tmp_path).start()
    try:
        topic = "paused"
        cluster.create_topic(topic, 1, 3, {"min.insync.replicas": "2"})
        cluster.wait_leaders(topic, 1, isr=3)
        victim = cluster.leader(topic, 0)
        acked = {}
        conns = [Conn(cluster.nodes[victim].bootstrap, timeout=60) for _ in range(6)]
        for i, conn in enumerate(conns):
            err, base, _ = produce_v3(conn, topic, 0, one(f"warm-{i}"), acks=-1)
            assert err == 0, f"warm-up produce refused with {err}"
            acked[f"warm-{i}"] = base

        cluster.nodes[victim].pause()
        paused_at = time.monotonic()
        others = [n for n in cluster.nodes if n != victim]
        # The others fence the paused broker and elect a leader among themselves; the new
        # leader takes more records than the paused one will append.
        new_leader = None
        while time.monotonic() - paused_at < 30:
            new_leader = leader_seen_by(cluster, others[0], topic)
            if new_leader in others:
                break
            time.sleep(0.2)
        assert new_leader in others, "no new leader within 30 s of pausing the old one"
        fresh = Conn(cluster.nodes[new_leader].bootstrap)
        for i in range(40):
            err, base, _ = produce_v3(fresh, topic, 0, one(f"new-{i}"), acks=-1)
            if err == 0:
                acked[f"new-{i}"] = base
        fresh.close()
        # Requests queued at the paused broker: read once it runs again.
        correlation = 100
        queued = []
        for j, conn in enumerate(conns):
            for k in range(3):
                value = f"queued-{j}-{k}"
                conn.send_raw(frame(0, 3, correlation, produce_v3_body(topic, 0, one(value), acks=-1)))
                queued.append((conn, correlation, value))
                correlation += 1
        time.sleep(max(0.0, 6.0 - (time.monotonic() - paused_at)))
        cluster.nodes[victim].resume()
        answers = {}
        for conn, corr, value in queued:
            data = conn.recv_frame()
            if data is None:
                answers[value] = "closed"
                continue
            r = Reader(data)
            assert r.take(">i") == corr
            err, base, _ = produce_v3_answer(r, topic, 0)
            answers[value] = err
            if err == 0:
                acked[value] = base
        for conn in conns:
            conn.close()
        cluster.wait_leaders(topic, 1, isr=3, timeout=60)
        log = log_of(cluster, topic, 0)
        lost, moved, duplicated = judge(acked, log)
        assert not lost and not moved and not duplicated, (
            f"acknowledged records lost: {lost}; moved (value, acked at, now at): {moved}; "
            f"stored twice: {duplicated}; queued answers: {answers}")
        # Whatever the paused broker refused, it refused with a retriable error.
        assert set(answers.values()) <= {0, NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT,
                                         NOT_ENOUGH_REPLICAS, "closed"}, answers
        print(f"run {run}: {len(acked)} acknowledged, none lost; queued answers {sorted(set(map(str, answers.values())))}")
    finally:
        cluster.stop()


def leader_seen_by(cluster, node_id, topic):
    """The partition-0 leader as one broker's metadata shows it (kcat, so the paused
    broker in the bootstrap list cannot stall the question)."""
    import json
    out = subprocess.run(["kcat", "-L", "-J", "-b", cluster.nodes[node_id].bootstrap, "-t", topic],
                         capture_output=True, text=True, timeout=10)
    try:
        parts = json.loads(out.stdout)["topics"][0]["partitions"]
        return next(p for p in parts if p["partition"] == 0)["leader"]
    except (ValueError, KeyError, IndexError, StopIteration):
        return None


def test_a_second_broker_on_the_same_data_directory_exits_at_once(tmp_path):
    """Item 2: the data directory is locked before anything in it is opened; a second
    broker, and an offline command that writes there, exit with a message that says so,
    and the first broker's acknowledged records are all there after a restart."""
    from conftest import Broker, free_port
    data = tmp_path / "data"
    first = Broker(data).start()
    try:
        conn = Conn(first.bootstrap)
        acked = {}
        for i in range(20):
            err, base, _ = produce_v3(conn, "shared-dir", 0, one(f"first-{i}"), acks=-1)
            if err == 3:  # the topic is being auto-created
                time.sleep(0.2)
                err, base, _ = produce_v3(conn, "shared-dir", 0, one(f"first-{i}"), acks=-1)
            assert err == 0
            acked[f"first-{i}"] = base
        conn.close()
        before = sorted(p.name for p in data.rglob("*"))
        second = subprocess.run(
            [str(BIN), "broker", "--data-dir", str(data), "--listen", f"127.0.0.1:{free_port()}",
             "--metrics", "off"], capture_output=True, text=True, timeout=20)
        assert second.returncode != 0
        assert "another process" in second.stderr and str(data) in second.stderr, second.stderr
        pw = tmp_path / "mallory.pw"
        pw.write_text("correct horse battery\n")
        offline = subprocess.run(
            [str(BIN), "user", "create", "mallory", "--data-dir", str(data), "--password-file", str(pw)],
            capture_output=True, text=True, timeout=20)
        assert offline.returncode != 0 and "another process" in offline.stderr, offline.stderr
        assert sorted(p.name for p in data.rglob("*")) == before, "the second process touched the directory"
        conn = Conn(first.bootstrap)
        err, _, _ = produce_v3(conn, "shared-dir", 0, one("first-after"), acks=-1)
        assert err == 0
        conn.close()
        first.restart()
        got = read_partition(first.bootstrap, "shared-dir", 0)
        lost, moved, duplicated = judge(acked, got)
        assert not lost and not moved and not duplicated, (lost, moved, duplicated)
    finally:
        first.stop()


def read_partition(bootstrap, topic, partition):
    class One:
        pass
    c = One()
    c.bootstrap = bootstrap
    return log_of(c, topic, partition)


def test_a_broker_that_finished_its_controlled_shutdown_is_fenced_at_once(tmp_path):
    """Item 5: with a long session timeout (9 s), a broker stopped with SIGTERM leaves the
    broker list and every ISR as soon as its controlled shutdown is done, and the next
    broker's controlled shutdown moves nothing to it."""
    cluster = Cluster(tmp_path, env={"GREGOR_BROKER_SESSION_TIMEOUT_MS": "9000"}).start()
    try:
        topic = "stopping"
        cluster.create_topic(topic, 6, 3)
        cluster.wait_leaders(topic, 6, isr=3)
        assert cluster.nodes[3].stop() == 0
        stopped_at = time.monotonic()
        md = None
        while time.monotonic() - stopped_at < 3:
            md = metadata_via(cluster, 1, topic)
            if md and sorted(md["brokers"]) == [1, 2] and all(
                    3 not in p["isrs"] and p["leader"] != 3 for p in md["partitions"]):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"3 s after its clean stop broker 3 is still listed or in sync: {md}")
        # The next broker to stop hands its leaderships to broker 1 only.
        assert cluster.nodes[2].stop() == 0
        stopped_at = time.monotonic()
        while time.monotonic() - stopped_at < 3:
            md = metadata_via(cluster, 1, topic)
            if md and sorted(md["brokers"]) == [1]:
                break
            time.sleep(0.1)
        assert md and sorted(md["brokers"]) == [1], md
        assert all(p["leader"] in (1, -1) for p in md["partitions"]), md
    finally:
        cluster.stop()


def metadata_via(cluster, node_id, topic):
    """{brokers, partitions: [{partition, leader, isrs}]} as one broker answers Metadata
    (kcat, so only that broker is asked)."""
    import json
    out = subprocess.run(["kcat", "-L", "-J", "-b", cluster.nodes[node_id].bootstrap, "-t", topic],
                         capture_output=True, text=True, timeout=10)
    try:
        md = json.loads(out.stdout)
    except ValueError:
        return None
    parts = md["topics"][0]["partitions"] if md.get("topics") else []
    return {"brokers": [b["id"] for b in md["brokers"]],
            "partitions": [{"partition": p["partition"], "leader": p["leader"],
                            "isrs": [r["id"] for r in p.get("isrs", [])]} for p in parts]}


# A clean stop ends within shutdown.timeout.ms (10 s) + 15 s plus the final fsyncs; the
# test allows 30 s.
STOP_BOUND_S = 30


@runs
def test_every_broker_of_a_cluster_stops_on_sigterm_within_its_bound(tmp_path, run):
    """Item 6: the README's whole-cluster stop (broker 3, then 1 and 2), after load: every
    broker exits 0 within the bound, with its clean-shutdown marker written."""
    from confluent_kafka import Producer
    # The defaults of the README's cluster block, not the test suite's fast ones.
    cluster = Cluster(tmp_path, env={"GREGOR_BROKER_SESSION_TIMEOUT_MS": "9000",
                                     "GREGOR_BROKER_HEARTBEAT_INTERVAL_MS": "2000"}).start()
    try:
        cluster.create_topic("orders", 6, 3)
        p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5})
        for i in range(2000):
            p.produce("orders", value=f"o{i}".encode())
            p.poll(0)
        p.flush(30)
        # The active controller stops last: alone, it has no quorum to commit anything.
        controller = cluster.controller()
        first, second = [n for n in cluster.nodes if n != controller]
        started = time.monotonic()
        codes = {first: cluster.nodes[first].stop(timeout=STOP_BOUND_S)}
        # Even runs stop the second broker and then the controller; odd runs both at once.
        if run % 2 == 0:
            codes[second] = cluster.nodes[second].stop(timeout=STOP_BOUND_S)
        for n in (second, controller):
            if cluster.nodes[n].proc is not None:
                cluster.nodes[n].proc.send_signal(signal.SIGTERM)
        for n in (second, controller):
            if n in codes:
                continue
            proc = cluster.nodes[n].proc
            try:
                codes[n] = proc.wait(timeout=STOP_BOUND_S)
            except subprocess.TimeoutExpired:
                codes[n] = "hung"
                proc.kill()
                proc.wait()
            cluster.nodes[n].proc = None
        took = time.monotonic() - started
        assert codes == {1: 0, 2: 0, 3: 0}, f"exit codes {codes}\n{cluster.log_digest()}"
        for n in cluster.nodes.values():
            assert (n.data_dir / ".clean-shutdown").exists(), f"node {n.id}: no clean-shutdown marker"
            assert "broker stopped cleanly" in n.log_path.read_text(errors="replace")
        print(f"run {run}: the whole cluster stopped in {took:.1f} s")
    finally:
        cluster.stop()


def test_internal_topics_are_created_once_at_cluster_start(tmp_path):
    """Item 8: every broker is asked for a group coordinator and a transaction coordinator
    at the same moment; `__consumer_offsets` and `__transaction_state` are created once,
    and no broker logs a second creation or records of an unknown topic."""
    import threading
    from kafka_raw import string
    import struct
    cluster = Cluster(tmp_path).start()
    try:
        def find(node, key_type, key):
            conn = Conn(cluster.nodes[node].bootstrap)
            try:
                for _ in range(50):
                    r = conn.request(10, 1, string(key) + struct.pack(">b", key_type))
                    r.take(">i")  # throttle
                    if r.take(">h") == 0:
                        return
                    time.sleep(0.2)
            finally:
                conn.close()
        threads = [threading.Thread(target=find, args=(n, t, k))
                   for n in cluster.nodes for t, k in ((0, "g1"), (1, "t1"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        md = cluster.metadata()
        assert "__consumer_offsets" in md.topics and "__transaction_state" in md.topics
        time.sleep(1)
        for n in cluster.nodes.values():
            text = n.log_path.read_text(errors="replace")
            assert "second creation of a topic ignored" not in text, f"node {n.id}"
            assert "partition record for an unknown topic ignored" not in text, f"node {n.id}"
            assert text.count("created topic") <= 2, f"node {n.id} created topics {text.count('created topic')} times"
    finally:
        cluster.stop()


KAFKA_STORAGE_ERROR = 56


def flip_byte_in_record(segment, nth_batch, delta=40):
    """Flips one byte inside the records of the `nth_batch` batch of a segment file; returns
    that batch's base offset."""
    from kafka_raw import batches_in
    raw = segment.read_bytes()
    pos = 0
    for i, (base, _count, total) in enumerate(batches_in(raw)):
        if i == nth_batch:
            with open(segment, "r+b") as f:
                f.seek(pos + 61 + delta)
                b = f.read(1)
                f.seek(pos + 61 + delta)
                f.write(bytes([b[0] ^ 0xFF]))
            return base
        pos += total
    raise AssertionError(f"{segment} has fewer than {nth_batch + 1} batches")


def test_a_damaged_batch_is_never_served_and_recovery_keeps_what_follows(tmp_path):
    """Item 3 on one broker: a flipped byte inside a record of a closed segment, after a
    clean stop, is found by the scrubber (ERROR naming the file, the metric counts it),
    and the partition refuses to serve rather than serve it; after a crash, recovery
    keeps every valid batch after the damage and gives no offset out twice."""
    import urllib.request
    from conftest import Broker
    from kafka_raw import fetch_v4
    config = '"log.scrub.interval.ms" = 200\n"log.segment.bytes" = 2048\n'
    b = Broker(tmp_path / "data", config).start()
    try:
        conn = Conn(b.bootstrap)
        acked = {}
        for i in range(60):
            value = f"record-{i:04d}-" + "x" * 40
            for _ in range(20):
                err, base, _ = produce_v3(conn, "scrubbed", 0, one(value), acks=-1)
                if err != 3:
                    break
                time.sleep(0.1)
            assert err == 0, err
            acked[value] = base
        conn.close()
        assert b.stop() == 0
        part = tmp_path / "data" / "scrubbed-0"
        segments = sorted(part.glob("*.log"))
        assert len(segments) >= 3, "the test needs closed segments"
        size_before = {s.name: s.stat().st_size for s in segments}
        damaged_offset = flip_byte_in_record(segments[0], 2)
        b.start()
        deadline = time.monotonic() + 20
        while "damaged batches inside the log" not in b.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = b.log_text()
        assert "damaged batches inside the log" in text and segments[0].name in text, text[-3000:]
        metrics = urllib.request.urlopen(b.metrics_url, timeout=5).read().decode()
        count = [l for l in metrics.splitlines() if l.startswith("gregor_damaged_batches_total")]
        assert count and float(count[0].split()[-1]) >= 1, count
        conn = Conn(b.bootstrap)
        err, _hw, records = fetch_v4(conn, "scrubbed", 0, 0)
        assert err == KAFKA_STORAGE_ERROR and not records, (err, records)
        err, _, _ = produce_v3(conn, "scrubbed", 0, one("after-damage"), acks=-1)
        assert err == KAFKA_STORAGE_ERROR, err
        conn.close()
        # A crash (no clean-shutdown marker): recovery verifies, finds valid batches after
        # the bad one, and cuts nothing.
        b.kill9()
        b.start()
        time.sleep(1)
        assert {s.name: s.stat().st_size for s in sorted(part.glob("*.log"))} == size_before
        conn = Conn(b.bootstrap)
        err, _, _ = produce_v3(conn, "scrubbed", 0, one("after-crash"), acks=-1)
        assert err == KAFKA_STORAGE_ERROR, err
        conn.close()
        assert b.log_text().count("damaged batches inside the log") >= 2
        # The offline check finds the same damage, and nothing on a healthy directory.
        verify = subprocess.run([str(BIN), "data", "verify", "--data-dir", str(tmp_path / "data")],
                                capture_output=True, text=True, timeout=60)
        assert verify.returncode == 1 and "DAMAGED" in verify.stdout and segments[0].name in verify.stdout, verify.stdout
        print(f"damage at offset {damaged_offset}: found, partition offline, {sum(size_before.values())} bytes kept")
    finally:
        b.stop()


def test_a_damaged_replica_hands_over_and_heals_from_an_in_sync_replica(tmp_path):
    """Item 3 in a cluster: a byte flipped inside a closed segment of the leader, while it
    runs. The scrubber finds it; the leader hands the partition to another in-sync replica,
    discards the damaged range once out of the ISR, fetches it again and rejoins: every
    replica ends with the same bytes, and the checker finds every acknowledged record."""
    env = {"GREGOR_LOG_SCRUB_INTERVAL_MS": "200", "GREGOR_LOG_SEGMENT_BYTES": "4096"}
    cluster = Cluster(tmp_path, env=env).start()
    try:
        topic = "healed"
        cluster.create_topic(topic, 1, 3, {"min.insync.replicas": "2"})
        cluster.wait_leaders(topic, 1, isr=3)
        victim = cluster.leader(topic, 0)
        conn = Conn(cluster.nodes[victim].bootstrap)
        acked = {}
        for i in range(150):
            value = f"healed-{i:04d}-" + "y" * 60
            err, base, _ = produce_v3(conn, topic, 0, one(value), acks=-1)
            assert err == 0, err
            acked[value] = base
        conn.close()
        part = cluster.nodes[victim].data_dir / f"{topic}-0"
        segments = sorted(part.glob("*.log"))
        assert len(segments) >= 3
        flip_byte_in_record(segments[1], 1)
        deadline = time.monotonic() + 60
        moved = False
        while time.monotonic() < deadline:
            md = metadata_via(cluster, [n for n in cluster.nodes if n != victim][0], topic)
            if md and md["partitions"] and md["partitions"][0]["leader"] not in (victim, -1):
                moved = True
            if moved and md and victim in md["partitions"][0]["isrs"]:
                break
            time.sleep(0.3)
        assert moved, f"the damaged leader kept its leadership\n{cluster.log_digest()}"
        cluster.wait_leaders(topic, 1, isr=3, timeout=60)
        text = cluster.nodes[victim].log_path.read_text(errors="replace")
        assert "a damaged batch" in text and "refetching from the leader" in text
        log = log_of(cluster, topic, 0)
        lost, moved_records, duplicated = judge(acked, log)
        assert not lost and not moved_records and not duplicated, (lost, moved_records, duplicated)
        # Every replica holds the same bytes once healed.
        def content(node_id):
            d = cluster.nodes[node_id].data_dir / f"{topic}-0"
            return b"".join(s.read_bytes() for s in sorted(d.glob("*.log")))
        deadline = time.monotonic() + 20
        while len({content(n) for n in cluster.nodes}) != 1 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert len({content(n) for n in cluster.nodes}) == 1, "replicas differ after healing"
    finally:
        cluster.stop()


def fsync_count(b):
    import urllib.request
    text = urllib.request.urlopen(b.metrics_url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("gregor_log_flush_duration_seconds_count"):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("config,per_ack", [
    ("", True),
    ('"log.flush.unreplicated.enable" = false\n', False),
    ('"log.flush.interval.ms" = 60000\n', False),
])
def test_an_unreplicated_partition_fsyncs_before_it_acknowledges_by_default(tmp_path, config, per_ack):
    """Item 10: on a single broker every acknowledged Produce was fsynced first (measured
    as fsyncs counted by the broker), unless log.flush.unreplicated.enable is false or a
    flush setting is given, which then wins."""
    from conftest import Broker
    b = Broker(tmp_path / "data", config).start()
    try:
        conn = Conn(b.bootstrap)
        err, _, _ = produce_v3(conn, "durable", 0, one("first"), acks=1)
        if err == 3:
            time.sleep(0.3)
        before = fsync_count(b)
        for i in range(30):
            err, _, _ = produce_v3(conn, "durable", 0, one(f"r{i}"), acks=1)
            assert err == 0, err
        conn.close()
        synced = fsync_count(b) - before
        if per_ack:
            assert synced >= 30, f"{synced} fsyncs for 30 acknowledged requests sent one after another"
        else:
            assert synced < 5, f"{synced} fsyncs with per-acknowledgement fsync off"
    finally:
        b.stop()


def cluster_with_topic(tmp_path, topic, session_ms):
    """Three brokers with a `session_ms` session and 1 s heartbeats, and `topic` (six
    partitions, three replicas) with every leader and ISR in place."""
    env = {"GREGOR_BROKER_SESSION_TIMEOUT_MS": str(session_ms), "GREGOR_BROKER_HEARTBEAT_INTERVAL_MS": "1000"}
    cluster = Cluster(tmp_path, env=env).start()
    try:
        cluster.create_topic(topic, 6, 3)
        cluster.wait_leaders(topic, 6, isr=3)
    except BaseException:
        cluster.stop()
        raise
    return cluster

def leaders_moved(cluster, via, topic, led, away_from, within, every=True):
    """Seconds until every partition in `led` (with `every=False`: any of them) has a
    leader other than `away_from` and -1, as broker `via` answers Metadata; None if that
    does not happen within `within` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        md = metadata_via(cluster, via, topic)
        if md and md["partitions"]:
            moved = [p["leader"] not in (away_from, -1) for p in md["partitions"] if p["partition"] in led]
            if moved and (all(moved) if every else any(moved)):
                return time.monotonic() - start
        time.sleep(0.1)
    return None

@runs
def test_a_paused_controller_loses_its_leaderships_within_the_election_and_session_time(tmp_path, run):
    """Item 4: with a 3 s session timeout, the partitions led by the broker that is the
    active controller get new leaders within 8 s of SIGSTOP (Raft election, then the
    session timeout from the election), as for any other broker."""
    topic = "ctl"
    cluster = cluster_with_topic(tmp_path, topic, session_ms=3000)
    try:
        controller = cluster.controller()
        other = [n for n in cluster.nodes if n != controller][0]
        md = metadata_via(cluster, other, topic)
        led = [p["partition"] for p in md["partitions"] if p["leader"] == controller]
        assert led, f"the controller leads no partition: {md}"
        cluster.nodes[controller].pause()
        took = leaders_moved(cluster, other, topic, led, controller, within=30)
        cluster.nodes[controller].resume()
        assert took is not None and took < 8, f"new leaders after {took} s\n{cluster.log_digest()}"
        print(f"run {run}: the paused controller's {len(led)} partitions had new leaders after {took:.1f} s")
    finally:
        cluster.stop()


@runs
def test_a_killed_broker_loses_its_leaderships_before_its_session_runs_out(tmp_path, run):
    """A broker whose process is gone (kill -9) is fenced once the active controller finds
    its metadata-log port refusing connections, 1.5 heartbeats after its last heartbeat,
    not at the end of its 20 s session. A paused broker (SIGSTOP: its kernel still accepts
    connections) keeps its whole session and its leaderships, as its lease counts on."""
    topic = "gone"
    cluster = cluster_with_topic(tmp_path, topic, session_ms=20000)
    try:
        # The kill first, while the controller is the one the cluster started with: a
        # broker back from a pause may start an election, and a killed controller is
        # fenced only after the next election (another case, timed by the paused
        # controller scenario).
        controller = cluster.controller()

        def led_by(node, via):
            md = metadata_via(cluster, via, topic)
            return [p["partition"] for p in md["partitions"] if p["leader"] == node]

        # At the start every partition is led by its preferred (first) replica.
        preferred = {n: led_by(n, controller) for n in cluster.nodes}
        killed = [n for n in cluster.nodes if n != controller][0]
        led = led_by(killed, controller)
        assert led, f"broker {killed} leads no partition"
        cluster.nodes[killed].kill9()
        took = leaders_moved(cluster, controller, topic, led, killed, within=30)
        assert took is not None and took < 5, f"new leaders after {took} s\n{cluster.log_digest()}"
        cluster.nodes[killed].start()
        cluster.wait_leaders(topic, 6, isr=3, timeout=60)

        # The killed broker's partitions go back to it (their preferred replica) in their
        # own time: judge the paused broker by the partitions it is the preferred leader of.
        controller = cluster.controller()

        def own(n):
            return [p for p in led_by(n, controller) if p in preferred[n]]
        paused = max((n for n in cluster.nodes if n != controller), key=lambda n: len(own(n)))
        kept = own(paused)
        assert kept, f"broker {paused} leads none of the partitions it is the preferred leader of"
        cluster.nodes[paused].pause()
        moved = leaders_moved(cluster, controller, topic, kept, paused, within=8, every=False)
        cluster.nodes[paused].resume()
        assert moved is None, f"the paused broker lost a leadership after {moved:.1f} s of its 20 s session"
        print(f"run {run}: the killed broker's {len(led)} partitions had new leaders after {took:.1f} s "
              f"(session 20 s); the paused broker kept its {len(kept)} leaderships for 8 s")
    finally:
        cluster.stop()


@runs
def test_rolling_kill9_of_leaders_and_of_every_broker_loses_nothing(tmp_path, run):
    """Rolling kill -9 of the leader of each partition in turn, then kill -9 of every
    broker at once, under an idempotent acks=all producer and a consumer group; the
    checker of tests/cluster.py reads every partition back: nothing acknowledged lost,
    duplicated or reordered, nothing a consumer saw vanished."""
    from cluster import Workload, check
    cluster = Cluster(tmp_path).start()
    try:
        topic, partitions = "rolling", 3
        cluster.create_topic(topic, partitions, 3, {"min.insync.replicas": "2"})
        w = Workload(cluster, topic, partitions, "rolling-group").start()
        try:
            w.wait_acks(200)
            for p in range(partitions):
                victim = cluster.leader(topic, p)
                cluster.nodes[victim].kill9()
                w.wait_acks(150)
                cluster.nodes[victim].start()
                cluster.wait_leaders(topic, partitions, isr=3, timeout=60)
            for n in cluster.nodes.values():
                n.kill9()
            for n in cluster.nodes.values():
                n.launch()
            for n in cluster.nodes.values():
                n.start()
            cluster.wait_leaders(topic, partitions, timeout=60)
            w.wait_acks(200, timeout=120)
        finally:
            w.stop()
        summary = check(cluster, w)
        assert summary["acked"] >= 800, summary
        print(f"run {run}: {summary['acked']} acknowledged, {summary['stored']} stored, "
              f"{len(w.failed)} failed deliveries, {summary['seen']} consumed; none lost")
    finally:
        cluster.stop()


def pad_offsets_partition(node, group, topic, megabytes):
    """Commits `megabytes` of offsets with 4,000-byte metadata, for other groups that hash
    to `group`'s offsets partition, straight to its coordinator (raw OffsetCommit v2): a
    coordinator that takes over must read all of it before it knows the group."""
    import kafka_raw as raw
    from cluster import coordinator_partition
    target = coordinator_partition(group)
    pads = (f"pad-{i}" for i in range(10**6))
    meta = "m" * 4000
    conn = raw.Conn(node.bootstrap)
    try:
        written = 0
        for n, g in enumerate(x for x in pads if coordinator_partition(x) == target):
            if written >= megabytes << 20:
                break
            parts = [struct.pack(">iq", p, n) + raw.string(meta) for p in range(6)]
            body = (raw.string(g) + struct.pack(">i", -1) + raw.string("") + struct.pack(">q", -1)
                    + raw.array([raw.string(topic) + raw.array(parts)]))
            r = conn.request(8, 2, body, correlation_id=n + 1)
            assert r.take(">i") == 1 and r.string() == topic
            for _ in range(r.take(">i")):
                _, err = r.take(">ih")
                assert err == 0, f"padding commit refused with {err}"
            written += 6 * 4000
    finally:
        conn.close()


def group_loaded_after(cluster, partition, since):
    """Seconds from `since` (a time.time()) to the first log line, at any broker, saying it
    loaded the groups of `__consumer_offsets` partition `partition` after `since`; None if
    none did."""
    from datetime import datetime
    found = []
    for _, line in cluster.log_lines():
        if "loaded the groups of an offsets partition" in line and f"partition={partition} " in line + " ":
            at = datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
            if at > since:
                found.append(at - since)
    return min(found) if found else None


@runs
def test_group_members_survive_their_coordinators_failover(tmp_path, run):
    """Item 7: three confluent-kafka members with manual commits; kill -9 the broker that
    coordinates the group. The new coordinator carries the members on: no rebalance is
    caused by the failover, commits succeed after the clients' retries, and no record is
    processed twice."""
    import threading
    from cluster import coordinator_partition
    from members import Member, wait_for
    from confluent_kafka import Producer
    # Kafka's and Gregor's default timeouts, as the outside campaign ran them.
    cluster = Cluster(tmp_path, env={"GREGOR_BROKER_SESSION_TIMEOUT_MS": "9000",
                                     "GREGOR_BROKER_HEARTBEAT_INTERVAL_MS": "2000"}).start()
    members = []
    stop = threading.Event()
    try:
        topic, group = "work", "failover-group"
        cluster.create_topic(topic, 6, 3, {"min.insync.replicas": "2"})
        members = [Member(MEMBER_CLIENT, cluster.bootstrap, topic, group, session_ms=MEMBER_SESSION_MS)
                   for _ in range(3)]
        wait_for(lambda: sum(len(m.assignment()) for m in members) == 6
                 and all(m.assignment() for m in members), 60, "three members sharing six partitions")

        def produce():
            p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5,
                          "enable.idempotence": True})
            i = 0
            while not stop.is_set() and i < 100_000:
                p.produce(topic, f"w{i}".encode(), partition=i % 6)
                p.poll(0)
                i += 1
                time.sleep(0.005)
            p.flush(60)
        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        wait_for(lambda: sum(len(m.records()) for m in members) >= 300, 60, "records consumed")
        cluster.wait_leaders("__consumer_offsets", 6, isr=3)
        coordinator = cluster.leader("__consumer_offsets", coordinator_partition(group))
        # A large offsets partition makes the new coordinator's load take a while, as in
        # the campaign's long runs: members must be told to wait, not that they are gone.
        if PAD_MB:
            pad_offsets_partition(cluster.nodes[coordinator], group, topic, PAD_MB)
        generations = [len(m.assignments_history()) for m in members]
        killed_at = time.time()
        cluster.nodes[coordinator].kill9()
        wait_for(lambda: sum(1 for m in members for r in m.records() if r[3] > killed_at + 12) >= 300,
                 90, "records consumed after the coordinator's failover")
        # The killed broker returns, and with it (as the preferred replica) the group.
        cluster.nodes[coordinator].start()
        wait_for(lambda: cluster.leader("__consumer_offsets", coordinator_partition(group)) == coordinator,
                 90, "the coordinator's return")
        back_at = time.time()
        wait_for(lambda: sum(1 for m in members for r in m.records() if r[3] > back_at + 3) >= 300,
                 90, "records consumed after the coordinator came back")
        time.sleep(3)
        stop.set()
        producer.join(90)
        after = [len(m.assignments_history()) for m in members]
        seen = {}
        twice = []
        for m in members:
            for p, o, v, t in m.records():
                if (p, o) in seen:
                    twice.append((p, o, v))
                seen[(p, o)] = v
        assert all(m.alive() for m in members), "a member process ended"
        failures = [e for m in members for e in m.commit_failures()]
        assert after == generations, f"the failover caused a rebalance: assignments {generations} -> {after}"
        assert not twice, f"{len(twice)} records processed twice, e.g. {twice[:5]}"
        failover = group_loaded_after(cluster, coordinator_partition(group), killed_at)
        print(f"run {run}: {len(seen)} records consumed once each; coordinator {coordinator} killed, "
              f"the group loaded elsewhere {'never' if failover is None else f'{failover:.1f} s'} later, "
              f"no rebalance; "
              f"{len(failures)} commits failed and were covered by the next ({failures[:2]})")
    finally:
        stop.set()
        for m in members:
            if m.alive():
                m.kill()
        cluster.stop()
