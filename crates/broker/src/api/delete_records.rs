//! DeleteRecords (key 21): move partitions' log start offsets forward (-1: to the high
//! watermark); whole segments below the new start are deleted.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};

use super::RequestContext;
use crate::error::storage_error_code;
use crate::state::now_ms;

pub fn handle(ctx: &RequestContext, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut r = build!(DeleteRecordsPartitionResult { partition_index: p.partition_index, low_watermark: -1 });
                    let Some(partition) = ctx.partitions().get(&t.name.0, p.partition_index) else {
                        r.error_code = ResponseError::UnknownTopicOrPartition.code();
                        return r;
                    };
                    // Only the leader deletes (Kafka's rule): a follower's high watermark lags.
                    if let Some(refused) = partition.leadership().refusal(-1) {
                        r.error_code = refused.code();
                        return r;
                    }
                    let mut log = partition.log();
                    let target = if p.offset == -1 { log.offsets().high_watermark } else { p.offset };
                    match log.delete_records(target, now_ms()) {
                        Ok(start) => {
                            r.low_watermark = start;
                            tracing::info!(topic = %partition.topic, partition = partition.index, log_start = start, "records deleted on request");
                        }
                        Err(e) => r.error_code = storage_error_code(&e),
                    }
                    r
                })
                .collect();
            build!(DeleteRecordsTopicResult { name: t.name, partitions })
        })
        .collect();
    build!(DeleteRecordsResponse { topics })
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
        type Request = DeleteRecordsRequest;
        type Response = DeleteRecordsResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::DeleteRecords,
            min: 0,
            max: 2,
        };

        async fn handle(
            ctx: &RequestContext,
            request: DeleteRecordsRequest,
        ) -> Option<DeleteRecordsResponse> {
            Some(handle(ctx, request))
        }

        fn authorize(
            a: &Auth<'_>,
            request: &mut DeleteRecordsRequest,
            denied: &mut Denied,
        ) -> Result<(), DeleteRecordsResponse> {
            request.topics.retain(|t| {
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                a.keep(denied, op::DELETE, &t.name, uuid::Uuid::nil(), parts)
            });
            Ok(())
        }

        fn complete(_a: &Auth<'_>, denied: Denied, response: &mut DeleteRecordsResponse) {
            use kafka_protocol::messages::delete_records_response::{
                DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
            };
            let t = crate::api::authorize::TOPIC_DENIED.code();
            for (name, _, parts) in denied.topics {
                response.topics.push(build!(DeleteRecordsTopicResult {
                    name,
                    partitions: parts
                        .into_iter()
                        .map(|partition_index| build!(DeleteRecordsPartitionResult {
                            partition_index,
                            low_watermark: -1,
                            error_code: t
                        }))
                        .collect()
                }));
            }
        }
    }
}
