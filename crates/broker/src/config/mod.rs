//! Broker and topic settings, by Kafka's names and with Kafka's defaults.
//!
//! One table ([`TOPIC_CONFIGS`]) lists every topic-level setting with its broker-level
//! synonym, default, type and documentation; [`BROKER_CONFIGS`] lists the broker-only ones.
//! A topic's effective value comes from its own override, else the broker's file, else the
//! default, and DescribeConfigs reports which.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod listener;
mod reference;
mod settings;
mod table;

pub use settings::Settings;

use listener::resolve_addr;
pub use listener::{parse_listener_list, Listener, SecurityProtocol};
use reference::unknown_setting;
pub use reference::{nearest_setting, reference_markdown};
use table::broker_def;
pub use table::{topic_def, validate, validate_topic_override, BROKER_CONFIGS, TOPIC_CONFIGS};

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
    /// `settings` typed, read again whenever one is set.
    typed: Settings,
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

/// A broker-level value in `settings` (the layers set so far), else its default.
fn value_in<'a>(settings: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    debug_assert!(
        broker_def(key).is_some(),
        "the code reads '{key}', which is not in the settings table"
    );
    if let Some(v) = settings.get(key) {
        return v;
    }
    broker_def(key).map(|d| d.default).unwrap_or("")
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
            typed: Settings::read(&BTreeMap::new())
                .expect("the settings table's defaults parse (a test checks them)"),
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
        self.node_id = self.typed.node_id as i32;
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
        let mut settings = self.settings.clone();
        settings.insert(key.to_string(), value.to_string());
        self.typed = Settings::read(&settings)?;
        self.settings = settings;
        self.origins.insert(key.to_string(), origin.to_string());
        Ok(())
    }

    /// The broker settings the code reads, typed (see `settings.rs`).
    pub fn settings(&self) -> &Settings {
        &self.typed
    }

    /// A broker-level value: from the file, else the default.
    pub fn get(&self, key: &str) -> &str {
        value_in(&self.settings, key)
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
mod tests;
