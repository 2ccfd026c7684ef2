//! EndTxn (key 26): commit or abort the producer's transaction. The outcome is stored,
//! every partition in the transaction gets its marker, and then the answer goes back.

use kafka_protocol::messages::{ApiKey, EndTxnRequest, EndTxnResponse, ProducerId};

use super::{ApiSpec, RequestContext};
use crate::state::now_ms;
use crate::txn::fenced_code;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::EndTxn,
    min: 0,
    max: 3,
};

pub fn handle(ctx: &RequestContext, request: EndTxnRequest) -> EndTxnResponse {
    let result = ctx.broker.txns.end(
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
