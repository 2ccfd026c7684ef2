//! AddPartitionsToTxn (key 24): a transactional producer names the partitions it is about
//! to write, so the coordinator can mark them when the transaction ends. Versions 0-3 are
//! the client's; version 4 is the brokers' (KIP-890): a partition leader asks the
//! coordinator, with `verify_only`, whether a transactional batch belongs to an open
//! transaction before appending it (ClusterAction, checked in `authorize.rs`).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, TopicName,
};

use super::RequestContext;
use crate::state::now_ms;
use crate::txn::fenced_code;

pub fn handle(
    ctx: &RequestContext,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if ctx.version >= 4 {
        return handle_batched(ctx, request);
    }
    let wanted: Vec<(String, i32)> = request
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let codes = ctx.txns().add_partitions(
        ctx.broker.as_ref(),
        &request.v3_and_below_transactional_id.0,
        request.v3_and_below_producer_id.0,
        request.v3_and_below_producer_epoch,
        &wanted,
        now_ms(),
    );
    let mut codes = codes.into_iter();
    let results = request
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            let results_by_partition = t
                .partitions
                .iter()
                .map(|&partition_index| {
                    build!(AddPartitionsToTxnPartitionResult {
                        partition_index,
                        partition_error_code: fenced_code(
                            codes.next().unwrap_or(0),
                            ctx.version,
                            2
                        )
                    })
                })
                .collect();
            build!(AddPartitionsToTxnTopicResult {
                name: t.name,
                results_by_partition
            })
        })
        .collect();
    build!(AddPartitionsToTxnResponse {
        results_by_topic_v3_and_below: results
    })
}

/// The answer to a request refused before it reaches the coordinator: every partition of
/// a topic gets `error_of(topic)`.
pub fn refused(
    request: &AddPartitionsToTxnRequest,
    error_of: impl Fn(&TopicName) -> ResponseError,
) -> AddPartitionsToTxnResponse {
    let results = request
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let code = error_of(&t.name).code();
            build!(AddPartitionsToTxnTopicResult {
                name: t.name.clone(),
                results_by_partition: t
                    .partitions
                    .iter()
                    .map(
                        |&partition_index| build!(AddPartitionsToTxnPartitionResult {
                            partition_index,
                            partition_error_code: code
                        })
                    )
                    .collect()
            })
        })
        .collect();
    build!(AddPartitionsToTxnResponse {
        results_by_topic_v3_and_below: results
    })
}

/// Version 4: several transactions, from another broker. Only `verify_only` is served
/// (adding partitions stays the clients' request, versions 0-3).
fn handle_batched(
    ctx: &RequestContext,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let results_by_transaction = request
        .transactions
        .into_iter()
        .map(|t| {
            let id = t.transactional_id.0.to_string();
            let wanted: Vec<(String, i32)> = t
                .topics
                .iter()
                .flat_map(|tp| tp.partitions.iter().map(|p| (tp.name.0.to_string(), *p)))
                .collect();
            let codes = if !t.verify_only {
                vec![ResponseError::InvalidRequest.code(); wanted.len()]
            } else if let Some(e) = ctx.broker.not_txn_coordinator(&id) {
                vec![e.code(); wanted.len()]
            } else {
                ctx.broker
                    .txns
                    .verify(&id, (t.producer_id.0, t.producer_epoch), &wanted)
            };
            let mut codes = codes.into_iter();
            let topic_results = t
                .topics
                .into_iter()
                .map(|tp| {
                    build!(AddPartitionsToTxnTopicResult {
                        results_by_partition: tp
                            .partitions
                            .iter()
                            .map(
                                |&partition_index| build!(AddPartitionsToTxnPartitionResult {
                                    partition_index,
                                    partition_error_code: codes
                                        .next()
                                        .unwrap_or(ResponseError::UnknownServerError.code())
                                })
                            )
                            .collect(),
                        name: tp.name
                    })
                })
                .collect();
            build!(AddPartitionsToTxnResult {
                transactional_id: t.transactional_id,
                topic_results
            })
        })
        .collect();
    build!(AddPartitionsToTxnResponse {
        results_by_transaction
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
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = AddPartitionsToTxnRequest;
        type Response = AddPartitionsToTxnResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::AddPartitionsToTxn,
            min: 0,
            max: 4,
        };

        async fn handle(
            ctx: &RequestContext,
            request: AddPartitionsToTxnRequest,
        ) -> Option<AddPartitionsToTxnResponse> {
            Some(handle(ctx, request))
        }

        /// Versions 0-3 come from a transactional producer; version 4 from a broker.
        fn coordinator_keys<'r>(
            ctx: &RequestContext,
            request: &'r AddPartitionsToTxnRequest,
        ) -> Vec<crate::api::Key<'r>> {
            if ctx.version <= 3 {
                vec![crate::api::Key::Txn(
                    &request.v3_and_below_transactional_id.0,
                )]
            } else {
                Vec::new()
            }
        }

        fn error_response(
            ctx: &RequestContext,
            request: &AddPartitionsToTxnRequest,
            error: ResponseError,
        ) -> AddPartitionsToTxnResponse {
            if ctx.version <= 3 {
                refused(request, |_| error)
            } else {
                build!(AddPartitionsToTxnResponse {
                    error_code: error.code()
                })
            }
        }

        fn authorize(
            a: &Auth<'_>,
            request: &mut AddPartitionsToTxnRequest,
            _denied: &mut Denied,
        ) -> Result<(), AddPartitionsToTxnResponse> {
            if a.ctx.version > 3 {
                return crate::api::authorize::needs_cluster(a, op::CLUSTER_ACTION, |e| {
                    Self::error_response(a.ctx, request, e)
                });
            }
            let denied: Vec<&TopicName> = request
                .v3_and_below_topics
                .iter()
                .map(|t| &t.name)
                .filter(|n| !a.topic(op::WRITE, &n.0))
                .collect();
            if let Some(first) = denied.first() {
                crate::api::authorize::log_denied(a.ctx, &first.0);
                return Err(refused(request, |name| {
                    if denied.contains(&name) {
                        crate::api::authorize::TOPIC_DENIED
                    } else {
                        ResponseError::OperationNotAttempted
                    }
                }));
            }
            Ok(())
        }

        fn replicated_writes(
            ctx: &RequestContext,
            request: &AddPartitionsToTxnRequest,
        ) -> Vec<std::sync::Arc<crate::state::Partition>> {
            if ctx.version <= 3 {
                crate::api::coordinator_check::txn_partition(
                    ctx,
                    &request.v3_and_below_transactional_id.0,
                )
            } else {
                Vec::new()
            }
        }
    }
}
