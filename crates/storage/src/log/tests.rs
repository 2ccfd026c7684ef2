//! The log's unit tests: appends, reads, replication, recovery, damage and retention.

use super::*;
use crate::disk::{FaultyDisk, OsDisk};
use gregor_protocol::batch::{batches, build_batch, check_batch};
use proptest::prelude::*;

/// A log on a [`FaultyDisk`], with the disk to inject faults through.
pub(super) fn open_faulty(dir: &Path, config: LogConfig) -> (FaultyDisk, PartitionLog) {
    let disk = FaultyDisk::new();
    let log =
        PartitionLog::open(Arc::new(disk.clone()), dir.to_path_buf(), config, 0).expect("open");
    (disk, log)
}

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(Arc::new(OsDisk), dir.to_path_buf(), config, 0).expect("open")
}

pub(super) fn append_values(log: &mut PartitionLog, values: &[Vec<u8>], ts: i64) -> AppendInfo {
    let mut b = build_batch(0, ts, values);
    let h = check_batch(&b).expect("valid");
    log.append(&mut b, &[(0, h)], LeaderEpoch(0), None, ts)
        .expect("append")
}

/// Reads everything from `from` on, returning (offset, batch bytes) per batch.
pub(super) fn read_all(log: &PartitionLog, from: i64) -> Vec<(i64, Vec<u8>)> {
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
    log.append(&mut b, &[(0, h)], LeaderEpoch(epoch), None, 5)
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
    assert_eq!(mine, LeaderEpoch(2));
    let (epoch, end) = leader
        .end_offset_for_epoch(mine)
        .expect("epochs")
        .expect("epoch 1 is at or below 2");
    assert_eq!((epoch, end), (LeaderEpoch(1), Offset(common_end)));
    follower.truncate_to(end).expect("truncate");
    assert_eq!(follower.log_end(), common_end);
    replicate(&leader, &mut follower);
    assert_eq!(read_all(&follower, 0), read_all(&leader, 0));
    assert_eq!(
        follower.end_offset_for_epoch(LeaderEpoch(3)).expect("e"),
        Some((LeaderEpoch(3), Offset(leader.log_end())))
    );
    assert_eq!(
        follower.end_offset_for_epoch(LeaderEpoch(0)).expect("e"),
        None
    );

    // Truncation survives a restart, and the rebuilt epoch cache agrees.
    drop(follower);
    let mut reopened = open(dirs[1].path(), small);
    assert_eq!(read_all(&reopened, 0), read_all(&leader, 0));
    assert_eq!(
        reopened.end_offset_for_epoch(LeaderEpoch(1)).expect("e"),
        Some((LeaderEpoch(1), Offset(common_end)))
    );
}

#[test]
fn a_tracked_high_watermark_bounds_what_readers_see() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut log = open(dir.path(), LogConfig::default());
    append_values(&mut log, &[b"a".to_vec()], 1);
    log.track_high_watermark(Some(Offset(0)));
    append_values(&mut log, &[b"b".to_vec()], 2);
    assert_eq!((log.offsets().high_watermark, log.log_end()), (0, 2));
    assert!(log.advance_high_watermark(Offset(1)));
    assert!(!log.advance_high_watermark(Offset(0)), "never backwards");
    assert!(log.advance_high_watermark(Offset(99)));
    assert_eq!(log.offsets().high_watermark, 2, "clamped to the log end");
    log.truncate_to(Offset(1)).expect("truncate");
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
        log.append(&mut b, &[(0, h)], LeaderEpoch(0), None, 9),
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
    assert!(log
        .append(&mut b, &[(0, h)], LeaderEpoch(0), None, 2)
        .is_err());
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
    assert!(log
        .append(&mut b, &[(0, h)], LeaderEpoch(0), None, 2)
        .is_err());
    disk.set(|f| f.fail_writes = false);
    assert!(log.offline_reason().is_some());
    // Offline: nothing is appended or served, even once the fault is gone.
    let mut again = build_batch(0, 3, &[b"x".to_vec()]);
    let h2 = check_batch(&again).expect("valid");
    assert!(matches!(
        log.append(&mut again, &[(0, h2)], LeaderEpoch(0), None, 3),
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
        .append(&mut b, &[(0, h)], LeaderEpoch(0), None, 2)
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
    log.append(&mut b, &[(0, h)], LeaderEpoch(0), None, 1)
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

#[test]
#[should_panic(expected = "high watermark 9 outside the log")]
fn a_broken_invariant_is_caught_where_it_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), LogConfig::default());
    append_values(&mut log, &[b"a".to_vec()], 1);
    log.track_high_watermark(Some(Offset(0)));
    // No method moves it past the log end; force it, then check as every change does.
    log.high_watermark = Some(9);
    log.check_invariants();
}

#[test]
fn retention_past_a_lagging_high_watermark_raises_it_and_delete_records_stops_at_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 200,
        retention_ms: 1000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config);
    // A follower: its high watermark, from the leader, lags its log end.
    log.track_high_watermark(Some(Offset(0)));
    for i in 0..6 {
        append_values(&mut log, &[vec![i as u8; 100]], 1000 + i64::from(i));
    }
    assert!(log.advance_high_watermark(Offset(2)));
    // Records with old timestamps: retention deletes past the high watermark.
    log.apply_retention(100_000).expect("retention");
    assert_eq!(log.log_start(), 6);
    assert_eq!(
        log.high_watermark(),
        6,
        "raised to the new log start, as Kafka does"
    );
    assert!(log.offline_reason().is_none(), "the log stays online");
    append_values(&mut log, &[b"more".to_vec()], 100_000);
    // DeleteRecords may not pass the high watermark (Kafka's OFFSET_OUT_OF_RANGE).
    assert!(matches!(
        log.delete_records(7, 100_000),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(log.advance_high_watermark(Offset(7)));
    assert_eq!(log.delete_records(7, 100_000).expect("delete"), 7);
}

#[test]
fn an_append_in_an_older_epoch_is_refused_and_the_log_stays_online() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path(), LogConfig::default());
    append_at_epoch(&mut log, &[b"new leader".to_vec()], 3);
    // A deposed leader has followed (its truncation read the epoch cache) before the race.
    assert_eq!(log.latest_epoch().expect("epochs"), Some(LeaderEpoch(3)));
    let mut b = build_batch(0, 5, &[b"deposed".to_vec()]);
    let h = check_batch(&b).expect("valid");
    assert!(matches!(
        log.append(&mut b, &[(0, h)], LeaderEpoch(2), None, 5),
        Err(StorageError::StaleEpoch {
            epoch: 2,
            latest: 3
        })
    ));
    assert!(log.offline_reason().is_none());
    assert_eq!(
        append_at_epoch(&mut log, &[b"next".to_vec()], 3).base_offset,
        1
    );
}
