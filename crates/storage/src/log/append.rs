//! Writing a partition's log: appends (by this leader, or copied from one), transaction
//! markers, the leader-epoch cache, truncation, and segment rolls.

use super::*;

impl PartitionLog {
    /// The leader-epoch cache, built from the batch headers on first use.
    pub(super) fn epochs_mut(&mut self) -> Result<&mut Vec<(i32, i64)>> {
        if self.epochs.is_none() {
            let mut epochs: Vec<(i32, i64)> = Vec::new();
            for segment in self.segments.values() {
                segment.walk_headers(0, |_, h| {
                    if h.last_offset() >= self.log_start
                        && epochs
                            .last()
                            .is_none_or(|&(e, _)| h.partition_leader_epoch > e)
                    {
                        epochs.push((h.partition_leader_epoch, h.base_offset));
                    }
                    true
                })?;
            }
            self.epochs = Some(epochs);
        }
        Ok(self.epochs.get_or_insert_with(Vec::new))
    }

    pub(super) fn note_epoch(&mut self, epoch: i32, offset: i64) {
        if let Some(epochs) = self.epochs.as_mut() {
            if epochs.last().is_none_or(|&(e, _)| epoch > e) {
                epochs.push((epoch, offset));
            }
        }
    }

    /// The latest leader epoch written in this log, if any.
    pub fn latest_epoch(&mut self) -> Result<Option<LeaderEpoch>> {
        Ok(self.epochs_mut()?.last().map(|&(e, _)| LeaderEpoch(e)))
    }

    /// OffsetForLeaderEpoch (KIP-101, KIP-279): the largest epoch at or below `epoch` and
    /// the offset where it ended here (the start of the next epoch, or the log end for the
    /// latest). `None` when the log has no epoch at or below it.
    pub fn end_offset_for_epoch(
        &mut self,
        epoch: LeaderEpoch,
    ) -> Result<Option<(LeaderEpoch, Offset)>> {
        let log_end = self.log_end();
        let epochs = self.epochs_mut()?;
        let i = epochs.partition_point(|&(e, _)| e <= epoch.get());
        if i == 0 {
            return Ok(None);
        }
        let found = epochs[i - 1].0;
        let end = epochs.get(i).map_or(log_end, |&(_, start)| start);
        Ok(Some((LeaderEpoch(found), Offset(end))))
    }

    /// Appends batches copied from the leader, which already carry their offsets and leader
    /// epochs: a follower's append. The batches must start at the log end; a partial batch
    /// at the end of `bytes` (a fetch cut short) is left for the next fetch. Returns the
    /// appended range, or `None` when there was nothing whole to append.
    pub fn append_replicated(&mut self, bytes: &[u8], now_ms: i64) -> Result<Option<AppendInfo>> {
        self.check_online()?;
        let log_end = self.log_end();
        let mut headers = Vec::new();
        let mut at = 0usize;
        let mut next = log_end;
        while at < bytes.len() {
            let Ok(h) = BatchHeader::parse(&bytes[at..]) else {
                break;
            };
            if at + h.total_bytes() > bytes.len() {
                break;
            }
            if !h.offsets_sane() || h.base_offset < next {
                return Err(StorageError::Corrupt {
                    path: self.dir.clone(),
                    reason: format!(
                        "replicated batch at offset {} does not follow {next}",
                        h.base_offset
                    ),
                });
            }
            batch::verify_crc(&h, &bytes[at..at + h.total_bytes()]).map_err(|e| {
                StorageError::Corrupt {
                    path: self.dir.clone(),
                    reason: format!("replicated batch at offset {}: {e}", h.base_offset),
                }
            })?;
            next = h.last_offset() + 1;
            headers.push((at, h));
            at += h.total_bytes();
        }
        if headers.is_empty() {
            return Ok(None);
        }
        let bytes = &bytes[..at];
        if headers[0].1.base_offset != log_end {
            return Err(StorageError::Corrupt {
                path: self.dir.clone(),
                reason: format!(
                    "replicated batches start at {}, the log ends at {log_end}",
                    headers[0].1.base_offset
                ),
            });
        }
        let mut records = 0u64;
        for (_, h) in &headers {
            records += h.records_count.max(0) as u64;
        }
        // Roll per batch boundary as a leader would, so offsets stay within a segment's range.
        let mut start = 0usize;
        let mut group: Vec<(usize, BatchHeader)> = Vec::new();
        for &(pos, h) in &headers {
            let fits = self.active().fits(&h)
                && h.last_offset() - self.active().base_offset
                    < crate::segment::MAX_RELATIVE_OFFSET;
            if !group.is_empty() && !fits {
                self.append_group(&bytes[start..pos], &group, start, now_ms)?;
                start = pos;
                group.clear();
            }
            group.push((pos, h));
        }
        self.append_group(&bytes[start..], &group, start, now_ms)?;
        for &(at, ref h) in &headers {
            self.note_epoch(h.partition_leader_epoch, h.base_offset);
            if h.producer_id >= 0 && !h.is_control() {
                self.producers.record(h, now_ms);
            } else if h.is_control() && h.producer_id >= 0 {
                if let Some(commit) = batch::marker_kind(&bytes[at..at + h.total_bytes()]) {
                    self.producers.record_marker(
                        h.producer_id,
                        h.producer_epoch,
                        commit,
                        h.base_offset,
                        now_ms,
                    );
                }
            }
        }
        self.unflushed_records += records;
        self.unflushed_bytes += bytes.len() as u64;
        self.oldest_unflushed_ms.get_or_insert(now_ms);
        self.check_invariants();
        Ok(Some(AppendInfo {
            base_offset: log_end,
            last_offset: next - 1,
            records,
            flush_due: self.flush_due(now_ms),
            duplicate: false,
        }))
    }

    /// Appends one run of replicated batches that fits the active segment (after a roll if
    /// needed). `group` positions are relative to the whole request; `offset` is where
    /// `bytes` starts in it.
    pub(super) fn append_group(
        &mut self,
        bytes: &[u8],
        group: &[(usize, BatchHeader)],
        offset: usize,
        now_ms: i64,
    ) -> Result<()> {
        let Some(last) = group.last() else {
            return Ok(());
        };
        let relative: Vec<(usize, BatchHeader)> =
            group.iter().map(|&(p, h)| (p - offset, h)).collect();
        if let Err(e) = self
            .maybe_roll(bytes.len() as u64, last.1.last_offset() + 1, now_ms)
            .and_then(|_| self.active_mut().append(bytes, &relative))
        {
            return Err(self.fail(e));
        }
        Ok(())
    }

    /// Removes everything at and after `offset` (a follower cutting a log that diverged
    /// from its leader's, KIP-101). Truncation happens at batch boundaries: the batch
    /// holding `offset` goes too. Producer state is rebuilt from what remains.
    pub fn truncate_to(&mut self, offset: Offset) -> Result<()> {
        let offset = offset.get();
        self.check_online()?;
        if offset >= self.log_end() {
            return Ok(());
        }
        let offset = offset.max(self.log_start);
        // Whole segments at or after `offset` go, but the first one always stays (cut
        // empty if need be) so the log keeps an active segment.
        self.begin_cut(offset, offset)?;
        if let Err(e) = self.active_mut().truncate_to(offset) {
            return Err(self.fail(e));
        }
        let end = self.finish_cut()?;
        tracing::info!(dir = %self.dir.display(), log_end = end, "log truncated to match the leader");
        self.check_invariants();
        Ok(())
    }

    /// Before the log is cut at `offset`: the stored recovery point comes down to it (a
    /// crash after the cut would otherwise take the next torn write for damage), the cut
    /// is counted (an fsync in flight covers nothing written after it), and every segment
    /// whose base is at or after `from_base` is deleted; the first segment always stays.
    pub(super) fn begin_cut(&mut self, offset: i64, from_base: i64) -> Result<()> {
        self.lower_recovery_point(offset)?;
        self.cuts += 1;
        let first = self.segments.keys().next().copied().unwrap_or(0);
        let doomed: Vec<i64> = self
            .segments
            .range(from_base..)
            .map(|(&b, _)| b)
            .filter(|&b| b != first)
            .collect();
        for base in doomed {
            if let Some(segment) = self.segments.remove(&base) {
                segment.delete_files(self.disk.as_ref(), &self.dir);
            }
        }
        Ok(())
    }

    /// After a cut: the producer snapshot goes, the directory is fsynced, the flushed
    /// offset, high watermark and epoch cache come down to the new end, and the producer
    /// state is rebuilt from what remains. Returns the new log end.
    pub(super) fn finish_cut(&mut self) -> Result<i64> {
        let dir = self.dir.clone();
        self.snapshot_on_disk.forget();
        let _ = self.disk.remove_file(&dir.join(PRODUCER_SNAPSHOT_FILE));
        self.disk
            .sync_dir(&dir)
            .map_err(|e| StorageError::io("fsync", &dir, e))?;
        let end = self.log_end();
        self.flushed_offset = self.flushed_offset.min(end);
        if let Some(hw) = self.high_watermark.as_mut() {
            *hw = (*hw).min(end);
        }
        if let Some(epochs) = self.epochs.as_mut() {
            epochs.retain(|&(_, start)| start < end);
        }
        self.rebuild_producer_state()?;
        Ok(end)
    }

    /// Appends validated batches (`headers` gives each batch's position in `bytes`),
    /// assigning their offsets and, with `log_append_time_ms`, stamping their timestamps.
    pub fn append(
        &mut self,
        bytes: &mut [u8],
        headers: &[(usize, BatchHeader)],
        leader_epoch: LeaderEpoch,
        log_append_time_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        let leader_epoch = leader_epoch.get();
        self.check_online()?;
        // Idempotent producers: a retry of a recent batch is answered with its offsets, and
        // a gap or a stale epoch is refused, before anything is written.
        for (_, h) in headers {
            if h.producer_id >= 0 && headers.len() > 1 {
                return Err(SequenceError::MultipleBatches.into());
            }
            if let Check::Duplicate(meta) = self.producers.check(h)? {
                return Ok(AppendInfo {
                    base_offset: meta.first_offset,
                    last_offset: meta.last_offset,
                    records: 0,
                    flush_due: false,
                    duplicate: true,
                });
            }
        }
        // A leader appends in its own epoch, never older than what its log already holds
        // (paired with the check of the cache against the log end after the write). Checked
        // when the epoch cache is loaded, as it is once this broker has followed (its
        // truncation reads it): a leader deposed while its append waited is refused.
        if let Some(&(last, _)) = self.epochs.as_ref().and_then(|e| e.last()) {
            if leader_epoch < last {
                return Err(StorageError::StaleEpoch {
                    epoch: leader_epoch,
                    latest: last,
                });
            }
        }
        let base_offset = self.log_end();
        let mut next = base_offset;
        let mut stamped = Vec::with_capacity(headers.len());
        let mut records = 0u64;
        for &(at, header) in headers {
            let end = at + header.total_bytes();
            let Some(b) = bytes.get_mut(at..end) else {
                return Err(StorageError::Corrupt {
                    path: self.dir.clone(),
                    reason: format!("batch at {at} runs past the {} bytes given", bytes.len()),
                });
            };
            batch::set_base_offset(b, next);
            batch::set_partition_leader_epoch(b, leader_epoch);
            if let Some(ts) = log_append_time_ms {
                batch::stamp_log_append_time(b, ts);
            }
            let h = BatchHeader::parse(b).map_err(|e| StorageError::Corrupt {
                path: self.dir.clone(),
                reason: e.to_string(),
            })?;
            next = h.last_offset() + 1;
            records += h.records_count as u64;
            stamped.push((at, h));
        }
        if let Err(e) = self
            .maybe_roll(bytes.len() as u64, next, now_ms)
            .and_then(|_| self.active_mut().append(bytes, &stamped))
        {
            return Err(self.fail(e));
        }
        assert_eq!(
            self.log_end(),
            next,
            "log end must follow the appended batches"
        );
        for (_, h) in &stamped {
            self.producers.record(h, now_ms);
        }
        self.note_epoch(leader_epoch, base_offset);
        self.unflushed_records += records;
        self.unflushed_bytes += bytes.len() as u64;
        self.oldest_unflushed_ms.get_or_insert(now_ms);
        self.check_invariants();
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            records,
            flush_due: self.flush_due(now_ms),
            duplicate: false,
        })
    }

    /// Appends a transaction marker (commit or abort) for `producer_id`, ending its open
    /// transaction here; an abort joins the aborted-transaction index. A marker from an
    /// epoch older than the producer's is refused.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        self.check_online()?;
        self.producers.check_marker(producer_id, epoch)?;
        let mut bytes =
            batch::build_control_batch(now_ms, producer_id, epoch, commit, coordinator_epoch);
        let offset = self.log_end();
        batch::set_base_offset(&mut bytes, offset);
        let h = BatchHeader::parse(&bytes).map_err(|e| StorageError::Corrupt {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        if let Err(e) = self
            .maybe_roll(bytes.len() as u64, offset + 1, now_ms)
            .and_then(|_| self.active_mut().append(&bytes, &[(0, h)]))
        {
            return Err(self.fail(e));
        }
        self.producers
            .record_marker(producer_id, epoch, commit, offset, now_ms);
        self.unflushed_records += 1;
        self.unflushed_bytes += bytes.len() as u64;
        self.oldest_unflushed_ms.get_or_insert(now_ms);
        self.check_invariants();
        Ok(AppendInfo {
            base_offset: offset,
            last_offset: offset,
            records: 1,
            flush_due: self.flush_due(now_ms),
            duplicate: false,
        })
    }

    pub(super) fn maybe_roll(
        &mut self,
        incoming_bytes: u64,
        next_offset: i64,
        now_ms: i64,
    ) -> Result<()> {
        let active = self.active();
        let full = active.size > 0 && active.size + incoming_bytes > self.config.segment_bytes;
        let old =
            active.size > 0 && now_ms.saturating_sub(active.opened_ms) >= self.config.segment_ms;
        let offsets_overflow =
            next_offset - active.base_offset >= crate::segment::MAX_RELATIVE_OFFSET;
        if full || old || offsets_overflow {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Closes the active segment (fsynced, indexes written) and starts a new one.
    pub fn roll(&mut self, now_ms: i64) -> Result<()> {
        // An offline log keeps its files as they are (a damaged one for its repair).
        self.check_online()?;
        let base = self.log_end();
        self.unflushed_bytes = 0;
        {
            let active = self.active();
            active.sync()?;
            active.write_indexes(self.disk.as_ref(), &self.dir)?;
        }
        let segment = Segment::create(
            self.disk.as_ref(),
            &self.dir,
            base,
            self.config.index_interval_bytes,
            now_ms,
        )?;
        self.segments.insert(base, segment);
        self.disk
            .sync_dir(&self.dir)
            .map_err(|e| StorageError::io("fsync", &self.dir, e))?;
        self.write_recovery_point(base)?;
        self.write_producer_snapshot()?;
        tracing::debug!(dir = %self.dir.display(), base_offset = base, "rolled segment");
        Ok(())
    }
}
