//! While the leader asks the controller to add a caught-up follower to the ISR, the high
//! watermark waits for that follower too (Kafka's maximal ISR, KIP-497). Otherwise records
//! committed meanwhile by the old ISR are missing from a member of the new one, which can
//! then be elected and lose them. Found by the simulator (seed 132 of 0..2000: three
//! acknowledged records replaced after the leader crashed).

mod common;

use std::time::Duration;

use gregor_protocol::batch::build_batch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_joining_the_isr_holds_the_high_watermark_back() {
    let (broker, partition, _dir) = common::broker_with_topic_t().await;
    let me = broker.config.node_id;
    let mut meta = common::two_replicas(me, me, 1);
    meta.isr = vec![me];
    partition.set_role(&meta, 1);

    // The follower has caught up (with nothing written yet): the leader asks to add it.
    partition.follower_fetched(me + 1, 0, 2);
    let (_, wanted) = partition
        .wanted_isr(3, 30_000, &|_| true)
        .expect("an ISR change is wanted");
    assert_eq!(wanted, vec![me, me + 1]);
    partition.isr_change_proposed(&wanted);

    // A write while the change is pending is not committed by the leader alone.
    let timed_out = kafka_protocol::error::ResponseError::RequestTimedOut.code();
    let write = common::produce_acks_all(broker.clone(), build_batch(0, 1, &[b"v".to_vec()]), 300);
    assert_eq!(
        write.await.0,
        timed_out,
        "acknowledged before the follower joining the ISR had it"
    );
    assert_eq!(partition.log().high_watermark(), 0);

    // Once the follower has it, the high watermark moves.
    partition.follower_fetched(me + 1, 1, 4);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(partition.log().high_watermark(), 1);
}
