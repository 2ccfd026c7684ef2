//! Broker errors, and the one place where errors become Kafka error codes.

use gregor_storage::StorageError;
use kafka_protocol::error::ResponseError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("metadata: {0}")]
    Metadata(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("unknown topic or partition")]
    UnknownTopic,
    #[error("topic already exists")]
    TopicExists,
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("cluster metadata cannot change now: {0}")]
    NoController(String),
}

/// The Kafka error code for a storage failure.
pub fn storage_error_code(e: &StorageError) -> i16 {
    match e {
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        StorageError::Sequence(s) => match s {
            gregor_storage::producer::SequenceError::OutOfOrder { .. } => {
                ResponseError::OutOfOrderSequenceNumber.code()
            }
            gregor_storage::producer::SequenceError::InvalidEpoch { .. } => {
                ResponseError::InvalidProducerEpoch.code()
            }
            gregor_storage::producer::SequenceError::UnknownProducer(_) => {
                ResponseError::UnknownProducerId.code()
            }
            gregor_storage::producer::SequenceError::MultipleBatches => {
                ResponseError::InvalidRecord.code()
            }
            gregor_storage::producer::SequenceError::TransactionOpen(_) => {
                ResponseError::InvalidTxnState.code()
            }
        },
        StorageError::StaleEpoch { .. } => ResponseError::NotLeaderOrFollower.code(),
        StorageError::Io { .. } | StorageError::Offline(_) | StorageError::Corrupt { .. } => {
            ResponseError::KafkaStorageError.code()
        }
    }
}

/// The Kafka error code for a broker failure.
pub fn error_code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::Storage(s) => storage_error_code(s),
        BrokerError::UnknownTopic => ResponseError::UnknownTopicOrPartition.code(),
        BrokerError::TopicExists => ResponseError::TopicAlreadyExists.code(),
        BrokerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor.code(),
        BrokerError::NoController(_) => ResponseError::NotController.code(),
        BrokerError::Metadata(_) | BrokerError::Config(_) => {
            ResponseError::UnknownServerError.code()
        }
    }
}

/// Why a coordinator's records could not be appended to its internal-topic partition. One
/// mapping to Kafka codes for both coordinators ([`AppendError::code`]), Kafka's own: a
/// coordinator that lost its partition answers NOT_COORDINATOR so the client looks again.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The internal topic or the key's partition is not (yet) here.
    #[error("{0}")]
    Unavailable(String),
    /// This broker no longer leads the partition, or fenced itself off the cluster.
    #[error("{0}")]
    NotCoordinator(String),
    /// A newer epoch of the producer already wrote (transactional offset commits).
    #[error("producer fenced: {0}")]
    ProducerFenced(StorageError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl AppendError {
    pub fn code(&self) -> ResponseError {
        match self {
            AppendError::Unavailable(_) => ResponseError::CoordinatorNotAvailable,
            AppendError::NotCoordinator(_) => ResponseError::NotCoordinator,
            AppendError::ProducerFenced(_) => ResponseError::ProducerFenced,
            AppendError::Storage(e) => ResponseError::try_from_code(storage_error_code(e))
                .unwrap_or(ResponseError::UnknownServerError),
        }
    }
}

/// Why a transaction's markers could not all be written (the coordinator keeps the
/// transaction in its Prepare state and retries).
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("{topic}-{partition} has no leader now")]
    NoLeader { topic: String, partition: i32 },
    #[error("broker {0}, which leads a partition of the transaction, is not available")]
    BrokerUnavailable(i32),
    #[error("sending transaction markers to broker {broker}: {reason}")]
    Send { broker: i32, reason: String },
    #[error("broker {broker} refused the marker for {topic}-{partition}: {code:?}")]
    Refused {
        broker: i32,
        topic: String,
        partition: i32,
        code: Option<ResponseError>,
    },
    #[error("writing the marker to {topic}-{partition}: {error}")]
    Storage {
        topic: String,
        partition: i32,
        error: StorageError,
    },
}
