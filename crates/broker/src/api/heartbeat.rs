//! Heartbeat (key 12): keeps a member's session alive and tells it about rebalances.

use crate::group::{Caller, Now};
use kafka_protocol::messages::{ApiKey, HeartbeatRequest, HeartbeatResponse};

use super::RequestContext;

pub fn handle(ctx: &RequestContext, request: HeartbeatRequest) -> HeartbeatResponse {
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let by = Caller {
        group_id: &request.group_id.0,
        generation: request.generation_id,
        member_id: &request.member_id,
        instance_id: instance.as_deref(),
    };
    let error_code = ctx.groups().heartbeat(Now::current(), by);
    build!(HeartbeatResponse { error_code })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = HeartbeatRequest;
        type Response = HeartbeatResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::Heartbeat,
            min: 0,
            max: 4,
        };

        async fn handle(
            ctx: &RequestContext,
            request: HeartbeatRequest,
        ) -> Option<HeartbeatResponse> {
            Some(handle(ctx, request))
        }

        fn coordinator_keys<'r>(
            _ctx: &RequestContext,
            request: &'r HeartbeatRequest,
        ) -> Vec<crate::api::Key<'r>> {
            vec![crate::api::Key::Group(&request.group_id.0)]
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &HeartbeatRequest,
            error: ResponseError,
        ) -> HeartbeatResponse {
            build!(HeartbeatResponse {
                error_code: error.code()
            })
        }
    }
}
