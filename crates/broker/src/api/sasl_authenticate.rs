//! SaslAuthenticate: one SASL message each way. Answered by the connection itself
//! (`security::Session`); v1+ carries the session lifetime for re-authentication
//! (KIP-368).
use kafka_protocol::messages::ApiKey;

use super::ApiSpec;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::SaslAuthenticate,
    min: 0,
    max: 2,
};
