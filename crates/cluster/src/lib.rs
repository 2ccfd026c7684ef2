//! Cluster metadata as a replicated state machine, as in KRaft: brokers, topics, partitions,
//! replica assignments, leaders and configs are [`MetadataRecord`]s applied in order to a
//! [`MetadataImage`]. On one node the log of those records is the local [`MetadataLog`];
//! in a cluster the same records are replicated with openraft ([`raft`]).
//!
//! Architecture invariant: metadata records never enter a partition's offset space.

pub mod control;
pub mod controller;
pub mod image;
pub mod metadata_log;
pub mod net;
pub mod raft;
pub mod raft_net;

pub use controller::{ClusterNode, ControlError, ControllerSettings, Registration};
pub use image::{
    AclBinding, BrokerMeta, MetadataImage, MetadataRecord, PartitionMeta, QuotaEntity,
    ScramCredentialMeta, TopicMeta,
};
pub use metadata_log::{MetadataLog, MetadataLogError};
