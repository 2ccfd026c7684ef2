//! AddOffsetsToTxn (key 25): a transactional producer will commit a group's offsets in
//! its transaction (`send_offsets_to_transaction`): the group's `__consumer_offsets`
//! partition joins the transaction, so it gets the marker too.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ApiKey};

use super::RequestContext;
use crate::group::store::{partition_for, OFFSETS_TOPIC};
use crate::state::now_ms;
use crate::txn::fenced_code;

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
        type Request = AddOffsetsToTxnRequest;
        type Response = AddOffsetsToTxnResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::AddOffsetsToTxn,
            min: 0,
            max: 3,
        };

        async fn handle(
            ctx: &RequestContext,
            request: AddOffsetsToTxnRequest,
        ) -> Option<AddOffsetsToTxnResponse> {
            Some(handle(ctx, request))
        }

        fn coordinator_keys<'r>(
            _ctx: &RequestContext,
            request: &'r AddOffsetsToTxnRequest,
        ) -> Vec<crate::api::Key<'r>> {
            vec![crate::api::Key::Txn(&request.transactional_id.0)]
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &AddOffsetsToTxnRequest,
            error: ResponseError,
        ) -> AddOffsetsToTxnResponse {
            build!(AddOffsetsToTxnResponse {
                error_code: error.code()
            })
        }

        /// Its transactional id is a coordinator key; its group needs READ.
        fn authorize(
            a: &Auth<'_>,
            request: &mut AddOffsetsToTxnRequest,
            _denied: &mut Denied,
        ) -> Result<(), AddOffsetsToTxnResponse> {
            if !a.group(op::READ, &request.group_id.0) {
                crate::api::authorize::log_denied(a.ctx, &request.group_id.0);
                return Err(Self::error_response(
                    a.ctx,
                    request,
                    ResponseError::GroupAuthorizationFailed,
                ));
            }
            Ok(())
        }

        fn replicated_writes(
            ctx: &RequestContext,
            request: &AddOffsetsToTxnRequest,
        ) -> Vec<std::sync::Arc<crate::state::Partition>> {
            crate::api::coordinator_check::txn_partition(ctx, &request.transactional_id.0)
        }
    }
}
