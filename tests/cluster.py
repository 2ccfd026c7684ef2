"""A Gregor cluster on loopback for tests and the fault harness: N brokers, each a voter
of the metadata quorum, started with `--controllers`, killed with SIGKILL, paused with
SIGSTOP, restarted on the same ports and data directories.

The workload (`Workload`) runs an idempotent `acks=all` confluent-kafka producer that
numbers its records, and a consumer group that records what it saw; `check` then proves
that every acknowledged record is in its partition exactly once and in order, that
nothing a consumer saw vanished, and that the group never committed past the high
watermark.
"""

import os
import re
import signal
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("GREGOR_BIN", ROOT / "target" / "debug" / "gregor"))

# Short timeouts so faults show within seconds (Kafka's names; see docs/configuration.md).
FAST = {
    "GREGOR_BROKER_SESSION_TIMEOUT_MS": "2000",
    "GREGOR_BROKER_HEARTBEAT_INTERVAL_MS": "250",
    "GREGOR_REPLICA_LAG_TIME_MAX_MS": "4000",
    "GREGOR_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS": "2",
    "GREGOR_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    "GREGOR_OFFSETS_TOPIC_NUM_PARTITIONS": "6",
    "GREGOR_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "6",
    "GREGOR_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "1000",
}


def coordinator_partition(key, partitions=6):
    """The internal-topic partition of a group or transactional id: Java's
    String.hashCode, made non-negative, modulo the partition count (as Kafka)."""
    h = 0
    for ch in key:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return (h & 0x7FFFFFFF) % partitions


class Node:
    def __init__(self, node_id, root, controllers, env, host="127.0.0.1", port=None, netns=None):
        self.id = node_id
        self.host = host
        self.port = port or free_port()
        self.bootstrap = f"{host}:{self.port}"
        self.netns = netns
        self.extra_args = []
        self.data_dir = Path(root) / f"node{node_id}"
        self.log_path = Path(root) / f"node{node_id}.log"
        self.controllers = controllers
        self.env = env
        self.proc = None
        self.paused = False
        # Metrics on loopback (a node in a network namespace has none reachable).
        self.metrics_url = None if netns else f"http://127.0.0.1:{free_port()}/metrics"

    def launch(self):
        metrics = self.metrics_url.split("/")[2] if self.metrics_url else "off"
        args = [str(BIN), "broker", "--node-id", str(self.id), "--listen", self.bootstrap,
                "--data-dir", str(self.data_dir), "--metrics", metrics,
                "--controllers", self.controllers] + self.extra_args
        if self.netns:
            args = ["ip", "netns", "exec", self.netns] + args
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env={**os.environ, **self.env})
        log.close()
        return self

    def start(self):
        """Starts the broker and waits until it serves clients (it first joins the quorum
        and registers, so a majority of the controllers must be running)."""
        if self.proc is None:
            self.launch()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.id} exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"node {self.id} did not listen within 30 s:\n{self.log_text()}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.proc is not None:
            if self.paused:
                self.resume()
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self, timeout=30):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=timeout)
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                self.proc = None
            return code

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


class Cluster:
    def __init__(self, root, size=3, env=None):
        ports = [free_port() for _ in range(size)]
        controllers = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(ports))
        self.root = root
        self.controllers = controllers
        self.env = {**FAST, **(env or {})}
        self.nodes = {i + 1: Node(i + 1, root, controllers, self.env) for i in range(size)}

    def add_broker(self, node_id):
        """Starts a broker that is not a controller: it joins the metadata log as a
        learner, on a metadata-log port of its own."""
        n = Node(node_id, self.root, self.controllers, self.env)
        n.extra_args = ["--controller-listener", f"127.0.0.1:{free_port()}"]
        self.nodes[node_id] = n
        return n.start()

    def start(self):
        for n in self.nodes.values():
            n.launch()
        for n in self.nodes.values():
            n.start()
        self.wait_brokers(len(self.nodes))
        return self

    def stop(self):
        for n in self.nodes.values():
            n.kill9()

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes.values())

    def admin(self):
        # One client kept for the cluster's life: futures fail if their client is freed.
        if getattr(self, "_admin", None) is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return self._admin

    def metadata(self, topic=None, timeout=5):
        return self.admin().list_topics(topic=topic, timeout=timeout)

    def wait_brokers(self, count, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                md = self.metadata()
                if len(md.brokers) == count:
                    return md
            except Exception:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{count} brokers not listed within {timeout} s")

    def create_topic(self, name, partitions, rf, config=None):
        fs = self.admin().create_topics([NewTopic(name, partitions, rf, config=config or {})])
        fs[name].result(30)
        self.wait_leaders(name, partitions)

    def wait_leaders(self, topic, partitions, timeout=30, isr=None):
        deadline = time.monotonic() + timeout
        seen = "no metadata"
        while time.monotonic() < deadline:
            try:
                t = self.metadata(topic).topics[topic]
                ps = t.partitions
                seen = {i: (p.leader, p.isrs) for i, p in sorted(ps.items())}
                if len(ps) == partitions and all(p.leader >= 0 for p in ps.values()) and (
                        isr is None or all(len(p.isrs) >= isr for p in ps.values())):
                    return {i: p for i, p in ps.items()}
            except Exception as e:
                seen = f"metadata failed: {e}"
            time.sleep(0.2)
        raise AssertionError(f"{topic}: leaders (isr >= {isr}) not ready within {timeout} s; "
                             f"last seen (leader, isr) by partition: {seen}\n{self.log_digest()}")

    def log_lines(self):
        """(node id, line) for every line of every node's log, colour codes removed."""
        for node_id, n in self.nodes.items():
            try:
                text = n.log_path.read_text(errors="replace")
            except OSError:
                continue
            for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines():
                yield node_id, line

    def log_digest(self, lines=40):
        """The last warnings and errors of every node's log, for a failure message."""
        out = []
        for n in self.nodes.values():
            try:
                text = n.log_path.read_text(errors="replace")
            except OSError:
                continue
            text = re.sub(r"\x1b\[[0-9;]*m", "", text)
            picked = [l for l in text.splitlines() if " WARN " in l or " ERROR " in l
                      or "ready" in l or "stopped" in l]
            state = ("alive" if n.proc.poll() is None else f"exited with {n.proc.returncode}") if n.proc else "stopped"
            out.append(f"--- node {n.id} ({state}):")
            out.extend(picked[-lines:])
        return "\n".join(out)

    def _retry(self, f, timeout=20):
        """`f()`, retried while brokers are failing over (a metadata request may land on
        a broker that just died)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return f()
            except Exception:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def leader(self, topic, partition):
        return self._retry(lambda: self.metadata(topic).topics[topic].partitions[partition].leader)

    def controller(self):
        return self._retry(lambda: self.metadata().controller_id)


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


class NetnsCluster(Cluster):
    """Brokers each in a network namespace of their own, joined by a bridge that the test
    process (in the root namespace) also sits on, so a broker can be cut off from its
    peers with blackhole routes while clients still reach it."""

    def __init__(self, root, size=3, env=None):
        tag = os.urandom(2).hex()
        net = 100 + int(tag, 16) % 100
        self.prefix = f"10.{net}.{int(tag[:2], 16)}"
        self.bridge = f"gbr{tag}"
        self.namespaces = [f"gregor-{tag}-{i + 1}" for i in range(size)]
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.prefix}.254/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i, ns in enumerate(self.namespaces, start=1):
            veth = f"gv{tag}{i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
            sh("ip", "link", "set", f"{veth}p", "netns", ns)
            sh("ip", "link", "set", veth, "master", self.bridge)
            sh("ip", "link", "set", veth, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.prefix}.{i}/24", "dev", f"{veth}p")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", f"{veth}p", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        controllers = ",".join(f"{i}@{self.prefix}.{i}:9093" for i in range(1, size + 1))
        self.env = {**FAST, **(env or {})}
        self.nodes = {i: Node(i, root, controllers, self.env, host=f"{self.prefix}.{i}",
                              port=9092, netns=self.namespaces[i - 1])
                      for i in range(1, size + 1)}

    def _routes(self, action, node_id):
        for other in self.nodes:
            if other == node_id:
                continue
            sh("ip", "netns", "exec", self.namespaces[node_id - 1], "ip", "route", action,
               "blackhole", f"{self.prefix}.{other}/32")
            sh("ip", "netns", "exec", self.namespaces[other - 1], "ip", "route", action,
               "blackhole", f"{self.prefix}.{node_id}/32")

    def cut(self, node_id):
        """Cuts the broker off from every peer; clients can still reach it."""
        self._routes("add", node_id)

    def heal(self, node_id):
        self._routes("del", node_id)

    def stop(self):
        super().stop()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


class Workload:
    """A numbered, idempotent acks=all producer and a consumer group, both in threads,
    bounded in count and time."""

    def __init__(self, cluster, topic, partitions, group, max_records=200_000, rate=400):
        self.cluster = cluster
        self.topic = topic
        self.partitions = partitions
        self.group = group
        self.max_records = max_records
        self.rate = rate
        self.acked = []  # (partition, offset, value, monotonic time)
        self.enqueued = {}  # value -> monotonic time it was handed to the producer
        self.failed = []
        self.seen = []  # (partition, offset, value)
        self.stop_flag = threading.Event()
        self.threads = []
        self.lock = threading.Lock()

    def start(self):
        self.threads = [threading.Thread(target=self._produce, daemon=True),
                        threading.Thread(target=self._consume, daemon=True)]
        for t in self.threads:
            t.start()
        return self

    def _produce(self):
        p = Producer({"bootstrap.servers": self.cluster.bootstrap, "enable.idempotence": True,
                      "acks": "all", "linger.ms": 2, "message.timeout.ms": 120000,
                      "topic.metadata.refresh.interval.ms": 1000,
                      "retry.backoff.ms": 50, "retry.backoff.max.ms": 200})

        def done(err, msg):
            now = time.monotonic()
            with self.lock:
                if err is None:
                    self.acked.append((msg.partition(), msg.offset(), msg.value().decode(), now))
                else:
                    self.failed.append((msg.value().decode(), str(err)))

        seq = 0
        start = time.monotonic()
        while not self.stop_flag.is_set() and seq < self.max_records:
            value = f"r{seq:08d}"
            self.enqueued[value] = time.monotonic()
            try:
                p.produce(self.topic, value=value.encode(), partition=seq % self.partitions,
                          on_delivery=done)
                seq += 1
            except BufferError:
                p.poll(0.05)
                continue
            p.poll(0)
            ahead = seq / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(min(ahead, 0.05))
        p.flush(120)
        self.produced = seq

    def _consume(self):
        c = Consumer({"bootstrap.servers": self.cluster.bootstrap, "group.id": self.group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": True,
                      "auto.commit.interval.ms": 300, "session.timeout.ms": 6000,
                      "topic.metadata.refresh.interval.ms": 1000})
        c.subscribe([self.topic])
        while not self.stop_flag.is_set():
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            with self.lock:
                self.seen.append((m.partition(), m.offset(), m.value().decode()))
        c.close()

    def acks_after(self, t):
        """Acknowledgements of records handed to the producer after `t`."""
        with self.lock:
            return [a for a in self.acked if self.enqueued.get(a[2], 0) > t]

    def wait_acks(self, count, timeout=60):
        """Waits until `count` more records are acknowledged."""
        with self.lock:
            target = len(self.acked) + count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.acked) >= target:
                    return
            time.sleep(0.05)
        raise AssertionError(f"fewer than {count} acknowledgements within {timeout} s; failures: {self.failed[-3:]}")

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(150)


def failover_time(cluster, workload, victim_id, partitions_led):
    """Seconds from now (the kill) to the first acknowledgement, on a partition the victim
    led, of a record produced after the kill."""
    killed_at = time.monotonic()
    cluster.nodes[victim_id].kill9()
    deadline = killed_at + 60
    while time.monotonic() < deadline:
        acks = [a for a in workload.acks_after(killed_at) if a[0] in partitions_led]
        if acks:
            return min(a[3] for a in acks) - killed_at
        time.sleep(0.01)
    raise AssertionError(f"no acknowledgement on partitions {partitions_led} within 60 s of the kill")


def read_all(cluster, topic, partitions, timeout=60, at_least=None):
    """Every record of every partition, from the start to the high watermark.

    `at_least` maps partitions to an offset their high watermark must reach first: a leader
    elected a moment ago may not know the latest offset yet (OFFSET_NOT_AVAILABLE) or, in
    a broker without that rule, may show an old one. Waiting is bounded by `timeout`."""
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "checker",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    out = {}
    deadline = time.monotonic() + timeout
    for p in range(partitions):
        want = (at_least or {}).get(p, 0)
        while True:
            try:
                low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            except KafkaException as e:
                high, error = -1, e
            else:
                error = None
            if high >= want or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert high >= want, (f"partition {p}: the high watermark stayed at {high} (error: {error}), "
                              f"below the acknowledged offset {want - 1}")
        out[p] = {"high": high, "records": []}
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    remaining = {p for p in range(partitions) if out[p]["high"] > 0}
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF and m.offset() >= out[m.partition()]["high"]:
                remaining.discard(m.partition())
            continue
        out[m.partition()]["records"].append((m.offset(), m.value().decode()))
        if m.offset() + 1 >= out[m.partition()]["high"]:
            remaining.discard(m.partition())
    c.close()
    assert not remaining, f"could not read partitions {remaining} to their high watermark"
    return out


def committed(cluster, group, topic, partitions):
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
    c.close()
    return {tp.partition: tp.offset for tp in got}


def check(cluster, workload):
    """The checker. Returns a summary; raises AssertionError with the first violation."""
    acked_end = {}
    for p, o, _, _ in workload.acked:
        if o is not None and o >= 0:
            acked_end[p] = max(acked_end.get(p, 0), o + 1)
    log = read_all(cluster, workload.topic, workload.partitions, at_least=acked_end)
    where = {}
    for p, d in log.items():
        offsets = [o for o, _ in d["records"]]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), f"partition {p}: offsets out of order"
        for o, v in d["records"]:
            assert v not in where, f"{v} stored twice: {where[v]} and {(p, o)}"
            where[v] = (p, o)
    for p, o, v, _ in workload.acked:
        if o is None or o < 0:
            # librdkafka sometimes reports a delivery without its offset (a retried batch
            # answered as a duplicate); the record must still be in its partition.
            assert where.get(v, (None,))[0] == p, f"acknowledged {v} in partition {p} but the log has it at {where.get(v)}"
        else:
            assert where.get(v) == (p, o), (f"acknowledged {v} at {p}/{o} but the log has it at {where.get(v)} "
                                            f"(partition {p} read to {log[p]['high']})")
    # Within a partition, acknowledged records keep the order they were produced in.
    by_partition = {}
    for p, _, v, _ in workload.acked:
        by_partition.setdefault(p, []).append((v, where[v][1]))
    for p, items in by_partition.items():
        items.sort()
        offs = [o for _, o in items]
        assert offs == sorted(offs), f"partition {p}: records stored out of produce order"
    for p, o, v in workload.seen:
        assert where.get(v) == (p, o), f"a consumer saw {v} at {p}/{o}, which is not in the log (it vanished)"
    commits = committed(cluster, workload.group, workload.topic, workload.partitions)
    for p, off in commits.items():
        assert off <= log[p]["high"], f"group committed {off} past the high watermark {log[p]['high']} of partition {p}"
    return {"acked": len(workload.acked), "failed": len(workload.failed), "stored": len(where),
            "seen": len(workload.seen), "committed": commits}


def median(xs):
    return statistics.median(xs)
