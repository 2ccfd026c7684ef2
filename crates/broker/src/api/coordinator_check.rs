//! In a cluster, a group is served only by its coordinator: the leader of the group's
//! `__consumer_offsets` partition (a transactional id likewise, by `__transaction_state`).
//! Any other broker answers the request with NOT_COORDINATOR (or COORDINATOR_NOT_AVAILABLE
//! while that partition has no leader), and the client looks the coordinator up again with
//! FindCoordinator. Which keys a request has, and its answer, are the API's own
//! (`Api::coordinator_keys`, `Api::error_response`).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use super::{Key, RequestContext};
use crate::state::{await_replicated, Partition};

/// How long a coordinator's answer waits for its write to reach the in-sync replicas
/// (Kafka's `offsets.commit.timeout.ms`).
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The error for a key this broker does not coordinate, if it does not.
pub fn not_coordinator(ctx: &RequestContext, key: Key<'_>) -> Option<ResponseError> {
    match key {
        Key::Group(g) => ctx.broker.not_coordinator(g),
        Key::Txn(t) => ctx.broker.not_txn_coordinator(t),
    }
}

/// Waits for `writes` to be replicated; `false` if one was not in time.
pub async fn settle(writes: &[Arc<Partition>]) -> bool {
    let mut replicated = true;
    for p in writes {
        if !await_replicated(p, REPLICATION_TIMEOUT).await {
            tracing::warn!(topic = %p.topic, partition = p.index, "a coordinator write did not reach the in-sync replicas in time");
            replicated = false;
        }
    }
    replicated
}

/// The `__consumer_offsets` partition of `group`, as `Api::replicated_writes` returns it.
pub fn group_partition(ctx: &RequestContext, group: &str) -> Vec<Arc<Partition>> {
    ctx.broker
        .coordinator_partition(group, false)
        .into_iter()
        .collect()
}

/// The `__transaction_state` partition of `transactional_id`, likewise.
pub fn txn_partition(ctx: &RequestContext, transactional_id: &str) -> Vec<Arc<Partition>> {
    ctx.broker
        .coordinator_partition(transactional_id, true)
        .into_iter()
        .collect()
}
