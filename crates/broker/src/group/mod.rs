//! The classic group coordinator (Kafka's `GroupCoordinator`): membership, rebalancing,
//! committed offsets.
//!
//! States: Empty → PreparingRebalance → CompletingRebalance → Stable, and back to
//! PreparingRebalance when membership or subscriptions change; Dead once deleted. A join
//! parks its reply until every known member has rejoined or the rebalance timeout passes
//! (members that did not rejoin are removed); the leader's SyncGroup hands out the
//! assignments. A background tick (`tick`) enforces session and rebalance timeouts and
//! expires old offsets of empty groups.
//!
//! A state machine (Kafka's `GroupMetadataManager` with its `CoordinatorResult`): each
//! operation of [`Groups`] takes a request and the time ([`Now`]) and returns its reply and
//! the records to append ([`Outcome`]); it reads no clock and writes nothing. The host,
//! [`GroupCoordinator`], runs one operation at a time under its lock, appends the records
//! to the group's `__consumer_offsets` partition (see `store.rs`) through [`GroupLog`] and,
//! once they are written, replays them into the state ([`Groups::replay`]). Loading a
//! partition is the same replay, from the log.
//!
//! Durability: committed offsets and deletions take effect only when their records are
//! replayed, after the append, so nothing is acknowledged or visible that the log does not
//! hold. Membership (generations, members, assignments) changes in memory as it happens and
//! is written as a snapshot record of the group, as Kafka's classic groups are; a snapshot
//! that could not be written is rewritten by the next rebalance.
//!
//! Parts: `state` (groups, members and replay), `membership` (join, sync, heartbeat, leave,
//! timeouts), `offsets` (commits, fetches, deletion).

mod membership;
mod offsets;
mod state;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

use crate::error::AppendError;
pub use state::Groups;
use state::{join_error, new_member_id, Group, Member};
use store::{CommittedOffset, GroupRecord, StoredGroup, StoredMember};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A (key, value-or-tombstone) record of `__consumer_offsets`.
pub type Record = (Vec<u8>, Option<Vec<u8>>);

/// Where the coordinator writes its records: the group's `__consumer_offsets` partition.
pub trait GroupLog {
    /// Appends (key, value-or-tombstone) records for `group` as one batch, durably enough
    /// to acknowledge; with `producer` (id, epoch), as part of that producer's transaction
    /// (TxnOffsetCommit).
    fn append(
        &self,
        group: &str,
        producer: Option<(i64, i16)>,
        records: Vec<Record>,
    ) -> Result<(), AppendError>;
}

/// The time an operation runs at: the monotonic clock for sessions and rebalance
/// timeouts, the wall clock for what is stored. The host reads both clocks; the state
/// machine only gets them.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall_ms: i64,
}

impl Now {
    /// The clocks now (the simulator's when it runs).
    pub fn current() -> Self {
        Now {
            mono: Instant::now(),
            wall_ms: gregor_cluster::net::now_ms(),
        }
    }

    /// `ms` milliseconds later on both clocks.
    pub fn plus_ms(self, ms: u64) -> Self {
        Now {
            mono: self.mono + Duration::from_millis(ms),
            wall_ms: self.wall_ms + ms as i64,
        }
    }
}

/// What one operation decided: its reply, and the records the host appends for `group`.
#[must_use]
pub struct Outcome<T> {
    pub group: String,
    /// Records that take effect when replayed after the append (offsets, deletions).
    pub records: Vec<GroupRecord>,
    /// The group's membership as it now stands in memory, when it changed: written first,
    /// not replayed (it is already in effect).
    pub snapshot: Option<GroupRecord>,
    /// For a transactional offset commit: the producer's id and epoch.
    pub producer: Option<(i64, i16)>,
    pub reply: T,
    /// The reply when the append fails; `None` when the reply stands anyway.
    pub on_error: Option<fn(T, ResponseError) -> T>,
    /// Other members' SyncGroup answers, sent once the snapshot is appended.
    pub sync_replies: Vec<(oneshot::Sender<SyncResult>, SyncResult)>,
}

impl<T> Outcome<T> {
    /// A reply with no records.
    pub fn reply(group: &str, reply: T) -> Self {
        Outcome {
            group: group.to_string(),
            records: Vec::new(),
            snapshot: None,
            producer: None,
            reply,
            on_error: None,
            sync_replies: Vec::new(),
        }
    }
}

/// Per-item codes when an append fails: the items that would have succeeded get the
/// append's code.
fn fail_written(codes: Vec<i16>, error: ResponseError) -> Vec<i16> {
    codes
        .into_iter()
        .map(|c| if c == 0 { error.code() } else { c })
        .collect()
}

/// Coordinator settings, from the broker config (Kafka's names and defaults).
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`
    pub initial_rebalance_delay_ms: i32,
    /// `offsets.retention.minutes`, in ms
    pub offsets_retention_ms: i64,
    /// `offset.metadata.max.bytes`
    pub offset_metadata_max_bytes: usize,
}

pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ clients get MEMBER_ID_REQUIRED first (KIP-394).
    pub requires_known_member_id: bool,
}

#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

/// An answer now, or one that comes when the group's state moves on.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// Who sends a request for a group: a member of a generation (with its static instance
/// id), or for commits (generation -1, member "") a standalone consumer of an empty group.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub group_id: &'a str,
    pub generation: i32,
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
}

/// One member's view, for DescribeGroups and the command line.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupView {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

/// The host of the state machine: one operation at a time, its records appended and then
/// replayed, in the order they were decided.
#[derive(Debug)]
pub struct GroupCoordinator {
    groups: Mutex<Groups>,
}

impl GroupCoordinator {
    pub fn new(settings: GroupSettings) -> Self {
        GroupCoordinator {
            groups: Mutex::new(Groups::new(settings)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one operation: appends what it decided, replays it, and answers.
    fn run<T>(
        &self,
        log: &dyn GroupLog,
        now: Now,
        op: impl FnOnce(&mut Groups) -> Outcome<T>,
    ) -> T {
        let mut groups = self.lock();
        let outcome = op(&mut groups);
        groups.settle(log, now, outcome)
    }

    /// Rebuilds the groups of one `__consumer_offsets` partition (the groups `ours`
    /// selects) from its batches, in log order: the records, with the producer id of a
    /// transactional batch, and the transaction markers. Groups that had members come back
    /// Stable with them (they keep heartbeating, or expire); offsets of transactions still
    /// open stay pending until their marker.
    pub fn load(
        &self,
        now: Now,
        ours: &dyn Fn(&str) -> bool,
        replayed: impl IntoIterator<Item = Replayed>,
    ) {
        let mut groups = self.lock();
        for r in replayed {
            match r {
                Replayed::Record(producer, record) => groups.replay(now, producer, record),
                Replayed::Marker {
                    producer_id,
                    commit,
                } => groups.complete_txn(producer_id, commit, ours),
            }
        }
    }

    pub fn join(&self, log: &dyn GroupLog, now: Now, req: JoinRequest) -> Reply<JoinResult> {
        self.run(log, now, |g| g.join(now, req))
    }

    /// SyncGroup: the member's assignment; the leader brings everyone's.
    pub fn sync(
        &self,
        log: &dyn GroupLog,
        now: Now,
        by: Caller<'_>,
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<SyncResult> {
        self.run(log, now, |g| g.sync(now, by, assignments))
    }

    pub fn heartbeat(&self, now: Now, by: Caller<'_>) -> i16 {
        self.lock().heartbeat(now, by)
    }

    /// Removes members; returns a per-member error code.
    pub fn leave(
        &self,
        log: &dyn GroupLog,
        now: Now,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<i16>, i16> {
        self.run(log, now, |g| g.leave(now, group_id, members))
    }

    /// Validates and stores commits. `valid_partition` says whether a topic-partition
    /// exists. Returns one error code per requested partition, in order.
    pub fn commit(
        &self,
        log: &dyn GroupLog,
        now: Now,
        by: Caller<'_>,
        offsets: &[(String, i32, CommittedOffset)],
        valid_partition: impl Fn(&str, i32) -> bool,
    ) -> Vec<i16> {
        self.run(log, now, |g| {
            g.commit(now, by, None, offsets, valid_partition)
        })
    }

    /// TxnOffsetCommit: stores offsets as part of the producer's transaction. They are
    /// written now (transactional records) but count only once the transaction commits.
    pub fn txn_commit(
        &self,
        log: &dyn GroupLog,
        now: Now,
        by: Caller<'_>,
        producer: (i64, i16),
        offsets: &[(String, i32, CommittedOffset)],
        valid_partition: impl Fn(&str, i32) -> bool,
    ) -> Vec<i16> {
        self.run(log, now, |g| {
            g.commit(now, by, Some(producer), offsets, valid_partition)
        })
    }

    /// Deletes committed offsets (OffsetDelete). `subscribed` says whether the group's
    /// members are subscribed to a topic. Group-level error, or per-partition codes.
    pub fn delete_offsets(
        &self,
        log: &dyn GroupLog,
        now: Now,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed: impl Fn(&[Bytes], &str) -> bool,
    ) -> Result<Vec<i16>, i16> {
        self.run(log, now, |g| {
            g.delete_offsets(group_id, partitions, subscribed)
        })
    }

    /// Deletes an empty group and its offsets.
    pub fn delete(&self, log: &dyn GroupLog, now: Now, group_id: &str) -> i16 {
        self.run(log, now, |g| g.delete(group_id))
    }

    /// Enforces session and rebalance timeouts and expires offsets of long-empty groups.
    pub fn tick(&self, log: &dyn GroupLog, now: Now) {
        let mut groups = self.lock();
        for outcome in groups.tick(now) {
            groups.settle(log, now, outcome);
        }
    }

    /// A transaction marker reached a `__consumer_offsets` partition: the producer's
    /// pending offsets in the groups `ours` selects (that partition's) become committed
    /// (commit) or are dropped (abort).
    pub fn complete_txn(&self, producer_id: i64, commit: bool, ours: &dyn Fn(&str) -> bool) {
        self.lock().complete_txn(producer_id, commit, ours);
    }

    /// Forgets the groups `ours` selects (their coordinator moved to another broker).
    /// Parked joins and syncs are dropped, so their members retry and find the new one.
    pub fn unload(&self, ours: &dyn Fn(&str) -> bool) {
        self.lock().unload(ours);
    }

    /// Whether a partition's offset in the group waits on an open transaction
    /// (OffsetFetch with `require_stable` then answers `UNSTABLE_OFFSET_COMMIT`).
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.lock()
            .has_pending_txn_offset(group_id, topic, partition)
    }

    /// Committed offsets of a group: the partitions asked for, or all with `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        self.lock().fetch_offsets(group_id, wanted)
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        self.lock().describe(group_id)
    }

    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.lock().list()
    }
}

/// One item of a `__consumer_offsets` partition read back at load.
#[derive(Debug, Clone)]
pub enum Replayed {
    /// A record, with the producer id when its batch is transactional.
    Record(Option<i64>, GroupRecord),
    /// A transaction marker.
    Marker { producer_id: i64, commit: bool },
}

#[cfg(test)]
mod tests;
