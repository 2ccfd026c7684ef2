"""Transactions: committed records reach read_committed consumers and aborted ones never
do (while read_uncommitted sees both), with confluent-kafka, aiokafka and kafka-python; a
second producer with the same transactional.id fences the first; offsets committed in a
transaction count only once it commits; a consume-transform-produce loop killed midway
(and its broker killed too) ends with every input in the output exactly once; a hanging
transaction shows in `gregor txn` and is aborted by its timeout or from the command line."""

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BIN

HERE = Path(__file__).parent


def gregor(*args):
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60)


def create_topic(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(30)


def consume_all(bootstrap, topic, isolation, expect_at_least=0, settle_s=2.0, timeout_s=30):
    """Every record of the topic as (key, value), read with the given isolation level."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{time.monotonic_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": isolation,
    })
    partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    got = []
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                if len(got) >= expect_at_least and time.monotonic() - quiet_since > settle_s:
                    break
                continue
            quiet_since = time.monotonic()
            got.append((m.key(), m.value()))
    finally:
        c.close()
    return got


def values(records):
    return sorted(v.decode() for _, v in records)


# --- One committed and one aborted transaction, through each client -----------------

def confluent_commit_and_abort(bootstrap, topic):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-tx"})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=b"k", value=f"committed-{i}".encode(), partition=i % 2)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=b"k", value=f"aborted-{i}".encode(), partition=i % 2)
    p.flush(30)
    p.abort_transaction(30)


def aiokafka_commit_and_abort(bootstrap, topic):
    from aiokafka import AIOKafkaProducer

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-tx")
        await p.start()
        try:
            async with p.transaction():
                for i in range(5):
                    await p.send_and_wait(topic, f"committed-{i}".encode(), key=b"k", partition=i % 2)
            with pytest.raises(RuntimeError):
                async with p.transaction():
                    for i in range(5):
                        await p.send_and_wait(topic, f"aborted-{i}".encode(), key=b"k", partition=i % 2)
                    raise RuntimeError("abort this transaction")
        finally:
            await p.stop()

    asyncio.run(run())


def kafka_python_commit_and_abort(bootstrap, topic):
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-tx")
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(5):
            p.send(topic, key=b"k", value=f"committed-{i}".encode(), partition=i % 2)
        p.commit_transaction()
        p.begin_transaction()
        for i in range(5):
            p.send(topic, key=b"k", value=f"aborted-{i}".encode(), partition=i % 2)
        p.flush()
        p.abort_transaction()
    finally:
        p.close()


def aiokafka_read(bootstrap, topic, isolation, count):
    from aiokafka import AIOKafkaConsumer

    async def run():
        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             isolation_level=isolation, enable_auto_commit=False)
        await c.start()
        got = []
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                for _, ms in (await c.getmany(timeout_ms=300)).items():
                    got += [m.value.decode() for m in ms]
                if len(got) >= count:
                    await asyncio.sleep(0.5)  # anything more would be a failure
                    for _, ms in (await c.getmany(timeout_ms=300)).items():
                        got += [m.value.decode() for m in ms]
                    break
        finally:
            await c.stop()
        return sorted(got)

    return asyncio.run(run())


def kafka_python_read(bootstrap, topic, isolation):
    from kafka import KafkaConsumer
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                      isolation_level=isolation, consumer_timeout_ms=3000, enable_auto_commit=False)
    try:
        return sorted(m.value.decode() for m in c)
    finally:
        c.close()


WRITERS = {
    "confluent-kafka": confluent_commit_and_abort,
    "aiokafka": aiokafka_commit_and_abort,
    "kafka-python": kafka_python_commit_and_abort,
}


@pytest.mark.parametrize("client", list(WRITERS))
def test_committed_transactions_are_visible_and_aborted_ones_only_uncommitted(broker, client):
    topic = f"txn-{client}"
    create_topic(broker.bootstrap, topic, 2)
    WRITERS[client](broker.bootstrap, topic)
    committed = [f"committed-{i}" for i in range(5)]
    aborted = [f"aborted-{i}" for i in range(5)]
    assert values(consume_all(broker.bootstrap, topic, "read_committed", 5)) == committed
    assert values(consume_all(broker.bootstrap, topic, "read_uncommitted", 10)) == sorted(aborted + committed)
    # The other clients' consumers agree.
    assert kafka_python_read(broker.bootstrap, topic, "read_committed") == committed
    assert kafka_python_read(broker.bootstrap, topic, "read_uncommitted") == sorted(aborted + committed)
    assert aiokafka_read(broker.bootstrap, topic, "read_committed", 5) == committed
    assert aiokafka_read(broker.bootstrap, topic, "read_uncommitted", 10) == sorted(aborted + committed)


def test_an_open_transaction_holds_read_committed_readers_at_the_lso(broker):
    create_topic(broker.bootstrap, "lso", 1)
    tx = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "lso-tx"})
    tx.init_transactions(30)
    tx.begin_transaction()
    tx.produce("lso", value=b"in-transaction")
    tx.flush(30)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce("lso", value=b"after")
    plain.flush(30)
    assert consume_all(broker.bootstrap, "lso", "read_committed", settle_s=1.5) == [], \
        "a record after an open transaction was served before the transaction ended"
    tx.commit_transaction(30)
    assert values(consume_all(broker.bootstrap, "lso", "read_committed", 2)) == ["after", "in-transaction"]
    # The high watermark counts the marker; read_committed's end offset is the LSO.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "wm", "isolation.level": "read_committed"})
    try:
        low, high = c.get_watermark_offsets(TopicPartition("lso", 0), timeout=10)
        assert (low, high) == (0, 3)
    finally:
        c.close()


def test_a_second_producer_with_the_same_transactional_id_fences_the_first(broker):
    create_topic(broker.bootstrap, "fence", 1)
    first = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "shared"})
    first.init_transactions(30)
    first.begin_transaction()
    first.produce("fence", value=b"zombie")
    first.flush(30)
    second = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "shared"})
    second.init_transactions(30)  # aborts the first's open transaction
    with pytest.raises(KafkaException) as fenced:
        first.produce("fence", value=b"zombie-2")
        first.commit_transaction(30)
    err = fenced.value.args[0]
    assert err.fatal() or "fenced" in err.str().lower(), err
    second.begin_transaction()
    second.produce("fence", value=b"winner")
    second.commit_transaction(30)
    assert values(consume_all(broker.bootstrap, "fence", "read_committed", 1)) == ["winner"]
    described = json.loads(gregor("txn", "describe", "shared", "--bootstrap", broker.bootstrap, "--json").stdout)
    assert described["state"] == "CompleteCommit" and described["producer_epoch"] >= 1


def test_offsets_committed_in_a_transaction_count_only_once_it_commits(broker):
    create_topic(broker.bootstrap, "src", 1)
    create_topic(broker.bootstrap, "dst", 1)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        plain.produce("src", value=str(i).encode())
    plain.flush(30)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "eos", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.subscribe(["src"])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 10 and time.monotonic() < deadline:
        got += [m for m in c.consume(10, 0.5) if m.error() is None]
    assert len(got) == 10
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "eos-tx"})
    p.init_transactions(30)

    def committed_offset():
        d = json.loads(gregor("group", "describe", "eos", "--bootstrap", broker.bootstrap, "--json").stdout)
        return {(x["topic"], x["partition"]): x["committed_offset"] for x in d["partitions"]}.get(("src", 0))

    for outcome in ("abort", "commit"):
        p.begin_transaction()
        p.produce("dst", value=outcome.encode())
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
        assert committed_offset() is None, "a transactional offset showed before its transaction ended"
        if outcome == "abort":
            p.abort_transaction(30)
            assert committed_offset() is None, "an aborted transaction's offset was committed"
        else:
            p.commit_transaction(30)
            assert committed_offset() == 10
    c.close()
    # Survives a restart: the offsets topic replays the transaction's records and markers.
    broker.restart()
    d = json.loads(gregor("group", "describe", "eos", "--bootstrap", broker.bootstrap, "--json").stdout)
    assert [x["committed_offset"] for x in d["partitions"] if x["topic"] == "src"] == [10]
    assert values(consume_all(broker.bootstrap, "dst", "read_committed", 1)) == ["commit"]


def test_an_open_transaction_survives_a_broker_kill9_and_commits_after(broker):
    create_topic(broker.bootstrap, "durable-txn", 2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "survivor",
                  "transaction.timeout.ms": 60000})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(20):
        p.produce("durable-txn", value=f"r{i}".encode(), partition=i % 2)
    p.flush(30)
    broker.kill9()
    broker.start()
    listed = json.loads(gregor("txn", "list", "--bootstrap", broker.bootstrap, "--json").stdout)
    assert [(t["transactional_id"], t["state"], len(t["partitions"])) for t in listed] == [("survivor", "Ongoing", 2)]
    assert consume_all(broker.bootstrap, "durable-txn", "read_committed", settle_s=1.0) == []
    p.commit_transaction(30)
    assert values(consume_all(broker.bootstrap, "durable-txn", "read_committed", 20)) == sorted(f"r{i}" for i in range(20))


def test_produce_refuses_forged_markers_and_transactional_batches_outside_a_transaction(broker):
    """The security audit's items 3 and 4: a client wrote COMMIT and ABORT markers with
    Produce, and a transactional batch with no transactional id (under another producer's
    id) that held read_committed readers for good."""
    import kafka_raw as raw
    create_topic(broker.bootstrap, "forged", 1)
    tx = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "honest-tx"})
    tx.init_transactions(30)
    tx.begin_transaction()
    tx.produce("forged", value=b"honest")
    tx.flush(30)
    conn = raw.Conn(broker.bootstrap)
    try:
        err, _, records = raw.fetch_v4(conn, "forged", 0, 0)
        assert err == 0
        pid, epoch, attrs = raw.producer_of(records)
        assert attrs & raw.TRANSACTIONAL and pid >= 0
        # A forged ABORT for the honest producer's open transaction, and a COMMIT.
        for commit in (False, True):
            err, base, _ = raw.produce_v3(conn, "forged", 0, raw.marker(pid, epoch, commit))
            assert err == 87, f"a client-written {'COMMIT' if commit else 'ABORT'} marker got {err} (INVALID_RECORD expected)"
        plain = raw.batch([(None, b"forged-txn", [])], producer_id=pid + 1000, producer_epoch=0, base_sequence=0)
        forged = raw.with_attributes(plain, raw.TRANSACTIONAL)
        # No transactional id: TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as Kafka answers.
        err, _, _ = raw.produce_v3(conn, "forged", 0, forged)
        assert err == 53, f"a transactional batch without a transactional id got {err}"
        # Someone else's transactional id, with a producer id that is not its own.
        err, _, _ = raw.produce_v3(conn, "forged", 0, forged, transactional_id="honest-tx")
        assert err == 49, f"a batch under another producer's transactional id got {err} (INVALID_PRODUCER_ID_MAPPING expected)"
        # The honest producer's own id and epoch, for a partition outside its transaction.
        create_topic(broker.bootstrap, "forged-elsewhere", 1)
        own = raw.with_attributes(raw.batch([(None, b"x", [])], producer_id=pid, producer_epoch=epoch, base_sequence=0),
                                  raw.TRANSACTIONAL)
        err, _, _ = raw.produce_v3(conn, "forged-elsewhere", 0, own, transactional_id="honest-tx")
        assert err == 48, f"a batch for a partition not in the transaction got {err} (INVALID_TXN_STATE expected)"
        # An unknown transactional id.
        err, _, _ = raw.produce_v3(conn, "forged", 0, forged, transactional_id="nobody")
        assert err == 49, f"a batch under an unknown transactional id got {err}"
        # A client's own transactional id on the honest producer's id and epoch, while that
        # producer's transaction is open here (the review's shortcut bypass).
        own_tx = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "other-tx"})
        own_tx.init_transactions(30)
        riding = raw.with_attributes(raw.batch([(None, b"ride", [])], producer_id=pid, producer_epoch=epoch,
                                               base_sequence=1), raw.TRANSACTIONAL)
        err, _, _ = raw.produce_v3(conn, "forged", 0, riding, transactional_id="other-tx")
        assert err == 49, f"a batch riding another producer's open transaction got {err}"
        # A plain idempotent batch for the honest producer at a higher epoch: it would
        # fence the producer here and leave its transaction open for good.
        bump = raw.batch([(None, b"bump", [])], producer_id=pid, producer_epoch=32000, base_sequence=0)
        err, _, _ = raw.produce_v3(conn, "forged", 0, bump)
        assert err == 48, f"a non-transactional batch over an open transaction got {err} (INVALID_TXN_STATE expected)"
        # A producer id without a sequence (it would slip past the sequence checks).
        nosq = raw.batch([(None, b"nosq", [])], producer_id=pid + 2000, producer_epoch=0, base_sequence=-1)
        err, _, _ = raw.produce_v3(conn, "forged", 0, nosq)
        assert err == 87, f"a producer id without a sequence got {err}"
        # Two producers' transactional batches in one request.
        two = forged + raw.with_attributes(
            raw.batch([(None, b"y", [])], producer_id=pid + 3000, producer_epoch=0, base_sequence=0), raw.TRANSACTIONAL)
        err, _, _ = raw.produce_v3(conn, "forged", 0, two, transactional_id="honest-tx")
        assert err == 87, f"two producers' transactional batches in one request got {err}"
    finally:
        conn.close()
    tx.commit_transaction(30)
    plain_producer = Producer({"bootstrap.servers": broker.bootstrap})
    plain_producer.produce("forged", value=b"after")
    plain_producer.flush(30)
    # Nothing forged holds the last stable offset: the committed record and the one after
    # it reach a read_committed reader, and nothing forged was stored.
    assert values(consume_all(broker.bootstrap, "forged", "read_committed", 2, timeout_s=15)) == ["after", "honest"]
    assert values(consume_all(broker.bootstrap, "forged", "read_uncommitted", 2, timeout_s=15)) == ["after", "honest"]


def test_a_hanging_transaction_is_listed_and_aborted_by_its_timeout(make_broker):
    b = make_broker('"transaction.abort.timed.out.transaction.cleanup.interval.ms" = 200')
    create_topic(b.bootstrap, "hang", 1)
    p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": "hanger", "transaction.timeout.ms": 3000})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce("hang", value=b"never committed")
    p.flush(30)
    listing = gregor("txn", "list", "--bootstrap", b.bootstrap)
    assert listing.returncode == 0, listing.stderr
    assert "hanger" in listing.stdout and "Ongoing" in listing.stdout, listing.stdout
    described = json.loads(gregor("txn", "describe", "hanger", "--bootstrap", b.bootstrap, "--json").stdout)
    assert described["state"] == "Ongoing" and described["partitions"] == ["hang-0"]
    assert described["age_ms"] is not None and described["age_ms"] < 3000
    plain = Producer({"bootstrap.servers": b.bootstrap})
    plain.produce("hang", value=b"behind it")
    plain.flush(30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        d = json.loads(gregor("txn", "describe", "hanger", "--bootstrap", b.bootstrap, "--json").stdout)
        if d["state"] == "CompleteAbort":
            break
        time.sleep(0.2)
    assert d["state"] == "CompleteAbort", d
    assert d["producer_epoch"] == described["producer_epoch"] + 1, "the abandoned producer is fenced"
    assert values(consume_all(b.bootstrap, "hang", "read_committed", 1)) == ["behind it"]
    assert "aborting a transaction past transaction.timeout.ms" in b.log_text()


def test_gregor_txn_abort_ends_a_hanging_transaction(broker):
    create_topic(broker.bootstrap, "stuck", 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "stuck-tx", "transaction.timeout.ms": 600000})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce("stuck", value=b"stuck")
    p.flush(30)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce("stuck", value=b"waiting")
    plain.flush(30)
    assert consume_all(broker.bootstrap, "stuck", "read_committed", settle_s=1.0) == []
    aborted = gregor("txn", "abort", "stuck-tx", "--bootstrap", broker.bootstrap)
    assert aborted.returncode == 0, aborted.stderr
    assert "aborted the open transaction of stuck-tx" in aborted.stdout
    assert values(consume_all(broker.bootstrap, "stuck", "read_committed", 1)) == ["waiting"]
    again = gregor("txn", "abort", "stuck-tx", "--bootstrap", broker.bootstrap)
    assert again.returncode != 0 and "nothing to abort" in again.stderr
    with pytest.raises(KafkaException):
        p.commit_transaction(30)
    unknown = gregor("txn", "describe", "nobody", "--bootstrap", broker.bootstrap)
    assert unknown.returncode != 0 and "TransactionalIdNotFound" in unknown.stderr


# --- Exactly once through failures ----------------------------------------------------

def group_progress(bootstrap):
    out = gregor("group", "describe", "ctp", "--bootstrap", bootstrap, "--json")
    if out.returncode != 0:
        return 0, None
    d = json.loads(out.stdout)
    committed = sum(p["committed_offset"] or 0 for p in d["partitions"] if p["topic"] == "in")
    lag = sum(p["lag"] for p in d["partitions"] if p["topic"] == "in")
    return committed, lag


def test_consume_transform_produce_killed_midway_outputs_every_input_exactly_once(broker):
    n = 3000
    create_topic(broker.bootstrap, "in", 3)
    create_topic(broker.bootstrap, "out", 3)
    plain = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(n):
        plain.produce("in", key=f"{i}".encode(), value=f"value-{i}".encode())
    plain.flush(30)

    def start_app():
        return subprocess.Popen([sys.executable, str(HERE / "ctp_app.py"), broker.bootstrap, "in", "out", "0.05"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    app = start_app()
    killed_app = killed_broker = False
    restarts = 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if app.poll() is not None:  # fenced or failed: a supervisor starts a new one
                restarts += 1
                assert restarts < 10, app.stdout.read()
                app = start_app()
                continue
            committed, lag = group_progress(broker.bootstrap)
            if not killed_app and committed >= n // 4:
                app.send_signal(signal.SIGKILL)
                app.wait()
                app = start_app()
                killed_app = True
            elif killed_app and not killed_broker and committed >= n // 2:
                broker.kill9()
                broker.start()
                killed_broker = True
            elif killed_broker and committed == n and lag == 0:
                break
        assert killed_app and killed_broker, f"the run ended before both kills (committed {committed})"
        assert committed == n and lag == 0, f"inputs left unprocessed: committed {committed}, lag {lag}"
    finally:
        app.kill()
        app.wait()
    out = consume_all(broker.bootstrap, "out", "read_committed", n, settle_s=2.0, timeout_s=60)
    keys = [k.decode() for k, _ in out]
    assert len(out) == n and set(keys) == {str(i) for i in range(n)}, \
        f"{len(out)} outputs for {n} inputs, {len(set(keys))} distinct"
    assert all(v == f"VALUE-{k.decode()}".encode() for k, v in out)
    # The aborted attempts are there for read_uncommitted readers, and only for them.
    assert len(consume_all(broker.bootstrap, "out", "read_uncommitted", n, settle_s=2.0)) >= n
