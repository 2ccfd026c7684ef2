//! TxnOffsetCommit (key 28): offsets committed inside a transaction. They are written to
//! `__consumer_offsets` as part of the producer's transaction and count only once it
//! commits.

use crate::group::Now;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::RequestContext;
use crate::group::store::CommittedOffset;
use crate::group::Caller;
use crate::state::now_ms;
use crate::txn::fenced_code;

pub fn handle(ctx: &RequestContext, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let now = now_ms();
    let mut flat = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            flat.push((
                t.name.0.to_string(),
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    commit_timestamp_ms: now,
                },
            ));
        }
    }
    // The transaction is checked where it lives: on a single node, or when this broker
    // coordinates it too. Elsewhere the group coordinator takes the producer's word, as
    // Kafka's does before KIP-890's verification.
    let checked = if ctx
        .broker
        .not_txn_coordinator(&request.transactional_id.0)
        .is_none()
    {
        ctx.txns().check(
            &request.transactional_id.0,
            request.producer_id.0,
            request.producer_epoch,
        )
    } else {
        Ok(())
    };
    let codes = match checked {
        Err(e) => vec![e.code(); flat.len()],
        Ok(()) => {
            let image = ctx.image();
            let valid = |topic: &str, partition: i32| image.has_partition(topic, partition);
            let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
            let by = Caller {
                group_id: &request.group_id.0,
                generation: if ctx.version >= 3 {
                    request.generation_id
                } else {
                    -1
                },
                member_id: if ctx.version >= 3 {
                    &request.member_id
                } else {
                    ""
                },
                instance_id: instance.as_deref(),
            };
            ctx.groups().txn_commit(
                ctx.broker.as_ref(),
                Now::current(),
                by,
                (request.producer_id.0, request.producer_epoch),
                &flat,
                valid,
            )
        }
    };
    let mut codes = codes.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = codes.next().unwrap_or(0);
                    let code = if code == ResponseError::InvalidProducerIdMapping.code() {
                        // Kafka's group coordinator names an unknown producer this way.
                        ResponseError::UnknownProducerId.code()
                    } else {
                        code
                    };
                    build!(TxnOffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code: fenced_code(code, ctx.version, 3)
                    })
                })
                .collect();
            build!(TxnOffsetCommitResponseTopic {
                name: t.name,
                partitions
            })
        })
        .collect();
    build!(TxnOffsetCommitResponse { topics })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::txn_offset_commit_response::{
        TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
    };

    impl crate::api::Api for super::Handler {
        type Request = TxnOffsetCommitRequest;
        type Response = TxnOffsetCommitResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::TxnOffsetCommit,
            min: 0,
            max: 3,
        };

        async fn handle(
            ctx: &RequestContext,
            request: TxnOffsetCommitRequest,
        ) -> Option<TxnOffsetCommitResponse> {
            Some(handle(ctx, request))
        }

        fn coordinator_keys<'r>(
            _ctx: &RequestContext,
            request: &'r TxnOffsetCommitRequest,
        ) -> Vec<crate::api::Key<'r>> {
            vec![crate::api::Key::Group(&request.group_id.0)]
        }

        offset_commit_refusals!(
            TxnOffsetCommitRequest,
            TxnOffsetCommitResponse,
            TxnOffsetCommitResponseTopic,
            TxnOffsetCommitResponsePartition
        );

        fn replicated_writes(
            ctx: &RequestContext,
            request: &TxnOffsetCommitRequest,
        ) -> Vec<std::sync::Arc<crate::state::Partition>> {
            crate::api::coordinator_check::group_partition(ctx, &request.group_id.0)
        }
    }
}
