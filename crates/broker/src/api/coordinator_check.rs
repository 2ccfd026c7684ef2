//! In a cluster, a group is served only by its coordinator: the leader of the group's
//! `__consumer_offsets` partition. Any other broker answers the group APIs with
//! NOT_COORDINATOR (or COORDINATOR_NOT_AVAILABLE while that partition has no leader),
//! and the client looks the coordinator up again with FindCoordinator.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;

use std::sync::Arc;
use std::time::Duration;

use super::RequestContext;
use crate::state::{await_replicated, Partition};

/// How long a coordinator's answer waits for its write to reach the in-sync replicas
/// (Kafka's `offsets.commit.timeout.ms`).
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The internal partitions a coordinator request writes to (or the partitions a marker
/// request writes to), whose in-sync replicas must hold the write before the answer.
pub fn replicated_writes(ctx: &RequestContext, request: &RequestKind) -> Vec<Arc<Partition>> {
    let b = &ctx.broker;
    let group = |g: &str| b.coordinator_partition(g, false).into_iter().collect();
    let txn = |id: &str| b.coordinator_partition(id, true).into_iter().collect();
    match request {
        RequestKind::OffsetCommit(r) => group(&r.group_id.0),
        RequestKind::SyncGroup(r) => group(&r.group_id.0),
        RequestKind::TxnOffsetCommit(r) => group(&r.group_id.0),
        RequestKind::OffsetDelete(r) => group(&r.group_id.0),
        RequestKind::InitProducerId(r) => r
            .transactional_id
            .as_ref()
            .map_or_else(Vec::new, |t| txn(&t.0)),
        RequestKind::AddPartitionsToTxn(r) if ctx.version <= 3 => {
            txn(&r.v3_and_below_transactional_id.0)
        }
        RequestKind::AddOffsetsToTxn(r) => txn(&r.transactional_id.0),
        RequestKind::EndTxn(r) => txn(&r.transactional_id.0),
        RequestKind::WriteTxnMarkers(r) => r
            .markers
            .iter()
            .flat_map(|m| m.topics.iter())
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .filter_map(|&p| b.partition(&t.name.0, p))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Waits for `writes` to be replicated; an offset commit that was not is answered with
/// REQUEST_TIMED_OUT so the client retries it.
pub async fn settle(writes: Vec<Arc<Partition>>, mut response: ResponseKind) -> ResponseKind {
    let mut replicated = true;
    for p in &writes {
        if !await_replicated(p, REPLICATION_TIMEOUT).await {
            tracing::warn!(topic = %p.topic, partition = p.index, "a coordinator write did not reach the in-sync replicas in time");
            replicated = false;
        }
    }
    if !replicated {
        if let ResponseKind::OffsetCommit(r) = &mut response {
            for t in &mut r.topics {
                for p in &mut t.partitions {
                    if p.error_code == 0 {
                        p.error_code = ResponseError::RequestTimedOut.code();
                    }
                }
            }
        }
    }
    response
}

/// The answer for a group request this broker must not serve, if it must not.
pub fn refuse(ctx: &RequestContext, request: &RequestKind) -> Option<ResponseKind> {
    ctx.broker.clustered()?;
    error_response(
        ctx,
        request,
        |group| ctx.broker.not_coordinator(group),
        |id| ctx.broker.not_txn_coordinator(id),
    )
}

/// The whole-request error answer for a group or transaction request, if `check` (for its
/// group) or `check_txn` (for its transactional id) finds an error; `None` otherwise or
/// for other requests. Also used by the authorizer.
pub fn error_response(
    ctx: &RequestContext,
    request: &RequestKind,
    check: impl Fn(&str) -> Option<ResponseError>,
    check_txn: impl Fn(&str) -> Option<ResponseError>,
) -> Option<ResponseKind> {
    Some(match request {
        RequestKind::InitProducerId(r) => {
            let e = check_txn(&r.transactional_id.as_ref()?.0)?;
            ResponseKind::InitProducerId(build!(InitProducerIdResponse {
                error_code: e.code(),
                producer_id: ProducerId(-1),
                producer_epoch: -1
            }))
        }
        RequestKind::AddPartitionsToTxn(r) if ctx.version <= 3 => {
            let e = check_txn(&r.v3_and_below_transactional_id.0)?;
            ResponseKind::AddPartitionsToTxn(super::add_partitions_to_txn::refused(r, |_| e))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            let e = check_txn(&r.transactional_id.0)?;
            ResponseKind::AddOffsetsToTxn(build!(AddOffsetsToTxnResponse {
                error_code: e.code()
            }))
        }
        RequestKind::EndTxn(r) => {
            let e = check_txn(&r.transactional_id.0)?;
            ResponseKind::EndTxn(build!(EndTxnResponse {
                error_code: e.code()
            }))
        }
        RequestKind::JoinGroup(r) => {
            let e = check(&r.group_id.0)?;
            ResponseKind::JoinGroup(build!(JoinGroupResponse {
                error_code: e.code(),
                generation_id: -1
            }))
        }
        RequestKind::SyncGroup(r) => {
            let e = check(&r.group_id.0)?;
            ResponseKind::SyncGroup(build!(SyncGroupResponse {
                error_code: e.code()
            }))
        }
        RequestKind::Heartbeat(r) => {
            let e = check(&r.group_id.0)?;
            ResponseKind::Heartbeat(build!(HeartbeatResponse {
                error_code: e.code()
            }))
        }
        RequestKind::LeaveGroup(r) => {
            let e = check(&r.group_id.0)?;
            ResponseKind::LeaveGroup(build!(LeaveGroupResponse {
                error_code: e.code()
            }))
        }
        RequestKind::OffsetDelete(r) => {
            let e = check(&r.group_id.0)?;
            ResponseKind::OffsetDelete(build!(OffsetDeleteResponse {
                error_code: e.code()
            }))
        }
        RequestKind::OffsetCommit(r) => {
            let e = check(&r.group_id.0)?;
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    build!(OffsetCommitResponseTopic {
                        name: t.name.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| build!(OffsetCommitResponsePartition {
                                partition_index: p.partition_index,
                                error_code: e.code()
                            }))
                            .collect()
                    })
                })
                .collect();
            ResponseKind::OffsetCommit(build!(OffsetCommitResponse { topics }))
        }
        RequestKind::TxnOffsetCommit(r) => {
            let e = check(&r.group_id.0)?;
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    build!(TxnOffsetCommitResponseTopic {
                        name: t.name.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| build!(TxnOffsetCommitResponsePartition {
                                partition_index: p.partition_index,
                                error_code: e.code()
                            }))
                            .collect()
                    })
                })
                .collect();
            ResponseKind::TxnOffsetCommit(build!(TxnOffsetCommitResponse { topics }))
        }
        RequestKind::OffsetFetch(r) if ctx.version < 8 => {
            let e = check(&r.group_id.0)?;
            ResponseKind::OffsetFetch(build!(OffsetFetchResponse {
                error_code: e.code()
            }))
        }
        RequestKind::OffsetFetch(r) => {
            // Several groups may be asked at once; refuse only if one is not ours (clients
            // send one group per coordinator).
            let refused: Vec<_> = r
                .groups
                .iter()
                .filter_map(|g| check(&g.group_id.0).map(|e| (g.group_id.clone(), e)))
                .collect();
            if refused.is_empty() {
                return None;
            }
            let groups = r
                .groups
                .iter()
                .map(|g| {
                    let e = refused
                        .iter()
                        .find(|(id, _)| *id == g.group_id)
                        .map_or(ResponseError::NotCoordinator, |(_, e)| *e);
                    build!(OffsetFetchResponseGroup {
                        group_id: g.group_id.clone(),
                        error_code: e.code()
                    })
                })
                .collect();
            ResponseKind::OffsetFetch(build!(OffsetFetchResponse { groups }))
        }
        _ => return None,
    })
}
