//! CreatePartitions (key 37): grow a topic's partition count.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{ApiSpec, RequestContext};
use crate::error::error_code;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::CreatePartitions,
    min: 0,
    max: 3,
};

pub fn handle(ctx: &RequestContext, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let node = ctx.broker.config.node_id;
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let mut r = build!(CreatePartitionsTopicResult {
                name: t.name.clone()
            });
            let mut fail = |e: ResponseError, m: String| {
                r.error_code = e.code();
                r.error_message = Some(StrBytes::from_string(m));
            };
            let Some(current) = ctx
                .broker
                .image()
                .topic(&t.name.0)
                .map(|m| m.partitions.len() as i32)
            else {
                fail(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{}' does not exist", t.name.0.as_str()),
                );
                return r;
            };
            if t.count <= current {
                fail(
                    ResponseError::InvalidPartitions,
                    format!(
                        "topic has {current} partitions; the new count must be larger, was {}",
                        t.count
                    ),
                );
                return r;
            }
            if let Some(assignments) = &t.assignments {
                if assignments.len() as i32 != t.count - current {
                    fail(
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "{} assignments given for {} new partitions",
                            assignments.len(),
                            t.count - current
                        ),
                    );
                    return r;
                }
                if assignments
                    .iter()
                    .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node)
                {
                    fail(
                        ResponseError::InvalidReplicaAssignment,
                        format!("this cluster has only broker {node}"),
                    );
                    return r;
                }
            }
            if !request.validate_only {
                if let Err(e) = ctx.broker.add_partitions(&t.name.0, t.count) {
                    r.error_code = error_code(&e);
                    r.error_message = Some(StrBytes::from_string(e.to_string()));
                }
            }
            r
        })
        .collect();
    build!(CreatePartitionsResponse { results })
}
