//! The active controller's decisions: requests from brokers (heartbeats, ISR changes,
//! controlled shutdowns, writes) and its periodic duties (fencing silent brokers, knocking
//! at them, elections, preferred leaders), each taken in turn from a fresh image.

use super::*;

/// How long a decision waits for the controller to apply its own log (after a restart).
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

impl ClusterNode {
    /// Serves one request as the active controller (or says who is).
    pub(crate) async fn handle(&self, request: ControlRequest) -> Result<u64, ControlError> {
        if !self.is_leader() {
            return Err(ControlError::NotLeader {
                leader: self.leader(),
            });
        }
        match request {
            ControlRequest::Write(records) => {
                // Brokers build topic creations from their own image, which may lag:
                // checked here, against the image every earlier decision was applied to,
                // so two creators racing never commit a topic twice.
                let (_turn, image) = self.decision_turn().await?;
                let mut names = Vec::new();
                for r in all_records(&records) {
                    if let MetadataRecord::Topic { name, topic_id, .. } = r {
                        let taken = image.topic(name).is_some_and(|t| t.topic_id != *topic_id);
                        if taken || names.contains(&name) {
                            return Err(ControlError::TopicExists(name.clone()));
                        }
                        names.push(name);
                    }
                }
                self.propose(records).await
            }
            ControlRequest::Heartbeat(reg) => self.on_heartbeat(reg).await,
            ControlRequest::AlterIsr {
                node_id,
                topic_id,
                partition,
                leader_epoch,
                isr,
            } => {
                self.on_alter_isr(node_id, topic_id, partition, leader_epoch, isr)
                    .await
            }
            ControlRequest::ControlledShutdown {
                node_id,
                incarnation,
            } => {
                self.shutting_down
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node_id, (incarnation, Instant::now()));
                self.stopped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node_id, incarnation);
                let (_turn, image) = self.decision_turn().await?;
                // Fenced at once, as Kafka fences a broker whose controlled shutdown
                // completed: it leaves every ISR, leads nothing, is not listed, and is
                // never chosen for a leadership while it finishes stopping.
                let mut records = Vec::new();
                if image.broker_alive(node_id) {
                    tracing::info!(
                        node_id,
                        "controlled shutdown: fencing the broker and moving its leaderships"
                    );
                    records.push(MetadataRecord::FenceBroker {
                        node_id,
                        fenced: true,
                    });
                }
                let records = self.with_elections(image, records, false, &[node_id]);
                self.propose(records).await
            }
        }
    }

    /// This node's turn to decide, and the image to decide from: leadership confirmed with
    /// a quorum and every entry of its log applied, then the decision lock taken. A
    /// controller that has just taken over (after a restart, with its state machine still
    /// replaying the log) must not decide from an older image: it would not know a
    /// broker's last incarnation, an ISR change or a fencing, and could undo them. The
    /// quorum read runs before the lock, so concurrent requests (every broker's
    /// heartbeat) do not queue one round trip each behind it; what other decisions commit
    /// meanwhile is applied here before they release the lock, so the image read under it
    /// is as fresh.
    ///
    /// The quorum read alone is not enough: openraft restores a restarted leader as the
    /// leader of its term at once, and its read index is then the first entry of that
    /// term or the commit index it has learnt since, not the entries it had committed
    /// before it stopped (its state machine starts from the last snapshot). So the turn
    /// also waits until the whole of the leader's log is applied; everything in a
    /// leader's log is either committed already or will be, by it.
    pub(super) async fn decision_turn(
        &self,
    ) -> Result<(tokio::sync::MutexGuard<'_, ()>, MetadataImage), ControlError> {
        let not_leader = || ControlError::NotLeader {
            leader: self.leader().filter(|&l| l != self.node_id as NodeId),
        };
        self.raft
            .ensure_linearizable()
            .await
            .map_err(|_| not_leader())?;
        let log_end = self.raft.metrics().borrow().last_log_index;
        if log_end > self.machine.applied_index() {
            self.raft
                .wait(Some(CATCH_UP_WAIT))
                .applied_index_at_least(log_end, "the controller's image holds its whole log")
                .await
                .map_err(|e| {
                    if self.is_leader() {
                        ControlError::Unavailable(format!(
                            "the active controller has not applied its own log yet ({e}); try again"
                        ))
                    } else {
                        not_leader()
                    }
                })?;
        }
        let turn = self.decide.lock().await;
        Ok((turn, self.machine.image()))
    }

    /// Commits records as one entry; returns its index (or the applied index when there
    /// is nothing to commit).
    pub(super) async fn propose(
        &self,
        mut records: Vec<MetadataRecord>,
    ) -> Result<u64, ControlError> {
        let record = match records.len() {
            0 => return Ok(self.machine.applied_index().unwrap_or(0)),
            1 => records.remove(0),
            _ => MetadataRecord::Batch { records },
        };
        match self.raft.client_write(record).await {
            Ok(r) => Ok(r.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ControlError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(ControlError::Unavailable(e.to_string())),
        }
    }

    /// Adds a broker that is not a voter as a learner of the metadata log, unless it is
    /// one already at the address it gives.
    fn ensure_learner(&self, reg: &Registration) {
        let id = reg.node_id as NodeId;
        if !self.voters.contains_key(&id) {
            let known = self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&id)
                .is_some_and(|n| n.addr == reg.raft_addr);
            if !known {
                tracing::info!(node_id = reg.node_id, addr = %reg.raft_addr, "adding broker as a learner of the metadata log");
                let raft = self.raft.clone();
                let node = BasicNode::new(&reg.raft_addr);
                tokio::spawn(async move {
                    if let Err(e) = raft.add_learner(id, node, false).await {
                        tracing::warn!(node_id = id, error = %e, "could not add learner");
                    }
                });
            }
        }
    }

    /// Whether `reg`'s incarnation asked for a controlled shutdown within the session, or
    /// finished one: it gets no leadership and its heartbeats do not unfence it.
    fn stopping(&self, reg: &Registration) -> bool {
        let mut stopping = self.shutting_down.lock().unwrap_or_else(|p| p.into_inner());
        let still = stopping.get(&reg.node_id).is_some_and(|&(inc, at)| {
            inc == reg.incarnation
                && at.elapsed() < Duration::from_millis(self.settings.session_timeout_ms)
        });
        if !still {
            stopping.remove(&reg.node_id);
        }
        let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        match stopped.get(&reg.node_id) {
            Some(&inc) if inc == reg.incarnation => true,
            Some(_) => {
                stopped.remove(&reg.node_id);
                still
            }
            None => still,
        }
    }

    pub(super) async fn on_heartbeat(&self, reg: Registration) -> Result<u64, ControlError> {
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reg.node_id, Instant::now());
        self.ensure_learner(&reg);
        let (_turn, image) = self.decision_turn().await?;
        let mut records = Vec::new();
        // The incarnation in the image is the one every controller knows (this one may
        // have just taken over); the remembered one covers registrations written before
        // the image kept it.
        let remembered = self
            .incarnations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reg.node_id, reg.incarnation);
        let restarted = match image.broker(reg.node_id).map(|b| b.incarnation) {
            Some(recorded) if recorded != 0 => recorded != reg.incarnation,
            _ => remembered.is_some_and(|previous| previous != reg.incarnation),
        };
        if restarted && image.broker_alive(reg.node_id) {
            // It restarted within its session: what it led or held in sync may have lost
            // its unflushed tail, so it is fenced first (its leaderships move, it leaves
            // the ISRs) and unfenced by its next heartbeat, to catch up as a follower.
            tracing::info!(
                node_id = reg.node_id,
                "broker restarted within its session; fencing its previous incarnation"
            );
            // The new incarnation is recorded with the fencing, so that the next
            // heartbeat unfences it and the broker (which waits for its own incarnation,
            // unfenced, before it takes any partition role) starts as a follower.
            records.push(register(&reg));
            records.push(MetadataRecord::FenceBroker {
                node_id: reg.node_id,
                fenced: true,
            });
            if reg.unclean_start {
                records.extend(leave_isrs(&image, reg.node_id));
            }
            let records = self.with_elections(image, records, false, &[]);
            return self.propose(records).await;
        }
        if restarted && reg.unclean_start {
            // Fenced already (its session ran out while it was down), but it may still be
            // in the ISR of a partition that has no leader, where it would be elected on
            // return with the log it lost the tail of.
            records.extend(leave_isrs(&image, reg.node_id));
        }
        let stopping = self.stopping(&reg);
        match image.broker(reg.node_id) {
            Some(b)
                if b.host == reg.host
                    && b.port == reg.port
                    && b.rack == reg.rack
                    && b.endpoints == reg.endpoints
                    && b.incarnation == reg.incarnation =>
            {
                if b.fenced && !stopping {
                    records.push(MetadataRecord::FenceBroker {
                        node_id: reg.node_id,
                        fenced: false,
                    });
                }
            }
            _ => records.push(register(&reg)),
        }
        if records.is_empty() {
            // The answer renews the broker's lease, so a controller deposed while paused
            // or cut off must not give it: `decision_turn` confirmed leadership with a
            // quorum after this heartbeat arrived.
            return Ok(self.machine.applied_index().unwrap_or(0));
        }
        tracing::info!(node_id = reg.node_id, host = %reg.host, port = reg.port, "broker registered or back");
        let records = self.with_elections(image, records, false, &[]);
        self.propose(records).await
    }

    pub(super) async fn on_alter_isr(
        &self,
        node_id: i32,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
    ) -> Result<u64, ControlError> {
        let (_turn, image) = self.decision_turn().await?;
        let Some(p) = image
            .topic_by_id(&topic_id)
            .and_then(|t| t.partitions.get(partition.max(0) as usize))
        else {
            return Err(ControlError::Refused(format!(
                "unknown partition {topic_id}-{partition}"
            )));
        };
        if p.leader != node_id || p.leader_epoch != leader_epoch {
            return Err(ControlError::Refused(format!(
                "node {node_id} at epoch {leader_epoch} does not lead partition {partition} (leader {} at epoch {})",
                p.leader, p.leader_epoch
            )));
        }
        let mut isr: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| isr.contains(r) && (p.isr.contains(r) || image.broker_alive(*r)))
            .collect();
        if !isr.contains(&node_id) {
            // The leader leaves its own ISR only when its replica is damaged: the
            // leadership moves to the first live member of the current ISR it names.
            let successor = isr
                .iter()
                .copied()
                .find(|&b| p.isr.contains(&b) && image.broker_alive(b));
            let Some(successor) = successor else {
                return Err(ControlError::Refused(format!(
                    "node {node_id} cannot leave the ISR of partition {partition}: no other live in-sync replica"
                )));
            };
            isr.retain(|&b| p.isr.contains(&b));
            tracing::warn!(%topic_id, partition, from = node_id, to = successor, "a damaged leader hands its partition over");
            return self
                .propose(vec![MetadataRecord::Partition {
                    topic_id,
                    partition,
                    replicas: p.replicas.clone(),
                    leader: successor,
                    leader_epoch: p.leader_epoch + 1,
                    isr: Some(isr),
                }])
                .await;
        }
        if isr == p.isr {
            return Ok(self.machine.applied_index().unwrap_or(0));
        }
        tracing::info!(%topic_id, partition, from = ?p.isr, to = ?isr, "in-sync replicas changed");
        self.propose(vec![MetadataRecord::Partition {
            topic_id,
            partition,
            replicas: p.replicas.clone(),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            isr: Some(isr),
        }])
        .await
    }

    /// The active controller's periodic duties: fence silent brokers, elect leaders where
    /// there are none, and restore preferred leaders.
    pub(super) async fn tick(&self) {
        if !self.is_leader() {
            *self.leading_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return;
        }
        let now = Instant::now();
        let since = *self
            .leading_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(now);
        let rebalance = self.rebalance_due(now);
        let Ok((_turn, image)) = self.decision_turn().await else {
            return;
        };
        let timeout = Duration::from_millis(self.settings.session_timeout_ms);
        let mut records = Vec::new();
        if image.cluster_id().is_none() {
            // Kafka's form: a UUID in URL-safe base64 without padding (22 characters).
            let id = Uuid::new_v4().simple().to_string();
            records.push(MetadataRecord::ClusterId {
                cluster_id: id[..22].to_string(),
            });
        }
        let (fences, knock) = self.silent_brokers(&image, now, since);
        records.extend(fences);
        self.knock_at(&knock);
        let avoid: Vec<i32> = {
            let mut stopping = self.shutting_down.lock().unwrap_or_else(|p| p.into_inner());
            stopping.retain(|_, (_, at)| now.duration_since(*at) < timeout);
            stopping.keys().copied().collect()
        };
        let mut records = self.with_elections(image.clone(), records, rebalance, &avoid);
        let mut after = image;
        for r in &records {
            after.apply(r);
        }
        records.extend(finish_reassignments(&after));
        if records.is_empty() {
            return;
        }
        if let Err(e) = self.propose(records).await {
            tracing::warn!(error = %e, "controller decision not committed");
        }
    }

    /// Whether restoring preferred leaders is due (`auto.leader.rebalance.enable`, every
    /// `leader.imbalance.check.interval.seconds`); notes the check when it is.
    fn rebalance_due(&self, now: Instant) -> bool {
        if !self.settings.auto_leader_rebalance {
            return false;
        }
        let mut last = self
            .last_rebalance
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| {
            t.elapsed() >= Duration::from_millis(self.settings.leader_imbalance_check_ms)
        });
        if due {
            *last = Some(now);
        }
        due
    }

    /// The brokers of `image` to fence now (their session ran out, or their process is
    /// gone: see [`Knocks`]) as records, and the silent ones to knock at. `since` is when
    /// this controller took over: every broker gets a full session from it.
    fn silent_brokers(
        &self,
        image: &MetadataImage,
        now: Instant,
        since: Instant,
    ) -> (Vec<MetadataRecord>, Vec<i32>) {
        // A broker silent for one and a half heartbeats is knocked at (see `Knocks`).
        let knock_after =
            Duration::from_millis(self.settings.heartbeat_interval_ms.saturating_mul(3) / 2);
        let timeout = Duration::from_millis(self.settings.session_timeout_ms);
        let mut records = Vec::new();
        let mut knock = Vec::new();
        {
            let seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            let knocks = self.knocks.lock().unwrap_or_else(|p| p.into_inner());
            // The active controller's own broker is alive: it is this process.
            for b in image
                .brokers()
                .filter(|b| !b.fenced && b.node_id != self.node_id)
            {
                // A new controller gives every broker a full session from its election.
                let last = seen.get(&b.node_id).copied().unwrap_or(since).max(since);
                let silent_ms = now.duration_since(last).as_millis() as u64;
                let gone = knocks.refused.get(&b.node_id).is_some_and(|&at| at > last);
                if now.duration_since(last) > timeout {
                    tracing::warn!(
                        node_id = b.node_id,
                        silent_ms,
                        "broker missed its session timeout; fencing it"
                    );
                } else if gone && now.duration_since(last) > knock_after {
                    tracing::warn!(
                        node_id = b.node_id,
                        silent_ms,
                        "broker stopped heartbeating and its metadata-log port refuses \
                         connections: its process is gone; fencing it without waiting for \
                         its session timeout"
                    );
                } else {
                    if now.duration_since(last) > knock_after
                        && knocks
                            .sent
                            .get(&b.node_id)
                            .is_none_or(|&at| now.duration_since(at) >= KNOCK_EVERY)
                    {
                        knock.push(b.node_id);
                    }
                    continue;
                }
                records.push(MetadataRecord::FenceBroker {
                    node_id: b.node_id,
                    fenced: true,
                });
            }
        }
        (records, knock)
    }

    /// Knocks at the metadata-log port of each broker in `ids` in the background; a
    /// refusal is remembered in `knocks` for the next tick (see [`Knocks`]).
    pub(super) fn knock_at(&self, ids: &[i32]) {
        if ids.is_empty() {
            return;
        }
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let now = Instant::now();
        for &id in ids {
            let Some(addr) = membership
                .membership()
                .get_node(&(id as NodeId))
                .map(|n| n.addr.clone())
            else {
                continue;
            };
            self.knocks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sent
                .insert(id, now);
            let knocks = self.knocks.clone();
            tokio::spawn(async move {
                if refuses_connections(&addr).await {
                    knocks
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .refused
                        .insert(id, Instant::now());
                }
            });
        }
    }

    /// `records`, followed by the elections and ISR changes the image calls for once
    /// they are applied.
    pub(super) fn with_elections(
        &self,
        mut image: MetadataImage,
        mut records: Vec<MetadataRecord>,
        rebalance: bool,
        avoid: &[i32],
    ) -> Vec<MetadataRecord> {
        for r in &records {
            image.apply(r);
        }
        records.extend(elect(
            &image,
            self.settings.unclean_leader_election,
            rebalance,
            avoid,
        ));
        records
    }
}
