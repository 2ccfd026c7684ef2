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
