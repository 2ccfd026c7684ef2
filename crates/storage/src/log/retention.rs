//! Shrinking a partition's log: DeleteRecords, retention by time and size, and installing
//! what the log cleaner compacted.

use super::*;

impl PartitionLog {
    /// Moves the log start offset forward to `offset` (DeleteRecords): it must not pass the
    /// high watermark (Kafka answers OFFSET_OUT_OF_RANGE). Whole segments below the new
    /// start are deleted; the start itself is stored so a restart keeps it. Returns the new
    /// log start.
    pub fn delete_records(&mut self, offset: i64, now_ms: i64) -> Result<i64> {
        self.check_online()?;
        let high_watermark = self.high_watermark();
        if offset < 0 || offset > high_watermark {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start,
                log_end: high_watermark,
            });
        }
        self.follow_log_start(offset, now_ms)
    }

    /// A follower takes its leader's log start (from a fetch answer), as far as its own log
    /// reaches: records deleted on the leader (DeleteRecords, retention) go here too, so a
    /// new leader does not serve them again. Returns the log start.
    pub fn follow_log_start(&mut self, offset: i64, now_ms: i64) -> Result<i64> {
        self.check_online()?;
        let offset = offset.min(self.log_end());
        if offset > self.log_start {
            self.raise_log_start(offset);
            self.write_offset_file(LOG_START_FILE, offset)?;
            self.delete_segments_below_start(now_ms)?;
            self.producers.truncate_aborted(self.log_start);
        }
        self.check_invariants();
        Ok(self.log_start)
    }

    /// Applies `retention.ms` and `retention.bytes`: deletes the oldest closed segments that
    /// are past either limit (the active one is rolled first when it is itself expired).
    /// Returns how many segments were deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize> {
        if !self.config.retention_enabled || self.offline.is_some() {
            return Ok(0);
        }
        let expired = |s: &Segment, retention_ms: i64| {
            retention_ms >= 0
                && s.max_timestamp >= 0
                && now_ms.saturating_sub(s.max_timestamp) > retention_ms
        };
        if self.active().size > 0 && expired(self.active(), self.config.retention_ms) {
            self.roll(now_ms)?;
        }
        let mut deleted = 0;
        let mut size = self.size_bytes() as i64;
        loop {
            let (first_base, first_size, first_next, doomed) = {
                let closed = self.segments.len() > 1;
                let Some(first) = self.segments.values().next() else {
                    break;
                };
                let by_size = self.config.retention_bytes >= 0
                    && size - first.size as i64 >= self.config.retention_bytes;
                (
                    first.base_offset,
                    first.size,
                    first.next_offset,
                    closed && (expired(first, self.config.retention_ms) || by_size),
                )
            };
            if !doomed {
                break;
            }
            if let Some(segment) = self.segments.remove(&first_base) {
                segment.delete_files(self.disk.as_ref(), &self.dir);
            }
            size -= first_size as i64;
            deleted += 1;
            tracing::info!(dir = %self.dir.display(), base_offset = first_base, "retention deleted a segment");
            if first_next > self.log_start {
                self.raise_log_start(first_next);
            }
        }
        if deleted > 0 {
            let first = self.segments.values().next().map_or(0, |s| s.base_offset);
            self.raise_log_start(first);
            self.write_offset_file(LOG_START_FILE, self.log_start)?;
            self.producers.truncate_aborted(self.log_start);
        }
        self.check_invariants();
        Ok(deleted)
    }

    /// Moves the log start up to `offset`, and a tracked high watermark with it: records
    /// below the log start are gone, committed or not (Kafka's `updateLogStartOffset`). A
    /// follower's high watermark lags the leader's; retention or DeleteRecords may pass it.
    fn raise_log_start(&mut self, offset: i64) {
        self.log_start = self.log_start.max(offset);
        if let Some(hw) = self.high_watermark.as_mut() {
            *hw = (*hw).max(self.log_start);
        }
    }

    /// Deletes closed segments that lie wholly below the log start.
    pub(super) fn delete_segments_below_start(&mut self, now_ms: i64) -> Result<()> {
        if self.log_start >= self.log_end() && self.active().size > 0 {
            // Everything is gone: start an empty segment at the log end so the old one can go.
            self.roll(now_ms)?;
        }
        while self.segments.len() > 1 {
            let Some((&base, first)) = self.segments.iter().next() else {
                break;
            };
            if first.next_offset > self.log_start {
                break;
            }
            if let Some(segment) = self.segments.remove(&base) {
                segment.delete_files(self.disk.as_ref(), &self.dir);
            }
        }
        Ok(())
    }

    /// The closed segments the cleaner may compact now, if cleaning is due: those old enough
    /// for `min.compaction.lag.ms` (a prefix of the closed segments), when the share not yet
    /// cleaned reaches `min.cleanable.dirty.ratio` or its oldest record passed
    /// `max.compaction.lag.ms`.
    pub fn cleanable(&self, now_ms: i64) -> Option<crate::cleaner::Cleanable> {
        if !self.config.compact || self.offline.is_some() || self.segments.len() < 2 {
            return None;
        }
        let checkpoint =
            read_offset_file(self.disk.as_ref(), &self.dir, CLEANER_CHECKPOINT_FILE).unwrap_or(0);
        let closed: Vec<&Segment> = self
            .segments
            .values()
            .take(self.segments.len() - 1)
            .take_while(|s| {
                crate::cleaner::old_enough(
                    s.max_timestamp,
                    now_ms,
                    self.config.min_compaction_lag_ms,
                )
            })
            .collect();
        let total: u64 = closed.iter().map(|s| s.size).sum();
        let dirty: Vec<&&Segment> = closed
            .iter()
            .filter(|s| s.next_offset > checkpoint)
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size).sum();
        if total == 0 || dirty_bytes == 0 {
            return None;
        }
        let overdue = dirty.iter().any(|s| {
            s.max_timestamp >= 0
                && now_ms.saturating_sub(s.max_timestamp) > self.config.max_compaction_lag_ms
        });
        if (dirty_bytes as f64) / (total as f64) < self.config.min_cleanable_dirty_ratio && !overdue
        {
            return None;
        }
        Some(crate::cleaner::Cleanable {
            dir: self.dir.clone(),
            end_offset: closed.last().map_or(0, |s| s.next_offset),
            segments: closed
                .iter()
                .map(|s| crate::cleaner::SegmentRef {
                    base_offset: s.base_offset,
                    next_offset: s.next_offset,
                    size: s.size,
                    file: s.file(),
                })
                .collect(),
            delete_retention_ms: self.config.delete_retention_ms,
        })
    }

    /// Swaps a cleaned segment in (crash-safely; see `cleaner.rs`). Skipped, and the
    /// cleaned file removed, if the segment changed or went away meanwhile (retention).
    pub fn install_cleaned(&mut self, cleaned: &crate::cleaner::Cleaned) -> Result<bool> {
        self.check_online()?;
        let base = cleaned.base_offset;
        let unchanged = self
            .segments
            .get(&base)
            .is_some_and(|s| s.size == cleaned.expected_size)
            && self.segments.keys().next_back() != Some(&base);
        if !unchanged {
            let _ = self.disk.remove_file(&cleaned.path);
            return Ok(false);
        }
        let log_name = format!("{base:020}.log");
        let swap = self.dir.join(format!("{log_name}.swap"));
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |e| StorageError::io(op, path, e)
        };
        self.disk
            .rename(&cleaned.path, &swap)
            .map_err(io("rename", &swap))?;
        self.disk
            .sync_dir(&self.dir)
            .map_err(io("fsync", &self.dir))?;
        crate::cleaner::finish_swap(self.disk.as_ref(), &self.dir, &log_name)
            .map_err(io("swap", &swap))?;
        let (segment, _) = Segment::open(
            self.disk.as_ref(),
            &self.dir,
            base,
            self.config.index_interval_bytes,
            false,
            0,
        )?;
        segment.write_indexes(self.disk.as_ref(), &self.dir)?;
        self.segments.insert(base, segment);
        self.check_invariants();
        Ok(true)
    }

    /// Records that offsets below `offset` are compacted.
    pub fn set_cleaned_up_to(&self, offset: i64) -> Result<()> {
        self.write_offset_file(CLEANER_CHECKPOINT_FILE, offset)
    }

    /// Compacts the log in one go (all three steps), for callers that hold the log alone.
    pub fn compact_now(&mut self, now_ms: i64) -> Result<crate::cleaner::CleanStats> {
        let Some(c) = self.cleanable(now_ms) else {
            return Ok(crate::cleaner::CleanStats::default());
        };
        let disk = self.disk().clone();
        let (cleaned, stats) = crate::cleaner::clean(disk.as_ref(), &c, now_ms, |_| {})?;
        for done in cleaned {
            self.install_cleaned(&done)?;
        }
        self.set_cleaned_up_to(c.end_offset)?;
        Ok(stats)
    }
}
