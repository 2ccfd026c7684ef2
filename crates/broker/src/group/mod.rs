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
            state_timestamp_ms: crate::state::now_ms(),
        }
    }

    fn set_state(&mut self, state: GroupState) {
        if self.state != state {
            tracing::debug!(group = %self.id, from = self.state.name(), to = state.name(), generation = self.generation, "group state");
        }
        self.state = state;
        self.state_timestamp_ms = crate::state::now_ms();
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

    pub fn join(&self, log: &dyn GroupLog, req: JoinRequest) -> Reply<JoinResult> {
        let mut groups = self.lock();
        let s = &self.settings;
        if !store::valid_group_id(&req.group_id) {
            return Reply::Now(join_error(&req.member_id, ResponseError::InvalidGroupId));
        }
        if req.session_timeout_ms < s.min_session_timeout_ms
            || req.session_timeout_ms > s.max_session_timeout_ms
        {
            tracing::info!(group = %req.group_id, session_timeout_ms = req.session_timeout_ms, min = s.min_session_timeout_ms, max = s.max_session_timeout_ms, "join refused: session timeout outside the broker's bounds");
            return Reply::Now(join_error(
                &req.member_id,
                ResponseError::InvalidSessionTimeout,
            ));
        }
        let g = groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id));
        if g.state == GroupState::Dead {
            return Reply::Now(join_error(
                &req.member_id,
                ResponseError::CoordinatorNotAvailable,
            ));
        }
        if !g.accepts(&req.protocol_type, &req.protocols) {
            return Reply::Now(join_error(
                &req.member_id,
                ResponseError::InconsistentGroupProtocol,
            ));
        }
        let now = Instant::now();
        let member_id = if req.member_id.is_empty() {
            match &req.instance_id {
                Some(instance) => {
                    if let Some(old_id) = g.static_members.get(instance).cloned() {
                        return self.replace_static_member(log, g, &old_id, req);
                    }
                    new_member_id(&req.client_id)
                }
                None if req.requires_known_member_id => {
                    let id = new_member_id(&req.client_id);
                    g.pending.insert(
                        id.clone(),
                        now + Duration::from_millis(req.session_timeout_ms as u64),
                    );
                    return Reply::Now(join_error(&id, ResponseError::MemberIdRequired));
                }
                None => new_member_id(&req.client_id),
            }
        } else {
            if let Some(instance) = &req.instance_id {
                if g.static_members
                    .get(instance)
                    .is_some_and(|id| *id != req.member_id)
                {
                    return Reply::Now(join_error(&req.member_id, ResponseError::FencedInstanceId));
                }
            }
            if !g.members.contains_key(&req.member_id) && g.pending.remove(&req.member_id).is_none()
            {
                return Reply::Now(join_error(&req.member_id, ResponseError::UnknownMemberId));
            }
            req.member_id.clone()
        };

        let (tx, rx) = oneshot::channel();
        if let Some(m) = g.members.get_mut(&member_id) {
            // A known member rejoining.
            let unchanged = m.protocols == req.protocols;
            m.last_seen = now;
            m.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
            m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
            match g.state {
                GroupState::CompletingRebalance | GroupState::Stable
                    if unchanged && g.leader.as_deref() != Some(member_id.as_str()) =>
                {
                    return Reply::Now(g.join_result_for(&member_id, 0));
                }
                GroupState::CompletingRebalance if unchanged => {
                    return Reply::Now(g.join_result_for(&member_id, 0))
                }
                _ => {}
            }
            m.protocols = req.protocols;
            m.join_waiter = Some(tx);
        } else {
            if let Some(instance) = &req.instance_id {
                g.static_members.insert(instance.clone(), member_id.clone());
            }
            tracing::info!(group = %g.id, member = %member_id, client = %req.client_id, "member joining");
            g.members.insert(
                member_id.clone(),
                Member {
                    id: member_id.clone(),
                    instance_id: req.instance_id,
                    client_id: req.client_id,
                    client_host: req.client_host,
                    session_timeout: Duration::from_millis(req.session_timeout_ms as u64),
                    rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
                    protocol_type: req.protocol_type,
                    protocols: req.protocols,
                    assignment: Bytes::new(),
                    last_seen: now,
                    join_waiter: Some(tx),
                    sync_waiter: None,
                },
            );
        }
        self.prepare_rebalance(g, now);
        Self::maybe_complete_join(log, g);
        Reply::Later(rx)
    }

    /// A static member came back with an unknown member id: it takes over its old
    /// identity under a new member id (the old one is fenced) without a rebalance when the
    /// group is stable (KIP-345).
    fn replace_static_member(
        &self,
        log: &dyn GroupLog,
        g: &mut Group,
        old_id: &str,
        req: JoinRequest,
    ) -> Reply<JoinResult> {
        let Some(mut m) = g.members.remove(old_id) else {
            return Reply::Now(join_error(&req.member_id, ResponseError::UnknownMemberId));
        };
        let new_id = new_member_id(&req.client_id);
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(join_error(old_id, ResponseError::FencedInstanceId));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(g.sync_error(ResponseError::FencedInstanceId));
        }
        let unchanged = m.protocols == req.protocols;
        m.id = new_id.clone();
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
        m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64);
        m.protocols = req.protocols;
        m.last_seen = Instant::now();
        if let Some(instance) = &req.instance_id {
            g.static_members.insert(instance.clone(), new_id.clone());
        }
        if g.leader.as_deref() == Some(old_id) {
            g.leader = Some(new_id.clone());
        }
        tracing::info!(group = %g.id, old = old_id, new = %new_id, "static member rejoined under a new member id");
        if g.state == GroupState::Stable && unchanged {
            g.members.insert(new_id.clone(), m);
            Self::persist_group(log, g);
            let mut r = g.join_result_for(&new_id, 0);
            // The leader keeps the current assignment rather than computing a new one.
            r.skip_assignment = true;
            return Reply::Now(r);
        }
        // Otherwise it joins the rebalance under its new id like any member.
        let (tx, rx) = oneshot::channel();
        m.join_waiter = Some(tx);
        g.members.insert(new_id, m);
        self.prepare_rebalance(g, Instant::now());
        Self::maybe_complete_join(log, g);
        Reply::Later(rx)
    }

    fn prepare_rebalance(&self, g: &mut Group, now: Instant) {
        match g.state {
            GroupState::PreparingRebalance | GroupState::Dead => return,
            GroupState::CompletingRebalance => {
                for m in g.members.values_mut() {
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send(SyncResult {
                            error: ResponseError::RebalanceInProgress.code(),
                            ..Default::default()
                        });
                    }
                }
            }
            GroupState::Empty => {
                g.initial_delay = true;
                g.rebalance_deadline = Some(
                    now + Duration::from_millis(
                        self.settings.initial_rebalance_delay_ms.max(0) as u64
                    )
                    .min(g.max_rebalance_timeout()),
                );
                g.set_state(GroupState::PreparingRebalance);
                return;
            }
            GroupState::Stable => {}
        }
        g.initial_delay = false;
        g.rebalance_deadline = Some(now + g.max_rebalance_timeout());
        g.set_state(GroupState::PreparingRebalance);
        tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(), "preparing rebalance");
    }

    fn maybe_complete_join(log: &dyn GroupLog, g: &mut Group) {
        if g.state != GroupState::PreparingRebalance || g.initial_delay {
            return;
        }
        if g.pending.is_empty() && g.members.values().all(|m| m.join_waiter.is_some()) {
            Self::complete_join(log, g);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, a new generation starts
    /// with a protocol and a leader, and every parked join is answered.
    fn complete_join(log: &dyn GroupLog, g: &mut Group) {
        let gone: Vec<String> = g
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            tracing::info!(group = %g.id, member = %id, "member did not rejoin in time; removed");
            Self::remove_member(g, &id);
        }
        g.pending.clear();
        g.rebalance_deadline = None;
        g.initial_delay = false;
        g.generation += 1;
        if g.members.is_empty() {
            g.protocol = None;
            g.leader = None;
            g.set_state(GroupState::Empty);
            Self::persist_group(log, g);
            return;
        }
        g.protocol = g.select_protocol();
        g.protocol_type = g.members.values().next().map(|m| m.protocol_type.clone());
        if !g.leader.as_ref().is_some_and(|l| g.members.contains_key(l)) {
            g.leader = g.members.keys().next().cloned();
        }
        g.set_state(GroupState::CompletingRebalance);
        tracing::info!(group = %g.id, generation = g.generation, protocol = g.protocol.as_deref().unwrap_or(""), members = g.members.len(), "rebalance: join complete");
        let ids: Vec<String> = g.members.keys().cloned().collect();
        let now = Instant::now();
        for id in ids {
            let result = g.join_result_for(&id, 0);
            if let Some(m) = g.members.get_mut(&id) {
                m.last_seen = now;
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(result);
                }
            }
        }
    }

    fn remove_member(g: &mut Group, id: &str) {
        if let Some(mut m) = g.members.remove(id) {
            if let Some(instance) = &m.instance_id {
                if g.static_members.get(instance).is_some_and(|cur| cur == id) {
                    g.static_members.remove(instance);
                }
            }
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(join_error(id, ResponseError::UnknownMemberId));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult {
                    error: ResponseError::UnknownMemberId.code(),
                    ..Default::default()
                });
            }
        }
        if g.leader.as_deref() == Some(id) {
            g.leader = None;
        }
    }

    /// Checks that a request comes from the current holder of a member id (static
    /// fencing first, as Kafka does).
    fn check_member(
        g: &Group,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            if g.static_members
                .get(instance)
                .is_some_and(|id| id != member_id)
            {
                return Err(ResponseError::FencedInstanceId);
            }
        }
        if !g.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(())
    }

    pub fn sync(
        &self,
        log: &dyn GroupLog,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<SyncResult> {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group_id) else {
            return Reply::Now(SyncResult {
                error: ResponseError::UnknownMemberId.code(),
                ..Default::default()
            });
        };
        if let Err(e) = Self::check_member(g, member_id, instance_id) {
            return Reply::Now(g.sync_error(e));
        }
        if generation != g.generation {
            return Reply::Now(g.sync_error(ResponseError::IllegalGeneration));
        }
        match g.state {
            GroupState::Empty | GroupState::Dead => {
                Reply::Now(g.sync_error(ResponseError::UnknownMemberId))
            }
            GroupState::PreparingRebalance => {
                Reply::Now(g.sync_error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => {
                let assignment = g
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                Reply::Now(SyncResult {
                    error: 0,
                    protocol_type: g.protocol_type.clone(),
                    protocol: g.protocol.clone(),
                    assignment,
                })
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = g.members.get_mut(member_id) {
                    m.sync_waiter = Some(tx);
                    m.last_seen = Instant::now();
                }
                if g.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in g.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    g.set_state(GroupState::Stable);
                    Self::persist_group(log, g);
                    tracing::info!(group = %g.id, generation = g.generation, "rebalance complete: group stable");
                    let (pt, p) = (g.protocol_type.clone(), g.protocol.clone());
                    for m in g.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult {
                                error: 0,
                                protocol_type: pt.clone(),
                                protocol: p.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                }
                Reply::Later(rx)
            }
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> i16 {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        if let Err(e) = Self::check_member(g, member_id, instance_id) {
            return e.code();
        }
        if let Some(m) = g.members.get_mut(member_id) {
            m.last_seen = Instant::now();
        }
        if generation != g.generation {
            return ResponseError::IllegalGeneration.code();
        }
        match g.state {
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            GroupState::CompletingRebalance | GroupState::Stable => 0,
            GroupState::Empty => ResponseError::UnknownMemberId.code(),
            GroupState::Dead => ResponseError::CoordinatorNotAvailable.code(),
        }
    }

    /// Removes members; returns a per-member error code.
    pub fn leave(
        &self,
        log: &dyn GroupLog,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<i16>, i16> {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group_id) else {
            return Err(ResponseError::UnknownMemberId.code());
        };
        let mut out = Vec::with_capacity(members.len());
        let mut changed = false;
        for (member_id, instance_id) in members {
            // A leave by instance id alone (member id "") removes whoever holds it now.
            let id = match (member_id.as_str(), instance_id) {
                ("", Some(instance)) => g.static_members.get(instance).cloned().unwrap_or_default(),
                _ => member_id.clone(),
            };
            match Self::check_member(g, &id, instance_id.as_deref()) {
                Err(e) => out.push(e.code()),
                Ok(()) => {
                    tracing::info!(group = %g.id, member = %id, "member left");
                    Self::remove_member(g, &id);
                    changed = true;
                    out.push(0);
                }
            }
        }
        if changed {
            self.after_membership_change(log, g);
        }
        Ok(out)
    }

    fn after_membership_change(&self, log: &dyn GroupLog, g: &mut Group) {
        match g.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if g.members.is_empty() {
                    g.generation += 1;
                    g.protocol = None;
                    g.leader = None;
                    g.set_state(GroupState::Empty);
                    Self::persist_group(log, g);
                } else {
                    self.prepare_rebalance(g, Instant::now());
                }
            }
            GroupState::PreparingRebalance => {
                if g.members.is_empty() {
                    Self::complete_join(log, g);
                } else {
                    Self::maybe_complete_join(log, g);
                }
            }
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Enforces session and rebalance timeouts and expires offsets of long-empty groups.
    pub fn tick(&self, log: &dyn GroupLog) {
        let mut groups = self.lock();
        let now = Instant::now();
        let now_ms = crate::state::now_ms();
        let retention = self.settings.offsets_retention_ms;
        let mut dead = Vec::new();
        for g in groups.values_mut() {
            g.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    m.join_waiter.is_none() && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|m| m.id.clone())
                .collect();
            if !expired.is_empty() {
                for id in &expired {
                    tracing::info!(group = %g.id, member = %id, "member session expired; removing it");
                    Self::remove_member(g, id);
                }
                self.after_membership_change(log, g);
            }
            if g.state == GroupState::PreparingRebalance
                && g.rebalance_deadline.is_some_and(|d| now >= d)
            {
                Self::complete_join(log, g);
            }
            if g.state == GroupState::Empty
                && retention > 0
                && now_ms - g.state_timestamp_ms > retention
                && !g.offsets.is_empty()
            {
                let stale: Vec<(String, i32)> = g
                    .offsets
                    .iter()
                    .filter(|(_, o)| now_ms - o.commit_timestamp_ms > retention)
                    .map(|(k, _)| k.clone())
                    .collect();
                if !stale.is_empty() {
                    let records = stale
                        .iter()
                        .map(|(t, p)| (store::offset_key(&g.id, t, *p), None))
                        .collect();
                    match log.append(&g.id, records) {
                        Ok(()) => {
                            tracing::info!(group = %g.id, offsets = stale.len(), "expired committed offsets of an empty group");
                            for k in stale {
                                g.offsets.remove(&k);
                            }
                        }
                        Err(e) => {
                            tracing::error!(group = %g.id, error = %e, "could not expire offsets")
                        }
                    }
                }
            }
            if g.state == GroupState::Empty
                && g.offsets.is_empty()
                && g.members.is_empty()
                && g.pending.is_empty()
            {
                dead.push(g.id.clone());
            }
        }
        for id in dead {
            groups.remove(&id);
        }
    }

    /// Checks each offset (known partition, metadata size) and builds the records of the
    /// valid ones: one code per offset, and the records to append.
    fn offset_records(
        &self,
        group_id: &str,
        offsets: &[(String, i32, CommittedOffset)],
        valid_partition: impl Fn(&str, i32) -> bool,
    ) -> (Vec<i16>, Vec<Record>) {
        let mut codes = Vec::with_capacity(offsets.len());
        let mut records = Vec::new();
        for (topic, partition, o) in offsets {
            let code = if !valid_partition(topic, *partition) {
                ResponseError::UnknownTopicOrPartition.code()
            } else if o.metadata.len() > self.settings.offset_metadata_max_bytes {
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                records.push((
                    store::offset_key(group_id, topic, *partition),
                    Some(store::offset_value(o)),
                ));
                0
            };
            codes.push(code);
        }
        (codes, records)
    }

    /// Validates and stores commits. `valid_partition` says whether a topic-partition
    /// exists. Returns one error code per requested partition, in order.
    pub fn commit(
        &self,
        log: &dyn GroupLog,
        by: Committer<'_>,
        offsets: &[(String, i32, CommittedOffset)],
        valid_partition: impl Fn(&str, i32) -> bool,
    ) -> Vec<i16> {
        let Committer {
            group_id,
            generation,
            member_id,
            instance_id,
        } = by;
        let fail_all = |e: ResponseError| vec![e.code(); offsets.len()];
        if !store::valid_group_id(group_id) {
            return fail_all(ResponseError::InvalidGroupId);
        }
        let mut groups = self.lock();
        let g = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id));
        let simple = generation < 0 && member_id.is_empty();
        if g.state == GroupState::Dead {
            return fail_all(ResponseError::CoordinatorNotAvailable);
        }
        if !(simple && g.state == GroupState::Empty) {
            if let Err(e) = Self::check_member(g, member_id, instance_id) {
                return fail_all(e);
            }
            if g.state == GroupState::CompletingRebalance {
                return fail_all(ResponseError::RebalanceInProgress);
            }
            if generation != g.generation {
                return fail_all(ResponseError::IllegalGeneration);
            }
            if let Some(m) = g.members.get_mut(member_id) {
                m.last_seen = Instant::now();
            }
        }
        let (codes, records) = self.offset_records(group_id, offsets, valid_partition);
        if records.is_empty() {
            return codes;
        }
        if let Err(e) = log.append(group_id, records) {
            tracing::error!(group = group_id, error = %e, "could not store committed offsets");
            return codes
                .iter()
                .map(|&c| {
                    if c == 0 {
                        ResponseError::KafkaStorageError.code()
                    } else {
                        c
                    }
                })
                .collect();
        }
        for ((topic, partition, o), code) in offsets.iter().zip(&codes) {
            if *code == 0 {
                g.offsets.insert((topic.clone(), *partition), o.clone());
            }
        }
        codes
    }

    /// TxnOffsetCommit: stores offsets as part of the producer's transaction. They are
    /// written now (transactional records) but count only once the transaction commits.
    pub fn txn_commit(
        &self,
        log: &dyn GroupLog,
        by: Committer<'_>,
        producer: (i64, i16),
        offsets: &[(String, i32, CommittedOffset)],
        valid_partition: impl Fn(&str, i32) -> bool,
    ) -> Vec<i16> {
        let Committer {
            group_id,
            generation,
            member_id,
            instance_id,
        } = by;
        let fail_all = |e: ResponseError| vec![e.code(); offsets.len()];
        if !store::valid_group_id(group_id) {
            return fail_all(ResponseError::InvalidGroupId);
        }
        let mut groups = self.lock();
        let g = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id));
        if g.state == GroupState::Dead {
            return fail_all(ResponseError::CoordinatorNotAvailable);
        }
        // Older clients send no generation: Kafka then skips the member check.
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            if let Err(e) = Self::check_member(g, member_id, instance_id) {
                return fail_all(e);
            }
            if generation != g.generation {
                return fail_all(ResponseError::IllegalGeneration);
            }
        }
        let (codes, records) = self.offset_records(group_id, offsets, valid_partition);
        if records.is_empty() {
            return codes;
        }
        if let Err((code, e)) = log.append_txn(group_id, producer.0, producer.1, records) {
            tracing::warn!(group = group_id, producer_id = producer.0, error = %e, "transactional offset commit refused");
            return codes
                .iter()
                .map(|&c| if c == 0 { code.code() } else { c })
                .collect();
        }
        let pending = g.txn_offsets.entry(producer.0).or_default();
        for ((topic, partition, o), code) in offsets.iter().zip(&codes) {
            if *code == 0 {
                pending.insert((topic.clone(), *partition), o.clone());
            }
        }
        codes
    }

    /// A transaction marker reached `__consumer_offsets`: the producer's pending offsets
    /// become committed (commit) or are dropped (abort).
    pub fn complete_txn(&self, producer_id: i64, commit: bool) {
        let mut groups = self.lock();
        for g in groups.values_mut() {
            if let Some(pending) = g.txn_offsets.remove(&producer_id) {
                if commit {
                    g.offsets.extend(pending);
                }
            }
        }
    }

    /// Restores offsets of transactions still open at start-up (their markers come later).
    /// Forgets the groups `ours` selects (their coordinator moved to another broker).
    /// Parked joins and syncs are dropped, so their members retry and find the new one.
    pub fn unload(&self, ours: &dyn Fn(&str) -> bool) {
        self.lock().retain(|id, _| !ours(id));
    }

    pub fn load_txn_offsets(&self, records: Vec<(i64, GroupRecord)>) {
        let mut groups = self.lock();
        for (producer_id, r) in records {
            if let GroupRecord::Offset {
                group,
                topic,
                partition,
                value: Some(v),
            } = r
            {
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group))
                    .txn_offsets
                    .entry(producer_id)
                    .or_default()
                    .insert((topic, partition), v);
            }
        }
    }

    /// Whether a partition's offset in the group waits on an open transaction
    /// (OffsetFetch with `require_stable` then answers `UNSTABLE_OFFSET_COMMIT`).
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        let groups = self.lock();
        groups.get(group_id).is_some_and(|g| {
            let key = (topic.to_string(), partition);
            g.txn_offsets.values().any(|p| p.contains_key(&key))
        })
    }

    /// Committed offsets of a group: the partitions asked for, or all with `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        let groups = self.lock();
        let committed = groups.get(group_id).map(|g| &g.offsets);
        match wanted {
            Some(list) => list
                .iter()
                .map(|(t, p)| {
                    (
                        t.clone(),
                        *p,
                        committed.and_then(|c| c.get(&(t.clone(), *p)).cloned()),
                    )
                })
                .collect(),
            None => committed
                .map(|c| {
                    c.iter()
                        .map(|((t, p), o)| (t.clone(), *p, Some(o.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        }
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

    /// Deletes committed offsets (OffsetDelete). `subscribed` says whether the group's
    /// members are subscribed to a topic. Group-level error, or per-partition codes.
    pub fn delete_offsets(
        &self,
        log: &dyn GroupLog,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed: impl Fn(&[Bytes], &str) -> bool,
    ) -> Result<Vec<i16>, i16> {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group_id) else {
            return Err(ResponseError::GroupIdNotFound.code());
        };
        let metadata: Vec<Bytes> = if g.state == GroupState::Empty {
            Vec::new()
        } else {
            g.members
                .values()
                .map(|m| m.metadata_for(g.protocol.as_deref().unwrap_or("")))
                .collect()
        };
        let mut codes = Vec::new();
        let mut records = Vec::new();
        for (t, p) in partitions {
            if !metadata.is_empty() && subscribed(&metadata, t) {
                codes.push(ResponseError::GroupSubscribedToTopic.code());
            } else {
                if g.offsets.contains_key(&(t.clone(), *p)) {
                    records.push((store::offset_key(group_id, t, *p), None));
                }
                codes.push(0);
            }
        }
        if !records.is_empty() {
            if let Err(e) = log.append(group_id, records) {
                tracing::error!(group = group_id, error = %e, "could not delete offsets");
                return Err(ResponseError::KafkaStorageError.code());
            }
            for ((t, p), c) in partitions.iter().zip(&codes) {
                if *c == 0 {
                    g.offsets.remove(&(t.clone(), *p));
                }
            }
        }
        Ok(codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (group, key, value) of one appended record.
    type Appended = (String, Vec<u8>, Option<Vec<u8>>);

    /// Records appends instead of writing them; can be told to fail.
    #[derive(Default)]
    struct MemLog {
        appended: Mutex<Vec<Appended>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl GroupLog for MemLog {
        fn append(&self, group: &str, records: Vec<Record>) -> Result<(), String> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("injected".into());
            }
            let mut a = self.appended.lock().unwrap_or_else(|p| p.into_inner());
            a.extend(records.into_iter().map(|(k, v)| (group.to_string(), k, v)));
            Ok(())
        }
        fn append_txn(
            &self,
            group: &str,
            _producer_id: i64,
            epoch: i16,
            records: Vec<Record>,
        ) -> Result<(), (ResponseError, String)> {
            if epoch < 0 {
                return Err((ResponseError::InvalidProducerEpoch, "stale epoch".into()));
            }
            self.append(group, records)
                .map_err(|e| (ResponseError::KafkaStorageError, e))
        }
    }

    #[test]
    fn transactional_offsets_count_only_once_committed() {
        let log = MemLog::default();
        let c = coordinator(0, 60_000);
        let by = Committer {
            group_id: "g",
            generation: -1,
            member_id: "",
            instance_id: None,
        };
        let offset = |o: i64| CommittedOffset {
            offset: o,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        };
        let codes = c.txn_commit(&log, by, (5, 0), &[("t".into(), 0, offset(10))], |_, _| {
            true
        });
        assert_eq!(codes, vec![0]);
        assert!(c.has_pending_txn_offset("g", "t", 0));
        assert_eq!(
            c.fetch_offsets("g", None).len(),
            0,
            "invisible until committed"
        );
        c.complete_txn(5, true);
        assert!(!c.has_pending_txn_offset("g", "t", 0));
        assert_eq!(
            c.fetch_offsets("g", None)[0].2.as_ref().map(|o| o.offset),
            Some(10)
        );
        c.txn_commit(&log, by, (6, 0), &[("t".into(), 0, offset(20))], |_, _| {
            true
        });
        c.complete_txn(6, false);
        assert_eq!(
            c.fetch_offsets("g", None)[0].2.as_ref().map(|o| o.offset),
            Some(10),
            "an aborted commit leaves the old offset"
        );
        let refused = c.txn_commit(&log, by, (7, -1), &[("t".into(), 0, offset(30))], |_, _| {
            true
        });
        assert_eq!(refused, vec![ResponseError::InvalidProducerEpoch.code()]);
        assert!(!c.has_pending_txn_offset("g", "t", 0));
    }

    fn coordinator(initial_delay_ms: i32, retention_ms: i64) -> GroupCoordinator {
        GroupCoordinator::new(GroupSettings {
            min_session_timeout_ms: 10,
            max_session_timeout_ms: 100_000,
            initial_rebalance_delay_ms: initial_delay_ms,
            offsets_retention_ms: retention_ms,
            offset_metadata_max_bytes: 16,
        })
    }

    fn join(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            instance_id: instance.map(String::from),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            requires_known_member_id: true,
        }
    }

    fn now(reply: Reply<JoinResult>) -> JoinResult {
        match reply {
            Reply::Now(r) => r,
            Reply::Later(_) => panic!("expected an immediate answer"),
        }
    }

    async fn later<T>(reply: Reply<T>) -> T {
        match reply {
            Reply::Now(_) => panic!("expected a parked answer"),
            Reply::Later(rx) => rx.await.expect("answered"),
        }
    }

    #[tokio::test]
    async fn first_join_needs_a_member_id_then_completes_with_a_leader() {
        let log = MemLog::default();
        let c = coordinator(0, 1000);
        let first = now(c.join(&log, join("", None, &["range"])));
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        assert!(!first.member_id.is_empty());
        let mut too_long = join("", None, &["range"]);
        too_long.group_id = "g".repeat(store::STRING_MAX_BYTES + 1);
        assert_eq!(
            now(c.join(&log, too_long)).error,
            ResponseError::InvalidGroupId.code()
        );
        let unknown = now(c.join(&log, join("made-up", None, &["range"])));
        assert_eq!(unknown.error, ResponseError::UnknownMemberId.code());
        let reply = c.join(&log, join(&first.member_id, None, &["range"]));
        c.tick(&log); // the initial delay (0 ms) has passed
        let joined = later(reply).await;
        assert_eq!((joined.error, joined.generation), (0, 1));
        assert_eq!(joined.leader, first.member_id);
        assert_eq!(joined.members.len(), 1, "the leader gets the member list");
        let synced = later(c.sync(
            &log,
            "g",
            1,
            &first.member_id,
            None,
            vec![(first.member_id.clone(), Bytes::from_static(b"a"))],
        ))
        .await;
        assert_eq!((synced.error, &synced.assignment[..]), (0, &b"a"[..]));
        assert_eq!(c.describe("g").map(|g| g.state), Some(GroupState::Stable));
        assert_eq!(c.heartbeat("g", 1, &first.member_id, None), 0);
        assert_eq!(
            c.heartbeat("g", 0, &first.member_id, None),
            ResponseError::IllegalGeneration.code()
        );
        assert!(
            log.appended
                .lock()
                .expect("lock")
                .iter()
                .any(|(_, k, v)| *k == store::group_key("g") && v.is_some()),
            "group metadata was stored"
        );
    }

    #[tokio::test]
    async fn protocols_are_voted_and_inconsistent_ones_refused() {
        let log = MemLog::default();
        let c = coordinator(0, 1000);
        let mut a = join("", None, &["roundrobin", "range"]);
        a.requires_known_member_id = false;
        let ra = c.join(&log, a);
        c.tick(&log);
        let first = later(ra).await;
        assert_eq!(first.protocol.as_deref(), Some("roundrobin"));
        let bad = now(c.join(&log, join("", None, &["sticky"])));
        assert_eq!(bad.error, ResponseError::InconsistentGroupProtocol.code());
        // Two more members prefer range: it wins the vote 2 to 1.
        let mut joins = Vec::new();
        for _ in 0..2 {
            let mut b = join("", None, &["range", "roundrobin"]);
            b.requires_known_member_id = false;
            joins.push(c.join(&log, b));
        }
        joins.push(c.join(&log, join(&first.member_id, None, &["roundrobin", "range"])));
        for reply in joins {
            let r = later(reply).await;
            assert_eq!(
                (r.error, r.generation, r.protocol.as_deref()),
                (0, 2, Some("range"))
            );
        }
    }

    #[tokio::test]
    async fn static_member_with_a_new_id_fences_the_old_one() {
        let log = MemLog::default();
        let c = coordinator(0, 1000);
        let r = c.join(&log, join("", Some("i1"), &["range"]));
        c.tick(&log);
        let old = later(r).await;
        later(c.sync(
            &log,
            "g",
            old.generation,
            &old.member_id,
            Some("i1"),
            vec![(old.member_id.clone(), Bytes::from_static(b"x"))],
        ))
        .await;
        let again = now(c.join(&log, join("", Some("i1"), &["range"])));
        assert_eq!(
            (again.error, again.generation),
            (0, old.generation),
            "no rebalance for a returning static member"
        );
        assert_ne!(again.member_id, old.member_id);
        assert_eq!(
            c.heartbeat("g", old.generation, &old.member_id, Some("i1")),
            ResponseError::FencedInstanceId.code()
        );
        assert_eq!(
            c.heartbeat("g", old.generation, &again.member_id, Some("i1")),
            0
        );
    }

    #[test]
    fn commits_are_validated_and_stored_only_after_the_log_append() {
        let log = MemLog::default();
        let c = coordinator(0, 1000);
        let off = |o| CommittedOffset {
            offset: o,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: crate::state::now_ms(),
        };
        let by = Committer {
            group_id: "g",
            generation: -1,
            member_id: "",
            instance_id: None,
        };
        let codes = c.commit(
            &log,
            by,
            &[("t".into(), 0, off(5)), ("nope".into(), 0, off(1))],
            |t, _| t == "t",
        );
        assert_eq!(
            codes,
            vec![0, ResponseError::UnknownTopicOrPartition.code()]
        );
        // A group id longer than its key's int16 length could only be stored cut short.
        let too_long = "g".repeat(store::STRING_MAX_BYTES + 1);
        let by_too_long = Committer {
            group_id: &too_long,
            ..by
        };
        assert_eq!(
            c.commit(&log, by_too_long, &[("t".into(), 0, off(5))], |_, _| true),
            vec![ResponseError::InvalidGroupId.code()]
        );
        let mut long = off(6);
        long.metadata = "x".repeat(17);
        assert_eq!(
            c.commit(&log, by, &[("t".into(), 0, long)], |_, _| true),
            vec![ResponseError::OffsetMetadataTooLarge.code()]
        );
        log.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            c.commit(&log, by, &[("t".into(), 0, off(9))], |_, _| true),
            vec![ResponseError::KafkaStorageError.code()]
        );
        let fetched = c.fetch_offsets("g", Some(&[("t".into(), 0)]));
        assert_eq!(
            fetched[0].2.as_ref().map(|o| o.offset),
            Some(5),
            "a commit that was not stored must not be visible"
        );
        let member = Committer {
            group_id: "g",
            generation: 3,
            member_id: "ghost",
            instance_id: None,
        };
        assert_eq!(
            c.commit(&log, member, &[("t".into(), 0, off(1))], |_, _| true),
            vec![ResponseError::UnknownMemberId.code()]
        );
    }

    #[test]
    fn offsets_of_an_empty_group_expire_after_retention() {
        let log = MemLog::default();
        let c = coordinator(0, 20);
        let by = Committer {
            group_id: "g",
            generation: -1,
            member_id: "",
            instance_id: None,
        };
        let o = CommittedOffset {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: crate::state::now_ms(),
        };
        assert_eq!(
            c.commit(&log, by, &[("t".into(), 0, o)], |_, _| true),
            vec![0]
        );
        c.tick(&log);
        assert_eq!(c.fetch_offsets("g", None).len(), 1, "not yet expired");
        std::thread::sleep(Duration::from_millis(40));
        c.tick(&log);
        assert!(c.fetch_offsets("g", None).is_empty());
        assert!(
            log.appended
                .lock()
                .expect("lock")
                .iter()
                .any(|(_, k, v)| *k == store::offset_key("g", "t", 0) && v.is_none()),
            "a tombstone was written"
        );
    }

    #[test]
    fn replay_restores_offsets_and_members_and_applies_tombstones() {
        let c = coordinator(0, 1000);
        let o = |n| {
            Some(CommittedOffset {
                offset: n,
                leader_epoch: 0,
                metadata: "m".into(),
                commit_timestamp_ms: 1,
            })
        };
        c.load(vec![
            GroupRecord::Offset {
                group: "a".into(),
                topic: "t".into(),
                partition: 0,
                value: o(3),
            },
            GroupRecord::Offset {
                group: "a".into(),
                topic: "t".into(),
                partition: 1,
                value: o(4),
            },
            GroupRecord::Offset {
                group: "a".into(),
                topic: "t".into(),
                partition: 1,
                value: None,
            },
            GroupRecord::Offset {
                group: "gone".into(),
                topic: "t".into(),
                partition: 0,
                value: o(9),
            },
            GroupRecord::Group {
                group: "gone".into(),
                value: None,
            },
        ]);
        let a = c.fetch_offsets("a", None);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].2.as_ref().map(|o| o.offset), Some(3));
        assert!(c.fetch_offsets("gone", None).is_empty());
    }
}
