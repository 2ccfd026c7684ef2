//! The broker's shared state: cluster metadata and the partitions this broker hosts.
//!
//! Locking: the metadata log has one mutex, taken only to change metadata; readers use the
//! latest [`MetadataImage`] snapshot. Each partition has its own log mutex, held for the
//! in-memory part of an append or a read plan and never across an await, so different
//! partitions proceed in parallel and no global lock sits on the data path. The appends'
//! fsyncs (group commit, `Partition::make_durable`) run outside it; the rarer fsyncs of a
//! segment roll, a truncation, the log-start file (DeleteRecords, retention) and a cleaned
//! segment's swap run under it (ARCHITECTURE.md, Locks).
//!
//! The module's parts: `partition` (one partition's log, replica state and waits),
//! `placement`, `topics` (metadata changes), `reconcile` (images applied here),
//! `maintenance` (flushes, retention, compaction), `coordinators` (their internal topics
//! and records). `Broker` is the one value that holds them all; handlers reach it through
//! `RequestContext::broker`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use gregor_cluster::{
    ClusterNode, MetadataImage, MetadataLog, MetadataRecord, PartitionMeta, TopicMeta,
};
use gregor_storage::{Disk, LeaderEpoch, LogConfig, Offset, PartitionLog, StorageError};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::group::store::{self as group_store, OFFSETS_TOPIC};
use crate::group::{GroupCoordinator, GroupLog, GroupSettings};
use crate::txn::{store as txn_store, TxnCoordinator, TxnHost, TxnMeta, TXN_TOPIC};
use gregor_protocol::batch::BatchHeader;
use kafka_protocol::error::ResponseError;

mod coordinators;
mod maintenance;
mod metadata;
mod partition;
mod partitions;
mod placement;
mod reconcile;
mod topics;

pub use metadata::{Metadata, ProducerIds};
pub use partition::*;
pub use partitions::Partitions;
pub use placement::*;
pub use topics::*;

pub use gregor_cluster::net::now_ms;

/// Kafka's rule for topic names.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name '{name}' is not allowed"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters; the limit is 249",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("topic name '{name}' has the character '{c}'; only ASCII letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

/// Topics Kafka treats as internal.
pub fn is_internal_topic(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

pub type TopicPartition = (String, i32);

#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    disk: Arc<dyn Disk>,
    /// The image and where metadata changes go.
    pub metadata: Metadata,
    /// The partitions hosted here.
    pub partitions: Partitions,
    /// Whether this start found the clean-shutdown marker (every log closed and fsynced).
    pub clean_start: bool,
    pub producer_ids: ProducerIds,
    /// The classic consumer-group coordinator; its state lives in `__consumer_offsets`.
    pub groups: GroupCoordinator,
    /// The transaction coordinator; its state lives in `__transaction_state`.
    pub txns: TxnCoordinator,
    /// Serializes applying images to the partitions.
    reconcile_lock: Mutex<Option<Arc<MetadataImage>>>,
    /// Internal-topic partitions whose groups or transactions are being loaded (this
    /// broker is becoming their leader): their coordinator requests are answered
    /// COORDINATOR_LOAD_IN_PROGRESS, which clients retry, never as if the group or the
    /// transactional id did not exist (`true` for `__transaction_state`).
    loading: Mutex<std::collections::BTreeSet<(bool, i32)>>,
    /// Connections to transaction coordinators, for Produce's verification.
    pub(crate) verify_conns: crate::peer::ConnPool,
    /// Client quotas' measurements (`quota.rs`).
    pub(crate) quotas: crate::quota::Quotas,
    /// Incremental fetch sessions (`fetch_session.rs`).
    pub(crate) fetch_sessions: crate::fetch_session::FetchSessions,
    /// TLS, SASL and the authorizer.
    pub security: crate::security::Security,
}

/// Takes this node's and the cluster-wide runtime broker configs from the metadata image.
fn load_dynamic_configs(config: &BrokerConfig, image: &MetadataImage) {
    config.set_dynamic(crate::config::DynamicBrokerConfigs {
        node: image.broker_configs(&config.node_id.to_string()),
        default: image.broker_configs(""),
    });
}

/// The data directory's clean-shutdown marker.
const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

impl Broker {
    /// The disk every file of this broker is written through (the simulator's can lose
    /// what was not fsynced).
    pub fn disk(&self) -> Arc<dyn Disk> {
        self.disk.clone()
    }

    /// Opens the data directory: cluster identity, metadata log, and every partition log
    /// (recovering each).
    pub fn open(config: BrokerConfig, disk: Arc<dyn Disk>) -> Result<Arc<Self>, BrokerError> {
        let dir = config.data_dir.clone();
        disk.create_dir_all(&dir).map_err(|e| {
            BrokerError::Storage(StorageError::io("create data directory", &dir, e))
        })?;
        let cluster_id = load_or_create_cluster_id(disk.as_ref(), &dir, config.node_id)?;
        // One marker for the data directory (Kafka's `.kafka_cleanshutdown`): written after
        // every log closed cleanly, removed durably before anything new is appended.
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean_start = disk.exists(&marker);
        if clean_start {
            disk.remove_file(&marker)
                .map_err(|e| BrokerError::Storage(StorageError::io("remove", &marker, e)))?;
            disk.sync_dir(&dir)
                .map_err(|e| BrokerError::Storage(StorageError::io("fsync", &dir, e)))?;
        }
        let metadata = MetadataLog::open(disk.clone(), &dir)
            .map_err(|e| BrokerError::Metadata(e.to_string()))?;
        let image = metadata.image().clone();
        load_dynamic_configs(&config, &image);
        let groups = GroupCoordinator::new(GroupSettings {
            min_session_timeout_ms: config.settings().group_min_session_timeout_ms as i32,
            max_session_timeout_ms: config.settings().group_max_session_timeout_ms as i32,
            initial_rebalance_delay_ms: config.settings().group_initial_rebalance_delay_ms as i32,
            offsets_retention_ms: config
                .settings()
                .offsets_retention_minutes
                .saturating_mul(60_000),
            offset_metadata_max_bytes: config.settings().offset_metadata_max_bytes.max(0) as usize,
        });
        let txns = TxnCoordinator::new(config.settings().transaction_max_timeout_ms as i32);
        let fetch_sessions = crate::fetch_session::FetchSessions::new(
            config
                .settings()
                .max_incremental_fetch_session_cache_slots
                .max(0) as usize,
        );
        let quotas = crate::quota::Quotas::new(
            std::time::Duration::from_secs(
                config.settings().quota_window_size_seconds.max(1) as u64
            ),
            config.settings().quota_window_num.max(2) as usize,
        );
        let security = crate::security::Security::new(&config).map_err(BrokerError::Config)?;
        let broker = Arc::new(Broker {
            security,
            txns,
            partitions: Partitions::new(config.node_id, dir, disk.clone(), clean_start),
            config,
            cluster_id,
            disk,
            metadata: Metadata::new(metadata),
            producer_ids: ProducerIds::default(),
            groups,
            clean_start,
            reconcile_lock: Mutex::new(None),
            loading: Mutex::new(Default::default()),
            verify_conns: Default::default(),
            quotas,
            fetch_sessions,
        });
        broker.partitions.remove_deleted_dirs();
        let started = tokio::time::Instant::now();
        let mut count = 0usize;
        for topic in image.topics() {
            for index in 0..topic.partitions.len() as i32 {
                broker.open_partition(topic, index)?;
                count += 1;
            }
        }
        tracing::info!(
            partitions = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition logs opened"
        );
        // In a cluster they go through the controller once this broker is registered.
        if broker
            .config
            .get("controller.quorum.voters")
            .trim()
            .is_empty()
        {
            // A single node commits locally: this does not wait.
            block_on(broker.apply_bootstrap_records())??;
        }
        broker.load_groups()?;
        broker.load_txns()?;
        // Finish any transaction whose outcome was stored but whose markers may not all be.
        broker.txns.tick(broker.as_ref(), now_ms());
        Ok(broker)
    }

    /// The image requests are answered from.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.metadata.image()
    }

    /// The storage and produce settings of a topic, from its overrides and the broker's file.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> (LogConfig, ProduceSettings) {
        let c = &self.config;
        let get = |name: &str| c.topic_i64(name, overrides);
        let policy_def =
            crate::config::topic_def("cleanup.policy").expect("cleanup.policy is in the table");
        let (policy, _) = c.topic_value(policy_def, overrides);
        let log = LogConfig {
            segment_bytes: get("segment.bytes").max(14) as u64,
            segment_ms: get("segment.ms"),
            index_interval_bytes: get("index.interval.bytes").max(1) as u64,
            flush_messages: get("flush.messages").max(1) as u64,
            flush_ms: get("flush.ms"),
            retention_ms: get("retention.ms"),
            retention_bytes: get("retention.bytes"),
            retention_enabled: policy.contains("delete"),
            compact: policy.contains("compact"),
            min_cleanable_dirty_ratio: crate::config::topic_def("min.cleanable.dirty.ratio")
                .and_then(|d| c.topic_value(d, overrides).0.parse().ok())
                .unwrap_or(0.5),
            min_compaction_lag_ms: get("min.compaction.lag.ms"),
            max_compaction_lag_ms: get("max.compaction.lag.ms"),
            delete_retention_ms: get("delete.retention.ms"),
        };
        let ts_def = crate::config::topic_def("message.timestamp.type")
            .expect("message.timestamp.type is in the table");
        let settings = ProduceSettings {
            max_message_bytes: get("max.message.bytes").max(0) as usize,
            log_append_time: c.topic_value(ts_def, overrides).0 == "LogAppendTime",
            compacted: log.compact,
            min_insync_replicas: get("min.insync.replicas").max(1) as usize,
            cache_window_bytes: c.settings().log_cache_window_bytes.max(0) as u64,
            sync_unreplicated: c.settings().log_flush_unreplicated_enable
                && ["flush.messages", "flush.ms"].iter().all(|name| {
                    crate::config::topic_def(name).is_some_and(|d| {
                        c.topic_value(d, overrides).1 == crate::config::ConfigSource::Default
                    })
                }),
        };
        (log, settings)
    }

    fn open_partition(&self, topic: &TopicMeta, index: i32) -> Result<Arc<Partition>, BrokerError> {
        self.partitions
            .open(topic, index, self.log_config(&topic.configs))
    }

    /// Clean close of every log: fsynced, indexes written, recovery points moved up; then
    /// the clean-shutdown marker, only if every log closed.
    pub fn close(&self) {
        if self.partitions.close() {
            let marker = self.config.data_dir.join(CLEAN_SHUTDOWN_FILE);
            if let Err(e) = self.disk.write_file_atomic(&marker, b"") {
                tracing::warn!(error = %e, "could not write the clean-shutdown marker; the next start verifies every active segment");
            }
        }
    }
}

/// `meta.properties` as Kafka writes it: cluster id and node id of this data directory.
fn load_or_create_cluster_id(
    disk: &dyn Disk,
    dir: &std::path::Path,
    node_id: i32,
) -> Result<String, BrokerError> {
    let path = dir.join("meta.properties");
    if let Ok(raw) = disk.read_file(&path) {
        let text = String::from_utf8_lossy(&raw);
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        };
        if let (Some(cluster), stored_node) = (field("cluster.id="), field("node.id=")) {
            if let Some(stored) = stored_node.and_then(|n| n.parse::<i32>().ok()) {
                if stored != node_id {
                    return Err(BrokerError::Config(format!(
                        "{} belongs to node {stored}, not {node_id}; start with --node-id {stored} or use another --data-dir",
                        dir.display()
                    )));
                }
            }
            return Ok(cluster);
        }
    }
    let cluster = Uuid::new_v4().simple().to_string()[..22].to_string();
    let text = format!("version=1\ncluster.id={cluster}\nnode.id={node_id}\n");
    disk.write_file_atomic(&path, text.as_bytes())
        .map_err(|e| BrokerError::Storage(StorageError::io("write", &path, e)))?;
    Ok(cluster)
}
