//! Metadata (key 3): brokers, topics and partitions; auto-creates requested topics.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse};
use uuid::Uuid;

use gregor_cluster::TopicMeta;

use super::{str_bytes, topic_name, RequestContext};
use crate::state::{is_internal_topic, validate_topic_name};

pub fn handle(ctx: &RequestContext, request: MetadataRequest) -> MetadataResponse {
    let broker = &ctx.broker;
    // v0 has no null: an empty list means every topic there.
    let wanted = match request.topics {
        Some(t) if !(t.is_empty() && ctx.version == 0) => Some(t),
        _ => None,
    };
    let topics = match wanted {
        None => broker
            .image()
            .topics()
            .map(|t| describe_topic(t, ctx.version))
            .collect(),
        Some(requested) => requested
            .into_iter()
            .map(|t| {
                let by_id = t.topic_id != Uuid::nil();
                match (t.name, by_id) {
                    (_, true) => match broker.image().topic_by_id(&t.topic_id) {
                        Some(topic) => describe_topic(topic, ctx.version),
                        None => error_topic(None, t.topic_id, ResponseError::UnknownTopicId.code()),
                    },
                    (Some(name), false) => {
                        lookup_or_create(ctx, &name.0, request.allow_auto_topic_creation)
                    }
                    (None, false) => {
                        error_topic(None, Uuid::nil(), ResponseError::InvalidRequest.code())
                    }
                }
            })
            .collect(),
    };
    build!(MetadataResponse {
        brokers: broker
            .live_brokers()
            .into_iter()
            .map(|b| {
                let (host, port) = b.endpoint(&ctx.listener);
                build!(MetadataResponseBroker {
                    node_id: BrokerId(b.node_id),
                    host: str_bytes(host),
                    port: port,
                    rack: b.rack.as_deref().map(str_bytes)
                })
            })
            .collect(),
        cluster_id: (ctx.version >= 2).then(|| str_bytes(&broker.cluster_id())),
        controller_id: BrokerId(if ctx.version >= 1 {
            broker.controller_id()
        } else {
            -1
        }),
        topics,
        cluster_authorized_operations: i32::MIN
    })
}

fn lookup_or_create(
    ctx: &RequestContext,
    name: &str,
    allow_auto_create: bool,
) -> MetadataResponseTopic {
    if validate_topic_name(name).is_err() {
        return error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::InvalidTopicException.code(),
        );
    }
    match ctx.broker.get_or_auto_create(name, allow_auto_create) {
        Ok(Some(topic)) => describe_topic(&topic, ctx.version),
        Ok(None) => error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition.code(),
        ),
        Err(e) => {
            tracing::error!(topic = name, error = %e, "auto-creating a topic failed");
            error_topic(Some(name), Uuid::nil(), crate::error::error_code(&e))
        }
    }
}

fn error_topic(name: Option<&str>, topic_id: Uuid, error_code: i16) -> MetadataResponseTopic {
    build!(MetadataResponseTopic {
        error_code,
        name: name.map(topic_name),
        topic_id,
        topic_authorized_operations: i32::MIN
    })
}

pub fn describe_topic(topic: &TopicMeta, version: i16) -> MetadataResponseTopic {
    build!(MetadataResponseTopic {
        error_code: 0,
        name: Some(topic_name(&topic.name)),
        topic_id: if version >= 10 {
            topic.topic_id
        } else {
            Uuid::nil()
        },
        is_internal: is_internal_topic(&topic.name),
        partitions: topic
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| build!(MetadataResponsePartition {
                error_code: if p.leader < 0 {
                    kafka_protocol::error::ResponseError::LeaderNotAvailable.code()
                } else {
                    0
                },
                partition_index: i as i32,
                leader_id: BrokerId(p.leader),
                leader_epoch: if version >= 7 { p.leader_epoch } else { -1 },
                replica_nodes: p.replicas.iter().map(|&r| BrokerId(r)).collect(),
                isr_nodes: p.isr.iter().map(|&r| BrokerId(r)).collect(),
                offline_replicas: Vec::new()
            }))
            .collect(),
        topic_authorized_operations: i32::MIN
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
        type Request = MetadataRequest;
        type Response = MetadataResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::Metadata,
            min: 0,
            max: 12,
        };

        async fn handle(
            ctx: &RequestContext,
            request: MetadataRequest,
        ) -> Option<MetadataResponse> {
            Some(handle(ctx, request))
        }

        fn authorize(
            a: &Auth<'_>,
            request: &mut MetadataRequest,
            denied: &mut Denied,
        ) -> Result<(), MetadataResponse> {
            if let Some(topics) = &mut request.topics {
                topics.retain(|t| {
                    let name = a.topic_name_of(&t.name.clone().unwrap_or_default(), &t.topic_id);
                    let ok = a.topic(op::DESCRIBE, &name);
                    if !ok {
                        denied.topics.push((
                            t.name.clone().unwrap_or_default(),
                            t.topic_id,
                            Vec::new(),
                        ));
                    }
                    ok
                });
                // Auto-creation needs CREATE on the cluster or on the topic.
                if request.allow_auto_topic_creation && !a.cluster(op::CREATE) {
                    let all_creatable = topics.iter().all(|t| {
                        t.name.as_ref().is_none_or(|n| {
                            a.topic(op::CREATE, &n.0) || a.image.topic(&n.0).is_some()
                        })
                    });
                    request.allow_auto_topic_creation = all_creatable;
                }
            }
            Ok(())
        }

        fn complete(a: &Auth<'_>, denied: Denied, response: &mut MetadataResponse) {
            use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
            response.topics.retain(|topic| {
                topic
                    .name
                    .as_ref()
                    .is_none_or(|n| a.topic(op::DESCRIBE, &n.0))
            });
            for (name, topic_id, _) in denied.topics {
                response.topics.push(build!(MetadataResponseTopic {
                    error_code: crate::api::authorize::TOPIC_DENIED.code(),
                    name: Some(name),
                    topic_id
                }));
            }
        }
    }
}
