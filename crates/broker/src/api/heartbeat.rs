//! Heartbeat (key 12): keeps a member's session alive and tells it about rebalances.

use kafka_protocol::messages::{ApiKey, HeartbeatRequest, HeartbeatResponse};

use super::{ApiSpec, RequestContext};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::Heartbeat,
    min: 0,
    max: 4,
};

pub fn handle(ctx: &RequestContext, request: HeartbeatRequest) -> HeartbeatResponse {
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let error_code = ctx.broker.groups.heartbeat(
        &request.group_id.0,
        request.generation_id,
        &request.member_id,
        instance.as_deref(),
    );
    build!(HeartbeatResponse { error_code })
}
