//! Log compaction (Kafka's log cleaner) for `cleanup.policy=compact`.
//!
//! The cleaner works on closed segments only, never the active one, in three steps so the
//! partition lock is held only briefly:
//! 1. under the lock, `PartitionLog::cleanable` picks the closed segments old enough for
//!    `min.compaction.lag.ms` and decides from `min.cleanable.dirty.ratio` (or an overdue
//!    `max.compaction.lag.ms`) whether cleaning is due;
//! 2. without the lock, [`clean`] maps every key to its latest offset and writes each
//!    segment again as `<base>.log.cleaned`, keeping the latest record per key and dropping
//!    tombstones older than `delete.retention.ms`; records keep their offsets and bytes;
//! 3. under the lock, `PartitionLog::install_cleaned` swaps each one in.
//!
//! The swap is crash-safe: `.cleaned` (complete, fsynced) is renamed to `.log.swap`, the old
//! index files are removed, and `.swap` is renamed over `.log`. On start-up a `.cleaned`
//! file is deleted (the original is intact) and a `.swap` file is renamed into place (it is
//! complete), so a crash leaves the old segment or the new one, never both or neither.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use gregor_protocol::batch;
use gregor_protocol::compact::{raw_records, rebuild_batch};

use crate::disk::{Disk, DiskFile};
use crate::error::{Result, StorageError};
use crate::segment::log_path;

/// A closed segment as the cleaner sees it.
#[derive(Debug, Clone)]
pub struct SegmentRef {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size: u64,
    pub file: Arc<dyn DiskFile>,
}

/// What the cleaner takes from a log under its lock.
#[derive(Debug, Clone)]
pub struct Cleanable {
    pub dir: PathBuf,
    pub segments: Vec<SegmentRef>,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: i64,
    /// Cleaning covers offsets below this.
    pub end_offset: i64,
}

/// A rewritten segment waiting to be swapped in.
#[derive(Debug)]
pub struct Cleaned {
    pub base_offset: i64,
    /// The size the segment had when it was read; the swap is skipped if it changed.
    pub expected_size: u64,
    pub path: PathBuf,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Counts for the log line and for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanStats {
    pub segments: usize,
    pub records_read: u64,
    pub records_kept: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

pub(crate) fn cleaned_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log.cleaned"))
}

/// Completes an interrupted swap: `<log_name>.swap` replaces `<log_name>` (whose stale
/// indexes are removed so they are rebuilt).
pub fn finish_swap(disk: &dyn Disk, dir: &Path, log_name: &str) -> std::io::Result<()> {
    let log = dir.join(log_name);
    if let Some(stem) = log_name.strip_suffix(".log") {
        for ext in ["index", "timeindex"] {
            let p = dir.join(format!("{stem}.{ext}"));
            if disk.exists(&p) {
                disk.remove_file(&p)?;
            }
        }
    }
    disk.rename(&dir.join(format!("{log_name}.swap")), &log)?;
    disk.sync_dir(dir)
}

fn read_all(seg: &SegmentRef, dir: &Path) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; seg.size as usize];
    seg.file
        .read_exact_at(&mut buf, 0)
        .map_err(|e| StorageError::io("read", log_path(dir, seg.base_offset), e))?;
    Ok(buf)
}

fn corrupt(dir: &Path, e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Rewrites the cleanable segments. `throttle` is called with the bytes processed so far,
/// so the caller can pace the cleaner. Nothing is swapped in here.
pub fn clean(
    disk: &dyn Disk,
    c: &Cleanable,
    now_ms: i64,
    mut throttle: impl FnMut(u64),
) -> Result<(Vec<Cleaned>, CleanStats)> {
    // Latest offset of every key in the range.
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    let mut processed = 0u64;
    for seg in &c.segments {
        let data = read_all(seg, &c.dir)?;
        for (at, h) in batch::batches(&data) {
            // Transactional batches and their markers are kept whole and do not supersede
            // older values: an aborted record must not hide the committed one before it.
            if h.is_transactional() {
                continue;
            }
            let (_, records) =
                raw_records(&data[at..at + h.total_bytes()]).map_err(|e| corrupt(&c.dir, e))?;
            for r in records {
                if let Some(k) = r.key {
                    latest.insert(k, r.offset);
                }
            }
        }
        processed += seg.size;
        throttle(processed);
    }
    let tombstone_horizon = now_ms.saturating_sub(c.delete_retention_ms);
    let mut out = Vec::new();
    let mut stats = CleanStats::default();
    for seg in &c.segments {
        let data = read_all(seg, &c.dir)?;
        let mut rewritten = Vec::with_capacity(data.len());
        let mut changed = false;
        for (at, h) in batch::batches(&data) {
            let original = &data[at..at + h.total_bytes()];
            if h.is_transactional() {
                rewritten.extend_from_slice(original);
                continue;
            }
            let (_, records) = raw_records(original).map_err(|e| corrupt(&c.dir, e))?;
            stats.records_read += records.len() as u64;
            let kept: Vec<_> = records
                .iter()
                .filter(|r| match &r.key {
                    // Kafka's cleaner drops keyless records: they cannot be compacted.
                    None => false,
                    Some(k) => {
                        latest.get(k) == Some(&r.offset)
                            && !(r.is_tombstone && h.max_timestamp < tombstone_horizon)
                    }
                })
                .cloned()
                .collect();
            stats.records_kept += kept.len() as u64;
            if kept.len() == records.len() {
                rewritten.extend_from_slice(original);
            } else {
                changed = true;
                if !kept.is_empty() {
                    rewritten.extend_from_slice(
                        &rebuild_batch(original, &kept).map_err(|e| corrupt(&c.dir, e))?,
                    );
                }
            }
        }
        processed += seg.size;
        throttle(processed);
        if !changed {
            continue;
        }
        let path = cleaned_path(&c.dir, seg.base_offset);
        let file = disk
            .open(&path, true)
            .map_err(|e| StorageError::io("create", &path, e))?;
        file.set_len(0)
            .map_err(|e| StorageError::io("truncate", &path, e))?;
        file.write_all_at(&rewritten, 0)
            .map_err(|e| StorageError::io("write", &path, e))?;
        file.sync_data()
            .map_err(|e| StorageError::io("fsync", &path, e))?;
        stats.segments += 1;
        stats.bytes_before += seg.size;
        stats.bytes_after += rewritten.len() as u64;
        out.push(Cleaned {
            base_offset: seg.base_offset,
            expected_size: seg.size,
            path,
            bytes_before: seg.size,
            bytes_after: rewritten.len() as u64,
        });
    }
    Ok((out, stats))
}

/// Whether a batch header belongs to a segment the cleaner may touch.
pub(crate) fn old_enough(max_timestamp: i64, now_ms: i64, min_lag_ms: i64) -> bool {
    max_timestamp < 0 || now_ms.saturating_sub(max_timestamp) >= min_lag_ms
}
