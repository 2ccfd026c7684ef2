//! SaslHandshake: the client names its SASL mechanism. Answered by the connection itself
//! (`security::Session`), which holds the authentication state; v0 (raw SASL tokens
//! without SaslAuthenticate) is not served, as in Kafka 4.
use kafka_protocol::messages::ApiKey;

use super::ApiSpec;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::SaslHandshake,
    min: 1,
    max: 1,
};
