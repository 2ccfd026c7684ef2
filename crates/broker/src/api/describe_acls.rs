//! DescribeAcls: the entries that match a filter, grouped by resource pattern (the caller
//! needs DESCRIBE on the cluster, checked in `authorize`).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{ApiKey, DescribeAclsRequest, DescribeAclsResponse};

use super::{str_bytes, RequestContext};
use crate::security::acl::AclFilter;

pub fn handle(ctx: &RequestContext, r: DescribeAclsRequest) -> DescribeAclsResponse {
    let filter = AclFilter {
        resource_type: r.resource_type_filter,
        resource_name: r.resource_name_filter.map(|s| s.to_string()),
        pattern_type: r.pattern_type_filter,
        principal: r.principal_filter.map(|s| s.to_string()),
        host: r.host_filter.map(|s| s.to_string()),
        operation: r.operation,
        permission: r.permission_type,
    };
    let image = ctx.image();
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for acl in image.acls().filter(|a| filter.matches(a)) {
        by_resource
            .entry((
                acl.resource_type,
                acl.resource_name.clone(),
                acl.pattern_type,
            ))
            .or_default()
            .push(build!(AclDescription {
                principal: str_bytes(&acl.principal),
                host: str_bytes(&acl.host),
                operation: acl.operation,
                permission_type: acl.permission
            }));
    }
    let resources = by_resource
        .into_iter()
        .map(|((resource_type, name, pattern_type), acls)| {
            build!(DescribeAclsResource {
                resource_type,
                resource_name: str_bytes(&name),
                pattern_type,
                acls
            })
        })
        .collect();
    build!(DescribeAclsResponse { resources })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::security::acl::op;
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = DescribeAclsRequest;
        type Response = DescribeAclsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::DescribeAcls,
            min: 1,
            max: 3,
        };
        const CLUSTER_OPERATION: Option<i8> = Some(op::DESCRIBE);

        async fn handle(
            ctx: &RequestContext,
            request: DescribeAclsRequest,
        ) -> Option<DescribeAclsResponse> {
            Some(handle(ctx, request))
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &DescribeAclsRequest,
            error: ResponseError,
        ) -> DescribeAclsResponse {
            build!(DescribeAclsResponse {
                error_code: error.code(),
                error_message: crate::api::authorize::message_of(error)
            })
        }
    }
}
