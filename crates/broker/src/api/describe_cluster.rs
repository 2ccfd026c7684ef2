//! DescribeCluster (key 60): this broker, the cluster id and the controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, RequestContext};

pub fn handle(ctx: &RequestContext, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let broker = &ctx.broker;
    build!(DescribeClusterResponse {
        endpoint_type: request.endpoint_type,
        cluster_id: str_bytes(&broker.cluster_id()),
        controller_id: BrokerId(broker.controller_id()),
        brokers: broker
            .live_brokers()
            .into_iter()
            .map(|b| {
                let (host, port) = b.endpoint(&ctx.listener);
                build!(DescribeClusterBroker {
                    broker_id: BrokerId(b.node_id),
                    host: str_bytes(host),
                    port: port,
                    rack: b.rack.as_deref().map(str_bytes)
                })
            })
            .collect(),
        cluster_authorized_operations: i32::MIN
    })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::security::acl::op;
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = DescribeClusterRequest;
        type Response = DescribeClusterResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::DescribeCluster,
            min: 0,
            max: 1,
        };
        const CLUSTER_OPERATION: Option<i8> = Some(op::DESCRIBE);

        async fn handle(
            ctx: &RequestContext,
            request: DescribeClusterRequest,
        ) -> Option<DescribeClusterResponse> {
            Some(handle(ctx, request))
        }

        fn error_response(
            _ctx: &RequestContext,
            _request: &DescribeClusterRequest,
            error: ResponseError,
        ) -> DescribeClusterResponse {
            build!(DescribeClusterResponse {
                error_code: error.code(),
                error_message: crate::api::authorize::message_of(error)
            })
        }
    }
}
