//! CreateAcls: adds access-control entries (the caller needs ALTER on the cluster, checked
//! in `authorize`). Invalid entries get INVALID_REQUEST with the reason; the valid ones of
//! a request are committed together.

use gregor_cluster::{AclBinding, MetadataRecord};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{ApiKey, CreateAclsRequest, CreateAclsResponse};

use super::{str_bytes, ApiSpec, RequestContext};
use crate::security::acl::invalid_binding;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::CreateAcls,
    min: 1,
    max: 3,
};

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
