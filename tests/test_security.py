"""TLS, SASL (SCRAM-SHA-512, PLAIN) and ACLs, with kafka-python and confluent-kafka on a
broker with four listeners: PLAINTEXT, SASL_SSL, SSL (client certificates required) and
SASL_PLAINTEXT. Users are created offline before the first start, as Kafka's
`kafka-storage format --add-scram` does; ACLs with `gregor acl`."""

import re
import socket
import ssl
import struct
import urllib.request
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import (GroupAuthorizationFailedError, KafkaError as PyKafkaError,
                          TopicAuthorizationFailedError, TransactionalIdAuthorizationFailedError)

import kafka_raw as raw
from certs import Authority, write_identity
from conftest import BIN, free_port

PASSWORDS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}


class SecureBroker:
    def __init__(self, root, extra=""):
        self.root = root
        self.ports = {n: free_port() for n in ("PLAIN", "SASL_SSL", "SSL", "SASL_PLAIN")}
        self.metrics_port = free_port()
        self.ca = Authority()
        self.ca_file = self.ca.write_ca(root / "ca.pem")
        _, _, self.server_pem = write_identity(root, "server", *self.ca.issue("localhost", server=True))
        self.client_key, self.client_crt, _ = write_identity(root, "client", *self.ca.issue("client"))
        self.expired_key, self.expired_crt, _ = write_identity(root, "expired", *self.ca.issue("client", expired=True))
        rogue = Authority("Someone else's CA")
        self.rogue_key, self.rogue_crt, _ = write_identity(root, "rogue", *rogue.issue("client"))
        self.data = root / "data"
        for user, pw in PASSWORDS.items():
            (root / f"{user}.pw").write_text(pw + "\n")
            subprocess.run([str(BIN), "user", "create", user, "--data-dir", str(self.data),
                            "--mechanism", "SCRAM-SHA-512", "--password-file", str(root / f"{user}.pw")],
                           check=True, capture_output=True)
        p = self.ports
        self.config = root / "secure.toml"
        self.config.write_text(f'''
"listeners" = "PLAINTEXT://127.0.0.1:{p['PLAIN']},SASL_SSL://127.0.0.1:{p['SASL_SSL']},SSL://127.0.0.1:{p['SSL']},SASL_PLAINTEXT://127.0.0.1:{p['SASL_PLAIN']}"
"ssl.keystore.type" = "PEM"
"ssl.keystore.location" = "{self.server_pem}"
"ssl.truststore.location" = "{self.ca_file}"
"ssl.client.auth" = "required"
"sasl.enabled.mechanisms" = "SCRAM-SHA-512,PLAIN"
"authorizer.enabled" = true
"super.users" = "User:admin"
"log.dirs" = "{self.data}"
"metrics.listener" = "127.0.0.1:{self.metrics_port}"
"group.initial.rebalance.delay.ms" = 0
"offsets.topic.replication.factor" = 1
{extra}
''')
        self.log_path = root / "broker.log"
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(BIN), "broker", "--config", str(self.config)],
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        for port in self.ports.values():
            while True:
                assert self.proc.poll() is None, self.log_path.read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "listeners did not open:\n" + self.log_path.read_text()
                    time.sleep(0.05)
        return self

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.log.close()
            self.proc = None

    def addr(self, name):
        return f"127.0.0.1:{self.ports[name]}"

    def command_config(self, user):
        path = self.root / f"{user}.properties"
        path.write_text(f"security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
                        f"sasl.username={user}\nsasl.password={PASSWORDS[user]}\nssl.ca.location={self.ca_file}\n")
        return str(path)

    def gregor(self, user, *args, check=True):
        r = subprocess.run([str(BIN), "--command-config", self.command_config(user), *args,
                            "--bootstrap", self.addr("SASL_SSL")], capture_output=True, text=True, timeout=60)
        if check:
            assert r.returncode == 0, f"gregor {' '.join(args)}: {r.stdout}{r.stderr}"
        return r

    def confluent(self, user, password=None, **extra):
        return {"bootstrap.servers": self.addr("SASL_SSL"), "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
                "sasl.password": password or PASSWORDS[user], "ssl.ca.location": self.ca_file, **extra}

    def kafka_python(self, user, password=None):
        return dict(bootstrap_servers=self.addr("SASL_SSL"), security_protocol="SASL_SSL",
                    sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=user,
                    sasl_plain_password=password or PASSWORDS[user], ssl_cafile=self.ca_file,
                    ssl_check_hostname=True)


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    b = SecureBroker(tmp_path_factory.mktemp("secure")).start()
    # alice: produce and consume "alice-*" topics, in group alice-g, with transactional id alice-tx.
    b.gregor("admin", "topic", "create", "alice-t", "--partitions", "2")
    b.gregor("admin", "topic", "create", "secret", "--partitions", "1")
    b.gregor("admin", "acl", "add", "--principal", "User:alice", "--topic", "alice-", "--prefixed",
             "--operation", "read", "--operation", "write", "--operation", "describe")
    b.gregor("admin", "acl", "add", "--principal", "User:alice", "--group", "alice-g", "--operation", "read")
    b.gregor("admin", "acl", "add", "--principal", "User:alice", "--transactional-id", "alice-tx",
             "--operation", "write")
    # The certificate's principal may read and write alice-t and use group cert-g.
    b.gregor("admin", "acl", "add", "--principal", "User:CN=client,O=Gregor tests", "--topic", "alice-t",
             "--operation", "read", "--operation", "write")
    b.gregor("admin", "acl", "add", "--principal", "User:CN=client,O=Gregor tests", "--group", "cert-g",
             "--operation", "read")
    yield b
    b.stop()


def refused(conf, expected_code=None):
    """Produces one record that must not be delivered: waits until the client reports the
    refusal (expected_code if given); returns the client's errors."""
    errors, results = [], []
    p = Producer({**conf, "error_cb": lambda e: errors.append(e), "message.timeout.ms": 15000})
    p.produce("alice-t", b"x", on_delivery=lambda err, m: results.append(err))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not results:
        p.poll(0.2)
        if any(expected_code is None or e.code() == expected_code for e in errors):
            break
    assert not results or results[0] is not None, f"delivered: {results}"
    if expected_code is not None:
        assert any(e.code() == expected_code for e in errors), errors
    p.purge()
    p.flush(1)
    return errors


def deliver(conf, topic, n, prefix="m"):
    """Produces n records with confluent-kafka; returns (delivered, errors)."""
    p = Producer(conf)
    delivered, errors = [], []

    def report(err, msg):
        (errors if err else delivered).append(err or msg.value())

    for i in range(n):
        p.produce(topic, f"{prefix}-{i}".encode(), on_delivery=report)
    p.flush(30)
    return delivered, errors


def consume_all(conf, topic, want, timeout=30):
    """Consumes until `want` records (a count, or a set of values all seen)."""
    c = Consumer({**conf, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got, errors = [], []
    deadline = time.monotonic() + timeout

    def done():
        return want <= set(got) if isinstance(want, set) else len(got) >= want

    while not done() and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            errors.append(m.error())
            if m.error().fatal() or m.error().code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                                         KafkaError.GROUP_AUTHORIZATION_FAILED):
                break
            continue
        got.append(m.value())
    c.close()
    return got, errors


def test_scram_users_produce_and_consume_where_allowed(secure):
    delivered, errors = deliver(secure.confluent("alice"), "alice-t", 200, "confluent")
    assert (len(delivered), errors) == (200, [])
    got, errors = consume_all(secure.confluent("alice", **{"group.id": "alice-g"}), "alice-t", 200)
    assert sorted(got) == sorted(delivered), errors
    # kafka-python over the same listener and mechanism.
    producer = KafkaProducer(**secure.kafka_python("alice"))
    futures = [producer.send("alice-t", f"kp-{i}".encode()) for i in range(50)]
    placed = {(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)}
    producer.close()
    assert len(placed) == 50
    consumer = KafkaConsumer("alice-t", group_id="alice-g", auto_offset_reset="earliest",
                             consumer_timeout_ms=10000, **secure.kafka_python("alice"))
    values = {m.value for m in consumer}
    consumer.close()
    assert {f"kp-{i}".encode() for i in range(50)} <= values


def test_wrong_password_and_unknown_user_are_refused(secure):
    for user, pw in (("alice", "not-her-password"), ("mallory", "whatever")):
        with pytest.raises(PyKafkaError):
            KafkaProducer(**{**secure.kafka_python("alice"), "sasl_plain_username": user,
                             "sasl_plain_password": pw}, max_block_ms=5000, bootstrap_timeout_ms=5000)
        refused({**secure.confluent("alice", pw), "sasl.username": user}, KafkaError._AUTHENTICATION)
    # The first failure from this address is logged with its reason; the others within
    # log.refusals.interval.ms are counted, and summed up in one line at its end.
    log = secure.log_path.read_text()
    assert "authentication failed" in log and "alice" in log
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{secure.metrics_port}/metrics", timeout=10).read().decode()
    failures = re.search(r'gregor_connections_closed_total\{reason="authentication_failed"\} (\d+)', metrics)
    assert failures and int(failures.group(1)) >= 4, metrics


def test_plain_checks_the_stored_scram_credential(secure):
    conf = {"bootstrap.servers": secure.addr("SASL_PLAIN"), "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": PASSWORDS["alice"]}
    delivered, errors = deliver(conf, "alice-t", 10, "plain")
    assert (len(delivered), errors) == (10, [])
    refused({**conf, "sasl.password": "wrong"}, KafkaError._AUTHENTICATION)


def ssl_conf(secure, key, crt, **extra):
    return {"bootstrap.servers": secure.addr("SSL"), "security.protocol": "SSL",
            "ssl.ca.location": secure.ca_file, "ssl.key.location": key,
            "ssl.certificate.location": crt, **extra}


def test_client_certificates_authenticate_and_bad_ones_are_refused(secure):
    delivered, errors = deliver(ssl_conf(secure, secure.client_key, secure.client_crt), "alice-t", 20, "cert")
    assert (len(delivered), errors) == (20, [])
    producer = KafkaProducer(bootstrap_servers=secure.addr("SSL"), security_protocol="SSL",
                             ssl_cafile=secure.ca_file, ssl_certfile=secure.client_crt,
                             ssl_keyfile=secure.client_key)
    assert producer.send("alice-t", b"kp-cert").get(timeout=30).offset >= 0
    producer.close()
    consumer = KafkaConsumer("alice-t", group_id="cert-g", auto_offset_reset="earliest", consumer_timeout_ms=10000,
                             enable_auto_commit=False,
                             bootstrap_servers=secure.addr("SSL"), security_protocol="SSL", ssl_cafile=secure.ca_file,
                             ssl_certfile=secure.client_crt, ssl_keyfile=secure.client_key)
    assert b"kp-cert" in {m.value for m in consumer}
    consumer.close()
    got, errors = consume_all(ssl_conf(secure, secure.client_key, secure.client_crt, **{"group.id": "cert-g"}),
                              "alice-t", set(delivered))
    assert set(delivered) <= set(got), errors
    # No certificate, an expired one, one from another CA: the handshake fails.
    for key, crt in ((None, None), (secure.expired_key, secure.expired_crt), (secure.rogue_key, secure.rogue_crt)):
        ctx = ssl.create_default_context(cafile=secure.ca_file)
        if key:
            ctx.load_cert_chain(crt, key)
        with socket.create_connection(("127.0.0.1", secure.ports["SSL"]), timeout=10) as s:
            with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
                with ctx.wrap_socket(s, server_hostname="localhost") as t:
                    # TLS 1.3 reports a refused client certificate on the first read.
                    t.sendall(raw.frame(18, 0, 1, b""))
                    if not t.recv(4):
                        raise ConnectionResetError("closed")
        kp = dict(bootstrap_servers=secure.addr("SSL"), security_protocol="SSL", ssl_cafile=secure.ca_file,
                  max_block_ms=3000, bootstrap_timeout_ms=3000)
        if key:
            kp.update(ssl_certfile=crt, ssl_keyfile=key)
        with pytest.raises(PyKafkaError):
            KafkaProducer(**kp).send("alice-t", b"x").get(timeout=10)
        conf = {"bootstrap.servers": secure.addr("SSL"), "security.protocol": "SSL",
                "ssl.ca.location": secure.ca_file}
        if key:
            conf.update({"ssl.key.location": key, "ssl.certificate.location": crt})
        assert refused(conf), "the client saw the refusal"


def test_unauthorized_requests_get_kafka_authorization_errors(secure):
    # Produce to a topic alice may not write.
    delivered, errors = deliver(secure.confluent("alice", **{"message.timeout.ms": 10000}), "secret", 1)
    assert delivered == [] and [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    producer = KafkaProducer(**secure.kafka_python("alice"), max_block_ms=10000)
    with pytest.raises(TopicAuthorizationFailedError):
        producer.send("secret", b"x").get(timeout=30)
    producer.close()
    # Fetch from it (bob has no ACL at all; his group is not his either).
    got, errors = consume_all(secure.confluent("alice", **{"group.id": "alice-g"}), "secret", 1, timeout=15)
    assert got == [] and any(e.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED for e in errors), errors
    # Join a group alice may not read.
    got, errors = consume_all(secure.confluent("alice", **{"group.id": "other-g"}), "alice-t", 1, timeout=15)
    assert got == [] and any(e.code() == KafkaError.GROUP_AUTHORIZATION_FAILED for e in errors), errors
    consumer = KafkaConsumer("alice-t", group_id="other-g", **secure.kafka_python("alice"))
    with pytest.raises(GroupAuthorizationFailedError):
        for _ in range(20):
            consumer.poll(timeout_ms=500)
    consumer.close()
    # Transactions with an id alice may not use.
    p = Producer(secure.confluent("alice", **{"transactional.id": "bob-tx"}))
    with pytest.raises(KafkaException) as e:
        p.init_transactions(15)
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    kp = None
    with pytest.raises(TransactionalIdAuthorizationFailedError):
        kp = KafkaProducer(**secure.kafka_python("alice"), transactional_id="bob-tx")
        kp.init_transactions()
    # Her own transactional id works.
    p = Producer(secure.confluent("alice", **{"transactional.id": "alice-tx"}))
    p.init_transactions(15)
    p.begin_transaction()
    p.produce("alice-t", b"in-a-transaction")
    p.commit_transaction(15)


def test_a_deny_overrides_an_allow(secure):
    secure.gregor("admin", "topic", "create", "alice-denied")
    delivered, errors = deliver(secure.confluent("alice"), "alice-denied", 1)
    assert (len(delivered), errors) == (1, [])
    secure.gregor("admin", "acl", "add", "--deny", "--principal", "User:alice", "--topic", "alice-denied",
                  "--operation", "write")
    delivered, errors = deliver(secure.confluent("alice", **{"message.timeout.ms": 10000}), "alice-denied", 1)
    assert delivered == [] and [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    # The deny is on WRITE only: she still reads it.
    got, errors = consume_all(secure.confluent("alice", **{"group.id": "alice-g"}), "alice-denied", 1)
    assert len(got) == 1, errors
    listed = secure.gregor("admin", "acl", "list", "--topic", "alice-denied", "--json").stdout
    assert '"DENY"' in listed and '"WRITE"' in listed
    removed = secure.gregor("admin", "acl", "remove", "--deny", "--principal", "User:alice",
                            "--topic", "alice-denied", "--operation", "write").stdout
    assert "1 ACL(s) removed" in removed
    delivered, errors = deliver(secure.confluent("alice"), "alice-denied", 1)
    assert (len(delivered), errors) == (1, [])


def test_metadata_lists_only_describable_topics(secure):
    admin = KafkaAdminClient(**secure.kafka_python("alice"))
    topics = set(admin.list_topics())
    admin.close()
    assert "alice-t" in topics and "secret" not in topics
    admin = KafkaAdminClient(**secure.kafka_python("admin"))
    assert {"alice-t", "secret"} <= set(admin.list_topics())
    admin.close()


def test_users_are_managed_online(secure):
    pw = secure.root / "carol.pw"
    pw.write_text("carol-secret\n")
    secure.gregor("admin", "user", "create", "carol", "--password-file", str(pw), "--mechanism", "SCRAM-SHA-512")
    listed = secure.gregor("admin", "user", "list", "--json").stdout
    assert '"carol"' in listed and '"alice"' in listed and "secret" not in listed
    secure.gregor("admin", "acl", "add", "--principal", "User:carol", "--topic", "alice-t", "--operation", "write")
    delivered, errors = deliver(secure.confluent("alice", "carol-secret", **{"sasl.username": "carol"}), "alice-t", 1)
    assert (len(delivered), errors) == (1, [])
    # alice may not manage users or ACLs: CLUSTER_AUTHORIZATION_FAILED, exit 1.
    r = secure.gregor("alice", "user", "list", check=False)
    assert r.returncode == 1 and "ClusterAuthorizationFailed" in r.stderr
    r = secure.gregor("alice", "acl", "add", "--principal", "User:alice", "--cluster", "--operation", "alter",
                      check=False)
    assert r.returncode == 1 and "ClusterAuthorizationFailed" in r.stderr
    secure.gregor("admin", "user", "delete", "carol")
    assert '"carol"' not in secure.gregor("admin", "user", "list", "--json").stdout
    refused({**secure.confluent("alice", "carol-secret"), "sasl.username": "carol"}, KafkaError._AUTHENTICATION)


def sasl_plain(conn, user, password, correlation=1):
    """SaslHandshake v1 (PLAIN) then SaslAuthenticate v1; returns (error, session_lifetime_ms)."""
    conn.send_raw(raw.frame(17, 1, correlation, raw.string("PLAIN")))
    r = raw.Reader(conn.recv_frame())
    r.take(">i")
    assert r.take(">h") == 0, "handshake accepted"
    conn.send_raw(raw.frame(36, 1, correlation + 1, raw.nbytes(b"\0" + user.encode() + b"\0" + password.encode())))
    frame_ = conn.recv_frame()
    if frame_ is None:
        return None, None
    r = raw.Reader(frame_)
    r.take(">i")
    error = r.take(">h")
    r.string()
    r.nbytes()
    return error, r.take(">q")


def test_sessions_expire_unless_the_client_reauthenticates(tmp_path):
    b = SecureBroker(tmp_path, extra='"connections.max.reauth.ms" = 1500').start()
    try:
        addr = b.addr("SASL_PLAIN")
        conn = raw.Conn(addr)
        error, lifetime = sasl_plain(conn, "alice", PASSWORDS["alice"])
        assert (error, lifetime) == (0, 1500)
        assert "alice-t" in raw.metadata_v1(conn, ["alice-t"]), "served while the session lasts"
        time.sleep(1.0)
        # Re-authenticating on the same connection (KIP-368) extends the session.
        assert sasl_plain(conn, "alice", PASSWORDS["alice"], correlation=10) == (0, 1500)
        time.sleep(0.8)
        assert "alice-t" in raw.metadata_v1(conn, ["alice-t"]), "still served: past the first session's end"
        time.sleep(1.0)
        conn.send_raw(raw.frame(3, 1, 99, raw.array([])))
        assert conn.recv_frame() is None, "closed once the session ended"
        # Re-authenticating as someone else is refused.
        conn = raw.Conn(addr)
        assert sasl_plain(conn, "alice", PASSWORDS["alice"])[0] == 0
        assert sasl_plain(conn, "bob", PASSWORDS["bob"], correlation=10)[0] == 58
        # librdkafka re-authenticates by itself and keeps producing across sessions.
        conf = {"bootstrap.servers": addr, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": "admin", "sasl.password": PASSWORDS["admin"]}
        p = Producer(conf)
        results = []
        for i in range(8):
            p.produce("reauth", f"{i}".encode(), on_delivery=lambda err, m: results.append(err))
            p.flush(10)
            time.sleep(0.5)
        assert results == [None] * 8
    finally:
        b.stop()


def test_garbage_before_and_during_authentication_closes_only_that_connection(secure):
    # Before the TLS handshake.
    with socket.create_connection(("127.0.0.1", secure.ports["SASL_SSL"]), timeout=10) as s:
        s.sendall(b"\x00\x00\x00\x10garbage-garbage!" * 4)
        s.settimeout(10)
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"\x00\x00"), "no Kafka answer to garbage"
    # A Kafka request before authenticating on a SASL listener.
    conn = raw.Conn(secure.addr("SASL_PLAIN"))
    conn.send_raw(raw.frame(3, 1, 1, raw.array([])))
    assert conn.recv_frame() is None
    # Garbage inside the SASL exchange: SCRAM messages that are not SCRAM.
    payloads = (b"\xff\xfe\x00garbage", b"n,,n=alice", b"", b"n,,n=alice,r=" + b"x" * 5000)
    for i, payload in enumerate(payloads):
        # Each from its own address, so the growing delay after failures stays short.
        conn = conn_from(secure.ports["SASL_PLAIN"], f"127.0.1.{i + 1}")
        conn.send_raw(raw.frame(17, 1, 1, raw.string("SCRAM-SHA-512")))
        r = raw.Reader(conn.recv_frame())
        r.take(">i")
        assert r.take(">h") == 0
        conn.send_raw(raw.frame(36, 1, 2, raw.nbytes(payload)))
        answer = conn.recv_frame()
        if answer is not None and payload.startswith(b"n,,n=alice,r=x"):
            answer = None  # a long nonce is refused like any malformed message
        if answer is not None:
            r = raw.Reader(answer)
            r.take(">i")
            assert r.take(">h") == 58, "SASL_AUTHENTICATION_FAILED"
            assert conn.recv_frame() is None, "then the connection closes"
    # A frame too large to be a SASL message before authenticating.
    conn = raw.Conn(secure.addr("SASL_PLAIN"))
    conn.send_raw(struct.pack(">i", 50 << 20) + b"\x00" * 64)
    assert conn.recv_frame() is None
    # The broker still serves everyone.
    delivered, errors = deliver(secure.confluent("alice"), "alice-t", 5, "after-garbage")
    assert (len(delivered), errors) == (5, [])


def conn_from(port, source):
    """A raw connection to the broker's `port` from the loopback address `source`."""
    conn = raw.Conn.__new__(raw.Conn)
    conn.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return conn


def test_repeated_failures_from_one_address_are_slowed_down(secure):
    # From an address of its own (127.0.0.3), so other tests' failures do not count.
    waits = []
    for _ in range(4):
        conn = conn_from(secure.ports["SASL_PLAIN"], "127.0.0.3")
        started = time.monotonic()
        error, _ = sasl_plain(conn, "alice", "wrong")
        waits.append(time.monotonic() - started)
        assert error == 58
    assert waits[-1] > waits[0] * 2 and waits[-1] >= 0.4, waits


def test_plaintext_listener_is_anonymous_and_denied(secure):
    errors = []
    p = Producer({"bootstrap.servers": secure.addr("PLAIN"), "message.timeout.ms": 5000,
                  "error_cb": lambda e: errors.append(e)})
    results = []
    p.produce("alice-t", b"x", on_delivery=lambda err, m: results.append(err))
    p.flush(10)
    assert results and results[0] is not None
    assert results[0].code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._MSG_TIMED_OUT), results


def test_certificates_are_reloaded_without_a_restart(tmp_path):
    b = SecureBroker(tmp_path).start()
    try:
        def handshake(cafile):
            ctx = ssl.create_default_context(cafile=cafile)
            with socket.create_connection(("127.0.0.1", b.ports["SASL_SSL"]), timeout=10) as s:
                with ctx.wrap_socket(s, server_hostname="localhost") as t:
                    return t.getpeercert()["serialNumber"]

        before = handshake(b.ca_file)
        # A new CA and a new server certificate, written over the keystore in place.
        new_ca = Authority("Gregor test CA, second")
        new_ca_file = new_ca.write_ca(tmp_path / "ca2.pem")
        _, _, pem = write_identity(tmp_path, "server2", *new_ca.issue("localhost", server=True))
        (tmp_path / "server.pem").write_bytes((tmp_path / "server2.pem").read_bytes())
        deadline = time.monotonic() + 10
        while True:
            try:
                after = handshake(new_ca_file)
                break
            except ssl.SSLError:
                assert time.monotonic() < deadline, "the new certificate was not served:\n" + b.log_path.read_text()
                time.sleep(0.3)
        assert after != before
        with pytest.raises(ssl.SSLError):
            handshake(b.ca_file)
        assert "TLS certificates reloaded" in b.log_path.read_text()
        # A broken keystore is not loaded: the broker keeps serving the last good one.
        (tmp_path / "server.pem").write_text("not a certificate")
        time.sleep(1.5)
        assert handshake(new_ca_file) == after
        assert "cannot be loaded" in b.log_path.read_text()
    finally:
        b.stop()


def test_debian_kcat_speaks_sasl_ssl_with_scram(secure):
    """Debian's kcat (librdkafka 2.0.2), an old client, over SASL_SSL with SCRAM-SHA-512."""
    import shutil
    kcat = shutil.which("kcat")
    assert kcat, "kcat is installed by scripts/test.sh"
    common = ["-b", secure.addr("SASL_SSL"), "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=SCRAM-SHA-512",
              "-X", "sasl.username=alice", "-X", f"sasl.password={PASSWORDS['alice']}", "-X",
              f"ssl.ca.location={secure.ca_file}"]
    secure.gregor("admin", "topic", "create", "alice-kcat")
    lines = [f"kcat-{i}" for i in range(20)]
    subprocess.run([kcat, *common, "-P", "-t", "alice-kcat"], input="\n".join(lines) + "\n", text=True,
                   check=True, timeout=60)
    out = subprocess.run([kcat, *common, "-C", "-t", "alice-kcat", "-o", "beginning", "-e", "-q"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == sorted(lines)
    bad = subprocess.run([kcat, *common[:-4], "-X", "sasl.password=wrong", "-X", f"ssl.ca.location={secure.ca_file}",
                          "-L", "-m", "15"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "Authentication" in bad.stderr + bad.stdout


def test_reauthentication_keeps_the_mechanism(secure):
    """Audit item 5: a connection authenticated with one mechanism re-authenticated with
    another for the same user; Kafka refuses that."""
    conn = raw.Conn(secure.addr("SASL_PLAIN"))
    try:
        assert sasl_plain(conn, "alice", PASSWORDS["alice"])[0] == 0
        conn.send_raw(raw.frame(17, 1, 5, raw.string("SCRAM-SHA-512")))
        r = raw.Reader(conn.recv_frame())
        r.take(">i")
        assert r.take(">h") == 34, "a SaslHandshake for another mechanism is ILLEGAL_SASL_STATE"
        # The same mechanism again is accepted, and the session goes on.
        assert sasl_plain(conn, "alice", PASSWORDS["alice"], correlation=10)[0] == 0
        assert "alice-t" in raw.metadata_v1(conn, ["alice-t"])
    finally:
        conn.close()


def test_credential_files_are_private_and_tightened_at_start(tmp_path):
    """Audit item 5: the metadata log and bootstrap-records.jsonl, which hold every user's
    salted SCRAM keys, were 0644 under 0755 directories."""
    import os
    import stat
    b = SecureBroker(tmp_path)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
    records = b.data / "bootstrap-records.jsonl"
    assert (mode(b.data), mode(records)) == (0o700, 0o600)
    # As an older version (or an operator) left them.
    os.chmod(b.data, 0o755)
    os.chmod(records, 0o644)
    b.start()
    try:
        metadata = b.data / "__cluster_metadata"
        deadline = time.monotonic() + 10
        while not any(metadata.rglob("*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        files = [p for p in metadata.rglob("*") if p.is_file()]
        assert files, "the metadata log was written"
        assert (mode(b.data), mode(metadata)) == (0o700, 0o700)
        # Applied at the first start, then removed; if still there, private.
        assert not records.exists() or mode(records) == 0o600
        wrong = {str(p): oct(mode(p)) for p in metadata.rglob("*")
                 if mode(p) != (0o700 if p.is_dir() else 0o600)}
        assert wrong == {}
        assert "made it and its credential files private" in b.log_path.read_text()
    finally:
        b.stop()


def test_the_metrics_endpoint_can_require_tls_and_a_password(tmp_path):
    """Audit item 5: the metrics port served every topic and group name, offsets and lag
    to anyone, with no option for authentication or TLS."""
    import base64
    import urllib.error
    import urllib.request
    port = free_port()
    (tmp_path / "metrics.pw").write_text("scrape-secret\n")
    b = SecureBroker(tmp_path, extra=f'''
"metrics.listener" = "127.0.0.1:{port}"
"metrics.ssl.enable" = true
"metrics.basic.auth.user" = "prometheus"
"metrics.basic.auth.password.file" = "{tmp_path / 'metrics.pw'}"
''')
    # The extra settings come after the default metrics.listener: keep the last one.
    text = b.config.read_text().splitlines()
    first = next(i for i, l in enumerate(text) if l.startswith('"metrics.listener"'))
    b.config.write_text("\n".join(text[:first] + text[first + 1:]) + "\n")
    b.start()
    try:
        ctx = ssl.create_default_context(cafile=b.ca_file)
        ctx.check_hostname = False
        url = f"https://127.0.0.1:{port}/metrics"

        def get(user=None, password=None, context=ctx, target=url):
            req = urllib.request.Request(target)
            if user is not None:
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                req.add_header("Authorization", f"Basic {token}")
            try:
                with urllib.request.urlopen(req, context=context, timeout=10) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        deadline = time.monotonic() + 10
        while True:
            try:
                status, body = get("prometheus", "scrape-secret")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert status == 200 and "gregor_" in body
        assert get()[0] == 401, "no credentials"
        assert get("prometheus", "wrong")[0] == 401, "a wrong password"
        assert get("admin", "scrape-secret")[0] == 401, "another user"
        # Plain HTTP to the TLS port gets no metrics.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(10)
            try:
                answer = s.recv(65536)
            except ConnectionResetError:
                answer = b""
            assert b"gregor_" not in answer
    finally:
        b.stop()
