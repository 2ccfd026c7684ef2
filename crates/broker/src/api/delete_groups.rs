//! DeleteGroups (key 42): remove empty groups and their committed offsets.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{ApiKey, DeleteGroupsRequest, DeleteGroupsResponse};

use super::{ApiSpec, RequestContext};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DeleteGroups,
    min: 0,
    max: 2,
};

pub fn handle(ctx: &RequestContext, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = request
        .groups_names
        .into_iter()
        .map(|g| {
            let error_code = ctx.broker.groups.delete(ctx.broker.as_ref(), &g.0);
            build!(DeletableGroupResult {
                group_id: g,
                error_code
            })
        })
        .collect();
    build!(DeleteGroupsResponse { results })
}
