//! OffsetForLeaderEpoch (key 23): where a leader epoch ended in this partition's log
//! (KIP-101, KIP-279). Followers ask it before fetching from a new leader, to cut what
//! diverged; clients ask it to check their position after a leader change (KIP-320).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{ApiSpec, RequestContext};
use crate::error::storage_error_code;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::OffsetForLeaderEpoch,
    min: 2,
    max: 4,
};

pub fn handle(
    ctx: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut r = build!(EpochEndOffset {
                        partition: p.partition,
                        leader_epoch: -1,
                        end_offset: -1
                    });
                    let Some(partition) = ctx.broker.partition(&t.topic.0, p.partition) else {
                        r.error_code = ResponseError::UnknownTopicOrPartition.code();
                        return r;
                    };
                    let (leads, epoch, _, _) = partition.leadership();
                    if !leads {
                        r.error_code = ResponseError::NotLeaderOrFollower.code();
                    } else if p.current_leader_epoch >= 0 && p.current_leader_epoch < epoch {
                        r.error_code = ResponseError::FencedLeaderEpoch.code();
                    } else if p.current_leader_epoch > epoch {
                        r.error_code = ResponseError::UnknownLeaderEpoch.code();
                    } else {
                        match partition.log().end_offset_for_epoch(p.leader_epoch) {
                            Ok(Some((e, end))) => {
                                r.leader_epoch = e;
                                r.end_offset = end;
                            }
                            Ok(None) => {}
                            Err(e) => r.error_code = storage_error_code(&e),
                        }
                    }
                    r
                })
                .collect();
            build!(OffsetForLeaderTopicResult {
                topic: t.topic,
                partitions
            })
        })
        .collect();
    build!(OffsetForLeaderEpochResponse { topics })
}
