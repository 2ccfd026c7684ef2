//! Gregor's storage engine: every partition is a directory of segments holding Kafka record
//! batches (magic v2) in their wire form, with their final offsets, beside a sparse offset
//! index and a time index. All file access goes through the [`Disk`] trait so tests can
//! inject torn writes, failed fsyncs and a full disk.

pub mod cleaner;
pub mod disk;
pub mod error;
pub mod handles;
pub mod lock;
pub mod log;
pub mod producer;
pub mod segment;
pub mod types;

pub use disk::{Disk, DiskFile, FaultyDisk, OsDisk};
pub use error::StorageError;
pub use lock::DataDirLock;
pub use log::{AppendInfo, FileRegion, LogConfig, LogOffsets, PartitionLog, ReadPlan};
pub use segment::Damage;
pub use types::{LeaderEpoch, Offset};
