//! The controller: the Raft leader of the metadata log decides, everyone else asks it.
//!
//! Every broker in a cluster runs a [`ClusterNode`]: its copy of the metadata log (a voter
//! when its id is among `--controllers`, a learner otherwise) and a loop that heartbeats
//! the active controller. The active controller (whichever voter Raft elected) keeps the
//! last heartbeat time of every broker in memory, fences a broker that missed its session
//! timeout, moves that broker's leaderships to other in-sync replicas with a bumped leader
//! epoch, takes ISR changes from partition leaders (checked against their leader epoch),
//! and restores preferred leaders. All of its decisions are metadata records, so every
//! broker applies them in the same order.
//!
//! Architecture invariant: decisions are made one at a time (`decide`), each from the image
//! that all earlier decisions were applied to; a leader is only ever chosen from the
//! in-sync replicas of a live broker, unless the topic allows unclean election.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use crate::net::TcpListener;
use gregor_storage::Disk;
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use uuid::Uuid;

use crate::image::{MetadataImage, MetadataRecord};
use crate::raft::{LogStore, NodeId, Raft, StateMachine};
use crate::raft_net::{self, Request, Response, TcpNetwork};

mod client;
mod decide;
mod elect;

use crate::control::ControlService;
pub use crate::control::{ControlError, ControlRequest, Registration};
use elect::{all_records, register};
pub use elect::{elect, finish_reassignments, leave_isrs};

/// How the active controller judges brokers.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// A broker silent for longer than this is fenced (`broker.session.timeout.ms`).
    pub session_timeout_ms: u64,
    /// How often brokers heartbeat (`broker.heartbeat.interval.ms`).
    pub heartbeat_interval_ms: u64,
    /// Whether preferred leaders are restored (`auto.leader.rebalance.enable`), and how
    /// often that is checked (`leader.imbalance.check.interval.seconds`).
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_check_ms: u64,
    /// The cluster default of `unclean.leader.election.enable`; a topic config overrides it.
    pub unclean_leader_election: bool,
}

/// One node's part in the cluster: its Raft instance over the metadata log, and the
/// controller duties it performs while it is the Raft leader.
pub struct ClusterNode {
    pub node_id: i32,
    pub raft: Raft,
    machine: StateMachine,
    voters: BTreeMap<NodeId, String>,
    settings: ControllerSettings,
    /// Last heartbeat of every broker, as seen by this node while it leads.
    last_seen: Mutex<HashMap<i32, Instant>>,
    /// Since when this node has been the active controller.
    leading_since: Mutex<Option<Instant>>,
    last_rebalance: Mutex<Option<Instant>>,
    /// Brokers that asked for a controlled shutdown: they get no new leaderships.
    shutting_down: Mutex<HashMap<i32, (u64, Instant)>>,
    /// The incarnation of each broker that finished a controlled shutdown: its heartbeats
    /// never unfence it (a new incarnation does).
    stopped: Mutex<HashMap<i32, u64>>,
    /// This process's incarnation, sent with heartbeats and the controlled shutdown.
    incarnation: u64,
    /// The incarnation each broker last heartbeated with, as seen while leading.
    incarnations: Mutex<HashMap<i32, u64>>,
    decide: tokio::sync::Mutex<()>,
    /// How connections to other controllers are made (TLS on an SSL controller listener).
    transport: Arc<dyn raft_net::Transport>,
    /// The metadata log index the active controller answered this process's first
    /// heartbeat with: the image is the cluster's current one once applied to here.
    catch_up_to: std::sync::OnceLock<u64>,
    /// This broker's lease on its leaderships: see [`ClusterNode::lease_expired`].
    lease: Mutex<Lease>,
    /// What the active controller learned by knocking at silent brokers' metadata-log
    /// ports: see [`Knocks`].
    knocks: Arc<Mutex<Knocks>>,
}

/// A broker whose heartbeats stopped is knocked at (a bare TCP connect to its
/// metadata-log port, at most every [`KNOCK_EVERY`]). A refused connection means no
/// process listens there any more: the broker was killed or crashed, and it is fenced at
/// once instead of at the end of its session. A paused or cut-off broker does not refuse
/// (its kernel accepts, or nothing answers at all), so it keeps its whole session, and
/// with it the lease that its self-fencing counts on.
#[derive(Debug, Default)]
struct Knocks {
    sent: HashMap<i32, Instant>,
    refused: HashMap<i32, Instant>,
}

const KNOCK_EVERY: Duration = Duration::from_millis(500);
const KNOCK_WAIT: Duration = Duration::from_millis(500);

/// Whether a connection to `addr` is refused within [`KNOCK_WAIT`]: the process that
/// listened there is gone (a paused or cut-off one does not refuse).
async fn refuses_connections(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(KNOCK_WAIT, crate::net::TcpStream::connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// When the last heartbeats that the active controller answered were sent. A heartbeat
/// counts only once the metadata log is applied here as far as the controller's answer
/// (which it gives after confirming its own leadership with a quorum), so a lease is never
/// renewed while this broker's image still shows leaderships the controller moved away.
#[derive(Debug, Default)]
struct Lease {
    confirmed: Option<Instant>,
    pending: Option<(Instant, u64)>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("node_id", &self.node_id)
            .field("voters", &self.voters)
            .finish_non_exhaustive()
    }
}

fn other(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Parses `--controllers`: `1@host:port,2@host:port,...`.
pub fn parse_voters(spec: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| format!("'{part}' is not ID@HOST:PORT"))?;
        let id: NodeId = id
            .parse()
            .map_err(|_| format!("'{id}' in '{part}' is not a node id"))?;
        if !addr.contains(':') {
            return Err(format!("'{addr}' in '{part}' has no port"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(format!("node id {id} appears twice"));
        }
    }
    if out.is_empty() {
        return Err("no controller given".into());
    }
    Ok(out)
}

impl ClusterNode {
    /// Opens this node's Raft state in `data_dir`, serves Raft and controller requests on
    /// `listener`, and, when this node is a voter and the log is new, initializes the
    /// cluster with the voters (every voter does; Raft settles on one membership).
    pub async fn start(
        disk: Arc<dyn Disk>,
        data_dir: &Path,
        node_id: i32,
        listener: TcpListener,
        voters: BTreeMap<NodeId, String>,
        settings: ControllerSettings,
        transport: Arc<dyn raft_net::Transport>,
    ) -> std::io::Result<Arc<Self>> {
        // openraft draws each election timeout from a thread-local generator seeded by the
        // operating system; in the simulator each node has its own fixed timeout instead,
        // so that a seed replays the same elections.
        let (election_timeout_min, election_timeout_max) = if turmoil::in_simulation() {
            let fixed = 600 + 150 * (node_id as u64 % 5);
            (fixed, fixed + 1)
        } else {
            (600, 1200)
        };
        let config = openraft::Config {
            cluster_name: "gregor".into(),
            heartbeat_interval: 100,
            election_timeout_min,
            election_timeout_max,
            // openraft gives an append the heartbeat interval to be sent, stored and
            // answered, and sends it again whole when that runs out: small appends keep
            // each exchange inside it on a busy machine. A CreateTopics of 500 topics is
            // one entry of about 130 KB; a follower decodes 2 MB in about 11 ms on an idle
            // core, but three brokers restarting with 30,000 partitions on two cores
            // answered 16 entries an append late every time, and so never caught up.
            max_payload_entries: 2,
            // Snapshot chunks small enough to be written within the install timeout.
            snapshot_max_chunk_size: 256 << 10,
            install_snapshot_timeout: 2_000,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(other)?);
        let log = LogStore::open(disk.clone(), data_dir)?;
        let machine = StateMachine::open(disk, data_dir)?;
        let network = TcpNetwork {
            transport: transport.clone(),
        };
        let raft = Raft::new(node_id as NodeId, config, network, log, machine.clone())
            .await
            .map_err(other)?;
        let node = Arc::new(ClusterNode {
            node_id,
            raft: raft.clone(),
            machine,
            voters: voters.clone(),
            settings,
            last_seen: Mutex::new(HashMap::new()),
            leading_since: Mutex::new(None),
            last_rebalance: Mutex::new(None),
            shutting_down: Mutex::new(HashMap::new()),
            stopped: Mutex::new(HashMap::new()),
            incarnations: Mutex::new(HashMap::new()),
            incarnation: {
                let nanos = crate::net::wall_clock()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                nanos ^ u64::from(std::process::id()).rotate_left(32)
            },
            decide: tokio::sync::Mutex::new(()),
            transport: transport.clone(),
            catch_up_to: std::sync::OnceLock::new(),
            lease: Mutex::new(Lease::default()),
            knocks: Arc::new(Mutex::new(Knocks::default())),
        });
        let service: Arc<dyn ControlService> = node.clone();
        tokio::spawn(raft_net::serve(
            listener,
            raft.clone(),
            Some(service),
            transport,
        ));
        if voters.contains_key(&(node_id as NodeId))
            && !raft.is_initialized().await.map_err(other)?
        {
            let members: BTreeMap<NodeId, BasicNode> = voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(error = %e, "metadata log already initialized");
            }
        }
        tracing::info!(
            node_id,
            voter = voters.contains_key(&(node_id as NodeId)),
            controllers = ?voters,
            "metadata quorum started"
        );
        Ok(node)
    }

    /// This process's incarnation, for its [`Registration`].
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether this process has applied the metadata log as far as the active controller
    /// had it when this process first heartbeated. Before that, the image is a past
    /// state replayed from the log (after a restart), not one to act on: Kafka's brokers
    /// likewise catch up with the metadata log before they apply it.
    pub fn caught_up(&self) -> bool {
        self.catch_up_to
            .get()
            .is_some_and(|&index| self.machine.applied_index().unwrap_or(0) >= index)
    }

    /// `Some(age)` when this broker's last confirmed heartbeat was sent longer ago than
    /// the session timeout (or never): the controller may have fenced it and moved its
    /// leaderships, so it takes no writes until a heartbeat gets through (self-fencing; a
    /// broker that was paused or cut off must not take writes it is about to truncate).
    pub fn lease_expired(&self) -> Option<Duration> {
        let applied = self.machine.applied_index().unwrap_or(0);
        let mut lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((sent, index)) = lease.pending {
            if applied >= index {
                lease.confirmed = Some(lease.confirmed.map_or(sent, |c| c.max(sent)));
                lease.pending = None;
            }
        }
        let timeout = Duration::from_millis(self.settings.session_timeout_ms);
        match lease.confirmed {
            Some(sent) if sent.elapsed() < timeout => None,
            Some(sent) => Some(sent.elapsed()),
            None => Some(Duration::MAX),
        }
    }

    fn renew_lease(&self, sent: Instant, index: u64) {
        let mut lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        // Promote an older pending heartbeat first if it is applied by now.
        if let Some((at, i)) = lease.pending {
            if self.machine.applied_index().unwrap_or(0) >= i {
                lease.confirmed = Some(lease.confirmed.map_or(at, |c| c.max(at)));
            }
        }
        lease.pending = Some((sent, index));
    }

    /// The image as last applied here.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.machine.subscribe().borrow().clone()
    }

    /// Every image as it is applied, the current one first.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<MetadataImage>> {
        self.machine.subscribe()
    }

    /// The active controller's id, as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id as NodeId)
    }

    /// Whether `id` is among the configured voters (`controller.quorum.voters`).
    pub fn is_configured_voter(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id)
    }

    fn address_of(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .or_else(|| self.voters.get(&id).cloned())
    }

    /// Runs this node's loop until `stop`: heartbeats to the active controller, and the
    /// controller's duties while this node is it.
    pub async fn run(
        self: Arc<Self>,
        registration: Registration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let heartbeat = Duration::from_millis(self.settings.heartbeat_interval_ms.max(10));
        let tick = Duration::from_millis(200).min(heartbeat);
        // The controller's duties and the heartbeats run side by side: a heartbeat stuck
        // on a controller that stopped answering (paused) must not hold back the fencing
        // that the new controller owes it. Either can wait for a quorum that is gone (the
        // last broker of a stopping cluster): stopping never waits for them.
        let duties = async {
            loop {
                tokio::time::sleep(tick).await;
                self.tick().await;
            }
        };
        let beats = async {
            let mut failures = 0u32;
            loop {
                let sent = Instant::now();
                let next = tokio::time::Instant::now() + heartbeat;
                match self
                    .call_leader(ControlRequest::Heartbeat(registration.clone()))
                    .await
                {
                    Ok(index) => {
                        let _ = self.catch_up_to.set(index);
                        self.renew_lease(sent, index);
                        if failures > 0 {
                            tracing::info!(
                                failures,
                                "heartbeats reach the active controller again"
                            );
                        }
                        failures = 0;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures == 1 || failures.is_power_of_two() {
                            tracing::warn!(failures, error = %e, "heartbeat failed");
                        }
                    }
                }
                tokio::time::sleep_until(next).await;
            }
        };
        tokio::select! {
            _ = duties => {}
            _ = beats => {}
            _ = async {
                while !*stop.borrow_and_update() {
                    if stop.changed().await.is_err() {
                        return;
                    }
                }
            } => {}
        }
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum did not stop cleanly");
        }
    }
}

/// The address this node's Raft listener should bind: its own entry in the voters, or
/// the configured one.
pub fn raft_listen_addr(
    node_id: i32,
    voters: &BTreeMap<NodeId, String>,
    configured: Option<SocketAddr>,
) -> Result<String, String> {
    if let Some(addr) = configured {
        return Ok(addr.to_string());
    }
    voters.get(&(node_id as NodeId)).cloned().ok_or_else(|| {
        format!("node {node_id} is not among --controllers, so it needs its own address for the metadata log: give it with --controller-listener HOST:PORT")
    })
}

impl ControlService for ClusterNode {
    fn serve_control(
        &self,
        request: ControlRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, ControlError>> + Send + '_>>
    {
        Box::pin(self.handle(request))
    }

    fn is_configured_voter(&self, id: NodeId) -> bool {
        ClusterNode::is_configured_voter(self, id)
    }
}

#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod tests;
