//! ListGroups (key 16): every group, optionally filtered by state (v4+) and type (v5+).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{ApiKey, GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{str_bytes, RequestContext};

pub fn handle(ctx: &RequestContext, request: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let groups = ctx
        .groups()
        .list()
        .into_iter()
        .filter(|(_, _, state)| states.is_empty() || states.contains(&state.name().to_lowercase()))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|(id, protocol_type, state)| {
            let mut g = build!(ListedGroup {
                group_id: GroupId(str_bytes(&id)),
                protocol_type: str_bytes(&protocol_type)
            });
            if ctx.version >= 4 {
                g.group_state = str_bytes(state.name());
            }
            if ctx.version >= 5 {
                g.group_type = str_bytes("classic");
            }
            g
        })
        .collect();
    build!(ListGroupsResponse { groups })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::api::authorize::Auth;
    use crate::api::authorize::Denied;
    use crate::security::acl::op;

    impl crate::api::Api for super::Handler {
        type Request = ListGroupsRequest;
        type Response = ListGroupsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::ListGroups,
            min: 0,
            max: 5,
        };

        async fn handle(
            ctx: &RequestContext,
            request: ListGroupsRequest,
        ) -> Option<ListGroupsResponse> {
            Some(handle(ctx, request))
        }

        /// Without DESCRIBE on the cluster, only the groups the caller may describe.
        fn complete(a: &Auth<'_>, _denied: Denied, response: &mut ListGroupsResponse) {
            if !a.cluster(op::DESCRIBE) {
                response
                    .groups
                    .retain(|g| a.group(op::DESCRIBE, &g.group_id.0));
            }
        }
    }
}
