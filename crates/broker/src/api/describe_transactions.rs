//! DescribeTransactions (key 65): the state of transactional ids: producer id and epoch,
//! state, timeout, start time and partitions.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId,
};

use super::{str_bytes, topic_name, RequestContext};

pub fn handle(
    ctx: &RequestContext,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let transaction_states = request
        .transactional_ids
        .into_iter()
        .map(|id| match ctx.txns().describe(&id.0) {
            None => build!(TransactionState {
                error_code: ResponseError::TransactionalIdNotFound.code(),
                transactional_id: id,
                producer_id: ProducerId(-1),
                producer_epoch: -1,
                transaction_start_time_ms: -1
            }),
            Some(m) => {
                let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (t, p) in &m.partitions {
                    by_topic.entry(t).or_default().push(*p);
                }
                let topics = by_topic
                    .into_iter()
                    .map(|(t, partitions)| {
                        build!(TopicData {
                            topic: topic_name(t),
                            partitions
                        })
                    })
                    .collect();
                build!(TransactionState {
                    transactional_id: id,
                    transaction_state: str_bytes(m.state.name()),
                    transaction_timeout_ms: m.timeout_ms,
                    transaction_start_time_ms: m.start_ms,
                    producer_id: ProducerId(m.producer_id),
                    producer_epoch: m.epoch,
                    topics
                })
            }
        })
        .collect();
    build!(DescribeTransactionsResponse { transaction_states })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::api::authorize::Auth;
    use crate::api::authorize::Denied;
    use crate::security::acl::op;
    use crate::security::acl::res;
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = DescribeTransactionsRequest;
        type Response = DescribeTransactionsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::DescribeTransactions,
            min: 0,
            max: 0,
        };

        async fn handle(
            ctx: &RequestContext,
            request: DescribeTransactionsRequest,
        ) -> Option<DescribeTransactionsResponse> {
            Some(handle(ctx, request))
        }

        fn complete(a: &Auth<'_>, _denied: Denied, response: &mut DescribeTransactionsResponse) {
            use kafka_protocol::messages::describe_transactions_response::TransactionState;
            for s in &mut response.transaction_states {
                if !a.allow(op::DESCRIBE, res::TRANSACTIONAL_ID, &s.transactional_id.0) {
                    *s = build!(TransactionState {
                        transactional_id: s.transactional_id.clone(),
                        error_code: ResponseError::TransactionalIdAuthorizationFailed.code(),
                        producer_id: ProducerId(-1),
                        producer_epoch: -1
                    });
                }
            }
        }
    }
}
