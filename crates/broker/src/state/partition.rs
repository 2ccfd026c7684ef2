//! One partition this broker hosts: its log, its replica state (leader, epoch, ISR,
//! followers' progress), the high watermark, group commit and the waits on them.

use super::*;

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
    /// On the leader: the followers that change adds to the ISR. Until it is applied the
    /// high watermark waits for them too (Kafka's maximal ISR, KIP-497): committed records
    /// they lack would otherwise be in no ISR member's log but the others', and the new
    /// ISR would hold a member missing records below the high watermark.
    pub isr_joining: Vec<i32>,
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

/// Progress for a new leader's followers: unknown, with a full lag allowance from `now`.
pub(super) fn fresh_followers(
    replicas: &[i32],
    me: i32,
    now: i64,
) -> HashMap<i32, FollowerProgress> {
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
    /// Fetches waiting for the next append (weak: a fetch that returned holds none).
    pub(super) waiters: Mutex<Vec<std::sync::Weak<Notify>>>,
    /// Serializes fsyncs so concurrent producers share one (group commit).
    pub(super) flush_lock: tokio::sync::Mutex<()>,
    /// Where the active segment's pages were last dropped from the page cache up to
    /// (`log.cache.window.bytes`).
    pub(super) cache_dropped: Arc<std::sync::atomic::AtomicU64>,
    pub metrics: crate::metrics::PartitionMetrics,
    /// This broker's id.
    pub node_id: i32,
    pub replica: Mutex<ReplicaState>,
    /// The high watermark, for `acks=all` producers waiting for it to pass their batch.
    pub hw_watch: tokio::sync::watch::Sender<i64>,
}

/// A partition's leadership as this broker sees it ([`Partition::leadership`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// Whether this broker leads it.
    pub leads: bool,
    pub leader_epoch: LeaderEpoch,
    /// How many replicas are in sync, this one included.
    pub isr_len: usize,
    /// Whether it has replicas besides the leader.
    pub replicated: bool,
}

impl Leadership {
    /// Why a request naming `current` (the client's leader epoch, -1 for none) is
    /// refused here, as Kafka does: NOT_LEADER_OR_FOLLOWER when this broker does not lead,
    /// FENCED_LEADER_EPOCH for an older epoch, UNKNOWN_LEADER_EPOCH for a newer one.
    pub fn refusal(&self, current: i32) -> Option<ResponseError> {
        let epoch = self.leader_epoch.get();
        if !self.leads {
            Some(ResponseError::NotLeaderOrFollower)
        } else if current >= 0 && current < epoch {
            Some(ResponseError::FencedLeaderEpoch)
        } else if current > epoch {
            Some(ResponseError::UnknownLeaderEpoch)
        } else {
            None
        }
    }
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

    /// This broker's view of the partition's leadership, read at once.
    pub fn leadership(&self) -> Leadership {
        let r = self.replica();
        Leadership {
            leads: r.leader == self.node_id,
            leader_epoch: LeaderEpoch(r.leader_epoch),
            isr_len: r.isr.len(),
            replicated: r.replicated(),
        }
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
    pub fn committed_in_epoch(&self, offset: Offset, epoch: LeaderEpoch) -> Option<bool> {
        let r = self.replica();
        if r.leader != self.node_id || r.leader_epoch != epoch.get() {
            return None;
        }
        let hw = self.log().high_watermark();
        Some(hw >= offset.get())
    }

    /// Waits until everything below `offset`, appended while this broker led in `epoch`,
    /// is committed (the high watermark passed it in that epoch), or `deadline` passes.
    pub async fn await_committed(
        &self,
        offset: Offset,
        epoch: LeaderEpoch,
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
        // Any image passes through here, not only the one with the ISR change: followers
        // still joining keep counting for the high watermark until the change is answered
        // or the epoch ends.
        if new_epoch {
            r.isr_joining.clear();
        } else {
            let isr = r.isr.clone();
            r.isr_joining.retain(|b| !isr.contains(b));
        }
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
                log.track_high_watermark(Some(Offset(start)));
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
            for member in r
                .isr
                .iter()
                .chain(&r.isr_joining)
                .filter(|&&m| m != self.node_id)
            {
                match r.followers.get(member) {
                    Some(f) if f.log_end >= 0 => hw = hw.min(f.log_end),
                    _ => return false,
                }
            }
        }
        let moved = log.advance_high_watermark(Offset(hw));
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

    /// On the leader: `isr` was asked of the controller. Until the answer, no other change
    /// is asked and the followers it adds count for the high watermark.
    pub fn isr_change_proposed(&self, isr: &[i32]) {
        let mut r = self.replica();
        r.isr_change_pending = true;
        r.isr_joining = isr.iter().copied().filter(|b| !r.isr.contains(b)).collect();
    }

    /// On the leader: the controller answered the ISR change (its image, if it took it,
    /// was applied before).
    pub fn isr_change_done(&self) {
        let mut r = self.replica();
        r.isr_change_pending = false;
        r.isr_joining.clear();
    }

    /// Registers a fetch to be woken by the next append. The list holds each waiting
    /// fetch once: the entries of fetches that returned are dropped here, and a fetch
    /// naming the partition twice is registered once, so an idle partition's list is as
    /// long as the number of fetches waiting on it.
    pub fn add_waiter(&self, notify: &Arc<Notify>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.retain(|w| w.strong_count() > 0);
        let weak = Arc::downgrade(notify);
        if !waiters.iter().any(|w| w.ptr_eq(&weak)) {
            waiters.push(weak);
        }
    }

    /// How many fetches wait on this partition.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.iter().filter(|w| w.strong_count() > 0).count()
    }

    /// Wakes every waiting fetch.
    pub fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for w in waiters.iter().filter_map(std::sync::Weak::upgrade) {
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
pub(super) const DROP_STEP_BYTES: u64 = 1 << 20;

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
    let Some(f) = file.fd() else {
        return;
    };
    if let Err(e) = rustix::fs::fadvise(
        &*f,
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
        (
            LeaderEpoch(r.leader_epoch),
            Offset(partition.log().log_end()),
        )
    };
    let deadline = tokio::time::Instant::now() + timeout;
    partition.await_committed(end, epoch, deadline).await == Commit::Committed
}
