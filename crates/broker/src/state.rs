//! The broker's shared state: cluster metadata and the partitions this broker hosts.
//!
//! Locking: the metadata log has one mutex, taken only to change metadata; readers use the
//! latest [`MetadataImage`] snapshot. Each partition has its own log mutex, held for the
//! in-memory part of an append or a read plan, never across an await or an fsync, so
//! different partitions proceed in parallel and no global lock sits on the data path.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::UNIX_EPOCH;

use gregor_cluster::{
    ClusterNode, MetadataImage, MetadataLog, MetadataRecord, PartitionMeta, TopicMeta,
};
use gregor_storage::{Disk, LogConfig, PartitionLog, StorageError};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::group::store::GroupRecord;
use crate::group::store::{self as group_store, OFFSETS_TOPIC};
use crate::group::{GroupCoordinator, GroupLog, GroupSettings};
use crate::txn::{store as txn_store, TxnCoordinator, TxnHost, TxnMeta, TXN_TOPIC};
use gregor_protocol::batch::BatchHeader;
use kafka_protocol::error::ResponseError;

pub fn now_ms() -> i64 {
    gregor_cluster::net::wall_clock()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

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

/// Per-partition settings the produce path needs, derived from topic and broker config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceSettings {
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    /// Compacted topics refuse records without a key.
    pub compacted: bool,
    /// `acks=all` needs at least this many in-sync replicas.
    pub min_insync_replicas: usize,
    /// `log.cache.window.bytes`: what an fsync leaves in the page cache (0: everything).
    pub cache_window_bytes: u64,
    /// `log.flush.unreplicated.enable`, unless `flush.messages` or `flush.ms` is set: an
    /// unreplicated partition fsyncs before it acknowledges.
    pub sync_unreplicated: bool,
}

/// A partition's place in replication, from the metadata image (and, on the leader, its
/// followers' progress).
#[derive(Debug, Clone, Default)]
pub struct ReplicaState {
    /// The leader's node id; -1 when no replica can lead.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// On the leader: each follower's progress.
    pub followers: HashMap<i32, FollowerProgress>,
    /// On a follower: its log must be cut to where it diverged from the new leader's
    /// before it fetches (OffsetForLeaderEpoch).
    pub needs_truncation: bool,
    /// On the leader: an ISR change was asked of the controller and not yet applied.
    pub isr_change_pending: bool,
    /// On the leader: its log end when its epoch began. Until the high watermark reaches
    /// it, the latest offset is not known (Kafka's OFFSET_NOT_AVAILABLE).
    pub epoch_start_offset: i64,
}

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy)]
pub struct FollowerProgress {
    /// The offset of its last fetch: it holds everything below. -1 until it fetched.
    pub log_end: i64,
    /// When it was last known to hold everything the leader had (KIP-? `lastCaughtUpTime`).
    pub caught_up_ms: i64,
    /// The leader's log end and the time at its previous fetch.
    pub previous_fetch: (i64, i64),
}

/// Broker ids ordered so that consecutive ones are on different racks where possible
/// (Kafka's rack-alternated list): the first of each rack, then the second of each, ...
pub fn rack_alternating(brokers: &[gregor_cluster::BrokerMeta]) -> Vec<i32> {
    let mut by_rack: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for b in brokers {
        by_rack
            .entry(b.rack.clone().unwrap_or_default())
            .or_default()
            .push(b.node_id);
    }
    let mut order = Vec::with_capacity(brokers.len());
    for i in 0..brokers.len() {
        for ids in by_rack.values() {
            if let Some(&id) = ids.get(i) {
                order.push(id);
            }
        }
    }
    order
}

/// Progress for a new leader's followers: unknown, with a full lag allowance from `now`.
fn fresh_followers(replicas: &[i32], me: i32, now: i64) -> HashMap<i32, FollowerProgress> {
    replicas
        .iter()
        .filter(|&&b| b != me)
        .map(|&b| {
            (
                b,
                FollowerProgress {
                    log_end: -1,
                    caught_up_ms: now,
                    previous_fetch: (-1, now),
                },
            )
        })
        .collect()
}

impl ReplicaState {
    /// Whether more than one replica holds the partition (the high watermark is tracked).
    pub fn replicated(&self) -> bool {
        self.replicas.len() > 1
    }
}

#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    pub log: Mutex<PartitionLog>,
    pub settings: RwLock<ProduceSettings>,
    /// Fetches waiting for data on this partition.
    waiters: Mutex<Vec<Arc<Notify>>>,
    /// Serializes fsyncs so concurrent producers share one (group commit).
    flush_lock: tokio::sync::Mutex<()>,
    /// Where the active segment's pages were last dropped from the page cache up to
    /// (`log.cache.window.bytes`).
    cache_dropped: Arc<std::sync::atomic::AtomicU64>,
    pub metrics: crate::metrics::PartitionMetrics,
    /// This broker's id.
    pub node_id: i32,
    pub replica: Mutex<ReplicaState>,
    /// The high watermark, for `acks=all` producers waiting for it to pass their batch.
    pub hw_watch: tokio::sync::watch::Sender<i64>,
}

impl Partition {
    /// Locks the log. A panic while holding the lock cannot leave a half-applied append
    /// (appends cut the file back on error), so a poisoned lock is taken over.
    pub fn log(&self) -> std::sync::MutexGuard<'_, PartitionLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn settings(&self) -> ProduceSettings {
        *self.settings.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn replica(&self) -> std::sync::MutexGuard<'_, ReplicaState> {
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (whether this broker leads, leader epoch, in-sync replica count, replicated).
    pub fn leadership(&self) -> (bool, i32, usize, bool) {
        let r = self.replica();
        (
            r.leader == self.node_id,
            r.leader_epoch,
            r.isr.len(),
            r.replicated(),
        )
    }

    /// Whether every append must be fsynced before it is acknowledged: the partition has
    /// no other replica and `log.flush.unreplicated.enable` applies. Read before the log's
    /// lock is taken (the replica lock comes first).
    pub fn syncs_every_append(&self) -> bool {
        !self.replica().replicated() && self.settings().sync_unreplicated
    }

    /// Whether everything below `offset` is committed in leader epoch `epoch`: `None`
    /// once this broker no longer leads in that epoch. Read under the replica lock, so a
    /// high watermark that moved because this broker became a follower (or led again in a
    /// later epoch) never counts: it proves nothing about what was appended in `epoch`.
    pub fn committed_in_epoch(&self, offset: i64, epoch: i32) -> Option<bool> {
        let r = self.replica();
        if r.leader != self.node_id || r.leader_epoch != epoch {
            return None;
        }
        let hw = self.log().high_watermark();
        Some(hw >= offset)
    }

    /// Waits until everything below `offset`, appended while this broker led in `epoch`,
    /// is committed (the high watermark passed it in that epoch), or `deadline` passes.
    pub async fn await_committed(
        &self,
        offset: i64,
        epoch: i32,
        deadline: tokio::time::Instant,
    ) -> Commit {
        let mut hw = self.hw_watch.subscribe();
        loop {
            hw.borrow_and_update();
            match self.committed_in_epoch(offset, epoch) {
                None => return Commit::LeadershipLost,
                Some(true) => return Commit::Committed,
                Some(false) => {}
            }
            tokio::select! {
                changed = hw.changed() => if changed.is_err() { return Commit::LeadershipLost; },
                _ = tokio::time::sleep_until(deadline) => {
                    return match self.committed_in_epoch(offset, epoch) {
                        None => Commit::LeadershipLost,
                        Some(true) => Commit::Committed,
                        Some(false) => Commit::TimedOut,
                    };
                }
                // Leadership changes do not move the watch; look again now and then.
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
        }
    }

    /// Takes the partition's replicas, leader and ISR from the image. A new leader or
    /// epoch resets followers' progress (they get a fresh lag allowance) and makes a
    /// follower truncate before it fetches again.
    pub fn set_role(&self, meta: &PartitionMeta, now: i64) {
        let mut r = self.replica();
        let new_epoch = r.leader != meta.leader || r.leader_epoch != meta.leader_epoch;
        r.replicas = meta.replicas.clone();
        r.isr = meta.isr.clone();
        r.isr_change_pending = false;
        if new_epoch {
            if meta.leader == self.node_id || r.leader == self.node_id {
                tracing::info!(topic = %self.topic, partition = self.index, leader = meta.leader, leader_epoch = meta.leader_epoch, "partition leadership changed");
            }
            r.leader = meta.leader;
            r.leader_epoch = meta.leader_epoch;
            r.followers = fresh_followers(&meta.replicas, self.node_id, now);
            r.needs_truncation = meta.leader >= 0 && meta.leader != self.node_id;
            if meta.leader == self.node_id {
                r.epoch_start_offset = self.log().log_end();
            }
        } else {
            // Replicas added or removed by a reassignment within the epoch.
            let me = self.node_id;
            r.followers.retain(|b, _| meta.replicas.contains(b));
            for (b, fresh) in fresh_followers(&meta.replicas, me, now) {
                r.followers.entry(b).or_insert(fresh);
            }
        }
        let replicated = r.replicated();
        drop(r);
        {
            // A replica that starts tracking knows nothing committed yet: the leader's
            // fetch responses (or, on the leader, its followers' fetches) move it up.
            let mut log = self.log();
            if !replicated {
                log.track_high_watermark(None);
            } else if !log.high_watermark_tracked() {
                let start = log.log_start();
                log.track_high_watermark(Some(start));
            }
        }
        self.update_high_watermark();
    }

    /// On the leader: moves the high watermark to the smallest log end in the ISR. Wakes
    /// `acks=all` producers and fetches when it moves.
    pub fn update_high_watermark(&self) -> bool {
        let r = self.replica();
        if r.leader != self.node_id {
            return false;
        }
        let mut log = self.log();
        let mut hw = log.log_end();
        if r.replicated() {
            for member in r.isr.iter().filter(|&&m| m != self.node_id) {
                match r.followers.get(member) {
                    Some(f) if f.log_end >= 0 => hw = hw.min(f.log_end),
                    _ => return false,
                }
            }
        }
        let moved = log.advance_high_watermark(hw);
        let now_hw = log.high_watermark();
        drop(log);
        drop(r);
        self.hw_watch.send_replace(now_hw);
        if moved {
            self.wake_waiters();
        }
        moved
    }

    /// On the leader, while its high watermark is below where its epoch began (a new
    /// leader has not yet heard from its followers): (high watermark, epoch start).
    /// The latest offset is then not known, as in Kafka.
    pub fn high_watermark_lagging(&self) -> Option<(i64, i64)> {
        let r = self.replica();
        if r.leader != self.node_id || !r.replicated() {
            return None;
        }
        let hw = self.log().high_watermark();
        (hw < r.epoch_start_offset).then_some((hw, r.epoch_start_offset))
    }

    /// On the leader: a follower fetched at `fetch_offset`, so it holds everything below.
    pub fn follower_fetched(&self, follower: i32, fetch_offset: i64, now: i64) {
        let log_end = self.log().log_end();
        {
            let mut r = self.replica();
            let Some(f) = r.followers.get_mut(&follower) else {
                return;
            };
            if fetch_offset >= log_end {
                f.caught_up_ms = now;
            } else if fetch_offset >= f.previous_fetch.0 && f.previous_fetch.0 >= 0 {
                f.caught_up_ms = f.caught_up_ms.max(f.previous_fetch.1);
            }
            f.log_end = fetch_offset;
            f.previous_fetch = (log_end, now);
        }
        self.update_high_watermark();
    }

    /// On the leader: the ISR this partition should have now, if it differs: followers
    /// that fell behind for longer than `lag_max_ms` leave, caught-up ones join.
    pub fn wanted_isr(
        &self,
        now: i64,
        lag_max_ms: i64,
        alive: &dyn Fn(i32) -> bool,
    ) -> Option<(i32, Vec<i32>)> {
        let r = self.replica();
        if r.leader != self.node_id || r.isr_change_pending || !r.replicated() {
            return None;
        }
        let hw = self.log().high_watermark();
        let mut isr = vec![self.node_id];
        for &b in r.replicas.iter().filter(|&&b| b != self.node_id) {
            let Some(f) = r.followers.get(&b) else {
                continue;
            };
            let lagging = now - f.caught_up_ms > lag_max_ms;
            // A follower joins only while it is alive and fetching: its last fetch reached
            // the high watermark and was recent.
            let fetching = now - f.previous_fetch.1 <= lag_max_ms.min(5_000);
            let keep = if r.isr.contains(&b) {
                !lagging
            } else {
                f.log_end >= hw && f.log_end >= 0 && !lagging && fetching && alive(b)
            };
            if keep {
                isr.push(b);
            }
        }
        let mut sorted_now = r.isr.clone();
        sorted_now.sort_unstable();
        let mut sorted_new = isr.clone();
        sorted_new.sort_unstable();
        (sorted_now != sorted_new).then_some((r.leader_epoch, isr))
    }

    /// Registers a fetch to be woken by the next append.
    pub fn add_waiter(&self, notify: Arc<Notify>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // Drop the entries of fetches that already returned, so an idle partition's list
        // stays as long as the number of fetches waiting on it.
        waiters.retain(|w| Arc::strong_count(w) > 1);
        waiters.push(notify);
    }

    /// Wakes every waiting fetch.
    pub fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for w in waiters {
            w.notify_one();
        }
    }

    /// Makes everything below `offset` durable, sharing the fsync with concurrent callers.
    pub async fn make_durable(&self, offset: i64) -> Result<(), StorageError> {
        // The log's own flushed offset, which a truncation lowers: offsets written again
        // after a cut are not durable because the old ones were.
        if self.log().flushed_offset() >= offset {
            return Ok(());
        }
        let _turn = self.flush_lock.lock().await;
        if self.log().flushed_offset() >= offset {
            return Ok(()); // an fsync that ran while we waited covered us
        }
        let (file, path, end, size, cuts) = {
            let mut log = self.log();
            let (file, path, end, size) = log.sync_target();
            (file, path, end, size, log.cuts())
        };
        let window = self.settings().cache_window_bytes;
        let dropped = self.cache_dropped.clone();
        let started = tokio::time::Instant::now();
        let synced = crate::blocking::offload(move || {
            file.sync_data()
                .map_err(|e| StorageError::io("fsync", &path, e))?;
            if window > 0 && size > window {
                // Only the part not dropped yet (a smaller size: a new segment).
                let below = size - window;
                let from = match dropped.load(Ordering::Relaxed) {
                    d if d > below => 0,
                    d => d,
                };
                if below - from >= DROP_STEP_BYTES {
                    drop_cached(file.as_ref(), &path, from, below);
                    dropped.store(below, Ordering::Relaxed);
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageError::io("fsync", PathBuf::new(), std::io::Error::other(e)))
        .and_then(|r| r);
        crate::metrics::log_flushed(started.elapsed());
        if let Err(e) = synced {
            // A failed fsync may have lost pages: the log goes offline rather than serve them.
            return Err(self.log().fail(e));
        }
        {
            let mut log = self.log();
            // A cut while the fsync ran: what is below `end` now may be new, unsynced
            // bytes, so the fsync proves nothing about it.
            if log.cuts() == cuts {
                log.mark_flushed(end);
            }
        }
        Ok(())
    }
}

/// Pages are dropped from the page cache at least this many at a time.
const DROP_STEP_BYTES: u64 = 1 << 20;

/// Drops the clean pages of `file` in `from..below` from the page cache (they were just
/// fsynced). Advice only: a failure is logged and changes nothing else.
pub(crate) fn drop_cached(
    file: &dyn gregor_storage::DiskFile,
    path: &std::path::Path,
    from: u64,
    below: u64,
) {
    // An empty range would read as "to the end of the file" to fadvise.
    if below <= from {
        return;
    }
    let Some(fd) = file.fd() else {
        return;
    };
    if let Err(e) = rustix::fs::fadvise(
        fd,
        from,
        std::num::NonZeroU64::new(below - from),
        rustix::fs::Advice::DontNeed,
    ) {
        tracing::debug!(path = %path.display(), error = %e, "could not drop a segment's pages from the page cache");
    }
}

/// How a wait for an append to be committed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The high watermark passed the append in the epoch it was appended in.
    Committed,
    /// This broker stopped leading, or the leader epoch changed: the append may be
    /// truncated, so it must not be acknowledged (NOT_LEADER_OR_FOLLOWER, retriable).
    LeadershipLost,
    /// The in-sync replicas did not copy it in time.
    TimedOut,
}

pub type TopicPartition = (String, i32);

#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    disk: Arc<dyn Disk>,
    metadata: Mutex<MetadataLog>,
    image: RwLock<Arc<MetadataImage>>,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// Whether the last stop was clean (its marker was found at start-up).
    /// Whether this start found the clean-shutdown marker (every log closed and fsynced).
    pub clean_start: bool,
    /// The current block of producer ids: (next to hand out, end of block).
    producer_ids: Mutex<(i64, i64)>,
    /// The classic consumer-group coordinator; its state lives in `__consumer_offsets`.
    pub groups: GroupCoordinator,
    /// The transaction coordinator; its state lives in `__transaction_state`.
    pub txns: TxnCoordinator,
    /// Set when this broker is part of a cluster (`controller.quorum.voters`): metadata
    /// changes go through the controller and the image comes from the replicated log.
    cluster: OnceLock<Arc<ClusterNode>>,
    /// Serializes applying images to the partitions.
    reconcile_lock: Mutex<Option<Arc<MetadataImage>>>,
    /// Internal-topic partitions whose groups or transactions are being loaded (this
    /// broker is becoming their leader): their coordinator requests are answered
    /// COORDINATOR_LOAD_IN_PROGRESS, which clients retry, never as if the group or the
    /// transactional id did not exist (`true` for `__transaction_state`).
    loading: Mutex<std::collections::BTreeSet<(bool, i32)>>,
    /// Connections to transaction coordinators, for Produce's verification.
    pub(crate) verify_conns: crate::replica::ConnPool,
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

/// Where `gregor user create --data-dir` leaves records for the broker's next start: one
/// JSON metadata record per line.
pub fn bootstrap_records_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("bootstrap-records.jsonl")
}

/// One line of the bootstrap records: a user's SCRAM credential.
pub fn bootstrap_record_line(
    user: &str,
    mechanism: &str,
    credential: gregor_cluster::ScramCredentialMeta,
) -> Result<String, String> {
    serde_json::to_string(&MetadataRecord::ScramCredential {
        user: user.to_string(),
        mechanism: mechanism.to_string(),
        credential,
    })
    .map_err(|e| e.to_string())
}

/// The data directory's clean-shutdown marker.
const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// Producer ids reserved per metadata record.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Runs `fut` from synchronous code: at once when it need not wait (a single node's
/// metadata is local), else on this worker of the multi-threaded runtime, blocked until
/// it is done. Only asynchronous callers may run on a single-threaded runtime (the
/// simulator's) when `fut` waits for the metadata quorum.
fn block_on<F: std::future::Future>(fut: F) -> Result<F::Output, BrokerError> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
        return Ok(v);
    }
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|e| BrokerError::NoController(e.to_string()))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(BrokerError::NoController(
            "a metadata change that waits for the quorum was made from synchronous code on a single-threaded runtime".into(),
        ));
    }
    Ok(tokio::task::block_in_place(|| handle.block_on(fut)))
}

impl Broker {
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
        let image = Arc::new(metadata.image().clone());
        load_dynamic_configs(&config, &image);
        let groups = GroupCoordinator::new(GroupSettings {
            min_session_timeout_ms: config.get_i64("group.min.session.timeout.ms") as i32,
            max_session_timeout_ms: config.get_i64("group.max.session.timeout.ms") as i32,
            initial_rebalance_delay_ms: config.get_i64("group.initial.rebalance.delay.ms") as i32,
            offsets_retention_ms: config
                .get_i64("offsets.retention.minutes")
                .saturating_mul(60_000),
            offset_metadata_max_bytes: config.get_i64("offset.metadata.max.bytes").max(0) as usize,
        });
        let txns = TxnCoordinator::new(config.get_i64("transaction.max.timeout.ms") as i32);
        let security = crate::security::Security::new(&config).map_err(BrokerError::Config)?;
        let broker = Arc::new(Broker {
            security,
            txns,
            config,
            cluster_id,
            disk,
            metadata: Mutex::new(metadata),
            image: RwLock::new(image.clone()),
            partitions: RwLock::new(HashMap::new()),
            producer_ids: Mutex::new((0, 0)),
            groups,
            clean_start,
            cluster: OnceLock::new(),
            reconcile_lock: Mutex::new(None),
            loading: Mutex::new(Default::default()),
            verify_conns: Default::default(),
        });
        broker.remove_deleted_dirs();
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
            broker.apply_bootstrap_records()?;
        }
        broker.load_groups()?;
        broker.load_txns()?;
        // Finish any transaction whose outcome was stored but whose markers may not all be.
        broker.txns.tick(broker.as_ref(), now_ms());
        Ok(broker)
    }

    /// Calls `f` with every batch of every partition of an internal topic, in log order.
    fn replay_internal(
        &self,
        topic: &str,
        mut f: impl FnMut(i32, &BatchHeader, &[u8]),
    ) -> Result<(), BrokerError> {
        let Some(meta) = self.image().topic(topic).cloned() else {
            return Ok(());
        };
        for index in 0..meta.partitions.len() as i32 {
            let Some(partition) = self.partition(topic, index) else {
                continue;
            };
            let log = partition.log();
            let mut offset = log.log_start();
            while offset < log.log_end() {
                let bytes = log.read(offset, 8 << 20, true)?.read()?;
                if bytes.is_empty() {
                    break;
                }
                for (at, header) in gregor_protocol::batch::batches(&bytes) {
                    offset = header.last_offset() + 1;
                    f(index, &header, &bytes[at..at + header.total_bytes()]);
                }
            }
        }
        Ok(())
    }

    /// Replays every `__transaction_state` partition into the transaction coordinator.
    fn load_txns(&self) -> Result<(), BrokerError> {
        let mut records = Vec::new();
        self.replay_internal(TXN_TOPIC, |index, header, batch| {
            records.extend(decode_internal(
                TXN_TOPIC,
                index,
                header,
                batch,
                txn_store::decode,
            ));
        })?;
        self.txns.load(records);
        Ok(())
    }

    /// Replays every `__consumer_offsets` partition into the group coordinator. Offsets
    /// committed in a transaction count from its commit marker on; an abort drops them;
    /// those of transactions still open are handed over as pending.
    fn load_groups(&self) -> Result<(), BrokerError> {
        let mut records = Vec::new();
        let mut open: HashMap<(i32, i64), Vec<GroupRecord>> = HashMap::new();
        self.replay_internal(OFFSETS_TOPIC, |index, header, batch| {
            if header.is_control() {
                let pending = open.remove(&(index, header.producer_id));
                if gregor_protocol::batch::marker_kind(batch) == Some(true) {
                    records.extend(pending.unwrap_or_default());
                }
                return;
            }
            let decoded = decode_internal(OFFSETS_TOPIC, index, header, batch, group_store::decode);
            if header.is_transactional() {
                open.entry((index, header.producer_id))
                    .or_default()
                    .extend(decoded);
            } else {
                records.extend(decoded);
            }
        })?;
        self.groups.load(records);
        self.groups.load_txn_offsets(
            open.into_iter()
                .flat_map(|((_, pid), rs)| rs.into_iter().map(move |r| (pid, r)))
                .collect(),
        );
        Ok(())
    }

    /// Creates `__consumer_offsets` (compacted, `offsets.topic.num.partitions`) if missing.
    pub fn ensure_offsets_topic(&self) -> Result<TopicMeta, BrokerError> {
        self.ensure_internal_topic(
            OFFSETS_TOPIC,
            "offsets.topic.num.partitions",
            "offsets.topic.segment.bytes",
            "offsets.topic.replication.factor",
        )
    }

    /// Creates `__transaction_state` (compacted, `transaction.state.log.num.partitions`)
    /// if missing.
    pub fn ensure_txn_topic(&self) -> Result<TopicMeta, BrokerError> {
        self.ensure_internal_topic(
            TXN_TOPIC,
            "transaction.state.log.num.partitions",
            "transaction.state.log.segment.bytes",
            "transaction.state.log.replication.factor",
        )
    }

    fn ensure_internal_topic(
        &self,
        name: &str,
        partitions_key: &str,
        segment_key: &str,
        replication_key: &str,
    ) -> Result<TopicMeta, BrokerError> {
        if let Some(t) = self.image().topic(name) {
            return Ok(t.clone());
        }
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                self.config.get(segment_key).to_string(),
            ),
        ]);
        // Kafka refuses to create them with fewer live brokers than the replication factor;
        // Gregor takes as many as there are, so a single node and a small cluster work.
        let rf = (self.config.get_i64(replication_key) as i32)
            .min(self.live_brokers().len() as i32)
            .max(1);
        let partitions = self.config.get_i64(partitions_key) as i32;
        let created = self
            .assign_replicas(name, partitions, rf, 0)
            .and_then(|a| block_on(self.create_topic_assigned(name, a, configs))?);
        match created {
            Ok(t) => Ok(t),
            Err(BrokerError::TopicExists) => {
                // Another broker created it a moment ago: it is in the image once the
                // metadata log is applied here.
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
                loop {
                    let image = self
                        .cluster
                        .get()
                        .map_or_else(|| self.image(), |n| n.image());
                    if let Some(t) = image.topic(name) {
                        return Ok(t.clone());
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(BrokerError::UnknownTopic);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            Err(e) => Err(e),
        }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(topic.to_string(), index))
            .cloned()
    }

    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{index}"))
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
            cache_window_bytes: c.get_i64("log.cache.window.bytes").max(0) as u64,
            sync_unreplicated: c.get_bool("log.flush.unreplicated.enable")
                && ["flush.messages", "flush.ms"].iter().all(|name| {
                    crate::config::topic_def(name).is_some_and(|d| {
                        c.topic_value(d, overrides).1 == crate::config::ConfigSource::Default
                    })
                }),
        };
        (log, settings)
    }

    fn open_partition(&self, topic: &TopicMeta, index: i32) -> Result<Arc<Partition>, BrokerError> {
        let (log_config, settings) = self.log_config(&topic.configs);
        let log = PartitionLog::open_with(
            self.disk.clone(),
            self.partition_dir(&topic.name, index),
            log_config,
            now_ms(),
            self.clean_start,
        )?;
        if log.damage().is_some() {
            crate::metrics::damaged_batch();
        }
        let hw = log.high_watermark();
        let meta = topic.partitions.get(index as usize);
        let partition = Arc::new(Partition {
            node_id: self.config.node_id,
            replica: Mutex::new(ReplicaState {
                leader: meta.map_or(self.config.node_id, |m| m.leader),
                leader_epoch: meta.map_or(0, |m| m.leader_epoch),
                replicas: meta.map_or_else(|| vec![self.config.node_id], |m| m.replicas.clone()),
                isr: meta.map_or_else(|| vec![self.config.node_id], |m| m.isr.clone()),
                followers: meta.map_or_else(HashMap::new, |m| {
                    fresh_followers(&m.replicas, self.config.node_id, now_ms())
                }),
                // A replica opened as a follower first checks its log against the leader's.
                needs_truncation: meta
                    .is_some_and(|m| m.leader >= 0 && m.leader != self.config.node_id),
                epoch_start_offset: log.log_end(),
                ..ReplicaState::default()
            }),
            hw_watch: tokio::sync::watch::Sender::new(hw),
            topic: topic.name.clone(),
            topic_id: topic.topic_id,
            index,
            log: Mutex::new(log),
            settings: RwLock::new(settings),
            waiters: Mutex::new(Vec::new()),
            flush_lock: tokio::sync::Mutex::new(()),
            cache_dropped: Default::default(),
            metrics: crate::metrics::PartitionMetrics::new(&topic.name, index),
        });
        self.partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.name.clone(), index), partition.clone());
        Ok(partition)
    }

    /// Appends the records that `build` makes from the current image, durably, under the
    /// metadata lock (so two creators of one topic cannot both succeed), and publishes the
    /// new image.
    async fn commit_metadata(
        &self,
        build: impl FnOnce(&MetadataImage) -> Result<Vec<MetadataRecord>, BrokerError>,
    ) -> Result<Arc<MetadataImage>, BrokerError> {
        if let Some(node) = self.cluster.get() {
            // Through the active controller; `write` returns once the records are applied
            // here, and the image is then reconciled with the partitions at once.
            let records = build(&self.image())?;
            let node = node.clone();
            node.write(records).await.map_err(|e| match e {
                gregor_cluster::ControlError::TopicExists(_) => BrokerError::TopicExists,
                e => BrokerError::NoController(e.to_string()),
            })?;
            let image = node.image();
            self.reconcile(image.clone());
            return Ok(image);
        }
        let mut log = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        let records = build(log.image())?;
        log.append(&records)
            .map_err(|e| BrokerError::Metadata(e.to_string()))?;
        let image = Arc::new(log.image().clone());
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image.clone();
        Ok(image)
    }

    /// [`Self::commit_metadata`] from synchronous code, which must run on a worker of the
    /// multi-threaded runtime (the coordinators' internal topics, the admin handlers not
    /// yet asynchronous). Asynchronous callers await `commit_metadata`: only they may run
    /// on a single-threaded runtime such as the simulator's.
    fn commit_metadata_blocking(
        &self,
        build: impl FnOnce(&MetadataImage) -> Result<Vec<MetadataRecord>, BrokerError>,
    ) -> Result<Arc<MetadataImage>, BrokerError> {
        block_on(self.commit_metadata(build))?
    }

    /// Commits metadata records as they are (ACLs, SCRAM credentials).
    pub fn commit_records(&self, records: Vec<MetadataRecord>) -> Result<(), BrokerError> {
        self.commit_metadata_blocking(|_| Ok(records)).map(|_| ())
    }

    /// Commits the records `gregor user create --data-dir` left for the next start (the
    /// first users, created offline as Kafka's `kafka-storage format --add-scram` does),
    /// then removes their file.
    pub fn apply_bootstrap_records(&self) -> Result<(), BrokerError> {
        let path = bootstrap_records_path(&self.config.data_dir);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut records = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let record: MetadataRecord = serde_json::from_str(line).map_err(|e| {
                BrokerError::Config(format!(
                    "{} line {}: {e}; remove the line or the file and create the user again",
                    path.display(),
                    n + 1
                ))
            })?;
            records.push(record);
        }
        let count = records.len();
        self.commit_records(records)?;
        std::fs::remove_file(&path)
            .map_err(|e| BrokerError::Storage(StorageError::io("remove", &path, e)))?;
        tracing::info!(
            records = count,
            "bootstrap records (users created offline) committed"
        );
        Ok(())
    }

    /// Creates a topic with `partitions` partitions and the given (validated) overrides.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, BrokerError> {
        let rf = self.config.get_i64("default.replication.factor") as i32;
        let assignment = self.assign_replicas(name, partitions, rf, 0)?;
        self.create_topic_assigned(name, assignment, configs).await
    }

    /// [`Self::create_topic`] from synchronous code on the multi-threaded runtime.
    pub fn create_topic_blocking(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, BrokerError> {
        block_on(self.create_topic(name, partitions, configs))?
    }

    /// Why this broker takes no writes now, if it does not: in a cluster, its last
    /// heartbeat the controller confirmed is older than `broker.session.timeout.ms`, so
    /// its leaderships may have moved (self-fencing). `None` on a single node.
    pub fn self_fenced(&self) -> Option<String> {
        let age = self.cluster.get()?.lease_expired()?;
        Some(if age == std::time::Duration::MAX {
            "this broker has not yet heard from the active controller; refresh metadata and retry"
                .into()
        } else {
            format!(
                "this broker's last heartbeat to the active controller was {} ms ago, past broker.session.timeout.ms: it may no longer lead; refresh metadata and retry",
                age.as_millis()
            )
        })
    }

    /// The brokers that can take replicas now: this one alone on a single node, every
    /// registered and unfenced broker in a cluster.
    pub fn live_brokers(&self) -> Vec<gregor_cluster::BrokerMeta> {
        if self.cluster.get().is_none() {
            return vec![gregor_cluster::BrokerMeta {
                node_id: self.config.node_id,
                host: self.config.advertised_host.clone(),
                port: i32::from(self.config.advertised_port),
                rack: None,
                fenced: false,
                endpoints: self.config.endpoints(),
                incarnation: 0,
            }];
        }
        self.image()
            .brokers()
            .filter(|b| !b.fenced)
            .cloned()
            .collect()
    }

    /// Whether this broker is part of a cluster.
    pub fn clustered(&self) -> Option<&Arc<ClusterNode>> {
        self.cluster.get()
    }

    /// Replicas for partitions `first..first+count` of a topic, `rf` each (-1: the
    /// default), spread as Kafka does: brokers ordered so that racks alternate, each
    /// partition's replicas consecutive in that order from a start that moves by one per
    /// partition, so leaders (the first replica) spread evenly.
    pub fn assign_replicas(
        &self,
        name: &str,
        count: i32,
        rf: i32,
        first: i32,
    ) -> Result<Vec<Vec<i32>>, BrokerError> {
        let rf = if rf == -1 {
            self.config.get_i64("default.replication.factor") as i32
        } else {
            rf
        };
        let mut live = self.live_brokers();
        if rf < 1 || rf as usize > live.len() {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "replication factor {rf} is not between 1 and the {} live broker(s)",
                live.len()
            )));
        }
        live.sort_by_key(|b| b.node_id);
        let order = rack_alternating(&live);
        let n = order.len();
        let start = name
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
            % n;
        Ok((first..first + count)
            .map(|p| {
                (0..rf as usize)
                    .map(|j| order[(start + p as usize + j) % n])
                    .collect()
            })
            .collect())
    }

    /// Creates a topic whose partition `i` has the replicas `assignment[i]` (the first
    /// one leads).
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        assignment: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, BrokerError> {
        let topic_id = Uuid::new_v4();
        let partitions = assignment.len() as i32;
        let image = self
            .commit_metadata(|image| {
                if image.topic(name).is_some() {
                    return Err(BrokerError::TopicExists);
                }
                let mut records = vec![MetadataRecord::Topic {
                    name: name.to_string(),
                    topic_id,
                    configs,
                }];
                records.extend(assignment.into_iter().enumerate().map(|(p, replicas)| {
                    MetadataRecord::Partition {
                        topic_id,
                        partition: p as i32,
                        leader: replicas[0],
                        isr: Some(replicas.clone()),
                        replicas,
                        leader_epoch: 0,
                    }
                }));
                Ok(records)
            })
            .await?;
        let topic = image
            .topic(name)
            .cloned()
            .ok_or(BrokerError::UnknownTopic)?;
        self.open_local_replicas(&topic)?;
        tracing::info!(topic = name, partitions, %topic_id, "created topic");
        Ok(topic)
    }

    /// Opens the partitions of `topic` this broker holds a replica of and has not opened.
    fn open_local_replicas(&self, topic: &TopicMeta) -> Result<(), BrokerError> {
        let now = now_ms();
        for (index, meta) in topic.partitions.iter().enumerate() {
            if !meta.replicas.contains(&self.config.node_id) {
                continue;
            }
            let (partition, led_before) = match self.partition(&topic.name, index as i32) {
                Some(p) if p.topic_id == topic.topic_id => {
                    let led = p.leadership().0;
                    (p, Some(led))
                }
                _ => (self.open_partition(topic, index as i32)?, None),
            };
            // Leading a coordinator partition starts with loading its state: until that is
            // done its requests must not find the groups (or transactions) missing, so
            // the partition is marked before its leadership shows.
            let internal = match topic.name.as_str() {
                OFFSETS_TOPIC => Some(false),
                TXN_TOPIC => Some(true),
                _ => None,
            };
            let key = internal.map(|txn| (txn, index as i32));
            let may_load = self.cluster.get().is_some()
                && meta.leader == self.config.node_id
                && led_before != Some(true);
            if let (Some(key), true) = (key, may_load) {
                self.loading
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key);
            }
            partition.set_role(meta, now);
            let leads = partition.leadership().0;
            let moved = self.cluster.get().is_some()
                && led_before != Some(leads)
                && (leads || led_before == Some(true));
            let mut loaded = true;
            if moved && topic.name == OFFSETS_TOPIC {
                loaded = self.groups_moved(index as i32, topic.partitions.len() as i32, leads);
            }
            if moved && topic.name == TXN_TOPIC {
                loaded = self.txns_moved(index as i32, topic.partitions.len() as i32, leads);
            }
            // A partition that could not be read stays marked: its coordinator answers
            // "loading" rather than from state it does not have.
            if let (Some(key), true) = (key, loaded && (may_load || moved)) {
                self.loading
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
        }
        Ok(())
    }

    /// Joins a cluster: metadata from now on comes from `node`'s replicated log. Its
    /// images are applied by the caller once the node has caught up with that log
    /// ([`ClusterNode::caught_up`]).
    pub fn attach_cluster(&self, node: Arc<ClusterNode>) {
        if self.cluster.set(node).is_err() {
            tracing::warn!("cluster already attached");
        }
    }

    /// Brings the partitions in line with `image`: opens the replicas assigned here,
    /// applies leaders, epochs and ISRs, applies changed topic configs, and removes the
    /// partitions of deleted topics.
    pub fn reconcile(&self, image: Arc<MetadataImage>) {
        let mut last = self
            .reconcile_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &image)) {
            return;
        }
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image.clone();
        load_dynamic_configs(&self.config, &image);
        for topic in image.topics() {
            let configs_changed = last
                .as_ref()
                .and_then(|l| l.topic_by_id(&topic.topic_id))
                .is_some_and(|old| old.configs != topic.configs);
            if let Err(e) = self.open_local_replicas(topic) {
                tracing::error!(topic = %topic.name, error = %e, "could not open a partition assigned to this broker");
            }
            if configs_changed {
                self.reconfigure(topic);
            }
        }
        // Partitions of deleted topics, and replicas moved away from this broker.
        let me = self.config.node_id;
        let gone: Vec<Arc<Partition>> = self
            .all_partitions()
            .into_iter()
            .filter(|p| {
                image.topic_by_id(&p.topic_id).is_none_or(|t| {
                    t.partitions
                        .get(p.index as usize)
                        .is_none_or(|m| !m.replicas.contains(&me))
                })
            })
            .collect();
        if !gone.is_empty() {
            self.remove_partitions(gone);
        }
        *last = Some(image);
    }

    /// The node clients are told is the controller: the active one when it is a live
    /// broker, else this one (every broker forwards metadata changes to it anyway).
    pub fn controller_id(&self) -> i32 {
        self.cluster
            .get()
            .and_then(|n| n.leader())
            .map(|l| l as i32)
            .filter(|&l| self.image().broker_alive(l))
            .unwrap_or(self.config.node_id)
    }

    /// Starts moving a partition's replicas to `target`, or (`None`) cancels a move.
    pub fn reassign(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
        allow_rf_change: bool,
    ) -> Result<(), (ResponseError, String)> {
        let image = self.image();
        let meta = image.topic(topic).ok_or((
            ResponseError::UnknownTopicOrPartition,
            format!("no topic '{topic}'"),
        ))?;
        let topic_id = meta.topic_id;
        let p = meta.partitions.get(partition.max(0) as usize).ok_or((
            ResponseError::UnknownTopicOrPartition,
            format!("'{topic}' has no partition {partition}"),
        ))?;
        let record = |replicas: Vec<i32>, leader: i32, epoch: i32, isr: Vec<i32>| {
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                leader,
                leader_epoch: epoch,
                isr: Some(isr),
            }
        };
        let records = match target {
            None => {
                let Some((_, original)) = p.reassignment.clone() else {
                    return Err((
                        ResponseError::NoReassignmentInProgress,
                        format!("no reassignment of {topic}-{partition} is in progress"),
                    ));
                };
                let mut isr: Vec<i32> = p
                    .isr
                    .iter()
                    .copied()
                    .filter(|r| original.contains(r))
                    .collect();
                if isr.is_empty() {
                    isr = original.clone();
                }
                let leader = if original.contains(&p.leader) {
                    p.leader
                } else {
                    isr[0]
                };
                let epoch = p.leader_epoch + i32::from(leader != p.leader);
                vec![
                    record(original, leader, epoch, isr),
                    MetadataRecord::Reassign {
                        topic_id,
                        partition,
                        target: None,
                        original: Vec::new(),
                    },
                ]
            }
            Some(target) => {
                let live: Vec<i32> = self.live_brokers().iter().map(|b| b.node_id).collect();
                let mut unique = target.clone();
                unique.sort_unstable();
                unique.dedup();
                if target.is_empty() || unique.len() != target.len() {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!("replicas {target:?} must be distinct and not empty"),
                    ));
                }
                if let Some(b) = target.iter().find(|b| !live.contains(b)) {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!("broker {b} is not a live broker (live: {live:?})"),
                    ));
                }
                let original = p
                    .reassignment
                    .as_ref()
                    .map_or_else(|| p.replicas.clone(), |(_, o)| o.clone());
                if !allow_rf_change && target.len() != original.len() {
                    return Err((
                        ResponseError::InvalidReplicationFactor,
                        format!(
                            "the move changes the replication factor from {} to {}",
                            original.len(),
                            target.len()
                        ),
                    ));
                }
                if target == p.replicas && p.reassignment.is_none() {
                    return Ok(());
                }
                if self.cluster.get().is_none() {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        "a single node has nowhere to move replicas".into(),
                    ));
                }
                // During the move the partition has the target replicas and every original
                // one, so a leader outside the target keeps leading until the end.
                let mut union = target.clone();
                union.extend(original.iter().copied().filter(|r| !target.contains(r)));
                vec![
                    record(union, p.leader, p.leader_epoch, p.isr.clone()),
                    MetadataRecord::Reassign {
                        topic_id,
                        partition,
                        target: Some(target.clone()),
                        original,
                    },
                ]
            }
        };
        self.commit_metadata_blocking(|_| Ok(records))
            .map(|_| ())
            .map_err(|e| (ResponseError::NotController, e.to_string()))?;
        tracing::info!(topic, partition, "reassignment changed");
        Ok(())
    }

    /// This cluster's id: the one in the replicated metadata in a cluster (never this
    /// data directory's own, which a broker of a cluster only has before it joins).
    pub fn cluster_id(&self) -> String {
        if let Some(id) = self.image().cluster_id() {
            return id.to_string();
        }
        self.clustered()
            .and_then(|n| n.image().cluster_id().map(str::to_string))
            .unwrap_or_else(|| self.cluster_id.clone())
    }

    /// The topic, created with the broker's defaults if it does not exist and
    /// `auto.create.topics.enable` allows. `Ok(None)`: unknown and not created.
    pub fn get_or_auto_create(
        &self,
        name: &str,
        allowed_by_client: bool,
    ) -> Result<Option<TopicMeta>, BrokerError> {
        if let Some(topic) = self.image().topic(name) {
            return Ok(Some(topic.clone()));
        }
        if !allowed_by_client
            || !self.config.get_bool("auto.create.topics.enable")
            || validate_topic_name(name).is_err()
        {
            return Ok(None);
        }
        let partitions = self.config.get_i64("num.partitions") as i32;
        match self.create_topic_blocking(name, partitions, BTreeMap::new()) {
            Ok(topic) => Ok(Some(topic)),
            Err(BrokerError::TopicExists) => Ok(self.image().topic(name).cloned()),
            Err(e) => Err(e),
        }
    }

    /// Replaces a topic's dynamic configs (already validated) durably, and applies them to
    /// its open partitions at once.
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let topic_id = self
            .image()
            .topic(name)
            .ok_or(BrokerError::UnknownTopic)?
            .topic_id;
        let image = self.commit_metadata_blocking(|image| {
            image
                .topic_by_id(&topic_id)
                .ok_or(BrokerError::UnknownTopic)?;
            Ok(vec![MetadataRecord::TopicConfig { topic_id, configs }])
        })?;
        let topic = image.topic(name).ok_or(BrokerError::UnknownTopic)?;
        self.reconfigure(topic);
        tracing::info!(topic = name, configs = ?topic.configs, "topic configs changed");
        Ok(())
    }

    /// Replaces the runtime-changed broker settings of `resource` ("" for the cluster
    /// default, or this node's id), durably, and applies them to every partition at once.
    pub fn set_broker_configs(
        &self,
        resource: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let image = self.commit_metadata_blocking(|_| {
            Ok(vec![MetadataRecord::BrokerConfig {
                resource: resource.to_string(),
                configs,
            }])
        })?;
        load_dynamic_configs(&self.config, &image);
        for topic in image.topics() {
            self.reconfigure(topic);
        }
        tracing::info!(resource, "dynamic broker configs changed");
        Ok(())
    }

    /// Applies a topic's effective configs to its open partitions.
    fn reconfigure(&self, topic: &TopicMeta) {
        let (log_config, settings) = self.log_config(&topic.configs);
        for index in 0..topic.partitions.len() as i32 {
            if let Some(p) = self.partition(&topic.name, index) {
                p.log().set_config(log_config.clone());
                *p.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
            }
        }
    }

    /// Hands out a producer id never given before, reserving a new block durably when the
    /// current one runs out.
    pub async fn allocate_producer_id(&self) -> Result<i64, BrokerError> {
        loop {
            if let Some(id) = self.next_reserved_producer_id() {
                return Ok(id);
            }
            // The lock is not held while the block is reserved: two callers may each reserve
            // one, and the one that finds the current block still in use leaves its own
            // unused. Blocks never overlap, so no id is handed out twice.
            let image = self
                .commit_metadata(|image| {
                    Ok(vec![MetadataRecord::ProducerIds {
                        next_block_start: image.next_producer_id_block() + PRODUCER_ID_BLOCK,
                    }])
                })
                .await?;
            let end = image.next_producer_id_block();
            let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
            if ids.0 >= ids.1 {
                *ids = (end - PRODUCER_ID_BLOCK, end);
            }
        }
    }

    /// The next id of the block reserved, if any is left.
    fn next_reserved_producer_id(&self) -> Option<i64> {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        (ids.0 < ids.1).then(|| {
            ids.0 += 1;
            ids.0 - 1
        })
    }

    /// Adds partitions to a topic so it has `count` in all.
    pub fn add_partitions(&self, name: &str, count: i32) -> Result<(), BrokerError> {
        let image = self.image();
        let topic = image.topic(name).ok_or(BrokerError::UnknownTopic)?;
        let topic_id = topic.topic_id;
        let current = topic.partitions.len() as i32;
        let rf = topic
            .partitions
            .first()
            .map_or(1, |p| p.replicas.len() as i32);
        let assignment = self.assign_replicas(name, count - current, rf, current)?;
        let image = self.commit_metadata_blocking(|image| {
            let now = image
                .topic_by_id(&topic_id)
                .ok_or(BrokerError::UnknownTopic)?
                .partitions
                .len() as i32;
            if now != current {
                return Err(BrokerError::Metadata(format!(
                    "partitions of '{name}' changed meanwhile; retry"
                )));
            }
            Ok(assignment
                .into_iter()
                .zip(current..count)
                .map(|(replicas, p)| MetadataRecord::Partition {
                    topic_id,
                    partition: p,
                    leader: replicas[0],
                    isr: Some(replicas.clone()),
                    replicas,
                    leader_epoch: 0,
                })
                .collect())
        })?;
        let topic = image.topic(name).ok_or(BrokerError::UnknownTopic)?;
        self.open_local_replicas(topic)?;
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    /// Deletes a topic: metadata first (so it is gone even if the files linger), then its
    /// partition directories are renamed aside and removed in the background.
    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let image = self.image();
        let topic = image.topic(name).ok_or(BrokerError::UnknownTopic)?;
        let topic_id = topic.topic_id;
        self.commit_metadata_blocking(|image| {
            image
                .topic_by_id(&topic_id)
                .ok_or(BrokerError::UnknownTopic)?;
            Ok(vec![MetadataRecord::RemoveTopic { topic_id }])
        })?;
        let removed: Vec<Arc<Partition>> = self
            .all_partitions()
            .into_iter()
            .filter(|p| p.topic_id == topic_id)
            .collect();
        self.remove_partitions(removed);
        tracing::info!(topic = name, topic_id = %topic.topic_id, "deleted topic");
        Ok(())
    }

    /// Forgets partitions and moves their directories aside, removing them in the
    /// background.
    fn remove_partitions(&self, removed: Vec<Arc<Partition>>) {
        {
            let mut map = self.partitions.write().unwrap_or_else(|p| p.into_inner());
            for p in &removed {
                if map
                    .get(&(p.topic.clone(), p.index))
                    .is_some_and(|q| Arc::ptr_eq(p, q))
                {
                    map.remove(&(p.topic.clone(), p.index));
                }
            }
        }
        for partition in removed {
            let name = partition.topic.as_str();
            tracing::info!(topic = name, partition = partition.index, "removing this broker's replica: its topic was deleted or it moved to other brokers");
            partition.wake_waiters();
            let dir = partition.log().dir().to_path_buf();
            let aside = self.config.data_dir.join(format!(
                "{name}-{}.{}-delete",
                partition.index,
                partition.topic_id.simple()
            ));
            if let Err(e) = self.disk.rename(&dir, &aside) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not move a deleted partition aside; remove it by hand");
                continue;
            }
            let disk = self.disk.clone();
            std::thread::spawn(move || {
                if let Err(e) = disk.remove_dir_all(&aside) {
                    tracing::warn!(dir = %aside.display(), error = %e, "could not remove a deleted partition; remove it by hand");
                }
            });
        }
    }

    fn remove_deleted_dirs(&self) {
        let Ok(entries) = self.disk.read_dir(&self.config.data_dir) else {
            return;
        };
        for path in entries
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with("-delete"))
        {
            if let Err(e) = self.disk.remove_dir_all(&path) {
                tracing::warn!(dir = %path.display(), error = %e, "could not remove a deleted partition");
            }
        }
    }

    /// Fsyncs partitions whose `flush.ms` has passed or which have more than
    /// `log.writeback.bytes` not yet written back.
    pub async fn flush_due_partitions(&self) {
        let now = now_ms();
        let writeback = self.config.get_i64("log.writeback.bytes");
        for partition in self.all_partitions() {
            let due = {
                let log = partition.log();
                log.needs_periodic_flush(now)
                    || (writeback > 0 && log.unflushed_bytes() >= writeback as u64)
            };
            if due {
                let end = partition.log().log_end();
                if let Err(e) = partition.make_durable(end).await {
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "periodic flush failed");
                }
            }
        }
    }

    /// Applies retention to every partition (`log.retention.check.interval.ms`).
    pub fn apply_retention(&self) {
        let now = now_ms();
        let producer_idle_ms = self.config.get_i64("producer.id.expiration.ms");
        for partition in self.all_partitions() {
            let expired = partition.log().expire_producers(now, producer_idle_ms);
            if expired > 0 {
                tracing::info!(topic = %partition.topic, partition = partition.index, producers = expired, "expired idle producer ids");
            }
            let result = partition.log().apply_retention(now);
            if let Err(e) = result {
                tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "retention failed");
            }
        }
    }

    /// One cleaner pass, reading at most `log.cleaner.io.max.bytes.per.second`.
    pub fn clean_compacted_paced(&self) {
        let rate = self
            .config
            .get_i64("log.cleaner.io.max.bytes.per.second")
            .max(1) as f64;
        let started = tokio::time::Instant::now();
        let mut pace = |bytes: u64| {
            let due = std::time::Duration::from_secs_f64(bytes as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait.min(std::time::Duration::from_secs(10)));
            }
        };
        self.clean_compacted(&mut pace);
    }

    /// One pass of the log cleaner over every compacted partition. The partition lock is
    /// held only to pick the segments and to swap the cleaned ones in; `pace` is called
    /// with the bytes processed so far so the caller can throttle.
    pub fn clean_compacted(&self, pace: &mut dyn FnMut(u64)) {
        for partition in self.all_partitions() {
            let now = now_ms();
            let Some(cleanable) = partition.log().cleanable(now) else {
                continue;
            };
            let disk = self.disk.clone();
            let started = tokio::time::Instant::now();
            let cleaned =
                gregor_storage::cleaner::clean(disk.as_ref(), &cleanable, now, &mut *pace);
            let (done, stats) = match cleaned {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "log cleaning failed; the log is unchanged");
                    continue;
                }
            };
            let mut log = partition.log();
            for c in &done {
                if let Err(e) = log.install_cleaned(c) {
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "could not swap a cleaned segment in; the original stays");
                }
            }
            if let Err(e) = log.set_cleaned_up_to(cleanable.end_offset) {
                tracing::warn!(error = %e, "could not store the cleaner checkpoint; the range will be cleaned again");
            }
            drop(log);
            tracing::info!(
                topic = %partition.topic,
                partition = partition.index,
                segments = stats.segments,
                records_read = stats.records_read,
                records_kept = stats.records_kept,
                bytes_before = stats.bytes_before,
                bytes_after = stats.bytes_after,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "log cleaned"
            );
        }
    }

    /// Clean close of every log: fsynced, indexes written, recovery points moved up; then
    /// the clean-shutdown marker, only if every log closed.
    pub fn close(&self) {
        let mut all_closed = true;
        for partition in self.all_partitions() {
            if let Err(e) = partition.log().close() {
                all_closed = false;
                tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "closing the log failed; it will be recovered on the next start");
            }
        }
        if all_closed {
            let marker = self.config.data_dir.join(CLEAN_SHUTDOWN_FILE);
            if let Err(e) = self.disk.write_file_atomic(&marker, b"") {
                tracing::warn!(error = %e, "could not write the clean-shutdown marker; the next start verifies every active segment");
            }
        }
    }
}

impl GroupLog for Broker {
    fn append(&self, group: &str, records: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), String> {
        let partition = self.offsets_partition(group).map_err(|e| e.to_string())?;
        append_internal(self, &partition, &records, None).map_err(|e| e.to_string())
    }

    fn append_txn(
        &self,
        group: &str,
        producer_id: i64,
        epoch: i16,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), (ResponseError, String)> {
        let partition = self
            .offsets_partition(group)
            .map_err(|e| (ResponseError::CoordinatorNotAvailable, e.to_string()))?;
        match append_internal(self, &partition, &records, Some((producer_id, epoch))) {
            Ok(()) => Ok(()),
            Err(e @ StorageError::Sequence(_)) => {
                Err((ResponseError::ProducerFenced, e.to_string()))
            }
            Err(e) => Err((
                ResponseError::try_from_code(crate::error::storage_error_code(&e))
                    .unwrap_or(ResponseError::UnknownServerError),
                e.to_string(),
            )),
        }
    }
}

impl Broker {
    /// The broker that coordinates `key` (a group, or with `txn` a transactional id): the
    /// leader of the internal-topic partition that holds it.
    pub fn coordinator(
        &self,
        key: &str,
        txn: bool,
    ) -> Result<gregor_cluster::BrokerMeta, (ResponseError, String)> {
        let topic = if txn {
            self.ensure_txn_topic()
        } else {
            self.ensure_offsets_topic()
        }
        .map_err(|e| (ResponseError::CoordinatorNotAvailable, e.to_string()))?;
        let index = group_store::partition_for(key, topic.partitions.len() as i32);
        let leader = topic.partitions[index as usize].leader;
        self.live_brokers()
            .into_iter()
            .find(|b| b.node_id == leader)
            .ok_or_else(|| {
                (
                    ResponseError::CoordinatorNotAvailable,
                    format!("{}-{index} has no live leader", topic.name),
                )
            })
    }

    /// Why this broker may not serve `group` now (its partition of `__consumer_offsets` is
    /// led elsewhere), or `None` when it is the group's coordinator.
    pub fn not_coordinator(&self, group: &str) -> Option<ResponseError> {
        self.cluster.get()?;
        // A self-fenced broker may have lost the group's partition already: the client
        // looks the coordinator up again (Kafka answers a failed append with this too).
        if self.self_fenced().is_some() {
            return Some(ResponseError::NotCoordinator);
        }
        match self.offsets_partition(group) {
            Ok(p)
                if self
                    .loading
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&(false, p.index)) =>
            {
                Some(ResponseError::CoordinatorLoadInProgress)
            }
            Ok(p) if p.leadership().0 => None,
            Ok(_) | Err(BrokerError::UnknownTopic) => Some(ResponseError::NotCoordinator),
            Err(_) => Some(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Why this broker may not coordinate transactional id `id` now, or `None` if it does.
    pub fn not_txn_coordinator(&self, id: &str) -> Option<ResponseError> {
        self.cluster.get()?;
        if self.self_fenced().is_some() {
            return Some(ResponseError::NotCoordinator);
        }
        let Some(topic) = self.image().topic(TXN_TOPIC).cloned() else {
            // Created by FindCoordinator first; until then nobody coordinates.
            return Some(ResponseError::NotCoordinator);
        };
        let index = group_store::partition_for(id, topic.partitions.len() as i32);
        match self.partition(TXN_TOPIC, index) {
            _ if self
                .loading
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&(true, index)) =>
            {
                Some(ResponseError::CoordinatorLoadInProgress)
            }
            Some(p) if p.leadership().0 => None,
            _ => Some(ResponseError::NotCoordinator),
        }
    }

    /// Loads the transactions of `__transaction_state` partition `index` (this broker
    /// just became its leader), or forgets them (it stopped leading it).
    /// Returns false when the partition could not be read (its transactions stay unloaded).
    fn txns_moved(&self, index: i32, partitions: i32, leads: bool) -> bool {
        let ours = |id: &str| group_store::partition_for(id, partitions) == index;
        self.txns.unload(&ours);
        if !leads {
            return true;
        }
        let Some(partition) = self.partition(TXN_TOPIC, index) else {
            return true;
        };
        let mut records = Vec::new();
        if let Err(e) = replay_partition(&partition, |header, batch| {
            if !header.is_control() {
                records.extend(decode_internal(
                    TXN_TOPIC,
                    index,
                    header,
                    batch,
                    txn_store::decode,
                ));
            }
        }) {
            tracing::error!(partition = index, error = %e, "could not read the transaction partition to load it; its transactional ids are answered COORDINATOR_LOAD_IN_PROGRESS until its leadership moves or the broker restarts");
            return false;
        }
        let count = records.len();
        self.txns.load(records);
        tracing::info!(
            partition = index,
            records = count,
            "loaded the transactions of a partition this broker now leads"
        );
        // What the previous coordinator left half done (stored outcomes whose markers may
        // not all be written) is finished by the periodic transaction check.
        true
    }

    /// Writes a transaction marker to a partition this broker leads (WriteTxnMarkers from
    /// another broker's coordinator, or this one's).
    pub fn write_marker_here(
        &self,
        topic: &str,
        index: i32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<(), ResponseError> {
        let Some(partition) = self.partition(topic, index) else {
            return Err(ResponseError::UnknownTopicOrPartition);
        };
        if !partition.leadership().0 {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let sync_all = partition.syncs_every_append();
        {
            let mut log = partition.log();
            match log.append_marker(producer_id, epoch, commit, coordinator_epoch, now_ms()) {
                Ok(info) => {
                    if info.flush_due || sync_all {
                        log.flush().map_err(|_| ResponseError::KafkaStorageError)?;
                    }
                }
                Err(e @ StorageError::Sequence(_)) => {
                    // A newer epoch of this producer already wrote here: nothing of this
                    // transaction can be open any more.
                    tracing::warn!(topic, partition = index, producer_id, error = %e, "marker from an older epoch skipped");
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(topic, partition = index, error = %e, "writing a transaction marker failed");
                    return Err(ResponseError::KafkaStorageError);
                }
            }
        }
        if topic == OFFSETS_TOPIC {
            self.groups.complete_txn(producer_id, commit);
        }
        partition.wake_waiters();
        partition.update_high_watermark();
        Ok(())
    }

    /// The internal-topic partition that holds a group, or with `txn` a transactional
    /// id, if this broker has it.
    pub fn coordinator_partition(&self, key: &str, txn: bool) -> Option<Arc<Partition>> {
        let name = if txn { TXN_TOPIC } else { OFFSETS_TOPIC };
        let topic = self.image().topic(name)?.partitions.len() as i32;
        self.partition(name, group_store::partition_for(key, topic))
    }

    /// Sends markers for the partitions led by other brokers, one WriteTxnMarkers request
    /// per leader.
    fn write_remote_markers(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        remote: BTreeMap<i32, Vec<(String, i32)>>,
    ) -> Result<(), String> {
        use kafka_protocol::messages::write_txn_markers_request::{
            WritableTxnMarker, WritableTxnMarkerTopic,
        };
        use kafka_protocol::messages::{
            ProducerId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
        };
        let image = self.image();
        let handle = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
        for (leader, partitions) in remote {
            let broker = image.broker(leader).filter(|b| !b.fenced).ok_or_else(|| {
                format!(
                    "broker {leader}, which leads a partition of the transaction, is not available"
                )
            })?;
            let peer = broker.clone();
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (t, p) in partitions {
                by_topic.entry(t).or_default().push(p);
            }
            let marker = WritableTxnMarker::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch)
                .with_transaction_result(commit)
                .with_coordinator_epoch(0)
                .with_topics(
                    by_topic
                        .into_iter()
                        .map(|(t, ps)| {
                            WritableTxnMarkerTopic::default()
                                .with_name(crate::api::topic_name(&t))
                                .with_partition_indexes(ps)
                        })
                        .collect(),
                );
            let request = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
            let me = self.config.node_id;
            let response: WriteTxnMarkersResponse = tokio::task::block_in_place(|| {
                handle.block_on(async {
                    let mut conn =
                        crate::replica::Conn::connect(self, &peer, format!("gregor-txn-{me}"))
                            .await?;
                    conn.call(
                        kafka_protocol::messages::ApiKey::WriteTxnMarkers,
                        1,
                        &request,
                        std::time::Duration::from_secs(3),
                    )
                    .await
                })
            })
            .map_err(|e| {
                format!(
                    "sending transaction markers to broker {leader} at {}:{}: {e}",
                    peer.host, peer.port
                )
            })?;
            for m in response.markers {
                for t in m.topics {
                    for p in t.partitions {
                        if p.error_code != 0 {
                            return Err(format!(
                                "broker {leader} refused the marker for {}-{}: error code {}",
                                t.name.0, p.partition_index, p.error_code
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Loads the groups of `__consumer_offsets` partition `index` (this broker just became
    /// its leader), or forgets them (it stopped leading it).
    /// Returns false when the partition could not be read (its groups stay unloaded).
    fn groups_moved(&self, index: i32, partitions: i32, leads: bool) -> bool {
        let ours = |g: &str| group_store::partition_for(g, partitions) == index;
        self.groups.unload(&ours);
        if !leads {
            tracing::info!(
                partition = index,
                "groups of this offsets partition moved to another coordinator"
            );
            return true;
        }
        let Some(partition) = self.partition(OFFSETS_TOPIC, index) else {
            return true;
        };
        let mut records = Vec::new();
        let mut open: HashMap<i64, Vec<GroupRecord>> = HashMap::new();
        let replayed = replay_partition(&partition, |header, batch| {
            if header.is_control() {
                let pending = open.remove(&header.producer_id);
                if gregor_protocol::batch::marker_kind(batch) == Some(true) {
                    records.extend(pending.unwrap_or_default());
                }
                return;
            }
            let decoded = decode_internal(OFFSETS_TOPIC, index, header, batch, group_store::decode);
            if header.is_transactional() {
                open.entry(header.producer_id).or_default().extend(decoded);
            } else {
                records.extend(decoded);
            }
        });
        if let Err(e) = replayed {
            tracing::error!(partition = index, error = %e, "could not read the offsets partition to load its groups; they are answered COORDINATOR_LOAD_IN_PROGRESS until its leadership moves or the broker restarts");
            return false;
        }
        let count = records.len();
        self.groups.load(records);
        tracing::info!(
            partition = index,
            records = count,
            "loaded the groups of an offsets partition this broker now leads"
        );
        true
    }

    /// The `__consumer_offsets` partition that holds a group (created with the topic).
    fn offsets_partition(&self, group: &str) -> Result<Arc<Partition>, BrokerError> {
        let topic = self.ensure_offsets_topic()?;
        let index = group_store::partition_for(group, topic.partitions.len() as i32);
        self.partition(OFFSETS_TOPIC, index)
            .ok_or(BrokerError::UnknownTopic)
    }
}

/// Decodes the records of one batch of an internal topic with `decode`, skipping (with a
/// warning) what it does not recognise.
fn decode_internal<T>(
    topic: &str,
    index: i32,
    header: &BatchHeader,
    batch: &[u8],
    decode: impl Fn(&[u8], Option<&[u8]>) -> Option<T>,
) -> Vec<T> {
    let decoded = match gregor_protocol::batch::decode_records(batch) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(topic, partition = index, offset = header.base_offset, error = %e, "skipping an undecodable batch of an internal topic");
            return Vec::new();
        }
    };
    decoded
        .into_iter()
        .filter_map(|r| {
            let found = r.key.as_deref().and_then(|k| decode(k, r.value.as_deref()));
            if found.is_none() {
                tracing::warn!(
                    topic,
                    partition = index,
                    offset = r.offset,
                    "skipping an internal record Gregor does not know"
                );
            }
            found
        })
        .collect()
}

/// Appends the broker's own (key, value) records to an internal partition as one batch,
/// transactional for `producer` when given, fsynced when the flush policy says so.
fn append_internal(
    broker: &Broker,
    partition: &Partition,
    records: &[(Vec<u8>, Option<Vec<u8>>)],
    producer: Option<(i64, i16)>,
) -> Result<(), StorageError> {
    let refs: Vec<gregor_protocol::batch::KeyValue> = records
        .iter()
        .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
        .collect();
    let now = now_ms();
    let mut batch = gregor_protocol::batch::build_record_batch(now, &refs, false);
    if let Some((id, epoch)) = producer {
        gregor_protocol::batch::set_producer(&mut batch, id, epoch, true);
    }
    let header =
        gregor_protocol::batch::check_batch(&batch).map_err(|e| StorageError::Corrupt {
            path: PathBuf::from(format!("{}-{}", partition.topic, partition.index)),
            reason: e.to_string(),
        })?;
    let (leads, leader_epoch, _, _) = partition.leadership();
    if !leads {
        return Err(StorageError::Corrupt {
            path: PathBuf::from(format!("{}-{}", partition.topic, partition.index)),
            reason: "this broker no longer leads the partition; the coordinator moved".into(),
        });
    }
    if let Some(reason) = broker.self_fenced() {
        return Err(StorageError::Corrupt {
            path: PathBuf::from(format!("{}-{}", partition.topic, partition.index)),
            reason,
        });
    }
    let sync_all = partition.syncs_every_append();
    {
        let mut log = partition.log();
        let info = log.append(&mut batch, &[(0, header)], leader_epoch, None, now)?;
        if info.flush_due || sync_all {
            log.flush()?;
        }
    }
    // The request handler waits for the in-sync replicas once it answered
    // (`coordinator_check::settle`), with no coordinator lock held.
    partition.wake_waiters();
    partition.update_high_watermark();
    Ok(())
}

/// Waits until every in-sync replica of `partition` holds what it holds now (Kafka's
/// coordinators write with `acks=all`), for at most `timeout`. Called after a
/// coordinator answered, with no lock held. `false`: the replicas did not catch up.
/// A change of leader or epoch since the write also answers `false`: what the high
/// watermark shows then says nothing about the write.
pub async fn await_replicated(partition: &Partition, timeout: std::time::Duration) -> bool {
    let (epoch, end) = {
        let r = partition.replica();
        if !r.replicated() {
            return true;
        }
        (r.leader_epoch, partition.log().log_end())
    };
    let deadline = tokio::time::Instant::now() + timeout;
    partition.await_committed(end, epoch, deadline).await == Commit::Committed
}

/// Calls `f` with every batch of one partition, in log order.
fn replay_partition(
    partition: &Partition,
    mut f: impl FnMut(&BatchHeader, &[u8]),
) -> Result<(), StorageError> {
    let log = partition.log();
    let mut offset = log.log_start();
    while offset < log.log_end() {
        let bytes = log.read(offset, 8 << 20, true)?.read()?;
        if bytes.is_empty() {
            break;
        }
        for (at, header) in gregor_protocol::batch::batches(&bytes) {
            offset = header.last_offset() + 1;
            f(&header, &bytes[at..at + header.total_bytes()]);
        }
    }
    Ok(())
}

impl TxnHost for Broker {
    fn persist_txn(&self, transactional_id: &str, meta: Option<&TxnMeta>) -> Result<(), String> {
        let topic = self.ensure_txn_topic().map_err(|e| e.to_string())?;
        let index = group_store::partition_for(transactional_id, topic.partitions.len() as i32);
        let partition = self
            .partition(TXN_TOPIC, index)
            .ok_or_else(|| format!("{TXN_TOPIC}-{index} is not open"))?;
        let record = (txn_store::key(transactional_id), meta.map(txn_store::value));
        append_internal(self, &partition, &[record], None).map_err(|e| e.to_string())
    }

    fn write_markers(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: &std::collections::BTreeSet<(String, i32)>,
    ) -> Result<(), String> {
        let now = now_ms();
        if self.cluster.get().is_some() {
            // In a cluster each marker goes to the partition's leader, wherever it is.
            let image = self.image();
            let mut remote: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
            for (topic, index) in partitions {
                let Some(meta) = image
                    .topic(topic)
                    .and_then(|t| t.partitions.get(*index as usize))
                else {
                    tracing::warn!(topic = %topic, partition = index, producer_id, "no marker for a partition that no longer exists");
                    continue;
                };
                if meta.leader == self.config.node_id {
                    self.write_marker_here(topic, *index, producer_id, epoch, commit, 0)
                        .map_err(|e| format!("{topic}-{index}: {e:?}"))?;
                } else if meta.leader < 0 {
                    return Err(format!("{topic}-{index} has no leader now; retrying"));
                } else {
                    remote
                        .entry(meta.leader)
                        .or_default()
                        .push((topic.clone(), *index));
                }
            }
            return self.write_remote_markers(producer_id, epoch, commit, remote);
        }
        for (topic, index) in partitions {
            let Some(partition) = self.partition(topic, *index) else {
                tracing::warn!(topic = %topic, partition = index, producer_id, "no marker for a partition that no longer exists");
                continue;
            };
            let sync_all = partition.syncs_every_append();
            {
                let mut log = partition.log();
                match log.append_marker(producer_id, epoch, commit, 0, now) {
                    Ok(info) => {
                        if info.flush_due || sync_all {
                            log.flush().map_err(|e| format!("{topic}-{index}: {e}"))?;
                        }
                    }
                    Err(e @ StorageError::Sequence(_)) => {
                        // A newer epoch of this producer already wrote here: nothing of
                        // this transaction can be open any more.
                        tracing::warn!(topic = %topic, partition = index, producer_id, error = %e, "marker from an older epoch skipped");
                    }
                    Err(e) => return Err(format!("{topic}-{index}: {e}")),
                }
            }
            if topic == OFFSETS_TOPIC {
                self.groups.complete_txn(producer_id, commit);
            }
            partition.wake_waiters();
        }
        Ok(())
    }

    fn new_producer_id(&self) -> Result<i64, String> {
        block_on(self.allocate_producer_id())
            .and_then(|r| r)
            .map_err(|e| e.to_string())
    }

    fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        if self.cluster.get().is_some() {
            return crate::api::partition_exists(&self.image(), topic, partition);
        }
        self.partition(topic, partition).is_some()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_replicas_sit_on_different_racks() {
        let broker = |id: i32, rack: &str| gregor_cluster::BrokerMeta {
            node_id: id,
            host: "h".into(),
            port: 1,
            rack: Some(rack.into()),
            fenced: false,
            endpoints: Vec::new(),
            incarnation: 0,
        };
        let brokers = [
            broker(1, "a"),
            broker(2, "a"),
            broker(3, "b"),
            broker(4, "b"),
            broker(5, "c"),
        ];
        let order = rack_alternating(&brokers);
        assert_eq!(order.len(), 5);
        let rack_of = |id: i32| {
            brokers
                .iter()
                .find(|b| b.node_id == id)
                .and_then(|b| b.rack.clone())
        };
        // Any three consecutive replicas (with wrap-around) start with three racks while
        // three racks remain.
        for start in 0..3 {
            let racks: std::collections::BTreeSet<_> =
                (0..3).map(|j| rack_of(order[(start + j) % 5])).collect();
            assert_eq!(racks.len(), 3, "replicas from {start} in {order:?}");
        }
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
