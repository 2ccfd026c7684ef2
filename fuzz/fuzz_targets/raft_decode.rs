//! Any bytes as the metadata Raft log's files (log, vote, snapshot: read at start-up) and
//! as a Raft RPC from another controller. Must never panic; the good prefix of a log file
//! never reaches past its end.
#![no_main]

use gregor_cluster::{raft, raft_net};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, good) = raft::decode_log_file(data);
    assert!(good <= data.len());
    let _ = raft_net::decode_request(data);
});
