//! One module per Kafka API, and the one registry of them.
//!
//! Architecture invariant: the ApiVersions response is built from [`APIS`] and nothing
//! else, and a request is dispatched only if its version lies in its handler's range.

use std::sync::Arc;

use std::future::Future;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use tokio::sync::watch;

use crate::state::{Broker, Partition};
pub use crate::wire::{str_bytes, topic_name};

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

pub mod authorize;
pub mod coordinator_check;

/// The versions of one API that Gregor serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiSpec {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

/// The group or transactional id a request is about: only that group's or transactional
/// id's coordinator serves it, and the caller needs a right on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    Group(&'a str),
    Txn(&'a str),
}

/// The refusal builders of an offset commit (OffsetCommit, TxnOffsetCommit), whose
/// requests and answers have the same shape in different types: `error_response` (every
/// partition asked for gets the error), `authorize` (READ on each topic) and `complete`
/// (refused topics answered TOPIC_AUTHORIZATION_FAILED). Used inside `impl Api`.
macro_rules! offset_commit_refusals {
    ($request:ty, $response:ident, $topic:ident, $partition:ident) => {
        fn error_response(
            _ctx: &RequestContext,
            request: &$request,
            error: ResponseError,
        ) -> $response {
            let asked = request.topics.iter().map(|t| {
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                (t.name.clone(), parts)
            });
            build!($response {
                topics: offset_commit_refusals!(@answer $topic, $partition, asked, error.code())
            })
        }

        fn authorize(
            a: &crate::api::authorize::Auth<'_>,
            request: &mut $request,
            denied: &mut crate::api::authorize::Denied,
        ) -> Result<(), $response> {
            request.topics.retain(|t| {
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                let read = crate::security::acl::op::READ;
                a.keep(denied, read, &t.name, uuid::Uuid::nil(), parts)
            });
            Ok(())
        }

        fn complete(
            _a: &crate::api::authorize::Auth<'_>,
            denied: crate::api::authorize::Denied,
            response: &mut $response,
        ) {
            let refused = denied.topics.into_iter().map(|(name, _, parts)| (name, parts));
            let code = crate::api::authorize::TOPIC_DENIED.code();
            response
                .topics
                .extend(offset_commit_refusals!(@answer $topic, $partition, refused, code));
        }
    };
    (@answer $topic:ident, $partition:ident, $topics:expr, $code:expr) => {
        $topics
            .map(|(name, parts): (kafka_protocol::messages::TopicName, Vec<i32>)| {
                let partitions = parts
                    .into_iter()
                    .map(|partition_index| build!($partition { partition_index, error_code: $code }))
                    .collect();
                build!($topic { name, partitions })
            })
            .collect::<Vec<_>>()
    };
}

/// The authorization of a config change (AlterConfigs, IncrementalAlterConfigs, whose
/// answers have the same shape in different types): ALTER_CONFIGS on each resource, and
/// the refused ones answered with the topic's or the cluster's authorization error.
macro_rules! config_change_refusals {
    ($request:ty, $response:ident, $resource:ident) => {
        fn authorize(
            a: &crate::api::authorize::Auth<'_>,
            request: &mut $request,
            denied: &mut crate::api::authorize::Denied,
        ) -> Result<(), $response> {
            let alter = crate::security::acl::op::ALTER_CONFIGS;
            request.resources.retain(|x| {
                let ok = crate::api::authorize::config_allowed(
                    a,
                    alter,
                    x.resource_type,
                    &x.resource_name,
                );
                if !ok {
                    denied
                        .resources
                        .push((x.resource_type, x.resource_name.clone()));
                }
                ok
            });
            Ok(())
        }

        fn complete(
            _a: &crate::api::authorize::Auth<'_>,
            denied: crate::api::authorize::Denied,
            response: &mut $response,
        ) {
            for (resource_type, resource_name) in denied.resources {
                let error_code = crate::api::authorize::config_error(resource_type);
                response.responses.push(build!($resource {
                    error_code,
                    resource_type,
                    resource_name
                }));
            }
        }
    };
}

/// One Kafka API: everything the broker needs to serve it, implemented by the unit struct
/// `Handler` in the API's own module and registered with one line in [`apis!`]'s list.
/// Only `SPEC` and `handle` are required; the rest describe what the API touches, and
/// default to nothing (Kafka's `AbstractRequest.getErrorResponse` is `error_response`).
pub trait Api {
    type Request: Send;
    type Response: Send + Default;
    /// The API key and the versions served.
    const SPEC: ApiSpec;
    /// The operation a caller needs on the request's group (see [`Api::coordinator_keys`]).
    const GROUP_OPERATION: i8 = crate::security::acl::op::READ;
    /// The operation a caller needs on the cluster for any request of this API, if one
    /// (the request is refused whole with CLUSTER_AUTHORIZATION_FAILED otherwise).
    const CLUSTER_OPERATION: Option<i8> = None;

    /// Serves a request that passed authorization and the coordinator checks; `None`
    /// sends no answer (Produce with `acks=0`).
    fn handle(
        ctx: &RequestContext,
        request: Self::Request,
    ) -> impl Future<Output = Option<Self::Response>> + Send;

    /// The groups and transactional ids the request is about: in a cluster, a broker that
    /// is not their coordinator answers NOT_COORDINATOR; with the authorizer on, the
    /// caller needs `GROUP_OPERATION` on a group and WRITE on a transactional id.
    fn coordinator_keys<'r>(_ctx: &RequestContext, _request: &'r Self::Request) -> Vec<Key<'r>> {
        Vec::new()
    }

    /// The answer that refuses the whole request with `error`. Needed by every API that
    /// has coordinator keys or refuses whole requests in [`Api::authorize`].
    fn error_response(
        _ctx: &RequestContext,
        _request: &Self::Request,
        error: ResponseError,
    ) -> Self::Response {
        tracing::error!(api = ?Self::SPEC.key, ?error, "no error response is built for this API; implement Api::error_response");
        Self::Response::default()
    }

    /// The answer when some of the request's keys are refused (each with its error); for
    /// requests on one key, [`Api::error_response`] with its error.
    fn keys_refused(
        ctx: &RequestContext,
        request: &Self::Request,
        refused: &[(Key<'_>, ResponseError)],
    ) -> Self::Response {
        Self::error_response(ctx, request, refused[0].1)
    }

    /// Authorization beyond the coordinator keys (with the authorizer on): `Err` is the
    /// answer refusing the whole request; parts the caller may not touch are taken out
    /// of the request into `denied`, to be answered for in [`Api::complete`].
    fn authorize(
        _a: &authorize::Auth<'_>,
        _request: &mut Self::Request,
        _denied: &mut authorize::Denied,
    ) -> Result<(), Self::Response> {
        Ok(())
    }

    /// Adds back to the answer what `authorize` took out, refused, and hides from a
    /// read-only answer what the caller may not describe.
    fn complete(
        _a: &authorize::Auth<'_>,
        _denied: authorize::Denied,
        _response: &mut Self::Response,
    ) {
    }

    /// The internal partitions (or marker partitions) the request writes to, whose
    /// in-sync replicas must hold the write before the answer goes back (in a cluster).
    fn replicated_writes(_ctx: &RequestContext, _request: &Self::Request) -> Vec<Arc<Partition>> {
        Vec::new()
    }

    /// Changes the answer when those writes did not reach the in-sync replicas in time.
    fn not_replicated(_response: &mut Self::Response) {}
}

/// The one list of APIs: `Variant => module` declares the module (whose `Handler`
/// implements [`Api`]) and registers it for ApiVersions (`APIS`), dispatch,
/// authorization and the coordinator checks.
macro_rules! apis {
    ($($variant:ident => $module:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// Every API Gregor serves.
        pub const APIS: &[ApiSpec] = &[$(<$module::Handler as Api>::SPEC),*];

        async fn serve_kind(ctx: &RequestContext, request: RequestKind) -> Option<ResponseKind> {
            match request {
                $(RequestKind::$variant(r) => {
                    serve::<$module::Handler>(ctx, r).await.map(ResponseKind::$variant)
                })*
                other => {
                    // The connection checks the registry before decoding, so this is a bug.
                    tracing::error!(request = ?std::mem::discriminant(&other), "no handler for a registered API");
                    None
                }
            }
        }
    };
}

apis! {
    Produce => produce,
    Fetch => fetch,
    ListOffsets => list_offsets,
    Metadata => metadata,
    ApiVersions => api_versions,
    CreateTopics => create_topics,
    DeleteTopics => delete_topics,
    DescribeConfigs => describe_configs,
    CreatePartitions => create_partitions,
    DescribeCluster => describe_cluster,
    InitProducerId => init_producer_id,
    FindCoordinator => find_coordinator,
    JoinGroup => join_group,
    SyncGroup => sync_group,
    Heartbeat => heartbeat,
    LeaveGroup => leave_group,
    OffsetCommit => offset_commit,
    OffsetFetch => offset_fetch,
    DescribeGroups => describe_groups,
    ListGroups => list_groups,
    DeleteGroups => delete_groups,
    OffsetDelete => offset_delete,
    DeleteRecords => delete_records,
    OffsetForLeaderEpoch => offset_for_leader_epoch,
    AlterPartitionReassignments => alter_partition_reassignments,
    ListPartitionReassignments => list_partition_reassignments,
    WriteTxnMarkers => write_txn_markers,
    AlterConfigs => alter_configs,
    IncrementalAlterConfigs => incremental_alter_configs,
    AddPartitionsToTxn => add_partitions_to_txn,
    AddOffsetsToTxn => add_offsets_to_txn,
    EndTxn => end_txn,
    TxnOffsetCommit => txn_offset_commit,
    DescribeTransactions => describe_transactions,
    ListTransactions => list_transactions,
    SaslHandshake => sasl_handshake,
    SaslAuthenticate => sasl_authenticate,
    CreateAcls => create_acls,
    DescribeAcls => describe_acls,
    DeleteAcls => delete_acls,
    DescribeUserScramCredentials => describe_user_scram_credentials,
    AlterUserScramCredentials => alter_user_scram_credentials,
    DescribeClientQuotas => describe_client_quotas,
    AlterClientQuotas => alter_client_quotas,
}

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

    // The broker's services, one accessor each (Redpanda's `request_context`).

    /// The broker's settings.
    pub fn config(&self) -> &crate::config::BrokerConfig {
        &self.broker.config
    }
    /// The metadata image requests are answered from (a snapshot).
    pub fn image(&self) -> std::sync::Arc<gregor_cluster::MetadataImage> {
        self.broker.metadata.image()
    }
    /// The metadata service: the image, and the cluster node in a cluster.
    pub fn metadata(&self) -> &crate::state::Metadata {
        &self.broker.metadata
    }
    /// The partitions hosted here.
    pub fn partitions(&self) -> &crate::state::Partitions {
        &self.broker.partitions
    }
    /// The classic group coordinator.
    pub fn groups(&self) -> &crate::group::GroupCoordinator {
        &self.broker.groups
    }
    /// The transaction coordinator.
    pub fn txns(&self) -> &crate::txn::TxnCoordinator {
        &self.broker.txns
    }
    /// TLS, SASL and the authorizer.
    pub fn security(&self) -> &crate::security::Security {
        &self.broker.security
    }
}

/// Runs the handler for a decoded request. `None` means no response is sent (acks=0).
pub async fn dispatch(ctx: &RequestContext, request: RequestKind) -> Option<ResponseKind> {
    serve_kind(ctx, request).await
}

/// One request of API `A`, in order: the caller's rights on its coordinator keys and on
/// the rest of it (with the authorizer on); in a cluster, NOT_COORDINATOR where this
/// broker is not the keys' coordinator; the handler; the replication of its internal
/// writes; and the refused parts added back to the answer.
async fn serve<A: Api>(ctx: &RequestContext, mut request: A::Request) -> Option<A::Response> {
    let auth = authorize::Auth::enabled(ctx);
    let mut denied = authorize::Denied::default();
    if let Some(a) = &auth {
        if let Some(refused) =
            refuse_keys::<A>(ctx, &request, |k| a.key_refused(k, A::GROUP_OPERATION))
        {
            return Some(refused);
        }
        if let Some(e) = A::CLUSTER_OPERATION.and_then(|operation| a.cluster_refused(operation)) {
            return Some(A::error_response(ctx, &request, e));
        }
        if let Err(answer) = A::authorize(a, &mut request, &mut denied) {
            return Some(answer);
        }
    }
    let mut response = if ctx.metadata().cluster().is_none() {
        A::handle(ctx, request).await?
    } else if let Some(refused) = refuse_keys::<A>(ctx, &request, |k| {
        coordinator_check::not_coordinator(ctx, k)
    }) {
        refused
    } else {
        let writes = A::replicated_writes(ctx, &request);
        let mut response = A::handle(ctx, request).await?;
        if !coordinator_check::settle(&writes).await {
            A::not_replicated(&mut response);
        }
        response
    };
    if let Some(a) = &auth {
        A::complete(a, denied, &mut response);
    }
    Some(response)
}

/// The answer refusing `request` if `refused` finds an error for one of its keys.
fn refuse_keys<A: Api>(
    ctx: &RequestContext,
    request: &A::Request,
    refused: impl Fn(Key<'_>) -> Option<ResponseError>,
) -> Option<A::Response> {
    let keys = A::coordinator_keys(ctx, request);
    let errors: Vec<(Key<'_>, ResponseError)> = keys
        .into_iter()
        .filter_map(|k| refused(k).map(|e| (k, e)))
        .collect();
    (!errors.is_empty()).then(|| A::keys_refused(ctx, request, &errors))
}

/// A Produce as [`dispatch`] would serve it, split in two: authorized and appended now,
/// in the order the connection read it; the returned future (which owns the context)
/// waits for fsyncs and replicas and answers, while the connection goes on reading.
pub async fn produce_pipelined(
    ctx: RequestContext,
    mut request: kafka_protocol::messages::ProduceRequest,
) -> impl std::future::Future<Output = Option<ResponseKind>> + Send + 'static {
    let mut denied = authorize::Denied::default();
    let authorized = match authorize::Auth::enabled(&ctx) {
        Some(a) => produce::Handler::authorize(&a, &mut request, &mut denied),
        None => Ok(()),
    };
    let appended = match authorized {
        Ok(()) => {
            // Awaited before the append (and so before the connection reads its next
            // request): a transactional batch may need its coordinator's word first.
            let refused = produce::verify_transactional(&ctx, &request).await;
            Ok(produce::append(&ctx, request, refused))
        }
        Err(answer) => Err(answer),
    };
    async move {
        let response = match appended {
            Ok(pending) => {
                let mut response = pending.finish().await?;
                if let Some(a) = authorize::Auth::enabled(&ctx) {
                    produce::Handler::complete(&a, denied, &mut response);
                }
                response
            }
            Err(answer) => answer,
        };
        Some(ResponseKind::Produce(response))
    }
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
