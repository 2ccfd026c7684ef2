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
//! Durability: every committed offset and every group-metadata change is appended to the
//! group's `__consumer_offsets` partition (see `store.rs`) *before* it takes effect in
//! memory or is acknowledged; start-up replays those partitions.

mod membership;
mod offsets;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

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
    /// Appends (key, value-or-tombstone) records for `group` durably enough to acknowledge.
    fn append(&self, group: &str, records: Vec<Record>) -> Result<(), String>;
    /// Appends records as part of a producer's transaction (TxnOffsetCommit): a
    /// transactional batch with the producer's id and epoch. Errors carry a Kafka code.
    fn append_txn(
        &self,
        group: &str,
        producer_id: i64,
        epoch: i16,
        records: Vec<Record>,
    ) -> Result<(), (ResponseError, String)>;
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

/// Who commits offsets: a member of a generation, or (generation -1, member "") a
/// standalone consumer committing for an empty group.
#[derive(Debug, Clone, Copy)]
pub struct Committer<'a> {
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

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id → member id (KIP-345).
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined (KIP-394).
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// The first rebalance of an empty group waits `group.initial.rebalance.delay.ms` for
    /// more members instead of completing as soon as everyone known has joined.
    initial_delay: bool,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Offsets committed inside open transactions, by producer id: they become committed
    /// offsets when the transaction commits, and vanish when it aborts.
    txn_offsets: HashMap<i64, BTreeMap<(String, i32), CommittedOffset>>,
    state_timestamp_ms: i64,
}

impl Group {
    fn new(id: &str) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: false,
            offsets: BTreeMap::new(),
            txn_offsets: HashMap::new(),
            state_timestamp_ms: gregor_cluster::net::now_ms(),
        }
    }

    fn set_state(&mut self, state: GroupState) {
        if self.state != state {
            tracing::debug!(group = %self.id, from = self.state.name(), to = state.name(), generation = self.generation, "group state");
        }
        self.state = state;
        self.state_timestamp_ms = gregor_cluster::net::now_ms();
    }

    /// Protocols every member supports, in the first member's order of preference.
    fn candidate_protocols(&self) -> Vec<String> {
        let Some(first) = self.members.values().next() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
            .collect()
    }

    /// Whether a joining member's protocols fit the group (INCONSISTENT_GROUP_PROTOCOL if not).
    fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocols.is_empty() || protocol_type.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type
            .as_deref()
            .is_none_or(|t| t == protocol_type)
            && self
                .candidate_protocols()
                .iter()
                .any(|c| protocols.iter().any(|(p, _)| p == c))
    }

    /// Kafka's vote: each member votes for its most preferred candidate; most votes wins.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<usize> = vec![0; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|(p, _)| candidates.iter().position(|c| c == p))
            {
                votes[i] += 1;
            }
        }
        let best = votes
            .iter()
            .enumerate()
            .max_by_key(|&(i, v)| (*v, std::cmp::Reverse(i)))?
            .0;
        candidates.into_iter().nth(best)
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60))
    }

    fn stored(&self) -> StoredGroup {
        StoredGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    subscription: self
                        .protocol
                        .as_deref()
                        .map(|p| m.metadata_for(p))
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn join_result_for(&self, member_id: &str, error: i16) -> JoinResult {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinResult {
            error,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| {
                        (
                            m.id.clone(),
                            m.instance_id.clone(),
                            m.metadata_for(&protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    fn sync_error(&self, error: ResponseError) -> SyncResult {
        SyncResult {
            error: error.code(),
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment: Bytes::new(),
        }
    }
}

fn join_error(member_id: &str, error: ResponseError) -> JoinResult {
    JoinResult {
        error: error.code(),
        generation: -1,
        member_id: member_id.to_string(),
        ..Default::default()
    }
}

fn new_member_id(client_id: &str) -> String {
    format!("{client_id}-{}", uuid::Uuid::new_v4())
}

#[derive(Debug)]
pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    settings: GroupSettings,
}

impl GroupCoordinator {
    pub fn new(settings: GroupSettings) -> Self {
        GroupCoordinator {
            groups: Mutex::new(HashMap::new()),
            settings,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds groups from replayed `__consumer_offsets` records, in log order. Groups
    /// that had members come back Stable with them (they keep heartbeating, or expire).
    pub fn load(&self, records: impl IntoIterator<Item = GroupRecord>) {
        let mut offsets: HashMap<String, BTreeMap<(String, i32), CommittedOffset>> = HashMap::new();
        let mut metadata: HashMap<String, StoredGroup> = HashMap::new();
        for r in records {
            match r {
                GroupRecord::Offset {
                    group,
                    topic,
                    partition,
                    value: Some(v),
                } => {
                    offsets
                        .entry(group)
                        .or_default()
                        .insert((topic, partition), v);
                }
                GroupRecord::Offset {
                    group,
                    topic,
                    partition,
                    value: None,
                } => {
                    if let Some(o) = offsets.get_mut(&group) {
                        o.remove(&(topic, partition));
                    }
                }
                GroupRecord::Group {
                    group,
                    value: Some(v),
                } => {
                    metadata.insert(group, v);
                }
                GroupRecord::Group { group, value: None } => {
                    metadata.remove(&group);
                    offsets.remove(&group);
                }
            }
        }
        let mut groups = self.lock();
        let now = Instant::now();
        for (id, stored) in metadata {
            let mut g = Group::new(&id);
            g.generation = stored.generation;
            g.protocol_type = Some(stored.protocol_type).filter(|t| !t.is_empty());
            g.protocol = stored.protocol.clone();
            g.leader = stored.leader;
            for m in stored.members {
                if let Some(instance) = &m.group_instance_id {
                    g.static_members
                        .insert(instance.clone(), m.member_id.clone());
                }
                let protocols = stored
                    .protocol
                    .iter()
                    .map(|p| (p.clone(), m.subscription.clone()))
                    .collect();
                g.members.insert(
                    m.member_id.clone(),
                    Member {
                        id: m.member_id,
                        instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                        rebalance_timeout: Duration::from_millis(
                            m.rebalance_timeout_ms.max(0) as u64
                        ),
                        protocol_type: g.protocol_type.clone().unwrap_or_default(),
                        protocols,
                        assignment: m.assignment,
                        last_seen: now,
                        join_waiter: None,
                        sync_waiter: None,
                    },
                );
            }
            g.state = if g.members.is_empty() {
                GroupState::Empty
            } else {
                GroupState::Stable
            };
            groups.insert(id, g);
        }
        for (id, o) in offsets {
            groups
                .entry(id.clone())
                .or_insert_with(|| Group::new(&id))
                .offsets = o;
        }
        tracing::info!(groups = groups.len(), "consumer groups loaded");
    }

    fn persist_group(log: &dyn GroupLog, g: &Group) {
        let value = if g.members.is_empty() && g.offsets.is_empty() {
            None
        } else {
            Some(store::group_value(&g.stored()))
        };
        if let Err(e) = log.append(&g.id, vec![(store::group_key(&g.id), value)]) {
            tracing::error!(group = %g.id, error = %e, "could not store group metadata; it will be rebuilt by the next rebalance");
        }
    }

    /// Restores offsets of transactions still open at start-up (their markers come later).
    /// Forgets the groups `ours` selects (their coordinator moved to another broker).
    /// Parked joins and syncs are dropped, so their members retry and find the new one.
    pub fn unload(&self, ours: &dyn Fn(&str) -> bool) {
        self.lock().retain(|id, _| !ours(id));
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        let groups = self.lock();
        let g = groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupView {
            group_id: g.id.clone(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .values()
                .map(|m| MemberView {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups = self.lock();
        let mut out: Vec<_> = groups
            .values()
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Deletes an empty group and its offsets.
    pub fn delete(&self, log: &dyn GroupLog, group_id: &str) -> i16 {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group_id) else {
            return ResponseError::GroupIdNotFound.code();
        };
        if g.state != GroupState::Empty {
            return ResponseError::NonEmptyGroup.code();
        }
        let mut records: Vec<Record> = g
            .offsets
            .keys()
            .map(|(t, p)| (store::offset_key(group_id, t, *p), None))
            .collect();
        records.push((store::group_key(group_id), None));
        if let Err(e) = log.append(group_id, records) {
            tracing::error!(group = group_id, error = %e, "could not delete group");
            return ResponseError::KafkaStorageError.code();
        }
        g.set_state(GroupState::Dead);
        groups.remove(group_id);
        tracing::info!(group = group_id, "deleted group");
        0
    }
}

#[cfg(test)]
mod tests;
