//! Offsets and leader epochs as types of their own where they cross from replication into
//! the log: an epoch passed where an offset is expected (OffsetForLeaderEpoch answers
//! both, side by side) does not compile.

use std::fmt;

/// A position in a partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

/// A partition leader's epoch: raised by the controller with each new leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub i32);

impl Offset {
    pub fn get(self) -> i64 {
        self.0
    }
}

impl LeaderEpoch {
    pub fn get(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
