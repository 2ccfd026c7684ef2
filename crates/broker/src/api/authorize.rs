//! Authorization of every request, with Kafka's operations per API (KIP-11, as in
//! `KafkaApis`), once `authorizer.enabled` is on: what each API needs is in its module
//! (`Api::coordinator_keys`, `Api::authorize`, `Api::complete`); this module holds what
//! they share.
//!
//! A request on one group, transactional id or the cluster is refused whole with GROUP_,
//! TRANSACTIONAL_ID_ or CLUSTER_AUTHORIZATION_FAILED. From a request on several topics, the
//! topics the caller may not touch are taken out before the handler runs (so nothing
//! happens to them), and added back to the answer with TOPIC_AUTHORIZATION_FAILED.
//! Read-only answers (Metadata, the describe and list APIs) are filtered afterwards: the
//! caller sees only what it may describe.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{Key, RequestContext};
use crate::security::acl::{op, res, CLUSTER_NAME};

/// What `Api::authorize` took out of a request, to answer for in `Api::complete`.
#[derive(Debug, Default)]
pub struct Denied {
    /// Topics refused: name, topic id and partitions asked for.
    pub topics: Vec<(TopicName, Uuid, Vec<i32>)>,
    /// Coordinator keys refused (FindCoordinator v4+) with the error for them.
    pub keys: Vec<(StrBytes, ResponseError)>,
    /// Config resources refused: type and name.
    pub resources: Vec<(i8, StrBytes)>,
    /// Groups refused (DeleteGroups).
    pub groups: Vec<GroupId>,
}

/// The caller's rights, as one request asks them: the authorizer and the metadata image
/// it was read against.
pub struct Auth<'a> {
    pub ctx: &'a RequestContext,
    pub image: std::sync::Arc<gregor_cluster::MetadataImage>,
}

impl<'a> Auth<'a> {
    /// The caller's rights, when the authorizer is on.
    pub fn enabled(ctx: &'a RequestContext) -> Option<Self> {
        ctx.security().authorizer.enabled.then(|| Auth {
            ctx,
            image: ctx.image(),
        })
    }
}

impl Auth<'_> {
    /// The error refusing a coordinator key: `operation` on a group, WRITE on a
    /// transactional id.
    pub fn key_refused(&self, key: Key<'_>, operation: i8) -> Option<ResponseError> {
        let (ok, name, error) = match key {
            Key::Group(g) => (
                self.group(operation, g),
                g,
                ResponseError::GroupAuthorizationFailed,
            ),
            Key::Txn(t) => (
                self.txn(t),
                t,
                ResponseError::TransactionalIdAuthorizationFailed,
            ),
        };
        (!ok).then(|| {
            log_denied(self.ctx, name);
            error
        })
    }
    /// CLUSTER_AUTHORIZATION_FAILED (logged) unless `operation` on the cluster is allowed.
    pub fn cluster_refused(&self, operation: i8) -> Option<ResponseError> {
        (!self.cluster(operation)).then(|| {
            log_denied(self.ctx, "cluster");
            CLUSTER_DENIED
        })
    }
    pub fn allow(&self, operation: i8, resource_type: i8, name: &str) -> bool {
        self.ctx.security().authorizer.authorize(
            &self.image,
            &self.ctx.caller,
            operation,
            resource_type,
            name,
        )
    }
    pub fn cluster(&self, operation: i8) -> bool {
        self.allow(operation, res::CLUSTER, CLUSTER_NAME)
    }
    pub fn topic(&self, operation: i8, name: &str) -> bool {
        self.allow(operation, res::TOPIC, name)
    }
    pub fn group(&self, operation: i8, name: &str) -> bool {
        self.allow(operation, res::GROUP, name)
    }
    pub fn txn(&self, name: &str) -> bool {
        self.allow(op::WRITE, res::TRANSACTIONAL_ID, name)
    }
    /// Whether `operation` on the topic is allowed; if not, notes it in `denied` (with
    /// the partitions asked for) to be answered with TOPIC_AUTHORIZATION_FAILED.
    pub fn keep(
        &self,
        denied: &mut Denied,
        operation: i8,
        name: &TopicName,
        id: Uuid,
        parts: Vec<i32>,
    ) -> bool {
        let resolved = self.topic_name_of(name, &id);
        let ok = self.topic(operation, &resolved);
        if !ok {
            log_denied(self.ctx, &resolved);
            denied.topics.push((name.clone(), id, parts));
        }
        ok
    }

    pub fn topic_name_of(&self, name: &TopicName, id: &Uuid) -> String {
        if name.0.is_empty() && !id.is_nil() {
            self.image
                .topic_by_id(id)
                .map(|t| t.name.clone())
                .unwrap_or_default()
        } else {
            name.0.to_string()
        }
    }
}

pub fn log_denied(ctx: &RequestContext, what: &str) {
    crate::metrics::error("authorization", "denied");
    tracing::info!(principal = %ctx.caller.principal, host = %ctx.caller.host, api = ?ctx.header.request_api_key, denied = what, "request not authorized");
}

pub const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;
pub const CLUSTER_DENIED: ResponseError = ResponseError::ClusterAuthorizationFailed;

/// The message of a whole request refused for want of a right on the cluster.
pub const CLUSTER_DENIED_MESSAGE: &str = "Cluster authorization failed.";

/// Whether `operation` on a config resource (a topic, or the broker) is allowed; logs a
/// refusal.
pub fn config_allowed(a: &Auth, operation: i8, resource_type: i8, name: &str) -> bool {
    let ok = match resource_type {
        2 => a.topic(operation, name),
        _ => a.cluster(operation),
    };
    if !ok {
        log_denied(a.ctx, name);
    }
    ok
}

/// The error for a config resource refused: on a topic, or on the cluster.
pub fn config_error(resource_type: i8) -> i16 {
    if resource_type == 2 {
        TOPIC_DENIED.code()
    } else {
        CLUSTER_DENIED.code()
    }
}

/// The error message a whole-request refusal carries: Kafka's for a missing cluster right,
/// none otherwise.
pub fn message_of(error: ResponseError) -> Option<StrBytes> {
    (error == CLUSTER_DENIED).then(|| super::str_bytes(CLUSTER_DENIED_MESSAGE))
}

/// Refuses the whole request with CLUSTER_AUTHORIZATION_FAILED unless `operation` on the
/// cluster is allowed: the `Err` of an `Api::authorize`, built by `error_response`.
pub fn needs_cluster<R>(
    a: &Auth<'_>,
    operation: i8,
    error_response: impl FnOnce(ResponseError) -> R,
) -> Result<(), R> {
    match a.cluster_refused(operation) {
        Some(e) => Err(error_response(e)),
        None => Ok(()),
    }
}
