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

use super::{ApiSpec, RequestContext};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::AlterPartitionReassignments,
    min: 0,
    max: 1,
};

pub fn handle(
    ctx: &RequestContext,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let allow_rf_change = ctx.version < 1 || request.allow_replication_factor_change;
    let responses = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let target = p
                        .replicas
                        .as_ref()
                        .map(|r| r.iter().map(|b| b.0).collect::<Vec<i32>>());
                    let mut r = build!(ReassignablePartitionResponse {
                        partition_index: p.partition_index
                    });
                    if let Err((e, message)) =
                        ctx.broker
                            .reassign(&t.name.0, p.partition_index, target, allow_rf_change)
                    {
                        tracing::info!(topic = %t.name.0, partition = p.partition_index, error = %message, "reassignment refused");
                        r.error_code = e.code();
                        r.error_message = Some(StrBytes::from_string(message));
                    }
                    r
                })
                .collect();
            build!(ReassignableTopicResponse {
                name: t.name,
                partitions
            })
        })
        .collect();
    build!(AlterPartitionReassignmentsResponse {
        allow_replication_factor_change: allow_rf_change,
        responses
    })
}
