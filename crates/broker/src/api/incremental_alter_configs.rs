//! IncrementalAlterConfigs (key 44): set, delete, append to or subtract from a topic's
//! dynamic configs, validated (INVALID_CONFIG naming the setting and the reason), stored in
//! the metadata log and applied at once.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::alter_configs::{apply_broker, apply_topic, outcome, unsupported, BROKER, TOPIC};
use super::RequestContext;
use crate::config::{topic_def, ConfigType, TOPIC_CONFIGS};

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub async fn handle(
    ctx: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for res in request.resources {
        responses.push({
            let broker = res.resource_type == BROKER;
            let result = if res.resource_type != TOPIC && !broker {
                Err(unsupported(res.resource_type))
            } else {
                let current = if broker {
                    ctx.image().broker_configs(&res.resource_name)
                } else {
                    ctx.image().topic(&res.resource_name).map(|t| t.configs.clone()).unwrap_or_default()
                };
                // Broker settings are the broker-level names of topic settings.
                let def_of = |key: &str| if broker { TOPIC_CONFIGS.iter().find(|d| d.broker_synonym == Some(key)) } else { topic_def(key) };
                let mut configs = current;
                let mut error = None;
                for c in &res.configs {
                    let key = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string());
                    let list = def_of(&key).is_some_and(|d| d.kind == ConfigType::List);
                    match (c.config_operation, value) {
                        (SET, Some(v)) => {
                            configs.insert(key, v);
                        }
                        (DELETE, _) => {
                            configs.remove(&key);
                        }
                        (APPEND | SUBTRACT, Some(v)) if list => {
                            let default = def_of(&key).map_or("", |d| d.default);
                            let mut items: Vec<String> = configs.get(&key).map_or(default, String::as_str).split(',').filter(|s| !s.is_empty()).map(String::from).collect();
                            for item in v.split(',').filter(|s| !s.is_empty()) {
                                if c.config_operation == APPEND && !items.iter().any(|i| i == item) {
                                    items.push(item.to_string());
                                } else if c.config_operation == SUBTRACT {
                                    items.retain(|i| i != item);
                                }
                            }
                            configs.insert(key, items.join(","));
                        }
                        (APPEND | SUBTRACT, _) => error = Some((ResponseError::InvalidConfig, format!("'{key}' is not a list setting; APPEND and SUBTRACT apply to lists only"))),
                        (SET, None) => error = Some((ResponseError::InvalidConfig, format!("topic config '{key}' has a null value"))),
                        (op, _) => error = Some((ResponseError::InvalidRequest, format!("unknown config operation {op} for '{key}'"))),
                    }
                }
                match error {
                    Some(e) => Err(e),
                    None if broker => apply_broker(ctx, &res.resource_name, configs, request.validate_only).await,
                    None => apply_topic(ctx, &res.resource_name, configs, request.validate_only).await,
                }
            };
            let (error_code, error_message) = outcome(result);
            build!(AlterConfigsResourceResponse { resource_type: res.resource_type, resource_name: res.resource_name, error_code, error_message })
        });
    }
    build!(IncrementalAlterConfigsResponse { responses })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;

    impl crate::api::Api for super::Handler {
        type Request = IncrementalAlterConfigsRequest;
        type Response = IncrementalAlterConfigsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::IncrementalAlterConfigs,
            min: 0,
            max: 1,
        };

        async fn handle(
            ctx: &RequestContext,
            request: IncrementalAlterConfigsRequest,
        ) -> Option<IncrementalAlterConfigsResponse> {
            Some(handle(ctx, request).await)
        }

        config_change_refusals!(
            IncrementalAlterConfigsRequest,
            IncrementalAlterConfigsResponse,
            AlterConfigsResourceResponse
        );
    }
}
