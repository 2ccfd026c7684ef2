//! Authorization of every request, with Kafka's operations per API (KIP-11, as in
//! `KafkaApis`), once `authorizer.enabled` is on.
//!
//! [`check`] runs before the handler. A request on one group, transactional id or the
//! cluster is refused whole with GROUP_, TRANSACTIONAL_ID_ or CLUSTER_AUTHORIZATION_FAILED.
//! From a request on several topics, the topics the caller may not touch are taken out
//! before the handler runs (so nothing happens to them), and [`complete`] adds them back
//! to the answer with TOPIC_AUTHORIZATION_FAILED. Read-only answers (Metadata, the
//! describe and list APIs) are filtered afterwards: the caller sees only what it may
//! describe.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{coordinator_check, str_bytes, RequestContext};
use crate::security::acl::{op, res, CLUSTER_NAME};

/// What [`check`] took out of a request, to answer for in [`complete`].
#[derive(Debug, Default)]
pub struct Denied {
    /// Topics refused: name, topic id and partitions asked for.
    topics: Vec<(TopicName, Uuid, Vec<i32>)>,
    /// Coordinator keys refused (FindCoordinator v4+) with the error for them.
    keys: Vec<(StrBytes, ResponseError)>,
    /// Config resources refused: type and name.
    resources: Vec<(i8, StrBytes)>,
    /// Groups refused (DeleteGroups).
    groups: Vec<GroupId>,
}

struct Auth<'a> {
    ctx: &'a RequestContext,
    image: std::sync::Arc<gregor_cluster::MetadataImage>,
}

impl Auth<'_> {
    fn allow(&self, operation: i8, resource_type: i8, name: &str) -> bool {
        self.ctx.broker.security.authorizer.authorize(
            &self.image,
            &self.ctx.caller,
            operation,
            resource_type,
            name,
        )
    }
    fn cluster(&self, operation: i8) -> bool {
        self.allow(operation, res::CLUSTER, CLUSTER_NAME)
    }
    fn topic(&self, operation: i8, name: &str) -> bool {
        self.allow(operation, res::TOPIC, name)
    }
    fn group(&self, operation: i8, name: &str) -> bool {
        self.allow(operation, res::GROUP, name)
    }
    fn txn(&self, name: &str) -> bool {
        self.allow(op::WRITE, res::TRANSACTIONAL_ID, name)
    }
    /// Whether `operation` on the topic is allowed; if not, notes it in `denied` (with
    /// the partitions asked for) to be answered with TOPIC_AUTHORIZATION_FAILED.
    fn keep(
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

    fn topic_name_of(&self, name: &TopicName, id: &Uuid) -> String {
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

fn log_denied(ctx: &RequestContext, what: &str) {
    crate::metrics::error("authorization", "denied");
    tracing::info!(principal = %ctx.caller.principal, host = %ctx.caller.host, api = ?ctx.header.request_api_key, denied = what, "request not authorized");
}

const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;
const CLUSTER_DENIED: ResponseError = ResponseError::ClusterAuthorizationFailed;

/// Authorizes `request`: `Err` is the whole answer for a refused request; `Ok` is the
/// request with refused topics taken out, and what was taken.
#[allow(clippy::result_large_err)] // once per request; boxing buys nothing here
pub fn check(
    ctx: &RequestContext,
    request: RequestKind,
) -> Result<(RequestKind, Denied), ResponseKind> {
    let mut denied = Denied::default();
    if !ctx.broker.security.authorizer.enabled {
        return Ok((request, denied));
    }
    let a = Auth {
        ctx,
        image: ctx.broker.image(),
    };
    let cluster_refused = |a: &Auth, operation: i8| -> Option<ResponseError> {
        (!a.cluster(operation)).then(|| {
            log_denied(ctx, "cluster");
            CLUSTER_DENIED
        })
    };
    // Group and transaction requests on one resource, answered whole.
    let group_op = match &request {
        RequestKind::OffsetDelete(_) => op::DELETE,
        RequestKind::OffsetFetch(_) => op::DESCRIBE,
        _ => op::READ,
    };
    let refused = coordinator_check::error_response(
        ctx,
        &request,
        |g| {
            (!a.group(group_op, g)).then(|| {
                log_denied(ctx, g);
                ResponseError::GroupAuthorizationFailed
            })
        },
        |t| {
            (!a.txn(t)).then(|| {
                log_denied(ctx, t);
                ResponseError::TransactionalIdAuthorizationFailed
            })
        },
    );
    // The builder covers AddOffsetsToTxn's transactional id; its group is checked below.
    if let Some(r) = refused {
        return Err(r);
    }
    let mut request = request;
    match &mut request {
        RequestKind::Produce(r) => {
            if let Some(t) = r.transactional_id.as_ref().filter(|t| !a.txn(&t.0)) {
                log_denied(ctx, &t.0);
                let e = ResponseError::TransactionalIdAuthorizationFailed.code();
                let responses = r
                    .topic_data
                    .iter()
                    .map(|t| {
                        build!(produce_response::TopicProduceResponse {
                            name: t.name.clone(),
                            topic_id: t.topic_id,
                            partition_responses: t
                                .partition_data
                                .iter()
                                .map(|p| build!(produce_response::PartitionProduceResponse {
                                    index: p.index,
                                    error_code: e,
                                    base_offset: -1
                                }))
                                .collect()
                        })
                    })
                    .collect();
                return Err(ResponseKind::Produce(build!(ProduceResponse { responses })));
            }
            r.topic_data.retain(|t| {
                let parts = t.partition_data.iter().map(|p| p.index).collect();
                a.keep(&mut denied, op::WRITE, &t.name, t.topic_id, parts)
            });
        }
        RequestKind::Fetch(r) => {
            let replica = if ctx.version >= 15 {
                r.replica_state.replica_id.0
            } else {
                r.replica_id.0
            };
            if replica >= 0 {
                if let Some(e) = cluster_refused(&a, op::CLUSTER_ACTION) {
                    return Err(ResponseKind::Fetch(build!(FetchResponse {
                        error_code: e.code()
                    })));
                }
            } else {
                r.topics.retain(|t| {
                    let parts = t.partitions.iter().map(|p| p.partition).collect();
                    a.keep(&mut denied, op::READ, &t.topic, t.topic_id, parts)
                });
            }
        }
        RequestKind::ListOffsets(r) => r.topics.retain(|t| {
            let parts = t.partitions.iter().map(|p| p.partition_index).collect();
            a.keep(&mut denied, op::DESCRIBE, &t.name, Uuid::nil(), parts)
        }),
        RequestKind::Metadata(r) => {
            if let Some(topics) = &mut r.topics {
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
                if r.allow_auto_topic_creation && !a.cluster(op::CREATE) {
                    let all_creatable = topics.iter().all(|t| {
                        t.name.as_ref().is_none_or(|n| {
                            a.topic(op::CREATE, &n.0) || a.image.topic(&n.0).is_some()
                        })
                    });
                    r.allow_auto_topic_creation = all_creatable;
                }
            }
        }
        RequestKind::CreateTopics(r) => {
            let cluster = a.cluster(op::CREATE);
            r.topics.retain(|t| {
                cluster || a.keep(&mut denied, op::CREATE, &t.name, Uuid::nil(), Vec::new())
            });
        }
        RequestKind::DeleteTopics(r) => {
            r.topic_names
                .retain(|n| a.keep(&mut denied, op::DELETE, n, Uuid::nil(), Vec::new()));
            r.topics.retain(|t| {
                let name = t.name.clone().unwrap_or_default();
                a.keep(&mut denied, op::DELETE, &name, t.topic_id, Vec::new())
            });
        }
        RequestKind::CreatePartitions(r) => r
            .topics
            .retain(|t| a.keep(&mut denied, op::ALTER, &t.name, Uuid::nil(), Vec::new())),
        RequestKind::DeleteRecords(r) => r.topics.retain(|t| {
            let parts = t.partitions.iter().map(|p| p.partition_index).collect();
            a.keep(&mut denied, op::DELETE, &t.name, Uuid::nil(), parts)
        }),
        RequestKind::AlterConfigs(r) => r.resources.retain(|x| {
            let ok = config_allowed(&a, op::ALTER_CONFIGS, x.resource_type, &x.resource_name);
            if !ok {
                denied
                    .resources
                    .push((x.resource_type, x.resource_name.clone()));
            }
            ok
        }),
        RequestKind::IncrementalAlterConfigs(r) => r.resources.retain(|x| {
            let ok = config_allowed(&a, op::ALTER_CONFIGS, x.resource_type, &x.resource_name);
            if !ok {
                denied
                    .resources
                    .push((x.resource_type, x.resource_name.clone()));
            }
            ok
        }),
        RequestKind::InitProducerId(r)
            if r.transactional_id.is_none()
                && !a.cluster(op::IDEMPOTENT_WRITE)
                && !ctx.broker.security.authorizer.authorize_any(
                    &a.image,
                    &ctx.caller,
                    op::WRITE,
                    res::TOPIC,
                ) =>
        {
            log_denied(ctx, "idempotent write");
            return Err(ResponseKind::InitProducerId(build!(
                InitProducerIdResponse {
                    error_code: CLUSTER_DENIED.code(),
                    producer_id: ProducerId(-1),
                    producer_epoch: -1
                }
            )));
        }
        RequestKind::FindCoordinator(r) => {
            let allowed = |key: &str| match r.key_type {
                1 => a.allow(op::DESCRIBE, res::TRANSACTIONAL_ID, key),
                _ => a.group(op::DESCRIBE, key),
            };
            let error = if r.key_type == 1 {
                ResponseError::TransactionalIdAuthorizationFailed
            } else {
                ResponseError::GroupAuthorizationFailed
            };
            if ctx.version < 4 {
                if !allowed(&r.key) {
                    log_denied(ctx, &r.key);
                    return Err(ResponseKind::FindCoordinator(build!(
                        FindCoordinatorResponse {
                            error_code: error.code(),
                            node_id: BrokerId(-1),
                            port: -1
                        }
                    )));
                }
            } else {
                r.coordinator_keys.retain(|k| {
                    let ok = allowed(k);
                    if !ok {
                        log_denied(ctx, k);
                        denied.keys.push((k.clone(), error));
                    }
                    ok
                });
            }
        }
        RequestKind::OffsetCommit(r) => r.topics.retain(|t| {
            let parts = t.partitions.iter().map(|p| p.partition_index).collect();
            a.keep(&mut denied, op::READ, &t.name, Uuid::nil(), parts)
        }),
        // Its group (READ) was checked with the other group requests above.
        RequestKind::TxnOffsetCommit(r) => r.topics.retain(|t| {
            let parts = t.partitions.iter().map(|p| p.partition_index).collect();
            a.keep(&mut denied, op::READ, &t.name, Uuid::nil(), parts)
        }),
        RequestKind::AddOffsetsToTxn(r) if !a.group(op::READ, &r.group_id.0) => {
            log_denied(ctx, &r.group_id.0);
            return Err(ResponseKind::AddOffsetsToTxn(build!(
                AddOffsetsToTxnResponse {
                    error_code: ResponseError::GroupAuthorizationFailed.code()
                }
            )));
        }
        RequestKind::AddPartitionsToTxn(r) if ctx.version <= 3 => {
            let refused: Vec<&TopicName> = r
                .v3_and_below_topics
                .iter()
                .map(|t| &t.name)
                .filter(|n| !a.topic(op::WRITE, &n.0))
                .collect();
            if !refused.is_empty() {
                log_denied(ctx, &refused[0].0);
                return Err(ResponseKind::AddPartitionsToTxn(
                    super::add_partitions_to_txn::refused(r, |name| {
                        if refused.contains(&name) {
                            TOPIC_DENIED
                        } else {
                            ResponseError::OperationNotAttempted
                        }
                    }),
                ));
            }
        }
        RequestKind::AddPartitionsToTxn(_) | RequestKind::WriteTxnMarkers(_) => {
            if let Some(e) = cluster_refused(&a, op::CLUSTER_ACTION) {
                return Err(whole_error(&request, e));
            }
        }
        RequestKind::OffsetForLeaderEpoch(r) if r.replica_id.0 >= 0 => {
            if let Some(e) = cluster_refused(&a, op::CLUSTER_ACTION) {
                return Err(whole_error(&request, e));
            }
        }
        RequestKind::DeleteGroups(r) => r.groups_names.retain(|g| {
            let ok = a.group(op::DELETE, &g.0);
            if !ok {
                log_denied(ctx, &g.0);
                denied.groups.push(g.clone());
            }
            ok
        }),
        RequestKind::DescribeCluster(_)
        | RequestKind::ListPartitionReassignments(_)
        | RequestKind::DescribeAcls(_)
        | RequestKind::DescribeUserScramCredentials(_) => {
            if let Some(e) = cluster_refused(&a, op::DESCRIBE) {
                return Err(whole_error(&request, e));
            }
        }
        RequestKind::AlterPartitionReassignments(_)
        | RequestKind::CreateAcls(_)
        | RequestKind::DeleteAcls(_)
        | RequestKind::AlterUserScramCredentials(_) => {
            if let Some(e) = cluster_refused(&a, op::ALTER) {
                return Err(whole_error(&request, e));
            }
        }
        _ => {}
    }
    Ok((request, denied))
}

fn config_allowed(a: &Auth, operation: i8, resource_type: i8, name: &str) -> bool {
    let ok = match resource_type {
        2 => a.topic(operation, name),
        _ => a.cluster(operation),
    };
    if !ok {
        log_denied(a.ctx, name);
    }
    ok
}

/// The answer that refuses a whole cluster-level request with `e`.
fn whole_error(request: &RequestKind, e: ResponseError) -> ResponseKind {
    let code = e.code();
    let msg = Some(str_bytes("Cluster authorization failed."));
    match request {
        RequestKind::DescribeCluster(_) => {
            ResponseKind::DescribeCluster(build!(DescribeClusterResponse {
                error_code: code,
                error_message: msg
            }))
        }
        RequestKind::ListPartitionReassignments(_) => {
            ResponseKind::ListPartitionReassignments(build!(ListPartitionReassignmentsResponse {
                error_code: code,
                error_message: msg
            }))
        }
        RequestKind::AlterPartitionReassignments(_) => {
            ResponseKind::AlterPartitionReassignments(build!(AlterPartitionReassignmentsResponse {
                error_code: code,
                error_message: msg
            }))
        }
        RequestKind::DescribeAcls(_) => ResponseKind::DescribeAcls(build!(DescribeAclsResponse {
            error_code: code,
            error_message: msg
        })),
        RequestKind::CreateAcls(r) => ResponseKind::CreateAcls(build!(CreateAclsResponse {
            results: r
                .creations
                .iter()
                .map(|_| build!(create_acls_response::AclCreationResult {
                    error_code: code,
                    error_message: msg.clone()
                }))
                .collect()
        })),
        RequestKind::DeleteAcls(r) => ResponseKind::DeleteAcls(build!(DeleteAclsResponse {
            filter_results: r
                .filters
                .iter()
                .map(|_| build!(delete_acls_response::DeleteAclsFilterResult {
                    error_code: code,
                    error_message: msg.clone()
                }))
                .collect()
        })),
        RequestKind::DescribeUserScramCredentials(_) => ResponseKind::DescribeUserScramCredentials(
            build!(DescribeUserScramCredentialsResponse {
                error_code: code,
                error_message: msg
            }),
        ),
        RequestKind::AlterUserScramCredentials(r) => {
            let mut users: Vec<StrBytes> = r.deletions.iter().map(|d| d.name.clone()).collect();
            users.extend(r.upsertions.iter().map(|u| u.name.clone()));
            users.dedup();
            ResponseKind::AlterUserScramCredentials(build!(AlterUserScramCredentialsResponse {
                results: users
                    .into_iter()
                    .map(|user| build!(
                        alter_user_scram_credentials_response::AlterUserScramCredentialsResult {
                            user,
                            error_code: code,
                            error_message: msg.clone()
                        }
                    ))
                    .collect()
            }))
        }
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(build!(WriteTxnMarkersResponse {
                markers: r
                    .markers
                    .iter()
                    .map(
                        |m| build!(write_txn_markers_response::WritableTxnMarkerResult {
                            producer_id: m.producer_id,
                            topics: m
                                .topics
                                .iter()
                                .map(|t| build!(
                                    write_txn_markers_response::WritableTxnMarkerTopicResult {
                                        name: t.name.clone(),
                                        partitions: t
                                            .partition_indexes
                                            .iter()
                                            .map(|&p| build!(
                                    write_txn_markers_response::WritableTxnMarkerPartitionResult {
                                        partition_index: p,
                                        error_code: code
                                    }
                                ))
                                            .collect()
                                    }
                                ))
                                .collect()
                        })
                    )
                    .collect()
            }))
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(build!(OffsetForLeaderEpochResponse {
                topics: r
                    .topics
                    .iter()
                    .map(|t| build!(
                        offset_for_leader_epoch_response::OffsetForLeaderTopicResult {
                            topic: t.topic.clone(),
                            partitions: t
                                .partitions
                                .iter()
                                .map(
                                    |p| build!(offset_for_leader_epoch_response::EpochEndOffset {
                                        error_code: code,
                                        partition: p.partition,
                                        leader_epoch: -1,
                                        end_offset: -1
                                    })
                                )
                                .collect()
                        }
                    ))
                    .collect()
            }))
        }
        RequestKind::AddPartitionsToTxn(_) => {
            ResponseKind::AddPartitionsToTxn(build!(AddPartitionsToTxnResponse {
                error_code: code
            }))
        }
        other => {
            // Every request `check` refuses as a whole has an arm above; reaching here is a
            // bug, answered with ApiVersions' shape (which the client will reject) and logged.
            tracing::error!(request = %format!("{other:?}").chars().take(60).collect::<String>(), error = ?e, "no whole-request refusal is built for this API; fix authorize::whole_error");
            ResponseKind::ApiVersions(build!(ApiVersionsResponse { error_code: code }))
        }
    }
}

/// Adds back what [`check`] took out, refused, and hides from read-only answers what the
/// caller may not describe.
pub fn complete(ctx: &RequestContext, denied: Denied, mut response: ResponseKind) -> ResponseKind {
    if !ctx.broker.security.authorizer.enabled {
        return response;
    }
    let a = Auth {
        ctx,
        image: ctx.broker.image(),
    };
    let t = TOPIC_DENIED.code();
    match &mut response {
        ResponseKind::Produce(r) => {
            for (name, topic_id, parts) in denied.topics {
                r.responses
                    .push(build!(produce_response::TopicProduceResponse {
                        name,
                        topic_id,
                        partition_responses: parts
                            .into_iter()
                            .map(|index| build!(produce_response::PartitionProduceResponse {
                                index,
                                error_code: t,
                                base_offset: -1
                            }))
                            .collect()
                    }));
            }
        }
        ResponseKind::Fetch(r) => {
            for (topic, topic_id, parts) in denied.topics {
                r.responses
                    .push(build!(fetch_response::FetchableTopicResponse {
                        topic,
                        topic_id,
                        partitions: parts
                            .into_iter()
                            .map(|partition_index| build!(fetch_response::PartitionData {
                                partition_index,
                                error_code: t,
                                high_watermark: -1,
                                last_stable_offset: -1,
                                log_start_offset: -1
                            }))
                            .collect()
                    }));
            }
        }
        ResponseKind::ListOffsets(r) => {
            for (name, _, parts) in denied.topics {
                r.topics
                    .push(build!(list_offsets_response::ListOffsetsTopicResponse {
                        name,
                        partitions: parts
                            .into_iter()
                            .map(|partition_index| build!(
                                list_offsets_response::ListOffsetsPartitionResponse {
                                    partition_index,
                                    error_code: t,
                                    timestamp: -1,
                                    offset: -1,
                                    leader_epoch: -1
                                }
                            ))
                            .collect()
                    }));
            }
        }
        ResponseKind::Metadata(r) => {
            r.topics.retain(|topic| {
                topic
                    .name
                    .as_ref()
                    .is_none_or(|n| a.topic(op::DESCRIBE, &n.0))
            });
            for (name, topic_id, _) in denied.topics {
                r.topics
                    .push(build!(metadata_response::MetadataResponseTopic {
                        error_code: t,
                        name: Some(name),
                        topic_id
                    }));
            }
        }
        ResponseKind::CreateTopics(r) => {
            for (name, _, _) in denied.topics {
                r.topics
                    .push(build!(create_topics_response::CreatableTopicResult {
                        name,
                        error_code: t,
                        error_message: Some(str_bytes("Topic authorization failed.")),
                        num_partitions: -1,
                        replication_factor: -1
                    }));
            }
        }
        ResponseKind::DeleteTopics(r) => {
            for (name, topic_id, _) in denied.topics {
                r.responses
                    .push(build!(delete_topics_response::DeletableTopicResult {
                        name: Some(name),
                        topic_id,
                        error_code: t
                    }));
            }
        }
        ResponseKind::CreatePartitions(r) => {
            for (name, _, _) in denied.topics {
                r.results.push(build!(
                    create_partitions_response::CreatePartitionsTopicResult {
                        name,
                        error_code: t
                    }
                ));
            }
        }
        ResponseKind::DeleteRecords(r) => {
            for (name, _, parts) in denied.topics {
                r.topics
                    .push(build!(delete_records_response::DeleteRecordsTopicResult {
                        name,
                        partitions: parts
                            .into_iter()
                            .map(|partition_index| build!(
                                delete_records_response::DeleteRecordsPartitionResult {
                                    partition_index,
                                    low_watermark: -1,
                                    error_code: t
                                }
                            ))
                            .collect()
                    }));
            }
        }
        ResponseKind::OffsetCommit(r) => {
            for (name, _, parts) in denied.topics {
                r.topics
                    .push(build!(offset_commit_response::OffsetCommitResponseTopic {
                        name,
                        partitions: parts
                            .into_iter()
                            .map(|partition_index| build!(
                                offset_commit_response::OffsetCommitResponsePartition {
                                    partition_index,
                                    error_code: t
                                }
                            ))
                            .collect()
                    }));
            }
        }
        ResponseKind::TxnOffsetCommit(r) => {
            for (name, _, parts) in denied.topics {
                r.topics.push(build!(
                    txn_offset_commit_response::TxnOffsetCommitResponseTopic {
                        name,
                        partitions: parts
                            .into_iter()
                            .map(|partition_index| build!(
                                txn_offset_commit_response::TxnOffsetCommitResponsePartition {
                                    partition_index,
                                    error_code: t
                                }
                            ))
                            .collect()
                    }
                ));
            }
        }
        ResponseKind::AlterConfigs(r) => {
            for (resource_type, resource_name) in denied.resources {
                r.responses.push(build!(
                    alter_configs_response::AlterConfigsResourceResponse {
                        error_code: config_error(resource_type),
                        resource_type,
                        resource_name
                    }
                ));
            }
        }
        ResponseKind::IncrementalAlterConfigs(r) => {
            for (resource_type, resource_name) in denied.resources {
                r.responses.push(build!(
                    incremental_alter_configs_response::AlterConfigsResourceResponse {
                        error_code: config_error(resource_type),
                        resource_type,
                        resource_name
                    }
                ));
            }
        }
        ResponseKind::DescribeConfigs(r) => {
            for x in &mut r.results {
                let ok = match x.resource_type {
                    2 => a.topic(op::DESCRIBE_CONFIGS, &x.resource_name),
                    _ => a.cluster(op::DESCRIBE_CONFIGS),
                };
                if !ok {
                    x.error_code = config_error(x.resource_type);
                    x.error_message = None;
                    x.configs.clear();
                }
            }
        }
        ResponseKind::FindCoordinator(r) => {
            for (key, e) in denied.keys {
                r.coordinators
                    .push(build!(find_coordinator_response::Coordinator {
                        key,
                        node_id: BrokerId(-1),
                        port: -1,
                        error_code: e.code()
                    }));
            }
        }
        ResponseKind::DescribeGroups(r) => {
            for g in &mut r.groups {
                if !a.group(op::DESCRIBE, &g.group_id.0) {
                    *g = build!(describe_groups_response::DescribedGroup {
                        group_id: g.group_id.clone(),
                        error_code: ResponseError::GroupAuthorizationFailed.code()
                    });
                }
            }
        }
        ResponseKind::ListGroups(r) if !a.cluster(op::DESCRIBE) => {
            r.groups.retain(|g| a.group(op::DESCRIBE, &g.group_id.0));
        }
        ResponseKind::DeleteGroups(r) => {
            for group_id in denied.groups {
                r.results
                    .push(build!(delete_groups_response::DeletableGroupResult {
                        group_id,
                        error_code: ResponseError::GroupAuthorizationFailed.code()
                    }));
            }
        }
        ResponseKind::OffsetForLeaderEpoch(r) => {
            for topic in &mut r.topics {
                if !a.topic(op::DESCRIBE, &topic.topic.0) {
                    for p in &mut topic.partitions {
                        p.error_code = t;
                        p.leader_epoch = -1;
                        p.end_offset = -1;
                    }
                }
            }
        }
        ResponseKind::DescribeTransactions(r) => {
            for s in &mut r.transaction_states {
                if !a.allow(op::DESCRIBE, res::TRANSACTIONAL_ID, &s.transactional_id.0) {
                    *s = build!(describe_transactions_response::TransactionState {
                        transactional_id: s.transactional_id.clone(),
                        error_code: ResponseError::TransactionalIdAuthorizationFailed.code(),
                        producer_id: ProducerId(-1),
                        producer_epoch: -1
                    });
                }
            }
        }
        ResponseKind::ListTransactions(r) => {
            r.transaction_states
                .retain(|s| a.allow(op::DESCRIBE, res::TRANSACTIONAL_ID, &s.transactional_id.0));
        }
        _ => {}
    }
    response
}

fn config_error(resource_type: i8) -> i16 {
    if resource_type == 2 {
        TOPIC_DENIED.code()
    } else {
        CLUSTER_DENIED.code()
    }
}
