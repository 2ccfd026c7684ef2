//! FindCoordinator (key 10): the coordinator of a group or transactional id is the leader
//! of the `__consumer_offsets` or `__transaction_state` partition that holds it (on a
//! single node, this broker). Batched keys from v4.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, RequestContext};

const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

pub fn handle(ctx: &RequestContext, request: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let answer = |key: &StrBytes| -> (i16, Option<String>, Option<gregor_cluster::BrokerMeta>) {
        if request.key_type != GROUP && request.key_type != TRANSACTION {
            return (
                ResponseError::InvalidRequest.code(),
                Some(format!(
                    "unknown coordinator key type {}: 0 is a group, 1 a transactional id",
                    request.key_type
                )),
                None,
            );
        }
        if key.is_empty() {
            return (
                ResponseError::InvalidRequest.code(),
                Some("empty coordinator key".into()),
                None,
            );
        }
        match ctx.broker.coordinator(key, request.key_type == TRANSACTION) {
            Ok(b) => (0, None, Some(b)),
            Err((e, message)) => {
                tracing::warn!(error = %message, "no coordinator available");
                (e.code(), Some(message), None)
            }
        }
    };
    let place = |b: &Option<gregor_cluster::BrokerMeta>| match b {
        Some(b) => {
            let (host, port) = b.endpoint(&ctx.listener);
            (BrokerId(b.node_id), str_bytes(host), port)
        }
        None => (BrokerId(-1), StrBytes::default(), -1),
    };
    if ctx.version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let (error_code, message, broker) = answer(key);
                let (node_id, host, port) = place(&broker);
                build!(Coordinator {
                    key: key.clone(),
                    node_id,
                    host,
                    port,
                    error_code,
                    error_message: message.map(StrBytes::from_string)
                })
            })
            .collect();
        return build!(FindCoordinatorResponse { coordinators });
    }
    let (error_code, message, broker) = answer(&request.key);
    let (node_id, host, port) = place(&broker);
    let mut r = build!(FindCoordinatorResponse {
        error_code,
        node_id,
        host,
        port
    });
    if ctx.version >= 1 {
        r.error_message = message.map(StrBytes::from_string);
    }
    if error_code != 0 {
        r.node_id = BrokerId(-1);
        r.host = StrBytes::default();
        r.port = -1;
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
        type Request = FindCoordinatorRequest;
        type Response = FindCoordinatorResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::FindCoordinator,
            min: 0,
            max: 5,
        };

        async fn handle(
            ctx: &RequestContext,
            request: FindCoordinatorRequest,
        ) -> Option<FindCoordinatorResponse> {
            Some(handle(ctx, request))
        }

        fn authorize(
            a: &Auth<'_>,
            request: &mut FindCoordinatorRequest,
            denied: &mut Denied,
        ) -> Result<(), FindCoordinatorResponse> {
            let key_type = request.key_type;
            let allowed = |key: &str| match key_type {
                1 => a.allow(op::DESCRIBE, res::TRANSACTIONAL_ID, key),
                _ => a.group(op::DESCRIBE, key),
            };
            let error = if key_type == 1 {
                ResponseError::TransactionalIdAuthorizationFailed
            } else {
                ResponseError::GroupAuthorizationFailed
            };
            if a.ctx.version < 4 {
                if !allowed(&request.key) {
                    crate::api::authorize::log_denied(a.ctx, &request.key);
                    return Err(build!(FindCoordinatorResponse {
                        error_code: error.code(),
                        node_id: BrokerId(-1),
                        port: -1
                    }));
                }
            } else {
                request.coordinator_keys.retain(|k| {
                    let ok = allowed(k);
                    if !ok {
                        crate::api::authorize::log_denied(a.ctx, k);
                        denied.keys.push((k.clone(), error));
                    }
                    ok
                });
            }
            Ok(())
        }

        fn complete(_a: &Auth<'_>, denied: Denied, response: &mut FindCoordinatorResponse) {
            use kafka_protocol::messages::find_coordinator_response::Coordinator;
            for (key, e) in denied.keys {
                response.coordinators.push(build!(Coordinator {
                    key,
                    node_id: BrokerId(-1),
                    port: -1,
                    error_code: e.code()
                }));
            }
        }
    }
}
