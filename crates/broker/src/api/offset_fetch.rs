//! OffsetFetch (key 9): committed offsets of one group (v0-7) or several (v8+).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{ApiKey, OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::protocol::StrBytes;

use super::{topic_name, RequestContext};
use crate::group::store::CommittedOffset;

type Rows = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// Committed offsets grouped by topic, in request order (or name order for "all").
fn rows(ctx: &RequestContext, group: &str, wanted: Option<Vec<(String, Vec<i32>)>>) -> Rows {
    let flat_wanted: Option<Vec<(String, i32)>> = wanted.as_ref().map(|w| {
        w.iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect()
    });
    let found = ctx.groups().fetch_offsets(group, flat_wanted.as_deref());
    let mut out: Rows = Vec::new();
    for (topic, partition, offset) in found {
        match out.last_mut() {
            Some((t, ps)) if *t == topic => ps.push((partition, offset)),
            _ => out.push((topic, vec![(partition, offset)])),
        }
    }
    out
}

fn fields(o: &Option<CommittedOffset>, version: i16) -> (i64, i32, Option<StrBytes>) {
    match o {
        Some(o) => (
            o.offset,
            if version >= 5 { o.leader_epoch } else { -1 },
            Some(StrBytes::from_string(o.metadata.clone())),
        ),
        None => (-1, -1, Some(StrBytes::default())),
    }
}

/// One partition's row in either shape of the answer (v8+ by group, or the older one):
/// its committed offset, or UNSTABLE_OFFSET_COMMIT while a transaction holds it.
macro_rules! partition_row {
    ($ty:ty, $p:expr, $o:expr, $v:expr, $unstable:expr) => {
        if $unstable {
            build!($ty {
                partition_index: $p,
                committed_offset: -1,
                committed_leader_epoch: -1,
                error_code: ResponseError::UnstableOffsetCommit.code()
            })
        } else {
            let (committed_offset, committed_leader_epoch, metadata) = fields($o, $v);
            build!($ty {
                partition_index: $p,
                committed_offset,
                committed_leader_epoch,
                metadata
            })
        }
    };
}

pub fn handle(ctx: &RequestContext, request: OffsetFetchRequest) -> OffsetFetchResponse {
    let v = ctx.version;
    // With require_stable (v7+), an offset that waits on an open transaction is not
    // answered yet: UNSTABLE_OFFSET_COMMIT, and the client retries.
    let require_stable = v >= 7 && request.require_stable;
    let unstable = |group: &str, topic: &str, partition: i32| {
        require_stable && ctx.groups().has_pending_txn_offset(group, topic, partition)
    };
    if v >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let group = g.group_id.0.to_string();
                let topics = rows(ctx, &group, wanted)
                    .into_iter()
                    .map(|(t, ps)| {
                        build!(OffsetFetchResponseTopics {
                            name: topic_name(&t),
                            partitions: ps
                                .iter()
                                .map(|(p, o)| {
                                    let unstable = unstable(&group, &t, *p);
                                    partition_row!(
                                        OffsetFetchResponsePartitions,
                                        *p,
                                        o,
                                        v,
                                        unstable
                                    )
                                })
                                .collect()
                        })
                    })
                    .collect();
                build!(OffsetFetchResponseGroup {
                    group_id: g.group_id,
                    topics
                })
            })
            .collect();
        return build!(OffsetFetchResponse { groups });
    }
    let wanted = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let group = request.group_id.0.to_string();
    let topics = rows(ctx, &group, wanted)
        .into_iter()
        .map(|(t, ps)| {
            build!(OffsetFetchResponseTopic {
                name: topic_name(&t),
                partitions: ps
                    .iter()
                    .map(|(p, o)| {
                        let unstable = unstable(&group, &t, *p);
                        partition_row!(OffsetFetchResponsePartition, *p, o, v, unstable)
                    })
                    .collect()
            })
        })
        .collect();
    build!(OffsetFetchResponse { topics })
}

/// This API's entry in the registry (see `api::Api`).
pub struct Handler;

mod entry {
    use super::*;
    use crate::api::{ApiSpec, RequestContext};

    use kafka_protocol::error::ResponseError;

    impl crate::api::Api for super::Handler {
        type Request = OffsetFetchRequest;
        type Response = OffsetFetchResponse;
        const SPEC: ApiSpec = ApiSpec {
            key: ApiKey::OffsetFetch,
            min: 1,
            max: 9,
        };

        async fn handle(
            ctx: &RequestContext,
            request: OffsetFetchRequest,
        ) -> Option<OffsetFetchResponse> {
            Some(handle(ctx, request))
        }

        const GROUP_OPERATION: i8 = crate::security::acl::op::DESCRIBE;

        /// One group before v8; several from v8 (clients send one group per coordinator).
        fn coordinator_keys<'r>(
            ctx: &RequestContext,
            request: &'r OffsetFetchRequest,
        ) -> Vec<crate::api::Key<'r>> {
            if ctx.version < 8 {
                vec![crate::api::Key::Group(&request.group_id.0)]
            } else {
                request
                    .groups
                    .iter()
                    .map(|g| crate::api::Key::Group(&g.group_id.0))
                    .collect()
            }
        }

        fn error_response(
            ctx: &RequestContext,
            request: &OffsetFetchRequest,
            error: ResponseError,
        ) -> OffsetFetchResponse {
            let keys = Self::coordinator_keys(ctx, request);
            let refused: Vec<_> = keys.into_iter().map(|k| (k, error)).collect();
            Self::keys_refused(ctx, request, &refused)
        }

        /// From v8, each refused group gets its error and the others NOT_COORDINATOR: the
        /// whole request is refused when one group is.
        fn keys_refused(
            ctx: &RequestContext,
            request: &OffsetFetchRequest,
            refused: &[(crate::api::Key<'_>, ResponseError)],
        ) -> OffsetFetchResponse {
            use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
            if ctx.version < 8 {
                return build!(OffsetFetchResponse {
                    error_code: refused[0].1.code()
                });
            }
            let groups = request
                .groups
                .iter()
                .map(|g| {
                    let e = refused
                        .iter()
                        .find(|(k, _)| *k == crate::api::Key::Group(&g.group_id.0))
                        .map_or(ResponseError::NotCoordinator, |(_, e)| *e);
                    build!(OffsetFetchResponseGroup {
                        group_id: g.group_id.clone(),
                        error_code: e.code()
                    })
                })
                .collect();
            build!(OffsetFetchResponse { groups })
        }
    }
}
