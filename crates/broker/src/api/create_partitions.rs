//! CreatePartitions (key 37): grow a topic's partition count.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::error::error_code;

pub async fn handle(
    ctx: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        results.push(create_one(ctx, t, request.validate_only).await);
    }
    build!(CreatePartitionsResponse { results })
}

/// One topic of the request: its partitions added (or only checked, with `validate_only`).
async fn create_one(
    ctx: &RequestContext,
    t: CreatePartitionsTopic,
    validate_only: bool,
) -> CreatePartitionsTopicResult {
    let node = ctx.config().node_id;
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
    if !validate_only {
        if let Err(e) = ctx.broker.add_partitions(&t.name.0, t.count).await {
            r.error_code = error_code(&e);
            r.error_message = Some(StrBytes::from_string(e.to_string()));
        }
    }
    r
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::api::authorize::Auth;
    use crate::api::authorize::Denied;
    use crate::security::acl::op;

    impl crate::api::Api for super::Handler {
        type Request = CreatePartitionsRequest;
        type Response = CreatePartitionsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::CreatePartitions,
            min: 0,
            max: 3,
        };

        async fn handle(
            ctx: &RequestContext,
            request: CreatePartitionsRequest,
        ) -> Option<CreatePartitionsResponse> {
            Some(handle(ctx, request).await)
        }

        fn authorize(
            a: &Auth<'_>,
            request: &mut CreatePartitionsRequest,
            denied: &mut Denied,
        ) -> Result<(), CreatePartitionsResponse> {
            request
                .topics
                .retain(|t| a.keep(denied, op::ALTER, &t.name, uuid::Uuid::nil(), Vec::new()));
            Ok(())
        }

        fn complete(_a: &Auth<'_>, denied: Denied, response: &mut CreatePartitionsResponse) {
            use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
            for (name, _, _) in denied.topics {
                response.results.push(build!(CreatePartitionsTopicResult {
                    name,
                    error_code: crate::api::authorize::TOPIC_DENIED.code()
                }));
            }
        }
    }
}
