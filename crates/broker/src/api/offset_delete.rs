//! OffsetDelete (key 47): remove committed offsets for partitions the group no longer reads.

use crate::group::Now;
use bytes::Bytes;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::Decodable;

use super::RequestContext;

/// Whether any member's consumer-protocol subscription names `topic`.
fn subscribed(metadata: &[Bytes], topic: &str) -> bool {
    metadata.iter().any(|m| {
        let mut buf = m.clone();
        if buf.len() < 2 {
            return false;
        }
        let version = i16::from_be_bytes([buf[0], buf[1]]);
        let _ = bytes::Buf::get_i16(&mut buf);
        ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3))
            .is_ok_and(|s| s.topics.iter().any(|t| t.as_str() == topic))
    })
}

pub fn handle(ctx: &RequestContext, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let wanted: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    match ctx.groups().delete_offsets(
        ctx.broker.as_ref(),
        Now::current(),
        &request.group_id.0,
        &wanted,
        subscribed,
    ) {
        Err(error_code) => build!(OffsetDeleteResponse { error_code }),
        Ok(codes) => {
            let mut codes = codes.into_iter();
            let topics = request
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            build!(OffsetDeleteResponsePartition {
                                partition_index: p.partition_index,
                                error_code: codes.next().unwrap_or(0)
                            })
                        })
                        .collect();
                    build!(OffsetDeleteResponseTopic {
                        name: t.name,
                        partitions
                    })
                })
                .collect();
            build!(OffsetDeleteResponse { topics })
        }
    }
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = OffsetDeleteRequest;
        type Response = OffsetDeleteResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::OffsetDelete,
            min: 0,
            max: 0,
        };

        async fn handle(
            ctx: &RequestContext,
            request: OffsetDeleteRequest,
        ) -> Option<OffsetDeleteResponse> {
            Some(handle(ctx, request))
        }

        const GROUP_OPERATION: i8 = crate::security::acl::op::DELETE;

        fn coordinator_keys<'r>(
            _ctx: &RequestContext,
            request: &'r OffsetDeleteRequest,
        ) -> Vec<crate::api::Key<'r>> {
            vec![crate::api::Key::Group(&request.group_id.0)]
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &OffsetDeleteRequest,
            error: ResponseError,
        ) -> OffsetDeleteResponse {
            build!(OffsetDeleteResponse {
                error_code: error.code()
            })
        }

        fn replicated_writes(
            ctx: &RequestContext,
            request: &OffsetDeleteRequest,
        ) -> Vec<std::sync::Arc<crate::state::Partition>> {
            crate::api::coordinator_check::group_partition(ctx, &request.group_id.0)
        }
    }
}
