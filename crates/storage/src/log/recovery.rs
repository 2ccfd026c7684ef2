//! Opening a partition's log: recovery after a crash or a clean stop, and damage found
//! inside it (marked, confirmed by the scrubber, repaired from a replica).

use super::*;

impl PartitionLog {
    /// Opens (or creates) the log in `dir` after a crash: see [`PartitionLog::open_with`].
    pub fn open(disk: Arc<dyn Disk>, dir: PathBuf, config: LogConfig, now_ms: i64) -> Result<Self> {
        Self::open_with(disk, dir, config, now_ms, false)
    }

    /// Opens (or creates) the log in `dir`, recovering it: segments that may hold data
    /// written after the last recovery point are verified batch by batch and cut after the
    /// last good batch; segments after a cut are removed. With `clean_shutdown` (the broker
    /// found its clean-shutdown marker) the active segment was fsynced and its indexes
    /// written at close, so it is trusted and only walked by header.
    pub fn open_with(
        disk: Arc<dyn Disk>,
        dir: PathBuf,
        config: LogConfig,
        now_ms: i64,
        clean_shutdown: bool,
    ) -> Result<Self> {
        let bases = segment_bases(disk.as_ref(), &dir)?;
        let recovery_point = read_recovery_point(disk.as_ref(), &dir);
        let mut segments = BTreeMap::new();
        let mut damage: Option<Damage> = None;
        for (i, &base) in bases.iter().enumerate() {
            let is_last = i + 1 == bases.len();
            let verify = if is_last {
                !clean_shutdown
            } else {
                bases[i + 1] > recovery_point
            };
            let (mut segment, recovery) = Segment::open(
                disk.as_ref(),
                &dir,
                base,
                config.index_interval_bytes,
                verify,
                now_ms,
            )?;
            let next_base = bases.get(i + 1).copied();
            if let Some(found) =
                judge_recovery(&mut segment, recovery, is_last, recovery_point, next_base)?
            {
                damage.get_or_insert(found);
            }
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            segments.insert(
                0,
                Segment::create(disk.as_ref(), &dir, 0, config.index_interval_bytes, now_ms)?,
            );
        }
        let first_base = segments.values().next().map_or(0, |s| s.base_offset);
        let log_end = segments.values().next_back().map_or(0, |s| s.next_offset);
        // A stored log start inside the log wins over the first segment's base.
        let stored_start = read_offset_file(disk.as_ref(), &dir, LOG_START_FILE).unwrap_or(0);
        let log_start = stored_start.clamp(first_base, log_end.max(first_base));
        let mut log = PartitionLog {
            dir,
            disk,
            config,
            segments,
            log_start,
            unflushed_records: 0,
            unflushed_bytes: 0,
            oldest_unflushed_ms: None,
            flushed_offset: 0,
            offline: None,
            damage: None,
            cuts: 0,
            cuts_synced: 0,
            recovery_point_on_disk: Some(recovery_point),
            snapshot_on_disk: OnDisk::default(),
            producers: ProducerStates::default(),
            high_watermark: None,
            epochs: None,
        };
        log.flushed_offset = log.log_end();
        log.rebuild_producer_state()?;
        if let Some(found) = damage {
            log.mark_damaged(found);
        }
        Ok(log)
    }

    /// How many times the log was cut since it was opened.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// Damage found inside the log (at start-up or by the scrubber), until repaired.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// Takes the log offline for damage: nothing is served or appended (so no damaged
    /// batch reaches a client and no offset is given out twice) until a replica repairs
    /// it from its leader or an operator acts.
    pub fn mark_damaged(&mut self, found: Damage) {
        if self.damage.is_some() {
            return;
        }
        tracing::error!(
            dir = %self.dir.display(),
            file = %found.path.display(),
            position = found.position,
            first_offset = found.first_offset,
            resume_offset = found.resume_offset,
            reason = %found.reason,
            "damaged batches inside the log: the partition is offline on this broker. In a cluster the replica refetches the damaged range from an in-sync replica once another replica leads; alone, restore the partition from a copy, or run `gregor data verify --data-dir` to list the damage"
        );
        self.offline = Some(found.to_string());
        self.damage = Some(found);
    }

    /// What the scrubber reads: every segment's base offset, file, path and size in whole
    /// batches, oldest first (none while the log is offline).
    pub fn scrub_targets(&self) -> Vec<(i64, Arc<dyn DiskFile>, PathBuf, u64)> {
        if self.offline.is_some() {
            return Vec::new();
        }
        self.segments
            .values()
            .map(|s| (s.base_offset, s.file(), s.path().to_path_buf(), s.size))
            .collect()
    }

    /// The scrubber found an invalid batch at `position` of the segment at `path` (read
    /// without the log's lock). Checked again here, under it, so that a segment cut or
    /// replaced meanwhile is not taken for damage. Returns the damage if it is real.
    pub fn confirm_damage(
        &mut self,
        path: &Path,
        position: u64,
        expected_offset: i64,
    ) -> Option<Damage> {
        if self.offline.is_some() {
            return None;
        }
        let seg = self.segments.values().find(|s| s.path() == path)?;
        if position >= seg.size {
            return None;
        }
        // The segment may have been cut and written again since the scrubber read it:
        // `position` must still be a batch boundary, and the offset expected there is
        // what the batches before it end at now.
        let mut boundary = position == 0;
        let mut expected_offset = if position == 0 {
            seg.base_offset
        } else {
            expected_offset
        };
        if position > 0 {
            let walked = seg.walk_headers(0, |at, h| {
                if at + h.total_bytes() as u64 == position {
                    boundary = true;
                    expected_offset = h.last_offset() + 1;
                }
                at + (h.total_bytes() as u64) < position
            });
            if walked.is_err() || !boundary {
                return None;
            }
        }
        let again = crate::segment::verify_batches(
            seg.file().as_ref(),
            position,
            seg.size,
            expected_offset,
            1,
            1 << 20,
        );
        let reason = match again {
            Ok(Err((_, _, reason))) => reason,
            Ok(Ok(_)) => return None,
            Err(e) => format!("read failed: {e}"),
        };
        // Searched under the lock, so bounded: past it the range is reported to the end.
        let limit = seg.size.min(position + (64 << 20));
        let (resume_position, resume_offset) =
            match seg.find_valid_batch(position + 1, limit, expected_offset) {
                Ok(Some((at, h))) => (at, h.base_offset),
                _ => (seg.size, seg.next_offset),
            };
        let found = Damage {
            path: path.to_path_buf(),
            position,
            first_offset: expected_offset,
            resume_position,
            resume_offset,
            reason,
            hole: false,
        };
        self.mark_damaged(found.clone());
        Some(found)
    }

    /// Discards the damaged range and everything after it (a follower then fetches it all
    /// again from its leader, so nothing is lost), and brings the log back online.
    /// Returns the new log end.
    pub fn repair_damage(&mut self) -> Result<Option<i64>> {
        let Some(found) = self.damage.clone() else {
            return Ok(None);
        };
        let Some(base) = self
            .segments
            .iter()
            .find(|(_, seg)| seg.path() == found.path)
            .map(|(&b, _)| b)
        else {
            return Err(StorageError::Corrupt {
                path: found.path.clone(),
                reason: "the damaged segment is no longer in the log".into(),
            });
        };
        self.begin_cut(found.first_offset, base + 1)?;
        if let Some(segment) = self.segments.get_mut(&base) {
            segment.cut_at(found.position)?;
        }
        let end = self.finish_cut()?;
        self.damage = None;
        self.offline = None;
        tracing::warn!(dir = %self.dir.display(), log_end = end, damaged_from = found.first_offset, "damaged range and what followed it discarded; fetching them again from the leader");
        Ok(Some(end))
    }

    /// Loads the producer snapshot when it fits the recovered log, then replays the batch
    /// headers after it (from the log start when there is no usable snapshot).
    pub(super) fn rebuild_producer_state(&mut self) -> Result<()> {
        let raw = self.disk.read_file(&self.dir.join(PRODUCER_SNAPSHOT_FILE));
        // No snapshot rebuilds the same state as an empty one at the log start.
        match &raw {
            Ok(raw) => self.snapshot_on_disk.holds(&[raw]),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self
                .snapshot_on_disk
                .holds(&[&ProducerStates::default().encode(self.log_start)]),
            Err(_) => self.snapshot_on_disk.forget(),
        }
        let snapshot = raw.ok().and_then(|raw| ProducerStates::decode(&raw));
        let (from, states) = match snapshot {
            Some((offset, states)) if offset >= self.log_start && offset <= self.log_end() => {
                (offset, states)
            }
            _ => (self.log_start, ProducerStates::default()),
        };
        self.producers = states;
        let mut headers = Vec::new();
        for segment in self.segments.values().filter(|s| s.next_offset > from) {
            let Some((pos, _)) = segment.position_of(from)? else {
                continue;
            };
            let mut markers = Vec::new();
            segment.walk_headers(pos, |at, h| {
                if h.base_offset >= from && h.producer_id >= 0 {
                    headers.push((*h, None));
                    if h.is_control() {
                        markers.push((headers.len() - 1, at));
                    }
                }
                true
            })?;
            for (i, at) in markers {
                let h = headers[i].0;
                let bytes = segment.read_bytes(at, h.total_bytes())?;
                headers[i].1 = batch::marker_kind(&bytes);
            }
        }
        for (h, marker) in &headers {
            match (h.is_control(), marker) {
                (false, _) => self.producers.record(h, h.max_timestamp),
                (true, Some(commit)) => self.producers.record_marker(
                    h.producer_id,
                    h.producer_epoch,
                    *commit,
                    h.base_offset,
                    h.max_timestamp,
                ),
                (true, None) => {
                    tracing::warn!(dir = %self.dir.display(), offset = h.base_offset, "skipping a control batch that is no transaction marker")
                }
            }
        }
        self.producers.truncate_aborted(self.log_start);
        Ok(())
    }

    /// Writes the producer snapshot at the log end, unless the file holds it already.
    pub(super) fn write_producer_snapshot(&self) -> Result<()> {
        let path = self.dir.join(PRODUCER_SNAPSHOT_FILE);
        let raw = self.producers.encode(self.log_end());
        self.snapshot_on_disk.write_unless_held(&[&raw], || {
            self.disk
                .write_file_atomic(&path, &raw)
                .map_err(|e| StorageError::io("write", &path, e))
        })
    }
}

/// The base offsets of the segments in `dir`, ascending, once unfinished writes and
/// cleanings are removed (their originals are intact) and an interrupted swap finished.
fn segment_bases(disk: &dyn Disk, dir: &Path) -> Result<Vec<i64>> {
    disk.create_dir_all(dir)
        .map_err(|e| StorageError::io("create directory", dir, e))?;
    let entries = disk
        .read_dir(dir)
        .map_err(|e| StorageError::io("list", dir, e))?;
    let mut bases = Vec::new();
    for path in &entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".tmp") || name.ends_with(".cleaned") {
            // An unfinished write or cleaning: the original is intact.
            let _ = disk.remove_file(path);
        } else if let Some(log_name) = name.strip_suffix(".swap") {
            // A cleaned segment that was complete but not yet in place: finish the swap.
            crate::cleaner::finish_swap(disk, dir, log_name)
                .map_err(|e| StorageError::io("finish swap of", path, e))?;
            if let Some(base) = log_name
                .strip_suffix(".log")
                .and_then(|b| b.parse::<i64>().ok())
            {
                bases.push(base);
            }
        } else if let Some(stem) = name.strip_suffix(".log") {
            match stem.parse::<i64>() {
                Ok(base) if base >= 0 => bases.push(base),
                _ => {
                    tracing::warn!(path = %path.display(), "ignoring a file that is not a segment")
                }
            }
        }
    }
    bases.sort_unstable();
    bases.dedup();
    Ok(bases)
}

/// What recovery makes of one segment's check: a torn tail or an unwritten hole in the
/// last segment above the recovery point is cut; anything else invalid is damage, for the
/// log to take offline (nothing is cut, no later segment removed).
fn judge_recovery(
    segment: &mut Segment,
    recovery: crate::segment::Recovery,
    is_last: bool,
    recovery_point: i64,
    next_base: Option<i64>,
) -> Result<Option<Damage>> {
    // A torn write can only be in the last segment, above the recovery point
    // (everything below it was fsynced before the point was written).
    let torn = |first_offset: i64| is_last && first_offset >= recovery_point;
    let reason = recovery.reason.clone().unwrap_or_default();
    match (recovery.damage, recovery.tail_at) {
        (Some(found), _) if found.hole && torn(found.first_offset) => {
            // Zeros, then valid batches, above the recovery point: pages that a
            // power loss kept from the disk (writeback has no order). What follows
            // the hole was never fsynced, so nothing after it was acknowledged as
            // durable: cut as a torn write.
            let len = segment.file().len().unwrap_or(0);
            segment.cut_at(found.position)?;
            tracing::warn!(
                segment = %segment.path().display(),
                truncated_bytes = len.saturating_sub(found.position),
                "recovery cut an unwritten hole (zeros above the recovery point) and what followed it"
            );
        }
        (Some(found), _) => {
            return Ok(Some(found));
        }
        (None, Some(pos)) if torn(segment.next_offset) => {
            let len = segment.file().len().unwrap_or(0);
            segment.cut_at(pos)?;
            tracing::warn!(
                segment = %segment.path().display(),
                truncated_bytes = len.saturating_sub(pos),
                reason = %reason,
                "recovery truncated a torn tail (an unfinished write: nothing valid follows it)"
            );
        }
        (None, Some(pos)) => {
            // Invalid bytes to the end of a segment that later segments follow, or
            // below the recovery point: not an unfinished write but damage. Nothing
            // is cut and no later segment removed.
            let len = segment.file().len().unwrap_or(pos);
            return Ok(Some(Damage {
                path: segment.path().to_path_buf(),
                position: pos,
                first_offset: segment.next_offset,
                resume_position: len,
                resume_offset: next_base.unwrap_or(recovery_point),
                reason,
                hole: false,
            }));
        }
        (None, None) if is_last && segment.next_offset < recovery_point => {
            // Whole batches, but fewer than were fsynced: the file lost its end.
            return Ok(Some(Damage {
                path: segment.path().to_path_buf(),
                position: segment.size,
                first_offset: segment.next_offset,
                resume_position: segment.size,
                resume_offset: recovery_point,
                reason: format!(
                    "the log ends at offset {} but offsets below {recovery_point} were fsynced",
                    segment.next_offset
                ),
                hole: false,
            }));
        }
        (None, None) => {}
    }
    Ok(None)
}
