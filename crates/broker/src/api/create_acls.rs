//! CreateAcls: adds access-control entries (the caller needs ALTER on the cluster, checked
//! in `authorize`). Invalid entries get INVALID_REQUEST with the reason; the valid ones of
//! a request are committed together.

use gregor_cluster::{AclBinding, MetadataRecord};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{ApiKey, CreateAclsRequest, CreateAclsResponse};

use super::{str_bytes, RequestContext};
use crate::security::acl::invalid_binding;

pub async fn handle(ctx: &RequestContext, r: CreateAclsRequest) -> CreateAclsResponse {
    let mut results = Vec::new();
    let mut records = Vec::new();
    for c in &r.creations {
        let acl = AclBinding {
            resource_type: c.resource_type,
            resource_name: c.resource_name.to_string(),
            pattern_type: c.resource_pattern_type,
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: c.operation,
            permission: c.permission_type,
        };
        match invalid_binding(&acl) {
            Some(why) => results.push(build!(AclCreationResult {
                error_code: ResponseError::InvalidRequest.code(),
                error_message: Some(str_bytes(&why))
            })),
            None => {
                records.push(MetadataRecord::CreateAcl { acl });
                results.push(AclCreationResult::default());
            }
        }
    }
    if !records.is_empty() {
        let count = records.len();
        if let Err(e) = ctx.broker.commit_records(records).await {
            let (code, message) = (crate::error::error_code(&e), e.to_string());
            for res in results.iter_mut().filter(|x| x.error_code == 0) {
                res.error_code = code;
                res.error_message = Some(str_bytes(&message));
            }
        } else {
            tracing::info!(principal = %ctx.caller.principal, count, "ACLs created");
        }
    }
    build!(CreateAclsResponse { results })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::security::acl::op;
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = CreateAclsRequest;
        type Response = CreateAclsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::CreateAcls,
            min: 1,
            max: 3,
        };
        const CLUSTER_OPERATION: Option<i8> = Some(op::ALTER);

        async fn handle(
            ctx: &RequestContext,
            request: CreateAclsRequest,
        ) -> Option<CreateAclsResponse> {
            Some(handle(ctx, request).await)
        }

        fn error_response(
            _ctx: &RequestContext,
            request: &CreateAclsRequest,
            error: ResponseError,
        ) -> CreateAclsResponse {
            build!(CreateAclsResponse {
                results: request
                    .creations
                    .iter()
                    .map(|_| build!(
                        kafka_protocol::messages::create_acls_response::AclCreationResult {
                            error_code: error.code(),
                            error_message: crate::api::authorize::message_of(error)
                        }
                    ))
                    .collect()
            })
        }
    }
}
