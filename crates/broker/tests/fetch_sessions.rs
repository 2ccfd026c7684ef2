//! Incremental fetch sessions (KIP-227) through the Fetch handler: a consumer of 200
//! partitions opens a session, then names only what changed and hears only what changed,
//! including while it long-polls.

mod common;

use std::sync::Arc;
use std::time::Duration;

use gregor_broker::api;
use gregor_broker::state::Broker;
use gregor_protocol::batch::build_batch;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const PARTITIONS: i32 = 200;
const VERSION: i16 = 12;

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str("many"))
}

fn fetch(
    id: i32,
    epoch: i32,
    parts: &[(i32, i64)],
    max_wait_ms: i32,
) -> kafka_protocol::messages::RequestKind {
    let mut r = FetchRequest::default();
    r.replica_id = BrokerId(-1);
    r.session_id = id;
    r.session_epoch = epoch;
    r.max_bytes = 1 << 20;
    r.max_wait_ms = max_wait_ms;
    r.min_bytes = 1;
    if !parts.is_empty() {
        let mut t = FetchTopic::default();
        t.topic = topic();
        t.partitions = parts
            .iter()
            .map(|(p, offset)| {
                let mut fp = FetchPartition::default();
                fp.partition = *p;
                fp.fetch_offset = *offset;
                fp.partition_max_bytes = 1 << 20;
                fp
            })
            .collect();
        r.topics = vec![t];
    }
    r.into()
}

async fn send(broker: &Arc<Broker>, request: RequestKind) -> FetchResponse {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let ctx = common::context(broker, ApiKey::Fetch, VERSION, rx);
    match api::dispatch(&ctx, request).await {
        Some(ResponseKind::Fetch(r)) => r,
        other => panic!("not a fetch response: {other:?}"),
    }
}

async fn produce(broker: &Arc<Broker>, partition: i32) {
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(build_batch(0, 1, &[b"v".to_vec()]).into());
    let mut t = TopicProduceData::default();
    t.name = topic();
    t.partition_data = vec![data];
    let mut r = ProduceRequest::default();
    r.acks = 1;
    r.timeout_ms = 5000;
    r.topic_data = vec![t];
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let ctx = common::context(broker, ApiKey::Produce, 9, rx);
    match api::dispatch(&ctx, r.into()).await {
        Some(ResponseKind::Produce(r)) => {
            assert_eq!(r.responses[0].partition_responses[0].error_code, 0)
        }
        other => panic!("not a produce response: {other:?}"),
    }
}

/// The partitions answered, with whether each carried records.
fn answered(r: &FetchResponse) -> Vec<(i32, bool)> {
    r.responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            (
                p.partition_index,
                p.records.as_ref().is_some_and(|b| !b.is_empty()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_names_and_answers_only_what_changed() {
    let (broker, _dir) = common::open_broker();
    broker
        .create_topic("many", PARTITIONS, Default::default())
        .await
        .expect("create");
    let all: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let full = send(&broker, fetch(0, 0, &all, 0)).await;
    assert_eq!(full.error_code, 0);
    let id = full.session_id;
    assert!(id > 0, "a full fetch with epoch 0 opens a session");
    assert_eq!(answered(&full).len(), PARTITIONS as usize);
    // Nothing new: an empty request, an empty answer.
    let r = send(&broker, fetch(id, 1, &[], 0)).await;
    assert_eq!((r.error_code, r.session_id), (0, id));
    assert_eq!(answered(&r), vec![]);
    // A record in partition 17: only 17 is answered, with it.
    produce(&broker, 17).await;
    let r = send(&broker, fetch(id, 2, &[], 0)).await;
    assert_eq!(answered(&r), vec![(17, true)]);
    // The client moves its offset for 17: 17 is answered (no records), nothing else.
    let r = send(&broker, fetch(id, 3, &[(17, 1)], 0)).await;
    assert_eq!(answered(&r), vec![(17, false)]);
    let r = send(&broker, fetch(id, 4, &[], 0)).await;
    assert_eq!(answered(&r), vec![]);
    // A long poll over the session wakes for an append to any of its partitions.
    let appender = {
        let broker = broker.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            produce(&broker, 123).await;
        })
    };
    let started = std::time::Instant::now();
    let r = send(&broker, fetch(id, 5, &[], 5000)).await;
    appender.await.expect("appender");
    assert_eq!(answered(&r), vec![(123, true)]);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the long poll was not woken"
    );
    // A wrong epoch, and an unknown session.
    let r = send(&broker, fetch(id, 9, &[], 0)).await;
    assert_eq!(r.error_code, ResponseError::InvalidFetchSessionEpoch.code());
    let r = send(&broker, fetch(id + 1000, 1, &[], 0)).await;
    assert_eq!(r.error_code, ResponseError::FetchSessionIdNotFound.code());
}
