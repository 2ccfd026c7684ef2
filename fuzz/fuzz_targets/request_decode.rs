//! Any bytes as a request frame: header peek, full decode of every API the codec knows,
//! and record-batch validation of the same bytes. Must never panic, abort or allocate
//! far beyond the input (libFuzzer's -rss_limit_mb catches that).
#![no_main]

use bytes::Bytes;
use gregor_protocol::{batch, frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame::peek_header(data);
    let _ = frame::decode_request(Bytes::copy_from_slice(data));
    if let Ok(header) = batch::validate_produce_batch(data) {
        assert!(header.total_bytes() <= data.len());
    }
    let _ = batch::record_timestamps(data);
    for (at, h) in batch::batches(data) {
        assert!(at + h.total_bytes() <= data.len());
    }
});
