//! SyncGroup (key 14): the leader hands out assignments; everyone gets theirs.

use crate::group::Now;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::group::{Caller, Reply, SyncResult};

pub async fn handle(ctx: &RequestContext, request: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
    let reply = ctx.groups().sync(
        ctx.broker.as_ref(),
        Now::current(),
        Caller {
            group_id: &request.group_id.0,
            generation: request.generation_id,
            member_id: &request.member_id,
            instance_id: instance.as_deref(),
        },
        assignments,
    );
    let unanswered = |error: ResponseError| SyncResult {
        error: error.code(),
        ..Default::default()
    };
    let result = match reply {
        Reply::Now(r) => r,
        Reply::Later(rx) => {
            let mut shutdown = ctx.shutdown.clone();
            tokio::select! {
                r = rx => r.unwrap_or_else(|_| unanswered(ResponseError::RebalanceInProgress)),
                _ = shutdown.wait_for(|stopping| *stopping) => unanswered(ResponseError::CoordinatorNotAvailable),
            }
        }
    };
    let mut r = build!(SyncGroupResponse {
        error_code: result.error,
        assignment: result.assignment
    });
    if ctx.version >= 5 {
        r.protocol_type = result.protocol_type.map(StrBytes::from_string);
        r.protocol_name = result.protocol.map(StrBytes::from_string);
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
        type Request = SyncGroupRequest;
        type Response = SyncGroupResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::SyncGroup,
            min: 0,
            max: 5,
        };

        async fn handle(
            ctx: &RequestContext,
            request: SyncGroupRequest,
        ) -> Option<SyncGroupResponse> {
            Some(handle(ctx, request).await)
        }

        fn coordinator_keys<'r>(
            _ctx: &RequestContext,
            request: &'r SyncGroupRequest,
        ) -> Vec<crate::api::Key<'r>> {
            vec![crate::api::Key::Group(&request.group_id.0)]
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &SyncGroupRequest,
            error: ResponseError,
        ) -> SyncGroupResponse {
            build!(SyncGroupResponse {
                error_code: error.code()
            })
        }

        fn replicated_writes(
            ctx: &RequestContext,
            request: &SyncGroupRequest,
        ) -> Vec<std::sync::Arc<crate::state::Partition>> {
            crate::api::coordinator_check::group_partition(ctx, &request.group_id.0)
        }
    }
}
