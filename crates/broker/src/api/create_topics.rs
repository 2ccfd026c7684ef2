//! CreateTopics (key 19): partitions, replication factor 1 or -1, configs, validate-only.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, RequestContext};
use crate::config::{validate_topic_override, TOPIC_CONFIGS};
use crate::error::error_code;
use crate::state::validate_topic_name;

pub async fn handle(ctx: &RequestContext, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicated: HashSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    // Every topic is checked first; those that pass are created in one metadata commit.
    let checked: Vec<(CreatableTopic, Checked)> = request
        .topics
        .into_iter()
        .map(|t| {
            let plan = check(ctx, &t, &duplicated);
            (t, plan)
        })
        .collect();
    let to_create: Vec<crate::state::NewTopic> = checked
        .iter()
        .filter_map(|(t, plan)| {
            let (assignment, configs) = plan.as_ref().ok()?;
            Some((t.name.0.to_string(), assignment.clone(), configs.clone()))
        })
        .collect();
    let mut created = if request.validate_only || to_create.is_empty() {
        Vec::new()
    } else {
        match ctx.broker.create_topics_assigned(to_create.clone()).await {
            Some(results) => results,
            None => {
                let mut results = Vec::with_capacity(to_create.len());
                for (name, assignment, configs) in to_create {
                    results.push(
                        ctx.broker
                            .create_topic_assigned(&name, assignment, configs)
                            .await,
                    );
                }
                results
            }
        }
    }
    .into_iter();
    let topics = checked
        .into_iter()
        .map(|(t, plan)| {
            let outcome = match plan {
                Err(e) => Err(e),
                Ok(plan) if request.validate_only => Ok((plan, None)),
                Ok(plan) => Ok((plan, created.next())),
            };
            answer(ctx, t, outcome)
        })
        .collect();
    build!(CreateTopicsResponse { topics })
}

/// A topic of the request checked: its plan, or why it is refused.
type Checked = Result<Plan, (ResponseError, String)>;

/// Checks one topic of the request: its replica assignment and config overrides, or why
/// it is refused.
fn check(ctx: &RequestContext, t: &CreatableTopic, duplicated: &HashSet<String>) -> Checked {
    let name = t.name.0.as_str();
    if duplicated.contains(name) {
        return Err((
            ResponseError::InvalidRequest,
            format!("topic '{name}' appears more than once in the request"),
        ));
    }
    plan(ctx, t)
}

/// One topic's answer: refused (why), or its plan and, unless only validated, how its
/// creation went.
type Outcome = Result<
    (
        Plan,
        Option<Result<gregor_cluster::TopicMeta, crate::error::BrokerError>>,
    ),
    (ResponseError, String),
>;

/// The answer for one topic of the request.
fn answer(ctx: &RequestContext, t: CreatableTopic, outcome: Outcome) -> CreatableTopicResult {
    let mut r = build!(CreatableTopicResult {
        name: t.name.clone(),
        num_partitions: -1,
        replication_factor: -1
    });
    let (assignment, configs) = match outcome {
        Err((code, message)) => {
            fail(&mut r, ctx.version, code, message);
            return r;
        }
        Ok((plan, created)) => {
            match created {
                Some(Ok(topic)) if ctx.version >= 7 => r.topic_id = topic.topic_id,
                Some(Ok(_)) | None => {}
                Some(Err(e)) => {
                    r.error_code = error_code(&e);
                    r.error_message = Some(StrBytes::from_string(e.to_string()));
                    return r;
                }
            }
            plan
        }
    };
    if ctx.version < 5 {
        return r;
    }
    r.num_partitions = assignment.len() as i32;
    r.replication_factor = assignment.first().map_or(1, |a| a.len() as i16);
    r.configs = Some(
        TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let (value, source) = ctx.config().topic_value(def, &configs);
                build!(CreatableTopicConfigs {
                    name: str_bytes(def.name),
                    value: Some(StrBytes::from_string(value)),
                    config_source: source as i8
                })
            })
            .collect(),
    );
    r
}

fn fail(r: &mut CreatableTopicResult, version: i16, error: ResponseError, message: String) {
    r.error_code = error.code();
    if version >= 1 {
        r.error_message = Some(StrBytes::from_string(message));
    }
}

/// A topic to create: each partition's replicas, and the config overrides.
type Plan = (Vec<Vec<i32>>, BTreeMap<String, String>);

/// Checks one topic of the request; returns its replica assignment and config overrides.
fn plan(ctx: &RequestContext, t: &CreatableTopic) -> Result<Plan, (ResponseError, String)> {
    let name = t.name.0.as_str();
    validate_topic_name(name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
    if ctx.image().topic(name).is_some() {
        return Err((
            ResponseError::TopicAlreadyExists,
            format!("topic '{name}' already exists"),
        ));
    }
    let live: Vec<i32> = ctx
        .broker
        .live_brokers()
        .iter()
        .map(|b| b.node_id)
        .collect();
    let assignment = if !t.assignments.is_empty() {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err((ResponseError::InvalidRequest, "give either replica assignments or a partition count and replication factor, not both".into()));
        }
        let mut indexes: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
        indexes.sort_unstable();
        if indexes.iter().enumerate().any(|(i, &p)| p != i as i32) {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                "partition indexes must be 0..n without gaps".into(),
            ));
        }
        let mut sorted: Vec<_> = t.assignments.iter().collect();
        sorted.sort_by_key(|a| a.partition_index);
        let rf = sorted[0].broker_ids.len();
        let mut out = Vec::with_capacity(sorted.len());
        for a in sorted {
            let ids: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            if ids.is_empty() || ids.len() != rf || unique.len() != ids.len() {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    format!("partition {} is assigned to brokers {ids:?}; every partition needs the same number of distinct brokers", a.partition_index),
                ));
            }
            if let Some(b) = ids.iter().find(|b| !live.contains(b)) {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "partition {} is assigned to broker {b}, which is not a live broker (live: {live:?})",
                        a.partition_index
                    ),
                ));
            }
            out.push(ids);
        }
        out
    } else {
        let partitions = match t.num_partitions {
            -1 => ctx.config().settings().num_partitions as i32,
            n if n >= 1 => n,
            n => {
                return Err((
                    ResponseError::InvalidPartitions,
                    format!("number of partitions must be at least 1, was {n}"),
                ))
            }
        };
        ctx.broker
            .assign_replicas(name, partitions, i32::from(t.replication_factor), 0)
            .map_err(|e| (ResponseError::InvalidReplicationFactor, e.to_string()))?
    };
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let key = c.name.as_str();
        let Some(value) = &c.value else {
            return Err((
                ResponseError::InvalidConfig,
                format!("topic config '{key}' has a null value"),
            ));
        };
        validate_topic_override(key, value).map_err(|m| (ResponseError::InvalidConfig, m))?;
        configs.insert(key.to_string(), value.to_string());
    }
    Ok((assignment, configs))
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
        type Request = CreateTopicsRequest;
        type Response = CreateTopicsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::CreateTopics,
            min: 2,
            max: 7,
        };

        async fn handle(
            ctx: &RequestContext,
            request: CreateTopicsRequest,
        ) -> Option<CreateTopicsResponse> {
            Some(handle(ctx, request).await)
        }

        fn authorize(
            a: &Auth<'_>,
            request: &mut CreateTopicsRequest,
            denied: &mut Denied,
        ) -> Result<(), CreateTopicsResponse> {
            let cluster = a.cluster(op::CREATE);
            request.topics.retain(|t| {
                cluster || a.keep(denied, op::CREATE, &t.name, uuid::Uuid::nil(), Vec::new())
            });
            Ok(())
        }

        fn complete(_a: &Auth<'_>, denied: Denied, response: &mut CreateTopicsResponse) {
            use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
            for (name, _, _) in denied.topics {
                response.topics.push(build!(CreatableTopicResult {
                    name,
                    error_code: crate::api::authorize::TOPIC_DENIED.code(),
                    error_message: Some(crate::api::str_bytes("Topic authorization failed.")),
                    num_partitions: -1,
                    replication_factor: -1
                }));
            }
        }
    }
}
