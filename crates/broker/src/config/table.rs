//! The settings table: every topic-level setting with its broker synonym, and the
//! broker-only ones, each with its default, type, bounds and documentation; looking a
//! setting up and validating a value against it.

use super::*;

const LONG_MAX: &str = "9223372036854775807";

macro_rules! def {
    ($name:expr, $syn:expr, $default:expr, $kind:ident, [$($v:expr),*], $min:expr, $doc:expr) => {
        ConfigDef { name: $name, broker_synonym: $syn, default: $default, kind: ConfigType::$kind, one_of: &[$($v),*], min: $min, doc: $doc }
    };
}

/// Every topic-level setting Gregor knows.
pub static TOPIC_CONFIGS: &[ConfigDef] = &[
    def!("cleanup.policy", Some("log.cleanup.policy"), "delete", List, ["delete", "compact", "compact,delete", "delete,compact"], 0,
        "Retention policy for old segments: delete them, or compact the log to the latest value per key (enforced from the storage-lifecycle release on)."),
    def!("compression.type", Some("compression.type"), "producer", String, ["producer"], 0,
        "Final compression of stored batches. Gregor keeps the producer's codec; re-compression is not supported."),
    def!("delete.retention.ms", Some("log.cleaner.delete.retention.ms"), "86400000", Long, [], 0,
        "How long tombstones are kept on compacted topics."),
    def!("file.delete.delay.ms", Some("log.segment.delete.delay.ms"), "60000", Long, [], 0,
        "Delay before a deleted segment's files are removed."),
    def!("flush.messages", Some("log.flush.interval.messages"), LONG_MAX, Long, [], 1,
        "Fsync the log after this many records; 1 makes every acknowledged append durable (with group commit)."),
    def!("flush.ms", Some("log.flush.interval.ms"), LONG_MAX, Long, [], 0,
        "Fsync the log once the oldest unflushed record is this old."),
    def!("index.interval.bytes", Some("log.index.interval.bytes"), "4096", Int, [], 0,
        "Bytes of batches between two offset-index entries."),
    def!("max.compaction.lag.ms", Some("log.cleaner.max.compaction.lag.ms"), LONG_MAX, Long, [], 1,
        "Longest time a record stays ineligible for compaction."),
    def!("max.message.bytes", Some("message.max.bytes"), "1048588", Int, [], 0,
        "Largest record batch the broker accepts, in bytes."),
    def!("message.timestamp.type", Some("log.message.timestamp.type"), "CreateTime", String, ["CreateTime", "LogAppendTime"], 0,
        "Keep the producer's timestamps (CreateTime) or stamp batches with the broker's clock (LogAppendTime)."),
    def!("min.cleanable.dirty.ratio", Some("log.cleaner.min.cleanable.ratio"), "0.5", Double, [], 0,
        "Share of the log that must be uncompacted before the cleaner runs."),
    def!("min.compaction.lag.ms", Some("log.cleaner.min.compaction.lag.ms"), "0", Long, [], 0,
        "Shortest time a record stays uncompacted."),
    def!("min.insync.replicas", Some("min.insync.replicas"), "1", Int, [], 1,
        "Replicas that must be in sync for acks=all to succeed."),
    def!("retention.bytes", Some("log.retention.bytes"), "-1", Long, [], -1,
        "Size above which old segments are deleted; -1 for no limit."),
    def!("retention.ms", Some("log.retention.ms"), "604800000", Long, [], -1,
        "Age after which old segments are deleted; -1 for no limit."),
    def!("segment.bytes", Some("log.segment.bytes"), "1073741824", Int, [], 14,
        "Size at which the active segment is closed and a new one started."),
    def!("segment.index.bytes", Some("log.index.size.max.bytes"), "10485760", Int, [], 4,
        "Largest offset index of one segment."),
    def!("segment.ms", Some("log.roll.ms"), "604800000", Long, [], 1,
        "Age at which the active segment is closed and a new one started."),
    def!("unclean.leader.election.enable", Some("unclean.leader.election.enable"), "false", Boolean, [], 0,
        "Whether an out-of-sync replica may become leader (data loss)."),
];

/// Broker-only settings (Kafka's names); topic-setting synonyms are accepted too.
pub static BROKER_CONFIGS: &[ConfigDef] = &[
    def!("node.id", None, "0", Int, [], 0, "This broker's id in the cluster; a data directory keeps the id it was created with. Flag: --node-id."),
    def!("log.dirs", None, "./gregor-data", String, [], 0, "Directory for partition logs and cluster metadata, created if missing (one directory). Flag: --data-dir."),
    def!("listeners", None, "127.0.0.1:9092", String, [], 0, "Where to accept Kafka clients: NAME://HOST:PORT entries separated by commas (HOST:PORT alone means PLAINTEXT://HOST:PORT). Each name's security protocol comes from listener.security.protocol.map. Flag: --listen."),
    def!("advertised.listeners", None, "", String, [], 0, "Addresses clients are told to connect to (in Metadata), NAME://HOST:PORT per listener; a listener not named here advertises its own address. Flag: --advertised."),
    def!("listener.security.protocol.map", None, "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL", String, [], 0, "The security protocol of each listener name, NAME:PROTOCOL separated by commas; protocols are PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL."),
    def!("inter.broker.listener.name", None, "", String, [], 0, "The listener other brokers replicate from and send transaction markers to; empty means the first of listeners. Its protocol must be PLAINTEXT or SSL (Gregor authenticates brokers by certificate, not SASL)."),
    def!("controller.listener.names", None, "", String, [], 0, "The name of a listener in listeners that serves the metadata log instead of clients (as in KRaft); its address is this node's --controller-listener and its protocol (PLAINTEXT or SSL) secures the controllers' traffic."),
    def!("ssl.keystore.type", None, "PEM", String, ["PEM"], 0, "Format of ssl.keystore.location; only PEM."),
    def!("ssl.keystore.location", None, "", String, [], 0, "PEM file with this broker's private key and certificate chain (leaf first), for SSL and SASL_SSL listeners; re-read when it changes, without a restart."),
    def!("ssl.truststore.type", None, "PEM", String, ["PEM"], 0, "Format of ssl.truststore.location; only PEM."),
    def!("ssl.truststore.location", None, "", String, [], 0, "PEM file of the CA certificates that client certificates (ssl.client.auth) and other brokers' certificates must chain to; re-read when it changes."),
    def!("ssl.client.auth", None, "none", String, ["required", "requested", "none"], 0, "Whether SSL listeners ask clients for a certificate: required refuses clients without a trusted one, requested accepts both (an untrusted or expired one is refused either way). The principal of a client with a certificate is User:<its subject, RFC 2253>. SASL_SSL listeners never ask (as in Kafka since KIP-684)."),
    def!("ssl.enabled.protocols", None, "TLSv1.2,TLSv1.3", String, ["TLSv1.2,TLSv1.3", "TLSv1.3,TLSv1.2", "TLSv1.3", "TLSv1.2"], 0, "TLS versions served; nothing older than TLS 1.2 is."),
    def!("sasl.enabled.mechanisms", None, "SCRAM-SHA-256,SCRAM-SHA-512", String, [], 0, "SASL mechanisms served on SASL listeners, separated by commas: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512. PLAIN checks the password against the user's SCRAM credential; no password is stored in clear."),
    def!("connections.max.reauth.ms", None, "0", Long, [], 0, "Session lifetime of a SASL authentication (KIP-368): the client must re-authenticate before it ends, or its connection is closed; 0 for no limit."),
    def!("connection.failed.authentication.delay.ms", None, "100", Int, [], 0, "How long a failed authentication waits before its connection is closed; doubled for every further failure from the same address within a minute, up to 5 s."),
    def!("authorizer.enabled", None, "false", Boolean, [], 0, "Check every request against the ACLs (Kafka's authorizer.class.name=StandardAuthorizer). Without a matching ALLOW, a request is refused. Gregor's own setting."),
    def!("super.users", None, "", String, [], 0, "Principals allowed everything, separated by semicolons: User:admin;User:CN=broker-1."),
    def!("allow.everyone.if.no.acl.found", None, "false", Boolean, [], 0, "With the authorizer on, allow access to a resource that has no ACL at all."),
    def!("fetch.sendfile", None, "true", Boolean, [], 0, "Send fetched batches on plain TCP listeners from the page cache to the socket with sendfile(2), as Kafka does, instead of reading them into the broker's memory; SSL listeners always read them. Gregor's own setting, for comparing the two paths or as a way out should a filesystem misbehave with sendfile."),
    def!("metrics.listener", None, "127.0.0.1:9644", String, [], 0, "Where Prometheus metrics are served (HTTP), or `off`. Gregor's own setting. Flag: --metrics."),
    def!("metrics.partition.series", None, "partition", String, ["partition", "topic", "broker"], 0, "How finely the per-partition series (produce and fetch counters, log size and segments, consumer group lag) are labelled: partition (every partition; with the log start and end offsets and committed offsets), topic (summed per topic), or broker (summed over the broker). A scrape's cost grows with the series: about 8 per partition, so choose topic or broker for tens of thousands of partitions. Gregor's own setting."),
    def!("metrics.ssl.enable", None, "false", Boolean, [], 0, "Serve the metrics over HTTPS with the broker's certificate (ssl.keystore.location). Gregor's own setting."),
    def!("metrics.basic.auth.user", None, "", String, [], 0, "With metrics.basic.auth.password.file: the user a scrape must give (HTTP basic authentication); unset, the metrics need none. Gregor's own setting."),
    def!("metrics.basic.auth.password.file", None, "", String, [], 0, "A file whose first line is the password for metrics.basic.auth.user. Gregor's own setting."),
    def!("controller.quorum.voters", None, "", String, [], 0, "The controllers of a cluster, ID@HOST:PORT separated by commas (their metadata-log addresses); empty runs a single node. A broker whose node.id is listed is a voter, any other a learner. Flag: --controllers."),
    def!("controller.listener", None, "", String, [], 0, "Where this node serves the metadata log (HOST:PORT); a controller defaults to its own entry in controller.quorum.voters, a learner must set it. Gregor's own setting. Flag: --controller-listener."),
    def!("broker.rack", None, "", String, [], 0, "This broker's rack; replicas of a partition are spread across racks first. Flag: --rack."),
    def!("broker.session.timeout.ms", None, "9000", Long, [], 1, "A broker that has not heartbeated the active controller for this long is fenced and its leaderships move."),
    def!("broker.heartbeat.interval.ms", None, "2000", Long, [], 1, "How often a broker heartbeats the active controller."),
    def!("replica.lag.time.max.ms", None, "30000", Long, [], 1, "A follower that has not caught up with the leader's log end for this long leaves the in-sync replicas."),
    def!("replica.fetch.wait.max.ms", None, "500", Int, [], 0, "How long a follower's fetch waits at the leader for new records."),
    def!("replica.fetch.max.bytes", None, "1048576", Int, [], 1, "Bytes a follower fetches per partition and request."),
    def!("follower.replication.throttled.rate", None, "9223372036854775807", Long, [], 1, "Bytes per second a follower copies for replicas a reassignment is adding to it (Kafka applies it to the replicas listed in follower.replication.throttled.replicas; Gregor to every replica being added)."),
    def!("auto.leader.rebalance.enable", None, "true", Boolean, [], 0, "Whether the controller gives leadership back to each partition's preferred (first) replica once it is in sync."),
    def!("leader.imbalance.check.interval.seconds", None, "300", Long, [], 1, "How often the controller restores preferred leaders."),
    def!("offsets.topic.replication.factor", None, "3", Int, [], 1, "Replication factor of __consumer_offsets (at most the number of live brokers when it is created)."),
    def!("transaction.state.log.replication.factor", None, "3", Int, [], 1, "Replication factor of __transaction_state (at most the number of live brokers when it is created)."),
    def!(
        "auto.create.topics.enable",
        None,
        "true",
        Boolean,
        [],
        0,
        "Create a topic on first Metadata or Produce for it."
    ),
    def!(
        "num.partitions",
        None,
        "1",
        Int,
        [],
        1,
        "Partitions of an auto-created topic, or of a created one that asks for -1."
    ),
    def!(
        "default.replication.factor",
        None,
        "1",
        Int,
        [],
        1,
        "Replication factor of auto-created topics."
    ),
    def!(
        "socket.request.max.bytes",
        None,
        "104857600",
        Int,
        [],
        1,
        "Largest request frame; bigger frames close the connection."
    ),
    def!("queued.max.request.bytes", None, "104857600", Long, [], -1, "Bytes of requests read and being handled at once, across all connections: a request counts from when its size is read (before its body is buffered) until it has been handled (a Produce until it is appended); a connection whose next request does not fit reads nothing more until it does. At least socket.request.max.bytes, or -1 for no cap (Kafka's default; Gregor caps by default, so that parallel large requests cannot exhaust a small machine's memory)."),
    def!("max.incremental.fetch.session.cache.slots", None, "1000", Int, [], 0, "Incremental fetch sessions (KIP-227) the broker keeps: consumers and followers of many partitions then send and receive only what changed. 0 turns them off (every fetch is whole). All sessions together keep at most 1,000,000 partitions."),
    def!("quota.window.num", None, "11", Int, [], 2, "Samples a client's rate is measured over, for client quotas (gregor quota)."),
    def!("quota.window.size.seconds", None, "1", Int, [], 1, "Length of each sample of a client's rate, for client quotas."),
    def!("max.connections", None, "2147483647", Int, [], 0, "Connections the broker keeps open at once; a new one over it is closed at once (Kafka leaves it in the accept backlog). The inter-broker listener, when there is more than one listener, is not counted, so clients cannot starve replication."),
    def!("max.connections.per.ip", None, "2147483647", Int, [], 0, "Connections one address may keep open at once; a new one over it is closed at once."),
    def!("max.connections.per.ip.overrides", None, "", String, [], 0, "Per-address exceptions to max.connections.per.ip: IP:COUNT entries separated by commas (127.0.0.1:200,[::1]:200). Addresses, not host names."),
    def!("connections.max.idle.ms", None, "600000", Long, [], -1, "A connection with no request for this long is closed (a request still being answered keeps it open); -1 never."),
    def!("request.receive.timeout.ms", None, "30000", Long, [], 1, "Time a request may take to arrive once its first byte has: a request sent slower, or left half sent, closes its connection (time spent waiting for queued.max.request.bytes does not count). Gregor's own setting; Kafka has only connections.max.idle.ms, which any trickle of bytes resets."),
    def!("log.open.files.max", None, "-1", Long, [], -1, "Segment files kept open at once, across all partitions; the least recently used are closed past it and opened again when next read or written, so a broker can host more partitions than its open-file limit (ulimit -n) has files. -1: half the open-file limit, which the broker raises to its hard limit at start. Gregor's own setting: Kafka keeps every segment open and needs the limit raised above the count of segments."),
    def!("log.refusals.interval.ms", None, "60000", Long, [], 1, "Connections closed for bad input or refused by a limit are logged at most once per peer and reason in this interval; the rest are counted in gregor_connections_closed_total and summed up in one line per interval. Gregor's own setting."),
    def!(
        "log.cache.window.bytes",
        None,
        "67108864",
        Long,
        [],
        0,
        "After each fsync of a partition, what of its active segment lies more than this many bytes behind the log end is dropped from the page cache (posix_fadvise DONTNEED), so that appends reuse the memory just freed instead of growing the cache into fresh memory or making the kernel reclaim; consumers further behind read from disk. 0 leaves the page cache to the kernel, as Kafka does. Gregor's own setting."
    ),
    def!(
        "log.flush.unreplicated.enable",
        None,
        "true",
        Boolean,
        [],
        0,
        "A partition with a single replica (every partition of a single broker) fsyncs what it appended before it acknowledges, sharing each fsync among the requests that wait for it (group commit): with no other copy, an acknowledgement that is only in the page cache is lost with power. flush.messages or flush.ms, set for the topic or the broker, wins. false keeps Kafka's behaviour (the page cache only). Gregor's own setting."
    ),
    def!(
        "log.scrub.bytes.per.second",
        None,
        "16777216",
        Long,
        [],
        0,
        "How fast the scrubber reads segments in the background to check every batch's CRC-32C, so damage on disk is found (and the partition taken offline, and in a cluster repaired from another replica) before a consumer reads it; 0 turns it off. Gregor's own setting."
    ),
    def!(
        "log.scrub.interval.ms",
        None,
        "3600000",
        Long,
        [],
        0,
        "How long the scrubber waits after it has checked every partition before it starts again. Gregor's own setting."
    ),
    def!(
        "log.writeback.bytes",
        None,
        "8388608",
        Long,
        [],
        0,
        "Once a partition has this many bytes appended since its last fsync, the flusher fsyncs it in the background (checked every 100 ms), so the page cache's dirty pages never pile up to the kernel's thresholds, where every write stalls for a long time; 0 leaves writing back to the kernel. Acknowledgements never wait for it: durability is still flush.messages' and flush.ms'. Gregor's own setting."
    ),
    def!(
        "log.flush.scheduler.interval.ms",
        None,
        "1000",
        Long,
        [],
        1,
        "How often the flusher checks flush.ms."
    ),
    def!(
        "shutdown.timeout.ms",
        None,
        "10000",
        Long,
        [],
        0,
        "How long a clean stop waits for in-flight requests."
    ),
    def!(
        "group.min.session.timeout.ms",
        None,
        "6000",
        Int,
        [],
        1,
        "Shortest session timeout a group member may ask for."
    ),
    def!(
        "group.max.session.timeout.ms",
        None,
        "1800000",
        Int,
        [],
        1,
        "Longest session timeout a group member may ask for."
    ),
    def!(
        "group.initial.rebalance.delay.ms",
        None,
        "3000",
        Int,
        [],
        0,
        "How long the first rebalance of an empty group waits for more members."
    ),
    def!(
        "offsets.retention.minutes",
        None,
        "10080",
        Int,
        [],
        1,
        "Committed offsets of a group that stays empty are removed after this long."
    ),
    def!(
        "offset.metadata.max.bytes",
        None,
        "4096",
        Int,
        [],
        0,
        "Largest metadata string of a committed offset."
    ),
    def!(
        "offsets.topic.num.partitions",
        None,
        "50",
        Int,
        [],
        1,
        "Partitions of __consumer_offsets, fixed once it exists."
    ),
    def!(
        "offsets.topic.segment.bytes",
        None,
        "104857600",
        Int,
        [],
        14,
        "Segment size of __consumer_offsets."
    ),
    def!(
        "group.coordinator.tick.ms",
        None,
        "100",
        Int,
        [],
        1,
        "How often session and rebalance timeouts are checked."
    ),
    def!(
        "log.retention.check.interval.ms",
        None,
        "300000",
        Long,
        [],
        1,
        "How often segments past retention.ms or retention.bytes are deleted."
    ),
    def!("log.cleaner.backoff.ms", None, "15000", Long, [], 1, "How often the log cleaner looks for compacted partitions due for cleaning."),
    def!("producer.id.expiration.ms", None, "86400000", Int, [], 1, "An idempotent producer idle this long is forgotten; its next batch must start a new sequence."),
    def!("transaction.state.log.num.partitions", None, "50", Int, [], 1, "Partitions of __transaction_state, fixed once it exists."),
    def!("transaction.state.log.segment.bytes", None, "104857600", Int, [], 14, "Segment size of __transaction_state."),
    def!("transaction.max.timeout.ms", None, "900000", Int, [], 1, "The longest transaction.timeout.ms a producer may ask for."),
    def!("transaction.abort.timed.out.transaction.cleanup.interval.ms", None, "10000", Int, [], 1, "How often transactions past their timeout are aborted."),
    def!("log.cleaner.io.max.bytes.per.second", None, "9223372036854775807", Long, [], 1, "Bytes per second the log cleaner may read, so producers keep their throughput (Kafka takes a double; Gregor an integer)."),
];

pub fn topic_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

pub(super) fn broker_def(name: &str) -> Option<&'static ConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name).or_else(|| {
        TOPIC_CONFIGS
            .iter()
            .find(|d| d.broker_synonym == Some(name))
    })
}

/// Checks one topic-level override: the setting must exist and the value fit it.
pub fn validate_topic_override(key: &str, value: &str) -> Result<(), String> {
    let def = topic_def(key).ok_or_else(|| {
        format!(
            "unknown topic config '{key}'; see docs/configuration.md for the settings Gregor knows"
        )
    })?;
    validate(def, value)
}

/// Checks a value against its definition; the error names the setting and the reason.
pub fn validate(def: &ConfigDef, value: &str) -> Result<(), String> {
    let bad = |why: String| Err(format!("invalid value '{value}' for {}: {why}", def.name));
    match def.kind {
        ConfigType::Boolean => {
            if value != "true" && value != "false" {
                return bad("expected true or false".into());
            }
        }
        ConfigType::Int | ConfigType::Long => {
            let Ok(v) = value.parse::<i64>() else {
                return bad("expected an integer".into());
            };
            if def.kind == ConfigType::Int && i32::try_from(v).is_err() {
                return bad("out of range for a 32-bit integer".into());
            }
            if v < def.min {
                return bad(format!("must be at least {}", def.min));
            }
        }
        ConfigType::Double => {
            if !value.parse::<f64>().is_ok_and(|v| (0.0..=1.0).contains(&v)) {
                return bad("expected a number between 0 and 1".into());
            }
        }
        ConfigType::String | ConfigType::List => {
            if !def.one_of.is_empty() && !def.one_of.contains(&value) {
                return bad(format!("expected one of {}", def.one_of.join(", ")));
            }
        }
    }
    Ok(())
}
