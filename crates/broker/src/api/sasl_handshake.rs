//! SaslHandshake: the client names its SASL mechanism. Answered by the connection itself
//! (`security::Session`), which holds the authentication state. v0 is listed because
//! librdkafka before 2.x's newer releases (Debian's 2.0.2, kcat) enables SASL only when
//! the broker's range includes it, then uses v1 with SaslAuthenticate; a client that
//! really follows v0 with raw SASL tokens has them read as a bad frame and is closed.
use kafka_protocol::messages::ApiKey;

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};
    use kafka_protocol::messages::*;

    impl crate::api::Api for super::Handler {
        type Request = SaslHandshakeRequest;
        type Response = SaslHandshakeResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::SaslHandshake,
            min: 0,
            max: 1,
        };

        async fn handle(
            _ctx: &RequestContext,
            _request: SaslHandshakeRequest,
        ) -> Option<SaslHandshakeResponse> {
            Some(build!(SaslHandshakeResponse {
                error_code: kafka_protocol::error::ResponseError::IllegalSaslState.code()
            }))
        }
    }
}
