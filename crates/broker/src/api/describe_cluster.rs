//! DescribeCluster (key 60): this broker, the cluster id and the controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, ApiSpec, RequestContext};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DescribeCluster,
    min: 0,
    max: 1,
};

pub fn handle(ctx: &RequestContext, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let c = &ctx.broker.config;
    build!(DescribeClusterResponse {
        endpoint_type: request.endpoint_type,
        cluster_id: str_bytes(&ctx.broker.cluster_id),
        controller_id: BrokerId(c.node_id),
        brokers: vec![build!(DescribeClusterBroker {
            broker_id: BrokerId(c.node_id),
            host: str_bytes(&c.advertised_host),
            port: i32::from(c.advertised_port),
            rack: None
        })],
        cluster_authorized_operations: i32::MIN
    })
}
