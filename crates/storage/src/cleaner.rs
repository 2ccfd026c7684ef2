//! Log compaction (Kafka's log cleaner) for `cleanup.policy=compact`.
//!
//! The cleaner works on closed segments only, never the active one, in three steps so the
//! partition lock is held only briefly:
//! 1. under the lock, [`PartitionLog::cleanable`] picks the closed segments old enough for
//!    `min.compaction.lag.ms` and decides from `min.cleanable.dirty.ratio` (or an overdue
//!    `max.compaction.lag.ms`) whether cleaning is due;
//! 2. without the lock, [`clean`] maps every key to its latest offset and writes each
//!    segment again as `<base>.log.cleaned`, keeping the latest record per key and dropping
//!    tombstones older than `delete.retention.ms`; records keep their offsets and bytes;
//! 3. under the lock, [`PartitionLog::install_cleaned`] swaps each one in.
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
use crate::log::{LogConfig, PartitionLog};
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
    pub config: LogConfig,
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
    let tombstone_horizon = now_ms.saturating_sub(c.config.delete_retention_ms);
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

impl PartitionLog {
    /// Compacts the log in one go (all three steps), for callers that hold the log alone.
    pub fn compact_now(&mut self, now_ms: i64) -> Result<CleanStats> {
        let Some(c) = self.cleanable(now_ms) else {
            return Ok(CleanStats::default());
        };
        let disk = self.disk().clone();
        let (cleaned, stats) = clean(disk.as_ref(), &c, now_ms, |_| {})?;
        for done in cleaned {
            self.install_cleaned(&done)?;
        }
        self.set_cleaned_up_to(c.end_offset)?;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::OsDisk;
    use gregor_protocol::batch::{build_record_batch, check_batch};
    use gregor_protocol::compact::raw_records;

    fn compacting(segment_bytes: u64) -> LogConfig {
        LogConfig {
            segment_bytes,
            compact: true,
            retention_enabled: false,
            min_cleanable_dirty_ratio: 0.0,
            delete_retention_ms: 1000,
            ..LogConfig::default()
        }
    }

    fn put(log: &mut PartitionLog, key: &str, value: Option<&str>, ts: i64) -> i64 {
        let mut b = build_record_batch(
            ts,
            &[(Some(key.as_bytes()), value.map(str::as_bytes))],
            false,
        );
        let h = check_batch(&b).expect("valid");
        log.append(&mut b, &[(0, h)], 0, None, ts)
            .expect("append")
            .base_offset
    }

    /// (offset, key, value-or-None) of every record, by reading the log.
    fn contents(log: &PartitionLog) -> Vec<(i64, String, Option<bool>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start();
        while offset < log.log_end() {
            let bytes = log
                .read(offset, 1 << 20, true)
                .expect("read")
                .read()
                .expect("bytes");
            if bytes.is_empty() {
                break;
            }
            for (at, h) in batch::batches(&bytes) {
                for r in raw_records(&bytes[at..at + h.total_bytes()])
                    .expect("records")
                    .1
                {
                    out.push((
                        r.offset,
                        String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                        Some(r.is_tombstone),
                    ));
                }
                offset = h.last_offset() + 1;
            }
        }
        out
    }

    #[test]
    fn keeps_the_latest_value_per_key_with_its_offset_and_spares_the_active_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = PartitionLog::open(
            Arc::new(OsDisk),
            dir.path().to_path_buf(),
            compacting(150),
            0,
        )
        .expect("open");
        for i in 0..10 {
            put(&mut log, &format!("k{}", i % 3), Some("v"), 100);
        }
        put(&mut log, "k0", None, 100); // offset 10: a fresh tombstone for k0
        put(&mut log, "k3", Some("v"), 100); // offset 11, closing that segment
        let active_base = log.log_end();
        put(&mut log, "k1", Some("in-active"), 100); // offset 12, in the active segment
        let before = log.segment_count();
        let stats = log.compact_now(500).expect("compact");
        assert!(stats.records_kept < stats.records_read, "{stats:?}");
        let got = contents(&log);
        // In the cleanable range k1 was last written at 7, k2 at 8, k0 deleted at 10, k3 at 11;
        // the active segment is not touched.
        let offsets: Vec<i64> = got.iter().map(|(o, _, _)| *o).collect();
        assert_eq!(offsets, vec![7, 8, 10, 11, active_base], "{got:?}");
        assert_eq!(
            got[2],
            (10, "k0".into(), Some(true)),
            "a recent tombstone survives"
        );
        assert_eq!(
            log.segment_count(),
            before,
            "segments are rewritten in place, not merged"
        );
        // Reads from any offset still work, and a restart sees the same log.
        assert!(!log
            .read(0, 1 << 20, true)
            .expect("read from a compacted-away offset")
            .is_empty());
        drop(log);
        let log = PartitionLog::open(
            Arc::new(OsDisk),
            dir.path().to_path_buf(),
            compacting(150),
            0,
        )
        .expect("reopen");
        assert_eq!(
            contents(&log)
                .iter()
                .map(|(o, _, _)| *o)
                .collect::<Vec<_>>(),
            offsets
        );
    }

    #[test]
    fn old_tombstones_are_removed_once_past_delete_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = compacting(150);
        let mut log = PartitionLog::open(
            Arc::new(OsDisk),
            dir.path().to_path_buf(),
            config.clone(),
            0,
        )
        .expect("open");
        put(&mut log, "a", Some("1"), 0);
        put(&mut log, "a", None, 0);
        put(&mut log, "b", Some("2"), 0);
        put(&mut log, "c", Some("3"), 5000); // keeps the others closed
        log.compact_now(5000).expect("compact"); // tombstone at ts 0 is older than 1000 ms
        let keys: Vec<String> = contents(&log).into_iter().map(|(_, k, _)| k).collect();
        assert_eq!(keys, vec!["b", "c"]);
        // Nothing new is dirty: not due, even with a zero ratio.
        assert!(log.cleanable(5000).is_none());
    }

    #[test]
    fn the_dirty_ratio_gates_cleaning_and_max_lag_overrides_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = LogConfig {
            min_cleanable_dirty_ratio: 0.5,
            ..compacting(150)
        };
        let mut log = PartitionLog::open(
            Arc::new(OsDisk),
            dir.path().to_path_buf(),
            config.clone(),
            0,
        )
        .expect("open");
        for i in 0..12 {
            put(&mut log, &format!("k{i}"), Some("v"), 1000); // distinct keys: a large clean part
        }
        log.compact_now(1000).expect("first pass");
        for _ in 0..2 {
            put(&mut log, "k0", Some("w"), 1000); // a little dirt: closes one more segment
        }
        put(&mut log, "k1", Some("w"), 1000);
        assert!(
            log.cleanable(1000).is_none(),
            "one dirty segment of six is below the 0.5 ratio"
        );
        config.max_compaction_lag_ms = 100;
        log.set_config(config);
        assert!(
            log.cleanable(2000).is_some(),
            "max.compaction.lag.ms forces cleaning"
        );
    }

    #[test]
    fn records_younger_than_min_compaction_lag_are_not_cleaned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            min_compaction_lag_ms: 1000,
            ..compacting(150)
        };
        let mut log = PartitionLog::open(Arc::new(OsDisk), dir.path().to_path_buf(), config, 0)
            .expect("open");
        for _ in 0..6 {
            put(&mut log, "k", Some("v"), 10_000);
        }
        assert!(
            log.cleanable(10_500).is_none(),
            "500 ms old: too young to compact"
        );
        assert!(log.cleanable(11_000).is_some(), "1000 ms old: cleanable");
    }

    #[test]
    fn a_crash_mid_swap_leaves_the_old_or_the_new_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = compacting(150);
        let mut log = PartitionLog::open(
            Arc::new(OsDisk),
            dir.path().to_path_buf(),
            config.clone(),
            0,
        )
        .expect("open");
        for i in 0..6 {
            put(&mut log, "same", Some(&i.to_string()), 0);
        }
        put(&mut log, "other", Some("x"), 0);
        let before = contents(&log);
        let c = log.cleanable(0).expect("due");
        let (cleaned, _) = clean(&OsDisk, &c, 0, |_| {}).expect("clean");
        assert!(!cleaned.is_empty());
        drop(log);
        // Crash 1: after writing `.cleaned`, before the rename. The old segments stay.
        let log = PartitionLog::open(
            Arc::new(OsDisk),
            dir.path().to_path_buf(),
            config.clone(),
            0,
        )
        .expect("reopen");
        assert_eq!(contents(&log), before);
        assert!(
            cleaned.iter().all(|c| !c.path.exists()),
            "unfinished cleanings are removed"
        );
        drop(log);
        // Crash 2: after renaming to `.swap`, before it replaced the segment. The new one wins.
        let log = PartitionLog::open(
            Arc::new(OsDisk),
            dir.path().to_path_buf(),
            config.clone(),
            0,
        )
        .expect("reopen");
        let c = log.cleanable(0).expect("due");
        let (cleaned, _) = clean(&OsDisk, &c, 0, |_| {}).expect("clean");
        drop(log);
        for done in &cleaned {
            std::fs::rename(
                &done.path,
                dir.path()
                    .join(format!("{:020}.log.swap", done.base_offset)),
            )
            .expect("rename");
        }
        let log = PartitionLog::open(Arc::new(OsDisk), dir.path().to_path_buf(), config, 0)
            .expect("reopen");
        let after: Vec<i64> = contents(&log).iter().map(|(o, _, _)| *o).collect();
        assert!(
            after.len() < before.len() && after.contains(&5),
            "{after:?}"
        );
        assert!(std::fs::read_dir(dir.path()).expect("ls").all(|e| !e
            .expect("entry")
            .path()
            .to_string_lossy()
            .ends_with(".swap")));
    }
}
