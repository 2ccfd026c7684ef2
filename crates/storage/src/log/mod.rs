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
use crate::segment::{Damage, OnDisk, Segment};
use crate::types::{LeaderEpoch, Offset};

mod append;
mod read;
mod recovery;
mod retention;

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
    /// `cuts` when the active segment was last fsynced in place: a cut since (a shorter
    /// file) is made durable at close even with nothing appended.
    cuts_synced: u64,
    /// What the recovery-point file and the producer snapshot hold, as last read or
    /// written (`None`: not known), so a clean close of an unchanged log writes nothing.
    recovery_point_on_disk: Option<i64>,
    snapshot_on_disk: OnDisk,
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

    /// The log's invariants (this module's header): `log_start <= high watermark <=
    /// log_end`, segments in offset order and not overlapping, and the leader-epoch cache
    /// ascending in epoch and offset and within the log. Checked after every change
    /// (appends, truncation, retention, compaction, the high watermark). The constant-time
    /// checks run in release builds too; the walk over every segment and epoch only in
    /// debug builds, which the tests and the simulator's CI seeds run. A broken invariant
    /// panics in a debug build; in release it takes the log offline (one error line), so
    /// the partition stops serving rather than serve or extend a log it cannot trust.
    fn check_invariants(&mut self) {
        let (start, end) = (self.log_start, self.log_end());
        let mut broken = Vec::new();
        if start > end {
            broken.push(format!("log start {start} after log end {end}"));
        }
        if let Some(hw) = self.high_watermark.filter(|hw| !(start..=end).contains(hw)) {
            broken.push(format!(
                "high watermark {hw} outside the log [{start}, {end}]"
            ));
        }
        if let Some(&(epoch, from)) = self.epochs.as_ref().and_then(|e| e.last()) {
            if from > end {
                broken.push(format!(
                    "leader epoch {epoch} starts at {from}, past the log end {end}"
                ));
            }
        }
        if cfg!(debug_assertions) {
            let mut previous_end = i64::MIN;
            for s in self.segments.values() {
                if s.base_offset < previous_end || s.next_offset < s.base_offset {
                    broken.push(format!(
                        "segment {}..{} overlaps the one before (which ends at {previous_end})",
                        s.base_offset, s.next_offset
                    ));
                }
                previous_end = s.next_offset;
            }
            if let Some(epochs) = &self.epochs {
                if !epochs
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
                {
                    broken.push(format!("leader-epoch cache out of order: {epochs:?}"));
                }
            }
        }
        if !broken.is_empty() {
            self.invariant_broken(&broken.join("; "));
        }
    }

    /// A broken invariant: a panic in debug builds, the log offline in release.
    pub(crate) fn invariant_broken(&mut self, what: &str) {
        let reason = format!("{}: {what}", self.dir.display());
        debug_assert!(false, "{reason}");
        if self.offline.is_none() {
            tracing::error!(dir = %self.dir.display(), broken = what, "a log invariant does not hold: the log is taken offline; restart the broker to recover it, and report this as a bug");
            self.offline = Some(format!("log invariant broken: {what}"));
        }
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
    pub fn track_high_watermark(&mut self, hw: Option<Offset>) {
        self.high_watermark = hw.map(|h| h.get().clamp(self.log_start, self.log_end()));
        self.check_invariants();
    }

    /// Moves the tracked high watermark to `hw` (clamped to the log); returns whether it
    /// changed. Only ever forward, except that truncation may pull it back.
    pub fn advance_high_watermark(&mut self, hw: Offset) -> bool {
        let Some(current) = self.high_watermark else {
            return false;
        };
        let hw = hw.get().clamp(self.log_start, self.log_end());
        if hw > current {
            self.high_watermark = Some(hw);
            self.check_invariants();
            true
        } else {
            false
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
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

    fn write_recovery_point(&mut self, offset: i64) -> Result<()> {
        if self.recovery_point_on_disk == Some(offset) {
            return Ok(());
        }
        self.recovery_point_on_disk = None;
        self.write_offset_file(RECOVERY_POINT_FILE, offset)?;
        self.recovery_point_on_disk = Some(offset);
        Ok(())
    }

    /// Moves the stored recovery point down to `offset` if it is above (before a cut).
    fn lower_recovery_point(&mut self, offset: i64) -> Result<()> {
        let stored = self
            .recovery_point_on_disk
            .unwrap_or_else(|| read_recovery_point(self.disk.as_ref(), &self.dir));
        if stored > offset {
            self.write_recovery_point(offset)?;
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
        self.cuts_synced = self.cuts;
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
        // A file the open-file budget closed could not be opened again: nothing was
        // written or synced, so the append or fsync is refused and may be retried.
        let no_files =
            matches!(&e, StorageError::Io { source, .. } if crate::handles::out_of_files(source));
        if full {
            tracing::warn!(dir = %self.dir.display(), error = %e, "disk full: refusing appends until space is freed");
        } else if no_files {
            tracing::warn!(dir = %self.dir.display(), error = %e, "out of open files: refusing this write; raise the open-file limit (ulimit -n) or lower log.open.files.max");
        } else if self.offline.is_none() {
            tracing::error!(dir = %self.dir.display(), error = %e, "log taken offline after an I/O failure; restart the broker once the disk is healthy");
            self.offline = Some(e.to_string());
        }
        e
    }

    /// Clean close: everything fsynced, the active segment's indexes written, and the
    /// recovery point moved to the log end. Each step is skipped when the files hold its
    /// result already (nothing appended, cut, or changed since they were last read or
    /// written), so a clean stop costs a log that did not change no write and no fsync.
    pub fn close(&mut self) -> Result<()> {
        // A recovery point at the log end was written after an fsync up to it; one below
        // (as after a start that recovered a crash) says the tail may not be durable yet.
        let changed = self.unflushed_records > 0
            || self.unflushed_bytes > 0
            || self.flushed_offset < self.log_end()
            || self.cuts != self.cuts_synced
            || self.recovery_point_on_disk != Some(self.log_end());
        if changed {
            self.flush()?;
        } else {
            self.check_online()?;
        }
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
mod cleaner_tests;
#[cfg(test)]
mod close_tests;
#[cfg(test)]
mod tests;
