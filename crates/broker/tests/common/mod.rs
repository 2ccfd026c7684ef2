//! What the integration tests share (each test binary uses some of it).
#![allow(dead_code)]

use std::sync::Arc;

use gregor_broker::api::RequestContext;
use gregor_broker::state::Broker;
use kafka_protocol::messages::{ApiKey, RequestHeader};

/// A request's context as a plaintext connection from 127.0.0.1 by an anonymous client
/// would give it. `shutdown`'s sender must outlive the request (long polls watch it).
pub fn context(
    broker: &Arc<Broker>,
    key: ApiKey,
    version: i16,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> RequestContext {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    RequestContext {
        broker: broker.clone(),
        header,
        version,
        shutdown,
        peer: "127.0.0.1:1".parse().expect("addr"),
        caller: gregor_broker::security::acl::Caller {
            principal: "User:ANONYMOUS".into(),
            host: "127.0.0.1".parse().expect("ip"),
        },
        listener: "PLAINTEXT".into(),
        deferred: None,
    }
}

/// A single-node broker on a fresh data directory (kept alive by the returned guard).
pub fn open_broker() -> (Arc<Broker>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = gregor_broker::BrokerConfig::new(
        dir.path().to_path_buf(),
        "127.0.0.1:0".parse().expect("addr"),
        None,
        0,
    );
    let broker = Broker::open(config, Arc::new(gregor_storage::OsDisk)).expect("open");
    (broker, dir)
}

/// A single-node broker with topic `t` of one partition, and that partition.
pub async fn broker_with_topic_t() -> (
    Arc<Broker>,
    Arc<gregor_broker::state::Partition>,
    tempfile::TempDir,
) {
    let (broker, dir) = open_broker();
    broker
        .create_topic("t", 1, Default::default())
        .await
        .expect("create");
    let partition = broker.partitions.get("t", 0).expect("partition");
    (broker, partition, dir)
}

/// Produces `batch` to `t`-0 with `acks=all` (Produce v9); the partition's error code and
/// base offset.
pub async fn produce_acks_all(broker: Arc<Broker>, batch: Vec<u8>, timeout_ms: i32) -> (i16, i64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, RequestKind, ResponseKind, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let version = 9;
    let mut data = PartitionProduceData::default();
    data.index = 0;
    data.records = Some(batch.into());
    let mut topic = TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str("t"));
    topic.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = timeout_ms;
    request.topic_data = vec![topic];
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let ctx = context(&broker, ApiKey::Produce, version, rx);
    let Some(ResponseKind::Produce(response)) =
        gregor_broker::api::dispatch(&ctx, RequestKind::Produce(request)).await
    else {
        panic!("Produce was not answered with a Produce response");
    };
    let r = &response.responses[0].partition_responses[0];
    (r.error_code, r.base_offset)
}

/// `t`-0 replicated on this broker and the next node id, both in sync, led by `leader`.
pub fn two_replicas(me: i32, leader: i32, leader_epoch: i32) -> gregor_cluster::PartitionMeta {
    gregor_cluster::PartitionMeta {
        replicas: vec![me, me + 1],
        leader,
        leader_epoch,
        isr: vec![me, me + 1],
        reassignment: None,
    }
}
