"""A three-broker cluster whose inter-broker traffic runs over TLS: clients on a SASL_SSL
listener, replication and transaction markers on an SSL listener with client
certificates, and the metadata log (Raft, registration, heartbeats) on an SSL controller
listener. Each broker's principal is its certificate's subject, a super user."""

import json
import os
import socket
import ssl
import struct
import subprocess
import time

from confluent_kafka import Consumer, Producer

import kafka_raw as raw
from certs import Authority, write_identity
from conftest import BIN, free_port

ADMIN_PASSWORD = "admin-secret"


class TlsCluster:
    def __init__(self, root, controller_listener=True):
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
            # Without a controller listener, the metadata log's port is the voters' entry.
            listeners = (f"CLIENT://127.0.0.1:{p['CLIENT']},BROKER://127.0.0.1:{p['BROKER']}"
                         + (f",CONTROLLER://127.0.0.1:{p['CONTROLLER']}" if controller_listener else ""))
            named = '"controller.listener.names" = "CONTROLLER"' if controller_listener else ""
            (root / f"broker-{i}.toml").write_text(f'''
"node.id" = {i}
"log.dirs" = "{data}"
"listeners" = "{listeners}"
"listener.security.protocol.map" = "CLIENT:SASL_SSL,BROKER:SSL,CONTROLLER:SSL"
"inter.broker.listener.name" = "BROKER"
{named}
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


# What the security audit sent to the metadata-log port: a Control Write registering an
# attacker's broker 7, and a Raft Vote from a node that is not a voter.
FORGED_WRITE = json.dumps({"Control": {"Write": [
    {"type": "register_broker", "node_id": 7, "host": "10.6.6.6", "port": 9092}]}}).encode()
FORGED_VOTE = json.dumps({"Vote": {"vote": {"leader_id": {"term": 999, "node_id": 99}, "committed": False},
                                   "last_log_id": None}}).encode()


def metadata_frame(body):
    return struct.pack(">i", len(body)) + body


def answered_on_metadata_port(port, body, ca=None, identity=None):
    """Whether the metadata-log port at `port` answers the frame with a response frame
    (JSON): over plain TCP, or over TLS with `identity` (certificate, key) as the client's
    certificate. A TLS alert or a closed connection is no answer."""
    def read_answer(sock):
        got = b""
        while len(got) < 4 or len(got) < 4 + struct.unpack(">i", got[:4])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            got += chunk
            if len(got) >= 4 and not 0 < struct.unpack(">i", got[:4])[0] < (1 << 20):
                return False  # not a frame length: a TLS record, say
        json.loads(got[4:])
        return True

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        try:
            if ca is None:
                s.sendall(metadata_frame(body))
                return read_answer(s)
            ctx = ssl.create_default_context(cafile=ca)
            ctx.check_hostname = False
            if identity:
                ctx.load_cert_chain(*identity)
            with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                t.sendall(metadata_frame(body))
                return read_answer(t)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError, socket.timeout):
            return False


def broker_ids(c):
    return sorted(b["id"] for b in json.loads(c.gregor("cluster", "status", "--json"))["brokers"])


def test_the_metadata_port_admits_only_brokers_never_a_client_certificate(tmp_path):
    """Audit item 2: over an SSL controller listener, an ordinary client certificate from
    the cluster's CA (not a super user, no ACL) wrote to the metadata log."""
    c = TlsCluster(tmp_path)
    client_key, client_crt, _ = write_identity(tmp_path, "client", *c.ca.issue("client"))
    try:
        for i in c.ids:
            c.start(i)
        c.wait_serving(c.ids)
        # Every broker's port, so that the active controller's is among them.
        for port in (c.ports[i]["CONTROLLER"] for i in c.ids):
            assert not answered_on_metadata_port(port, FORGED_WRITE), "plaintext answered"
            assert not answered_on_metadata_port(port, FORGED_WRITE, ca=c.ca_file), "TLS without a certificate answered"
            assert not answered_on_metadata_port(port, FORGED_WRITE, ca=c.ca_file, identity=(client_crt, client_key)), \
                "a client certificate from the cluster's CA was answered on the metadata log's port"
        assert 7 not in broker_ids(c)
        assert "is not a broker of this cluster" in "".join((tmp_path / f"broker-{i}.log").read_text() for i in c.ids)
    finally:
        c.stop_all()


def test_a_secured_cluster_without_a_controller_listener_secures_its_metadata_port(tmp_path):
    """Audit item 1: SASL_SSL clients, an SSL inter-broker listener and the authorizer, but
    no controller.listener.names: the metadata port took plain frames from anyone."""
    c = TlsCluster(tmp_path, controller_listener=False)
    client_key, client_crt, _ = write_identity(tmp_path, "client", *c.ca.issue("client"))
    try:
        for i in c.ids:
            c.start(i)
        c.wait_serving(c.ids)
        c.gregor("topic", "create", "over-mtls", "--partitions", "1", "--replication-factor", "3")
        delivered, errors = produce(c.conf(), "over-mtls", [b"a", b"b"])
        assert (len(delivered), errors) == (2, [])
        for port, body in ((c.ports[i]["CONTROLLER"], b) for i in c.ids for b in (FORGED_WRITE, FORGED_VOTE)):
            assert not answered_on_metadata_port(port, body), f"plaintext answered: {body[:30]}"
            assert not answered_on_metadata_port(port, body, ca=c.ca_file, identity=(client_crt, client_key)), \
                "a client certificate was admitted"
        assert 7 not in broker_ids(c)
        assert "the metadata log runs over mutual TLS with this broker's certificate" in (tmp_path / "broker-1.log").read_text()
    finally:
        c.stop_all()


def test_a_secured_broker_without_certificates_refuses_an_open_metadata_port(tmp_path):
    data = tmp_path / "data"
    port, inter, raft = free_port(), free_port(), free_port()
    r = subprocess.run([str(BIN), "broker", "--data-dir", str(data),
                        "--node-id", "1", "--controllers", f"1@127.0.0.1:{raft}"],
                       env={**os.environ, "GREGOR_LISTENERS": f"CLIENT://127.0.0.1:{port},BROKER://127.0.0.1:{inter}",
                            "GREGOR_LISTENER_SECURITY_PROTOCOL_MAP": "CLIENT:SASL_PLAINTEXT,BROKER:PLAINTEXT",
                            "GREGOR_INTER_BROKER_LISTENER_NAME": "BROKER",
                            "GREGOR_SASL_ENABLED_MECHANISMS": "SCRAM-SHA-512",
                            "GREGOR_AUTHORIZER_ENABLED": "true"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "would take unauthenticated frames" in r.stderr + r.stdout, r.stderr[-2000:]


def test_an_open_cluster_says_so_and_refuses_raft_from_a_non_voter(tmp_path):
    data = tmp_path / "data"
    port, raft = free_port(), free_port()
    log = open(tmp_path / "broker.log", "wb")
    proc = subprocess.Popen([str(BIN), "broker", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
                             "--node-id", "1", "--controllers", f"1@127.0.0.1:{raft}"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while "registered with the cluster" not in (tmp_path / "broker.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "broker.log").read_text()
            time.sleep(0.1)
        text = (tmp_path / "broker.log").read_text()
        assert "the metadata log's port is unauthenticated" in text
        assert not answered_on_metadata_port(raft, FORGED_VOTE), "a Vote from node 99 was answered"
        time.sleep(0.2)
        assert "not a voter of the metadata log" in (tmp_path / "broker.log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
