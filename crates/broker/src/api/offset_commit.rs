//! OffsetCommit (key 8): store a group's positions, validated against its generation.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse};

use super::{ApiSpec, RequestContext};
use crate::group::store::CommittedOffset;
use crate::group::Committer;
use crate::state::now_ms;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::OffsetCommit,
    min: 2,
    max: 9,
};

pub fn handle(ctx: &RequestContext, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let now = now_ms();
    let mut flat = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            flat.push((
                t.name.0.to_string(),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata,
                    commit_timestamp_ms: now,
                },
            ));
        }
    }
    let image = ctx.broker.image();
    let valid = |topic: &str, partition: i32| super::partition_exists(&image, topic, partition);
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let by = Committer {
        group_id: &request.group_id.0,
        generation: request.generation_id_or_member_epoch,
        member_id: &request.member_id,
        instance_id: instance.as_deref(),
    };
    let codes = ctx
        .broker
        .groups
        .commit(ctx.broker.as_ref(), by, &flat, valid);
    let mut codes = codes.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    build!(OffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code: codes.next().unwrap_or(0)
                    })
                })
                .collect();
            build!(OffsetCommitResponseTopic {
                name: t.name,
                partitions
            })
        })
        .collect();
    build!(OffsetCommitResponse { topics })
}
