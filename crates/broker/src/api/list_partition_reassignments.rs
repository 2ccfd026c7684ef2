//! ListPartitionReassignments (key 46): the moves in progress, with the replicas being
//! added and removed.

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use super::{topic_name, RequestContext};

pub fn handle(
    ctx: &RequestContext,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = ctx.image();
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let topics = image
        .topics()
        .filter_map(|topic| {
            let wanted: Option<Vec<i32>> = match &request.topics {
                None => None,
                Some(ts) => Some(
                    ts.iter()
                        .find(|t| t.name.0.as_str() == topic.name)?
                        .partition_indexes
                        .clone(),
                ),
            };
            let partitions: Vec<_> = topic
                .partitions
                .iter()
                .enumerate()
                .filter(|(i, _)| wanted.as_ref().is_none_or(|w| w.contains(&(*i as i32))))
                .filter_map(|(i, p)| {
                    let (target, original) = p.reassignment.clone()?;
                    let adding = target
                        .iter()
                        .copied()
                        .filter(|r| !original.contains(r))
                        .collect();
                    let removing = original
                        .iter()
                        .copied()
                        .filter(|r| !target.contains(r))
                        .collect();
                    Some(build!(OngoingPartitionReassignment {
                        partition_index: i as i32,
                        replicas: ids(p.replicas.clone()),
                        adding_replicas: ids(adding),
                        removing_replicas: ids(removing)
                    }))
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                build!(OngoingTopicReassignment {
                    name: topic_name(&topic.name),
                    partitions
                })
            })
        })
        .collect();
    build!(ListPartitionReassignmentsResponse { topics })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::security::acl::op;
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = ListPartitionReassignmentsRequest;
        type Response = ListPartitionReassignmentsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::ListPartitionReassignments,
            min: 0,
            max: 0,
        };
        const CLUSTER_OPERATION: Option<i8> = Some(op::DESCRIBE);

        async fn handle(
            ctx: &RequestContext,
            request: ListPartitionReassignmentsRequest,
        ) -> Option<ListPartitionReassignmentsResponse> {
            Some(handle(ctx, request))
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &ListPartitionReassignmentsRequest,
            error: ResponseError,
        ) -> ListPartitionReassignmentsResponse {
            build!(ListPartitionReassignmentsResponse {
                error_code: error.code(),
                error_message: crate::api::authorize::message_of(error)
            })
        }
    }
}
