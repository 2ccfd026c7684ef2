//! Produce (key 0): validate each partition's record batches, assign offsets, append,
//! fsync per the flush policy, and answer once `acks` allows.

use std::sync::Arc;

use bytes::Bytes;
use gregor_protocol::batch::{self, BatchError, BatchHeader};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::{ApiSpec, RequestContext};
use crate::error::storage_error_code;
use crate::state::{now_ms, Partition};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::Produce,
    min: 3,
    max: 11,
};

pub async fn handle(ctx: &RequestContext, request: ProduceRequest) -> Option<ProduceResponse> {
    let acks = request.acks;
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(request.timeout_ms.clamp(0, 300_000) as u64);
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let known = if acks == 0 || acks == 1 || acks == -1 {
            ctx.broker.get_or_auto_create(&name, true).ok().flatten()
        } else {
            None
        };
        let mut partition_responses = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let mut r = build!(PartitionProduceResponse {
                index: data.index,
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1
            });
            if !(acks == 0 || acks == 1 || acks == -1) {
                r.error_code = ResponseError::InvalidRequiredAcks.code();
            } else if known.is_none() {
                r.error_code = ResponseError::UnknownTopicOrPartition.code();
            } else if let Some(partition) = ctx.broker.partition(&name, data.index) {
                produce_to(
                    &partition,
                    ctx.version,
                    data.records.unwrap_or_default(),
                    acks,
                    deadline,
                    &mut r,
                )
                .await;
            } else {
                r.error_code = ResponseError::UnknownTopicOrPartition.code();
            }
            if r.error_code != 0 {
                crate::metrics::error_code(ApiKey::Produce, r.error_code);
                tracing::debug!(topic = %name, partition = data.index, error_code = r.error_code, message = ?r.error_message, "produce refused");
            }
            partition_responses.push(r);
        }
        responses.push(build!(TopicProduceResponse {
            name: topic.name,
            topic_id: topic.topic_id,
            partition_responses
        }));
    }
    if acks == 0 {
        return None;
    }
    Some(build!(ProduceResponse { responses }))
}

/// Validates, appends and (if the flush policy says so) fsyncs one partition's records.
async fn produce_to(
    partition: &Arc<Partition>,
    version: i16,
    records: Bytes,
    acks: i16,
    deadline: tokio::time::Instant,
    r: &mut PartitionProduceResponse,
) {
    let settings = partition.settings();
    let (leads, leader_epoch, isr, replicated) = partition.leadership();
    if !leads {
        r.error_code = ResponseError::NotLeaderOrFollower.code();
        r.error_message = Some(StrBytes::from_static_str(
            "this broker does not lead the partition; refresh metadata",
        ));
        return;
    }
    if acks == -1 && isr < settings.min_insync_replicas {
        r.error_code = ResponseError::NotEnoughReplicas.code();
        r.error_message = Some(StrBytes::from_string(format!(
            "{isr} in-sync replica(s), min.insync.replicas is {}",
            settings.min_insync_replicas
        )));
        return;
    }
    let headers = match validate(&records, settings.max_message_bytes, settings.compacted) {
        Ok(h) => h,
        Err((code, message)) => {
            r.error_code = code;
            r.error_message = Some(StrBytes::from_string(message));
            return;
        }
    };
    let mut bytes = records.to_vec();
    let now = now_ms();
    let stamp = settings.log_append_time.then_some(now);
    let appended = {
        let mut log = partition.log();
        let result = log.append(&mut bytes, &headers, leader_epoch, stamp, now);
        if version >= 5 {
            r.log_start_offset = log.log_start();
        }
        result
    };
    match appended {
        Ok(info) if info.duplicate => {
            // A retry of a batch already stored: its original offsets, nothing appended.
            tracing::debug!(topic = %partition.topic, partition = partition.index, base_offset = info.base_offset, "duplicate idempotent batch answered with its original offset");
            r.base_offset = info.base_offset;
        }
        Ok(info) => {
            if info.flush_due {
                if let Err(e) = partition.make_durable(info.last_offset + 1).await {
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "fsync failed; the append is not acknowledged");
                    r.error_code = storage_error_code(&e);
                    r.error_message = Some(StrBytes::from_string(e.to_string()));
                    return;
                }
            }
            partition.wake_waiters();
            if replicated {
                // Followers fetch what was just written; the high watermark may move now
                // (an ISR of the leader alone) or on their next fetches.
                partition.update_high_watermark();
            }
            if acks == -1
                && replicated
                && !wait_for_replicas(partition, info.last_offset + 1, deadline).await
            {
                r.error_code = ResponseError::RequestTimedOut.code();
                r.error_message = Some(StrBytes::from_static_str(
                    "the in-sync replicas did not all copy the records within the request timeout",
                ));
                return;
            }
            partition.metrics.produce_records.increment(info.records);
            partition
                .metrics
                .produce_bytes
                .increment(bytes.len() as u64);
            r.base_offset = info.base_offset;
            r.log_append_time_ms = stamp.unwrap_or(-1);
        }
        Err(e @ gregor_storage::StorageError::Sequence(_)) => {
            tracing::debug!(topic = %partition.topic, partition = partition.index, error = %e, "idempotent batch refused");
            r.error_code = storage_error_code(&e);
            r.error_message = Some(StrBytes::from_string(e.to_string()));
        }
        Err(e) => {
            tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "append failed");
            r.error_code = storage_error_code(&e);
            r.error_message = Some(StrBytes::from_string(e.to_string()));
        }
    }
}

/// Waits until the high watermark reaches `offset` (every in-sync replica holds the
/// records), or the deadline passes, or this broker stops leading the partition.
async fn wait_for_replicas(
    partition: &Partition,
    offset: i64,
    deadline: tokio::time::Instant,
) -> bool {
    let mut hw = partition.hw_watch.subscribe();
    loop {
        if *hw.borrow_and_update() >= offset {
            return true;
        }
        if !partition.leadership().0 {
            return false;
        }
        tokio::select! {
            changed = hw.changed() => if changed.is_err() { return false; },
            _ = tokio::time::sleep_until(deadline) => return *hw.borrow() >= offset,
            // Leadership changes do not move the watch; look again now and then.
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
    }
}

/// Splits a partition's records into batches and validates each; the batches must fill
/// the records exactly.
fn validate(
    records: &[u8],
    max_message_bytes: usize,
    compacted: bool,
) -> Result<Vec<(usize, BatchHeader)>, (i16, String)> {
    if records.is_empty() {
        return Err((
            ResponseError::CorruptMessage.code(),
            "no record batch in the request".into(),
        ));
    }
    let mut headers = Vec::new();
    let mut at = 0usize;
    while at < records.len() {
        let rest = &records[at..];
        match batch::BatchHeader::parse(rest) {
            Ok(h) if h.total_bytes() > max_message_bytes => {
                return Err((
                    ResponseError::MessageTooLarge.code(),
                    format!(
                        "batch of {} bytes exceeds max.message.bytes ({max_message_bytes})",
                        h.total_bytes()
                    ),
                ))
            }
            _ => {}
        }
        let header = batch::validate_produce_batch(rest).map_err(|e| {
            let code = match e {
                BatchError::BadMagic(_) => ResponseError::UnsupportedForMessageFormat.code(),
                BatchError::CountMismatch { .. } | BatchError::BadRecords(_) => {
                    ResponseError::InvalidRecord.code()
                }
                _ => ResponseError::CorruptMessage.code(),
            };
            (code, e.to_string())
        })?;
        if compacted
            && !gregor_protocol::compact::all_records_keyed(&rest[..header.total_bytes()])
                .unwrap_or(false)
        {
            return Err((
                ResponseError::InvalidRecord.code(),
                "compacted topics require a key on every record".into(),
            ));
        }
        headers.push((at, header));
        at += header.total_bytes();
    }
    Ok(headers)
}
