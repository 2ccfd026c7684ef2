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

use super::RequestContext;

/// The answer for a group request this broker must not serve, if it must not.
pub fn refuse(ctx: &RequestContext, request: &RequestKind) -> Option<ResponseKind> {
    ctx.broker.clustered()?;
    let check = |group: &str| ctx.broker.not_coordinator(group);
    Some(match request {
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
