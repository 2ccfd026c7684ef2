//! Broker and topic settings, by Kafka's names and with Kafka's defaults.
//!
//! One table ([`TOPIC_CONFIGS`]) lists every topic-level setting with its broker-level
//! synonym, default, type and documentation; [`BROKER_CONFIGS`] lists the broker-only ones.
//! A topic's effective value comes from its own override, else the broker's file, else the
//! default, and DescribeConfigs reports which.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Kafka's config value types as DescribeConfigs v3+ reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Where a config value came from (DescribeConfigs `config_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

pub struct ConfigDef {
    pub name: &'static str,
    /// The broker-level setting that gives this topic setting its default, if any.
    pub broker_synonym: Option<&'static str>,
    pub default: &'static str,
    pub kind: ConfigType,
    /// Allowed values for string settings; empty means any.
    pub one_of: &'static [&'static str],
    /// Smallest allowed value for numbers.
    pub min: i64,
    pub doc: &'static str,
}

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

fn broker_def(name: &str) -> Option<&'static ConfigDef> {
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

/// A listener's security protocol (Kafka's `SecurityProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PLAINTEXT" => Self::Plaintext,
            "SSL" => Self::Ssl,
            "SASL_PLAINTEXT" => Self::SaslPlaintext,
            "SASL_SSL" => Self::SaslSsl,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// One named listener: where it binds, what it advertises, how it is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// Parses `NAME://HOST:PORT,...` (a bare `HOST:PORT` is `PLAINTEXT://HOST:PORT`) into
/// (name, host, port) entries.
pub fn parse_listener_list(key: &str, value: &str) -> Result<Vec<(String, String, u16)>, String> {
    let mut out: Vec<(String, String, u16)> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, addr) = entry.split_once("://").unwrap_or(("PLAINTEXT", entry));
        let name = name.to_ascii_uppercase();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "{key} = {value}: '{name}' is not a listener name; use letters, digits and _"
            ));
        }
        if out.iter().any(|(n, _, _)| *n == name) {
            return Err(format!(
                "{key} = {value}: listener {name} appears twice; give each its own name"
            ));
        }
        let (host, port) = split_host_port(key, addr)?;
        out.push((name, host, port));
    }
    Ok(out)
}

/// The broker's configuration: command-line flags plus Kafka-named settings from the file.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    /// The first client listener's address.
    pub listen: SocketAddr,
    /// Every listener that serves Kafka clients, in the order of `listeners`; the first
    /// gives `listen` and the advertised host and port.
    pub listeners: Vec<Listener>,
    /// The listener named by `controller.listener.names`, which serves the metadata log.
    pub controller_listener: Option<Listener>,
    /// The name of the listener brokers reach each other on.
    pub inter_broker_listener: String,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub node_id: i32,
    /// Where Prometheus metrics are served; `None` serves none.
    pub metrics: Option<SocketAddr>,
    /// Settings from the config file, environment and flags, by Kafka name, validated.
    settings: BTreeMap<String, String>,
    /// Where each of `settings` came from, for `--print-config`.
    origins: BTreeMap<String, String>,
    /// Settings changed at runtime (AlterConfigs on the broker), shared by every clone.
    dynamic: std::sync::Arc<std::sync::RwLock<DynamicBrokerConfigs>>,
}

/// Broker settings changed at runtime: for this node, and the cluster-wide default.
#[derive(Debug, Default, Clone)]
pub struct DynamicBrokerConfigs {
    pub node: BTreeMap<String, String>,
    pub default: BTreeMap<String, String>,
}

/// Checks a broker setting for a runtime change: only the broker-level defaults of topic
/// settings (`log.retention.ms`, `message.max.bytes`, ...) may change without a restart.
pub fn validate_dynamic_broker(key: &str, value: &str) -> Result<(), String> {
    let def = TOPIC_CONFIGS
        .iter()
        .find(|d| d.broker_synonym == Some(key))
        .ok_or_else(|| {
            if broker_def(key).is_some() {
                format!(
                    "'{key}' cannot be changed at runtime; set it in the --config file and restart"
                )
            } else {
                format!("unknown broker setting '{key}'; see docs/configuration.md")
            }
        })?;
    validate(def, value).map_err(|m| m.replacen(def.name, key, 1))
}

fn type_name(k: ConfigType) -> &'static str {
    match k {
        ConfigType::Boolean => "boolean",
        ConfigType::String => "string",
        ConfigType::Int => "int",
        ConfigType::Long => "long",
        ConfigType::Double => "double",
        ConfigType::List => "list",
    }
}

/// The configuration reference, generated from [`BROKER_CONFIGS`] and [`TOPIC_CONFIGS`]:
/// `docs/configuration.md` is this text (`gregor config-reference`), and a test fails when
/// they differ.
pub fn reference_markdown() -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let default = |d: &ConfigDef| {
        if d.default.is_empty() {
            "(empty)".to_string()
        } else {
            format!("`{}`", d.default)
        }
    };
    let allowed = |d: &ConfigDef| {
        if d.one_of.is_empty() {
            String::new()
        } else {
            format!(
                " One of: {}.",
                d.one_of
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let mut out = String::new();
    out.push_str("# Configuration reference\n\n");
    out.push_str("<!-- Generated by `gregor config-reference` from crates/broker/src/config.rs; a test fails when this file differs. Edit the table in the code, then run: cargo run -q -- config-reference > docs/configuration.md -->\n\n");
    out.push_str("A broker's settings come from four layers, each on top of the one before:\n\n");
    out.push_str("1. the defaults below;\n");
    out.push_str("2. the TOML file given with `--config FILE`, keyed by Kafka's names (`num.partitions = 3`, or quoted: `\"num.partitions\" = 3`);\n");
    out.push_str("3. environment variables: `GREGOR_` and the name in capitals with `_` for `.` (`GREGOR_NUM_PARTITIONS=3`);\n");
    out.push_str("4. the command-line flags `--data-dir`, `--listen`, `--advertised`, `--node-id` and `--metrics`.\n\n");
    out.push_str("`gregor broker --print-config` prints the effective value of every setting and where it came from. An unknown setting, in the file or the environment, stops the broker with a message that names the nearest known one; so does an invalid value.\n\n");
    out.push_str("Topic settings are set per topic (`gregor topic create --config K=V`, `gregor topic alter-config --set K=V`, or any Kafka admin client); the broker-level name of each gives its default for every topic, and those broker-level defaults can also be changed at runtime with IncrementalAlterConfigs on the broker.\n\n");
    out.push_str("## Broker settings\n\n| setting | type | default | environment | meaning |\n|---|---|---|---|---|\n");
    for d in BROKER_CONFIGS {
        out.push_str(&format!(
            "| `{}` | {} | {} | `{}` | {}{} |\n",
            d.name,
            type_name(d.kind),
            default(d),
            env_var(d.name),
            cell(d.doc),
            allowed(d)
        ));
    }
    out.push_str("\n## Topic settings\n\nThe broker-level name sets the default for every topic (in the file, the environment, or at runtime).\n\n| topic setting | broker-level name | type | default | meaning |\n|---|---|---|---|---|\n");
    for d in TOPIC_CONFIGS {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {}{} |\n",
            d.name,
            d.broker_synonym
                .map_or("-".to_string(), |s| format!("`{s}`")),
            type_name(d.kind),
            default(d),
            cell(d.doc),
            allowed(d)
        ));
    }
    out
}

/// Environment variables that configure something other than broker settings.
const ENV_NOT_SETTINGS: &[&str] = &[
    "GREGOR_LOG",
    "GREGOR_BIN",
    "GREGOR_FUZZ_SECONDS",
    "GREGOR_COMMAND_CONFIG",
];

/// The setting a `GREGOR_*` environment variable sets: `GREGOR_LOG_RETENTION_MS` ->
/// `log.retention.ms`; `None` for other variables.
pub fn env_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix("GREGOR_")?;
    if ENV_NOT_SETTINGS.contains(&var) || rest.is_empty() {
        return None;
    }
    Some(rest.to_ascii_lowercase().replace('_', "."))
}

/// The environment variable for a setting: `log.retention.ms` -> `GREGOR_LOG_RETENTION_MS`.
pub fn env_var(key: &str) -> String {
    format!("GREGOR_{}", key.to_ascii_uppercase().replace('.', "_"))
}

fn flatten(prefix: &str, table: toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            v => out.push((key, v)),
        }
    }
}

fn split_host_port(key: &str, value: &str) -> Result<(String, u16), String> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("{key} = {value}: expected HOST:PORT, e.g. 127.0.0.1:9092"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{key} = {value}: '{port}' is not a port number"))?;
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

fn resolve_addr(key: &str, value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    split_host_port(key, value)?;
    value
        .to_socket_addrs()
        .map_err(|e| format!("{key} = {value}: cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("{key} = {value}: resolves to no address"))
}

/// Levenshtein distance, for suggesting the setting a typo meant.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The known broker setting nearest to `key` (a topic setting's broker synonym counts).
pub fn nearest_setting(key: &str) -> Option<&'static str> {
    let mut names: Vec<&'static str> = BROKER_CONFIGS.iter().map(|d| d.name).collect();
    names.extend(TOPIC_CONFIGS.iter().filter_map(|d| d.broker_synonym));
    // A topic setting given at broker level means its broker synonym.
    if let Some(syn) = topic_def(key).and_then(|d| d.broker_synonym) {
        return Some(syn);
    }
    names
        .into_iter()
        .map(|n| (distance(key, n), n))
        .filter(|(d, n)| *d <= (n.len() / 3).max(3))
        .min()
        .map(|(_, n)| n)
}

fn unknown_setting(key: &str) -> String {
    match nearest_setting(key) {
        Some(n) => format!(
            "unknown setting '{key}'; did you mean '{n}'? (docs/configuration.md lists every setting)"
        ),
        None => format!(
            "unknown setting '{key}'; see docs/configuration.md for the settings Gregor knows"
        ),
    }
}

impl BrokerConfig {
    pub fn new(
        data_dir: PathBuf,
        listen: SocketAddr,
        advertised: Option<(String, u16)>,
        node_id: i32,
    ) -> Self {
        let (advertised_host, advertised_port) =
            advertised.unwrap_or_else(|| (listen.ip().to_string(), listen.port()));
        BrokerConfig {
            data_dir,
            listen,
            listeners: vec![Listener {
                name: "PLAINTEXT".into(),
                protocol: SecurityProtocol::Plaintext,
                addr: listen,
                advertised_host: advertised_host.clone(),
                advertised_port,
            }],
            controller_listener: None,
            inter_broker_listener: "PLAINTEXT".into(),
            advertised_host,
            advertised_port,
            node_id,
            metrics: None,
            settings: BTreeMap::new(),
            origins: BTreeMap::new(),
            dynamic: Default::default(),
        }
    }

    /// The configuration from its layers, each on top of the one before: the defaults, the
    /// TOML `file`, `GREGOR_*` environment variables (`GREGOR_NUM_PARTITIONS` for
    /// `num.partitions`), then command-line `flags` (as (setting, value, flag) triples).
    pub fn from_layers(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &[(&str, String, &str)],
    ) -> Result<Self, String> {
        let mut c = BrokerConfig::new(
            PathBuf::from("./gregor-data"),
            SocketAddr::from(([127, 0, 0, 1], 9092)),
            None,
            0,
        );
        if let Some(path) = file {
            c.load_file(path)?;
        }
        for (var, value) in env {
            let Some(key) = env_key(var) else { continue };
            c.set_from(&key, value, &format!("env {var}")).map_err(|e| {
                match (e.starts_with("unknown setting"), nearest_setting(&key)) {
                    (true, Some(n)) => format!(
                        "environment variable {var} sets no known setting; did you mean {} ({n})? (docs/configuration.md lists every setting)",
                        env_var(n)
                    ),
                    _ => format!("environment variable {var}: {e}"),
                }
            })?;
        }
        for (key, value, flag) in flags {
            c.set_from(key, value, &format!("flag {flag}"))
                .map_err(|e| format!("{flag} {value}: {e}"))?;
        }
        c.apply_structural()?;
        Ok(c)
    }

    /// Sets the fields the broker starts with from `node.id`, `log.dirs`, `listeners`,
    /// `advertised.listeners` and `metrics.listener`.
    fn apply_structural(&mut self) -> Result<(), String> {
        self.node_id = self.get_i64("node.id") as i32;
        self.data_dir = PathBuf::from(self.get("log.dirs"));
        self.apply_listeners()?;
        let metrics = self.get("metrics.listener");
        self.metrics = if metrics == "off" {
            None
        } else {
            Some(resolve_addr("metrics.listener", metrics)?)
        };
        Ok(())
    }

    /// Sets `listeners`, `controller_listener`, `inter_broker_listener`, `listen` and the
    /// advertised address from `listeners`, `advertised.listeners`,
    /// `listener.security.protocol.map`, `controller.listener.names` and
    /// `inter.broker.listener.name`.
    fn apply_listeners(&mut self) -> Result<(), String> {
        let mut map = std::collections::HashMap::new();
        let map_text = self.get("listener.security.protocol.map").to_string();
        for entry in map_text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, proto) = entry.split_once(':').ok_or_else(|| {
                format!(
                    "listener.security.protocol.map = {map_text}: '{entry}' is not NAME:PROTOCOL"
                )
            })?;
            let proto = SecurityProtocol::parse(proto.trim()).ok_or_else(|| {
                format!("listener.security.protocol.map: '{proto}' is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
            })?;
            map.insert(name.trim().to_ascii_uppercase(), proto);
        }
        let advertised =
            parse_listener_list("advertised.listeners", self.get("advertised.listeners"))?;
        let controller_name = self
            .get("controller.listener.names")
            .trim()
            .to_ascii_uppercase();
        let mut listeners = Vec::new();
        let mut controller = None;
        for (name, host, port) in parse_listener_list("listeners", self.get("listeners"))? {
            let protocol = *map.get(&name).ok_or_else(|| {
                format!("listener {name} has no security protocol; add {name}:PLAINTEXT (or SSL, SASL_PLAINTEXT, SASL_SSL) to listener.security.protocol.map")
            })?;
            let addr = resolve_addr("listeners", &format!("{host}:{port}"))?;
            // A single advertised address without a name (`--advertised HOST:PORT`)
            // applies to the first listener.
            let adv = advertised.iter().find(|(n, _, _)| *n == name).or_else(|| {
                (listeners.is_empty()
                    && advertised.len() == 1
                    && !self.get("advertised.listeners").contains("://"))
                .then(|| &advertised[0])
            });
            let (advertised_host, advertised_port) = adv
                .map_or((addr.ip().to_string(), addr.port()), |(_, h, p)| {
                    (h.clone(), *p)
                });
            let listener = Listener {
                name: name.clone(),
                protocol,
                addr,
                advertised_host,
                advertised_port,
            };
            if !controller_name.is_empty() && name == controller_name {
                if protocol.sasl() {
                    return Err(format!("controller listener {name} is {}: the metadata log's port takes PLAINTEXT or SSL", protocol.name()));
                }
                controller = Some(listener);
            } else {
                listeners.push(listener);
            }
        }
        if !controller_name.is_empty() && controller.is_none() {
            return Err(format!("controller.listener.names = {controller_name}, but listeners has no {controller_name}://HOST:PORT"));
        }
        let first = listeners.first().cloned().ok_or_else(|| {
            "listeners has no listener for clients; give at least one NAME://HOST:PORT".to_string()
        })?;
        let inter = self
            .get("inter.broker.listener.name")
            .trim()
            .to_ascii_uppercase();
        let inter = if inter.is_empty() {
            first.name.clone()
        } else {
            inter
        };
        let Some(inter_listener) = listeners.iter().find(|l| l.name == inter) else {
            return Err(format!(
                "inter.broker.listener.name = {inter}, but listeners has no {inter}://HOST:PORT"
            ));
        };
        if inter_listener.protocol.sasl() {
            return Err(format!("inter-broker listener {inter} is {}: brokers authenticate each other by certificate; use an SSL (or PLAINTEXT) listener for them", inter_listener.protocol.name()));
        }
        self.listen = first.addr;
        self.advertised_host = first.advertised_host.clone();
        self.advertised_port = first.advertised_port;
        self.listeners = listeners;
        self.controller_listener = controller;
        self.inter_broker_listener = inter;
        Ok(())
    }

    /// Every client listener's advertised address: (listener name, host, port), as
    /// brokers register them.
    pub fn endpoints(&self) -> Vec<(String, String, i32)> {
        self.listeners
            .iter()
            .map(|l| {
                (
                    l.name.clone(),
                    l.advertised_host.clone(),
                    i32::from(l.advertised_port),
                )
            })
            .collect()
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Every broker setting with its effective value and where it came from (`default`,
    /// `file PATH`, `env VAR`, `flag --x`), for `gregor broker --print-config`.
    pub fn effective(&self) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        let mut names: Vec<&'static str> = BROKER_CONFIGS.iter().map(|d| d.name).collect();
        names.extend(TOPIC_CONFIGS.iter().filter_map(|d| d.broker_synonym));
        names.sort_unstable();
        names.dedup();
        for name in names {
            let value = self
                .settings
                .get(name)
                .cloned()
                .unwrap_or_else(|| broker_def(name).map_or("", |d| d.default).to_string());
            let origin = self
                .origins
                .get(name)
                .cloned()
                .unwrap_or_else(|| "default".to_string());
            out.push((name, value, origin));
        }
        out
    }

    /// Reads a TOML file of flat, quoted Kafka setting names, e.g. `"num.partitions" = 3`.
    pub fn load_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("config file {} is not valid TOML: {e}", path.display()))?;
        // `num.partitions = 3` (unquoted) is a nested table in TOML; flatten it back.
        let mut flat = Vec::new();
        flatten("", table, &mut flat);
        for (key, value) in flat {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(format!(
                        "config file {}: {key} has an unsupported value {other}",
                        path.display()
                    ))
                }
            };
            self.set_from(&key, &value, &format!("file {}", path.display()))
                .map_err(|e| format!("config file {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Sets one Kafka-named broker setting, validated.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.set_from(key, value, "set")
    }

    /// Sets one Kafka-named broker setting, validated, noting where it came from.
    pub fn set_from(&mut self, key: &str, value: &str, origin: &str) -> Result<(), String> {
        let def = broker_def(key).ok_or_else(|| unknown_setting(key))?;
        // Named as given (`log.retention.ms`), not as the topic setting it defaults.
        validate(def, value)
            .map_err(|m| m.replacen(&format!("for {}:", def.name), &format!("for {key}:"), 1))?;
        self.settings.insert(key.to_string(), value.to_string());
        self.origins.insert(key.to_string(), origin.to_string());
        Ok(())
    }

    /// A broker-level value: from the file, else the default.
    pub fn get(&self, key: &str) -> &str {
        debug_assert!(
            broker_def(key).is_some(),
            "the code reads '{key}', which is not in the settings table"
        );
        if let Some(v) = self.settings.get(key) {
            return v;
        }
        broker_def(key).map(|d| d.default).unwrap_or("")
    }
    pub fn get_i64(&self, key: &str) -> i64 {
        self.get(key).parse().unwrap_or(0)
    }
    pub fn get_bool(&self, key: &str) -> bool {
        self.get(key) == "true"
    }
    pub fn is_set(&self, key: &str) -> bool {
        self.settings.contains_key(key)
    }

    /// Broker settings as DescribeConfigs lists them: (name, definition, value, source).
    /// Broker-level synonyms of topic settings are listed under their broker name.
    pub fn describe(&self) -> Vec<(&'static str, &'static ConfigDef, String, ConfigSource)> {
        let mut out: Vec<(&'static str, &'static ConfigDef, String, ConfigSource)> = Vec::new();
        for def in BROKER_CONFIGS {
            out.push((
                def.name,
                def,
                self.get(def.name).to_string(),
                self.source(def.name),
            ));
        }
        for def in TOPIC_CONFIGS {
            let Some(syn) = def.broker_synonym else {
                continue;
            };
            if !out.iter().any(|(name, ..)| *name == syn) {
                let (value, source) = self.dynamic_value(syn).unwrap_or_else(|| {
                    (
                        self.settings
                            .get(syn)
                            .map_or(def.default, String::as_str)
                            .to_string(),
                        self.source(syn),
                    )
                });
                out.push((syn, def, value, source));
            }
        }
        out
    }

    fn source(&self, key: &str) -> ConfigSource {
        if self.settings.contains_key(key) {
            ConfigSource::StaticBroker
        } else {
            ConfigSource::Default
        }
    }

    /// A topic setting's effective value given the topic's overrides, and its source.
    pub fn topic_value(
        &self,
        def: &ConfigDef,
        overrides: &BTreeMap<String, String>,
    ) -> (String, ConfigSource) {
        if let Some(v) = overrides.get(def.name) {
            return (v.clone(), ConfigSource::DynamicTopic);
        }
        if let Some((v, source)) = def.broker_synonym.and_then(|syn| self.dynamic_value(syn)) {
            return (v, source);
        }
        if let Some(v) = def.broker_synonym.and_then(|s| self.settings.get(s)) {
            return (v.clone(), ConfigSource::StaticBroker);
        }
        (def.default.to_string(), ConfigSource::Default)
    }

    /// A runtime-changed broker setting and its source: this node's, else the default's.
    pub fn dynamic_value(&self, key: &str) -> Option<(String, ConfigSource)> {
        let d = self.dynamic.read().unwrap_or_else(|p| p.into_inner());
        d.node
            .get(key)
            .map(|v| (v.clone(), ConfigSource::DynamicBroker))
            .or_else(|| {
                d.default
                    .get(key)
                    .map(|v| (v.clone(), ConfigSource::DynamicDefaultBroker))
            })
    }

    /// Replaces the runtime-changed settings (from the metadata log).
    pub fn set_dynamic(&self, configs: DynamicBrokerConfigs) {
        *self.dynamic.write().unwrap_or_else(|p| p.into_inner()) = configs;
    }

    pub fn topic_i64(&self, name: &str, overrides: &BTreeMap<String, String>) -> i64 {
        topic_def(name).map_or(0, |d| self.topic_value(d, overrides).0.parse().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BrokerConfig {
        BrokerConfig::new(
            PathBuf::from("/tmp/x"),
            "127.0.0.1:9092".parse().expect("addr"),
            None,
            0,
        )
    }

    #[test]
    fn topic_values_come_from_override_then_broker_then_default() {
        let mut c = config();
        let def = topic_def("retention.ms").expect("known");
        assert_eq!(
            c.topic_value(def, &BTreeMap::new()),
            ("604800000".into(), ConfigSource::Default)
        );
        c.set("log.retention.ms", "1000").expect("valid");
        assert_eq!(
            c.topic_value(def, &BTreeMap::new()),
            ("1000".into(), ConfigSource::StaticBroker)
        );
        let o = BTreeMap::from([("retention.ms".to_string(), "5".to_string())]);
        assert_eq!(
            c.topic_value(def, &o),
            ("5".into(), ConfigSource::DynamicTopic)
        );
    }

    #[test]
    fn unknown_and_invalid_settings_are_refused_with_a_reason() {
        let mut c = config();
        assert!(c
            .set("num.partitoins", "3")
            .expect_err("must be refused")
            .contains("unknown setting"));
        assert!(c
            .set("num.partitions", "zero")
            .expect_err("must be refused")
            .contains("expected an integer"));
        assert!(c
            .set("auto.create.topics.enable", "yes")
            .expect_err("must be refused")
            .contains("true or false"));
        let def = topic_def("message.timestamp.type").expect("known");
        assert!(validate(def, "LogAppendTime").is_ok());
        assert!(validate(def, "Wallclock").is_err());
    }

    #[test]
    fn unknown_settings_suggest_the_nearest_known_one() {
        let mut c = config();
        let e = c.set("num.partitoins", "3").expect_err("refused");
        assert!(e.contains("did you mean 'num.partitions'"), "{e}");
        let e = c.set("log.retention.hour", "3").expect_err("refused");
        assert!(
            e.contains("did you mean 'log.retention.ms'") || e.contains("did you mean"),
            "{e}"
        );
        // A topic setting at broker level points at its broker synonym.
        let e = c.set("retention.ms", "3").expect_err("refused");
        assert!(e.contains("did you mean 'log.retention.ms'"), "{e}");
        let e = c
            .set("completely.unrelated.thing.here", "3")
            .expect_err("refused");
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn layers_apply_file_then_environment_then_flags() {
        let dir = std::env::temp_dir().join(format!("gregor-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("gregor.toml");
        std::fs::write(
            &file,
            "num.partitions = 4\n\"log.retention.ms\" = 1000\nlisteners = \"PLAINTEXT://127.0.0.1:19092\"\n[auto.create.topics]\nenable = false\n",
        )
        .expect("write");
        let env = vec![
            ("GREGOR_LOG_RETENTION_MS".to_string(), "2000".to_string()),
            ("GREGOR_NODE_ID".to_string(), "7".to_string()),
            ("GREGOR_LOG".to_string(), "debug".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let flags = [("node.id", "9".to_string(), "--node-id")];
        let c = BrokerConfig::from_layers(Some(&file), &env, &flags).expect("valid");
        let effective: BTreeMap<&str, (String, String)> = c
            .effective()
            .into_iter()
            .map(|(k, v, o)| (k, (v, o)))
            .collect();
        assert_eq!(effective["num.partitions"].0, "4");
        assert!(effective["num.partitions"].1.starts_with("file "));
        assert_eq!(effective["auto.create.topics.enable"].0, "false");
        assert_eq!(
            effective["log.retention.ms"],
            (
                "2000".to_string(),
                "env GREGOR_LOG_RETENTION_MS".to_string()
            )
        );
        assert_eq!(
            effective["node.id"],
            ("9".to_string(), "flag --node-id".to_string())
        );
        assert_eq!(effective["log.segment.bytes"].1, "default");
        assert_eq!(c.node_id, 9);
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 19092)));
        assert_eq!(c.metrics, Some(SocketAddr::from(([127, 0, 0, 1], 9644))));
        let bad_env = vec![("GREGOR_NUM_PARTITONS".to_string(), "3".to_string())];
        let e = BrokerConfig::from_layers(None, &bad_env, &[]).expect_err("unknown");
        assert!(
            e.contains("GREGOR_NUM_PARTITONS") && e.contains("num.partitions"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn environment_names_map_to_settings_and_back() {
        for def in BROKER_CONFIGS.iter() {
            assert_eq!(env_key(&env_var(def.name)).as_deref(), Some(def.name));
        }
        assert_eq!(env_key("GREGOR_LOG"), None);
        assert_eq!(env_key("HOME"), None);
    }
}
