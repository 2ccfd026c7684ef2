//! A clean close writes and fsyncs only what changed, and never less than the next start
//! needs.

use super::tests::{append_values, open_faulty, read_all};
use super::*;
use crate::disk::FaultyDisk;

/// Opens the log in `dir` on `disk` as after a clean stop.
fn reopen_clean(disk: &FaultyDisk, dir: &Path) -> PartitionLog {
    PartitionLog::open_with(
        Arc::new(disk.clone()),
        dir.to_path_buf(),
        LogConfig::default(),
        0,
        true,
    )
    .expect("reopen")
}

fn no_writes_or_syncs(disk: &FaultyDisk) {
    disk.set(|f| {
        f.fail_writes = true;
        f.fail_syncs = true;
    });
}

#[test]
fn closing_a_log_that_did_not_change_writes_and_fsyncs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A new, empty log: its missing files say what the close would write.
    let (disk, mut log) = open_faulty(dir.path(), LogConfig::default());
    no_writes_or_syncs(&disk);
    log.close().expect("an empty log's close writes nothing");
    disk.set(|f| *f = Default::default());
    append_values(&mut log, &[b"one".to_vec(), b"two".to_vec()], 1);
    log.close().expect("close");
    // Reopened after that clean close and closed again unchanged: nothing to write.
    let mut log = reopen_clean(&disk, dir.path());
    no_writes_or_syncs(&disk);
    log.close()
        .expect("an unchanged log's close writes nothing");
    assert_eq!(log.log_end(), 2);
    // Once it changes, the close writes again (and so fails here).
    disk.set(|f| *f = Default::default());
    append_values(&mut log, &[b"three".to_vec()], 2);
    no_writes_or_syncs(&disk);
    assert!(log.close().is_err(), "a changed log's close must write");
}

#[test]
fn a_cut_is_made_durable_at_close_even_with_nothing_appended_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, mut log) = open_faulty(dir.path(), LogConfig::default());
    append_values(&mut log, &[b"one".to_vec()], 1);
    append_values(&mut log, &[b"two".to_vec()], 2);
    log.close().expect("close");
    let mut log = reopen_clean(&disk, dir.path());
    log.truncate_to(Offset(1)).expect("truncate");
    disk.set(|f| f.fail_syncs = true);
    assert!(log.close().is_err(), "the cut must be fsynced at close");
    drop(log);
    disk.set(|f| *f = Default::default());
    let log = open_faulty(dir.path(), LogConfig::default()).1;
    assert_eq!(log.log_end(), 1);
}

#[test]
fn index_files_left_by_an_earlier_segment_at_the_same_base_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, mut log) = open_faulty(dir.path(), LogConfig::default());
    append_values(&mut log, &[b"one".to_vec()], 5);
    log.close().expect("close");
    drop(log);
    // The segment goes but its index files stay (as after a failed removal).
    std::fs::remove_file(dir.path().join(format!("{:020}.log", 0))).expect("remove");
    let index = dir.path().join(format!("{:020}.index", 0));
    let time_index = dir.path().join(format!("{:020}.timeindex", 0));
    assert!(index.exists() && time_index.exists());
    let mut log = reopen_clean(&disk, dir.path());
    assert_eq!(log.log_end(), 0);
    // The new segment's indexes are empty; a close that skips writing them must not
    // leave the old ones to be read at the next start.
    log.close().expect("close");
    assert!(!index.exists() && !time_index.exists());
    let log = reopen_clean(&disk, dir.path());
    assert_eq!(log.log_end(), 0);
    assert!(read_all(&log, 0).is_empty());
}

#[test]
fn a_close_after_a_start_that_recovered_a_crash_fsyncs_the_recovered_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = FaultyDisk::new();
    disk.set(|f| f.track_unsynced = true);
    let open = || {
        PartitionLog::open(
            Arc::new(disk.clone()),
            dir.path().to_path_buf(),
            LogConfig::default(),
            0,
        )
        .expect("open")
    };
    let mut log = open();
    append_values(&mut log, &[b"one".to_vec()], 1);
    drop(log); // killed: no close, the bytes only in the page cache
    let mut log = open();
    assert_eq!(log.log_end(), 1);
    // Nothing appended since the start, but the tail was never fsynced: the clean close
    // must fsync it before it moves the recovery point to the log end.
    log.close().expect("close");
    drop(log);
    disk.crash().expect("power cut");
    let log = reopen_clean(&disk, dir.path());
    assert_eq!(log.log_end(), 1);
    assert!(log.damage().is_none(), "{:?}", log.damage());
}
