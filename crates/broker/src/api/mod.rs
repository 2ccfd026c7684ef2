//! One module per Kafka API, and the one registry of them.
//!
//! Architecture invariant: the ApiVersions response is built from [`APIS`] and nothing
//! else, and a request is dispatched only if its version lies in its handler's range.

use std::sync::Arc;

use kafka_protocol::messages::{
    ApiKey, RequestHeader, RequestKind, ResponseKind, SaslAuthenticateResponse,
    SaslHandshakeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;

use crate::state::Broker;

/// Builds a `kafka-protocol` message (its structs are `#[non_exhaustive]`, so struct
/// literals are not allowed): `build!(Type { field: value, shorthand })` starts from
/// `Type::default()` and sets the fields given.
macro_rules! build {
    ($t:ty { $($body:tt)* }) => {{
        #[allow(clippy::needless_update)]
        let mut v = <$t>::default();
        build!(@set v; $($body)*);
        v
    }};
    (@set $v:ident; ) => {};
    (@set $v:ident; $f:ident : $e:expr $(, $($rest:tt)*)?) => { $v.$f = $e; build!(@set $v; $($($rest)*)?); };
    (@set $v:ident; $f:ident $(, $($rest:tt)*)?) => { $v.$f = $f; build!(@set $v; $($($rest)*)?); };
}

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod authorize;
pub mod coordinator_check;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_transactions;
pub mod describe_user_scram_credentials;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

/// The versions of one API that Gregor serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiSpec {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

/// Every API Gregor serves, each declared by its handler module.
pub const APIS: &[ApiSpec] = &[
    produce::API,
    fetch::API,
    list_offsets::API,
    metadata::API,
    api_versions::API,
    create_topics::API,
    delete_topics::API,
    describe_configs::API,
    create_partitions::API,
    describe_cluster::API,
    init_producer_id::API,
    find_coordinator::API,
    join_group::API,
    sync_group::API,
    heartbeat::API,
    leave_group::API,
    offset_commit::API,
    offset_fetch::API,
    describe_groups::API,
    list_groups::API,
    delete_groups::API,
    offset_delete::API,
    delete_records::API,
    offset_for_leader_epoch::API,
    alter_partition_reassignments::API,
    list_partition_reassignments::API,
    write_txn_markers::API,
    alter_configs::API,
    incremental_alter_configs::API,
    add_partitions_to_txn::API,
    add_offsets_to_txn::API,
    end_txn::API,
    txn_offset_commit::API,
    describe_transactions::API,
    list_transactions::API,
    sasl_handshake::API,
    sasl_authenticate::API,
    create_acls::API,
    describe_acls::API,
    delete_acls::API,
    describe_user_scram_credentials::API,
    alter_user_scram_credentials::API,
];

/// The handler's spec for an API key, if Gregor serves it at all.
pub fn spec(api_key: i16) -> Option<&'static ApiSpec> {
    APIS.iter().find(|s| s.key as i16 == api_key)
}

/// What a handler gets besides its request.
pub struct RequestContext {
    pub broker: Arc<Broker>,
    pub header: RequestHeader,
    pub version: i16,
    /// Becomes `true` when the broker is shutting down; long polls return early.
    pub shutdown: watch::Receiver<bool>,
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// The authenticated principal and its address, for the authorizer.
    pub caller: crate::security::acl::Caller,
    /// The listener the request came in on; Metadata and FindCoordinator answer with
    /// brokers' addresses on the same listener.
    pub listener: String,
    /// Set where the connection can send file ranges itself (plain TCP): Fetch then puts
    /// placeholders for the stored batches instead of reading them (`zero_copy`).
    pub deferred: Option<crate::zero_copy::Deferred>,
}

impl RequestContext {
    /// The client id from the request header ("" when absent).
    pub fn client_id(&self) -> String {
        self.header
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default()
    }
    /// The client's host as Kafka reports it: "/<ip>".
    pub fn client_host(&self) -> String {
        format!("/{}", self.peer.ip())
    }
}

/// Runs the handler for a decoded request. `None` means no response is sent (acks=0).
pub async fn dispatch(ctx: &RequestContext, request: RequestKind) -> Option<ResponseKind> {
    let (request, denied) = match authorize::check(ctx, request) {
        Ok(allowed) => allowed,
        Err(refused) => return Some(refused),
    };
    let response = dispatch_allowed(ctx, request).await?;
    Some(authorize::complete(ctx, denied, response))
}

/// A Produce as [`dispatch`] would serve it, split in two: authorized and appended now,
/// in the order the connection read it; the returned future (which owns the context)
/// waits for fsyncs and replicas and answers, while the connection goes on reading.
pub async fn produce_pipelined(
    ctx: RequestContext,
    request: kafka_protocol::messages::ProduceRequest,
) -> impl std::future::Future<Output = Option<ResponseKind>> + Send + 'static {
    let checked = authorize::check(&ctx, RequestKind::Produce(request));
    let appended = match checked {
        Ok((RequestKind::Produce(request), denied)) => {
            // Awaited before the append (and so before the connection reads its next
            // request): a transactional batch may need its coordinator's word first.
            let refused = produce::verify_transactional(&ctx, &request).await;
            Ok((produce::append(&ctx, request, refused), denied))
        }
        Ok((other, _)) => Err(Some(unexpected(other))),
        Err(refused) => Err(Some(refused)),
    };
    async move {
        match appended {
            Ok((pending, denied)) => {
                let response = ResponseKind::Produce(pending.finish().await?);
                Some(authorize::complete(&ctx, denied, response))
            }
            Err(answer) => answer,
        }
    }
}

/// The authorizer gives back the request it was given; anything else is a bug, answered
/// as an error rather than a panic.
fn unexpected(other: RequestKind) -> ResponseKind {
    tracing::error!(request = ?std::mem::discriminant(&other), "the authorizer changed a Produce into another request");
    ResponseKind::Produce(kafka_protocol::messages::ProduceResponse::default())
}

async fn dispatch_allowed(ctx: &RequestContext, request: RequestKind) -> Option<ResponseKind> {
    if let Some(refused) = coordinator_check::refuse(ctx, &request) {
        return Some(refused);
    }
    if ctx.broker.clustered().is_some() {
        let writes = coordinator_check::replicated_writes(ctx, &request);
        if !writes.is_empty() {
            let response = handle(ctx, request).await?;
            return Some(coordinator_check::settle(writes, response).await);
        }
    }
    handle(ctx, request).await
}

async fn handle(ctx: &RequestContext, request: RequestKind) -> Option<ResponseKind> {
    Some(match request {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(ctx, r)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(ctx, r)),
        RequestKind::Produce(r) => return produce::handle(ctx, r).await.map(ResponseKind::Produce),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(ctx, r).await),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets::handle(ctx, r)),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(ctx, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(ctx, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions::handle(ctx, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(ctx, r))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(ctx, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(ctx, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(ctx, r))
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(join_group::handle(ctx, r).await),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(sync_group::handle(ctx, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat::handle(ctx, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(leave_group::handle(ctx, r)),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(offset_commit::handle(ctx, r)),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offset_fetch::handle(ctx, r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups::handle(ctx, r))
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(list_groups::handle(ctx, r)),
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(delete_groups::handle(ctx, r)),
        RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(offset_delete::handle(ctx, r)),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(ctx, r))
        }
        RequestKind::AlterPartitionReassignments(r) => ResponseKind::AlterPartitionReassignments(
            alter_partition_reassignments::handle(ctx, r).await,
        ),
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(list_partition_reassignments::handle(ctx, r))
        }
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(write_txn_markers::handle(ctx, r))
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::handle(ctx, r))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(alter_configs::handle(ctx, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(incremental_alter_configs::handle(ctx, r).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(add_partitions_to_txn::handle(ctx, r))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(add_offsets_to_txn::handle(ctx, r))
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(end_txn::handle(ctx, r)),
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn_offset_commit::handle(ctx, r))
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(describe_transactions::handle(ctx, r))
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(list_transactions::handle(ctx, r))
        }
        RequestKind::CreateAcls(r) => ResponseKind::CreateAcls(create_acls::handle(ctx, r).await),
        RequestKind::DescribeAcls(r) => ResponseKind::DescribeAcls(describe_acls::handle(ctx, r)),
        RequestKind::DeleteAcls(r) => ResponseKind::DeleteAcls(delete_acls::handle(ctx, r).await),
        RequestKind::DescribeUserScramCredentials(r) => ResponseKind::DescribeUserScramCredentials(
            describe_user_scram_credentials::handle(ctx, r),
        ),
        RequestKind::AlterUserScramCredentials(r) => ResponseKind::AlterUserScramCredentials(
            alter_user_scram_credentials::handle(ctx, r).await,
        ),
        // Answered by the connection, which holds the SASL state; here only if a caller
        // without one dispatches them.
        RequestKind::SaslHandshake(_) => {
            ResponseKind::SaslHandshake(build!(SaslHandshakeResponse {
                error_code: kafka_protocol::error::ResponseError::IllegalSaslState.code()
            }))
        }
        RequestKind::SaslAuthenticate(_) => {
            ResponseKind::SaslAuthenticate(build!(SaslAuthenticateResponse {
                error_code: kafka_protocol::error::ResponseError::IllegalSaslState.code()
            }))
        }
        other => {
            // The connection checks the registry before decoding, so this is a bug.
            tracing::error!(request = ?std::mem::discriminant(&other), "no handler for a registered API");
            return None;
        }
    })
}

/// Whether the metadata image has this topic-partition.
pub fn partition_exists(
    image: &gregor_cluster::MetadataImage,
    topic: &str,
    partition: i32,
) -> bool {
    image
        .topic(topic)
        .is_some_and(|t| partition >= 0 && (partition as usize) < t.partitions.len())
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_range_is_one_the_codec_can_encode() {
        for spec in APIS {
            let codec = spec.key.valid_versions();
            assert!(spec.min <= spec.max, "{:?}", spec.key);
            assert!(
                codec.min <= spec.min && spec.max <= codec.max,
                "{:?} {}..{} outside {codec}",
                spec.key,
                spec.min,
                spec.max
            );
        }
        let mut keys: Vec<i16> = APIS.iter().map(|s| s.key as i16).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), APIS.len(), "an API is registered twice");
    }
}
