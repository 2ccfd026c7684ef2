//! A leader deposed while an `acks=all` Produce waits for its in-sync replicas must not
//! acknowledge it: once it follows, its high watermark jumps to the new leader's, which
//! says nothing about the records it appended in its own epoch (they are about to be
//! truncated). The fault campaign lost 5–15 acknowledged records per run this way.

mod common;

use std::sync::Arc;
use std::time::Duration;

use gregor_broker::state::Broker;
use gregor_protocol::batch::build_batch;

async fn produce_acks_all(broker: Arc<Broker>, value: u8) -> (i16, i64) {
    common::produce_acks_all(broker, build_batch(0, 1, &[vec![value]]), 10_000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_does_not_acknowledge_what_it_appended_in_its_epoch() {
    let (broker, partition, _dir) = common::broker_with_topic_t().await;
    let me = broker.config.node_id;
    let meta = |leader, leader_epoch| common::two_replicas(me, leader, leader_epoch);
    partition.set_role(&meta(me, 1), 1);

    // The follower has everything so far: a first acks=all write is acknowledged.
    let first = tokio::spawn(produce_acks_all(broker.clone(), 1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    partition.follower_fetched(me + 1, 1, 2);
    assert_eq!(first.await.expect("task"), (0, 0));

    // A second write waits for the follower, which never fetches it: the follower was
    // elected in epoch 2 and this broker now follows it.
    let second = tokio::spawn(produce_acks_all(broker.clone(), 2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        partition.log().log_end(),
        2,
        "the second write was appended"
    );
    partition.set_role(&meta(me + 1, 2), 3);
    // The new leader took other records; its fetch responses carry a high watermark past
    // this broker's own append (as the follower path applies it before truncating).
    partition
        .log()
        .advance_high_watermark(gregor_storage::Offset(2));
    partition
        .hw_watch
        .send_replace(partition.log().high_watermark());
    let not_leader = kafka_protocol::error::ResponseError::NotLeaderOrFollower.code();
    let (code, _) = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the produce was answered")
        .expect("task");
    assert_eq!(
        code, not_leader,
        "a write appended in epoch 1 was acknowledged after the broker followed epoch 2"
    );
}
