//! DeleteGroups (key 42): remove empty groups and their committed offsets.

use crate::group::Now;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{ApiKey, DeleteGroupsRequest, DeleteGroupsResponse};

use super::RequestContext;

pub fn handle(ctx: &RequestContext, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = request
        .groups_names
        .into_iter()
        .map(|g| {
            let error_code = ctx
                .groups()
                .delete(ctx.broker.as_ref(), Now::current(), &g.0);
            build!(DeletableGroupResult {
                group_id: g,
                error_code
            })
        })
        .collect();
    build!(DeleteGroupsResponse { results })
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
        type Request = DeleteGroupsRequest;
        type Response = DeleteGroupsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::DeleteGroups,
            min: 0,
            max: 2,
        };

        async fn handle(
            ctx: &RequestContext,
            request: DeleteGroupsRequest,
        ) -> Option<DeleteGroupsResponse> {
            Some(handle(ctx, request))
        }

        fn authorize(
            a: &Auth<'_>,
            request: &mut DeleteGroupsRequest,
            denied: &mut Denied,
        ) -> Result<(), DeleteGroupsResponse> {
            request.groups_names.retain(|g| {
                let ok = a.group(op::DELETE, &g.0);
                if !ok {
                    crate::api::authorize::log_denied(a.ctx, &g.0);
                    denied.groups.push(g.clone());
                }
                ok
            });
            Ok(())
        }

        fn complete(_a: &Auth<'_>, denied: Denied, response: &mut DeleteGroupsResponse) {
            use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
            for group_id in denied.groups {
                response.results.push(build!(DeletableGroupResult {
                    group_id,
                    error_code: ResponseError::GroupAuthorizationFailed.code()
                }));
            }
        }
    }
}
