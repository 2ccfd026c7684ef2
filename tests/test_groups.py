"""Consumer groups with kafka-python, confluent-kafka (range and cooperative-sticky) and
aiokafka: balance, exactly-once delivery while stable, hand-over on close and on a killed
member, joins, durable commits, offset reset, independent groups, static members, and
Kafka's error codes for bad commits."""

import os
import struct
import subprocess
import sys
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_raw as raw
from conftest import Broker
from members import Member, produce, wait_for

PARTITIONS = 6
GROUP_CLIENTS = [("kafka-python", None), ("confluent", "range"), ("confluent", "cooperative-sticky"), ("aiokafka", None)]


def create_topic(b, name, partitions=PARTITIONS):
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    a.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def balanced(members, per_member):
    sets = [m.assignment() for m in members]
    union = set().union(*sets)
    return all(len(s) == per_member for s in sets) and len(union) == per_member * len(members)


def consumed(members):
    return Counter(v for m in members for (_, _, v, _) in m.records())


@pytest.mark.parametrize("client,assignor", GROUP_CLIENTS, ids=[f"{c}-{a}" if a else c for c, a in GROUP_CLIENTS])
def test_group_balances_hands_over_and_loses_nothing(make_broker, client, assignor):
    b = make_broker()
    topic, group = "orders", f"g-{client}-{assignor}"
    create_topic(b, topic)
    m = [Member(client, b.bootstrap, topic, group, assignor) for _ in range(3)]
    try:
        wait_for(lambda: balanced(m, 2), 60, "three members with two partitions each")
        sent = produce(b.bootstrap, topic, PARTITIONS, 0, 600)
        wait_for(lambda: set(consumed(m)) >= sent, 60, "the first 600 records")
        counts = consumed(m)
        assert all(counts[v] == 1 for v in sent), "a record was consumed twice while the group was stable"
        for member in m:
            for p, _, v, _ in member.records():
                assert p in member.assignment(), "a member read a partition it does not own"

        # A member that closes hands its partitions over; nothing is lost or repeated.
        departed = m[0].assignment()
        t_leave = time.time()
        m[0].close()
        survivors = m[1:]
        wait_for(lambda: balanced(survivors, 3), 60, "two survivors with three partitions each")
        took = min(t for s in survivors for t, parts in s.assignments_history() if t > t_leave and parts & departed) - t_leave
        print(f"\n{client}/{assignor}: hand-over after close took {took:.2f} s")
        sent |= produce(b.bootstrap, topic, PARTITIONS, 600, 300)
        wait_for(lambda: set(consumed(m)) >= sent, 60, "records after the close")
        counts = consumed(m)
        assert all(counts[v] == 1 for v in sent), "a record was repeated after a clean hand-over"

        # A killed member's partitions move once its session times out; survivors resume
        # from the committed offsets (at most the uncommitted tail is read again).
        killed_parts = m[1].assignment()
        m[1].kill()
        sent |= produce(b.bootstrap, topic, PARTITIONS, 900, 300)
        wait_for(lambda: m[2].assignment() == set(range(PARTITIONS)), 60, "the last member to own every partition")
        wait_for(lambda: set(consumed(m)) >= sent, 60, "records after the kill")
        counts = consumed(m)
        repeats = [v for v in sent if counts[v] > 1]
        assert all(int(v[1:]) % PARTITIONS in killed_parts for v in repeats), "a record outside the killed member's partitions was repeated"

        # A new member takes its share.
        m.append(Member(client, b.bootstrap, topic, group, assignor))
        wait_for(lambda: balanced([m[2], m[3]], 3), 60, "the new member to take three partitions")
        before = consumed(m)
        sent_now = produce(b.bootstrap, topic, PARTITIONS, 1200, 300)
        wait_for(lambda: set(consumed(m)) >= sent_now, 60, "records after the join")
        after = consumed(m)
        assert all(after[v] - before[v] == 1 for v in sent_now)
    finally:
        for member in m:
            if member.alive():
                member.kill()


def committed(bootstrap, group, topic, partitions=PARTITIONS):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)}
    finally:
        c.close()


def test_committed_offsets_survive_restart_and_kill9(make_broker):
    b = make_broker()
    create_topic(b, "durable")
    produce(b.bootstrap, "durable", PARTITIONS, 0, 60)
    member = Member("confluent", b.bootstrap, "durable", "keeper")
    wait_for(lambda: len(member.records()) >= 60, 60, "60 records")
    member.close()
    want = {p: 10 for p in range(PARTITIONS)}
    assert committed(b.bootstrap, "keeper", "durable") == want
    b.restart()
    assert committed(b.bootstrap, "keeper", "durable") == want
    b.kill9()
    b.start()
    assert committed(b.bootstrap, "keeper", "durable") == want
    # A new member of the group resumes after the committed offsets.
    produce(b.bootstrap, "durable", PARTITIONS, 60, 12)
    again = Member("kafka-python", b.bootstrap, "durable", "keeper")
    try:
        wait_for(lambda: len(again.records()) >= 12, 60, "the 12 new records")
        time.sleep(1)
        assert sorted(v for _, _, v, _ in again.records()) == sorted(f"v{i}" for i in range(60, 72))
    finally:
        again.close()


def test_auto_offset_reset_and_independent_groups(make_broker):
    b = make_broker()
    create_topic(b, "reset", 2)
    produce(b.bootstrap, "reset", 2, 0, 20)
    early = Member("confluent", b.bootstrap, "reset", "early", reset="earliest")
    late = Member("aiokafka", b.bootstrap, "reset", "late", reset="latest")
    other = Member("kafka-python", b.bootstrap, "reset", "other", reset="earliest")
    try:
        wait_for(lambda: len(early.records()) >= 20 and len(other.records()) >= 20, 60, "earliest groups to read the backlog")
        wait_for(lambda: late.assignment() == {0, 1}, 60, "the latest group to be assigned")
        time.sleep(2)
        assert late.records() == [], "auto.offset.reset=latest read old records"
        produce(b.bootstrap, "reset", 2, 20, 6)
        wait_for(lambda: len(late.records()) >= 6 and len(early.records()) >= 26 and len(other.records()) >= 26, 60, "new records in every group")
        assert sorted(v for _, _, v, _ in late.records()) == [f"v{i}" for i in range(20, 26)]
        # Each group read everything once, independently.
        for m in (early, other):
            assert Counter(v for _, _, v, _ in m.records()) == Counter(f"v{i}" for i in range(26))
    finally:
        for m in (early, late, other):
            m.close()


def test_static_member_rejoins_without_rebalance(make_broker):
    b = make_broker()
    create_topic(b, "static", 4)
    a1 = Member("confluent", b.bootstrap, "static", "statics", instance_id="i-1", session_ms=30000)
    a2 = Member("confluent", b.bootstrap, "static", "statics", instance_id="i-2", session_ms=30000)
    try:
        wait_for(lambda: balanced([a1, a2], 2), 60, "two static members with two partitions each")
        time.sleep(1)
        before = a1.assignment()
        history = len(a2.assignments_history())
        rebalances = b.log_text().count("preparing rebalance")
        a1.kill()
        a1 = Member("confluent", b.bootstrap, "static", "statics", instance_id="i-1", session_ms=30000)
        wait_for(lambda: a1.assignment() == before, 30, "the restarted static member to get its partitions back")
        time.sleep(2)
        assert len(a2.assignments_history()) == history, "the other member saw a rebalance"
        assert b.log_text().count("preparing rebalance") == rebalances, "the broker rebalanced the group"
        produce(b.bootstrap, "static", 4, 0, 8)
        wait_for(lambda: len(a1.records()) + len(a2.records()) >= 8, 30, "both members to consume")
    finally:
        for m in (a1, a2):
            if m.alive():
                m.kill()


def test_list_describe_and_delete_groups(make_broker):
    b = make_broker()
    create_topic(b, "admin", 2)
    m = Member("confluent", b.bootstrap, "admin", "listed")
    a = AdminClient({"bootstrap.servers": b.bootstrap})
    try:
        wait_for(lambda: m.assignment() == {0, 1}, 60, "the member to be assigned")
        produce(b.bootstrap, "admin", 2, 0, 4)
        wait_for(lambda: len(m.records()) >= 4, 30, "records to be consumed and committed")
        groups = a.list_consumer_groups().result(30).valid
        assert [(g.group_id, str(g.state)) for g in groups] == [("listed", "ConsumerGroupState.STABLE")]
        d = a.describe_consumer_groups(["listed"])["listed"].result(30)
        assert len(d.members) == 1 and {tp.partition for tp in d.members[0].assignment.topic_partitions} == {0, 1}
        with pytest.raises(Exception) as e:
            a.delete_consumer_groups(["listed"])["listed"].result(30)
        assert "NON_EMPTY_GROUP" in str(e.value)
        with pytest.raises(Exception) as e:
            a.delete_consumer_groups(["nobody"])["nobody"].result(30)
        assert "GROUP_ID_NOT_FOUND" in str(e.value)
    finally:
        m.close()
    a.delete_consumer_groups(["listed"])["listed"].result(30)
    assert a.list_consumer_groups().result(30).valid == []
    assert committed(b.bootstrap, "listed", "admin", 2) == {0: -1001, 1: -1001}, "offsets outlived their group"


# --- raw protocol: bad commits get Kafka's error codes and commit nothing -------------------

ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, UNKNOWN_TOPIC_OR_PARTITION, REBALANCE_IN_PROGRESS = 22, 25, 3, 27


def join_v0(conn, group, member_id=""):
    body = raw.string(group) + struct.pack(">i", 10000) + raw.string(member_id) + raw.string("consumer")
    body += raw.array([raw.string("range") + raw.nbytes(b"\x00\x00\x00\x00\x00\x00\x00\x00")])
    r = conn.request(11, 0, body)
    err, gen = r.take(">hi")
    r.string()  # protocol
    leader, member = r.string(), r.string()
    return err, gen, member


def sync_v0(conn, group, gen, member):
    body = raw.string(group) + struct.pack(">i", gen) + raw.string(member) + raw.array([raw.string(member) + raw.nbytes(b"")])
    r = conn.request(14, 0, body)
    return r.take(">h")


def commit_v2(conn, group, gen, member, topic, partition, offset):
    body = raw.string(group) + struct.pack(">i", gen) + raw.string(member) + struct.pack(">q", -1)
    body += raw.array([raw.string(topic) + raw.array([struct.pack(">iq", partition, offset) + raw.string("")])])
    r = conn.request(8, 2, body)
    assert r.take(">i") == 1
    r.string()
    assert r.take(">i") == 1
    return r.take(">ih")[1]


def fetch_offset_v1(conn, group, topic, partition):
    body = raw.string(group) + raw.array([raw.string(topic) + raw.array([struct.pack(">i", partition)])])
    r = conn.request(9, 1, body)
    r.take(">i")
    r.string()
    r.take(">i")
    p, offset = r.take(">iq")
    r.string()
    return offset, r.take(">h")


def test_bad_commits_get_kafka_errors_and_commit_nothing(broker):
    create_topic(broker, "raw", 1)
    c = raw.Conn(broker.bootstrap, timeout=30)
    err, gen, member = join_v0(c, "rawgroup")
    assert err == 0 and gen == 1 and member
    assert sync_v0(c, "rawgroup", gen, member) == 0
    assert commit_v2(c, "rawgroup", gen + 5, member, "raw", 0, 7) == ILLEGAL_GENERATION
    assert commit_v2(c, "rawgroup", gen, "someone-else", "raw", 0, 7) == UNKNOWN_MEMBER_ID
    assert commit_v2(c, "rawgroup", gen, member, "no-such-topic", 0, 7) == UNKNOWN_TOPIC_OR_PARTITION
    assert commit_v2(c, "rawgroup", gen, member, "raw", 9, 7) == UNKNOWN_TOPIC_OR_PARTITION
    assert fetch_offset_v1(c, "rawgroup", "raw", 0) == (-1, 0), "a refused commit was stored"
    assert commit_v2(c, "rawgroup", gen, member, "raw", 0, 7) == 0
    assert fetch_offset_v1(c, "rawgroup", "raw", 0) == (7, 0)
    # A heartbeat from an unknown member, and a stale generation.
    r = c.request(12, 0, raw.string("rawgroup") + struct.pack(">i", gen) + raw.string("ghost"))
    assert r.take(">h") == UNKNOWN_MEMBER_ID
    r = c.request(12, 0, raw.string("rawgroup") + struct.pack(">i", gen - 1) + raw.string(member))
    assert r.take(">h") == ILLEGAL_GENERATION


# --- the seed's example, verbatim, against `gregor broker` with its defaults ---------------

SEED_CONSUMER = """from kafka import KafkaProducer, KafkaConsumer

# 消费者
consumer = KafkaConsumer('test-topic', group_id='test-group', bootstrap_servers='localhost:9092')
for message in consumer:
    print(message.value)
"""

SEED_PRODUCER = """from kafka import KafkaProducer, KafkaConsumer

# 生产者
producer = KafkaProducer(bootstrap_servers='localhost:9092')
producer.send('test-topic', b'Hello, Kafka!')
"""


def test_seed_example_verbatim(tmp_path):
    from conftest import BIN
    proc = subprocess.Popen([str(BIN)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "broker.log", "wb"))
    try:
        wait_for(lambda: b"broker ready" in (tmp_path / "broker.log").read_bytes() or proc.poll() is not None, 30, "the broker on localhost:9092")
        assert proc.poll() is None, f"gregor could not start on localhost:9092 (is the port taken?):\n{(tmp_path / 'broker.log').read_text()}"
        consumer = subprocess.Popen([sys.executable, "-u", "-c", SEED_CONSUMER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            time.sleep(6)  # the consumer joins its group (and waits the initial rebalance delay)
            subprocess.run([sys.executable, "-c", SEED_PRODUCER], check=True, timeout=60)
            line = [None]

            def read():
                line[0] = consumer.stdout.readline()
            import threading
            t = threading.Thread(target=read, daemon=True)
            t.start()
            t.join(30)
            assert line[0] == "b'Hello, Kafka!'\n"
        finally:
            consumer.kill()
            consumer.wait()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def gregor(*args):
    from conftest import BIN
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60)


def test_gregor_group_list_and_describe_show_lag(make_broker):
    import json
    b = make_broker()
    create_topic(b, "lagged", 3)
    m = Member("confluent", b.bootstrap, "lagged", "watchers")
    try:
        wait_for(lambda: m.assignment() == {0, 1, 2}, 60, "the member to be assigned")
        produce(b.bootstrap, "lagged", 3, 0, 30)
        wait_for(lambda: len(m.records()) >= 30, 60, "30 records")
        time.sleep(0.5)
        live = json.loads(gregor("group", "describe", "watchers", "--bootstrap", b.bootstrap, "--json").stdout)
        assert live["state"] == "Stable" and live["members"] == 1
        assert {p["partition"] for p in live["partitions"] if p["member_id"]} == {0, 1, 2}
        assert all(p["client_id"] == "rdkafka" for p in live["partitions"])
    finally:
        m.close()
    produce(b.bootstrap, "lagged", 3, 30, 7)
    d = json.loads(gregor("group", "describe", "watchers", "--bootstrap", b.bootstrap, "--json").stdout)
    assert d["state"] == "Empty"
    assert sum(p["committed_offset"] for p in d["partitions"]) == 30
    assert sum(p["log_end_offset"] for p in d["partitions"]) == 37
    assert sum(p["lag"] for p in d["partitions"]) == 7
    table = gregor("group", "describe", "watchers", "--bootstrap", b.bootstrap).stdout
    assert "COMMITTED" in table and "LAG" in table and "lagged" in table
    listed = json.loads(gregor("group", "list", "--bootstrap", b.bootstrap, "--json").stdout)
    assert listed == [{"group": "watchers", "state": "Empty", "members": 0, "lag": 7}]
    assert "watchers" in gregor("group", "list", "--bootstrap", b.bootstrap).stdout
    bad = gregor("group", "list", "--bootstrap", "127.0.0.1:1")
    assert bad.returncode == 3 and "--bootstrap" in bad.stderr
