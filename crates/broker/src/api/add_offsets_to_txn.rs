//! AddOffsetsToTxn (key 25): a transactional producer will commit a group's offsets in
//! its transaction (`send_offsets_to_transaction`): the group's `__consumer_offsets`
//! partition joins the transaction, so it gets the marker too.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ApiKey};

use super::{ApiSpec, RequestContext};
use crate::group::store::{partition_for, OFFSETS_TOPIC};
use crate::state::now_ms;
use crate::txn::fenced_code;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::AddOffsetsToTxn,
    min: 0,
    max: 3,
};

pub fn handle(ctx: &RequestContext, request: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let code = match ctx.broker.ensure_offsets_topic() {
        Err(e) => {
            tracing::error!(error = %e, "could not create __consumer_offsets");
            ResponseError::CoordinatorNotAvailable.code()
        }
        Ok(topic) => {
            let index = partition_for(&request.group_id.0, topic.partitions.len() as i32);
            ctx.broker
                .txns
                .add_partitions(
                    ctx.broker.as_ref(),
                    &request.transactional_id.0,
                    request.producer_id.0,
                    request.producer_epoch,
                    &[(OFFSETS_TOPIC.to_string(), index)],
                    now_ms(),
                )
                .first()
                .copied()
                .unwrap_or(0)
        }
    };
    build!(AddOffsetsToTxnResponse {
        error_code: fenced_code(code, ctx.version, 2)
    })
}
