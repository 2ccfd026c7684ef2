//! ListPartitionReassignments (key 46): the moves in progress, with the replicas being
//! added and removed.

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use super::{topic_name, ApiSpec, RequestContext};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::ListPartitionReassignments,
    min: 0,
    max: 0,
};

pub fn handle(
    ctx: &RequestContext,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = ctx.broker.image();
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
