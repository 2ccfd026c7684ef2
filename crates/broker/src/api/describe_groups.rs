//! DescribeGroups (key 15): state, protocol and members of groups.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{ApiKey, DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, RequestContext};

pub fn handle(ctx: &RequestContext, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|id| match ctx.groups().describe(&id.0) {
            None => build!(DescribedGroup {
                group_id: id,
                group_state: str_bytes("Dead"),
                authorized_operations: i32::MIN
            }),
            Some(g) => build!(DescribedGroup {
                error_code: if id.0.is_empty() {
                    ResponseError::InvalidGroupId.code()
                } else {
                    0
                },
                group_id: id,
                group_state: str_bytes(g.state.name()),
                protocol_type: str_bytes(&g.protocol_type),
                protocol_data: str_bytes(&g.protocol),
                members: g
                    .members
                    .into_iter()
                    .map(|m| build!(DescribedGroupMember {
                        member_id: StrBytes::from_string(m.member_id),
                        group_instance_id: if ctx.version >= 4 {
                            m.instance_id.map(StrBytes::from_string)
                        } else {
                            None
                        },
                        client_id: StrBytes::from_string(m.client_id),
                        client_host: StrBytes::from_string(m.client_host),
                        member_metadata: m.metadata,
                        member_assignment: m.assignment
                    }))
                    .collect(),
                authorized_operations: i32::MIN
            }),
        })
        .collect();
    build!(DescribeGroupsResponse { groups })
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
        type Request = DescribeGroupsRequest;
        type Response = DescribeGroupsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::DescribeGroups,
            min: 0,
            max: 5,
        };

        async fn handle(
            ctx: &RequestContext,
            request: DescribeGroupsRequest,
        ) -> Option<DescribeGroupsResponse> {
            Some(handle(ctx, request))
        }

        fn complete(a: &Auth<'_>, _denied: Denied, response: &mut DescribeGroupsResponse) {
            use kafka_protocol::messages::describe_groups_response::DescribedGroup;
            for g in &mut response.groups {
                if !a.group(op::DESCRIBE, &g.group_id.0) {
                    *g = build!(DescribedGroup {
                        group_id: g.group_id.clone(),
                        error_code: ResponseError::GroupAuthorizationFailed.code()
                    });
                }
            }
        }
    }
}
