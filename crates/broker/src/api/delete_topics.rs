//! DeleteTopics (key 20): by name, or by topic id from v6.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{topic_name, RequestContext};
use crate::error::error_code;

pub async fn handle(ctx: &RequestContext, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // v0-5 list names; v6 lists (name or id) states.
    let wanted: Vec<(Option<String>, Uuid)> = if ctx.version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        responses.push(delete_one(ctx, name, id).await);
    }
    build!(DeleteTopicsResponse { responses })
}

/// Deletes one topic, named or by id.
async fn delete_one(ctx: &RequestContext, name: Option<String>, id: Uuid) -> DeletableTopicResult {
    let image = ctx.image();
    let resolved = if id != Uuid::nil() {
        image.topic_by_id(&id).map(|t| t.name.clone())
    } else {
        name.clone()
    };
    let mut r = build!(DeletableTopicResult {
        name: resolved.as_deref().or(name.as_deref()).map(topic_name),
        topic_id: id
    });
    let Some(target) = resolved else {
        r.error_code = ResponseError::UnknownTopicId.code();
        return r;
    };
    if let Some(t) = image.topic(&target).filter(|_| ctx.version >= 6) {
        r.topic_id = t.topic_id;
    }
    if let Err(e) = ctx.broker.delete_topic(&target).await {
        r.error_code = error_code(&e);
        if ctx.version >= 5 {
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
        type Request = DeleteTopicsRequest;
        type Response = DeleteTopicsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::DeleteTopics,
            min: 1,
            max: 6,
        };

        async fn handle(
            ctx: &RequestContext,
            request: DeleteTopicsRequest,
        ) -> Option<DeleteTopicsResponse> {
            Some(handle(ctx, request).await)
        }

        fn authorize(
            a: &Auth<'_>,
            request: &mut DeleteTopicsRequest,
            denied: &mut Denied,
        ) -> Result<(), DeleteTopicsResponse> {
            request
                .topic_names
                .retain(|n| a.keep(denied, op::DELETE, n, uuid::Uuid::nil(), Vec::new()));
            request.topics.retain(|t| {
                let name = t.name.clone().unwrap_or_default();
                a.keep(denied, op::DELETE, &name, t.topic_id, Vec::new())
            });
            Ok(())
        }

        fn complete(_a: &Auth<'_>, denied: Denied, response: &mut DeleteTopicsResponse) {
            use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
            for (name, topic_id, _) in denied.topics {
                response.responses.push(build!(DeletableTopicResult {
                    name: Some(name),
                    topic_id,
                    error_code: crate::api::authorize::TOPIC_DENIED.code()
                }));
            }
        }
    }
}
