//! A group's committed offsets: commits (plain and transactional) validated against the
//! membership, whose records take effect when replayed after their append; deletion of
//! offsets and of whole groups.

use super::*;

impl Groups {
    /// Checks each offset (known partition, metadata size): one code per offset, and the
    /// records of the valid ones.
    fn offset_records(
        &self,
        group_id: &str,
        offsets: &[(String, i32, CommittedOffset)],
        valid_partition: impl Fn(&str, i32) -> bool,
    ) -> (Vec<i16>, Vec<GroupRecord>) {
        let mut codes = Vec::with_capacity(offsets.len());
        let mut records = Vec::new();
        for (topic, partition, o) in offsets {
            let code = if !valid_partition(topic, *partition) {
                ResponseError::UnknownTopicOrPartition.code()
            } else if o.metadata.len() > self.settings.offset_metadata_max_bytes {
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                records.push(GroupRecord::Offset {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                    value: Some(o.clone()),
                });
                0
            };
            codes.push(code);
        }
        (codes, records)
    }

    /// OffsetCommit, or with `producer` TxnOffsetCommit (the offsets then count only once
    /// the producer's transaction commits): validated against the membership, one code per
    /// offset, in order.
    pub fn commit(
        &mut self,
        now: Now,
        by: Caller<'_>,
        producer: Option<(i64, i16)>,
        offsets: &[(String, i32, CommittedOffset)],
        valid_partition: impl Fn(&str, i32) -> bool,
    ) -> Outcome<Vec<i16>> {
        let group_id = by.group_id;
        let refused = |e: ResponseError| Outcome::reply(group_id, vec![e.code(); offsets.len()]);
        let g = match committing_to(&mut self.groups, group_id, now) {
            Ok(g) => g,
            Err(e) => return refused(e),
        };
        if let Err(e) = check_committer(g, by, producer.is_some(), now) {
            return refused(e);
        }
        let (codes, records) = self.offset_records(group_id, offsets, valid_partition);
        Outcome {
            records,
            producer,
            on_error: Some(fail_written),
            ..Outcome::reply(group_id, codes)
        }
    }

    /// Deletes committed offsets (OffsetDelete). `subscribed` says whether the group's
    /// members are subscribed to a topic. Group-level error, or per-partition codes.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed: impl Fn(&[Bytes], &str) -> bool,
    ) -> Outcome<Result<Vec<i16>, i16>> {
        let Some(g) = self.groups.get(group_id) else {
            return Outcome::reply(group_id, Err(ResponseError::GroupIdNotFound.code()));
        };
        let metadata: Vec<Bytes> = if g.state == GroupState::Empty {
            Vec::new()
        } else {
            g.members
                .values()
                .map(|m| m.metadata_for(g.protocol.as_deref().unwrap_or("")))
                .collect()
        };
        let mut codes = Vec::new();
        let mut records = Vec::new();
        for (t, p) in partitions {
            if !metadata.is_empty() && subscribed(&metadata, t) {
                codes.push(ResponseError::GroupSubscribedToTopic.code());
            } else {
                if g.offsets.contains_key(&(t.clone(), *p)) {
                    records.push(GroupRecord::Offset {
                        group: group_id.to_string(),
                        topic: t.clone(),
                        partition: *p,
                        value: None,
                    });
                }
                codes.push(0);
            }
        }
        Outcome {
            records,
            on_error: Some(|_, e| Err(e.code())),
            ..Outcome::reply(group_id, Ok(codes))
        }
    }

    /// Deletes an empty group and its offsets (DeleteGroups).
    pub fn delete(&mut self, group_id: &str) -> Outcome<i16> {
        let Some(g) = self.groups.get(group_id) else {
            return Outcome::reply(group_id, ResponseError::GroupIdNotFound.code());
        };
        if g.state != GroupState::Empty {
            return Outcome::reply(group_id, ResponseError::NonEmptyGroup.code());
        }
        let mut records: Vec<GroupRecord> = g
            .offsets
            .keys()
            .map(|(topic, partition)| GroupRecord::Offset {
                group: group_id.to_string(),
                topic: topic.clone(),
                partition: *partition,
                value: None,
            })
            .collect();
        records.push(GroupRecord::Group {
            group: group_id.to_string(),
            value: None,
        });
        tracing::info!(group = group_id, "deleting group");
        Outcome {
            records,
            on_error: Some(|_, e| e.code()),
            ..Outcome::reply(group_id, 0)
        }
    }
}

/// Whether `by` may commit to `g`: a member of its generation, or (plain commits) a
/// standalone consumer of an empty group, or (transactional commits) an older client
/// that sends no generation, whose member Kafka does not check.
fn check_committer(
    g: &mut Group,
    by: Caller<'_>,
    transactional: bool,
    now: Now,
) -> Result<(), ResponseError> {
    let Caller {
        generation,
        member_id,
        instance_id,
        ..
    } = by;
    if transactional {
        if generation < 0 && member_id.is_empty() && instance_id.is_none() {
            return Ok(());
        }
        Groups::check_member(g, member_id, instance_id)?;
        if generation != g.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        return Ok(());
    }
    if generation < 0 && member_id.is_empty() && g.state == GroupState::Empty {
        return Ok(());
    }
    Groups::check_member(g, member_id, instance_id)?;
    if g.state == GroupState::CompletingRebalance {
        return Err(ResponseError::RebalanceInProgress);
    }
    if generation != g.generation {
        return Err(ResponseError::IllegalGeneration);
    }
    if let Some(m) = g.members.get_mut(member_id) {
        m.last_seen = now.mono;
    }
    Ok(())
}

/// The group a commit goes to (created when new), or the error every offset of the commit
/// gets: an invalid group id, or a group being deleted.
fn committing_to<'g>(
    groups: &'g mut HashMap<String, Group>,
    group_id: &str,
    now: Now,
) -> Result<&'g mut Group, ResponseError> {
    if !store::valid_group_id(group_id) {
        return Err(ResponseError::InvalidGroupId);
    }
    let g = groups
        .entry(group_id.to_string())
        .or_insert_with(|| Group::new(group_id, now.wall_ms));
    if g.state == GroupState::Dead {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    Ok(g)
}
