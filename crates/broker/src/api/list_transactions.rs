//! ListTransactions (key 66): transactional ids with their producer id and state,
//! filtered by state, producer id, and (v1, KIP-994) by how long the transaction has run.

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ApiKey, ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use super::{str_bytes, RequestContext};
use crate::state::now_ms;
use crate::txn::TxnState;

const STATES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

pub fn handle(ctx: &RequestContext, request: ListTransactionsRequest) -> ListTransactionsResponse {
    let states: Vec<String> = request
        .state_filters
        .iter()
        .map(|s| s.to_string())
        .collect();
    let unknown_state_filters = request
        .state_filters
        .iter()
        .filter(|s| !STATES.iter().any(|k| k.name() == s.as_str()))
        .cloned()
        .collect();
    let pids: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let duration = if ctx.version >= 1 {
        request.duration_filter
    } else {
        -1
    };
    let transaction_states = ctx
        .txns()
        .list(&states, &pids, duration, now_ms())
        .into_iter()
        .map(|v| {
            build!(TransactionState {
                transactional_id: TransactionalId(str_bytes(&v.transactional_id)),
                producer_id: ProducerId(v.meta.producer_id),
                transaction_state: str_bytes(v.meta.state.name())
            })
        })
        .collect();
    build!(ListTransactionsResponse {
        unknown_state_filters,
        transaction_states
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
    use crate::security::acl::res;

    impl crate::api::Api for super::Handler {
        type Request = ListTransactionsRequest;
        type Response = ListTransactionsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::ListTransactions,
            min: 0,
            max: 1,
        };

        async fn handle(
            ctx: &RequestContext,
            request: ListTransactionsRequest,
        ) -> Option<ListTransactionsResponse> {
            Some(handle(ctx, request))
        }

        fn complete(a: &Auth<'_>, _denied: Denied, response: &mut ListTransactionsResponse) {
            response
                .transaction_states
                .retain(|s| a.allow(op::DESCRIBE, res::TRANSACTIONAL_ID, &s.transactional_id.0));
        }
    }
}
