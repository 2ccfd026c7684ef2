//! InitProducerId (key 22): producer ids for idempotent producers, and for transactional
//! ones the coordinator's id and a new epoch, which fences the previous producer with the
//! same `transactional.id` and aborts the transaction it left open.

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{ApiSpec, RequestContext};
use crate::error::error_code;
use crate::state::now_ms;
use crate::txn::fenced_code;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::InitProducerId,
    min: 0,
    max: 5,
};

pub async fn handle(
    ctx: &RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut r = build!(InitProducerIdResponse {
        producer_id: ProducerId(-1),
        producer_epoch: -1,
        ongoing_txn_producer_id: ProducerId(-1),
        ongoing_txn_producer_epoch: -1
    });
    if let Some(id) = &request.transactional_id {
        let expected = (ctx.version >= 3 && request.producer_id.0 >= 0)
            .then_some((request.producer_id.0, request.producer_epoch));
        match ctx.broker.txns.init_producer(
            ctx.broker.as_ref(),
            &id.0,
            request.transaction_timeout_ms,
            expected,
            now_ms(),
        ) {
            Ok((pid, epoch)) => {
                r.producer_id = ProducerId(pid);
                r.producer_epoch = epoch;
            }
            Err(e) => {
                tracing::debug!(transactional_id = %id.0, error = ?e, "InitProducerId refused");
                r.error_code = fenced_code(e.code(), ctx.version, 4);
            }
        }
        return r;
    }
    match ctx.broker.allocate_producer_id().await {
        Ok(id) => {
            r.producer_id = ProducerId(id);
            r.producer_epoch = 0;
        }
        Err(e) => {
            tracing::error!(error = %e, "could not allocate a producer id");
            r.error_code = error_code(&e);
        }
    }
    r
}
