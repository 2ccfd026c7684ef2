//! ApiVersions (key 18): the versions of every API, straight from the registry.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::{RequestContext, APIS};

pub fn handle(_ctx: &RequestContext, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    response(0)
}

/// The response, with an error code; also sent (as v0) to a client whose ApiVersions
/// version is unsupported, so it can retry with one we serve (KIP-511).
pub fn response(error_code: i16) -> ApiVersionsResponse {
    build!(ApiVersionsResponse {
        error_code,
        api_keys: APIS
            .iter()
            .map(|s| build!(ApiVersion {
                api_key: s.key as i16,
                min_version: s.min,
                max_version: s.max
            }))
            .collect(),
        finalized_features_epoch: -1
    })
}

pub fn unsupported_version() -> ApiVersionsResponse {
    response(ResponseError::UnsupportedVersion.code())
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    impl crate::api::Api for super::Handler {
        type Request = ApiVersionsRequest;
        type Response = ApiVersionsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::ApiVersions,
            min: 0,
            max: 4,
        };

        async fn handle(
            ctx: &RequestContext,
            request: ApiVersionsRequest,
        ) -> Option<ApiVersionsResponse> {
            Some(handle(ctx, request))
        }
    }
}
