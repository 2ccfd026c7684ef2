//! LeaveGroup (key 13): one member (v0-2) or a batch of members (v3+) leave.

use crate::group::Now;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{ApiKey, LeaveGroupRequest, LeaveGroupResponse};

use super::RequestContext;

pub fn handle(ctx: &RequestContext, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    match ctx.groups().leave(
        ctx.broker.as_ref(),
        Now::current(),
        &request.group_id.0,
        &members,
    ) {
        Err(error_code) => build!(LeaveGroupResponse { error_code }),
        Ok(codes) if ctx.version >= 3 => build!(LeaveGroupResponse {
            members: members
                .into_iter()
                .zip(codes)
                .map(|((id, instance), error_code)| build!(MemberResponse {
                    member_id: super::str_bytes(&id),
                    group_instance_id: instance.map(|s| super::str_bytes(&s)),
                    error_code
                }))
                .collect()
        }),
        Ok(codes) => build!(LeaveGroupResponse {
            error_code: codes.first().copied().unwrap_or(0)
        }),
    }
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = LeaveGroupRequest;
        type Response = LeaveGroupResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::LeaveGroup,
            min: 0,
            max: 5,
        };

        async fn handle(
            ctx: &RequestContext,
            request: LeaveGroupRequest,
        ) -> Option<LeaveGroupResponse> {
            Some(handle(ctx, request))
        }

        fn coordinator_keys<'r>(
            _ctx: &RequestContext,
            request: &'r LeaveGroupRequest,
        ) -> Vec<crate::api::Key<'r>> {
            vec![crate::api::Key::Group(&request.group_id.0)]
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &LeaveGroupRequest,
            error: ResponseError,
        ) -> LeaveGroupResponse {
            build!(LeaveGroupResponse {
                error_code: error.code()
            })
        }
    }
}
