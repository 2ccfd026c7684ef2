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
