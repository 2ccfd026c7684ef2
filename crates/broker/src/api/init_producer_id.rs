//! InitProducerId (key 22): producer ids for idempotent producers.
//!
//! Transactional ids need the transaction coordinator, which is not built yet: such
//! requests get `COORDINATOR_NOT_AVAILABLE`. Per-partition sequence checking (duplicate
//! detection) is not built yet either; see docs/compatibility.md.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{ApiSpec, RequestContext};
use crate::error::error_code;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::InitProducerId,
    min: 0,
    max: 5,
};

pub fn handle(ctx: &RequestContext, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut r = build!(InitProducerIdResponse {
        producer_id: ProducerId(-1),
        producer_epoch: -1,
        ongoing_txn_producer_id: ProducerId(-1),
        ongoing_txn_producer_epoch: -1
    });
    if request.transactional_id.is_some() {
        tracing::warn!(
            "InitProducerId with a transactional.id: transactions are not supported yet"
        );
        r.error_code = ResponseError::CoordinatorNotAvailable.code();
        return r;
    }
    match ctx.broker.allocate_producer_id() {
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
