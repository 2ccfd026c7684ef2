//! A group's members: JoinGroup and SyncGroup with their rebalance, static members,
//! heartbeats, LeaveGroup, and the session and rebalance timeouts (`tick`).

use super::*;

impl Groups {
    pub fn join(&mut self, now: Now, req: JoinRequest) -> Outcome<Reply<JoinResult>> {
        let group_id = req.group_id.clone();
        let reply = self.join_group(now, req);
        self.outcome(&group_id, reply)
    }

    fn join_group(&mut self, now: Now, req: JoinRequest) -> Reply<JoinResult> {
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
        let g = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id, now.wall_ms));
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
        let member_id = if req.member_id.is_empty() {
            match &req.instance_id {
                Some(instance) => {
                    if let Some(old_id) = g.static_members.get(instance).cloned() {
                        return Self::replace_static_member(s, now, g, &old_id, req);
                    }
                    new_member_id(&req.client_id)
                }
                None if req.requires_known_member_id => {
                    let id = new_member_id(&req.client_id);
                    g.pending.insert(
                        id.clone(),
                        now.mono + Duration::from_millis(req.session_timeout_ms as u64),
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
        Self::enter_rebalance(s, g, now, member_id, req)
    }

    /// A member whose id is settled joins: a known one rejoining (answered at once when
    /// nothing changed for it), or a new one; the rebalance is then prepared and, when
    /// everyone is in, completed.
    fn enter_rebalance(
        s: &GroupSettings,
        g: &mut Group,
        now: Now,
        member_id: String,
        req: JoinRequest,
    ) -> Reply<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(m) = g.members.get_mut(&member_id) {
            // A known member rejoining.
            let unchanged = m.protocols == req.protocols;
            m.last_seen = now.mono;
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
                    last_seen: now.mono,
                    join_waiter: Some(tx),
                    sync_waiter: None,
                },
            );
        }
        Self::prepare_rebalance(s, g, now);
        Self::maybe_complete_join(g, now);
        Reply::Later(rx)
    }

    /// A static member came back with an unknown member id: it takes over its old
    /// identity under a new member id (the old one is fenced) without a rebalance when the
    /// group is stable (KIP-345).
    fn replace_static_member(
        settings: &GroupSettings,
        now: Now,
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
        m.last_seen = now.mono;
        if let Some(instance) = &req.instance_id {
            g.static_members.insert(instance.clone(), new_id.clone());
        }
        if g.leader.as_deref() == Some(old_id) {
            g.leader = Some(new_id.clone());
        }
        tracing::info!(group = %g.id, old = old_id, new = %new_id, "static member rejoined under a new member id");
        if g.state == GroupState::Stable && unchanged {
            g.members.insert(new_id.clone(), m);
            g.snapshot_due = true;
            let mut r = g.join_result_for(&new_id, 0);
            // The leader keeps the current assignment rather than computing a new one.
            r.skip_assignment = true;
            return Reply::Now(r);
        }
        // Otherwise it joins the rebalance under its new id like any member.
        let (tx, rx) = oneshot::channel();
        m.join_waiter = Some(tx);
        g.members.insert(new_id, m);
        Self::prepare_rebalance(settings, g, now);
        Self::maybe_complete_join(g, now);
        Reply::Later(rx)
    }

    fn prepare_rebalance(settings: &GroupSettings, g: &mut Group, now: Now) {
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
                    now.mono
                        + Duration::from_millis(settings.initial_rebalance_delay_ms.max(0) as u64)
                            .min(g.max_rebalance_timeout()),
                );
                g.set_state(GroupState::PreparingRebalance, now);
                return;
            }
            GroupState::Stable => {}
        }
        g.initial_delay = false;
        g.rebalance_deadline = Some(now.mono + g.max_rebalance_timeout());
        g.set_state(GroupState::PreparingRebalance, now);
        tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(), "preparing rebalance");
    }

    fn maybe_complete_join(g: &mut Group, now: Now) {
        if g.state != GroupState::PreparingRebalance || g.initial_delay {
            return;
        }
        if g.pending.is_empty() && g.members.values().all(|m| m.join_waiter.is_some()) {
            Self::complete_join(g, now);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, a new generation starts
    /// with a protocol and a leader, and every parked join is answered.
    fn complete_join(g: &mut Group, now: Now) {
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
            g.set_state(GroupState::Empty, now);
            g.snapshot_due = true;
            return;
        }
        g.protocol = g.select_protocol();
        g.protocol_type = g.members.values().next().map(|m| m.protocol_type.clone());
        if !g.leader.as_ref().is_some_and(|l| g.members.contains_key(l)) {
            g.leader = g.members.keys().next().cloned();
        }
        g.set_state(GroupState::CompletingRebalance, now);
        tracing::info!(group = %g.id, generation = g.generation, protocol = g.protocol.as_deref().unwrap_or(""), members = g.members.len(), "rebalance: join complete");
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in ids {
            let result = g.join_result_for(&id, 0);
            if let Some(m) = g.members.get_mut(&id) {
                m.last_seen = now.mono;
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
    pub(super) fn check_member(
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
        &mut self,
        now: Now,
        by: Caller<'_>,
        assignments: Vec<(String, Bytes)>,
    ) -> Outcome<Reply<SyncResult>> {
        let reply = self.sync_group(now, by, assignments);
        self.outcome(by.group_id, reply)
    }

    fn sync_group(
        &mut self,
        now: Now,
        by: Caller<'_>,
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<SyncResult> {
        let Caller {
            group_id,
            generation,
            member_id,
            instance_id,
        } = by;
        let Some(g) = self.groups.get_mut(group_id) else {
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
                    m.last_seen = now.mono;
                }
                if g.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in g.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    g.set_state(GroupState::Stable, now);
                    g.snapshot_due = true;
                    tracing::info!(group = %g.id, generation = g.generation, "rebalance complete: group stable");
                    // Answered once the snapshot is appended (as Kafka answers SyncGroup
                    // after its group record is written), not before.
                    let (pt, p) = (g.protocol_type.clone(), g.protocol.clone());
                    let mut replies = Vec::new();
                    for m in g.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let assignment = m.assignment.clone();
                            let result = SyncResult {
                                error: 0,
                                protocol_type: pt.clone(),
                                protocol: p.clone(),
                                assignment,
                            };
                            replies.push((w, result));
                        }
                    }
                    g.sync_replies = replies;
                }
                Reply::Later(rx)
            }
        }
    }

    pub fn heartbeat(&mut self, now: Now, by: Caller<'_>) -> i16 {
        let Some(g) = self.groups.get_mut(by.group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        if let Err(e) = Self::check_member(g, by.member_id, by.instance_id) {
            return e.code();
        }
        if let Some(m) = g.members.get_mut(by.member_id) {
            m.last_seen = now.mono;
        }
        if by.generation != g.generation {
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
        &mut self,
        now: Now,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Outcome<Result<Vec<i16>, i16>> {
        let settings = &self.settings;
        let Some(g) = self.groups.get_mut(group_id) else {
            return Outcome::reply(group_id, Err(ResponseError::UnknownMemberId.code()));
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
            Self::after_membership_change(settings, g, now);
        }
        self.outcome(group_id, Ok(out))
    }

    fn after_membership_change(settings: &GroupSettings, g: &mut Group, now: Now) {
        match g.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if g.members.is_empty() {
                    g.generation += 1;
                    g.protocol = None;
                    g.leader = None;
                    g.set_state(GroupState::Empty, now);
                    g.snapshot_due = true;
                } else {
                    Self::prepare_rebalance(settings, g, now);
                }
            }
            GroupState::PreparingRebalance => {
                if g.members.is_empty() {
                    Self::complete_join(g, now);
                } else {
                    Self::maybe_complete_join(g, now);
                }
            }
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Enforces session and rebalance timeouts and expires offsets of long-empty groups:
    /// one outcome for each group with records to write.
    pub fn tick(&mut self, now: Now) -> Vec<Outcome<()>> {
        let settings = &self.settings;
        let retention = settings.offsets_retention_ms;
        let mut outcomes = Vec::new();
        for g in self.groups.values_mut() {
            g.pending.retain(|_, deadline| *deadline > now.mono);
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    m.join_waiter.is_none()
                        && now.mono.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|m| m.id.clone())
                .collect();
            if !expired.is_empty() {
                for id in &expired {
                    tracing::info!(group = %g.id, member = %id, "member session expired; removing it");
                    Self::remove_member(g, id);
                }
                Self::after_membership_change(settings, g, now);
            }
            if g.state == GroupState::PreparingRebalance
                && g.rebalance_deadline.is_some_and(|d| now.mono >= d)
            {
                Self::complete_join(g, now);
            }
            let mut outcome = g.outcome(());
            if g.state == GroupState::Empty
                && retention > 0
                && now.wall_ms - g.state_timestamp_ms > retention
            {
                outcome.records = g
                    .offsets
                    .iter()
                    .filter(|(_, o)| now.wall_ms - o.commit_timestamp_ms > retention)
                    .map(|((topic, partition), _)| GroupRecord::Offset {
                        group: g.id.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        value: None,
                    })
                    .collect();
                if !outcome.records.is_empty() {
                    tracing::info!(group = %g.id, offsets = outcome.records.len(), "expiring committed offsets of an empty group");
                }
            }
            if outcome.snapshot.is_some() || !outcome.records.is_empty() {
                outcomes.push(outcome);
            }
        }
        // Groups with nothing left; their last snapshot is among the outcomes.
        self.groups.retain(|_, g| {
            !(g.state == GroupState::Empty
                && g.offsets.is_empty()
                && g.members.is_empty()
                && g.pending.is_empty()
                && g.txn_offsets.is_empty())
        });
        outcomes
    }
}
