"""A consume-transform-produce application with exactly-once semantics (confluent-kafka):
reads `in` (read_committed, group `ctp`), writes each record upper-cased to `out` inside a
transaction that also commits the consumed offsets, pausing WORK_S per batch to stand
for real work. Runs until it is stopped (or two minutes pass); exits 3 on a fatal error
(for example when fenced), so its supervisor starts a fresh instance.

Usage: ctp_app.py BOOTSTRAP IN OUT WORK_S"""

import os
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

bootstrap, topic_in, topic_out, work_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": "ctp",
    "isolation.level": "read_committed",
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000,
})
producer = Producer({
    "bootstrap.servers": bootstrap,
    "transactional.id": "ctp-app",
    "transaction.timeout.ms": 10000,
    "linger.ms": 5,
    # librdkafka 2.16 re-bootstraps when every broker is down (KIP-1102) and then leaves
    # a TxnOffsetCommit queued on a retired broker handle, hanging the transaction; with a
    # single broker that restarts on the same address there is nothing to re-bootstrap.
    "metadata.recovery.strategy": "none",
    **({"debug": os.environ["CTP_DEBUG"]} if os.environ.get("CTP_DEBUG") else {}),
})
producer.init_transactions(60)
consumer.subscribe([topic_in])


def retrying(op):
    """Runs a transactional step, repeating it while the error is retriable."""
    while True:
        try:
            return op()
        except KafkaException as e:
            print(f"{op}: {e.args[0]}", flush=True)
            if not e.args[0].retriable():
                raise


deadline = time.monotonic() + 120
try:
    while time.monotonic() < deadline:
        msgs = [m for m in consumer.consume(100, 0.5) if m.error() is None]
        if not msgs:
            continue
        time.sleep(work_s)
        retrying(producer.begin_transaction)
        try:
            for m in msgs:
                producer.produce(topic_out, key=m.key(), value=m.value().upper())
            positions = consumer.position(consumer.assignment())
            retrying(lambda: producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30))
            retrying(lambda: producer.commit_transaction(30))
        except KafkaException as e:
            err = e.args[0]
            if not err.txn_requires_abort():
                print(f"fatal: {err}", flush=True)
                sys.exit(3)
            print(f"aborting: {err}", flush=True)
            retrying(lambda: producer.abort_transaction(30))
            # Rewind to the committed offsets and process those records again.
            for tp in consumer.committed(consumer.assignment(), 30):
                consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
finally:
    consumer.close()
