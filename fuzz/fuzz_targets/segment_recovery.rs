//! Any bytes as the active segment of a partition: recovery must either keep a prefix of
//! whole, CRC-valid batches with increasing offsets, cut the rest (a torn tail), serve
//! every offset it kept and take appends again at its log end; or, when valid batches
//! follow invalid bytes (damage), cut nothing, serve nothing, take no append, and find the
//! same damage again on the next start.
#![no_main]

use std::sync::Arc;

use gregor_protocol::batch::{self, build_batch, check_batch};
use gregor_storage::{LogConfig, OsDisk, PartitionLog};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(format!("{:020}.log", 0)), data).expect("write segment");
    let config = LogConfig {
        index_interval_bytes: 128,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(
        Arc::new(OsDisk),
        dir.path().to_path_buf(),
        config.clone(),
        0,
    )
    .expect("recovery must succeed");
    let end = log.log_end();
    if let Some(damage) = log.damage().cloned() {
        let len = std::fs::metadata(dir.path().join(format!("{:020}.log", 0)))
            .expect("stat")
            .len() as usize;
        assert_eq!(len, data.len(), "damage is never cut");
        assert!(log.read(log.log_start(), 1 << 20, true).is_err());
        let mut b = build_batch(0, 1, &[b"after-damage".to_vec()]);
        let h = check_batch(&b).expect("valid");
        assert!(log
            .append(&mut b, &[(0, h)], gregor_storage::LeaderEpoch(0), None, 1)
            .is_err());
        drop(log);
        let log = PartitionLog::open(Arc::new(OsDisk), dir.path().to_path_buf(), config, 0)
            .expect("reopen");
        assert_eq!(log.damage().map(|d| d.position), Some(damage.position));
        assert_eq!(log.log_end(), end);
        return;
    }
    let kept = std::fs::metadata(dir.path().join(format!("{:020}.log", 0)))
        .expect("stat")
        .len() as usize;
    assert!(kept <= data.len());
    // Every kept byte is a valid batch, and reading from the start walks all of them.
    let mut offset = log.log_start();
    let mut seen = 0usize;
    while offset < end {
        let bytes = log
            .read(offset, 1 << 20, true)
            .expect("read")
            .read()
            .expect("bytes");
        assert!(!bytes.is_empty());
        let mut pos = 0;
        while pos < bytes.len() {
            let h = check_batch(&bytes[pos..]).expect("recovered log holds only valid batches");
            assert!(h.last_offset() >= offset);
            offset = h.last_offset() + 1;
            pos += h.total_bytes();
        }
        seen += bytes.len();
    }
    assert_eq!(seen, kept);
    let mut b = build_batch(0, 1, &[b"after-recovery".to_vec()]);
    let h = check_batch(&b).expect("valid");
    let info = log
        .append(&mut b, &[(0, h)], gregor_storage::LeaderEpoch(0), None, 1)
        .expect("append after recovery");
    assert_eq!(info.base_offset, end);
    drop(log);
    let log =
        PartitionLog::open(Arc::new(OsDisk), dir.path().to_path_buf(), config, 0).expect("reopen");
    assert_eq!(log.log_end(), end + 1);
    let _ = batch::batches(data).count();
});
