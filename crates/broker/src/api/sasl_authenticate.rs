//! SaslAuthenticate: one SASL message each way. Answered by the connection itself
//! (`security::Session`); v1+ carries the session lifetime for re-authentication
//! (KIP-368).
use kafka_protocol::messages::ApiKey;

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};
    use kafka_protocol::messages::*;

    impl crate::api::Api for super::Handler {
        type Request = SaslAuthenticateRequest;
        type Response = SaslAuthenticateResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::SaslAuthenticate,
            min: 0,
            max: 2,
        };

        async fn handle(
            _ctx: &RequestContext,
            _request: SaslAuthenticateRequest,
        ) -> Option<SaslAuthenticateResponse> {
            Some(build!(SaslAuthenticateResponse {
                error_code: kafka_protocol::error::ResponseError::IllegalSaslState.code()
            }))
        }
    }
}
