//! The broker settings the code reads, typed: one field per setting, named after it, read
//! from the layers (defaults, file, environment, flags) each time a setting is set. A value
//! that does not parse as its field's type is an error when it is set, never a silent 0;
//! a name the code reads is a field, checked by the compiler, and a test checks that each
//! is in the settings table with the same type.

use std::collections::BTreeMap;

use super::value_in;
#[cfg(test)]
use super::{broker_def, BrokerConfig, ConfigType};

/// A setting's typed value, parsed from its text.
trait Typed: Sized {
    /// The table types a field of this type reads.
    #[cfg(test)]
    const KIND: &'static [ConfigType];
    fn parse(text: &str) -> Option<Self>;
}

impl Typed for i64 {
    #[cfg(test)]
    const KIND: &'static [ConfigType] = &[ConfigType::Int, ConfigType::Long];
    fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl Typed for bool {
    #[cfg(test)]
    const KIND: &'static [ConfigType] = &[ConfigType::Boolean];
    fn parse(text: &str) -> Option<Self> {
        match text {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
}

fn typed<T: Typed>(settings: &BTreeMap<String, String>, key: &str) -> Result<T, String> {
    let text = value_in(settings, key);
    T::parse(text).ok_or_else(|| {
        format!("invalid value '{text}' for {key}: it does not parse as this setting's type")
    })
}

macro_rules! settings {
    ($($field:ident: $ty:ident = $key:literal,)*) => {
        /// The typed broker settings (`BrokerConfig::settings`).
        #[derive(Debug, Clone, PartialEq)]
        pub struct Settings {
            $(#[doc = concat!("`", $key, "`")] pub $field: $ty,)*
        }

        impl Settings {
            /// Reads every field from the layers set so far (`settings`), else the defaults.
            pub(super) fn read(settings: &BTreeMap<String, String>) -> Result<Settings, String> {
                Ok(Settings { $($field: typed::<$ty>(settings, $key)?,)* })
            }
        }

        /// Each field's setting and whether its table type fits the field's, for the test.
        #[cfg(test)]
        pub(super) const KEYS: &[(&str, &[ConfigType])] = &[$(($key, <$ty as Typed>::KIND)),*];
    };
}

settings! {
    allow_everyone_if_no_acl_found: bool = "allow.everyone.if.no.acl.found",
    authorizer_enabled: bool = "authorizer.enabled",
    auto_create_topics_enable: bool = "auto.create.topics.enable",
    auto_leader_rebalance_enable: bool = "auto.leader.rebalance.enable",
    fetch_sendfile: bool = "fetch.sendfile",
    log_flush_unreplicated_enable: bool = "log.flush.unreplicated.enable",
    metrics_ssl_enable: bool = "metrics.ssl.enable",
    unclean_leader_election_enable: bool = "unclean.leader.election.enable",
    broker_heartbeat_interval_ms: i64 = "broker.heartbeat.interval.ms",
    broker_session_timeout_ms: i64 = "broker.session.timeout.ms",
    connection_failed_authentication_delay_ms: i64 = "connection.failed.authentication.delay.ms",
    connections_max_idle_ms: i64 = "connections.max.idle.ms",
    connections_max_reauth_ms: i64 = "connections.max.reauth.ms",
    default_replication_factor: i64 = "default.replication.factor",
    follower_replication_throttled_rate: i64 = "follower.replication.throttled.rate",
    group_coordinator_tick_ms: i64 = "group.coordinator.tick.ms",
    group_initial_rebalance_delay_ms: i64 = "group.initial.rebalance.delay.ms",
    group_max_session_timeout_ms: i64 = "group.max.session.timeout.ms",
    group_min_session_timeout_ms: i64 = "group.min.session.timeout.ms",
    leader_imbalance_check_interval_seconds: i64 = "leader.imbalance.check.interval.seconds",
    log_cache_window_bytes: i64 = "log.cache.window.bytes",
    log_cleaner_backoff_ms: i64 = "log.cleaner.backoff.ms",
    log_cleaner_io_max_bytes_per_second: i64 = "log.cleaner.io.max.bytes.per.second",
    log_refusals_interval_ms: i64 = "log.refusals.interval.ms",
    log_open_files_max: i64 = "log.open.files.max",
    log_flush_scheduler_interval_ms: i64 = "log.flush.scheduler.interval.ms",
    log_retention_check_interval_ms: i64 = "log.retention.check.interval.ms",
    log_scrub_bytes_per_second: i64 = "log.scrub.bytes.per.second",
    log_scrub_interval_ms: i64 = "log.scrub.interval.ms",
    log_writeback_bytes: i64 = "log.writeback.bytes",
    max_connections: i64 = "max.connections",
    max_incremental_fetch_session_cache_slots: i64 = "max.incremental.fetch.session.cache.slots",
    max_connections_per_ip: i64 = "max.connections.per.ip",
    node_id: i64 = "node.id",
    num_partitions: i64 = "num.partitions",
    offset_metadata_max_bytes: i64 = "offset.metadata.max.bytes",
    offsets_retention_minutes: i64 = "offsets.retention.minutes",
    offsets_topic_num_partitions: i64 = "offsets.topic.num.partitions",
    offsets_topic_replication_factor: i64 = "offsets.topic.replication.factor",
    producer_id_expiration_ms: i64 = "producer.id.expiration.ms",
    quota_window_num: i64 = "quota.window.num",
    quota_window_size_seconds: i64 = "quota.window.size.seconds",
    queued_max_request_bytes: i64 = "queued.max.request.bytes",
    replica_fetch_max_bytes: i64 = "replica.fetch.max.bytes",
    replica_fetch_wait_max_ms: i64 = "replica.fetch.wait.max.ms",
    replica_lag_time_max_ms: i64 = "replica.lag.time.max.ms",
    request_receive_timeout_ms: i64 = "request.receive.timeout.ms",
    shutdown_timeout_ms: i64 = "shutdown.timeout.ms",
    socket_request_max_bytes: i64 = "socket.request.max.bytes",
    transaction_abort_timed_out_transaction_cleanup_interval_ms: i64 = "transaction.abort.timed.out.transaction.cleanup.interval.ms",
    transaction_max_timeout_ms: i64 = "transaction.max.timeout.ms",
    transaction_state_log_num_partitions: i64 = "transaction.state.log.num.partitions",
    transaction_state_log_replication_factor: i64 = "transaction.state.log.replication.factor",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_typed_setting_is_in_the_table_with_a_type_that_fits() {
        for (key, kinds) in KEYS {
            let def =
                broker_def(key).unwrap_or_else(|| panic!("{key} is not in the settings table"));
            assert!(
                kinds.contains(&def.kind),
                "{key}: the table says {:?}, the field reads {kinds:?}",
                def.kind
            );
        }
    }

    #[test]
    fn the_defaults_read_and_a_set_value_shows_in_its_field() {
        let mut config = BrokerConfig::new(
            std::path::PathBuf::from("/tmp/gregor-settings-test"),
            "127.0.0.1:9092".parse().expect("address"),
            None,
            1,
        );
        assert_eq!(config.settings().num_partitions, 1);
        assert!(config.settings().auto_create_topics_enable);
        config.set("num.partitions", "7").expect("set");
        config
            .set("auto.create.topics.enable", "false")
            .expect("set");
        assert_eq!(config.settings().num_partitions, 7);
        assert!(!config.settings().auto_create_topics_enable);
        assert!(config.set("num.partitions", "seven").is_err());
        assert_eq!(
            config.settings().num_partitions,
            7,
            "a refused value changes nothing"
        );
    }
}
