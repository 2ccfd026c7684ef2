//! FindCoordinator (key 10): the coordinator of a group or transactional id is the leader
//! of the `__consumer_offsets` or `__transaction_state` partition that holds it (on a
//! single node, this broker). Batched keys from v4.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, ApiSpec, RequestContext};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::FindCoordinator,
    min: 0,
    max: 5,
};

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
