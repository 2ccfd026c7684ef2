//! Storage errors. Only the broker maps them to Kafka error codes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("offset {requested} is outside the log [{log_start}, {log_end})")]
    OffsetOutOfRange {
        requested: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("the log at {0} is offline after an earlier I/O error; restart the broker once the disk is healthy")]
    Offline(PathBuf),
    #[error("corrupt data in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Sequence(#[from] crate::producer::SequenceError),
    /// An append in a leader epoch older than one the log already holds: this broker was
    /// deposed (and has since taken a newer leader's batches) after it read its epoch.
    #[error("an append in leader epoch {epoch}, after epoch {latest} was written here: this broker no longer leads")]
    StaleEpoch { epoch: i32, latest: i32 },
}

impl StorageError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;
