//! InitProducerId (key 22): producer ids for idempotent producers, and for transactional
//! ones the coordinator's id and a new epoch, which fences the previous producer with the
//! same `transactional.id` and aborts the transaction it left open.

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::RequestContext;
use crate::error::error_code;
use crate::state::now_ms;
use crate::txn::fenced_code;

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
        match ctx.txns().init_producer(
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
        type Request = InitProducerIdRequest;
        type Response = InitProducerIdResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::InitProducerId,
            min: 0,
            max: 5,
        };

        async fn handle(
            ctx: &RequestContext,
            request: InitProducerIdRequest,
        ) -> Option<InitProducerIdResponse> {
            Some(handle(ctx, request).await)
        }

        fn coordinator_keys<'r>(
            _ctx: &RequestContext,
            request: &'r InitProducerIdRequest,
        ) -> Vec<crate::api::Key<'r>> {
            request
                .transactional_id
                .as_ref()
                .map(|t| crate::api::Key::Txn(&t.0))
                .into_iter()
                .collect()
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &InitProducerIdRequest,
            error: ResponseError,
        ) -> InitProducerIdResponse {
            build!(InitProducerIdResponse {
                error_code: error.code(),
                producer_id: ProducerId(-1),
                producer_epoch: -1
            })
        }

        /// An idempotent producer (no transactional id) needs IDEMPOTENT_WRITE on the cluster
        /// or WRITE on some topic.
        fn authorize(
            a: &Auth<'_>,
            request: &mut InitProducerIdRequest,
            _denied: &mut Denied,
        ) -> Result<(), InitProducerIdResponse> {
            if request.transactional_id.is_none()
                && !a.cluster(op::IDEMPOTENT_WRITE)
                && !a.ctx.security().authorizer.authorize_any(
                    &a.image,
                    &a.ctx.caller,
                    op::WRITE,
                    res::TOPIC,
                )
            {
                crate::api::authorize::log_denied(a.ctx, "idempotent write");
                return Err(Self::error_response(
                    a.ctx,
                    request,
                    crate::api::authorize::CLUSTER_DENIED,
                ));
            }
            Ok(())
        }

        fn replicated_writes(
            ctx: &RequestContext,
            request: &InitProducerIdRequest,
        ) -> Vec<std::sync::Arc<crate::state::Partition>> {
            request
                .transactional_id
                .as_ref()
                .map_or_else(Vec::new, |t| {
                    crate::api::coordinator_check::txn_partition(ctx, &t.0)
                })
        }
    }
}
