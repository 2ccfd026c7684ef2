//! DescribeUserScramCredentials: which SCRAM mechanisms and iteration counts each user has
//! (never the keys). The caller needs DESCRIBE on the cluster, checked in `authorize`.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    ApiKey, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::{str_bytes, RequestContext};
use crate::security::scram::Mechanism;

pub fn handle(
    ctx: &RequestContext,
    r: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let image = ctx.image();
    let describe = |user: &str| -> Option<Vec<CredentialInfo>> {
        let infos: Vec<CredentialInfo> = [Mechanism::Sha256, Mechanism::Sha512]
            .iter()
            .filter_map(|m| {
                image.scram_credential(user, m.name()).map(|c| {
                    build!(CredentialInfo {
                        mechanism: m.code(),
                        iterations: c.iterations as i32
                    })
                })
            })
            .collect();
        (!infos.is_empty()).then_some(infos)
    };
    let results = match r.users.filter(|u| !u.is_empty()) {
        None => image
            .scram_users()
            .filter_map(|(user, _)| {
                describe(user).map(|credential_infos| {
                    build!(DescribeUserScramCredentialsResult {
                        user: str_bytes(user),
                        credential_infos
                    })
                })
            })
            .collect(),
        Some(users) => {
            let names: Vec<String> = users.iter().map(|u| u.name.to_string()).collect();
            names
                .iter()
                .map(|user| {
                    let mut res = build!(DescribeUserScramCredentialsResult {
                        user: str_bytes(user)
                    });
                    if names.iter().filter(|n| *n == user).count() > 1 {
                        res.error_code = ResponseError::DuplicateResource.code();
                        res.error_message = Some(str_bytes("the user is asked for twice"));
                    } else if let Some(infos) = describe(user) {
                        res.credential_infos = infos;
                    } else {
                        res.error_code = ResponseError::ResourceNotFound.code();
                        res.error_message = Some(str_bytes(&format!(
                            "attempt to describe a user credential that does not exist: {user}"
                        )));
                    }
                    res
                })
                .collect()
        }
    };
    build!(DescribeUserScramCredentialsResponse { results })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::security::acl::op;
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = DescribeUserScramCredentialsRequest;
        type Response = DescribeUserScramCredentialsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::DescribeUserScramCredentials,
            min: 0,
            max: 0,
        };
        const CLUSTER_OPERATION: Option<i8> = Some(op::DESCRIBE);

        async fn handle(
            ctx: &RequestContext,
            request: DescribeUserScramCredentialsRequest,
        ) -> Option<DescribeUserScramCredentialsResponse> {
            Some(handle(ctx, request))
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &DescribeUserScramCredentialsRequest,
            error: ResponseError,
        ) -> DescribeUserScramCredentialsResponse {
            build!(DescribeUserScramCredentialsResponse {
                error_code: error.code(),
                error_message: crate::api::authorize::message_of(error)
            })
        }
    }
}
