"""A three-broker cluster whose inter-broker traffic runs over TLS: clients on a SASL_SSL
listener, replication and transaction markers on an SSL listener with client
certificates, and the metadata log (Raft, registration, heartbeats) on an SSL controller
listener. Each broker's principal is its certificate's subject, a super user."""

import json
import socket
import ssl
import subprocess
import time

from confluent_kafka import Consumer, Producer

import kafka_raw as raw
from certs import Authority, write_identity
from conftest import BIN, free_port

ADMIN_PASSWORD = "admin-secret"


class TlsCluster:
    def __init__(self, root):
        self.root = root
        self.ca = Authority()
        self.ca_file = self.ca.write_ca(root / "ca.pem")
        self.ids = [1, 2, 3]
        self.ports = {i: {n: free_port() for n in ("CLIENT", "BROKER", "CONTROLLER")} for i in self.ids}
        voters = ",".join(f"{i}@127.0.0.1:{self.ports[i]['CONTROLLER']}" for i in self.ids)
        supers = ";".join(["User:admin"] + [f"User:CN=broker-{i},O=Gregor tests" for i in self.ids])
        (root / "admin.pw").write_text(ADMIN_PASSWORD + "\n")
        self.procs, self.logs = {}, {}
        for i in self.ids:
            _, _, pem = write_identity(root, f"broker-{i}", *self.ca.issue(f"broker-{i}", server=True))
            data = root / f"data-{i}"
            subprocess.run([str(BIN), "user", "create", "admin", "--data-dir", str(data), "--mechanism",
                            "SCRAM-SHA-512", "--password-file", str(root / "admin.pw")],
                           check=True, capture_output=True)
            p = self.ports[i]
            (root / f"broker-{i}.toml").write_text(f'''
"node.id" = {i}
"log.dirs" = "{data}"
"listeners" = "CLIENT://127.0.0.1:{p['CLIENT']},BROKER://127.0.0.1:{p['BROKER']},CONTROLLER://127.0.0.1:{p['CONTROLLER']}"
"listener.security.protocol.map" = "CLIENT:SASL_SSL,BROKER:SSL,CONTROLLER:SSL"
"inter.broker.listener.name" = "BROKER"
"controller.listener.names" = "CONTROLLER"
"controller.quorum.voters" = "{voters}"
"ssl.keystore.location" = "{pem}"
"ssl.truststore.location" = "{self.ca_file}"
"ssl.client.auth" = "required"
"sasl.enabled.mechanisms" = "SCRAM-SHA-512"
"authorizer.enabled" = true
"super.users" = "{supers}"
"metrics.listener" = "127.0.0.1:{free_port()}"
"broker.session.timeout.ms" = 2000
"broker.heartbeat.interval.ms" = 300
"replica.fetch.wait.max.ms" = 100
"group.initial.rebalance.delay.ms" = 0
''')

    def start(self, i):
        self.logs[i] = open(self.root / f"broker-{i}.log", "ab")
        self.procs[i] = subprocess.Popen([str(BIN), "broker", "--config", str(self.root / f"broker-{i}.toml")],
                                         stdout=self.logs[i], stderr=self.logs[i])

    def wait_serving(self, ids, timeout=60):
        deadline = time.monotonic() + timeout
        for i in ids:
            while True:
                assert self.procs[i].poll() is None, self.log(i)
                try:
                    socket.create_connection(("127.0.0.1", self.ports[i]["CLIENT"]), timeout=0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"broker {i} did not start serving:\n{self.log(i)}"
                    time.sleep(0.1)

    def log(self, i):
        return (self.root / f"broker-{i}.log").read_text()[-4000:]

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    def bootstrap(self, ids=None):
        return ",".join(f"127.0.0.1:{self.ports[i]['CLIENT']}" for i in (ids or self.ids))

    def conf(self, ids=None, **extra):
        return {"bootstrap.servers": self.bootstrap(ids), "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "admin", "sasl.password": ADMIN_PASSWORD,
                "ssl.ca.location": self.ca_file, **extra}

    def gregor(self, *args):
        props = self.root / "admin.properties"
        props.write_text(f"security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username=admin\n"
                         f"sasl.password={ADMIN_PASSWORD}\nssl.ca.location={self.ca_file}\n")
        live = [i for i in self.ids if self.procs[i].poll() is None]
        r = subprocess.run([str(BIN), "--command-config", str(props), *args, "--bootstrap",
                            f"127.0.0.1:{self.ports[live[0]]['CLIENT']}"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"gregor {args}: {r.stdout}{r.stderr}"
        return r.stdout


def produce(conf, topic, values):
    p = Producer({**conf, "acks": "all", "enable.idempotence": True})
    delivered, errors = [], []
    for v in values:
        p.produce(topic, v, on_delivery=lambda err, m: (errors if err else delivered).append(err or m.value()))
    p.flush(60)
    return delivered, errors


def test_three_brokers_replicate_over_tls(tmp_path):
    c = TlsCluster(tmp_path)
    try:
        for i in c.ids:
            c.start(i)
        c.wait_serving(c.ids)
        c.gregor("topic", "create", "secured", "--partitions", "3", "--replication-factor", "3",
                 "--config", "min.insync.replicas=2")
        first = [f"first-{n}".encode() for n in range(1500)]
        delivered, errors = produce(c.conf(), "secured", first)
        assert (len(delivered), errors) == (1500, [])
        # Every partition's three replicas are in sync: the followers copied over TLS.
        deadline = time.monotonic() + 30
        while True:
            desc = json.loads(c.gregor("topic", "describe", "secured", "--json"))
            isr = [sorted(p["isr"]) for p in desc["partitions"]]
            if all(len(x) == 3 for x in isr) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert all(len(x) == 3 for x in isr), desc
        # The inter-broker and controller listeners take no plaintext.
        for port in (c.ports[1]["BROKER"], c.ports[1]["CONTROLLER"]):
            conn = raw.Conn(f"127.0.0.1:{port}")
            conn.send_raw(raw.frame(18, 0, 1, b""))
            assert conn.recv_frame() is None, f"plaintext answered on {port}"
        # Nor TLS without a certificate from the cluster's CA.
        ctx = ssl.create_default_context(cafile=c.ca_file)
        with socket.create_connection(("127.0.0.1", c.ports[1]["BROKER"]), timeout=10) as s:
            try:
                with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                    t.sendall(raw.frame(18, 0, 1, b""))
                    refused = t.recv(4) == b""
            except (ssl.SSLError, ConnectionResetError):
                refused = True
        assert refused, "the inter-broker listener requires a client certificate"
        # Kill the leader of partition 0: the others take over, through the TLS metadata log.
        leader = desc["partitions"][0]["leader"]
        c.procs[leader].kill()
        c.procs[leader].wait()
        rest = [i for i in c.ids if i != leader]
        second = [f"second-{n}".encode() for n in range(500)]
        delivered, errors = produce(c.conf(rest), "secured", second)
        assert (len(delivered), errors) == (500, [])
        consumer = Consumer(c.conf(rest, **{"group.id": "tls-reader", "auto.offset.reset": "earliest",
                                            "enable.auto.commit": False}))
        consumer.subscribe(["secured"])
        got = set()
        deadline = time.monotonic() + 60
        while len(got) < 2000 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                got.add(m.value())
        consumer.close()
        assert got == set(first) | set(second), f"{len(got)} of 2000"
        assert "the metadata log runs over mutual TLS" in (c.root / f"broker-{rest[0]}.log").read_text()
    finally:
        c.stop_all()
