//! Compaction end to end: the cleaner's three steps on a real log.

use super::*;
use crate::cleaner::*;
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
    log.append(&mut b, &[(0, h)], LeaderEpoch(0), None, ts)
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
    let mut log =
        PartitionLog::open(Arc::new(OsDisk), dir.path().to_path_buf(), config, 0).expect("open");
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
    let log =
        PartitionLog::open(Arc::new(OsDisk), dir.path().to_path_buf(), config, 0).expect("reopen");
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
