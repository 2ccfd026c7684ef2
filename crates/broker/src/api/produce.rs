//! Produce (key 0): validate each partition's record batches, assign offsets, append,
//! fsync per the flush policy, and answer once `acks` allows.

use std::sync::Arc;

use bytes::Bytes;
use gregor_protocol::batch::{self, BatchError, BatchHeader};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::error::storage_error_code;
use crate::state::{now_ms, Commit, Partition};
use gregor_storage::{LeaderEpoch, Offset};

mod verify;

pub use verify::{verify_transactional, Refused};

pub async fn handle(ctx: &RequestContext, request: ProduceRequest) -> Option<ProduceResponse> {
    let refused = verify_transactional(ctx, &request).await;
    append(ctx, request, refused).finish().await
}

/// A Produce request whose partitions are appended; what is left is waiting for fsyncs
/// and replicas. The connection reads and appends its next Produce while this one waits
/// (pipelining), so one request's fsync does not hold back the next append.
pub struct Pending {
    acks: i16,
    deadline: tokio::time::Instant,
    responses: Vec<TopicProduceResponse>,
    pending: Vec<((usize, usize), Appended)>,
}

/// Validates and appends every partition of `request`, in order, now.
pub fn append(ctx: &RequestContext, request: ProduceRequest, refused: Refused) -> Pending {
    let acks = request.acks;
    let transactional_id = request.transactional_id.as_ref().map(|t| t.0.to_string());
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(request.timeout_ms.clamp(0, 300_000) as u64);
    // First every partition is appended; then the fsyncs and replica waits that `acks`
    // and the flush policy ask for run together, so a request's partitions wait for the
    // slowest of them, not for the sum (Kafka's produce purgatory).
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut pending: Vec<((usize, usize), Appended)> = Vec::new();
    let fenced = ctx.broker.self_fenced();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let known = if acks == 0 || acks == 1 || acks == -1 {
            ctx.broker.get_or_auto_create(&name, true).ok().flatten()
        } else {
            None
        };
        let mut partition_responses = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let mut r = build!(PartitionProduceResponse {
                index: data.index,
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1
            });
            if !(acks == 0 || acks == 1 || acks == -1) {
                r.error_code = ResponseError::InvalidRequiredAcks.code();
            } else if known.is_none() {
                r.error_code = ResponseError::UnknownTopicOrPartition.code();
            } else if let Some((code, why)) = refused.get(&(name.clone(), data.index)) {
                r.error_code = *code;
                r.error_message = Some(StrBytes::from_string(why.clone()));
            } else if let Some(partition) = ctx.partitions().get(&name, data.index) {
                if let (Some(reason), true) = (&fenced, partition.leadership().leads) {
                    r.error_code = ResponseError::NotLeaderOrFollower.code();
                    r.error_message = Some(StrBytes::from_string(reason.clone()));
                    crate::metrics::self_fenced_write();
                } else if let Some(appended) = append_to(
                    partition,
                    ctx.version,
                    data.records.unwrap_or_default(),
                    acks,
                    transactional_id.as_deref(),
                    &mut r,
                ) {
                    pending.push(((responses.len(), partition_responses.len()), appended));
                }
            } else {
                r.error_code = ResponseError::UnknownTopicOrPartition.code();
            }
            partition_responses.push(r);
        }
        responses.push(build!(TopicProduceResponse {
            name: topic.name,
            topic_id: topic.topic_id,
            partition_responses
        }));
    }
    Pending {
        acks,
        deadline,
        responses,
        pending,
    }
}

impl Pending {
    /// Waits for what `acks` and the flush policy ask for, and answers.
    pub async fn finish(self) -> Option<ProduceResponse> {
        let Pending {
            acks,
            deadline,
            mut responses,
            pending,
        } = self;
        let waits = pending.iter().filter(|(_, a)| a.must_wait(acks)).count();
        if waits > 1 {
            let mut set = tokio::task::JoinSet::new();
            for ((t, p), appended) in pending {
                // Stays the answer should a completion never report (it cannot panic, but an
                // unanswered append must not look acknowledged).
                Outcome::Failed(
                    ResponseError::UnknownServerError.code(),
                    "the append's completion did not finish".into(),
                )
                .apply(&mut responses[t].partition_responses[p]);
                let at = (t, p);
                set.spawn(async move { (at, appended.complete(acks, deadline).await) });
            }
            while let Some(done) = set.join_next().await {
                match done {
                    Ok(((t, p), outcome)) => {
                        outcome.apply(&mut responses[t].partition_responses[p])
                    }
                    // A completion that panicked leaves its partition unanswered with an error.
                    Err(e) => tracing::error!(error = %e, "a produce completion failed"),
                }
            }
        } else {
            for ((t, p), appended) in pending {
                let outcome = appended.complete(acks, deadline).await;
                outcome.apply(&mut responses[t].partition_responses[p]);
            }
        }
        for topic in &responses {
            for r in &topic.partition_responses {
                if r.error_code != 0 {
                    crate::metrics::error_code(ApiKey::Produce, r.error_code);
                    tracing::debug!(topic = %topic.name.0, partition = r.index, error_code = r.error_code, message = ?r.error_message, "produce refused");
                }
            }
        }
        if acks == 0 {
            return None;
        }
        Some(build!(ProduceResponse { responses }))
    }
}

/// Records appended to one partition, whose answer may still wait for an fsync or for
/// the in-sync replicas.
struct Appended {
    partition: Arc<Partition>,
    info: gregor_storage::AppendInfo,
    bytes: u64,
    stamp: Option<i64>,
    replicated: bool,
    /// The leader epoch the records were appended in.
    leader_epoch: LeaderEpoch,
    /// Fsync before answering: the flush policy says so, or the partition has no other
    /// replica (`log.flush.unreplicated.enable`).
    sync: bool,
    /// `min.insync.replicas`, checked again once the records are committed.
    min_insync: usize,
}

/// What a completion found: the answer's fields, or an error.
enum Outcome {
    Done {
        base_offset: i64,
        log_append_time_ms: i64,
    },
    Failed(i16, String),
}

impl Outcome {
    fn apply(self, r: &mut PartitionProduceResponse) {
        match self {
            Outcome::Done {
                base_offset,
                log_append_time_ms,
            } => {
                r.error_code = 0;
                r.error_message = None;
                r.base_offset = base_offset;
                r.log_append_time_ms = log_append_time_ms;
            }
            Outcome::Failed(code, message) => {
                r.error_code = code;
                r.error_message = Some(StrBytes::from_string(message));
            }
        }
    }
}

impl Appended {
    fn must_wait(&self, acks: i16) -> bool {
        self.sync || (acks == -1 && self.replicated)
    }

    /// Fsyncs if the flush policy says so, wakes fetches, and waits for the in-sync
    /// replicas under `acks=all`.
    async fn complete(self, acks: i16, deadline: tokio::time::Instant) -> Outcome {
        let Appended {
            partition,
            info,
            bytes,
            stamp,
            replicated,
            leader_epoch,
            sync,
            min_insync,
        } = self;
        if sync {
            if let Err(e) = partition.make_durable(info.last_offset + 1).await {
                tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "fsync failed; the append is not acknowledged");
                return Outcome::Failed(storage_error_code(&e), e.to_string());
            }
        }
        partition.wake_waiters();
        if replicated {
            // Followers fetch what was just written; the high watermark may move now
            // (an ISR of the leader alone) or on their next fetches.
            partition.update_high_watermark();
        }
        if acks == -1 && replicated {
            // Committed means committed in the epoch the records were appended in: a
            // leader deposed meanwhile may truncate them, whatever its high watermark
            // says once it follows (Kafka's delayed produce checks the same).
            match partition
                .await_committed(Offset(info.last_offset + 1), leader_epoch, deadline)
                .await
            {
                // The ISR may have shrunk below min.insync.replicas while the request
                // waited: then fewer copies hold the records than asked (Kafka's answer).
                Commit::Committed if partition.leadership().isr_len < min_insync => {
                    return Outcome::Failed(
                        ResponseError::NotEnoughReplicasAfterAppend.code(),
                        format!("the in-sync replicas fell below min.insync.replicas ({min_insync}) while the records were replicated; they are stored, a retry may duplicate them unless the producer is idempotent"),
                    )
                }
                Commit::Committed => {}
                Commit::LeadershipLost => {
                    return Outcome::Failed(
                        ResponseError::NotLeaderOrFollower.code(),
                        "leadership moved before the in-sync replicas copied the records; refresh metadata and retry".into(),
                    )
                }
                Commit::TimedOut => {
                    return Outcome::Failed(
                        ResponseError::RequestTimedOut.code(),
                        "the in-sync replicas did not all copy the records within the request timeout"
                            .into(),
                    )
                }
            }
        }
        partition.metrics.produce_records.increment(info.records);
        partition.metrics.produce_bytes.increment(bytes);
        Outcome::Done {
            base_offset: info.base_offset,
            log_append_time_ms: stamp.unwrap_or(-1),
        }
    }
}

/// Validates and appends one partition's records. Refusals and retried duplicates are
/// answered in `r` at once; an append returns what is left to wait for.
fn append_to(
    partition: Arc<Partition>,
    version: i16,
    records: Bytes,
    acks: i16,
    transactional_id: Option<&str>,
    r: &mut PartitionProduceResponse,
) -> Option<Appended> {
    let settings = partition.settings();
    let crate::state::Leadership {
        leads,
        leader_epoch,
        isr_len: isr,
        replicated,
    } = partition.leadership();
    if !leads {
        r.error_code = ResponseError::NotLeaderOrFollower.code();
        r.error_message = Some(StrBytes::from_static_str(
            "this broker does not lead the partition; refresh metadata",
        ));
        return None;
    }
    if acks == -1 && isr < settings.min_insync_replicas {
        r.error_code = ResponseError::NotEnoughReplicas.code();
        r.error_message = Some(StrBytes::from_string(format!(
            "{isr} in-sync replica(s), min.insync.replicas is {}",
            settings.min_insync_replicas
        )));
        return None;
    }
    let headers = match validate(&records, settings.max_message_bytes, settings.compacted) {
        Ok(h) => h,
        Err((code, message)) => {
            r.error_code = code;
            r.error_message = Some(StrBytes::from_string(message));
            return None;
        }
    };
    let mut bytes = records.to_vec();
    let now = now_ms();
    let stamp = settings.log_append_time.then_some(now);
    let appended = {
        let mut log = partition.log();
        // Under the log's lock, as the markers that end transactions are appended: a
        // transactional batch needs its confirmed verification guard.
        if !verified(log.producers(), &headers, transactional_id) {
            r.error_code = ResponseError::InvalidTxnState.code();
            r.error_message = Some(StrBytes::from_static_str(
                "the producer's transaction was not confirmed to hold this partition (it may have ended meanwhile)",
            ));
            return None;
        }
        let result = log.append(&mut bytes, &headers, leader_epoch, stamp, now);
        if version >= 5 {
            r.log_start_offset = log.log_start();
        }
        result
    };
    match appended {
        Ok(info) => {
            if info.duplicate {
                // A retry of a batch already stored: its original offsets, nothing
                // appended. It is answered as its first attempt would be, once the original
                // is durable and (acks=all) committed: the first attempt may have timed out
                // before its followers had it, and this leader may be cut off from them still.
                tracing::debug!(topic = %partition.topic, partition = partition.index, base_offset = info.base_offset, "duplicate idempotent batch answered with its original offset");
            }
            Some(Appended {
                bytes: if info.duplicate {
                    0
                } else {
                    bytes.len() as u64
                },
                // A duplicate is never due a flush of its own (`flush_due` is false).
                sync: info.flush_due || (!replicated && settings.sync_unreplicated),
                partition,
                info,
                stamp,
                replicated,
                leader_epoch,
                min_insync: settings.min_insync_replicas,
            })
        }
        Err(e) => {
            if matches!(
                e,
                gregor_storage::StorageError::Sequence(_)
                    | gregor_storage::StorageError::StaleEpoch { .. }
            ) {
                tracing::debug!(topic = %partition.topic, partition = partition.index, error = %e, "idempotent batch refused");
            } else {
                tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "append failed");
            }
            r.error_code = storage_error_code(&e);
            r.error_message = Some(StrBytes::from_string(e.to_string()));
            None
        }
    }
}

/// Whether every transactional batch among `headers` has its confirmed verification
/// guard for `transactional_id`.
fn verified(
    producers: &gregor_storage::producer::ProducerStates,
    headers: &[(usize, BatchHeader)],
    transactional_id: Option<&str>,
) -> bool {
    headers.iter().all(|(_, h)| {
        !h.is_transactional()
            || transactional_id
                .is_some_and(|id| producers.verified(h.producer_id, id, h.producer_epoch))
    })
}

/// Splits a partition's records into batches and validates each; the batches must fill
/// the records exactly.
fn validate(
    records: &[u8],
    max_message_bytes: usize,
    compacted: bool,
) -> Result<Vec<(usize, BatchHeader)>, (i16, String)> {
    if records.is_empty() {
        return Err((
            ResponseError::CorruptMessage.code(),
            "no record batch in the request".into(),
        ));
    }
    let mut headers = Vec::new();
    let mut at = 0usize;
    while at < records.len() {
        let rest = &records[at..];
        match batch::BatchHeader::parse(rest) {
            Ok(h) if h.total_bytes() > max_message_bytes => {
                return Err((
                    ResponseError::MessageTooLarge.code(),
                    format!(
                        "batch of {} bytes exceeds max.message.bytes ({max_message_bytes})",
                        h.total_bytes()
                    ),
                ))
            }
            _ => {}
        }
        if let Ok(h) = batch::BatchHeader::parse(rest) {
            if h.producer_id >= 0 && h.base_sequence < 0 {
                // Kafka's rule: a producer id comes with sequences, or a client could
                // write for another producer without disturbing its sequence.
                return Err((
                    ResponseError::InvalidRecord.code(),
                    "a batch with a producer id needs a base sequence".into(),
                ));
            }
            if h.is_control() {
                // Markers are the coordinator's (WriteTxnMarkers, ClusterAction): a client
                // that wrote one would end another producer's transaction.
                return Err((
                    ResponseError::InvalidRecord.code(),
                    "control batches (transaction markers) are written by the transaction coordinator, not by Produce".into(),
                ));
            }
        }
        let header = batch::validate_produce_batch(rest).map_err(|e| {
            let code = match e {
                BatchError::BadMagic(_) => ResponseError::UnsupportedForMessageFormat.code(),
                BatchError::CountMismatch { .. } | BatchError::BadRecords(_) => {
                    ResponseError::InvalidRecord.code()
                }
                _ => ResponseError::CorruptMessage.code(),
            };
            (code, e.to_string())
        })?;
        if compacted
            && !gregor_protocol::compact::all_records_keyed(&rest[..header.total_bytes()])
                .unwrap_or(false)
        {
            return Err((
                ResponseError::InvalidRecord.code(),
                "compacted topics require a key on every record".into(),
            ));
        }
        headers.push((at, header));
        at += header.total_bytes();
    }
    Ok(headers)
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::api::authorize::Auth;
    use crate::api::authorize::Denied;
    use crate::security::acl::op;
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = ProduceRequest;
        type Response = ProduceResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::Produce,
            min: 3,
            max: 11,
        };

        async fn handle(ctx: &RequestContext, request: ProduceRequest) -> Option<ProduceResponse> {
            handle(ctx, request).await
        }

        fn authorize(
            a: &Auth<'_>,
            request: &mut ProduceRequest,
            denied: &mut Denied,
        ) -> Result<(), ProduceResponse> {
            if let Some(t) = request.transactional_id.as_ref().filter(|t| !a.txn(&t.0)) {
                crate::api::authorize::log_denied(a.ctx, &t.0);
                let e = ResponseError::TransactionalIdAuthorizationFailed.code();
                let responses = request
                    .topic_data
                    .iter()
                    .map(|t| {
                        build!(TopicProduceResponse {
                            name: t.name.clone(),
                            topic_id: t.topic_id,
                            partition_responses: t
                                .partition_data
                                .iter()
                                .map(|p| build!(PartitionProduceResponse {
                                    index: p.index,
                                    error_code: e,
                                    base_offset: -1
                                }))
                                .collect()
                        })
                    })
                    .collect();
                return Err(build!(ProduceResponse { responses }));
            }
            request.topic_data.retain(|t| {
                let parts = t.partition_data.iter().map(|p| p.index).collect();
                a.keep(denied, op::WRITE, &t.name, t.topic_id, parts)
            });
            Ok(())
        }

        fn complete(_a: &Auth<'_>, denied: Denied, response: &mut ProduceResponse) {
            let t = crate::api::authorize::TOPIC_DENIED.code();
            for (name, topic_id, parts) in denied.topics {
                response.responses.push(build!(TopicProduceResponse {
                    name,
                    topic_id,
                    partition_responses: parts
                        .into_iter()
                        .map(|index| build!(PartitionProduceResponse {
                            index,
                            error_code: t,
                            base_offset: -1
                        }))
                        .collect()
                }));
            }
        }
    }
}
