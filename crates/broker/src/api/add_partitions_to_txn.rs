//! AddPartitionsToTxn (key 24): a transactional producer names the partitions it is about
//! to write, so the coordinator can mark them when the transaction ends. Versions 0-3 are
//! the client's; 4+ (broker-to-broker verification, KIP-890) are not served.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, TopicName,
};

use super::{ApiSpec, RequestContext};
use crate::state::now_ms;
use crate::txn::fenced_code;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::AddPartitionsToTxn,
    min: 0,
    max: 3,
};

pub fn handle(
    ctx: &RequestContext,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let wanted: Vec<(String, i32)> = request
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let codes = ctx.broker.txns.add_partitions(
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
