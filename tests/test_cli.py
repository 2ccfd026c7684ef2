"""The `gregor` command line against the real broker: every admin and data command, their
tables, `--json` output, exit codes, `--dry-run`, configuration layering, the generated
configuration reference, and the README's newcomer path on a fresh clone."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.partitioner.default import murmur2


def java_partition(key, n):
    """The Java client's (and kafka-python's) partition for a key, computed by kafka-python."""
    return (murmur2(key) & 0x7FFFFFFF) % n

from conftest import BIN, ROOT


def gregor(*args, input=None, timeout=60, env=None):
    """Runs `gregor ARGS`; returns (exit code, stdout, stderr)."""
    p = subprocess.run([str(BIN), *map(str, args)], input=input, capture_output=True,
                       text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def ok(*args, **kw):
    code, out, err = gregor(*args, **kw)
    assert code == 0, f"gregor {' '.join(map(str, args))} exited {code}:\n{err}"
    return out


def ok_json(*args, **kw):
    return json.loads(ok(*args, "--json", **kw))


def test_topic_commands(broker):
    b = ("--bootstrap", broker.bootstrap)
    created = ok_json("topic", "create", "orders", "--partitions", 3, "--config", "retention.ms=3600000", *b)
    assert created == {"topic": "orders", "partitions": 3, "replication_factor": 1, "created": True}
    # Exists already: exit 1 naming the fix; accepted with --if-not-exists.
    code, _, err = gregor("topic", "create", "orders", "--partitions", 3, *b)
    assert code == 1 and "TopicAlreadyExists" in err and "--if-not-exists" in err
    again = ok_json("topic", "create", "orders", "--if-not-exists", *b)
    assert again["created"] is False and again["partitions"] == 3
    # Default partition count from the broker (num.partitions = 1).
    assert ok_json("topic", "create", "audit", *b)["partitions"] == 1

    table = ok("topic", "list", *b)
    assert re.search(r"^orders\s+3\s+1$", table, re.M), table
    listed = {t["topic"]: t for t in ok_json("topic", "list", *b)}
    assert set(listed) == {"orders", "audit"}
    assert "__consumer_offsets" not in listed

    d = ok_json("topic", "describe", "orders", *b)
    assert [p["partition"] for p in d["partitions"]] == [0, 1, 2]
    assert all(p["leader"] == 0 and p["isr"] == [0] for p in d["partitions"])
    assert {"name": "retention.ms", "value": "3600000", "source": "topic"} in d["configs"]
    assert "retention.ms  3600000  topic" in ok("topic", "describe", "orders", *b)

    ok("topic", "alter-config", "orders", "--set", "retention.ms=1000", "--set", "cleanup.policy=compact", *b)
    configs = {c["name"]: c["value"] for c in ok_json("topic", "describe", "orders", *b)["configs"]}
    assert configs["retention.ms"] == "1000" and configs["cleanup.policy"] == "compact"
    ok("topic", "alter-config", "orders", "--delete", "cleanup.policy", *b)
    configs = {c["name"]: c["value"] for c in ok_json("topic", "describe", "orders", *b)["configs"]}
    assert "cleanup.policy" not in configs
    code, _, err = gregor("topic", "alter-config", "orders", "--set", "retention.ms=soon", *b)
    assert code == 1 and "retention.ms" in err and "integer" in err
    code, _, err = gregor("topic", "alter-config", "orders", "--set", "retention.ms", *b)
    assert code == 2 and "KEY=VALUE" in err

    assert ok_json("topic", "add-partitions", "orders", "--total", 5, *b) == {"topic": "orders", "partitions": 5}
    assert len(ok_json("topic", "describe", "orders", *b)["partitions"]) == 5

    code, _, err = gregor("topic", "describe", "missing", *b)
    assert code == 1 and "UnknownTopicOrPartition" in err
    code, _, err = gregor("topic", "delete", "audit", "missing", *b)
    assert code == 1 and "deleted audit" in err and "--if-exists" in err
    assert ok_json("topic", "delete", "orders", "missing", "--if-exists", *b) == [
        {"topic": "orders", "deleted": True}, {"topic": "missing", "deleted": False}]
    assert ok_json("topic", "list", *b) == []


def test_exit_codes_for_usage_and_unreachable_broker(broker):
    code, _, err = gregor("topic", "list", "--bootstrap", "127.0.0.1:1")
    assert code == 3 and "cannot connect to 127.0.0.1:1" in err and "--bootstrap" in err
    code, _, err = gregor("topic", "list", "--no-such-flag")
    assert code == 2
    code, _, err = gregor("produce", "t", "--compression", "brotli", "--bootstrap", broker.bootstrap)
    assert code == 2 and "gzip" in err
    code, _, err = gregor("consume", "t", "--isolation", "serializable", "--bootstrap", broker.bootstrap)
    assert code == 2 and "read_committed" in err
    code, _, err = gregor("group", "reset-offsets", "g", "--topic", "t", "--bootstrap", broker.bootstrap)
    assert code == 2  # no --to-* given


def test_produce_and_consume(broker):
    b = ("--bootstrap", broker.bootstrap)
    ok("topic", "create", "events", "--partitions", 4, *b)
    keys = [f"user-{i}" for i in range(40)]
    lines = "".join(f"{k}|value-{i}\n" for i, k in enumerate(keys))
    produced = ok_json("produce", "events", "--key-separator", "|", "--header", "source=cli",
                       "--header", "kind=test", "--compression", "lz4", *b, input=lines)
    assert produced["records"] == 40
    assert sum(p["records"] for p in produced["partitions"]) == 40

    # Keys land where kafka-python (the Java client's murmur2) puts them.
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    from kafka import TopicPartition
    consumer.assign([TopicPartition("events", p) for p in range(4)])
    seen = {}
    for m in consumer:
        seen[m.key.decode()] = (m.partition, m.value.decode(), dict(m.headers))
        if len(seen) == 40:
            break
    consumer.close()
    assert len(seen) == 40
    for i, k in enumerate(keys):
        part, value, headers = seen[k]
        assert part == java_partition(k.encode(), 4), k
        assert value == f"value-{i}"
        assert headers == {"source": b"cli", "kind": b"test"}

    # kcat-style format over every record, in order within each partition.
    out = ok("consume", "events", "--from-beginning", "--exit", "--format", "%p %o %k=%s %h\\n", *b)
    rows = [line.split(" ") for line in out.splitlines()]
    assert len(rows) == 40
    for p in range(4):
        offsets = [int(r[1]) for r in rows if r[0] == str(p)]
        assert offsets == list(range(len(offsets)))
    assert all(r[3] == "source=cli,kind=test" for r in rows)
    assert {r[2] for r in rows} == {f"{k}=value-{i}" for i, k in enumerate(keys)}

    # --partition, --offset, --count, and JSON lines.
    p0 = [r for r in rows if r[0] == "0"]
    recs = [json.loads(line) for line in ok("consume", "events", "--partition", 0, "--offset", 1,
                                            "--count", 2, "--json", *b).splitlines()]
    assert [r["offset"] for r in recs] == [1, 2]
    assert f"{recs[0]['key']}={recs[0]['value']}" == p0[1][2]
    # -N: the last N records of the partition.
    last = ok("consume", "events", "--partition", 0, "--offset", -1, "--exit", "--format", "%o\\n", *b)
    assert last.split() == [str(len(p0) - 1)]

    # A file, an explicit partition, and records a Python client produced.
    f = broker.data_dir.parent / "lines.txt"
    f.write_text("one\ntwo\nthree\n")
    r = ok_json("produce", "events", "--file", f, "--partition", 3, *b)
    assert r["partitions"] == [{"partition": 3, "records": 3, "first_offset": len([x for x in rows if x[0] == "3"]),
                                "last_offset": len([x for x in rows if x[0] == "3"]) + 2}]
    out = ok("consume", "events", "--partition", 3, "--offset", -3, "--exit", *b)
    assert out.splitlines() == ["one", "two", "three"]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    producer.send("events", b"from-python", partition=2).get(timeout=10)
    producer.close()
    out = ok("consume", "events", "--partition", 2, "--offset", "-1", "--exit", "--format", "%s|%K\\n", *b)
    assert out == "from-python|-1\n"

    # acks=0: no answer comes; the records still land.
    assert ok_json("produce", "events", "--partition", 1, "--acks", "0", *b, input="fire\nforget\n")["records"] == 2
    deadline = time.monotonic() + 10
    while True:
        tail = ok("consume", "events", "--partition", 1, "--offset", -2, "--exit", *b).splitlines()
        if tail == ["fire", "forget"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert tail == ["fire", "forget"]

    code, _, err = gregor("topic", "create", "wide", "--replication-factor", 2, *b)
    assert code == 1 and "InvalidReplicationFactor" in err and "number of brokers" in err
    code, _, err = gregor("produce", "nope", *b, input="x\n")
    assert code == 1 and "gregor topic create" in err
    code, _, err = gregor("produce", "events", "--key-separator", "|", *b, input="no separator here\n")
    assert code == 1 and "line 1" in err


def group_lag(b, group):
    return {(p["topic"], p["partition"]): p for p in ok_json("group", "describe", group, *b)["partitions"]}


def test_groups_consume_lag_reset_and_delete(broker):
    b = ("--bootstrap", broker.bootstrap)
    ok("topic", "create", "clicks", "--partitions", 2, *b)
    ok("produce", "clicks", "--partition", 0, *b, input="".join(f"a{i}\n" for i in range(30)))
    ok("produce", "clicks", "--partition", 1, *b, input="".join(f"b{i}\n" for i in range(20)))

    # A group consumer reads everything and commits it: lag 0.
    out = ok("consume", "clicks", "--group", "readers", "--from-beginning", "--count", 50, *b)
    assert len(out.splitlines()) == 50
    lag = group_lag(b, "readers")
    assert lag[("clicks", 0)]["committed_offset"] == 30 and lag[("clicks", 0)]["lag"] == 0
    assert lag[("clicks", 1)]["committed_offset"] == 20 and lag[("clicks", 1)]["lag"] == 0
    # More records: lag is log end minus committed.
    ok("produce", "clicks", "--partition", 1, *b, input="b20\nb21\nb22\n")
    lag = group_lag(b, "readers")
    assert lag[("clicks", 1)]["lag"] == 3 and lag[("clicks", 1)]["log_end_offset"] == 23
    summary = {g["group"]: g for g in ok_json("group", "list", *b)}
    assert summary["readers"]["lag"] == 3 and summary["readers"]["state"] == "Empty"
    assert re.search(r"^readers\s+Empty\s+0\s+3$", ok("group", "list", *b), re.M)
    # The group resumes from its commits.
    out = ok("consume", "clicks", "--group", "readers", "--exit", *b)
    assert out.splitlines() == ["b20", "b21", "b22"]

    # --dry-run prints the plan and changes nothing.
    before = group_lag(b, "readers")
    plan = ok_json("group", "reset-offsets", "readers", "--topic", "clicks", "--to-earliest", "--dry-run", *b)
    assert plan["dry_run"] is True
    assert {(r["partition"], r["current_offset"], r["new_offset"]) for r in plan["partitions"]} == {(0, 30, 0), (1, 23, 0)}
    assert group_lag(b, "readers") == before
    assert "dry run: nothing changed" in ok("group", "reset-offsets", "readers", "--topic", "clicks",
                                            "--to-latest", "--dry-run", *b)
    assert group_lag(b, "readers") == before

    ok("group", "reset-offsets", "readers", "--topic", "clicks", "--to-earliest", *b)
    assert [group_lag(b, "readers")[("clicks", p)]["committed_offset"] for p in (0, 1)] == [0, 0]
    ok("group", "reset-offsets", "readers", "--topic", "clicks", "--to-offset", 10, "--partition", 0, *b)
    ok("group", "reset-offsets", "readers", "--topic", "clicks", "--shift-by", 5, "--partition", 0, *b)
    assert group_lag(b, "readers")[("clicks", 0)]["committed_offset"] == 15
    ok("group", "reset-offsets", "readers", "--topic", "clicks", "--shift-by", -100, "--partition", 0, *b)
    assert group_lag(b, "readers")[("clicks", 0)]["committed_offset"] == 0  # clamped to the log start
    ok("group", "reset-offsets", "readers", "--topic", "clicks", "--to-offset", 10**6, *b)
    assert [group_lag(b, "readers")[("clicks", p)]["committed_offset"] for p in (0, 1)] == [30, 23]
    # --to-datetime: records are stamped now; a time before them means offset 0, a time
    # after them the log end.
    ok("group", "reset-offsets", "readers", "--topic", "clicks", "--to-datetime", "2020-01-01T00:00:00Z", *b)
    assert [group_lag(b, "readers")[("clicks", p)]["committed_offset"] for p in (0, 1)] == [0, 0]
    ok("group", "reset-offsets", "readers", "--topic", "clicks", "--to-datetime", "2999-01-01T00:00:00+08:00", *b)
    assert [group_lag(b, "readers")[("clicks", p)]["committed_offset"] for p in (0, 1)] == [30, 23]
    code, _, err = gregor("group", "reset-offsets", "readers", "--topic", "clicks", "--to-datetime", "last tuesday", *b)
    assert code == 2 and "ISO 8601" in err

    # Refused while the group has an active member; delete refused too.
    member = KafkaConsumer("clicks", group_id="readers", bootstrap_servers=broker.bootstrap,
                           auto_offset_reset="earliest", session_timeout_ms=10000)
    try:
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(timeout_ms=200)
        assert member.assignment()
        code, _, err = gregor("group", "reset-offsets", "readers", "--topic", "clicks", "--to-earliest", *b)
        assert code == 1 and "active member" in err
        code, _, err = gregor("group", "delete", "readers", *b)
        assert code == 1 and "active members" in err
        d = ok_json("group", "describe", "readers", *b)
        assert d["members"] == 1 and {p["member_id"] is not None for p in d["partitions"]} == {True}
    finally:
        member.close()
    assert ok_json("group", "delete", "readers", *b) == [{"group": "readers"}]
    assert "readers" not in {g["group"] for g in ok_json("group", "list", *b)}
    code, _, err = gregor("group", "delete", "readers", *b)
    assert code == 1


def test_two_group_consumers_split_the_partitions(broker):
    b = ("--bootstrap", broker.bootstrap)
    ok("topic", "create", "work", "--partitions", 4, *b)
    ok("produce", "work", "--key-separator", ":", *b, input="".join(f"k{i}:v{i}\n" for i in range(200)))
    procs = [subprocess.Popen([str(BIN), "consume", "work", "--group", "pool", "--from-beginning",
                               "--idle-timeout-ms", "6000", "--format", "%p %s\\n", *b],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    parts = [{line.split()[0] for line in o.splitlines()} for o in outs]
    values = [line.split()[1] for o in outs for line in o.splitlines()]
    # Both joined within the group's initial rebalance delay: each owned two partitions,
    # and every record was printed exactly once.
    assert sorted(values) == sorted(f"v{i}" for i in range(200))
    assert parts[0] and parts[1] and not parts[0] & parts[1], parts
    assert sum(g["lag"] for g in ok_json("group", "list", *b)) == 0


def test_consume_read_committed_skips_aborted_transactions(broker):
    from confluent_kafka import Producer
    b = ("--bootstrap", broker.bootstrap)
    ok("topic", "create", "payments", "--partitions", 1, *b)
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "cli-txn"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce("payments", b"kept-1")
    p.commit_transaction(30)
    p.begin_transaction()
    p.produce("payments", b"aborted")
    assert p.flush(30) == 0  # on the broker before the abort (abort drops queued records)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce("payments", b"kept-2")
    p.commit_transaction(30)
    committed = ok("consume", "payments", "--from-beginning", "--exit", "--isolation", "read_committed", *b)
    assert committed.splitlines() == ["kept-1", "kept-2"]
    everything = ok("consume", "payments", "--from-beginning", "--exit", *b)
    assert everything.splitlines() == ["kept-1", "aborted", "kept-2"]


def test_cluster_status(broker):
    b = ("--bootstrap", broker.bootstrap)
    ok("topic", "create", "t", "--partitions", 2, *b)
    s = ok_json("cluster", "status", *b)
    assert s["brokers"] == [{"id": 0, "address": broker.bootstrap, "controller": True}]
    assert s["controller"] == 0 and s["offline_partitions"] == [] and s["under_replicated_partitions"] == []
    assert s["partitions"] >= 2 and s["cluster_id"]
    text = ok("cluster", "status", *b)
    assert "partitions without a leader: 0" in text and "under-replicated partitions: 0" in text


def test_completions():
    for shell in ("bash", "zsh", "fish"):
        out = ok("completions", shell)
        flag = "-l " if shell == "fish" else "--"
        for word in ("topic", "reset-offsets", f"{flag}bootstrap", f"{flag}from-beginning"):
            assert word in out, (shell, word)
    script = ok("completions", "bash")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    # Sourced, it completes subcommands.
    probe = script + '\nCOMP_WORDS=(gregor to); COMP_CWORD=1; _gregor gregor to gregor; echo "${COMPREPLY[@]}"\n'
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True).stdout
    assert "topic" in out.split()


def test_print_config_layers_and_unknown_keys(tmp_path):
    cfg = tmp_path / "gregor.toml"
    cfg.write_text('num.partitions = 4\n"log.retention.ms" = 1000\n[log.segment]\nbytes = 2097152\n')
    env = {**os.environ, "GREGOR_LOG_RETENTION_MS": "2000", "GREGOR_NODE_ID": "5"}
    rows = {r["name"]: r for r in ok_json("broker", "--config", cfg, "--node-id", 7, "--print-config", env=env)}
    assert rows["num.partitions"] == {"name": "num.partitions", "value": "4", "source": f"file {cfg}"}
    assert rows["log.segment.bytes"]["value"] == "2097152"
    assert rows["log.retention.ms"] == {"name": "log.retention.ms", "value": "2000", "source": "env GREGOR_LOG_RETENTION_MS"}
    assert rows["node.id"] == {"name": "node.id", "value": "7", "source": "flag --node-id"}
    assert rows["auto.create.topics.enable"] == {"name": "auto.create.topics.enable", "value": "true", "source": "default"}
    table = ok("broker", "--config", cfg, "--print-config", env=env)
    assert re.search(r"^num\.partitions\s+4\s+file ", table, re.M)

    cfg.write_text("num.partitoins = 4\n")
    code, _, err = gregor("broker", "--config", cfg, "--print-config")
    assert code == 2 and "unknown setting 'num.partitoins'" in err and "did you mean 'num.partitions'" in err
    cfg.write_text('"log.retention.ms" = "forever"\n')
    code, _, err = gregor("broker", "--config", cfg, "--print-config")
    assert code == 2 and "log.retention.ms" in err and "integer" in err
    code, _, err = gregor("broker", "--print-config", env={**os.environ, "GREGOR_NUM_PARTITION": "3"})
    assert code == 2 and "GREGOR_NUM_PARTITIONS" in err


def test_config_flags_and_environment_reach_the_broker(tmp_path):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    listen = f"127.0.0.1:{port.getsockname()[1]}"
    port.close()
    env = {**os.environ, "GREGOR_NUM_PARTITIONS": "6", "GREGOR_LISTENERS": f"PLAINTEXT://{listen}",
           "GREGOR_LOG_DIRS": str(tmp_path / "data"), "GREGOR_METRICS_LISTENER": "off"}
    proc = subprocess.Popen([str(BIN), "broker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                host, port_no = listen.rsplit(":", 1)
                socket.create_connection((host, int(port_no)), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        created = ok_json("topic", "create", "auto", "--bootstrap", listen)
        assert created["partitions"] == 6
        assert (tmp_path / "data").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_configuration_reference_is_generated_from_the_code():
    generated = ok("config-reference")
    on_disk = (ROOT / "docs" / "configuration.md").read_text()
    assert on_disk == generated, "docs/configuration.md is stale: cargo run -q -- config-reference > docs/configuration.md"
    # Every setting the broker knows appears in it, with its environment variable.
    known = ok_json("broker", "--print-config")
    assert len(known) > 40
    for row in known:
        assert f"`{row['name']}`" in on_disk, row["name"]


def test_newcomer_path_from_the_readme_on_a_fresh_clone(tmp_path):
    """Runs the README's first-steps block on a fresh clone, in a private network namespace
    (so the default port 9092 is ours). The one step not run as written is the build: the
    binary built from this same tree (the suite's) stands in for `cargo build --release`,
    which CI runs anyway; and after `gregor broker &` the script waits for the port, as a
    person would see the broker's start-up line before typing on."""
    if shutil.which("git") is None or shutil.which("unshare") is None:
        pytest.fail("the newcomer test needs git and unshare (util-linux)")
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- newcomer-path -->\s*```sh\n(.*?)```", readme, re.S)
    assert block, "README.md lost its newcomer-path block"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert lines[0] == "cargo build --release", lines[0]
    clone = tmp_path / "gregor"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    (clone / "target" / "release").mkdir(parents=True)
    shutil.copy(BIN, clone / "target" / "release" / "gregor")
    script = ["set -euo pipefail", "ip link set lo up"]
    for line in lines[1:]:
        script.append(line)
        if line.rstrip().endswith("&"):
            script.append("broker=$!; trap 'kill $broker; wait $broker || true' EXIT")
            script.append("for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null && break; sleep 0.1; done")
    # Then the same lag, as JSON, for the assertion.
    script.append("echo '--- json'")
    script.append("./target/release/gregor group describe readers --json")
    run = subprocess.run(["unshare", "--net", "bash", "-c", "\n".join(script)], cwd=clone,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"the README's commands failed:\n{run.stdout}\n{run.stderr}"
    text, js = run.stdout.split("--- json\n")
    assert "created topic greetings (3 partitions" in text
    assert sorted(l for l in text.splitlines() if ": h" in l) == ["alice: hello", "bob: hi", "carol: hey"]
    assert re.search(r"^greetings\s+\d+\s+\d+\s+\d+\s+1\s", text, re.M), text
    d = json.loads(js)
    assert sum(p["lag"] for p in d["partitions"]) == 1
    alice = java_partition(b"alice", 3)
    assert [p["partition"] for p in d["partitions"] if p["lag"] == 1] == [alice]
    assert (clone / "gregor-data").is_dir()


def test_progress_bar_on_a_terminal_only_after_a_second(broker, tmp_path):
    b = ("--bootstrap", broker.bootstrap)
    ok("topic", "create", "bulk", *b)
    slow_input = "(seq 1 60000; sleep 1.5; seq 1 10)"
    cmd = f"{slow_input} | {BIN} produce bulk --bootstrap {broker.bootstrap}"
    # Piped (as in scripts): no progress output at all, only the summary.
    piped = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and piped.stderr == "" and "produced 60010 records" in piped.stdout
    # On a terminal (`script` gives it one), a line with the records and their rate once
    # the command has run for a second.
    tty = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=60)
    assert tty.returncode == 0
    assert re.search(r"produce \S+ 60010 records \(\d+/s\)", tty.stdout), tty.stdout[-500:]
    # A quick command shows none, even on a terminal.
    quick = subprocess.run(["script", "-qec", f"seq 1 10 | {BIN} produce bulk --bootstrap {broker.bootstrap}",
                            "/dev/null"], capture_output=True, text=True, timeout=60)
    assert quick.returncode == 0 and not re.search(r"records \(\d+/s\)", quick.stdout) and "produced 10 records" in quick.stdout


def test_ctrl_c_stops_a_group_consumer_cleanly(broker):
    b = ("--bootstrap", broker.bootstrap)
    ok("topic", "create", "live", "--partitions", 2, *b)
    proc = subprocess.Popen([str(BIN), "consume", "live", "--group", "tail", "--format", "%s\\n", *b],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        # Joined, and its starting positions (the end: no --from-beginning) committed.
        while [p["committed_offset"] for p in ok_json("group", "describe", "tail", *b)["partitions"]] != [0, 0]:
            assert time.monotonic() < deadline, "the consumer never joined"
            time.sleep(0.2)
        ok("produce", "live", "--partition", 0, *b, input="x\ny\n")
        ok("produce", "live", "--partition", 1, *b, input="z\n")
        deadline = time.monotonic() + 20
        while sum(p["lag"] for p in ok_json("group", "describe", "tail", *b)["partitions"]) != 0 or \
                len(ok_json("group", "describe", "tail", *b)["partitions"]) < 2:
            assert time.monotonic() < deadline, "the consumer never committed"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    # Exit 0, every record printed, and the member left at once (no session timeout wait).
    assert proc.returncode == 0, err
    assert sorted(out.split()) == ["x", "y", "z"]
    d = ok_json("group", "describe", "tail", *b)
    assert d["members"] == 0 and d["state"] == "Empty"
    assert {p["partition"]: p["committed_offset"] for p in d["partitions"]} == {0: 2, 1: 1}
