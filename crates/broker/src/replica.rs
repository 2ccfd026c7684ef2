//! Kafka's leader/follower replication, the follower's side and the leader's ISR upkeep.
//!
//! A follower runs one fetcher per leader broker. The fetcher first cuts every partition
//! that just got a new leader epoch back to where its log and the leader's agree (it asks
//! the leader with OffsetForLeaderEpoch, KIP-101/KIP-279), then fetches all of them in one
//! Fetch request naming itself as `replica_id`, appends the leader's batches as they are
//! (offsets and epochs included) and takes the high watermark from the response.
//!
//! The fetcher keeps an incremental fetch session with the leader (KIP-227,
//! [`FollowerSession`]): after the first full fetch it names only the partitions whose
//! fetch offset, epoch or size changed, and the leader answers only those with something
//! new, so an idle partition costs nothing on either side.
//!
//! The leader learns each follower's log end from the offsets it fetches at (see
//! `Partition::follower_fetched`); every half second it asks the controller to drop
//! followers that stayed behind for `replica.lag.time.max.ms` from the ISR and to add
//! those that caught up.
//!
//! Architecture invariant: a follower never appends a batch at an offset other than its
//! log end, and never fetches from a leader whose epoch differs from the one it truncated
//! for.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;

use crate::peer::Conn;
use crate::state::{now_ms, Broker, Partition};
use gregor_storage::{LeaderEpoch, Offset};

const FETCH_VERSION: i16 = 12;
const EPOCH_VERSION: i16 = 4;

/// Starts and stops fetchers as this broker's followed leaders change, until `stop`.
pub async fn run_fetchers(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut fetchers: HashMap<i32, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        for leader in followed_leaders(&broker) {
            let running = fetchers.get(&leader).is_some_and(|t| !t.is_finished());
            if !running {
                fetchers.insert(
                    leader,
                    tokio::spawn(fetch_from(broker.clone(), leader, stop.clone())),
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            for (_, f) in fetchers {
                f.abort();
            }
            return;
        }
    }
}

/// Every half second, asks the controller for the ISR changes the leaders here need.
pub async fn run_isr_upkeep(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let lag_max_ms = broker.config.settings().replica_lag_time_max_ms;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let Some(node) = broker.clustered().cloned() else {
            return;
        };
        crate::scrub::heal(&broker, &node);
        let now = now_ms();
        let image = broker.image();
        let alive = |b: i32| image.broker_alive(b);
        for partition in broker.partitions.all() {
            let Some((epoch, isr)) = partition.wanted_isr(now, lag_max_ms, &alive) else {
                continue;
            };
            partition.isr_change_proposed(&isr);
            tracing::info!(topic = %partition.topic, partition = partition.index, isr = ?isr, "asking the controller to change the in-sync replicas");
            let node = node.clone();
            tokio::spawn(async move {
                if let Err(e) = node
                    .alter_isr(partition.topic_id, partition.index, epoch, isr)
                    .await
                {
                    tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "ISR change refused");
                }
                partition.isr_change_done();
            });
        }
    }
}

fn followed_leaders(broker: &Broker) -> Vec<i32> {
    let mut out: Vec<i32> = broker
        .partitions
        .all()
        .iter()
        .filter_map(|p| {
            let r = p.replica();
            (r.leader >= 0 && r.leader != p.node_id).then_some(r.leader)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A partition followed from a leader: the epoch followed at, whether it must truncate
/// first, and whether a reassignment is adding it here (its copying is throttled).
type Followed = (Arc<Partition>, i32, bool, bool);

/// The partitions this broker follows from `leader`.
fn followed(broker: &Broker, leader: i32) -> Vec<Followed> {
    let image = broker.image();
    broker
        .partitions
        .all()
        .into_iter()
        .filter_map(|p| {
            // A damaged replica fetches nothing until the healer repaired it.
            if p.log().damage().is_some() {
                return None;
            }
            let r = p.replica();
            let out = (r.leader == leader && leader != p.node_id)
                .then_some((r.leader_epoch, r.needs_truncation));
            drop(r);
            let adding = image
                .topic_by_id(&p.topic_id)
                .and_then(|t| t.partitions.get(p.index as usize))
                .and_then(|m| m.reassignment.as_ref())
                .is_some_and(|(_, original)| !original.contains(&p.node_id));
            out.map(|(e, t)| (p, e, t, adding))
        })
        .collect()
}

/// `follower.replication.throttled.rate` over one-second windows.
struct Throttle {
    rate: u64,
    window: tokio::time::Instant,
    used: u64,
}

impl Throttle {
    /// Whether throttled partitions may fetch now.
    fn open(&mut self) -> bool {
        // A window starts with its first throttled byte, so an idle stretch lends nothing.
        if self.used == 0 || self.window.elapsed() >= Duration::from_secs(1) {
            self.window = tokio::time::Instant::now();
            self.used = 0;
        }
        self.used < self.rate
    }
    fn until_open(&self) -> Duration {
        Duration::from_secs(1).saturating_sub(self.window.elapsed())
    }
}

/// A follower's fetch session with one leader (KIP-227): what the leader was last told
/// of each partition, so that the next fetch names only what changed. Id 0: none (the
/// next fetch is full, and asks for one).
#[derive(Debug, Default)]
struct FollowerSession {
    id: i32,
    epoch: i32,
    /// (topic, partition) → (fetch offset, leader epoch, max bytes) as last sent.
    sent: HashMap<(String, i32), (i64, i32, i32)>,
}

impl FollowerSession {
    fn reset(&mut self) {
        *self = FollowerSession::default();
    }

    /// The request's session fields and partitions, from every partition `wanted`: all
    /// of them without a session, else those that changed, and those no longer wanted.
    fn shape(&self, wanted: &[(String, FetchPartition)]) -> (Vec<FetchTopic>, Vec<ForgottenTopic>) {
        let mut by_topic: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
        for (topic, p) in wanted {
            if self.id == 0 || self.sent.get(&(topic.clone(), p.partition)) != Some(&told(p)) {
                by_topic.entry(topic.clone()).or_default().push(p.clone());
            }
        }
        let mut forgotten: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        if self.id != 0 {
            let still: std::collections::HashSet<(&str, i32)> = wanted
                .iter()
                .map(|(t, p)| (t.as_str(), p.partition))
                .collect();
            for (topic, partition) in self.sent.keys() {
                if !still.contains(&(topic.as_str(), *partition)) {
                    forgotten.entry(topic.clone()).or_default().push(*partition);
                }
            }
        }
        let name = |t: String| TopicName(StrBytes::from_string(t));
        (
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(name(t))
                        .with_partitions(ps)
                })
                .collect(),
            forgotten
                .into_iter()
                .map(|(t, ps)| {
                    ForgottenTopic::default()
                        .with_topic(name(t))
                        .with_partitions(ps)
                })
                .collect(),
        )
    }

    /// After an answer without error: the session it opened or continued, and what the
    /// leader now knows.
    fn answered(&mut self, session_id: i32, wanted: &[(String, FetchPartition)]) {
        if session_id == 0 || (self.id != 0 && session_id != self.id) {
            // No room at the leader (or a session other than ours): the next fetch is
            // full again.
            self.reset();
            return;
        }
        self.epoch = if self.id == 0 {
            1
        } else {
            self.epoch.checked_add(1).unwrap_or(1)
        };
        self.id = session_id;
        self.sent = wanted
            .iter()
            .map(|(t, p)| ((t.clone(), p.partition), told(p)))
            .collect();
    }
}

/// What a fetch tells the leader of a partition: (fetch offset, leader epoch, max bytes).
fn told(p: &FetchPartition) -> (i64, i32, i32) {
    (
        p.fetch_offset,
        p.current_leader_epoch,
        p.partition_max_bytes,
    )
}

/// Fetches from `leader` for as long as this broker follows it there.
async fn fetch_from(broker: Arc<Broker>, leader: i32, stop: watch::Receiver<bool>) {
    let me = broker.config.node_id;
    let wait_ms = broker.config.settings().replica_fetch_wait_max_ms.max(0) as i32;
    let partition_max_bytes = broker.config.settings().replica_fetch_max_bytes.max(1) as i32;
    let rate = broker
        .config
        .settings()
        .follower_replication_throttled_rate
        .max(1) as u64;
    let mut throttle = Throttle {
        rate,
        window: tokio::time::Instant::now(),
        used: 0,
    };
    let mut conn: Option<Conn> = None;
    let mut session = FollowerSession::default();
    let mut idle = 0;
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut parts = followed(&broker, leader);
        if !throttle.open() {
            parts.retain(|(_, _, _, adding)| !adding);
            if parts.is_empty() {
                tokio::time::sleep(throttle.until_open()).await;
                continue;
            }
        }
        if parts.is_empty() {
            idle += 1;
            if idle > 20 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        idle = 0;
        if conn.is_none() {
            let Some(peer) = broker.image().broker(leader).cloned() else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            match Conn::connect(
                &broker.config,
                &broker.security,
                &peer,
                format!("gregor-replica-{me}"),
            )
            .await
            {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        let addr = peer.endpoint(&broker.config.inter_broker_listener);
                        tracing::warn!(leader, addr = ?addr, failures, error = %e, "cannot reach the leader to replicate from it");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        let needs: Vec<_> = parts.iter().filter(|(_, _, t, _)| *t).cloned().collect();
        let result = if !needs.is_empty() {
            truncate(c, me, &needs).await.map(|()| 0)
        } else {
            // What is left of this second's budget, so a fetch never overshoots it by more
            // than one batch.
            let left = throttle.rate.saturating_sub(throttle.used);
            let throttled_max = (left.min(i32::MAX as u64) as i32).clamp(1, partition_max_bytes);
            let limits = (wait_ms, partition_max_bytes, throttled_max);
            fetch_once(c, me, &parts, limits, &mut session).await
        };
        match result {
            Ok(throttled_bytes) => {
                failures = 0;
                throttle.used += throttled_bytes;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(leader, error = %e, failures, "replication from the leader failed; reconnecting");
                }
                conn = None;
                session.reset();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Cuts each partition's log where it diverged from the leader's (KIP-279).
async fn truncate(conn: &mut Conn, me: i32, parts: &[Followed]) -> std::io::Result<()> {
    let mut by_topic: BTreeMap<String, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    let mut asked = HashMap::new();
    for (p, epoch, _, _) in parts {
        let latest = p.log().latest_epoch().map_err(std::io::Error::other)?;
        let Some(latest) = latest else {
            // An empty log has nothing to cut.
            p.replica().needs_truncation = false;
            continue;
        };
        asked.insert((p.topic.clone(), p.index), (p.clone(), *epoch, latest));
        by_topic.entry(p.topic.clone()).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(*epoch)
                .with_leader_epoch(latest.get()),
        );
    }
    if by_topic.is_empty() {
        return Ok(());
    }
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(me))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t)))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let response: OffsetForLeaderEpochResponse = conn
        .call(
            ApiKey::OffsetForLeaderEpoch,
            EPOCH_VERSION,
            &request,
            Duration::from_secs(10),
        )
        .await?;
    for t in response.topics {
        for r in t.partitions {
            let Some((p, epoch, latest)) = asked.remove(&(t.topic.0.to_string(), r.partition))
            else {
                continue;
            };
            if r.error_code != 0 {
                tracing::debug!(topic = %p.topic, partition = p.index, error_code = r.error_code, "OffsetForLeaderEpoch refused; retrying");
                continue;
            }
            let mut log = p.log();
            let target = if r.leader_epoch < 0 {
                // The leader has no epoch at or below ours: keep only what was committed.
                log.high_watermark()
            } else if LeaderEpoch(r.leader_epoch) < latest {
                // The leader never wrote in our latest epoch: cut where its epoch ended
                // here or there, whichever comes first.
                let mine = log
                    .end_offset_for_epoch(LeaderEpoch(r.leader_epoch))
                    .map_err(std::io::Error::other)?
                    .map_or(r.end_offset, |(_, end)| end.get());
                mine.min(r.end_offset)
            } else {
                r.end_offset
            };
            if target < log.log_end() {
                tracing::warn!(topic = %p.topic, partition = p.index, from = log.log_end(), to = target, leader_epoch = epoch, "truncating a follower's log to the leader's");
                log.truncate_to(Offset(target))
                    .map_err(std::io::Error::other)?;
            }
            drop(log);
            let mut state = p.replica();
            if state.leader_epoch == epoch {
                state.needs_truncation = false;
            }
        }
    }
    Ok(())
}

/// One Fetch for every followed partition; appends what came and takes the high watermark.
/// Returns the bytes copied for throttled (reassignment-added) partitions.
/// One fetch from the leader, in the session: `limits` are the wait, the bytes per
/// partition, and the bytes per throttled partition.
async fn fetch_once(
    conn: &mut Conn,
    me: i32,
    parts: &[Followed],
    limits: (i32, i32, i32),
    session: &mut FollowerSession,
) -> std::io::Result<u64> {
    let (wait_ms, partition_max_bytes, throttled_max_bytes) = limits;
    let mut wanted = Vec::with_capacity(parts.len());
    let mut index = HashMap::new();
    let mut throttled_bytes = 0u64;
    for (p, epoch, _, adding) in parts {
        let end = p.log().log_end();
        let partition_max_bytes = if *adding {
            throttled_max_bytes
        } else {
            partition_max_bytes
        };
        index.insert(
            (p.topic.clone(), p.index),
            (p.clone(), *epoch, end, *adding),
        );
        wanted.push((
            p.topic.clone(),
            FetchPartition::default()
                .with_partition(p.index)
                .with_current_leader_epoch(*epoch)
                .with_fetch_offset(end)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(partition_max_bytes),
        ));
    }
    let (topics, forgotten) = session.shape(&wanted);
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(partition_max_bytes.saturating_mul(8))
        .with_isolation_level(0)
        .with_session_id(session.id)
        .with_session_epoch(session.epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten);
    let timeout = Duration::from_millis(wait_ms as u64 + 10_000);
    let response: FetchResponse = conn
        .call(ApiKey::Fetch, FETCH_VERSION, &request, timeout)
        .await?;
    match ResponseError::try_from_code(response.error_code) {
        None => session.answered(response.session_id, &wanted),
        // The leader lost the session (a restart, an eviction) or we did: the next
        // fetch is full and opens a new one.
        Some(ResponseError::FetchSessionIdNotFound | ResponseError::InvalidFetchSessionEpoch) => {
            session.reset();
            return Ok(0);
        }
        Some(_) => {
            session.reset();
            return Err(std::io::Error::other(format!(
                "fetch refused with error code {}",
                response.error_code
            )));
        }
    }
    let now = now_ms();
    let mut backoff = false;
    for t in response.responses {
        for d in t.partitions {
            let Some((p, epoch, asked_at, adding)) =
                index.remove(&(t.topic.0.to_string(), d.partition_index))
            else {
                continue;
            };
            let (refused, bytes) = apply_fetched(&p, epoch, asked_at, d, now).await;
            backoff |= refused;
            if adding {
                throttled_bytes += bytes;
            }
        }
    }
    if backoff {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(throttled_bytes)
}

/// Applies one partition's part of a follower fetch asked at `asked_at` in leader epoch
/// `epoch`: appends the leader's records and moves the high watermark. Returns whether
/// the leader refused it (the fetcher then backs off) and the bytes it carried.
async fn apply_fetched(
    p: &Partition,
    epoch: i32,
    asked_at: i64,
    d: kafka_protocol::messages::fetch_response::PartitionData,
    now: i64,
) -> (bool, u64) {
    if p.replica().leader_epoch != epoch {
        return (false, 0); // the leadership changed while the fetch was out
    }
    match ResponseError::try_from_code(d.error_code) {
        None => {}
        Some(ResponseError::OffsetOutOfRange) => {
            tracing::warn!(topic = %p.topic, partition = p.index, fetch_offset = asked_at, leader_log_start = d.log_start_offset, "the leader no longer has our log end; truncating before fetching again");
            p.replica().needs_truncation = true;
            return (false, 0);
        }
        Some(e) => {
            tracing::debug!(topic = %p.topic, partition = p.index, error = ?e, "follower fetch refused");
            return (true, 0);
        }
    }
    let records = d.records.unwrap_or_default();
    let bytes = records.len() as u64;
    let appended = {
        let mut log = p.log();
        if log.log_end() != asked_at {
            return (false, bytes);
        }
        let result = if records.is_empty() {
            Ok(None)
        } else {
            log.append_replicated(&records, now)
        };
        let hw = d.high_watermark.min(log.log_end());
        log.advance_high_watermark(Offset(hw));
        if d.log_start_offset > log.log_start() {
            if let Err(e) = log.follow_log_start(d.log_start_offset, now) {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "could not take the leader's log start; the next fetch tries again");
            }
        }
        result
    };
    match appended {
        Ok(Some(info)) => {
            if info.flush_due {
                if let Err(e) = p.make_durable(info.last_offset + 1).await {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "fsync of replicated records failed");
                }
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "could not append the leader's records; truncating before fetching again");
            p.replica().needs_truncation = true;
        }
    }
    p.hw_watch.send_replace(p.log().high_watermark());
    (false, bytes)
}
