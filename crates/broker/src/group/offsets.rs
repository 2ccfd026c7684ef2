//! A group's committed offsets: commits (plain and transactional) validated against the
//! membership and stored once the log append is done, fetches, and deletion.

use super::*;

impl GroupCoordinator {
    /// Checks each offset (known partition, metadata size) and builds the records of the
    /// valid ones: one code per offset, and the records to append.
    pub(super) fn offset_records(
        &self,
        group_id: &str,
        offsets: &[(String, i32, CommittedOffset)],
        valid_partition: impl Fn(&str, i32) -> bool,
    ) -> (Vec<i16>, Vec<Record>) {
        let mut codes = Vec::with_capacity(offsets.len());
        let mut records = Vec::new();
        for (topic, partition, o) in offsets {
            let code = if !valid_partition(topic, *partition) {
                ResponseError::UnknownTopicOrPartition.code()
            } else if o.metadata.len() > self.settings.offset_metadata_max_bytes {
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                records.push((
                    store::offset_key(group_id, topic, *partition),
                    Some(store::offset_value(o)),
                ));
                0
            };
            codes.push(code);
        }
        (codes, records)
    }

    /// Validates and stores commits. `valid_partition` says whether a topic-partition
    /// exists. Returns one error code per requested partition, in order.
    pub fn commit(
        &self,
        log: &dyn GroupLog,
        by: Committer<'_>,
        offsets: &[(String, i32, CommittedOffset)],
        valid_partition: impl Fn(&str, i32) -> bool,
    ) -> Vec<i16> {
        let Committer {
            group_id,
            generation,
            member_id,
            instance_id,
        } = by;
        let fail_all = |e: ResponseError| vec![e.code(); offsets.len()];
        let mut groups = self.lock();
        let g = match committing_to(&mut groups, group_id) {
            Ok(g) => g,
            Err(e) => return fail_all(e),
        };
        let simple = generation < 0 && member_id.is_empty();
        if !(simple && g.state == GroupState::Empty) {
            if let Err(e) = Self::check_member(g, member_id, instance_id) {
                return fail_all(e);
            }
            if g.state == GroupState::CompletingRebalance {
                return fail_all(ResponseError::RebalanceInProgress);
            }
            if generation != g.generation {
                return fail_all(ResponseError::IllegalGeneration);
            }
            if let Some(m) = g.members.get_mut(member_id) {
                m.last_seen = Instant::now();
            }
        }
        let (codes, records) = self.offset_records(group_id, offsets, valid_partition);
        if records.is_empty() {
            return codes;
        }
        if let Err(e) = log.append(group_id, records) {
            tracing::error!(group = group_id, error = %e, "could not store committed offsets");
            return codes
                .iter()
                .map(|&c| {
                    if c == 0 {
                        ResponseError::KafkaStorageError.code()
                    } else {
                        c
                    }
                })
                .collect();
        }
        for ((topic, partition, o), code) in offsets.iter().zip(&codes) {
            if *code == 0 {
                g.offsets.insert((topic.clone(), *partition), o.clone());
            }
        }
        codes
    }

    /// TxnOffsetCommit: stores offsets as part of the producer's transaction. They are
    /// written now (transactional records) but count only once the transaction commits.
    pub fn txn_commit(
        &self,
        log: &dyn GroupLog,
        by: Committer<'_>,
        producer: (i64, i16),
        offsets: &[(String, i32, CommittedOffset)],
        valid_partition: impl Fn(&str, i32) -> bool,
    ) -> Vec<i16> {
        let Committer {
            group_id,
            generation,
            member_id,
            instance_id,
        } = by;
        let fail_all = |e: ResponseError| vec![e.code(); offsets.len()];
        let mut groups = self.lock();
        let g = match committing_to(&mut groups, group_id) {
            Ok(g) => g,
            Err(e) => return fail_all(e),
        };
        // Older clients send no generation: Kafka then skips the member check.
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            if let Err(e) = Self::check_member(g, member_id, instance_id) {
                return fail_all(e);
            }
            if generation != g.generation {
                return fail_all(ResponseError::IllegalGeneration);
            }
        }
        let (codes, records) = self.offset_records(group_id, offsets, valid_partition);
        if records.is_empty() {
            return codes;
        }
        if let Err((code, e)) = log.append_txn(group_id, producer.0, producer.1, records) {
            tracing::warn!(group = group_id, producer_id = producer.0, error = %e, "transactional offset commit refused");
            return codes
                .iter()
                .map(|&c| if c == 0 { code.code() } else { c })
                .collect();
        }
        let pending = g.txn_offsets.entry(producer.0).or_default();
        for ((topic, partition, o), code) in offsets.iter().zip(&codes) {
            if *code == 0 {
                pending.insert((topic.clone(), *partition), o.clone());
            }
        }
        codes
    }

    /// A transaction marker reached `__consumer_offsets`: the producer's pending offsets
    /// become committed (commit) or are dropped (abort).
    pub fn complete_txn(&self, producer_id: i64, commit: bool) {
        let mut groups = self.lock();
        for g in groups.values_mut() {
            if let Some(pending) = g.txn_offsets.remove(&producer_id) {
                if commit {
                    g.offsets.extend(pending);
                }
            }
        }
    }

    pub fn load_txn_offsets(&self, records: Vec<(i64, GroupRecord)>) {
        let mut groups = self.lock();
        for (producer_id, r) in records {
            if let GroupRecord::Offset {
                group,
                topic,
                partition,
                value: Some(v),
            } = r
            {
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group))
                    .txn_offsets
                    .entry(producer_id)
                    .or_default()
                    .insert((topic, partition), v);
            }
        }
    }

    /// Whether a partition's offset in the group waits on an open transaction
    /// (OffsetFetch with `require_stable` then answers `UNSTABLE_OFFSET_COMMIT`).
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        let groups = self.lock();
        groups.get(group_id).is_some_and(|g| {
            let key = (topic.to_string(), partition);
            g.txn_offsets.values().any(|p| p.contains_key(&key))
        })
    }

    /// Committed offsets of a group: the partitions asked for, or all with `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        let groups = self.lock();
        let committed = groups.get(group_id).map(|g| &g.offsets);
        match wanted {
            Some(list) => list
                .iter()
                .map(|(t, p)| {
                    (
                        t.clone(),
                        *p,
                        committed.and_then(|c| c.get(&(t.clone(), *p)).cloned()),
                    )
                })
                .collect(),
            None => committed
                .map(|c| {
                    c.iter()
                        .map(|((t, p), o)| (t.clone(), *p, Some(o.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Deletes committed offsets (OffsetDelete). `subscribed` says whether the group's
    /// members are subscribed to a topic. Group-level error, or per-partition codes.
    pub fn delete_offsets(
        &self,
        log: &dyn GroupLog,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed: impl Fn(&[Bytes], &str) -> bool,
    ) -> Result<Vec<i16>, i16> {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group_id) else {
            return Err(ResponseError::GroupIdNotFound.code());
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
                    records.push((store::offset_key(group_id, t, *p), None));
                }
                codes.push(0);
            }
        }
        if !records.is_empty() {
            if let Err(e) = log.append(group_id, records) {
                tracing::error!(group = group_id, error = %e, "could not delete offsets");
                return Err(ResponseError::KafkaStorageError.code());
            }
            for ((t, p), c) in partitions.iter().zip(&codes) {
                if *c == 0 {
                    g.offsets.remove(&(t.clone(), *p));
                }
            }
        }
        Ok(codes)
    }
}

/// The group a commit goes to (created when new), or the error every offset of the commit
/// gets: an invalid group id, or a group being deleted.
fn committing_to<'g>(
    groups: &'g mut HashMap<String, Group>,
    group_id: &str,
) -> Result<&'g mut Group, ResponseError> {
    if !store::valid_group_id(group_id) {
        return Err(ResponseError::InvalidGroupId);
    }
    let g = groups
        .entry(group_id.to_string())
        .or_insert_with(|| Group::new(group_id));
    if g.state == GroupState::Dead {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    Ok(g)
}
