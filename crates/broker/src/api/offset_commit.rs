//! OffsetCommit (key 8): store a group's positions, validated against its generation.

use crate::group::Now;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse};

use super::RequestContext;
use crate::group::store::CommittedOffset;
use crate::group::Caller;
use crate::state::now_ms;

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
    let image = ctx.image();
    let valid = |topic: &str, partition: i32| image.has_partition(topic, partition);
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let by = Caller {
        group_id: &request.group_id.0,
        generation: request.generation_id_or_member_epoch,
        member_id: &request.member_id,
        instance_id: instance.as_deref(),
    };
    let codes = ctx
        .groups()
        .commit(ctx.broker.as_ref(), Now::current(), by, &flat, valid);
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

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };

    impl crate::api::Api for super::Handler {
        type Request = OffsetCommitRequest;
        type Response = OffsetCommitResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::OffsetCommit,
            min: 2,
            max: 9,
        };

        async fn handle(
            ctx: &RequestContext,
            request: OffsetCommitRequest,
        ) -> Option<OffsetCommitResponse> {
            Some(handle(ctx, request))
        }

        fn coordinator_keys<'r>(
            _ctx: &RequestContext,
            request: &'r OffsetCommitRequest,
        ) -> Vec<crate::api::Key<'r>> {
            vec![crate::api::Key::Group(&request.group_id.0)]
        }

        offset_commit_refusals!(
            OffsetCommitRequest,
            OffsetCommitResponse,
            OffsetCommitResponseTopic,
            OffsetCommitResponsePartition
        );

        fn replicated_writes(
            ctx: &RequestContext,
            request: &OffsetCommitRequest,
        ) -> Vec<std::sync::Arc<crate::state::Partition>> {
            crate::api::coordinator_check::group_partition(ctx, &request.group_id.0)
        }

        /// An offset commit not replicated in time is answered REQUEST_TIMED_OUT, so that the
        /// client retries it.
        fn not_replicated(response: &mut OffsetCommitResponse) {
            for t in &mut response.topics {
                for p in &mut t.partitions {
                    if p.error_code == 0 {
                        p.error_code = ResponseError::RequestTimedOut.code();
                    }
                }
            }
        }
    }
}
