//! ListOffsets (key 2): earliest, latest, max-timestamp and by-timestamp look-ups.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};

use super::RequestContext;
use crate::error::storage_error_code;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub fn handle(ctx: &RequestContext, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let request_isolation = request.isolation_level;
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut r = build!(ListOffsetsPartitionResponse { partition_index: p.partition_index, timestamp: -1, offset: -1, leader_epoch: -1 });
                    let Some(partition) = ctx.partitions().get(&topic.name.0, p.partition_index) else {
                        r.error_code = ResponseError::UnknownTopicOrPartition.code();
                        return r;
                    };
                    let leadership = partition.leadership();
                    let epoch = leadership.leader_epoch.get();
                    if let Some(refused) = leadership.refusal(p.current_leader_epoch) {
                        r.error_code = refused.code();
                        return r;
                    }
                    // A new leader whose high watermark is still below the start of its
                    // epoch cannot tell the latest offset yet (Kafka's KIP-207 rule):
                    // answering its old high watermark could send a client backwards.
                    let lagging = partition.high_watermark_lagging();
                    let log = partition.log();
                    let offsets = log.offsets();
                    let fetchable = if request_isolation == 1 { offsets.last_stable } else { offsets.high_watermark };
                    let found = match p.timestamp {
                        // read_committed consumers start at the last stable offset.
                        LATEST if lagging.is_some() => Ok(None),
                        LATEST => Ok(Some((fetchable, -1))),
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((offsets.log_start, -1))),
                        // A record past what consumers may read is not answered.
                        MAX_TIMESTAMP => log.max_timestamp_record().map(|f| f.filter(|&(o, _)| o < fetchable)),
                        ts if ts >= 0 => log.offset_for_timestamp(ts).map(|f| f.filter(|&(o, _)| o < fetchable)),
                        _ => {
                            r.error_code = ResponseError::InvalidRequest.code();
                            return r;
                        }
                    };
                    drop(log);
                    if let (Ok(None), Some((hw, start))) = (&found, lagging) {
                        if p.timestamp != EARLIEST && p.timestamp != EARLIEST_LOCAL {
                            tracing::debug!(topic = %partition.topic, partition = partition.index, high_watermark = hw, epoch_start = start, "a new leader's high watermark is behind its epoch's start; answering OFFSET_NOT_AVAILABLE");
                            r.error_code = ResponseError::OffsetNotAvailable.code();
                            return r;
                        }
                    }
                    match found {
                        Ok(Some((offset, timestamp))) => {
                            r.offset = offset;
                            r.timestamp = timestamp;
                            if ctx.version >= 4 {
                                r.leader_epoch = epoch;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "offset look-up failed");
                            r.error_code = storage_error_code(&e);
                        }
                    }
                    r
                })
                .collect();
            build!(ListOffsetsTopicResponse { name: topic.name, partitions })
        })
        .collect();
    build!(ListOffsetsResponse { topics })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use crate::api::authorize::Auth;
    use crate::api::authorize::Denied;
    use crate::security::acl::op;

    impl crate::api::Api for super::Handler {
        type Request = ListOffsetsRequest;
        type Response = ListOffsetsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::ListOffsets,
            min: 1,
            max: 8,
        };

        async fn handle(
            ctx: &RequestContext,
            request: ListOffsetsRequest,
        ) -> Option<ListOffsetsResponse> {
            Some(handle(ctx, request))
        }

        fn authorize(
            a: &Auth<'_>,
            request: &mut ListOffsetsRequest,
            denied: &mut Denied,
        ) -> Result<(), ListOffsetsResponse> {
            request.topics.retain(|t| {
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                a.keep(denied, op::DESCRIBE, &t.name, uuid::Uuid::nil(), parts)
            });
            Ok(())
        }

        fn complete(_a: &Auth<'_>, denied: Denied, response: &mut ListOffsetsResponse) {
            use kafka_protocol::messages::list_offsets_response::{
                ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
            };
            let t = crate::api::authorize::TOPIC_DENIED.code();
            for (name, _, parts) in denied.topics {
                response.topics.push(build!(ListOffsetsTopicResponse {
                    name,
                    partitions: parts
                        .into_iter()
                        .map(|partition_index| build!(ListOffsetsPartitionResponse {
                            partition_index,
                            error_code: t,
                            timestamp: -1,
                            offset: -1,
                            leader_epoch: -1
                        }))
                        .collect()
                }));
            }
        }
    }
}
