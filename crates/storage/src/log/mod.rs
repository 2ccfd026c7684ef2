//! A partition's log: an ordered set of segments, of which the last is active.
//!
//! Architecture invariant: offsets are assigned here, once, by writing them into the
//! batch's base-offset field; they are never translated on the way out. Within a log,
//! `log_start <= high_watermark <= log_end`, and batches appear in strictly increasing
//! offset order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gregor_protocol::batch::{self, BatchHeader};

use crate::disk::{Disk, DiskFile};
use crate::error::{Result, StorageError};
use crate::producer::{Check, ProducerStates, SequenceError};
use crate::segment::{Damage, Segment};

const RECOVERY_POINT_FILE: &str = "recovery-point";
/// The log start offset, when DeleteRecords or retention moved it inside a segment.
const LOG_START_FILE: &str = "log-start-offset";
/// Idempotent-producer state and the offset it covers.
const PRODUCER_SNAPSHOT_FILE: &str = "producer-snapshot";
/// Offsets below this have been compacted (Kafka's cleaner-offset-checkpoint).
const CLEANER_CHECKPOINT_FILE: &str = "cleaner-checkpoint";

/// Per-partition storage settings (Kafka's topic-level names in comments).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: i64,
    /// `index.interval.bytes`
    pub index_interval_bytes: u64,
    /// `flush.messages`: fsync once this many records are unflushed.
    pub flush_messages: u64,
    /// `flush.ms`: fsync once the oldest unflushed record is this old.
    pub flush_ms: i64,
    /// `retention.ms`: closed segments whose newest record is older are deleted; -1 keeps all.
    pub retention_ms: i64,
    /// `retention.bytes`: oldest segments are deleted while the log is larger; -1 for no limit.
    pub retention_bytes: i64,
    /// Whether `cleanup.policy` includes `delete` (retention applies at all).
    pub retention_enabled: bool,
    /// Whether `cleanup.policy` includes `compact`.
    pub compact: bool,
    /// `min.cleanable.dirty.ratio`
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are never compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a segment this old is compacted whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            flush_messages: i64::MAX as u64,
            flush_ms: i64::MAX,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_enabled: true,
            compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
        }
    }
}

/// The three offsets that bound what a log holds and what readers may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start: i64,
    /// The last stable offset: below it no transaction is open; `read_committed` readers
    /// see nothing at or above it.
    pub last_stable: i64,
    pub high_watermark: i64,
    pub log_end: i64,
}

impl LogOffsets {
    /// Checks `log_start <= last_stable <= high_watermark <= log_end`; stays on in
    /// release builds.
    pub fn checked(self) -> Self {
        assert!(
            0 <= self.log_start
                && self.log_start <= self.last_stable
                && self.last_stable <= self.high_watermark
                && self.log_start <= self.high_watermark
                && self.high_watermark <= self.log_end,
            "log offsets out of order: {self:?}"
        );
        self
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub records: u64,
    /// The flush policy asks for an fsync before this append is acknowledged.
    pub flush_due: bool,
    /// A retried idempotent batch already in the log: nothing was appended, and the
    /// offsets are the original ones.
    pub duplicate: bool,
}

/// Bytes to serve for a fetch: whole batches in one segment file, read outside any lock.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    /// `None` when nothing is to be served.
    region: Option<FileRegion>,
    /// The records in those batches, by their headers.
    pub records: u64,
}

/// A range of a segment file, kept open. It holds only whole, already-written batches,
/// which never change while the segment exists.
#[derive(Debug, Clone)]
pub struct FileRegion {
    pub file: Arc<dyn DiskFile>,
    pub path: PathBuf,
    pub position: u64,
    pub len: usize,
}

impl FileRegion {
    /// Reads the range.
    pub fn read(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.len];
        self.file
            .read_exact_at(&mut buf, self.position)
            .map_err(|e| StorageError::io("read", &self.path, e))?;
        Ok(buf)
    }
}

impl ReadPlan {
    fn empty() -> Self {
        ReadPlan {
            region: None,
            records: 0,
        }
    }

    /// The planned bytes' length.
    pub fn len(&self) -> usize {
        self.region.as_ref().map_or(0, |r| r.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The planned bytes as a file range, to be sent without reading them (`None` when
    /// the plan is empty).
    pub fn region(&self) -> Option<FileRegion> {
        self.region.clone()
    }

    /// Reads the planned bytes.
    pub fn read(&self) -> Result<Vec<u8>> {
        self.region
            .as_ref()
            .map_or(Ok(Vec::new()), FileRegion::read)
    }
}

#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    disk: Arc<dyn Disk>,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start: i64,
    unflushed_records: u64,
    /// Bytes appended since the last fsync began (the page cache's dirty share of this
    /// partition, for `log.writeback.bytes`).
    unflushed_bytes: u64,
    oldest_unflushed_ms: Option<i64>,
    /// Everything below this offset is known to be fsynced.
    flushed_offset: i64,
    /// Set by a failed write or fsync: the log refuses reads and appends until the broker
    /// restarts and recovers it, so nothing that may not be on disk is served or acknowledged.
    offline: Option<String>,
    /// Damage inside the log, found at start-up or by the scrubber (the log is offline).
    damage: Option<Damage>,
    /// How many times the log was cut (truncated or repaired): an fsync that began before
    /// a cut does not cover offsets written after it.
    cuts: u64,
    /// Idempotent producers' last batches (see `producer.rs`).
    producers: ProducerStates,
    /// `None` while every appended record counts as committed (a single node, or a
    /// partition with one replica); set when replication holds the high watermark back.
    high_watermark: Option<i64>,
    /// The leader-epoch cache: `(epoch, first offset written in it)`, ascending. Built
    /// from the batch headers the first time replication asks for it, then kept up to date
    /// by appends and truncation.
    epochs: Option<Vec<(i32, i64)>>,
}

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
        disk.create_dir_all(&dir)
            .map_err(|e| StorageError::io("create directory", &dir, e))?;
        let entries = disk
            .read_dir(&dir)
            .map_err(|e| StorageError::io("list", &dir, e))?;
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
                crate::cleaner::finish_swap(disk.as_ref(), &dir, log_name)
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
                    damage.get_or_insert(found);
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
                    damage.get_or_insert(Damage {
                        path: segment.path().to_path_buf(),
                        position: pos,
                        first_offset: segment.next_offset,
                        resume_position: len,
                        resume_offset: bases.get(i + 1).copied().unwrap_or(recovery_point),
                        reason,
                        hole: false,
                    });
                }
                (None, None) if is_last && segment.next_offset < recovery_point => {
                    // Whole batches, but fewer than were fsynced: the file lost its end.
                    damage.get_or_insert(Damage {
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
                    });
                }
                (None, None) => {}
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
    fn rebuild_producer_state(&mut self) -> Result<()> {
        let snapshot = self
            .disk
            .read_file(&self.dir.join(PRODUCER_SNAPSHOT_FILE))
            .ok()
            .and_then(|raw| ProducerStates::decode(&raw));
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

    fn write_producer_snapshot(&self) -> Result<()> {
        let path = self.dir.join(PRODUCER_SNAPSHOT_FILE);
        self.disk
            .write_file_atomic(&path, &self.producers.encode(self.log_end()))
            .map_err(|e| StorageError::io("write", &path, e))
    }

    /// Forgets producers idle for longer than `max_idle_ms`; returns how many.
    pub fn expire_producers(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        self.producers.expire(now_ms, max_idle_ms)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    pub fn log_start(&self) -> i64 {
        self.log_start
    }
    pub fn log_end(&self) -> i64 {
        self.active().next_offset
    }
    /// Unless replication tracks it, every appended record is committed and the high
    /// watermark is the log end.
    pub fn offsets(&self) -> LogOffsets {
        let high_watermark = self.high_watermark();
        LogOffsets {
            log_start: self.log_start,
            last_stable: self
                .producers
                .first_unstable_offset()
                .map_or(high_watermark, |o| o.clamp(self.log_start, high_watermark)),
            high_watermark,
            log_end: self.log_end(),
        }
        .checked()
    }
    /// The end of what readers may see: the log end unless replication holds it back.
    pub fn high_watermark(&self) -> i64 {
        match self.high_watermark {
            Some(hw) => hw.clamp(self.log_start, self.log_end()),
            None => self.log_end(),
        }
    }

    /// Whether replication tracks the high watermark.
    pub fn high_watermark_tracked(&self) -> bool {
        self.high_watermark.is_some()
    }

    /// Lets replication track the high watermark from here on (`Some`), starting at `hw`,
    /// or stops tracking it (`None`: every record appended is committed).
    pub fn track_high_watermark(&mut self, hw: Option<i64>) {
        self.high_watermark = hw.map(|h| h.clamp(self.log_start, self.log_end()));
    }

    /// Moves the tracked high watermark to `hw` (clamped to the log); returns whether it
    /// changed. Only ever forward, except that truncation may pull it back.
    pub fn advance_high_watermark(&mut self, hw: i64) -> bool {
        let Some(current) = self.high_watermark else {
            return false;
        };
        let hw = hw.clamp(self.log_start, self.log_end());
        if hw > current {
            self.high_watermark = Some(hw);
            true
        } else {
            false
        }
    }

    /// The leader-epoch cache, built from the batch headers on first use.
    fn epochs_mut(&mut self) -> Result<&mut Vec<(i32, i64)>> {
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

    fn note_epoch(&mut self, epoch: i32, offset: i64) {
        if let Some(epochs) = self.epochs.as_mut() {
            if epochs.last().is_none_or(|&(e, _)| epoch > e) {
                epochs.push((epoch, offset));
            }
        }
    }

    /// The latest leader epoch written in this log, if any.
    pub fn latest_epoch(&mut self) -> Result<Option<i32>> {
        Ok(self.epochs_mut()?.last().map(|&(e, _)| e))
    }

    /// OffsetForLeaderEpoch (KIP-101, KIP-279): the largest epoch at or below `epoch` and
    /// the offset where it ended here (the start of the next epoch, or the log end for the
    /// latest). `None` when the log has no epoch at or below it.
    pub fn end_offset_for_epoch(&mut self, epoch: i32) -> Result<Option<(i32, i64)>> {
        let log_end = self.log_end();
        let epochs = self.epochs_mut()?;
        let i = epochs.partition_point(|&(e, _)| e <= epoch);
        if i == 0 {
            return Ok(None);
        }
        let found = epochs[i - 1].0;
        let end = epochs.get(i).map_or(log_end, |&(_, start)| start);
        Ok(Some((found, end)))
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
    fn append_group(
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
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
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
        Ok(())
    }

    /// Before the log is cut at `offset`: the stored recovery point comes down to it (a
    /// crash after the cut would otherwise take the next torn write for damage), the cut
    /// is counted (an fsync in flight covers nothing written after it), and every segment
    /// whose base is at or after `from_base` is deleted; the first segment always stays.
    fn begin_cut(&mut self, offset: i64, from_base: i64) -> Result<()> {
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
    fn finish_cut(&mut self) -> Result<i64> {
        let dir = self.dir.clone();
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

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends validated batches (`headers` gives each batch's position in `bytes`),
    /// assigning their offsets and, with `log_append_time_ms`, stamping their timestamps.
    pub fn append(
        &mut self,
        bytes: &mut [u8],
        headers: &[(usize, BatchHeader)],
        leader_epoch: i32,
        log_append_time_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<AppendInfo> {
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
        Ok(AppendInfo {
            base_offset: offset,
            last_offset: offset,
            records: 1,
            flush_due: self.flush_due(now_ms),
            duplicate: false,
        })
    }

    /// Aborted transactions overlapping `[from, to)`, for a `read_committed` fetch.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<crate::producer::AbortedTxn> {
        self.producers.aborted_between(from, to)
    }

    /// Whether `producer_id` has a transaction open in this log at `epoch`.
    pub fn has_open_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers.has_open_transaction(producer_id, epoch)
    }

    /// Produce's verification guard for a transactional batch (see `producer.rs`).
    pub fn producers_mut(&mut self) -> &mut ProducerStates {
        &mut self.producers
    }

    /// Produce's verification guards, to read (see `producer.rs`).
    pub fn producers(&self) -> &ProducerStates {
        &self.producers
    }

    /// Open transactions: (producer id, epoch, first offset, last activity in ms).
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64, i64)> {
        self.producers.open_transactions()
    }

    fn flush_due(&self, now_ms: i64) -> bool {
        self.unflushed_records >= self.config.flush_messages
            || self
                .oldest_unflushed_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= self.config.flush_ms)
    }

    /// Whether the periodic flusher should fsync this log now.
    pub fn needs_periodic_flush(&self, now_ms: i64) -> bool {
        self.unflushed_records > 0 && self.flush_due(now_ms)
    }

    fn maybe_roll(&mut self, incoming_bytes: u64, next_offset: i64, now_ms: i64) -> Result<()> {
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

    fn write_recovery_point(&self, offset: i64) -> Result<()> {
        self.write_offset_file(RECOVERY_POINT_FILE, offset)
    }

    /// Moves the stored recovery point down to `offset` if it is above (before a cut).
    fn lower_recovery_point(&self, offset: i64) -> Result<()> {
        if read_recovery_point(self.disk.as_ref(), &self.dir) > offset {
            self.write_recovery_point(offset)?;
        }
        Ok(())
    }

    /// Plans a read of whole batches starting with the one holding `offset`, up to
    /// `max_bytes`, but always at least one whole batch when `min_one_batch` (KIP-74).
    /// Reads stay within one segment; the next fetch continues in the next.
    pub fn read(&self, offset: i64, max_bytes: usize, min_one_batch: bool) -> Result<ReadPlan> {
        self.read_below(offset, max_bytes, min_one_batch, i64::MAX)
    }

    /// As [`read`](Self::read), but only batches that start below `end` (the last stable
    /// offset for `read_committed`).
    pub fn read_below(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
        end: i64,
    ) -> Result<ReadPlan> {
        self.check_online()?;
        let log_end = self.log_end();
        if offset < self.log_start || offset > log_end {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start,
                log_end,
            });
        }
        for segment in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .map(|(_, s)| s)
            .chain(self.segments.range(offset + 1..).map(|(_, s)| s))
        {
            let Some((position, _)) = segment.position_of(offset)? else {
                continue;
            };
            let mut len = 0usize;
            let mut records = 0u64;
            segment.walk_headers(position, |_, h| {
                let total = h.total_bytes();
                if h.base_offset >= end {
                    false
                } else if len + total <= max_bytes || (len == 0 && min_one_batch) {
                    len += total;
                    records += h.records_count.max(0) as u64;
                    true
                } else {
                    false
                }
            })?;
            return Ok(ReadPlan {
                region: (len > 0).then(|| FileRegion {
                    file: segment.file(),
                    path: segment.path().to_path_buf(),
                    position,
                    len,
                }),
                records,
            });
        }
        Ok(ReadPlan::empty())
    }

    /// The first record whose timestamp is at or after `timestamp`: (offset, timestamp).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        for segment in self
            .segments
            .values()
            .filter(|s| s.max_timestamp >= timestamp)
        {
            let start = segment.position_for_timestamp(timestamp)?;
            let mut found: Option<(u64, BatchHeader)> = None;
            segment.walk_headers(start, |pos, h| {
                if h.max_timestamp >= timestamp {
                    found = Some((pos, *h));
                    false
                } else {
                    true
                }
            })?;
            if let Some((pos, h)) = found {
                let bytes = segment.read_bytes(pos, h.total_bytes())?;
                let records =
                    batch::record_timestamps(&bytes).map_err(|e| StorageError::Corrupt {
                        path: segment.path().to_path_buf(),
                        reason: e.to_string(),
                    })?;
                if let Some(&hit) = records.iter().find(|(_, ts)| *ts >= timestamp) {
                    return Ok(Some(hit));
                }
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp (the first such, by offset): (offset, timestamp).
    pub fn max_timestamp_record(&self) -> Result<Option<(i64, i64)>> {
        let Some(segment) = self
            .segments
            .values()
            .filter(|s| s.max_timestamp >= 0)
            .fold(None::<&Segment>, |best, s| match best {
                Some(b) if b.max_timestamp >= s.max_timestamp => Some(b),
                _ => Some(s),
            })
        else {
            return Ok(None);
        };
        let Some((pos, h)) = segment.position_of(segment.max_timestamp_batch_offset)? else {
            return Ok(None);
        };
        let bytes = segment.read_bytes(pos, h.total_bytes())?;
        let records = batch::record_timestamps(&bytes).map_err(|e| StorageError::Corrupt {
            path: segment.path().to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(records
            .into_iter()
            .find(|(_, ts)| *ts == segment.max_timestamp))
    }

    /// Moves the log start offset forward to `offset` (DeleteRecords): it must not pass the
    /// high watermark. Whole segments below the new start are deleted; the start itself is
    /// stored so a restart keeps it. Returns the new log start.
    pub fn delete_records(&mut self, offset: i64, now_ms: i64) -> Result<i64> {
        self.check_online()?;
        let high_watermark = self.log_end();
        if offset < 0 || offset > high_watermark {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start,
                log_end: high_watermark,
            });
        }
        if offset > self.log_start {
            self.log_start = offset;
            self.write_offset_file(LOG_START_FILE, offset)?;
            self.delete_segments_below_start(now_ms)?;
            self.producers.truncate_aborted(self.log_start);
        }
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
                self.log_start = first_next;
            }
        }
        if deleted > 0 {
            self.log_start = self
                .log_start
                .max(self.segments.values().next().map_or(0, |s| s.base_offset));
            self.write_offset_file(LOG_START_FILE, self.log_start)?;
            self.producers.truncate_aborted(self.log_start);
        }
        Ok(deleted)
    }

    /// Deletes closed segments that lie wholly below the log start.
    fn delete_segments_below_start(&mut self, now_ms: i64) -> Result<()> {
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

    fn write_offset_file(&self, name: &str, offset: i64) -> Result<()> {
        let path = self.dir.join(name);
        self.disk
            .write_file_atomic(&path, offset.to_string().as_bytes())
            .map_err(|e| StorageError::io("write", &path, e))
    }

    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
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
            config: self.config.clone(),
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
        Ok(true)
    }

    /// Records that offsets below `offset` are compacted.
    pub fn set_cleaned_up_to(&self, offset: i64) -> Result<()> {
        self.write_offset_file(CLEANER_CHECKPOINT_FILE, offset)
    }

    /// What an fsync outside the lock covers: the active segment up to the log end, and
    /// its size then. The bytes appended so far count as being written from here on.
    pub fn sync_target(&mut self) -> (Arc<dyn DiskFile>, PathBuf, i64, u64) {
        self.unflushed_bytes = 0;
        let active = self.active();
        (
            active.file(),
            active.path().to_path_buf(),
            self.log_end(),
            active.size,
        )
    }

    /// Records that everything below `offset` is durable.
    pub fn mark_flushed(&mut self, offset: i64) {
        if offset > self.flushed_offset {
            self.flushed_offset = offset;
        }
        if self.flushed_offset >= self.log_end() {
            self.unflushed_records = 0;
            self.oldest_unflushed_ms = None;
        }
    }
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset
    }

    /// Bytes appended since the last fsync of this partition began.
    pub fn unflushed_bytes(&self) -> u64 {
        self.unflushed_bytes
    }

    /// Fsyncs the active segment in place (callers that can, sync outside the lock instead).
    pub fn flush(&mut self) -> Result<()> {
        self.check_online()?;
        let end = self.log_end();
        self.unflushed_bytes = 0;
        if let Err(e) = self.active().sync() {
            return Err(self.fail(e));
        }
        self.mark_flushed(end);
        Ok(())
    }

    /// Whether the log was taken offline, and why.
    pub fn offline_reason(&self) -> Option<&str> {
        self.offline.as_deref()
    }

    fn check_online(&self) -> Result<()> {
        match &self.offline {
            Some(_) => Err(StorageError::Offline(self.dir.clone())),
            None => Ok(()),
        }
    }

    /// Takes the log offline after a failed write or fsync, unless the disk is merely full:
    /// then the write was cut back cleanly and appends may succeed once space is freed.
    pub fn fail(&mut self, e: StorageError) -> StorageError {
        let full = matches!(&e, StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull);
        if full {
            tracing::warn!(dir = %self.dir.display(), error = %e, "disk full: refusing appends until space is freed");
        } else if self.offline.is_none() {
            tracing::error!(dir = %self.dir.display(), error = %e, "log taken offline after an I/O failure; restart the broker once the disk is healthy");
            self.offline = Some(e.to_string());
        }
        e
    }

    /// Clean close: everything fsynced, the active segment's indexes written, and the
    /// recovery point moved to the log end.
    pub fn close(&mut self) -> Result<()> {
        self.flush()?;
        self.active().write_indexes(self.disk.as_ref(), &self.dir)?;
        self.write_producer_snapshot()?;
        self.write_recovery_point(self.log_end())
    }
}

fn read_recovery_point(disk: &dyn Disk, dir: &Path) -> i64 {
    read_offset_file(disk, dir, RECOVERY_POINT_FILE).unwrap_or(0)
}

fn read_offset_file(disk: &dyn Disk, dir: &Path, name: &str) -> Option<i64> {
    disk.read_file(&dir.join(name))
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{FaultyDisk, OsDisk};
    use gregor_protocol::batch::{batches, build_batch, check_batch};
    use proptest::prelude::*;

    /// A log on a [`FaultyDisk`], with the disk to inject faults through.
    fn open_faulty(dir: &Path, config: LogConfig) -> (FaultyDisk, PartitionLog) {
        let disk = FaultyDisk::new();
        let log =
            PartitionLog::open(Arc::new(disk.clone()), dir.to_path_buf(), config, 0).expect("open");
        (disk, log)
    }

    fn open(dir: &Path, config: LogConfig) -> PartitionLog {
        PartitionLog::open(Arc::new(OsDisk), dir.to_path_buf(), config, 0).expect("open")
    }

    fn append_values(log: &mut PartitionLog, values: &[Vec<u8>], ts: i64) -> AppendInfo {
        let mut b = build_batch(0, ts, values);
        let h = check_batch(&b).expect("valid");
        log.append(&mut b, &[(0, h)], 0, None, ts).expect("append")
    }

    /// Reads everything from `from` on, returning (offset, batch bytes) per batch.
    fn read_all(log: &PartitionLog, from: i64) -> Vec<(i64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = from;
        while offset < log.log_end() {
            let bytes = log
                .read(offset, 1 << 20, true)
                .expect("read")
                .read()
                .expect("bytes");
            assert!(
                !bytes.is_empty(),
                "read at {offset} below log end {} returned nothing",
                log.log_end()
            );
            for (at, h) in batches(&bytes) {
                out.push((h.base_offset, bytes[at..at + h.total_bytes()].to_vec()));
                offset = h.last_offset() + 1;
            }
        }
        out
    }

    #[test]
    fn unflushed_bytes_count_appends_until_an_fsync_begins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        assert_eq!(log.unflushed_bytes(), 0);
        append_values(&mut log, &[vec![1; 100], vec![2; 100]], 1);
        let first = log.unflushed_bytes();
        let batch = log.read(0, 1 << 20, true).expect("read");
        assert_eq!(first, batch.len() as u64, "the whole stored batch counts");
        assert_eq!(batch.records, 2, "the plan counts records by batch header");
        append_values(&mut log, &[vec![3; 10]], 2);
        assert!(log.unflushed_bytes() > first);
        let (_, _, end, _) = log.sync_target();
        assert_eq!(end, 3);
        assert_eq!(
            log.unflushed_bytes(),
            0,
            "an fsync covers everything appended before it"
        );
        append_values(&mut log, &[vec![4; 10]], 3);
        assert!(log.unflushed_bytes() > 0);
        log.flush().expect("flush");
        assert_eq!(log.unflushed_bytes(), 0);
    }

    fn append_at_epoch(log: &mut PartitionLog, values: &[Vec<u8>], epoch: i32) -> AppendInfo {
        let mut b = build_batch(0, 5, values);
        let h = check_batch(&b).expect("valid");
        log.append(&mut b, &[(0, h)], epoch, None, 5)
            .expect("append")
    }

    /// Copies `leader`'s batches from `follower`'s log end on, as a follower's fetch does.
    fn replicate(leader: &PartitionLog, follower: &mut PartitionLog) {
        while follower.log_end() < leader.log_end() {
            let bytes = leader
                .read(follower.log_end(), 300, true)
                .expect("plan")
                .read()
                .expect("read");
            follower
                .append_replicated(&bytes, 5)
                .expect("append replicated")
                .expect("something appended");
        }
    }

    #[test]
    fn a_follower_copies_batches_whole_and_truncates_where_it_diverged() {
        let dirs = [
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        ];
        let small = LogConfig {
            segment_bytes: 400,
            ..LogConfig::default()
        };
        let mut leader = open(dirs[0].path(), small.clone());
        let mut follower = open(dirs[1].path(), small.clone());
        for i in 0..10u8 {
            append_at_epoch(&mut leader, &[vec![i; 50], vec![i; 20]], 1);
        }
        replicate(&leader, &mut follower);
        assert_eq!(read_all(&follower, 0), read_all(&leader, 0));
        assert!(
            follower.segment_count() > 1,
            "the follower rolled its segments"
        );

        // The follower becomes leader at epoch 2 and writes two batches nobody copies; the
        // old leader, back at epoch 3, writes others. The follower asks where its epoch 2
        // ended on the new leader (it never existed there: epoch 1's end) and cuts there.
        let common_end = leader.log_end();
        append_at_epoch(&mut follower, &[b"lost".to_vec()], 2);
        append_at_epoch(&mut follower, &[b"lost".to_vec()], 2);
        append_at_epoch(&mut leader, &vec![b"kept".to_vec(); 3], 3);
        let mine = follower.latest_epoch().expect("epochs").expect("an epoch");
        assert_eq!(mine, 2);
        let (epoch, end) = leader
            .end_offset_for_epoch(mine)
            .expect("epochs")
            .expect("epoch 1 is at or below 2");
        assert_eq!((epoch, end), (1, common_end));
        follower.truncate_to(end).expect("truncate");
        assert_eq!(follower.log_end(), common_end);
        replicate(&leader, &mut follower);
        assert_eq!(read_all(&follower, 0), read_all(&leader, 0));
        assert_eq!(
            follower.end_offset_for_epoch(3).expect("e"),
            Some((3, leader.log_end()))
        );
        assert_eq!(follower.end_offset_for_epoch(0).expect("e"), None);

        // Truncation survives a restart, and the rebuilt epoch cache agrees.
        drop(follower);
        let mut reopened = open(dirs[1].path(), small);
        assert_eq!(read_all(&reopened, 0), read_all(&leader, 0));
        assert_eq!(
            reopened.end_offset_for_epoch(1).expect("e"),
            Some((1, common_end))
        );
    }

    #[test]
    fn a_tracked_high_watermark_bounds_what_readers_see() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut log = open(dir.path(), LogConfig::default());
        append_values(&mut log, &[b"a".to_vec()], 1);
        log.track_high_watermark(Some(0));
        append_values(&mut log, &[b"b".to_vec()], 2);
        assert_eq!((log.offsets().high_watermark, log.log_end()), (0, 2));
        assert!(log.advance_high_watermark(1));
        assert!(!log.advance_high_watermark(0), "never backwards");
        assert!(log.advance_high_watermark(99));
        assert_eq!(log.offsets().high_watermark, 2, "clamped to the log end");
        log.truncate_to(1).expect("truncate");
        assert_eq!(log.offsets().high_watermark, 1);
        log.track_high_watermark(None);
        assert_eq!(log.offsets().high_watermark, log.log_end());
    }

    #[test]
    fn a_replicated_batch_that_does_not_follow_or_fails_its_crc_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut log = open(dir.path(), LogConfig::default());
        let gap = build_batch(5, 1, &[b"x".to_vec()]);
        assert!(log.append_replicated(&gap, 1).is_err());
        let mut bad = build_batch(0, 1, &[b"x".to_vec()]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(log.append_replicated(&bad, 1).is_err());
        let good = build_batch(0, 1, &[b"x".to_vec()]);
        assert_eq!(
            log.append_replicated(&good[..good.len() - 1], 1)
                .expect("partial"),
            None
        );
        assert!(log.append_replicated(&good, 1).expect("ok").is_some());
        assert_eq!(log.log_end(), 1);
        assert!(
            log.offline_reason().is_none(),
            "refused input does not take the log offline"
        );
    }

    #[test]
    fn append_assigns_consecutive_offsets_and_reads_back_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        let a = append_values(&mut log, &[b"a".to_vec(), b"b".to_vec()], 10);
        let b = append_values(&mut log, &[b"c".to_vec()], 11);
        assert_eq!(
            (a.base_offset, a.last_offset, b.base_offset, b.last_offset),
            (0, 1, 2, 2)
        );
        let got = read_all(&log, 0);
        assert_eq!(got.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![0, 2]);
        let mut expect = build_batch(2, 11, &[b"c".to_vec()]);
        set_epoch_zero(&mut expect);
        assert_eq!(got[1].1, expect);
        // A read in the middle of a batch starts at that batch.
        let mid = log
            .read(1, 1 << 20, true)
            .expect("read")
            .read()
            .expect("bytes");
        assert_eq!(check_batch(&mid).expect("whole batch").base_offset, 0);
        assert!(matches!(
            log.read(4, 100, true),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.read(3, 100, true).expect("at end").len(), 0);
    }

    fn set_epoch_zero(b: &mut [u8]) {
        batch::set_partition_leader_epoch(b, 0);
    }

    #[test]
    fn read_respects_max_bytes_but_returns_one_whole_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        append_values(&mut log, &[vec![7u8; 1000]], 1);
        append_values(&mut log, &[vec![8u8; 1000]], 2);
        let one = log.read(0, 10, true).expect("read");
        assert_eq!(
            check_batch(&one.read().expect("bytes"))
                .expect("batch")
                .total_bytes(),
            one.len()
        );
        assert_eq!(log.read(0, 10, false).expect("read").len(), 0);
        let both = log.read(0, 1 << 20, true).expect("read");
        assert_eq!(batches(&both.read().expect("bytes")).count(), 2);
    }

    #[test]
    fn segments_roll_by_size_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 300,
            index_interval_bytes: 100,
            ..LogConfig::default()
        };
        let mut log = open(dir.path(), config.clone());
        for i in 0..20 {
            append_values(&mut log, &[vec![i as u8; 50], vec![1; 10]], 1000 + i);
        }
        assert!(
            log.segment_count() > 5,
            "expected rolls, have {} segments",
            log.segment_count()
        );
        let before = read_all(&log, 0);
        log.close().expect("close");
        let log = open(dir.path(), config.clone());
        assert_eq!(log.log_end(), 40);
        assert_eq!(read_all(&log, 0), before);
        for offset in 0..40 {
            let bytes = log
                .read(offset, 1, true)
                .expect("read")
                .read()
                .expect("bytes");
            let h = check_batch(&bytes).expect("batch");
            assert!(h.base_offset <= offset && offset <= h.last_offset());
        }
        // Timestamp look-ups: batch i holds offsets 2i and 2i+1 at 1000+i and 1001+i.
        assert_eq!(
            log.offset_for_timestamp(1005).expect("lookup"),
            Some((9, 1005))
        );
        assert_eq!(
            log.offset_for_timestamp(0).expect("lookup"),
            Some((0, 1000))
        );
        assert_eq!(log.offset_for_timestamp(5000).expect("lookup"), None);
        assert_eq!(log.max_timestamp_record().expect("max"), Some((39, 1020)));
    }

    #[test]
    fn segments_roll_by_age() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(
            dir.path(),
            LogConfig {
                segment_ms: 100,
                ..LogConfig::default()
            },
        );
        append_values(&mut log, &[b"x".to_vec()], 0);
        append_values(&mut log, &[b"y".to_vec()], 50);
        assert_eq!(log.segment_count(), 1);
        append_values(&mut log, &[b"z".to_vec()], 150);
        assert_eq!(log.segment_count(), 2);
    }

    #[test]
    fn damaged_index_files_are_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 200,
            index_interval_bytes: 1,
            ..LogConfig::default()
        };
        let mut log = open(dir.path(), config.clone());
        for i in 0..10 {
            append_values(&mut log, &[vec![i as u8; 60]], i);
        }
        let before = read_all(&log, 0);
        log.close().expect("close");
        for entry in std::fs::read_dir(dir.path()).expect("ls") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "index") {
                std::fs::write(&path, b"garbage").expect("damage");
            }
        }
        let log = open(dir.path(), config);
        assert_eq!(read_all(&log, 0), before);
    }

    #[test]
    fn torn_tail_cut_at_every_byte_of_the_last_batch_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        for i in 0..3 {
            append_values(&mut log, &[vec![i; 30], vec![i; 5]], i64::from(i));
        }
        let last_base = log.log_end();
        append_values(&mut log, &[b"last-one".to_vec(), b"and-two".to_vec()], 9);
        let good = read_all(&log, 0);
        // No clean close: a close moves the recovery point to the log end, and bytes lost
        // below it are damage, not a torn write.
        drop(log);
        let path = dir.path().join(format!("{:020}.log", 0));
        let full = std::fs::read(&path).expect("read");
        let last_len = good.last().expect("batches").1.len();
        for cut in (full.len() - last_len)..full.len() {
            std::fs::write(&path, &full[..cut]).expect("cut");
            let mut log = open(dir.path(), LogConfig::default());
            assert_eq!(log.log_end(), last_base, "cut at {cut}");
            assert_eq!(
                read_all(&log, 0),
                good[..good.len() - 1].to_vec(),
                "cut at {cut}"
            );
            assert_eq!(
                std::fs::metadata(&path).expect("stat").len() as usize,
                full.len() - last_len
            );
            // The log takes appends again at the right offset.
            assert_eq!(
                append_values(&mut log, &[b"again".to_vec()], 10).base_offset,
                last_base
            );
        }
    }

    #[test]
    fn a_flipped_byte_inside_the_log_is_damage_that_keeps_every_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        for i in 0..5 {
            append_values(&mut log, &[vec![i; 40]], i64::from(i));
        }
        let good = read_all(&log, 0);
        drop(log); // no clean close: the recovery point stays at 0
        let path = dir.path().join(format!("{:020}.log", 0));
        let mut raw = std::fs::read(&path).expect("read");
        let third_start: usize = good[..2].iter().map(|(_, b)| b.len()).sum();
        raw[third_start + 40] ^= 0xff;
        std::fs::write(&path, &raw).expect("write");
        let mut log = open(dir.path(), LogConfig::default());
        // Valid batches follow the bad one: nothing is cut, no offset is given out again,
        // and nothing is served until the damage is repaired.
        assert_eq!(log.log_end(), 5);
        assert_eq!(std::fs::read(&path).expect("read").len(), raw.len());
        let damage = log.damage().expect("damage found").clone();
        assert_eq!((damage.first_offset, damage.resume_offset), (2, 3));
        assert_eq!(damage.position as usize, third_start);
        assert!(matches!(
            log.read(0, 1 << 20, true),
            Err(StorageError::Offline(_))
        ));
        let mut b = build_batch(0, 9, &[b"x".to_vec()]);
        let h = check_batch(&b).expect("valid");
        assert!(matches!(
            log.append(&mut b, &[(0, h)], 0, None, 9),
            Err(StorageError::Offline(_))
        ));
        // A replica repairs by discarding the damaged range and what follows, to fetch it
        // again from its leader.
        assert_eq!(log.repair_damage().expect("repair"), Some(2));
        assert_eq!(read_all(&log, 0), good[..2].to_vec());
        assert_eq!(
            append_values(&mut log, &[b"again".to_vec()], 10).base_offset,
            2
        );
    }

    #[test]
    fn damage_in_a_closed_segment_keeps_the_later_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 200,
            ..LogConfig::default()
        };
        let mut log = open(dir.path(), config.clone());
        for i in 0..12 {
            append_values(&mut log, &[vec![i; 60]], i64::from(i));
        }
        let segments = log.segment_count();
        assert!(
            segments >= 4,
            "the test needs several segments, got {segments}"
        );
        let end = log.log_end();
        drop(log);
        let first = dir.path().join(format!("{:020}.log", 0));
        let mut raw = std::fs::read(&first).expect("read");
        raw[70] ^= 0x55;
        std::fs::write(&first, &raw).expect("write");
        // The recovery point may be anywhere: make the start verify every segment.
        std::fs::remove_file(dir.path().join(RECOVERY_POINT_FILE)).ok();
        let log = open(dir.path(), config);
        assert_eq!(log.segment_count(), segments, "no segment was removed");
        assert_eq!(log.log_end(), end);
        assert!(log.damage().is_some());
        assert!(log.offline_reason().is_some());
        // Nothing was cut, so the next start finds the same damage.
        let position = log.damage().map(|d| d.position);
        drop(log);
        let log = open(
            dir.path(),
            LogConfig {
                segment_bytes: 200,
                ..LogConfig::default()
            },
        );
        assert_eq!(log.damage().map(|d| d.position), position);
        assert_eq!(log.segment_count(), segments);
    }

    #[test]
    fn a_bad_last_batch_below_the_recovery_point_is_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        for i in 0..3 {
            append_values(&mut log, &[vec![i; 40]], i64::from(i));
        }
        log.close().expect("close"); // fsynced: the recovery point is the log end
        let path = dir.path().join(format!("{:020}.log", 0));
        let mut raw = std::fs::read(&path).expect("read");
        let n = raw.len();
        raw[n - 5] ^= 0xff;
        std::fs::write(&path, &raw).expect("write");
        let log = open(dir.path(), LogConfig::default());
        let damage = log.damage().expect("damage, not a torn tail");
        assert_eq!((damage.first_offset, damage.resume_offset), (2, 3));
        assert!(
            log.offline_reason().is_some(),
            "offset 2 must not be given out again"
        );
    }

    #[test]
    fn a_bad_last_batch_with_nothing_after_it_is_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        for i in 0..3 {
            append_values(&mut log, &[vec![i; 40]], i64::from(i));
        }
        let good = read_all(&log, 0);
        drop(log);
        let path = dir.path().join(format!("{:020}.log", 0));
        let mut raw = std::fs::read(&path).expect("read");
        let n = raw.len();
        raw[n - 5] ^= 0xff;
        std::fs::write(&path, &raw).expect("write");
        let log = open(dir.path(), LogConfig::default());
        assert!(log.damage().is_none());
        assert_eq!(log.log_end(), 2);
        assert_eq!(read_all(&log, 0), good[..2].to_vec());
    }

    #[test]
    fn failed_write_leaves_no_partial_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, mut log) = open_faulty(dir.path(), LogConfig::default());
        append_values(&mut log, &[b"ok".to_vec()], 1);
        disk.set(|f| f.torn_write_bytes = Some(20));
        let mut b = build_batch(0, 2, &[b"torn".to_vec()]);
        let h = check_batch(&b).expect("valid");
        assert!(log.append(&mut b, &[(0, h)], 0, None, 2).is_err());
        assert_eq!(log.log_end(), 1);
        assert_eq!(
            std::fs::metadata(dir.path().join(format!("{:020}.log", 0)))
                .expect("stat")
                .len() as usize,
            build_batch(0, 1, &[b"ok".to_vec()]).len(),
            "the torn bytes were cut"
        );
        drop(log);
        let mut log = open(dir.path(), LogConfig::default());
        assert_eq!(log.log_end(), 1);
        append_values(&mut log, &[b"after".to_vec()], 3);
        assert_eq!(read_all(&log, 0).len(), 2);
    }

    #[test]
    fn failed_write_takes_the_log_offline_until_recovery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, mut log) = open_faulty(dir.path(), LogConfig::default());
        append_values(&mut log, &[b"kept".to_vec()], 1);
        disk.set(|f| f.fail_writes = true);
        let mut b = build_batch(0, 2, &[b"lost".to_vec()]);
        let h = check_batch(&b).expect("valid");
        assert!(log.append(&mut b, &[(0, h)], 0, None, 2).is_err());
        disk.set(|f| f.fail_writes = false);
        assert!(log.offline_reason().is_some());
        // Offline: nothing is appended or served, even once the fault is gone.
        let mut again = build_batch(0, 3, &[b"x".to_vec()]);
        let h2 = check_batch(&again).expect("valid");
        assert!(matches!(
            log.append(&mut again, &[(0, h2)], 0, None, 3),
            Err(StorageError::Offline(_))
        ));
        assert!(matches!(
            log.read(0, 100, true),
            Err(StorageError::Offline(_))
        ));
        drop(log);
        // A restart recovers the log to what was acknowledged.
        let log = open(dir.path(), LogConfig::default());
        assert_eq!(log.log_end(), 1);
        assert_eq!(read_all(&log, 0).len(), 1);
    }

    #[test]
    fn full_disk_refuses_appends_without_going_offline_and_resumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, mut log) = open_faulty(dir.path(), LogConfig::default());
        append_values(&mut log, &[b"a".to_vec()], 1);
        disk.set(|f| f.space_left = Some(10));
        let mut b = build_batch(0, 2, &[vec![7u8; 100]]);
        let h = check_batch(&b).expect("valid");
        let err = log
            .append(&mut b, &[(0, h)], 0, None, 2)
            .expect_err("disk is full");
        assert!(
            matches!(&err, StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull),
            "{err}"
        );
        assert!(
            log.offline_reason().is_none(),
            "a full disk is not a broken disk"
        );
        assert_eq!(log.log_end(), 1);
        assert_eq!(read_all(&log, 0).len(), 1, "reads go on");
        disk.set(|f| f.space_left = None);
        assert_eq!(append_values(&mut log, &[b"b".to_vec()], 3).base_offset, 1);
        drop(log);
        assert_eq!(open(dir.path(), LogConfig::default()).log_end(), 2);
    }

    #[test]
    fn failed_fsync_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, mut log) = open_faulty(
            dir.path(),
            LogConfig {
                flush_messages: 1,
                ..LogConfig::default()
            },
        );
        let info = append_values(&mut log, &[b"x".to_vec()], 1);
        assert!(info.flush_due);
        disk.set(|f| f.fail_syncs = true);
        assert!(log.flush().is_err());
        assert_eq!(log.flushed_offset(), 0);
        disk.set(|f| f.fail_syncs = false);
        // A failed fsync may have dropped pages: the log stays offline until recovered.
        assert!(matches!(log.flush(), Err(StorageError::Offline(_))));
        assert!(matches!(
            log.read(0, 100, true),
            Err(StorageError::Offline(_))
        ));
        drop(log);
        let log = open(dir.path(), LogConfig::default());
        assert_eq!(log.log_end(), 1);
    }

    #[test]
    fn retention_by_time_deletes_old_closed_segments_and_moves_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 200,
            retention_ms: 1000,
            ..LogConfig::default()
        };
        let mut log = open(dir.path(), config.clone());
        for i in 0..6 {
            append_values(&mut log, &[vec![i as u8; 100]], 1000 + i64::from(i));
            // old
        }
        for i in 0..3 {
            append_values(&mut log, &[vec![i as u8; 100]], 10_000 + i64::from(i));
            // recent
        }
        let segments = log.segment_count();
        let deleted = log.apply_retention(10_500).expect("retention");
        assert_eq!(deleted, 6, "the six old single-batch segments go");
        assert_eq!(log.segment_count(), segments - 6);
        assert_eq!(log.log_start(), 6);
        assert!(matches!(
            log.read(5, 100, true),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(read_all(&log, 6).len(), 3);
        drop(log);
        let mut log = open(dir.path(), config);
        assert_eq!(log.log_start(), 6, "the start survives a restart");
        // Once everything is expired, the active segment is rolled and deleted too.
        assert_eq!(log.apply_retention(100_000).expect("retention"), 3);
        assert_eq!((log.log_start(), log.log_end()), (9, 9));
        assert_eq!(
            append_values(&mut log, &[b"new".to_vec()], 100_000).base_offset,
            9
        );
    }

    #[test]
    fn retention_by_size_keeps_the_newest_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(
            dir.path(),
            LogConfig {
                segment_bytes: 200,
                retention_ms: -1,
                retention_bytes: 500,
                ..LogConfig::default()
            },
        );
        for i in 0..10 {
            append_values(&mut log, &[vec![i as u8; 100]], i64::from(i));
        }
        log.apply_retention(0).expect("retention");
        assert!(
            log.size_bytes() <= 500 + 200,
            "size {} over the limit by more than a segment",
            log.size_bytes()
        );
        assert!(log.size_bytes() > 500 - 200);
        assert_eq!(
            log.log_start(),
            10 - read_all(&log, log.log_start()).len() as i64
        );
    }

    #[test]
    fn retention_off_or_unlimited_deletes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(
            dir.path(),
            LogConfig {
                segment_bytes: 200,
                retention_ms: -1,
                retention_bytes: -1,
                ..LogConfig::default()
            },
        );
        for i in 0..5 {
            append_values(&mut log, &[vec![1; 100]], i);
        }
        assert_eq!(log.apply_retention(i64::MAX / 2).expect("retention"), 0);
        log.set_config(LogConfig {
            segment_bytes: 200,
            retention_ms: 1,
            retention_enabled: false,
            ..LogConfig::default()
        });
        assert_eq!(log.apply_retention(i64::MAX / 2).expect("retention"), 0);
        assert_eq!(log.log_start(), 0);
    }

    #[test]
    fn delete_records_moves_the_start_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 200,
            ..LogConfig::default()
        };
        let mut log = open(dir.path(), config.clone());
        for i in 0..8 {
            append_values(&mut log, &[vec![i as u8; 100]], i64::from(i));
        }
        let segments = log.segment_count();
        assert!(matches!(
            log.delete_records(9, 0),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.delete_records(5, 0).expect("delete"), 5);
        assert!(
            log.segment_count() < segments,
            "whole segments below the start are removed"
        );
        assert_eq!(log.delete_records(3, 0).expect("never backwards"), 5);
        assert!(matches!(
            log.read(4, 100, true),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        drop(log);
        let mut log = open(dir.path(), config);
        assert_eq!(log.log_start(), 5);
        assert_eq!(log.delete_records(8, 0).expect("delete all"), 8);
        assert_eq!((log.log_start(), log.log_end()), (8, 8));
        assert_eq!(append_values(&mut log, &[b"x".to_vec()], 9).base_offset, 8);
    }

    #[test]
    fn clean_close_skips_verification_but_a_later_crash_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        append_values(&mut log, &[b"one".to_vec()], 1);
        log.close().expect("close");
        let mut log = PartitionLog::open_with(
            Arc::new(OsDisk),
            dir.path().to_path_buf(),
            LogConfig::default(),
            0,
            true,
        )
        .expect("open");
        assert_eq!(log.log_end(), 1);
        append_values(&mut log, &[b"two".to_vec()], 2);
        drop(log); // crash: no clean close
                   // Tear the tail: the next open must verify and cut it, marker or not.
        let path = dir.path().join(format!("{:020}.log", 0));
        let len = std::fs::metadata(&path).expect("stat").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(len - 3)
            .expect("cut");
        let log = open(dir.path(), LogConfig::default());
        assert_eq!(log.log_end(), 1);
    }

    fn idempotent_batch(pid: i64, epoch: i16, seq: i32, values: &[&[u8]]) -> Vec<u8> {
        // build_batch has no producer fields: set them and recompute the CRC.
        let mut b = build_batch(0, 1, &values.iter().map(|v| v.to_vec()).collect::<Vec<_>>());
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn append_raw(log: &mut PartitionLog, mut b: Vec<u8>) -> Result<AppendInfo> {
        let h = check_batch(&b).expect("valid");
        log.append(&mut b, &[(0, h)], 0, None, 1)
    }

    #[test]
    fn retried_idempotent_batches_are_stored_once_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 300,
            ..LogConfig::default()
        };
        let mut log = open(dir.path(), config.clone());
        let first = idempotent_batch(9, 0, 0, &[b"a", b"b"]);
        let info = append_raw(&mut log, first.clone()).expect("append");
        assert_eq!((info.base_offset, info.duplicate), (0, false));
        let again = append_raw(&mut log, first.clone()).expect("retry");
        assert_eq!(
            (again.base_offset, again.last_offset, again.duplicate),
            (0, 1, true)
        );
        assert_eq!(log.log_end(), 2, "the retry was not appended");
        assert!(matches!(
            append_raw(&mut log, idempotent_batch(9, 0, 5, &[b"c"])),
            Err(StorageError::Sequence(SequenceError::OutOfOrder {
                expected: 2,
                ..
            }))
        ));
        for seq in 2..8 {
            append_raw(&mut log, idempotent_batch(9, 0, seq, &[&[b'x'; 60]])).expect("append");
        }
        let end = log.log_end();
        log.close().expect("close"); // snapshot written
        let mut log = open(dir.path(), config.clone());
        assert!(
            append_raw(&mut log, idempotent_batch(9, 0, 7, &[&[b'x'; 60]]))
                .expect("retry")
                .duplicate
        );
        drop(log); // crash: no snapshot of what follows
        let mut log = open(dir.path(), config.clone());
        append_raw(&mut log, idempotent_batch(9, 0, 8, &[b"y"])).expect("append");
        drop(log);
        std::fs::remove_file(dir.path().join(PRODUCER_SNAPSHOT_FILE)).expect("remove snapshot");
        let mut log = open(dir.path(), config);
        let retry =
            append_raw(&mut log, idempotent_batch(9, 0, 8, &[b"y"])).expect("retry after rebuild");
        assert_eq!(
            (retry.base_offset, retry.duplicate),
            (end, true),
            "state rebuilt from the log"
        );
        assert!(matches!(
            append_raw(&mut log, idempotent_batch(9, -1, 9, &[b"z"])),
            Err(StorageError::Sequence(SequenceError::InvalidEpoch { .. }))
        ));
    }

    fn txn_batch(pid: i64, epoch: i16, seq: i32, values: &[&[u8]]) -> Vec<u8> {
        let mut b = idempotent_batch(pid, epoch, seq, values);
        b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn transactions_hold_the_lso_and_aborts_are_indexed_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 400,
            ..LogConfig::default()
        };
        let mut log = open(dir.path(), config.clone());
        append_values(&mut log, &[b"plain".to_vec()], 1); // 0
        append_raw(&mut log, txn_batch(1, 0, 0, &[b"a1", b"a2"])).expect("txn 1"); // 1-2
        append_raw(&mut log, txn_batch(2, 0, 0, &[b"b1"])).expect("txn 2"); // 3
        assert_eq!(log.offsets().last_stable, 1, "held at txn 1's first offset");
        let plan = log.read_below(0, 1 << 20, true, 1).expect("read");
        assert_eq!(
            plan.len(),
            read_all_bytes(&log, 0, 1),
            "read_committed stops at the LSO"
        );
        let abort = log.append_marker(1, 0, false, 0, 5).expect("abort 1"); // 4
        assert_eq!(abort.base_offset, 4);
        assert_eq!(log.offsets().last_stable, 3, "now held by txn 2");
        log.append_marker(2, 0, true, 0, 5).expect("commit 2"); // 5
        assert_eq!(log.offsets().last_stable, 6);
        let aborted = log.aborted_between(0, 6);
        assert_eq!(
            aborted,
            vec![crate::producer::AbortedTxn {
                producer_id: 1,
                first_offset: 1,
                last_offset: 4
            }]
        );
        assert!(log.aborted_between(5, 6).is_empty(), "marker before 5");
        // A stale epoch's marker is refused; a fresh open transaction holds the LSO again.
        log.append_marker(1, 1, false, 0, 6).expect("epoch bump"); // 6
        assert!(matches!(
            log.append_marker(1, 0, true, 0, 6),
            Err(StorageError::Sequence(SequenceError::InvalidEpoch { .. }))
        ));
        append_raw(&mut log, txn_batch(2, 0, 1, &[b"b2"])).expect("txn 2 again"); // 7
        let expected = (log.offsets(), log.aborted_between(0, 100));
        assert_eq!(expected.0.last_stable, 7);
        log.close().expect("close");
        let log = open(dir.path(), config.clone());
        assert_eq!((log.offsets(), log.aborted_between(0, 100)), expected);
        drop(log);
        std::fs::remove_file(dir.path().join(PRODUCER_SNAPSHOT_FILE)).expect("remove snapshot");
        let mut log = open(dir.path(), config);
        assert_eq!(
            (log.offsets(), log.aborted_between(0, 100)),
            expected,
            "rebuilt from the log"
        );
        assert_eq!(log.open_transactions().len(), 1);
        log.delete_records(5, 9).expect("delete");
        assert!(
            log.aborted_between(0, 100).is_empty(),
            "aborts below the start go"
        );
    }

    fn read_all_bytes(log: &PartitionLog, from: i64, below: i64) -> usize {
        let mut n = 0;
        let mut offset = from;
        while offset < below {
            let plan = log.read(offset, 1, true).expect("read");
            let bytes = plan.read().expect("bytes");
            let h = check_batch(&bytes).expect("batch");
            n += bytes.len();
            offset = h.last_offset() + 1;
        }
        n
    }

    /// Found by the segment_recovery fuzz target: a CRC-valid batch whose last offset delta
    /// is negative must be cut, not kept with the log end behind it.
    #[test]
    fn batch_with_negative_last_offset_delta_is_cut_on_recovery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = build_batch(0, 1, &[b"ok".to_vec()]);
        let mut bad = build_batch(1, 1, &[b"x".to_vec()]);
        bad[23..27].copy_from_slice(&(-1i32).to_be_bytes());
        let crc = crc32c::crc32c(&bad[21..]); // CRC-32C from the attributes on
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        let path = dir.path().join(format!("{:020}.log", 0));
        std::fs::write(&path, [good.clone(), bad].concat()).expect("write");
        let log = open(dir.path(), LogConfig::default());
        assert_eq!(log.log_end(), 1);
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len() as usize,
            good.len()
        );
    }

    /// Found by the segment_recovery fuzz target: a batch whose offsets lie beyond the
    /// segment's u32 relative-offset range would corrupt the index; recovery cuts it.
    #[test]
    fn batch_beyond_the_relative_offset_range_is_cut_on_recovery() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = build_batch(0, 1, &[b"ok".to_vec()]);
        let far = build_batch(1 << 40, 1, &[b"far".to_vec()]);
        let path = dir.path().join(format!("{:020}.log", 0));
        std::fs::write(&path, [good.clone(), far].concat()).expect("write");
        let log = open(dir.path(), LogConfig::default());
        assert_eq!(log.log_end(), 1);
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len() as usize,
            good.len()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Any sequence of appends, with small segments, reads back identically before and
        /// after a reopen, and a cut anywhere in the file loses only a suffix of batches or,
        /// when it took fsynced bytes, is reported as damage.
        #[test]
        fn appends_roundtrip_and_cuts_lose_only_a_suffix(
            sizes in proptest::collection::vec(proptest::collection::vec(0usize..120, 1..5), 1..25),
            segment_bytes in 150u64..2000,
            cut_fraction in 0.0f64..1.0,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = LogConfig { segment_bytes, index_interval_bytes: 64, ..LogConfig::default() };
            let mut log = open(dir.path(), config.clone());
            for (i, records) in sizes.iter().enumerate() {
                let values: Vec<Vec<u8>> = records.iter().map(|&n| vec![i as u8; n]).collect();
                append_values(&mut log, &values, i as i64);
            }
            let total: i64 = sizes.iter().map(|r| r.len() as i64).sum();
            prop_assert_eq!(log.log_end(), total);
            let before = read_all(&log, 0);
            log.close().expect("close");
            let log = open(dir.path(), config.clone());
            prop_assert_eq!(read_all(&log, 0), before.clone());
            drop(log);
            // Cut the last segment file somewhere.
            let mut logs: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("entry").path()).filter(|p| p.extension().is_some_and(|e| e == "log")).collect();
            logs.sort();
            let last = logs.last().expect("a segment");
            let len = std::fs::metadata(last).expect("stat").len();
            let cut = (len as f64 * cut_fraction) as u64;
            let f = std::fs::OpenOptions::new().write(true).open(last).expect("open");
            f.set_len(cut).expect("cut");
            let log = open(dir.path(), config);
            if log.damage().is_some() {
                // The cut took bytes below the recovery point (fsynced at the close): that is
                // damage, not a torn write; nothing is served and no offset reused.
                prop_assert!(log.read(log.log_start(), 1 << 20, true).is_err());
                prop_assert!(cut < len);
            } else {
                let after = read_all(&log, 0);
                prop_assert!(after.len() <= before.len());
                prop_assert_eq!(&before[..after.len()], &after[..]);
            }
        }
    }
}
