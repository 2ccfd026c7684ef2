"""The same operations through each client library, so tests can run them side by side.

Every adapter works in plain records: Rec(partition, offset, key, value, headers, timestamp),
with headers as a list of (str, bytes) pairs in order."""

import asyncio
from collections import namedtuple

Rec = namedtuple("Rec", "partition offset key value headers timestamp")

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def _codec_or_none(codec):
    return None if codec == "none" else codec


class KafkaPython:
    name = "kafka-python"

    def create_topic(self, bootstrap, topic, partitions, configs=None):
        from kafka.admin import KafkaAdminClient, NewTopic
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {})])
        finally:
            admin.close()

    def produce(self, bootstrap, topic, items, codec):
        """items: (key, value, headers, timestamp, partition-or-None). Returns [(partition, offset)]."""
        from kafka import KafkaProducer
        p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=_codec_or_none(codec), linger_ms=5)
        try:
            futures = [p.send(topic, value=v, key=k, headers=h, timestamp_ms=ts, partition=part) for k, v, h, ts, part in items]
            p.flush(30)
            return [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)]
        finally:
            p.close()

    def consume(self, bootstrap, topic, partitions, count, timeout_s=30):
        from kafka import KafkaConsumer, TopicPartition
        c = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                          consumer_timeout_ms=timeout_s * 1000)
        try:
            c.assign([TopicPartition(topic, p) for p in partitions])
            out = []
            for m in c:
                out.append(Rec(m.partition, m.offset, m.key, m.value, list(m.headers), m.timestamp))
                if len(out) >= count:
                    break
            return out
        finally:
            c.close()

    def offset_for_time(self, bootstrap, topic, partition, ts):
        from kafka import KafkaConsumer, TopicPartition
        c = KafkaConsumer(bootstrap_servers=bootstrap)
        try:
            tp = TopicPartition(topic, partition)
            r = c.offsets_for_times({tp: ts})[tp]
            return None if r is None else (r.offset, r.timestamp)
        finally:
            c.close()


class Confluent:
    name = "confluent-kafka"

    def create_topic(self, bootstrap, topic, partitions, configs=None):
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": bootstrap})
        futures = admin.create_topics([NewTopic(topic, partitions, 1, config=configs or {})])
        futures[topic].result(30)

    def produce(self, bootstrap, topic, items, codec):
        from confluent_kafka import Producer
        p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 5,
                      "partitioner": "murmur2_random"})
        results = [None] * len(items)

        def done(i):
            def cb(err, msg):
                assert err is None, f"delivery failed: {err}"
                results[i] = (msg.partition(), msg.offset())
            return cb

        for i, (k, v, h, ts, part) in enumerate(items):
            kwargs = dict(value=v, key=k, headers=h, timestamp=ts, on_delivery=done(i))
            if part is not None:
                kwargs["partition"] = part
            p.produce(topic, **kwargs)
        assert p.flush(30) == 0, "messages left undelivered"
        return results

    def consume(self, bootstrap, topic, partitions, count, timeout_s=30):
        import time
        from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-assign-only", "enable.auto.commit": False})
        try:
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            out, deadline = [], time.monotonic() + timeout_s
            while len(out) < count and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is None:
                    continue
                assert m.error() is None, f"consume error: {m.error()}"
                headers = [(k, v) for k, v in (m.headers() or [])]
                out.append(Rec(m.partition(), m.offset(), m.key(), m.value(), headers, m.timestamp()[1]))
            return out
        finally:
            c.close()

    def offset_for_time(self, bootstrap, topic, partition, ts):
        from confluent_kafka import Consumer, TopicPartition
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused-assign-only"})
        try:
            r = c.offsets_for_times([TopicPartition(topic, partition, ts)], timeout=30)[0]
            assert r.error is None, r.error
            return None if r.offset < 0 else (r.offset, None)
        finally:
            c.close()


class AioKafka:
    name = "aiokafka"

    def create_topic(self, bootstrap, topic, partitions, configs=None):
        async def run():
            from aiokafka.admin import AIOKafkaAdminClient, NewTopic
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {})])
            finally:
                await admin.close()
        asyncio.run(run())

    def produce(self, bootstrap, topic, items, codec):
        async def run():
            from aiokafka import AIOKafkaProducer
            p = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=_codec_or_none(codec), linger_ms=5)
            await p.start()
            try:
                futures = [await p.send(topic, value=v, key=k, headers=h, timestamp_ms=ts, partition=part)
                           for k, v, h, ts, part in items]
                return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
            finally:
                await p.stop()
        return asyncio.run(run())

    def consume(self, bootstrap, topic, partitions, count, timeout_s=30):
        async def run():
            import time
            from aiokafka import AIOKafkaConsumer
            from aiokafka.structs import TopicPartition
            c = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
            await c.start()
            try:
                c.assign([TopicPartition(topic, p) for p in partitions])
                out, deadline = [], time.monotonic() + timeout_s
                while len(out) < count and time.monotonic() < deadline:
                    batch = await c.getmany(timeout_ms=500)
                    for ms in batch.values():
                        out.extend(Rec(m.partition, m.offset, m.key, m.value, list(m.headers), m.timestamp) for m in ms)
                return out
            finally:
                await c.stop()
        return asyncio.run(run())

    def offset_for_time(self, bootstrap, topic, partition, ts):
        async def run():
            from aiokafka import AIOKafkaConsumer
            from aiokafka.structs import TopicPartition
            c = AIOKafkaConsumer(bootstrap_servers=bootstrap)
            await c.start()
            try:
                tp = TopicPartition(topic, partition)
                r = (await c.offsets_for_times({tp: ts}))[tp]
                return None if r is None else (r.offset, r.timestamp)
            finally:
                await c.stop()
        return asyncio.run(run())


CLIENTS = [KafkaPython(), Confluent(), AioKafka()]
