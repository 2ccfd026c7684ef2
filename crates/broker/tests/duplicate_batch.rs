//! A retried idempotent batch that is already in the log is answered with its original
//! offsets, but under `acks=all` only once those offsets are committed, as its first
//! attempt would have been (Kafka's delayed produce waits for a duplicate too). Found by
//! the simulator (seed 14): a leader cut off from its followers answered a retry at once,
//! and the records it acknowledged were replaced after the next election.

mod common;

use std::sync::Arc;
use std::time::Duration;

use gregor_broker::state::Broker;
use gregor_protocol::batch::{build_batch, set_producer};

async fn produce(broker: Arc<Broker>, batch: Vec<u8>, timeout_ms: i32) -> (i16, i64) {
    common::produce_acks_all(broker, batch, timeout_ms).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_acknowledged_only_once_committed() {
    let (broker, partition, _dir) = common::broker_with_topic_t().await;
    let me = broker.config.node_id;
    partition.set_role(&common::two_replicas(me, me, 1), 1);
    let mut batch = build_batch(0, 1, &[b"once".to_vec()]);
    batch[53..57].copy_from_slice(&0i32.to_be_bytes()); // base sequence 0
    set_producer(&mut batch, 7, 0, false);

    // The follower never fetches: the first attempt times out, stored but not committed.
    let timed_out = kafka_protocol::error::ResponseError::RequestTimedOut.code();
    assert_eq!(
        produce(broker.clone(), batch.clone(), 300).await.0,
        timed_out
    );
    assert_eq!(
        partition.log().log_end(),
        1,
        "the first attempt was appended"
    );

    // The retry is a duplicate: nothing is appended, and it waits as the first did.
    let retry = tokio::spawn(produce(broker.clone(), batch.clone(), 5_000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !retry.is_finished(),
        "a retry of an uncommitted batch was answered before the follower had it"
    );
    assert_eq!(partition.log().log_end(), 1, "the retry appended nothing");
    partition.follower_fetched(me + 1, 1, 2);
    let answer = tokio::time::timeout(Duration::from_secs(5), retry)
        .await
        .expect("answered once committed")
        .expect("task");
    assert_eq!(answer, (0, 0), "the original offset, once committed");
}
