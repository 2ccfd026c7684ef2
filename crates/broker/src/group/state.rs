//! The groups of one coordinator and how records rebuild them: the state the operations
//! of `membership` and `offsets` change, and [`Groups::replay`], the one way a stored
//! record takes effect (after its append, and when a partition is loaded).

use super::*;

#[derive(Debug)]
pub(super) struct Member {
    pub(super) id: String,
    pub(super) instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) protocol_type: String,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    pub(super) last_seen: Instant,
    pub(super) join_waiter: Option<oneshot::Sender<JoinResult>>,
    pub(super) sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    pub(super) fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) id: String,
    pub(super) state: GroupState,
    pub(super) generation: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) members: BTreeMap<String, Member>,
    /// group.instance.id → member id (KIP-345).
    pub(super) static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined (KIP-394).
    pub(super) pending: HashMap<String, Instant>,
    pub(super) rebalance_deadline: Option<Instant>,
    /// The first rebalance of an empty group waits `group.initial.rebalance.delay.ms` for
    /// more members instead of completing as soon as everyone known has joined.
    pub(super) initial_delay: bool,
    pub(super) offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Offsets committed inside open transactions, by producer id: they become committed
    /// offsets when the transaction commits, and vanish when it aborts.
    pub(super) txn_offsets: HashMap<i64, BTreeMap<(String, i32), CommittedOffset>>,
    pub(super) state_timestamp_ms: i64,
    /// The membership changed since its last snapshot record.
    pub(super) snapshot_due: bool,
    /// SyncGroup answers that wait for the snapshot's append.
    pub(super) sync_replies: Vec<(oneshot::Sender<SyncResult>, SyncResult)>,
}

impl Group {
    pub(super) fn new(id: &str, wall_ms: i64) -> Self {
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
            state_timestamp_ms: wall_ms,
            snapshot_due: false,
            sync_replies: Vec::new(),
        }
    }

    pub(super) fn set_state(&mut self, state: GroupState, now: Now) {
        if self.state != state {
            tracing::debug!(group = %self.id, from = self.state.name(), to = state.name(), generation = self.generation, "group state");
        }
        self.state = state;
        self.state_timestamp_ms = now.wall_ms;
    }

    /// Protocols every member supports, in the first member's order of preference.
    pub(super) fn candidate_protocols(&self) -> Vec<String> {
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
    pub(super) fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
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
    pub(super) fn select_protocol(&self) -> Option<String> {
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

    pub(super) fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60))
    }

    pub(super) fn stored(&self) -> StoredGroup {
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

    pub(super) fn join_result_for(&self, member_id: &str, error: i16) -> JoinResult {
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

    /// The group's snapshot record when its membership changed since the last one: its
    /// metadata, or a tombstone once nothing of it is left.
    pub(super) fn take_snapshot(&mut self) -> Option<GroupRecord> {
        if !std::mem::take(&mut self.snapshot_due) {
            return None;
        }
        let gone =
            self.members.is_empty() && self.offsets.is_empty() && self.txn_offsets.is_empty();
        Some(GroupRecord::Group {
            group: self.id.clone(),
            value: (!gone).then(|| self.stored()),
        })
    }

    /// An outcome for this group: `reply`, with the group's snapshot when its membership
    /// changed and the SyncGroup answers waiting for that snapshot.
    pub(super) fn outcome<T>(&mut self, reply: T) -> Outcome<T> {
        let mut out = Outcome::reply(&self.id, reply);
        out.snapshot = self.take_snapshot();
        out.sync_replies = std::mem::take(&mut self.sync_replies);
        out
    }

    pub(super) fn sync_error(&self, error: ResponseError) -> SyncResult {
        SyncResult {
            error: error.code(),
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment: Bytes::new(),
        }
    }
}

pub(super) fn join_error(member_id: &str, error: ResponseError) -> JoinResult {
    JoinResult {
        error: error.code(),
        generation: -1,
        member_id: member_id.to_string(),
        ..Default::default()
    }
}

pub(super) fn new_member_id(client_id: &str) -> String {
    format!("{client_id}-{}", uuid::Uuid::new_v4())
}

/// Every group of this coordinator: the state machine.
#[derive(Debug)]
pub struct Groups {
    pub(super) groups: HashMap<String, Group>,
    pub(super) settings: GroupSettings,
}

impl Groups {
    pub fn new(settings: GroupSettings) -> Self {
        Groups {
            groups: HashMap::new(),
            settings,
        }
    }

    /// The outcome of a membership operation on `group_id`: `reply`, with the group's
    /// snapshot when its membership changed.
    pub(super) fn outcome<T>(&mut self, group_id: &str, reply: T) -> Outcome<T> {
        match self.groups.get_mut(group_id) {
            Some(g) => g.outcome(reply),
            None => Outcome::reply(group_id, reply),
        }
    }

    /// Appends what an operation decided, replays its records once written, and returns
    /// its reply (or, when the append failed, its reply for that).
    pub(super) fn settle<T>(&mut self, log: &dyn GroupLog, now: Now, outcome: Outcome<T>) -> T {
        let Outcome {
            group,
            records,
            snapshot,
            producer,
            reply,
            on_error,
            sync_replies,
        } = outcome;
        if records.is_empty() && snapshot.is_none() {
            deliver(sync_replies);
            return reply;
        }
        let batch: Vec<Record> = snapshot.iter().chain(&records).map(store::encode).collect();
        let appended = log.append(&group, producer, batch);
        // Other members' SyncGroup answers go out once the snapshot is written (or failed
        // to be: they were answered then before, and the next rebalance writes it again).
        deliver(sync_replies);
        match appended {
            Ok(()) => {
                for record in records {
                    self.replay(now, producer.map(|(id, _)| id), record);
                }
                reply
            }
            Err(e) => {
                tracing::warn!(group = %group, error = %e, "could not store the group's records: its offsets and deletions were not applied, and its membership is written again at the next rebalance");
                match on_error {
                    Some(failed) => failed(reply, e.code()),
                    None => reply,
                }
            }
        }
    }

    /// Applies one stored record: `producer` is the producer id of a transactional batch,
    /// whose offsets stay pending until the transaction's marker ([`Self::complete_txn`]).
    pub fn replay(&mut self, now: Now, producer: Option<i64>, record: GroupRecord) {
        match record {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => match (producer, value) {
                (Some(producer_id), Some(v)) => {
                    self.group_or_new(&group, now)
                        .txn_offsets
                        .entry(producer_id)
                        .or_default()
                        .insert((topic, partition), v);
                }
                (None, Some(v)) => {
                    self.group_or_new(&group, now)
                        .offsets
                        .insert((topic, partition), v);
                }
                (_, None) => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            GroupRecord::Group {
                group,
                value: Some(stored),
            } => self.replay_group(now, &group, stored),
            GroupRecord::Group { group, value: None } => {
                let pending = self
                    .groups
                    .get(&group)
                    .is_some_and(|g| !g.txn_offsets.is_empty());
                if pending {
                    // Offsets of an open transaction outlive the group's other state.
                    if let Some(g) = self.groups.get_mut(&group) {
                        let txn_offsets = std::mem::take(&mut g.txn_offsets);
                        *g = Group::new(&group, now.wall_ms);
                        g.txn_offsets = txn_offsets;
                    }
                } else {
                    self.groups.remove(&group);
                }
            }
        }
    }

    /// A group's snapshot read back at load: its members, Stable with them.
    fn replay_group(&mut self, now: Now, id: &str, stored: StoredGroup) {
        let g = self.group_or_new(id, now);
        g.generation = stored.generation;
        g.protocol_type = Some(stored.protocol_type).filter(|t| !t.is_empty());
        g.protocol = stored.protocol.clone();
        g.leader = stored.leader;
        g.members.clear();
        g.static_members.clear();
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
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    protocols,
                    assignment: m.assignment,
                    last_seen: now.mono,
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
    }

    pub(super) fn group_or_new(&mut self, id: &str, now: Now) -> &mut Group {
        self.groups
            .entry(id.to_string())
            .or_insert_with(|| Group::new(id, now.wall_ms))
    }

    /// A transaction marker: the producer's pending offsets in the groups `ours` selects
    /// become committed (commit) or are dropped (abort).
    pub fn complete_txn(&mut self, producer_id: i64, commit: bool, ours: &dyn Fn(&str) -> bool) {
        for g in self.groups.values_mut().filter(|g| ours(&g.id)) {
            if let Some(pending) = g.txn_offsets.remove(&producer_id) {
                if commit {
                    g.offsets.extend(pending);
                }
            }
        }
    }

    /// Forgets the groups `ours` selects.
    pub fn unload(&mut self, ours: &dyn Fn(&str) -> bool) {
        self.groups.retain(|id, _| !ours(id));
    }

    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.groups.get(group_id).is_some_and(|g| {
            let key = (topic.to_string(), partition);
            g.txn_offsets.values().any(|p| p.contains_key(&key))
        })
    }

    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        let committed = self.groups.get(group_id).map(|g| &g.offsets);
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
        let g = self.groups.get(group_id)?;
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
        let mut out: Vec<_> = self
            .groups
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
}

/// Sends SyncGroup answers that waited for an append.
fn deliver(replies: Vec<(oneshot::Sender<SyncResult>, SyncResult)>) {
    for (waiter, result) in replies {
        let _ = waiter.send(result);
    }
}
