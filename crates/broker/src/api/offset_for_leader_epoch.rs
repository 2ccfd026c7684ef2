//! OffsetForLeaderEpoch (key 23): where a leader epoch ended in this partition's log
//! (KIP-101, KIP-279). Followers ask it before fetching from a new leader, to cut what
//! diverged; clients ask it to check their position after a leader change (KIP-320).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::RequestContext;
use crate::error::storage_error_code;
use gregor_storage::LeaderEpoch;

pub fn handle(
    ctx: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut r = build!(EpochEndOffset {
                        partition: p.partition,
                        leader_epoch: -1,
                        end_offset: -1
                    });
                    let Some(partition) = ctx.partitions().get(&t.topic.0, p.partition) else {
                        r.error_code = ResponseError::UnknownTopicOrPartition.code();
                        return r;
                    };
                    if let Some(refused) = partition.leadership().refusal(p.current_leader_epoch) {
                        r.error_code = refused.code();
                    } else {
                        match partition
                            .log()
                            .end_offset_for_epoch(LeaderEpoch(p.leader_epoch))
                        {
                            Ok(Some((e, end))) => {
                                r.leader_epoch = e.get();
                                r.end_offset = end.get();
                            }
                            Ok(None) => {}
                            Err(e) => r.error_code = storage_error_code(&e),
                        }
                    }
                    r
                })
                .collect();
            build!(OffsetForLeaderTopicResult {
                topic: t.topic,
                partitions
            })
        })
        .collect();
    build!(OffsetForLeaderEpochResponse { topics })
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
        type Request = OffsetForLeaderEpochRequest;
        type Response = OffsetForLeaderEpochResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::OffsetForLeaderEpoch,
            min: 2,
            max: 4,
        };

        async fn handle(
            ctx: &RequestContext,
            request: OffsetForLeaderEpochRequest,
        ) -> Option<OffsetForLeaderEpochResponse> {
            Some(handle(ctx, request))
        }

        fn error_response(
            _ctx: &RequestContext,
            request: &OffsetForLeaderEpochRequest,
            error: ResponseError,
        ) -> OffsetForLeaderEpochResponse {
            let _ = request;
            use kafka_protocol::messages::offset_for_leader_epoch_response::{
                EpochEndOffset, OffsetForLeaderTopicResult,
            };
            build!(OffsetForLeaderEpochResponse {
                topics: request
                    .topics
                    .iter()
                    .map(|t| build!(OffsetForLeaderTopicResult {
                        topic: t.topic.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| build!(EpochEndOffset {
                                error_code: error.code(),
                                partition: p.partition,
                                leader_epoch: -1,
                                end_offset: -1
                            }))
                            .collect()
                    }))
                    .collect()
            })
        }

        fn authorize(
            a: &Auth<'_>,
            request: &mut OffsetForLeaderEpochRequest,
            _denied: &mut Denied,
        ) -> Result<(), OffsetForLeaderEpochResponse> {
            if request.replica_id.0 >= 0 {
                crate::api::authorize::needs_cluster(a, op::CLUSTER_ACTION, |e| {
                    Self::error_response(a.ctx, request, e)
                })?;
            }
            Ok(())
        }

        fn complete(a: &Auth<'_>, _denied: Denied, response: &mut OffsetForLeaderEpochResponse) {
            for topic in &mut response.topics {
                if !a.topic(op::DESCRIBE, &topic.topic.0) {
                    for p in &mut topic.partitions {
                        p.error_code = crate::api::authorize::TOPIC_DENIED.code();
                        p.leader_epoch = -1;
                        p.end_offset = -1;
                    }
                }
            }
        }
    }
}
