//! FindCoordinator (key 10): this broker coordinates every group and every transactional
//! id (single node). Batched keys from v4.

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
    let c = &ctx.broker.config;
    let answer = |key: &StrBytes| -> (i16, Option<String>) {
        if request.key_type != GROUP && request.key_type != TRANSACTION {
            return (
                ResponseError::InvalidRequest.code(),
                Some(format!(
                    "unknown coordinator key type {}: 0 is a group, 1 a transactional id",
                    request.key_type
                )),
            );
        }
        if key.is_empty() {
            return (
                ResponseError::InvalidRequest.code(),
                Some("empty coordinator key".into()),
            );
        }
        let created = if request.key_type == GROUP {
            ctx.broker.ensure_offsets_topic()
        } else {
            ctx.broker.ensure_txn_topic()
        };
        match created {
            Ok(_) => (0, None),
            Err(e) => {
                tracing::error!(error = %e, "could not create the coordinator's internal topic");
                (
                    ResponseError::CoordinatorNotAvailable.code(),
                    Some(e.to_string()),
                )
            }
        }
    };
    let node = BrokerId(c.node_id);
    let host = str_bytes(&c.advertised_host);
    let port = i32::from(c.advertised_port);
    if ctx.version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let (error_code, message) = answer(key);
                build!(Coordinator {
                    key: key.clone(),
                    node_id: node,
                    host: host.clone(),
                    port,
                    error_code,
                    error_message: message.map(StrBytes::from_string)
                })
            })
            .collect();
        return build!(FindCoordinatorResponse { coordinators });
    }
    let (error_code, message) = answer(&request.key);
    let mut r = build!(FindCoordinatorResponse {
        error_code,
        node_id: node,
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
