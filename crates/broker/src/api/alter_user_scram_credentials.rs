//! AlterUserScramCredentials: sets or deletes users' SCRAM credentials. Clients send the
//! salted password (never the password); the broker keeps only the keys derived from it.
//! The caller needs ALTER on the cluster, checked in `authorize`.

use gregor_cluster::MetadataRecord;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
};

use super::{str_bytes, RequestContext};
use crate::security::scram::{self, Mechanism};

/// A user's change: the record to commit, or why not.
type Outcome = Result<MetadataRecord, (ResponseError, String)>;

pub async fn handle(
    ctx: &RequestContext,
    r: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let image = ctx.image();
    let mut names: Vec<String> = r.deletions.iter().map(|d| d.name.to_string()).collect();
    names.extend(r.upsertions.iter().map(|u| u.name.to_string()));
    let mut results: Vec<(String, Outcome)> = Vec::new();
    for d in &r.deletions {
        let user = d.name.to_string();
        let outcome = match Mechanism::from_code(d.mechanism) {
            None => Err((
                ResponseError::UnsupportedSaslMechanism,
                "unknown SCRAM mechanism".into(),
            )),
            Some(m) if image.scram_credential(&user, m.name()).is_none() => Err((
                ResponseError::ResourceNotFound,
                format!(
                    "attempt to delete a user credential that does not exist: {user} {}",
                    m.name()
                ),
            )),
            Some(m) => Ok(MetadataRecord::RemoveScramCredential {
                user: user.clone(),
                mechanism: m.name().to_string(),
            }),
        };
        results.push((user, outcome));
    }
    for u in &r.upsertions {
        results.push((u.name.to_string(), upsertion(u)));
    }
    // A user named twice in one request gets DUPLICATE_RESOURCE for each, as in Kafka.
    for (user, outcome) in &mut results {
        if names.iter().filter(|n| *n == user).count() > 1 {
            *outcome = Err((
                ResponseError::DuplicateResource,
                "the user appears twice in the request".into(),
            ));
        }
    }
    let records: Vec<MetadataRecord> = results
        .iter()
        .filter_map(|(_, o)| o.as_ref().ok().cloned())
        .collect();
    let commit = if records.is_empty() {
        Ok(())
    } else {
        ctx.broker.commit_records(records).await
    };
    let results = results
        .into_iter()
        .map(|(user, outcome)| {
            let (code, message) = match (&outcome, &commit) {
                (Err((e, m)), _) => (e.code(), Some(str_bytes(m))),
                (Ok(_), Err(e)) => (crate::error::error_code(e), Some(str_bytes(&e.to_string()))),
                (Ok(_), Ok(())) => {
                    tracing::info!(principal = %ctx.caller.principal, user, "SCRAM credential changed");
                    (0, None)
                }
            };
            build!(AlterUserScramCredentialsResult {
                user: str_bytes(&user),
                error_code: code,
                error_message: message
            })
        })
        .collect();
    build!(AlterUserScramCredentialsResponse { results })
}

/// The record that stores an upserted credential, or why it is refused.
fn upsertion(u: &ScramCredentialUpsertion) -> Outcome {
    let user = u.name.to_string();
    let iterations = u.iterations;
    match Mechanism::from_code(u.mechanism) {
        None => Err((
            ResponseError::UnsupportedSaslMechanism,
            "unknown SCRAM mechanism".into(),
        )),
        Some(_) if user.is_empty() => Err((
            ResponseError::UnacceptableCredential,
            "the user name is empty".into(),
        )),
        Some(_)
            if !(scram::ITERATIONS_MIN as i32..=scram::ITERATIONS_MAX as i32)
                .contains(&iterations) =>
        {
            Err((
                ResponseError::UnacceptableCredential,
                format!(
                    "{iterations} iterations; use {} to {}",
                    scram::ITERATIONS_MIN,
                    scram::ITERATIONS_MAX
                ),
            ))
        }
        Some(_) if u.salt.is_empty() || u.salted_password.is_empty() => Err((
            ResponseError::UnacceptableCredential,
            "the salt or salted password is empty".into(),
        )),
        Some(m) => Ok(MetadataRecord::ScramCredential {
            user: user.clone(),
            mechanism: m.name().to_string(),
            credential: scram::credential_from_salted(
                m,
                &u.salted_password,
                &u.salt,
                iterations as u32,
            ),
        }),
    }
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::security::acl::op;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::protocol::StrBytes;

    impl crate::api::Api for super::Handler {
        type Request = AlterUserScramCredentialsRequest;
        type Response = AlterUserScramCredentialsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::AlterUserScramCredentials,
            min: 0,
            max: 0,
        };
        const CLUSTER_OPERATION: Option<i8> = Some(op::ALTER);

        async fn handle(
            ctx: &RequestContext,
            request: AlterUserScramCredentialsRequest,
        ) -> Option<AlterUserScramCredentialsResponse> {
            Some(handle(ctx, request).await)
        }

        fn error_response(
            _ctx: &RequestContext,
            request: &AlterUserScramCredentialsRequest,
            error: ResponseError,
        ) -> AlterUserScramCredentialsResponse {
            let mut users: Vec<StrBytes> =
                request.deletions.iter().map(|d| d.name.clone()).collect();
            users.extend(request.upsertions.iter().map(|u| u.name.clone()));
            users.dedup();
            build!(AlterUserScramCredentialsResponse {
            results: users
                .into_iter()
                .map(|user| build!(
                    kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult {
                        user,
                        error_code: error.code(),
                        error_message: crate::api::authorize::message_of(error)
                    }
                ))
                .collect()
        })
        }
    }
}
