//! WriteTxnMarkers (key 27): a transaction coordinator on another broker asks this one to
//! end a transaction in the partitions it leads, with a commit or abort marker.

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ApiKey, WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::RequestContext;

pub fn handle(ctx: &RequestContext, request: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let markers = request
        .markers
        .into_iter()
        .map(|m| {
            let topics = m
                .topics
                .iter()
                .map(|t| {
                    let partitions = t
                        .partition_indexes
                        .iter()
                        .map(|&index| {
                            let error_code = match ctx.broker.write_marker_here(
                                &t.name.0,
                                index,
                                m.producer_id.0,
                                m.producer_epoch,
                                m.transaction_result,
                                m.coordinator_epoch,
                            ) {
                                Ok(()) => 0,
                                Err(e) => {
                                    tracing::warn!(topic = %t.name.0, partition = index, error = ?e, "transaction marker refused");
                                    e.code()
                                }
                            };
                            build!(WritableTxnMarkerPartitionResult {
                                partition_index: index,
                                error_code
                            })
                        })
                        .collect();
                    build!(WritableTxnMarkerTopicResult {
                        name: t.name.clone(),
                        partitions
                    })
                })
                .collect();
            build!(WritableTxnMarkerResult {
                producer_id: m.producer_id,
                topics
            })
        })
        .collect();
    build!(WriteTxnMarkersResponse { markers })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::security::acl::op;
    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = WriteTxnMarkersRequest;
        type Response = WriteTxnMarkersResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::WriteTxnMarkers,
            min: 1,
            max: 1,
        };
        const CLUSTER_OPERATION: Option<i8> = Some(op::CLUSTER_ACTION);

        async fn handle(
            ctx: &RequestContext,
            request: WriteTxnMarkersRequest,
        ) -> Option<WriteTxnMarkersResponse> {
            Some(handle(ctx, request))
        }

        fn error_response(
            _ctx: &RequestContext,
            request: &WriteTxnMarkersRequest,
            error: ResponseError,
        ) -> WriteTxnMarkersResponse {
            use kafka_protocol::messages::write_txn_markers_response::{
                WritableTxnMarkerPartitionResult, WritableTxnMarkerResult,
                WritableTxnMarkerTopicResult,
            };
            let code = error.code();
            build!(WriteTxnMarkersResponse {
                markers: request
                    .markers
                    .iter()
                    .map(|m| build!(WritableTxnMarkerResult {
                        producer_id: m.producer_id,
                        topics: m
                            .topics
                            .iter()
                            .map(|t| build!(WritableTxnMarkerTopicResult {
                                name: t.name.clone(),
                                partitions: t
                                    .partition_indexes
                                    .iter()
                                    .map(|&p| build!(WritableTxnMarkerPartitionResult {
                                        partition_index: p,
                                        error_code: code
                                    }))
                                    .collect()
                            }))
                            .collect()
                    }))
                    .collect()
            })
        }

        fn replicated_writes(
            ctx: &RequestContext,
            request: &WriteTxnMarkersRequest,
        ) -> Vec<std::sync::Arc<crate::state::Partition>> {
            request
                .markers
                .iter()
                .flat_map(|m| m.topics.iter())
                .flat_map(|t| {
                    t.partition_indexes
                        .iter()
                        .filter_map(|&p| ctx.partitions().get(&t.name.0, p))
                })
                .collect()
        }
    }
}
