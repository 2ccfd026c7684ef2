//! A new leader whose high watermark has not yet reached the start of its epoch answers
//! ListOffsets LATEST with OFFSET_NOT_AVAILABLE (as Kafka does since KIP-207), not with an
//! old high watermark below records that were already acknowledged.

mod common;

use std::sync::Arc;

use gregor_broker::api;
use gregor_broker::state::Broker;
use gregor_protocol::batch::build_batch;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

/// (error code, offset) of one ListOffsets look-up of partition 0 of `t`.
async fn list_offset(broker: &Arc<Broker>, timestamp: i64) -> (i16, i64) {
    let version = 7;
    let mut p = ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = timestamp;
    p.current_leader_epoch = -1;
    let mut topic = ListOffsetsTopic::default();
    topic.name = TopicName(StrBytes::from_static_str("t"));
    topic.partitions = vec![p];
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics = vec![topic];
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let ctx = common::context(broker, ApiKey::ListOffsets, version, rx);
    let Some(ResponseKind::ListOffsets(response)) =
        api::dispatch(&ctx, RequestKind::ListOffsets(request)).await
    else {
        panic!("ListOffsets was not answered with a ListOffsets response");
    };
    let r = &response.topics[0].partitions[0];
    (r.error_code, r.offset)
}

#[tokio::test]
async fn a_new_leader_does_not_answer_an_old_high_watermark() {
    let (broker, partition, _dir) = common::broker_with_topic_t().await;
    let me = broker.config.node_id;
    let values: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8]).collect();
    partition
        .log()
        .append_replicated(&build_batch(0, 1, &values), 1)
        .expect("append");
    let log_end = partition.log().log_end();
    assert_eq!(log_end, 5);
    assert_eq!(
        list_offset(&broker, -1).await,
        (0, 5),
        "alone, the latest is the log end"
    );

    // It becomes the leader of a new epoch with a follower it has not heard from: its
    // high watermark restarts below the records it holds.
    let now = 2;
    partition.set_role(&common::two_replicas(me, me, 1), now);
    let hw = partition.log().high_watermark();
    assert!(
        hw < log_end,
        "the test needs a lagging high watermark, got {hw}"
    );
    assert_eq!(partition.high_watermark_lagging(), Some((hw, log_end)));
    let offset_not_available = kafka_protocol::error::ResponseError::OffsetNotAvailable.code();
    assert_eq!(list_offset(&broker, -1).await, (offset_not_available, -1));
    // Earliest is still known; a timestamp past what may be read is not.
    assert_eq!(list_offset(&broker, -2).await, (0, 0));
    assert_eq!(list_offset(&broker, 4).await.0, offset_not_available);

    // The follower fetches at the log end: the high watermark reaches the epoch's start.
    partition.follower_fetched(me + 1, log_end, now);
    assert_eq!(partition.high_watermark_lagging(), None);
    assert_eq!(list_offset(&broker, -1).await, (0, 5));
    assert_eq!(list_offset(&broker, 4).await, (0, 3));
}
