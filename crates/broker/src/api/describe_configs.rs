//! DescribeConfigs (key 32): topic and broker settings with their sources, synonyms and
//! documentation.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, RequestContext};
use crate::config::{ConfigDef, ConfigSource, TOPIC_CONFIGS};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

pub fn handle(ctx: &RequestContext, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let broker = &ctx.broker;
    let results = request
        .resources
        .into_iter()
        .map(|res| {
            let mut out = build!(DescribeConfigsResult {
                resource_type: res.resource_type,
                resource_name: res.resource_name.clone()
            });
            let wanted = |name: &str| {
                res.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            let entry = |name: &str,
                         def: &ConfigDef,
                         value: String,
                         source: ConfigSource,
                         synonyms: Vec<DescribeConfigsSynonym>| {
                build!(DescribeConfigsResourceResult {
                    name: str_bytes(name),
                    value: Some(StrBytes::from_string(value)),
                    read_only: false,
                    config_source: source as i8,
                    is_sensitive: false,
                    synonyms: if request.include_synonyms {
                        synonyms
                    } else {
                        Vec::new()
                    },
                    config_type: if ctx.version >= 3 { def.kind as i8 } else { 0 },
                    documentation: (ctx.version >= 3 && request.include_documentation)
                        .then(|| str_bytes(def.doc))
                })
            };
            match res.resource_type {
                TOPIC => {
                    let Some(topic) = broker.image().topic(&res.resource_name).cloned() else {
                        out.error_code = ResponseError::UnknownTopicOrPartition.code();
                        out.error_message = Some(StrBytes::from_string(format!(
                            "topic '{}' does not exist",
                            res.resource_name.as_str()
                        )));
                        return out;
                    };
                    for def in TOPIC_CONFIGS.iter().filter(|d| wanted(d.name)) {
                        let (value, source) = broker.config.topic_value(def, &topic.configs);
                        let synonyms = topic_synonyms(&broker.config, def, &topic.configs);
                        out.configs
                            .push(entry(def.name, def, value, source, synonyms));
                    }
                }
                BROKER => {
                    let name = res.resource_name.as_str();
                    if !name.is_empty() && name != broker.config.node_id.to_string() {
                        out.error_code = ResponseError::InvalidRequest.code();
                        out.error_message = Some(StrBytes::from_string(format!(
                            "this is broker {}, not '{name}'",
                            broker.config.node_id
                        )));
                        return out;
                    }
                    for (name, def, value, source) in broker
                        .config
                        .describe()
                        .into_iter()
                        .filter(|(n, ..)| wanted(n))
                    {
                        let mut synonyms = Vec::new();
                        if source == ConfigSource::StaticBroker {
                            synonyms.push(synonym(name, &value, source));
                        }
                        synonyms.push(synonym(name, def.default, ConfigSource::Default));
                        out.configs.push(entry(name, def, value, source, synonyms));
                    }
                }
                other => {
                    out.error_code = ResponseError::InvalidRequest.code();
                    out.error_message = Some(StrBytes::from_string(format!(
                        "resource type {other} is not supported; use 2 (topic) or 4 (broker)"
                    )));
                }
            }
            out
        })
        .collect();
    build!(DescribeConfigsResponse { results })
}

/// Where a topic config's value may come from, in Kafka's order: the topic's override,
/// the broker's runtime value and its file for the broker synonym, the default.
fn topic_synonyms(
    config: &crate::config::BrokerConfig,
    def: &ConfigDef,
    overrides: &std::collections::BTreeMap<String, String>,
) -> Vec<DescribeConfigsSynonym> {
    let mut synonyms = Vec::new();
    if let Some(v) = overrides.get(def.name) {
        synonyms.push(synonym(def.name, v, ConfigSource::DynamicTopic));
    }
    if let Some(syn) = def.broker_synonym {
        if let Some((v, source)) = config.dynamic_value(syn) {
            synonyms.push(synonym(syn, &v, source));
        }
        if config.is_set(syn) {
            synonyms.push(synonym(syn, config.get(syn), ConfigSource::StaticBroker));
        }
    }
    synonyms.push(synonym(
        def.broker_synonym.unwrap_or(def.name),
        def.default,
        ConfigSource::Default,
    ));
    synonyms
}

fn synonym(name: &str, value: &str, source: ConfigSource) -> DescribeConfigsSynonym {
    build!(DescribeConfigsSynonym {
        name: str_bytes(name),
        value: Some(str_bytes(value)),
        source: source as i8
    })
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
        type Request = DescribeConfigsRequest;
        type Response = DescribeConfigsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::DescribeConfigs,
            min: 1,
            max: 4,
        };

        async fn handle(
            ctx: &RequestContext,
            request: DescribeConfigsRequest,
        ) -> Option<DescribeConfigsResponse> {
            Some(handle(ctx, request))
        }

        fn complete(a: &Auth<'_>, _denied: Denied, response: &mut DescribeConfigsResponse) {
            for x in &mut response.results {
                let ok = match x.resource_type {
                    2 => a.topic(op::DESCRIBE_CONFIGS, &x.resource_name),
                    _ => a.cluster(op::DESCRIBE_CONFIGS),
                };
                if !ok {
                    x.error_code = crate::api::authorize::config_error(x.resource_type);
                    x.error_message = None;
                    x.configs.clear();
                }
            }
        }
    }
}
