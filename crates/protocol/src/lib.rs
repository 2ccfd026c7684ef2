//! Kafka wire-format helpers on top of the `kafka-protocol` crate: request framing and
//! safe header parsing (`frame`), and the record-batch (magic v2) helpers that the
//! broker and the storage engine share (`batch`). No I/O lives here.

pub mod batch;
pub mod compact;
pub mod frame;
pub mod varint;

pub use kafka_protocol;
