//! EndTxn (key 26): commit or abort the producer's transaction. The outcome is stored,
//! every partition in the transaction gets its marker, and then the answer goes back.

use kafka_protocol::messages::{ApiKey, EndTxnRequest, EndTxnResponse, ProducerId};

use super::RequestContext;
use crate::state::now_ms;
use crate::txn::fenced_code;

pub fn handle(ctx: &RequestContext, request: EndTxnRequest) -> EndTxnResponse {
    let result = ctx.txns().end(
        ctx.broker.as_ref(),
        &request.transactional_id.0,
        request.producer_id.0,
        request.producer_epoch,
        request.committed,
        now_ms(),
    );
    let code = result.err().map_or(0, |e| e.code());
    if code != 0 {
        tracing::debug!(transactional_id = %request.transactional_id.0, commit = request.committed, error_code = code, "EndTxn refused");
    }
    build!(EndTxnResponse {
        error_code: fenced_code(code, ctx.version, 2),
        producer_id: ProducerId(-1),
        producer_epoch: -1
    })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = EndTxnRequest;
        type Response = EndTxnResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::EndTxn,
            min: 0,
            max: 3,
        };

        async fn handle(ctx: &RequestContext, request: EndTxnRequest) -> Option<EndTxnResponse> {
            Some(handle(ctx, request))
        }

        fn coordinator_keys<'r>(
            _ctx: &RequestContext,
            request: &'r EndTxnRequest,
        ) -> Vec<crate::api::Key<'r>> {
            vec![crate::api::Key::Txn(&request.transactional_id.0)]
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &EndTxnRequest,
            error: ResponseError,
        ) -> EndTxnResponse {
            build!(EndTxnResponse {
                error_code: error.code()
            })
        }

        fn replicated_writes(
            ctx: &RequestContext,
            request: &EndTxnRequest,
        ) -> Vec<std::sync::Arc<crate::state::Partition>> {
            crate::api::coordinator_check::txn_partition(ctx, &request.transactional_id.0)
        }
    }
}
