//! OffsetDelete (key 47): remove committed offsets for partitions the group no longer reads.

use bytes::Bytes;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::Decodable;

use super::{ApiSpec, RequestContext};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::OffsetDelete,
    min: 0,
    max: 0,
};

/// Whether any member's consumer-protocol subscription names `topic`.
fn subscribed(metadata: &[Bytes], topic: &str) -> bool {
    metadata.iter().any(|m| {
        let mut buf = m.clone();
        if buf.len() < 2 {
            return false;
        }
        let version = i16::from_be_bytes([buf[0], buf[1]]);
        let _ = bytes::Buf::get_i16(&mut buf);
        ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3))
            .is_ok_and(|s| s.topics.iter().any(|t| t.as_str() == topic))
    })
}

pub fn handle(ctx: &RequestContext, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let wanted: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    match ctx.broker.groups.delete_offsets(
        ctx.broker.as_ref(),
        &request.group_id.0,
        &wanted,
        subscribed,
    ) {
        Err(error_code) => build!(OffsetDeleteResponse { error_code }),
        Ok(codes) => {
            let mut codes = codes.into_iter();
            let topics = request
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            build!(OffsetDeleteResponsePartition {
                                partition_index: p.partition_index,
                                error_code: codes.next().unwrap_or(0)
                            })
                        })
                        .collect();
                    build!(OffsetDeleteResponseTopic {
                        name: t.name,
                        partitions
                    })
                })
                .collect();
            build!(OffsetDeleteResponse { topics })
        }
    }
}
