//! WriteTxnMarkers (key 27): a transaction coordinator on another broker asks this one to
//! end a transaction in the partitions it leads, with a commit or abort marker.

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ApiKey, WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::{ApiSpec, RequestContext};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::WriteTxnMarkers,
    min: 1,
    max: 1,
};

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
