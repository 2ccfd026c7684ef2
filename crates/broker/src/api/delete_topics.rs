//! DeleteTopics (key 20): by name, or by topic id from v6.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{topic_name, ApiSpec, RequestContext};
use crate::error::error_code;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DeleteTopics,
    min: 1,
    max: 6,
};

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
    let image = ctx.broker.image();
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
