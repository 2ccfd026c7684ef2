//! The brokers' requests to the active controller, carried by `raft_net` beside the Raft
//! RPCs, and what serves them: the types both sides share, so that the transport does not
//! depend on the controller.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::image::MetadataRecord;
use crate::raft::NodeId;

/// What a broker tells the controller about itself with every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Every named listener's advertised address: (listener name, host, port).
    #[serde(default)]
    pub endpoints: Vec<(String, String, i32)>,
    /// Where its Raft listener is, so the controller can add it as a learner.
    pub raft_addr: String,
    /// Differs for every start of the process, so the controller tells a broker that
    /// returned from one that is still stopping.
    pub incarnation: u64,
    /// This start found no clean-shutdown marker: the process crashed or was killed, and
    /// its logs may have lost what was not fsynced.
    #[serde(default)]
    pub unclean_start: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Commit these records as one (topic creation, configs, ...).
    Write(Vec<MetadataRecord>),
    Heartbeat(Registration),
    /// A partition leader asks to change the in-sync replicas (Kafka's AlterPartition).
    AlterIsr {
        node_id: i32,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
    },
    /// A broker about to stop asks that its leaderships move elsewhere first.
    ControlledShutdown {
        node_id: i32,
        incarnation: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ControlError {
    #[error("this node is not the active controller (the active one is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("refused: {0}")]
    Refused(String),
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("no active controller answered: {0}; check that a majority of the controllers in --controllers are running and reachable")]
    Unavailable(String),
}

/// What answers the brokers' requests on a node's metadata-log port (its `ClusterNode`).
pub trait ControlService: Send + Sync {
    /// Serves one request, as the active controller or by saying which node is.
    fn serve_control(
        &self,
        request: ControlRequest,
    ) -> Pin<Box<dyn Future<Output = Result<u64, ControlError>> + Send + '_>>;

    /// Whether `id` is among the configured voters (before the membership is known).
    fn is_configured_voter(&self, id: NodeId) -> bool;
}
