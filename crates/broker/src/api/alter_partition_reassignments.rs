//! AlterPartitionReassignments (key 45): move a partition's replicas to other brokers, or
//! cancel a move. The partition first gets the union of its old and new replicas; the new
//! ones copy the log as followers (at `follower.replication.throttled.rate`), and once all
//! of them are in sync the controller drops the old ones and, if need be, moves the
//! leadership (`finish_reassignments` in gregor-cluster).

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;

pub async fn handle(
    ctx: &RequestContext,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let allow_rf_change = ctx.version < 1 || request.allow_replication_factor_change;
    let mut responses = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let target = p
                .replicas
                .as_ref()
                .map(|r| r.iter().map(|b| b.0).collect::<Vec<i32>>());
            let mut r = build!(ReassignablePartitionResponse {
                partition_index: p.partition_index
            });
            if let Err((e, message)) = ctx
                .broker
                .reassign(&t.name.0, p.partition_index, target, allow_rf_change)
                .await
            {
                tracing::info!(topic = %t.name.0, partition = p.partition_index, error = %message, "reassignment refused");
                r.error_code = e.code();
                r.error_message = Some(StrBytes::from_string(message));
            }
            partitions.push(r);
        }
        responses.push(build!(ReassignableTopicResponse {
            name: t.name,
            partitions
        }));
    }
    build!(AlterPartitionReassignmentsResponse {
        allow_replication_factor_change: allow_rf_change,
        responses
    })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::security::acl::op;
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = AlterPartitionReassignmentsRequest;
        type Response = AlterPartitionReassignmentsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::AlterPartitionReassignments,
            min: 0,
            max: 1,
        };
        const CLUSTER_OPERATION: Option<i8> = Some(op::ALTER);

        async fn handle(
            ctx: &RequestContext,
            request: AlterPartitionReassignmentsRequest,
        ) -> Option<AlterPartitionReassignmentsResponse> {
            Some(handle(ctx, request).await)
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &AlterPartitionReassignmentsRequest,
            error: ResponseError,
        ) -> AlterPartitionReassignmentsResponse {
            build!(AlterPartitionReassignmentsResponse {
                error_code: error.code(),
                error_message: crate::api::authorize::message_of(error)
            })
        }
    }
}
