//! DeleteAcls: removes every entry that matches each filter and lists what it removed
//! (the caller needs ALTER on the cluster, checked in `authorize`).

use gregor_cluster::MetadataRecord;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{ApiKey, DeleteAclsRequest, DeleteAclsResponse};

use super::{str_bytes, RequestContext};
use crate::security::acl::AclFilter;

pub async fn handle(ctx: &RequestContext, r: DeleteAclsRequest) -> DeleteAclsResponse {
    let image = ctx.image();
    let mut records = Vec::new();
    let mut filter_results: Vec<DeleteAclsFilterResult> = Vec::new();
    for f in r.filters {
        let filter = AclFilter {
            resource_type: f.resource_type_filter,
            resource_name: f.resource_name_filter.map(|s| s.to_string()),
            pattern_type: f.pattern_type_filter,
            principal: f.principal_filter.map(|s| s.to_string()),
            host: f.host_filter.map(|s| s.to_string()),
            operation: f.operation,
            permission: f.permission_type,
        };
        let matching_acls = image
            .acls()
            .filter(|a| filter.matches(a))
            .map(|acl| {
                if !records
                    .iter()
                    .any(|r| matches!(r, MetadataRecord::RemoveAcl { acl: x } if x == acl))
                {
                    records.push(MetadataRecord::RemoveAcl { acl: acl.clone() });
                }
                build!(DeleteAclsMatchingAcl {
                    resource_type: acl.resource_type,
                    resource_name: str_bytes(&acl.resource_name),
                    pattern_type: acl.pattern_type,
                    principal: str_bytes(&acl.principal),
                    host: str_bytes(&acl.host),
                    operation: acl.operation,
                    permission_type: acl.permission
                })
            })
            .collect();
        filter_results.push(build!(DeleteAclsFilterResult { matching_acls }));
    }
    if !records.is_empty() {
        let count = records.len();
        if let Err(e) = ctx.broker.commit_records(records).await {
            let code = crate::error::error_code(&e);
            for f in &mut filter_results {
                f.error_code = code;
                f.error_message = Some(str_bytes(&e.to_string()));
                f.matching_acls.clear();
            }
        } else {
            tracing::info!(principal = %ctx.caller.principal, count, "ACLs deleted");
        }
    }
    build!(DeleteAclsResponse { filter_results })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::security::acl::op;
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = DeleteAclsRequest;
        type Response = DeleteAclsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::DeleteAcls,
            min: 1,
            max: 3,
        };
        const CLUSTER_OPERATION: Option<i8> = Some(op::ALTER);

        async fn handle(
            ctx: &RequestContext,
            request: DeleteAclsRequest,
        ) -> Option<DeleteAclsResponse> {
            Some(handle(ctx, request).await)
        }

        fn error_response(
            _ctx: &RequestContext,
            request: &DeleteAclsRequest,
            error: ResponseError,
        ) -> DeleteAclsResponse {
            build!(DeleteAclsResponse {
                filter_results: request
                    .filters
                    .iter()
                    .map(|_| build!(
                        kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult {
                            error_code: error.code(),
                            error_message: crate::api::authorize::message_of(error)
                        }
                    ))
                    .collect()
            })
        }
    }
}
