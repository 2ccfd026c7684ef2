"""One consumer-group member in its own process, so a test can close it (SIGTERM) or kill
it (SIGKILL). Prints JSON lines on stdout, each with a wall-clock time `t`:

    {"ev": "assigned", "parts": [0, 3]}        the member's whole current assignment
    {"ev": "rec", "p": 0, "o": 12, "v": "..."}   a record, printed before its offset is committed

It commits each batch synchronously after printing it, so a killed member re-delivers at
most what it printed since its last commit.

    python3 group_member.py CLIENT BOOTSTRAP TOPIC GROUP [--assignor A] [--instance-id I]
                            [--reset earliest|latest] [--session-ms N]
CLIENT: kafka-python | confluent | aiokafka
"""

import argparse
import asyncio
import json
import signal
import sys
import time

stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def emit(**kw):
    kw["t"] = time.time()
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def run_kafka_python(a):
    from kafka import KafkaConsumer
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            emit(ev="assigned", parts=sorted(tp.partition for tp in c.assignment()))

    extra = {}
    if a.instance_id:
        extra["group_instance_id"] = a.instance_id
    c = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=a.group, enable_auto_commit=False,
                      auto_offset_reset=a.reset, session_timeout_ms=a.session_ms, heartbeat_interval_ms=500,
                      max_poll_interval_ms=60000, **extra)
    c.subscribe([a.topic], listener=Listener())
    while not stop:
        batch = c.poll(timeout_ms=200)
        for tp, msgs in batch.items():
            for m in msgs:
                emit(ev="rec", p=m.partition, o=m.offset, v=m.value.decode())
        if batch:
            c.commit()
    c.close()


def run_confluent(a):
    from confluent_kafka import Consumer, KafkaException
    conf = {"bootstrap.servers": a.bootstrap, "group.id": a.group, "enable.auto.commit": False,
            "auto.offset.reset": a.reset, "session.timeout.ms": a.session_ms, "heartbeat.interval.ms": 500,
            "partition.assignment.strategy": a.assignor or "range"}
    if a.instance_id:
        conf["group.instance.id"] = a.instance_id
    c = Consumer(conf)
    current = set()
    cooperative = (a.assignor or "") == "cooperative-sticky"

    def on_assign(consumer, parts):
        current.update(p.partition for p in parts)
        if cooperative:
            consumer.incremental_assign(parts)
        else:
            current.intersection_update(p.partition for p in parts)
            consumer.assign(parts)
        emit(ev="assigned", parts=sorted(current))

    def on_revoke(consumer, parts):
        current.difference_update(p.partition for p in parts)
        if cooperative:
            consumer.incremental_unassign(parts)
        else:
            consumer.unassign()
        emit(ev="assigned", parts=sorted(current))

    c.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke)
    while not stop:
        msgs = c.consume(500, 0.2)
        good = [m for m in msgs if m.error() is None]
        for m in good:
            emit(ev="rec", p=m.partition(), o=m.offset(), v=m.value().decode())
        if good:
            # A commit can fail while the coordinator moves (its broker killed mid-request):
            # an application carries on, and its next commit covers these offsets too.
            try:
                c.commit(asynchronous=False)
            except KafkaException as e:
                emit(ev="commit_failed", error=str(e.args[0]))
    c.close()


def run_aiokafka(a):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.abc import ConsumerRebalanceListener

    async def main():
        c = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, group_id=a.group, enable_auto_commit=False,
                             auto_offset_reset=a.reset, session_timeout_ms=a.session_ms, heartbeat_interval_ms=500)

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                pass

            async def on_partitions_assigned(self, assigned):
                emit(ev="assigned", parts=sorted(tp.partition for tp in assigned))

        await c.start()
        c.subscribe([a.topic], listener=Listener())
        try:
            while not stop:
                batch = await c.getmany(timeout_ms=200)
                for tp, msgs in batch.items():
                    for m in msgs:
                        emit(ev="rec", p=m.partition, o=m.offset, v=m.value.decode())
                if batch:
                    await c.commit()
        finally:
            await c.stop()

    asyncio.run(main())


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("client")
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("group")
    ap.add_argument("--assignor")
    ap.add_argument("--instance-id")
    ap.add_argument("--reset", default="earliest")
    ap.add_argument("--session-ms", type=int, default=6000)
    args = ap.parse_args()
    {"kafka-python": run_kafka_python, "confluent": run_confluent, "aiokafka": run_aiokafka}[args.client](args)
    emit(ev="closed")
