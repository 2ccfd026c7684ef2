//! AlterConfigs (key 33): replace a topic's dynamic configs as a whole (settings left out
//! return to their defaults). IncrementalAlterConfigs (`incremental_alter_configs.rs`) is
//! the form clients prefer.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::config::validate_topic_override;

pub const TOPIC: i8 = 2;
pub const BROKER: i8 = 4;

/// Applies or (with `validate_only`) checks a new full set of topic overrides.
pub async fn apply_topic(
    ctx: &RequestContext,
    topic: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    if ctx.image().topic(topic).is_none() {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{topic}' does not exist"),
        ));
    }
    for (k, v) in &configs {
        validate_topic_override(k, v).map_err(|m| (ResponseError::InvalidConfig, m))?;
    }
    if validate_only {
        return Ok(());
    }
    ctx.broker
        .set_topic_configs(topic, configs)
        .await
        .map_err(|e| (ResponseError::UnknownServerError, e.to_string()))
}

/// Applies or (with `validate_only`) checks a new full set of runtime broker settings for
/// `resource` ("" for the cluster default, or this broker's id).
pub async fn apply_broker(
    ctx: &RequestContext,
    resource: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let node = ctx.config().node_id.to_string();
    if !resource.is_empty() && resource != node {
        return Err((
            ResponseError::InvalidRequest,
            format!("this is broker {node}, not '{resource}'"),
        ));
    }
    for (k, v) in &configs {
        crate::config::validate_dynamic_broker(k, v)
            .map_err(|m| (ResponseError::InvalidConfig, m))?;
    }
    if validate_only {
        return Ok(());
    }
    ctx.broker
        .set_broker_configs(resource, configs)
        .await
        .map_err(|e| (ResponseError::UnknownServerError, e.to_string()))
}

/// The answer for a resource type Gregor cannot alter.
pub fn unsupported(resource_type: i8) -> (ResponseError, String) {
    (
        ResponseError::InvalidRequest,
        format!("resource type {resource_type} cannot be altered; use 2 (topic) or 4 (broker)"),
    )
}

/// Error code and message of one resource's outcome.
pub fn outcome(result: Result<(), (ResponseError, String)>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (0, None),
        Err((e, m)) => (e.code(), Some(StrBytes::from_string(m))),
    }
}

pub async fn handle(ctx: &RequestContext, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for res in request.resources {
        responses.push({
            let result = if res.resource_type == TOPIC || res.resource_type == BROKER {
                let mut configs = BTreeMap::new();
                let mut nulls = Vec::new();
                for c in &res.configs {
                    match &c.value {
                        Some(v) => {
                            configs.insert(c.name.to_string(), v.to_string());
                        }
                        None => nulls.push(c.name.to_string()),
                    }
                }
                if let Some(k) = nulls.first() {
                    Err((
                        ResponseError::InvalidConfig,
                        format!("topic config '{k}' has a null value"),
                    ))
                } else if res.resource_type == TOPIC {
                    apply_topic(ctx, &res.resource_name, configs, request.validate_only).await
                } else {
                    apply_broker(ctx, &res.resource_name, configs, request.validate_only).await
                }
            } else {
                Err(unsupported(res.resource_type))
            };
            let (error_code, error_message) = outcome(result);
            build!(AlterConfigsResourceResponse {
                resource_type: res.resource_type,
                resource_name: res.resource_name,
                error_code,
                error_message
            })
        });
    }
    build!(AlterConfigsResponse { responses })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;

    impl crate::api::Api for super::Handler {
        type Request = AlterConfigsRequest;
        type Response = AlterConfigsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::AlterConfigs,
            min: 0,
            max: 2,
        };

        async fn handle(
            ctx: &RequestContext,
            request: AlterConfigsRequest,
        ) -> Option<AlterConfigsResponse> {
            Some(handle(ctx, request).await)
        }

        config_change_refusals!(
            AlterConfigsRequest,
            AlterConfigsResponse,
            AlterConfigsResourceResponse
        );
    }
}
