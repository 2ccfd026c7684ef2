//! What the integration tests share.

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
