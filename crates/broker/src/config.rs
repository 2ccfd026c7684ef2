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

/// The broker's configuration: command-line flags plus Kafka-named settings from the file.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub node_id: i32,
    /// Where Prometheus metrics are served; `None` serves none.
    pub metrics: Option<SocketAddr>,
    /// Settings from the config file, by Kafka name, already validated.
    settings: BTreeMap<String, String>,
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
            advertised_host,
            advertised_port,
            node_id,
            metrics: None,
            settings: BTreeMap::new(),
            dynamic: Default::default(),
        }
    }

    /// Reads a TOML file of flat, quoted Kafka setting names, e.g. `"num.partitions" = 3`.
    pub fn load_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("config file {} is not valid TOML: {e}", path.display()))?;
        for (key, value) in table {
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
            self.set(&key, &value)
                .map_err(|e| format!("config file {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Sets one Kafka-named broker setting, validated.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let def = broker_def(key).ok_or_else(|| {
            format!(
                "unknown setting '{key}'; see docs/configuration.md for the settings Gregor knows"
            )
        })?;
        validate(def, value)?;
        self.settings.insert(key.to_string(), value.to_string());
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
}
