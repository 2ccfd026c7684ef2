//! Fetch (key 1): serve stored batches byte for byte, long-polling up to `max_wait_ms`
//! for `min_bytes`, woken by appends. Honours partition and response byte limits but
//! always returns the first batch whole, even over the limits (KIP-74). Incremental fetch
//! sessions (KIP-227) are kept in `fetch_session.rs`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ProducerId};
use tokio::sync::Notify;
use uuid::Uuid;

use super::RequestContext;
use crate::error::storage_error_code;
use crate::fetch_session;
use crate::state::Partition;
use gregor_storage::StorageError;

const READ_COMMITTED: i8 = 1;

/// Kafka's cap on how long a fetch may wait, whatever the client asks.
const MAX_WAIT_CAP_MS: u64 = 30_000;

pub async fn handle(ctx: &RequestContext, mut request: FetchRequest) -> FetchResponse {
    // An incremental fetch of a session (KIP-227) becomes a fetch of all its partitions
    // here, and its answer keeps only what changed (`fetch_session.rs`).
    let sessions = &ctx.broker.fetch_sessions;
    let kind = match sessions.begin(ctx.version, &mut request, tokio::time::Instant::now()) {
        Ok(kind) => kind,
        Err(e) => {
            crate::metrics::error_code(ApiKey::Fetch, e.code());
            return build!(FetchResponse {
                error_code: e.code()
            });
        }
    };
    let follower = reader_of(ctx.version, &request).0 >= 0;
    // A session's partitions were authorized when they were added; the ACLs may have
    // changed since, so a consumer's are checked again.
    let denied = match kind {
        fetch_session::Kind::Incremental(_) if !follower => revoked(ctx, &mut request),
        _ => Vec::new(),
    };
    let mut response = long_poll(ctx, &request).await;
    response.responses.extend(denied);
    sessions.finish(
        kind,
        &request,
        follower,
        &mut response,
        tokio::time::Instant::now(),
    );
    response
}

/// Removes from a session's fetch the topics the caller may no longer read; their
/// answers (TOPIC_AUTHORIZATION_FAILED), as `authorize` refuses them in a request.
fn revoked(ctx: &RequestContext, request: &mut FetchRequest) -> Vec<FetchableTopicResponse> {
    let Some(auth) = crate::api::authorize::Auth::enabled(ctx) else {
        return Vec::new();
    };
    let mut denied = crate::api::authorize::Denied::default();
    request.topics.retain(|t| {
        let parts = t.partitions.iter().map(|p| p.partition).collect();
        auth.keep(
            &mut denied,
            crate::security::acl::op::READ,
            &t.topic,
            t.topic_id,
            parts,
        )
    });
    denied_answers(denied.topics)
}

/// The answers for topics the caller may not read: TOPIC_AUTHORIZATION_FAILED for each
/// partition asked for.
fn denied_answers(
    topics: Vec<(kafka_protocol::messages::TopicName, Uuid, Vec<i32>)>,
) -> Vec<FetchableTopicResponse> {
    let code = crate::api::authorize::TOPIC_DENIED.code();
    topics
        .into_iter()
        .map(|(topic, topic_id, parts)| {
            build!(FetchableTopicResponse {
                topic,
                topic_id,
                partitions: parts
                    .into_iter()
                    .map(|partition_index| build!(PartitionData {
                        partition_index,
                        error_code: code,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1
                    }))
                    .collect()
            })
        })
        .collect()
}

/// Reads the requested partitions, waiting up to `max_wait_ms` for `min_bytes`.
async fn long_poll(ctx: &RequestContext, request: &FetchRequest) -> FetchResponse {
    let max_wait = Duration::from_millis((request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP_MS));
    let deadline = tokio::time::Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let mut shutdown = ctx.shutdown.clone();
    loop {
        // Register before reading, so an append between the read and the wait still wakes us.
        let notify = Arc::new(Notify::new());
        let pass = read_once(ctx, request, &notify);
        let now = tokio::time::Instant::now();
        if pass.bytes >= min_bytes.max(1) || now >= deadline || !pass.waitable || *shutdown.borrow()
        {
            // Counted for the pass that is answered only: a pass dropped to wait for more
            // is read again, and would be counted twice.
            for (partition, records, bytes) in &pass.served {
                partition.metrics.fetch_records.increment(*records);
                partition.metrics.fetch_bytes.increment(*bytes);
            }
            return pass.response;
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One pass over the requested partitions.
struct Pass {
    response: FetchResponse,
    /// Record bytes in the response.
    bytes: usize,
    /// Whether waiting could change the answer (no errors).
    waitable: bool,
    /// What each partition served: records and bytes, for its metrics.
    served: Vec<(Arc<Partition>, u64, u64)>,
}

fn read_once(ctx: &RequestContext, request: &FetchRequest, notify: &Arc<Notify>) -> Pass {
    let by_id = ctx.version >= 13;
    let image = ctx.image();
    let (replica_id, reader) = reader_of(ctx.version, request);
    let mut budget = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    };
    let mut total = 0usize;
    let mut any_error = false;
    let mut served = Vec::new();
    let mut responses = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let meta = if by_id {
            image.topic_by_id(&topic.topic_id)
        } else {
            image.topic(&topic.topic.0)
        };
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let mut data = unanswered(p.partition);
            let partition = meta.and_then(|m| ctx.partitions().get(&m.name, p.partition));
            match partition {
                None => {
                    data.error_code = if by_id && meta.is_none() {
                        ResponseError::UnknownTopicId.code()
                    } else {
                        ResponseError::UnknownTopicOrPartition.code()
                    };
                    any_error = true;
                }
                Some(partition) => {
                    let leadership = partition.leadership();
                    let refused = leadership.refusal(p.current_leader_epoch);
                    if let Some(e) = refused {
                        data.error_code = e.code();
                        crate::metrics::error_code(ApiKey::Fetch, data.error_code);
                        any_error = true;
                        partitions.push(data);
                        continue;
                    }
                    if replica_id >= 0 {
                        partition.follower_fetched(
                            replica_id,
                            p.fetch_offset,
                            crate::state::now_ms(),
                        );
                    }
                    partition.add_waiter(notify);
                    let at = ReadAt {
                        reader,
                        offset: p.fetch_offset,
                        limit: (p.partition_max_bytes.max(0) as usize).min(budget),
                        first: total == 0,
                    };
                    match read_partition(ctx, &partition, at, &mut data) {
                        Some((n, records)) => {
                            total += n;
                            budget = budget.saturating_sub(n);
                            if n > 0 {
                                served.push((partition.clone(), records, n as u64));
                            }
                        }
                        None => any_error = true,
                    }
                }
            }
            partitions.push(data);
        }
        responses.push(build!(FetchableTopicResponse {
            topic: if by_id {
                Default::default()
            } else {
                topic.topic.clone()
            },
            topic_id: if by_id { topic.topic_id } else { Uuid::nil() },
            partitions
        }));
    }
    Pass {
        response: build!(FetchResponse { responses }),
        bytes: total,
        waitable: !any_error,
        served,
    }
}

/// Who fetches: the replica id a follower names itself with (consumers send -1), and
/// how far it may read.
fn reader_of(version: i16, request: &FetchRequest) -> (i32, Reader) {
    let replica_id = if version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let reader = if replica_id >= 0 {
        Reader::Follower
    } else if request.isolation_level == READ_COMMITTED {
        Reader::Committed
    } else {
        Reader::Uncommitted
    };
    (replica_id, reader)
}

/// A partition's answer before it is read: no offsets, no records.
fn unanswered(partition_index: i32) -> PartitionData {
    build!(PartitionData {
        partition_index,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        records: Some(Bytes::new())
    })
}

/// Who reads, which decides how far: a follower to the log end, a `read_uncommitted`
/// consumer to the high watermark, a `read_committed` one to the last stable offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Follower,
    Uncommitted,
    Committed,
}

/// What to read of a partition: from `offset`, at most `limit` bytes (at least one batch
/// when it is the `first` partition of the answer), as far as `reader` may.
#[derive(Debug, Clone, Copy)]
struct ReadAt {
    reader: Reader,
    offset: i64,
    limit: usize,
    first: bool,
}

/// [`read_stored`], with a failure answered in `data` (its code, and a log line unless
/// the offset is merely out of range): `None` then.
fn read_partition(
    ctx: &RequestContext,
    partition: &Partition,
    at: ReadAt,
    data: &mut PartitionData,
) -> Option<(usize, u64)> {
    match read_stored(ctx, partition, at, data) {
        Ok(read) => Some(read),
        Err(e) => {
            if !matches!(e, StorageError::OffsetOutOfRange { .. }) {
                tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "fetch read failed");
            }
            data.error_code = storage_error_code(&e);
            crate::metrics::error_code(ApiKey::Fetch, data.error_code);
            None
        }
    }
}

/// Reads one partition into `data` (or, where the connection sends file ranges itself
/// (`ctx.deferred`), puts a placeholder for its
/// stored batches there, for the connection to send from the file); returns the record
/// bytes and the number of records in them.
fn read_stored(
    ctx: &RequestContext,
    partition: &Partition,
    at: ReadAt,
    data: &mut PartitionData,
) -> Result<(usize, u64), StorageError> {
    let ReadAt {
        reader,
        offset,
        limit,
        first,
    } = at;
    let (plan, offsets) = {
        let log = partition.log();
        let offsets = log.offsets();
        data.high_watermark = offsets.high_watermark;
        data.last_stable_offset = offsets.last_stable;
        if ctx.version >= 5 {
            data.log_start_offset = offsets.log_start;
        }
        if reader == Reader::Committed {
            // Only what lies below the LSO, with the aborted transactions in that range
            // so the client drops their records.
            let plan = log.read_below(offset, limit, first, offsets.last_stable)?;
            data.aborted_transactions = Some(
                log.aborted_between(offset, offsets.last_stable)
                    .into_iter()
                    .map(|a| {
                        build!(AbortedTransaction {
                            producer_id: ProducerId(a.producer_id),
                            first_offset: a.first_offset
                        })
                    })
                    .collect(),
            );
            (plan, offsets)
        } else if reader == Reader::Follower {
            // Followers copy everything the leader has; the high watermark tells them
            // how much of it is committed.
            (log.read(offset, limit, first)?, offsets)
        } else {
            // Consumers see only what every in-sync replica holds.
            (
                log.read_below(offset, limit, first, offsets.high_watermark)?,
                offsets,
            )
        }
    };
    debug_assert!(offset <= offsets.log_end);
    let n = plan.len();
    // Counted by batch header: no per-record work.
    let records = plan.records;
    data.records = Some(match (&ctx.deferred, plan.region()) {
        (Some(deferred), Some(region)) if region.file.fd().is_some() => {
            deferred.placeholder(region)
        }
        _ => Bytes::from(plan.read()?),
    });
    Ok((n, records))
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::api::authorize::Auth;
    use crate::api::authorize::Denied;
    use crate::security::acl::op;

    impl crate::api::Api for super::Handler {
        type Request = FetchRequest;
        type Response = FetchResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::Fetch,
            min: 4,
            max: 16,
        };

        async fn handle(ctx: &RequestContext, request: FetchRequest) -> Option<FetchResponse> {
            Some(handle(ctx, request).await)
        }

        fn authorize(
            a: &Auth<'_>,
            request: &mut FetchRequest,
            denied: &mut Denied,
        ) -> Result<(), FetchResponse> {
            let replica = if a.ctx.version >= 15 {
                request.replica_state.replica_id.0
            } else {
                request.replica_id.0
            };
            if replica >= 0 {
                if let Some(e) = a.cluster_refused(op::CLUSTER_ACTION) {
                    return Err(build!(FetchResponse {
                        error_code: e.code()
                    }));
                }
            } else {
                request.topics.retain(|t| {
                    let parts = t.partitions.iter().map(|p| p.partition).collect();
                    a.keep(denied, op::READ, &t.topic, t.topic_id, parts)
                });
            }
            Ok(())
        }

        fn complete(_a: &Auth<'_>, denied: Denied, response: &mut FetchResponse) {
            response
                .responses
                .extend(super::denied_answers(denied.topics));
        }
    }
}
