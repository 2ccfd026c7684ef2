//! JoinGroup (key 11): join or rejoin a group; the reply may wait for the rebalance.

use crate::group::Now;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{ApiKey, JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::group::{JoinRequest, JoinResult, Reply};

pub async fn handle(ctx: &RequestContext, request: JoinGroupRequest) -> JoinGroupResponse {
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|s| s.to_string()),
        client_id: ctx.client_id(),
        client_host: ctx.client_host(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if ctx.version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        requires_known_member_id: ctx.version >= 4,
    };
    let member_id = join.member_id.clone();
    let unanswered = |error: ResponseError| JoinResult {
        error: error.code(),
        generation: -1,
        member_id: member_id.clone(),
        ..Default::default()
    };
    let result = match ctx.groups().join(ctx.broker.as_ref(), Now::current(), join) {
        Reply::Now(r) => r,
        Reply::Later(rx) => {
            let mut shutdown = ctx.shutdown.clone();
            tokio::select! {
                // The group was unloaded (its coordinator moved) while the join was parked: the
                // client finds the new coordinator and joins there with its member id.
                r = rx => r.unwrap_or_else(|_| unanswered(ResponseError::NotCoordinator)),
                // A stopping broker answers parked joins so clients retry elsewhere at once.
                _ = shutdown.wait_for(|stopping| *stopping) => unanswered(ResponseError::CoordinatorNotAvailable),
            }
        }
    };
    let s = |v: Option<String>| v.map(StrBytes::from_string);
    let mut r = build!(JoinGroupResponse {
        error_code: result.error,
        generation_id: result.generation,
        protocol_name: s(result.protocol.clone())
            .or_else(|| (ctx.version < 7).then(StrBytes::default)),
        leader: StrBytes::from_string(result.leader),
        member_id: StrBytes::from_string(result.member_id),
        members: result
            .members
            .into_iter()
            .map(|(id, instance, metadata)| build!(JoinGroupResponseMember {
                member_id: StrBytes::from_string(id),
                group_instance_id: if ctx.version >= 5 {
                    instance.map(StrBytes::from_string)
                } else {
                    None
                },
                metadata
            }))
            .collect()
    });
    if ctx.version >= 7 {
        r.protocol_type = s(result.protocol_type);
    }
    if ctx.version >= 9 {
        r.skip_assignment = result.skip_assignment;
    }
    r
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = JoinGroupRequest;
        type Response = JoinGroupResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::JoinGroup,
            min: 0,
            max: 9,
        };

        async fn handle(
            ctx: &RequestContext,
            request: JoinGroupRequest,
        ) -> Option<JoinGroupResponse> {
            Some(handle(ctx, request).await)
        }

        fn coordinator_keys<'r>(
            _ctx: &RequestContext,
            request: &'r JoinGroupRequest,
        ) -> Vec<crate::api::Key<'r>> {
            vec![crate::api::Key::Group(&request.group_id.0)]
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &JoinGroupRequest,
            error: ResponseError,
        ) -> JoinGroupResponse {
            build!(JoinGroupResponse {
                error_code: error.code(),
                generation_id: -1
            })
        }
    }
}
