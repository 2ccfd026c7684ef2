"""Three brokers on loopback forming a cluster (`--controllers`), driven by
confluent-kafka and kafka-python: replicas spread across brokers, leaders failing over on
kill -9 and SIGSTOP, rolling restarts, a killed controller, and the checker of
tests/cluster.py proving nothing acknowledged was lost, duplicated or reordered.

The long version of the fault run is `python3 bench/failover.py` (see docs/operations.md).
"""

import json
import subprocess
import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from cluster import (BIN, Cluster, NetnsCluster, Workload, check, coordinator_partition,
                     failover_time)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path).start()
    yield c
    c.stop()


def test_a_cluster_lists_every_broker_and_spreads_replicas(cluster):
    md = cluster.wait_brokers(3)
    assert sorted(md.brokers) == [1, 2, 3]
    assert md.controller_id in (1, 2, 3)
    cluster.create_topic("spread", 6, 3)
    parts = cluster.wait_leaders("spread", 6)
    for p in parts.values():
        assert sorted(p.replicas) == [1, 2, 3] and sorted(p.isrs) == [1, 2, 3]
    leaders = [p.leader for p in parts.values()]
    assert sorted(set(leaders)) == [1, 2, 3], f"leaders not spread: {leaders}"
    with pytest.raises(KafkaException) as e:
        cluster.admin().create_topics([NewTopic("too-many", 1, 4)])["too-many"].result(30)
    assert e.value.args[0].name() == "INVALID_REPLICATION_FACTOR"
    # kafka-python sees the same cluster through any broker.
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=cluster.nodes[2].bootstrap)
    described = admin.describe_cluster()
    admin.close()
    ids = sorted(b.get("node_id", b.get("broker_id")) for b in described["brokers"])
    assert ids == [1, 2, 3], described
    # Followers replicate through incremental fetch sessions: each broker leads partitions
    # that the two others follow, so each holds their two sessions, never refused.
    from test_metrics import value, wait_until
    import urllib.request

    def scrape(n):
        text = urllib.request.urlopen(cluster.nodes[n].metrics_url, timeout=10).read().decode()
        from test_metrics import LINE, LABEL
        out = {}
        for line in text.splitlines():
            m = LINE.match(line)
            if m and not line.startswith("#"):
                out[(m.group(1), frozenset(LABEL.findall(m.group(2) or "")))] = float(m.group(3))
        return out

    for n in (1, 2, 3):
        wait_until(lambda: value(scrape(n), "gregor_fetch_sessions") >= 2, f"broker {n}'s followers' sessions")
        for error in ("FetchSessionIdNotFound", "InvalidFetchSessionEpoch"):
            assert value(scrape(n), "gregor_request_errors_total", api="Fetch", error=error) == 0, (n, error)
    # Client quotas are cluster metadata: set through one broker, every broker has them.
    subprocess.run([str(BIN), "quota", "set", "--bootstrap", cluster.nodes[1].bootstrap, "--client-id", "c",
                    "producer_byte_rate=1000"], check=True, capture_output=True, timeout=60)
    for n in (1, 2, 3):
        deadline = time.monotonic() + 15
        while True:
            out = subprocess.run([str(BIN), "quota", "list", "--bootstrap", cluster.nodes[n].bootstrap, "--json"],
                                 check=True, capture_output=True, text=True, timeout=60).stdout
            if json.loads(out) == [{"user": None, "client_id": "c", "quotas": [["producer_byte_rate", 1000.0]]}]:
                break
            assert time.monotonic() < deadline, f"broker {n} does not have the quota: {out}"
            time.sleep(0.2)


def test_acknowledged_records_survive_kill_pause_and_rolling_restarts(cluster):
    topic, partitions = "faults", 3
    cluster.create_topic(topic, partitions, 3, {"min.insync.replicas": "2"})
    w = Workload(cluster, topic, partitions, "fault-group").start()
    try:
        w.wait_acks(300)

        # kill -9 the leader of partition 0: its partitions fail over to in-sync replicas.
        victim = cluster.leader(topic, 0)
        led = [p for p, m in cluster.wait_leaders(topic, partitions).items() if m.leader == victim]
        took = failover_time(cluster, w, victim, led)
        assert took < 15, f"failover took {took:.1f} s"
        w.wait_acks(200)
        cluster.nodes[victim].start()
        cluster.wait_leaders(topic, partitions, isr=3, timeout=60)

        # SIGSTOP a leader past its session timeout, then let it go on.
        paused = cluster.leader(topic, 1)
        cluster.nodes[paused].pause()
        time.sleep(3.5)
        w.wait_acks(200)
        cluster.nodes[paused].resume()
        cluster.wait_leaders(topic, partitions, isr=3, timeout=60)

        # Rolling restart: each broker stops cleanly (its leaderships move first) and returns.
        for node in cluster.nodes.values():
            node.stop()
            w.wait_acks(100)
            node.start()
            cluster.wait_leaders(topic, partitions, isr=3, timeout=60)
        w.wait_acks(200)
    finally:
        w.stop()
    summary = check(cluster, w)
    assert not w.failed, f"producer failures: {w.failed[:3]}"
    assert summary["acked"] >= 1000 and summary["seen"] > 0, summary
    print(f"failover {took:.2f} s; {summary['acked']} acknowledged, {summary['seen']} consumed")


def test_a_killed_controller_is_replaced_and_metadata_keeps_changing(cluster):
    before = cluster.controller()
    cluster.nodes[before].kill9()
    deadline = time.monotonic() + 30
    after = before
    while time.monotonic() < deadline:
        try:
            after = cluster.controller()
            if after != before and after in cluster.nodes:
                break
        except Exception:
            pass
        time.sleep(0.2)
    assert after != before, "no new controller within 30 s"
    # Once its session times out the dead broker is fenced: it gets no new replicas.
    cluster.wait_brokers(2)
    cluster.create_topic("after-controller", 2, 2)
    parts = cluster.wait_leaders("after-controller", 2)
    assert all(before not in p.replicas for p in parts.values())
    cluster.nodes[before].start()
    md = cluster.wait_brokers(3)
    assert "after-controller" in md.topics


def test_a_leader_cut_off_from_its_peers_loses_nothing_acknowledged(tmp_path):
    """In network namespaces: the leader of partition 0 loses its peers but not its
    clients. It can no longer reach the controller or its followers, so it acknowledges
    nothing more with acks=all; the others fence it and elect new leaders; healed, it
    truncates what only it had and follows."""
    cluster = NetnsCluster(tmp_path)
    try:
        cluster.start()
        topic, partitions = "cut", 3
        cluster.create_topic(topic, partitions, 3, {"min.insync.replicas": "2"})
        w = Workload(cluster, topic, partitions, "cut-group").start()
        try:
            w.wait_acks(300)
            victim = cluster.leader(topic, 0)
            cluster.cut(victim)
            # The majority elects a controller if it lost it, fences the victim after its
            # session timeout, and moves its leaderships.
            others = [n for n in cluster.nodes if n != victim]
            deadline = time.monotonic() + 20
            moved = False
            while not moved and time.monotonic() < deadline:
                time.sleep(0.5)
                out = subprocess.run(["kcat", "-L", "-J", "-b", cluster.nodes[others[0]].bootstrap,
                                      "-t", topic], capture_output=True, text=True, timeout=10)
                try:
                    parts = json.loads(out.stdout)["topics"][0]["partitions"]
                    moved = next(p for p in parts if p["partition"] == 0)["leader"] in others
                except (ValueError, KeyError, IndexError, StopIteration):
                    pass
            assert moved, "the majority did not move the cut-off leader's partition"
            w.wait_acks(300)
            cluster.heal(victim)
            cluster.wait_leaders(topic, partitions, isr=3, timeout=60)
            w.wait_acks(200)
        finally:
            w.stop()
        summary = check(cluster, w)
        assert not w.failed, f"producer failures: {w.failed[:3]}"
        assert summary["acked"] >= 800, summary
    finally:
        cluster.stop()


def test_acks_all_needs_min_insync_replicas_and_preferred_leaders_come_back(cluster):
    from kafka import KafkaProducer
    from kafka.errors import NotEnoughReplicasError
    cluster.create_topic("strict", 1, 3, {"min.insync.replicas": "3"})
    parts = cluster.wait_leaders("strict", 1, isr=3)
    preferred = parts[0].replicas[0]
    follower = next(r for r in parts[0].replicas if r != preferred)
    producer = KafkaProducer(bootstrap_servers=cluster.nodes[preferred].bootstrap, acks="all",
                             retries=0, request_timeout_ms=10000)
    producer.send("strict", b"three in sync", partition=0).get(timeout=30)
    cluster.nodes[follower].kill9()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(cluster.wait_leaders("strict", 1)[0].isrs) == 3:
        time.sleep(0.2)
    with pytest.raises(NotEnoughReplicasError):
        producer.send("strict", b"two in sync", partition=0).get(timeout=30)
    producer.close()
    # The preferred leader loses leadership to a kill, and gets it back once in sync.
    cluster.nodes[follower].start()
    cluster.wait_leaders("strict", 1, isr=3, timeout=60)
    cluster.nodes[preferred].kill9()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and cluster.leader("strict", 0) == preferred:
        time.sleep(0.2)
    assert cluster.leader("strict", 0) != preferred
    cluster.nodes[preferred].start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and cluster.leader("strict", 0) != preferred:
        time.sleep(0.3)
    assert cluster.leader("strict", 0) == preferred, "the preferred leader did not come back"


def test_a_broker_that_is_no_controller_joins_and_takes_replicas(cluster):
    cluster.add_broker(4)
    md = cluster.wait_brokers(4)
    assert sorted(md.brokers) == [1, 2, 3, 4]
    cluster.create_topic("four", 4, 4)
    parts = cluster.wait_leaders("four", 4, isr=4)
    assert 4 in [p.leader for p in parts.values()]
    from confluent_kafka import Consumer, Producer
    p = Producer({"bootstrap.servers": cluster.nodes[4].bootstrap, "acks": "all"})
    for i in range(100):
        p.produce("four", value=f"v{i}".encode(), partition=i % 4)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": cluster.nodes[4].bootstrap, "group.id": "four",
                  "auto.offset.reset": "earliest"})
    c.subscribe(["four"])
    got = set()
    deadline = time.monotonic() + 30
    while len(got) < 100 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.add(m.value())
    c.close()
    assert len(got) == 100


def test_moving_a_partition_copies_it_throttled_and_drops_the_old_replica(tmp_path):
    rate = 1_000_000
    cluster = Cluster(tmp_path, env={"GREGOR_FOLLOWER_REPLICATION_THROTTLED_RATE": str(rate)})
    try:
        cluster.start()
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic as KNewTopic
        kadmin = KafkaAdminClient(bootstrap_servers=cluster.nodes[1].bootstrap)
        kadmin.create_topics([KNewTopic("moving", num_partitions=-1, replication_factor=-1,
                                        replica_assignments={0: [1, 2]})])
        kadmin.close()
        cluster.wait_leaders("moving", 1, isr=2)
        from confluent_kafka import Consumer, Producer
        # Small batches: a throttled fetch still returns at least one whole batch (KIP-74),
        # so the throttle is only as fine as the batches.
        p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5,
                      "batch.size": 65536})
        value = b"x" * 1000
        for i in range(4000):  # 4 MB: at least 3 s at 1 MB/s
            p.produce("moving", value=value + str(i).encode(), partition=0)
            p.poll(0)
        assert p.flush(60) == 0
        gregor = [str(BIN), "topic", "reassign", "moving", "--bootstrap", cluster.nodes[2].bootstrap]
        started = time.monotonic()
        subprocess.run(gregor + ["--partition", "0", "--replicas", "3,2"], check=True, timeout=30)
        listed = subprocess.run(gregor + ["--list", "--json"], check=True, timeout=30,
                                capture_output=True, text=True)
        moves = json.loads(listed.stdout)
        assert moves and moves[0]["adding"] == [3] and moves[0]["removing"] == [1], moves
        subprocess.run(gregor + ["--partition", "0", "--replicas", "3,2", "--wait"], check=True,
                       timeout=120)
        took = time.monotonic() - started
        assert took >= 2.5, f"4 MB copied in {took:.1f} s despite a 1 MB/s throttle"
        parts = cluster.wait_leaders("moving", 1, isr=2)
        assert parts[0].replicas == [3, 2] and parts[0].leader == 3
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (cluster.nodes[1].data_dir / "moving-0").exists():
            time.sleep(0.2)
        assert not (cluster.nodes[1].data_dir / "moving-0").exists(), "the old replica stayed"
        c = Consumer({"bootstrap.servers": cluster.nodes[3].bootstrap, "group.id": "mover",
                      "auto.offset.reset": "earliest"})
        c.subscribe(["moving"])
        got = 0
        deadline = time.monotonic() + 30
        while got < 4000 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got += 1
        c.close()
        assert got == 4000

        # Back to broker 1, which is then restarted: replaying the metadata log, it passes
        # through the states where it held no replica, and must not act on them (delete
        # its copy and fetch it all again); it applies the log once caught up.
        subprocess.run(gregor + ["--partition", "0", "--replicas", "1,2", "--wait"], check=True,
                       timeout=120)
        cluster.wait_leaders("moving", 1, isr=2)
        removal = "removing this broker's replica"
        removed_before = cluster.nodes[1].log_path.read_text(errors="replace").count(removal)
        assert removed_before == 1, f"broker 1 removed its replica {removed_before} times in the moves"
        cluster.nodes[1].stop()
        cluster.nodes[1].start()
        cluster.wait_leaders("moving", 1, isr=2)
        removed_after = cluster.nodes[1].log_path.read_text(errors="replace").count(removal)
        assert removed_after == removed_before, "a restart acted on a replayed past state and removed the replica"
    finally:
        cluster.stop()


def test_records_deleted_on_the_leader_stay_deleted_after_it_fails(cluster):
    """DeleteRecords moves the leader's log start; its followers take it from their
    fetches (as Kafka's do), so a new leader does not serve the deleted records again."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    cluster.create_topic("trimmed", 1, 3, {"segment.bytes": "1024"})
    cluster.wait_leaders("trimmed", 1, isr=3)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(50):
        p.produce("trimmed", value=b"r-%d" % i * 30, partition=0)
    assert p.flush(30) == 0
    low = cluster.admin().delete_records([TopicPartition("trimmed", 0, 30)])
    assert list(low.values())[0].result(30).low_watermark == 30
    time.sleep(2)  # a few follower fetches
    leader = cluster.leader("trimmed", 0)
    cluster.nodes[leader].kill9()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if cluster.leader("trimmed", 0) not in (leader, -1):
                break
        except Exception:
            pass
        time.sleep(0.2)
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "trim-check"})
    earliest, _ = c.get_watermark_offsets(TopicPartition("trimmed", 0), timeout=20)
    c.close()
    assert earliest == 30, f"the new leader's log starts at {earliest}: deleted records came back"


def test_offsets_sent_to_a_transaction_survive_their_group_coordinators_failover(cluster):
    """A transaction's offsets reach the group's coordinator before the transaction ends;
    when that coordinator dies, the broker taking over loads them as pending, and the
    commit marker makes them committed. (The broker taking over used to drop them: only a
    start-up load kept the offsets of open transactions.)"""
    from confluent_kafka import Consumer, Producer, TopicPartition
    cluster.create_topic("txn-in", 1, 3)
    cluster.create_topic("txn-out", 1, 3)
    cluster.wait_leaders("txn-out", 1)
    # The coordinators create their topics on first use.
    first = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "first"})
    first.committed([TopicPartition("txn-in", 0)], timeout=30)
    first.close()
    Producer({"bootstrap.servers": cluster.bootstrap,
              "transactional.id": "first"}).init_transactions(30)
    cluster.wait_leaders("__consumer_offsets", 6, isr=3)
    cluster.wait_leaders("__transaction_state", 6, isr=3)
    controller = cluster.controller()
    # A group whose coordinator is neither the controller nor the transaction's.
    txn_id = "tx-move"
    txn_coordinator = cluster.leader("__transaction_state", coordinator_partition(txn_id))
    group = next(g for g in (f"g-{i}" for i in range(200))
                 if cluster.leader("__consumer_offsets", coordinator_partition(g))
                 not in (controller, txn_coordinator))
    victim = cluster.leader("__consumer_offsets", coordinator_partition(group))

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": txn_id})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce("txn-out", value=b"x", partition=0)
    producer.send_offsets_to_transaction(
        [TopicPartition("txn-in", 0, 7)], consumer.consumer_group_metadata(), 30)
    cluster.nodes[victim].kill9()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if cluster.leader("__consumer_offsets", coordinator_partition(group)) != victim:
                break
        except Exception:
            pass
        time.sleep(0.2)
    producer.commit_transaction(60)
    offset = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        offset = consumer.committed([TopicPartition("txn-in", 0)], timeout=10)[0].offset
        if offset == 7:
            break
        time.sleep(0.5)
    consumer.close()
    assert offset == 7, f"the committed transaction's offset is {offset}, not 7"


def test_transactions_span_brokers_and_survive_their_coordinator(cluster):
    from confluent_kafka import Consumer, Producer, TopicPartition
    cluster.create_topic("txn-in", 3, 3)
    cluster.create_topic("txn-out", 3, 3)
    leaders = {p.leader for p in cluster.wait_leaders("txn-out", 3).values()}
    assert len(leaders) == 3, "partitions led by different brokers"

    def transaction(producer, tag, commit, offsets=True):
        producer.begin_transaction()
        for p in range(3):
            producer.produce("txn-out", value=f"{tag}-{p}".encode(), partition=p)
        if offsets:
            producer.send_offsets_to_transaction(
                [TopicPartition("txn-in", 0, 5)], consumer.consumer_group_metadata(), 30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "txn-group",
                         "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": "tx-a"})
    producer.init_transactions(30)
    transaction(producer, "one", True)
    transaction(producer, "two", False)
    # The coordinator of tx-a dies; another broker takes its partition and its state.
    cluster.wait_leaders("__transaction_state", 6, isr=3)
    coordinator = cluster.leader("__transaction_state", coordinator_partition("tx-a"))
    cluster.nodes[coordinator].kill9()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if cluster.leader("__transaction_state", coordinator_partition("tx-a")) != coordinator:
                break
        except Exception:
            pass
        time.sleep(0.2)
    # Without offsets: when the dead broker was also the group's coordinator, librdkafka
    # 2.x keeps waiting for it in send_offsets_to_transaction (seen in about one run in
    # three under load) instead of looking the coordinator up again.
    transaction(producer, "three", True, offsets=False)
    producer.flush(10)

    reader = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "txn-reader",
                       "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    reader.subscribe(["txn-out"])
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < 6 and time.monotonic() < deadline:
        m = reader.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value().decode())
    time.sleep(1)
    m = reader.poll(1)
    if m is not None and not m.error():
        seen.append(m.value().decode())
    reader.close()
    assert sorted(seen) == sorted(f"{t}-{p}" for t in ("one", "three") for p in range(3)), seen
    committed = consumer.committed([TopicPartition("txn-in", 0)], timeout=20)
    assert committed[0].offset == 5
    consumer.close()


def test_the_last_broker_of_a_cluster_stopped_whole_does_not_wait_for_a_controller(cluster):
    cluster.create_topic("whole", 3, 3)
    # The first two stop in turn, each moving its leaderships; the third is left with
    # most controllers stopped, so no controller can answer its controlled shutdown.
    for n in (1, 2):
        cluster.nodes[n].stop()
    last = cluster.nodes[3]
    started = time.monotonic()
    last.stop()
    took = time.monotonic() - started
    log = last.log_path.read_text(errors="replace")
    assert "most controllers have stopped" in log, log[-4000:]
    assert "controlled shutdown timed out" not in log
    assert took < 4, f"the last broker took {took:.1f} s to stop (the controlled shutdown waits 5 s at most)"
