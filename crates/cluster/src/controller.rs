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
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::image::{MetadataImage, MetadataRecord};
use crate::raft::{LogStore, NodeId, Raft, StateMachine};
use crate::raft_net::{self, Request, Response, TcpNetwork};

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
        tokio::spawn(raft_net::serve(
            listener,
            raft.clone(),
            Some(node.clone()),
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

    /// Commits `records` through the active controller and waits until they are applied
    /// here too, so the caller reads its own write.
    pub async fn write(&self, records: Vec<MetadataRecord>) -> Result<(), ControlError> {
        let index = self.call_leader(ControlRequest::Write(records)).await?;
        self.await_applied(index).await
    }

    /// Asks the active controller to change a partition's in-sync replicas.
    pub async fn alter_isr(
        &self,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
    ) -> Result<(), ControlError> {
        let index = self
            .call_leader(ControlRequest::AlterIsr {
                node_id: self.node_id,
                topic_id,
                partition,
                leader_epoch,
                isr,
            })
            .await?;
        self.await_applied(index).await
    }

    /// Moves this broker's leaderships to other in-sync replicas before it stops.
    /// Retries while no controller answers (one may be being elected: the previous one
    /// may have just stopped); the caller bounds the wait.
    pub async fn controlled_shutdown(&self) -> Result<(), ControlError> {
        loop {
            let asked = self
                .call_leader(ControlRequest::ControlledShutdown {
                    node_id: self.node_id,
                    incarnation: self.incarnation,
                })
                .await;
            match asked {
                Ok(index) => return self.await_applied(index).await,
                Err(ControlError::Unavailable(e)) => {
                    tracing::debug!(error = %e, "controlled shutdown: no controller yet; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn await_applied(&self, index: u64) -> Result<(), ControlError> {
        self.raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(index), "own write applied")
            .await
            .map(|_| ())
            .map_err(|e| {
                ControlError::Unavailable(format!("waiting for the write to apply here: {e}"))
            })
    }

    /// Sends `request` to the active controller, following redirects; tries every voter
    /// before giving up.
    async fn call_leader(&self, request: ControlRequest) -> Result<u64, ControlError> {
        let voters: Vec<NodeId> = self.voters.keys().copied().collect();
        // A paused controller accepts connections and never answers: a heartbeat waits
        // for it a third of a session at most, then tries the others, so that a new
        // controller hears from every live broker well within the session.
        let answer_within = match request {
            ControlRequest::Heartbeat(_) => {
                Duration::from_millis((self.settings.session_timeout_ms / 3).clamp(200, 15_000))
            }
            _ => Duration::from_secs(15),
        };
        let mut target = self.leader();
        let mut last = String::from("no controller known yet");
        // A heartbeat goes round the voters a few times; any other request (a metadata
        // change) waits up to its answer time for a controller, through an election.
        let until = tokio::time::Instant::now()
            + match request {
                ControlRequest::Heartbeat(_) => Duration::ZERO,
                _ => answer_within,
            };
        let tries = voters.len() * 3 + 2;
        for attempt in 0.. {
            if attempt >= tries && tokio::time::Instant::now() >= until {
                break;
            }
            let id = match target.take() {
                Some(id) => id,
                None => voters[attempt % voters.len()],
            };
            let result = if id == self.node_id as NodeId {
                // Bounded as a remote call is: this node's own duties may hold `decide`
                // while they wait for a quorum that is gone.
                tokio::time::timeout(answer_within, self.handle(request.clone()))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ControlError::Unavailable(
                            "this node did not answer in time".into(),
                        ))
                    })
            } else {
                match self.address_of(id) {
                    Some(addr) => {
                        rpc(self.transport.as_ref(), &addr, &request, answer_within).await
                    }
                    None => Err(ControlError::Unavailable(format!(
                        "no address for node {id}"
                    ))),
                }
            };
            match result {
                Err(ControlError::NotLeader { leader }) => {
                    last = format!("node {id} is not the active controller");
                    target = leader.filter(|&l| l != id);
                    if target.is_none() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Err(ControlError::Unavailable(e)) => {
                    last = format!("node {id}: {e}");
                    // The metadata quorum may have elected another controller meanwhile
                    // (this one crashed): ask it next rather than the next in turn.
                    target = self.leader().filter(|&l| l != id);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
        Err(ControlError::Unavailable(last))
    }

    /// Serves one request as the active controller (or says who is).
    pub(crate) async fn handle(&self, request: ControlRequest) -> Result<u64, ControlError> {
        if !self.is_leader() {
            return Err(ControlError::NotLeader {
                leader: self.leader(),
            });
        }
        match request {
            ControlRequest::Write(records) => {
                // Brokers build topic creations from their own image, which may lag:
                // checked here, against the image every earlier decision was applied to,
                // so two creators racing never commit a topic twice.
                let (_turn, image) = self.decision_turn().await?;
                let mut names = Vec::new();
                for r in all_records(&records) {
                    if let MetadataRecord::Topic { name, topic_id, .. } = r {
                        let taken = image.topic(name).is_some_and(|t| t.topic_id != *topic_id);
                        if taken || names.contains(&name) {
                            return Err(ControlError::TopicExists(name.clone()));
                        }
                        names.push(name);
                    }
                }
                self.propose(records).await
            }
            ControlRequest::Heartbeat(reg) => self.on_heartbeat(reg).await,
            ControlRequest::AlterIsr {
                node_id,
                topic_id,
                partition,
                leader_epoch,
                isr,
            } => {
                self.on_alter_isr(node_id, topic_id, partition, leader_epoch, isr)
                    .await
            }
            ControlRequest::ControlledShutdown {
                node_id,
                incarnation,
            } => {
                self.shutting_down
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node_id, (incarnation, Instant::now()));
                self.stopped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node_id, incarnation);
                let (_turn, image) = self.decision_turn().await?;
                // Fenced at once, as Kafka fences a broker whose controlled shutdown
                // completed: it leaves every ISR, leads nothing, is not listed, and is
                // never chosen for a leadership while it finishes stopping.
                let mut records = Vec::new();
                if image.broker_alive(node_id) {
                    tracing::info!(
                        node_id,
                        "controlled shutdown: fencing the broker and moving its leaderships"
                    );
                    records.push(MetadataRecord::FenceBroker {
                        node_id,
                        fenced: true,
                    });
                }
                let records = self.with_elections(image, records, false, &[node_id]);
                self.propose(records).await
            }
        }
    }

    /// This node's turn to decide, and the image to decide from: leadership confirmed with
    /// a quorum and every entry committed before applied, then the decision lock taken. A
    /// controller that has just taken over (after a restart, with its state machine still
    /// replaying the log) must not decide from an older image: it would not know a
    /// broker's last incarnation, an ISR change or a fencing, and could undo them. The
    /// quorum read runs before the lock, so concurrent requests (every broker's
    /// heartbeat) do not queue one round trip each behind it; what other decisions commit
    /// meanwhile is applied here before they release the lock, so the image read under it
    /// is as fresh.
    async fn decision_turn(
        &self,
    ) -> Result<(tokio::sync::MutexGuard<'_, ()>, MetadataImage), ControlError> {
        self.raft
            .ensure_linearizable()
            .await
            .map_err(|_| ControlError::NotLeader {
                leader: self.leader().filter(|&l| l != self.node_id as NodeId),
            })?;
        let turn = self.decide.lock().await;
        Ok((turn, self.machine.image()))
    }

    /// Commits records as one entry; returns its index (or the applied index when there
    /// is nothing to commit).
    async fn propose(&self, mut records: Vec<MetadataRecord>) -> Result<u64, ControlError> {
        let record = match records.len() {
            0 => return Ok(self.machine.applied_index().unwrap_or(0)),
            1 => records.remove(0),
            _ => MetadataRecord::Batch { records },
        };
        match self.raft.client_write(record).await {
            Ok(r) => Ok(r.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ControlError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(ControlError::Unavailable(e.to_string())),
        }
    }

    async fn on_heartbeat(&self, reg: Registration) -> Result<u64, ControlError> {
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reg.node_id, Instant::now());
        let id = reg.node_id as NodeId;
        if !self.voters.contains_key(&id) {
            let known = self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&id)
                .is_some_and(|n| n.addr == reg.raft_addr);
            if !known {
                tracing::info!(node_id = reg.node_id, addr = %reg.raft_addr, "adding broker as a learner of the metadata log");
                let raft = self.raft.clone();
                let node = BasicNode::new(&reg.raft_addr);
                tokio::spawn(async move {
                    if let Err(e) = raft.add_learner(id, node, false).await {
                        tracing::warn!(node_id = id, error = %e, "could not add learner");
                    }
                });
            }
        }
        let (_turn, image) = self.decision_turn().await?;
        let mut records = Vec::new();
        // The incarnation in the image is the one every controller knows (this one may
        // have just taken over); the remembered one covers registrations written before
        // the image kept it.
        let remembered = self
            .incarnations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reg.node_id, reg.incarnation);
        let restarted = match image.broker(reg.node_id).map(|b| b.incarnation) {
            Some(recorded) if recorded != 0 => recorded != reg.incarnation,
            _ => remembered.is_some_and(|previous| previous != reg.incarnation),
        };
        if restarted && image.broker_alive(reg.node_id) {
            // It restarted within its session: what it led or held in sync may have lost
            // its unflushed tail, so it is fenced first (its leaderships move, it leaves
            // the ISRs) and unfenced by its next heartbeat, to catch up as a follower.
            tracing::info!(
                node_id = reg.node_id,
                "broker restarted within its session; fencing its previous incarnation"
            );
            // The new incarnation is recorded with the fencing, so that the next
            // heartbeat unfences it and the broker (which waits for its own incarnation,
            // unfenced, before it takes any partition role) starts as a follower.
            records.push(register(&reg));
            records.push(MetadataRecord::FenceBroker {
                node_id: reg.node_id,
                fenced: true,
            });
            if reg.unclean_start {
                records.extend(leave_isrs(&image, reg.node_id));
            }
            let records = self.with_elections(image, records, false, &[]);
            return self.propose(records).await;
        }
        if restarted && reg.unclean_start {
            // Fenced already (its session ran out while it was down), but it may still be
            // in the ISR of a partition that has no leader, where it would be elected on
            // return with the log it lost the tail of.
            records.extend(leave_isrs(&image, reg.node_id));
        }
        let stopping = {
            let mut stopping = self.shutting_down.lock().unwrap_or_else(|p| p.into_inner());
            let still = stopping.get(&reg.node_id).is_some_and(|&(inc, at)| {
                inc == reg.incarnation
                    && at.elapsed() < Duration::from_millis(self.settings.session_timeout_ms)
            });
            if !still {
                stopping.remove(&reg.node_id);
            }
            let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
            match stopped.get(&reg.node_id) {
                Some(&inc) if inc == reg.incarnation => true,
                Some(_) => {
                    stopped.remove(&reg.node_id);
                    still
                }
                None => still,
            }
        };
        match image.broker(reg.node_id) {
            Some(b)
                if b.host == reg.host
                    && b.port == reg.port
                    && b.rack == reg.rack
                    && b.endpoints == reg.endpoints
                    && b.incarnation == reg.incarnation =>
            {
                if b.fenced && !stopping {
                    records.push(MetadataRecord::FenceBroker {
                        node_id: reg.node_id,
                        fenced: false,
                    });
                }
            }
            _ => records.push(register(&reg)),
        }
        if records.is_empty() {
            // The answer renews the broker's lease, so a controller deposed while paused
            // or cut off must not give it: `decision_turn` confirmed leadership with a
            // quorum after this heartbeat arrived.
            return Ok(self.machine.applied_index().unwrap_or(0));
        }
        tracing::info!(node_id = reg.node_id, host = %reg.host, port = reg.port, "broker registered or back");
        let records = self.with_elections(image, records, false, &[]);
        self.propose(records).await
    }

    async fn on_alter_isr(
        &self,
        node_id: i32,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
    ) -> Result<u64, ControlError> {
        let (_turn, image) = self.decision_turn().await?;
        let Some(p) = image
            .topic_by_id(&topic_id)
            .and_then(|t| t.partitions.get(partition.max(0) as usize))
        else {
            return Err(ControlError::Refused(format!(
                "unknown partition {topic_id}-{partition}"
            )));
        };
        if p.leader != node_id || p.leader_epoch != leader_epoch {
            return Err(ControlError::Refused(format!(
                "node {node_id} at epoch {leader_epoch} does not lead partition {partition} (leader {} at epoch {})",
                p.leader, p.leader_epoch
            )));
        }
        let mut isr: Vec<i32> = p
            .replicas
            .iter()
            .copied()
            .filter(|r| isr.contains(r) && (p.isr.contains(r) || image.broker_alive(*r)))
            .collect();
        if !isr.contains(&node_id) {
            // The leader leaves its own ISR only when its replica is damaged: the
            // leadership moves to the first live member of the current ISR it names.
            let successor = isr
                .iter()
                .copied()
                .find(|&b| p.isr.contains(&b) && image.broker_alive(b));
            let Some(successor) = successor else {
                return Err(ControlError::Refused(format!(
                    "node {node_id} cannot leave the ISR of partition {partition}: no other live in-sync replica"
                )));
            };
            isr.retain(|&b| p.isr.contains(&b));
            tracing::warn!(%topic_id, partition, from = node_id, to = successor, "a damaged leader hands its partition over");
            return self
                .propose(vec![MetadataRecord::Partition {
                    topic_id,
                    partition,
                    replicas: p.replicas.clone(),
                    leader: successor,
                    leader_epoch: p.leader_epoch + 1,
                    isr: Some(isr),
                }])
                .await;
        }
        if isr == p.isr {
            return Ok(self.machine.applied_index().unwrap_or(0));
        }
        tracing::info!(%topic_id, partition, from = ?p.isr, to = ?isr, "in-sync replicas changed");
        self.propose(vec![MetadataRecord::Partition {
            topic_id,
            partition,
            replicas: p.replicas.clone(),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            isr: Some(isr),
        }])
        .await
    }

    /// The active controller's periodic duties: fence silent brokers, elect leaders where
    /// there are none, and restore preferred leaders.
    async fn tick(&self) {
        if !self.is_leader() {
            *self.leading_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return;
        }
        let now = Instant::now();
        let since = *self
            .leading_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(now);
        let rebalance = self.settings.auto_leader_rebalance && {
            let mut last = self
                .last_rebalance
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| {
                t.elapsed() >= Duration::from_millis(self.settings.leader_imbalance_check_ms)
            });
            if due {
                *last = Some(now);
            }
            due
        };
        let Ok((_turn, image)) = self.decision_turn().await else {
            return;
        };
        let timeout = Duration::from_millis(self.settings.session_timeout_ms);
        let mut records = Vec::new();
        if image.cluster_id().is_none() {
            // Kafka's form: a UUID in URL-safe base64 without padding (22 characters).
            let id = Uuid::new_v4().simple().to_string();
            records.push(MetadataRecord::ClusterId {
                cluster_id: id[..22].to_string(),
            });
        }
        // A broker silent for one and a half heartbeats is knocked at (see `Knocks`).
        let knock_after =
            Duration::from_millis(self.settings.heartbeat_interval_ms.saturating_mul(3) / 2);
        let mut knock = Vec::new();
        {
            let seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            let knocks = self.knocks.lock().unwrap_or_else(|p| p.into_inner());
            // The active controller's own broker is alive: it is this process.
            for b in image
                .brokers()
                .filter(|b| !b.fenced && b.node_id != self.node_id)
            {
                // A new controller gives every broker a full session from its election.
                let last = seen.get(&b.node_id).copied().unwrap_or(since).max(since);
                let silent_ms = now.duration_since(last).as_millis() as u64;
                let gone = knocks.refused.get(&b.node_id).is_some_and(|&at| at > last);
                if now.duration_since(last) > timeout {
                    tracing::warn!(
                        node_id = b.node_id,
                        silent_ms,
                        "broker missed its session timeout; fencing it"
                    );
                } else if gone && now.duration_since(last) > knock_after {
                    tracing::warn!(
                        node_id = b.node_id,
                        silent_ms,
                        "broker stopped heartbeating and its metadata-log port refuses \
                         connections: its process is gone; fencing it without waiting for \
                         its session timeout"
                    );
                } else {
                    if now.duration_since(last) > knock_after
                        && knocks
                            .sent
                            .get(&b.node_id)
                            .is_none_or(|&at| now.duration_since(at) >= KNOCK_EVERY)
                    {
                        knock.push(b.node_id);
                    }
                    continue;
                }
                records.push(MetadataRecord::FenceBroker {
                    node_id: b.node_id,
                    fenced: true,
                });
            }
        }
        self.knock_at(&knock);
        let avoid: Vec<i32> = {
            let mut stopping = self.shutting_down.lock().unwrap_or_else(|p| p.into_inner());
            stopping.retain(|_, (_, at)| now.duration_since(*at) < timeout);
            stopping.keys().copied().collect()
        };
        let mut records = self.with_elections(image.clone(), records, rebalance, &avoid);
        let mut after = image;
        for r in &records {
            after.apply(r);
        }
        records.extend(finish_reassignments(&after));
        if records.is_empty() {
            return;
        }
        if let Err(e) = self.propose(records).await {
            tracing::warn!(error = %e, "controller decision not committed");
        }
    }

    /// Knocks at the metadata-log port of each broker in `ids` in the background; a
    /// refusal is remembered in `knocks` for the next tick (see [`Knocks`]).
    fn knock_at(&self, ids: &[i32]) {
        if ids.is_empty() {
            return;
        }
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let now = Instant::now();
        for &id in ids {
            let Some(addr) = membership
                .membership()
                .get_node(&(id as NodeId))
                .map(|n| n.addr.clone())
            else {
                continue;
            };
            self.knocks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sent
                .insert(id, now);
            let knocks = self.knocks.clone();
            tokio::spawn(async move {
                let answer =
                    tokio::time::timeout(KNOCK_WAIT, crate::net::TcpStream::connect(&addr)).await;
                if let Ok(Err(e)) = answer {
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        knocks
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .refused
                            .insert(id, Instant::now());
                    }
                }
            });
        }
    }

    /// `records`, followed by the elections and ISR changes the image calls for once
    /// they are applied.
    fn with_elections(
        &self,
        mut image: MetadataImage,
        mut records: Vec<MetadataRecord>,
        rebalance: bool,
        avoid: &[i32],
    ) -> Vec<MetadataRecord> {
        for r in &records {
            image.apply(r);
        }
        records.extend(elect(
            &image,
            self.settings.unclean_leader_election,
            rebalance,
            avoid,
        ));
        records
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

/// `records` with every batch flattened.
fn all_records(records: &[MetadataRecord]) -> Vec<&MetadataRecord> {
    let mut out = Vec::new();
    for r in records {
        match r {
            MetadataRecord::Batch { records } => out.extend(all_records(records)),
            other => out.push(other),
        }
    }
    out
}

/// Leadership and ISR changes that `image` calls for: partitions whose leader is gone get
/// one from their live in-sync replicas (in assignment order) with the next leader epoch;
/// fenced brokers leave the ISR of partitions that keep a leader; with `rebalance`, the
/// preferred (first) replica takes back leadership when it is alive and in sync. Brokers
/// in `avoid` (stopping) lead nothing.
/// Takes `node` (restarted after a crash: its logs may have lost what was not fsynced) out
/// of every ISR that has other members; a partition it led loses its leader, for `elect`
/// to choose one of the others. Where it is the last member it stays: the partition then
/// waits for it, as Kafka does, and may have lost records (docs/reliability.md).
pub fn leave_isrs(image: &MetadataImage, node: i32) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for topic in image.topics() {
        for (index, p) in topic.partitions.iter().enumerate() {
            if !p.isr.contains(&node) || p.isr.len() < 2 {
                continue;
            }
            let isr: Vec<i32> = p.isr.iter().copied().filter(|&b| b != node).collect();
            let (leader, leader_epoch) = if p.leader == node {
                (-1, p.leader_epoch + 1)
            } else {
                (p.leader, p.leader_epoch)
            };
            tracing::info!(topic = %topic.name, partition = index, node_id = node, ?isr, "a broker that restarted after a crash leaves the in-sync replicas until it catches up");
            out.push(MetadataRecord::Partition {
                topic_id: topic.topic_id,
                partition: index as i32,
                replicas: p.replicas.clone(),
                leader,
                leader_epoch,
                isr: Some(isr),
            });
        }
    }
    out
}

pub fn elect(
    image: &MetadataImage,
    unclean_default: bool,
    rebalance: bool,
    avoid: &[i32],
) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    let usable = |b: i32| image.broker_alive(b) && !avoid.contains(&b);
    for topic in image.topics() {
        let unclean = topic
            .configs
            .get("unclean.leader.election.enable")
            .map_or(unclean_default, |v| v == "true");
        for (index, p) in topic.partitions.iter().enumerate() {
            let alive_isr: Vec<i32> = p
                .isr
                .iter()
                .copied()
                .filter(|&b| image.broker_alive(b))
                .collect();
            let (leader, isr) = if p.leader < 0 || !usable(p.leader) {
                match p
                    .replicas
                    .iter()
                    .copied()
                    .find(|&r| usable(r) && alive_isr.contains(&r))
                {
                    Some(l) => (l, alive_isr),
                    None => match p
                        .replicas
                        .iter()
                        .copied()
                        .find(|&r| usable(r))
                        .filter(|_| unclean)
                    {
                        Some(l) => {
                            tracing::warn!(topic = %topic.name, partition = index, leader = l, "unclean leader election: records may be lost");
                            (l, vec![l])
                        }
                        None if p.leader >= 0 && image.broker_alive(p.leader) => {
                            // Stopping, but nobody else can take over: it keeps leading.
                            (p.leader, p.isr.clone())
                        }
                        // Nobody to lead: keep the last in-sync replicas, so one of them
                        // can lead when it returns.
                        None => (-1, p.isr.clone()),
                    },
                }
            } else if rebalance
                && p.replicas.first().is_some_and(|&pref| {
                    pref != p.leader && usable(pref) && alive_isr.contains(&pref)
                })
            {
                (p.replicas[0], alive_isr)
            } else if !alive_isr.is_empty() && alive_isr.len() < p.isr.len() {
                (p.leader, alive_isr)
            } else {
                continue;
            };
            let epoch = if leader != p.leader {
                p.leader_epoch + 1
            } else {
                p.leader_epoch
            };
            if leader == p.leader && isr == p.isr {
                continue;
            }
            if leader != p.leader {
                tracing::info!(topic = %topic.name, partition = index, from = p.leader, to = leader, leader_epoch = epoch, "partition leader elected");
            }
            out.push(MetadataRecord::Partition {
                topic_id: topic.topic_id,
                partition: index as i32,
                replicas: p.replicas.clone(),
                leader,
                leader_epoch: epoch,
                isr: Some(isr),
            });
        }
    }
    out
}

/// Moves whose target replicas are all in sync end: the partition keeps only its target
/// replicas (in the target's order, so the first is the preferred leader), and a leader
/// outside the target hands over to the first target replica in sync.
pub fn finish_reassignments(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for topic in image.topics() {
        for (index, p) in topic.partitions.iter().enumerate() {
            let Some((target, _)) = &p.reassignment else {
                continue;
            };
            if !target.iter().all(|r| p.isr.contains(r)) {
                continue;
            }
            let isr: Vec<i32> = p
                .isr
                .iter()
                .copied()
                .filter(|r| target.contains(r))
                .collect();
            let leader = if target.contains(&p.leader) {
                p.leader
            } else {
                target
                    .iter()
                    .copied()
                    .find(|&r| isr.contains(&r) && image.broker_alive(r))
                    .unwrap_or(-1)
            };
            tracing::info!(topic = %topic.name, partition = index, replicas = ?target, leader, "reassignment complete");
            out.push(MetadataRecord::Partition {
                topic_id: topic.topic_id,
                partition: index as i32,
                replicas: target.clone(),
                leader,
                leader_epoch: if leader != p.leader {
                    p.leader_epoch + 1
                } else {
                    p.leader_epoch
                },
                isr: Some(isr),
            });
            out.push(MetadataRecord::Reassign {
                topic_id: topic.topic_id,
                partition: index as i32,
                target: None,
                original: Vec::new(),
            });
        }
    }
    out
}

async fn rpc(
    transport: &dyn raft_net::Transport,
    addr: &str,
    request: &ControlRequest,
    answer_within: Duration,
) -> Result<u64, ControlError> {
    let unavailable = |e: std::io::Error| ControlError::Unavailable(format!("{addr}: {e}"));
    // A controller that crashed with its machine never answers a connection either: the
    // whole call, connecting included, is bounded by `answer_within`.
    let mut stream = transport
        .connect(addr, answer_within.min(Duration::from_secs(2)))
        .await
        .map_err(unavailable)?;
    let exchange = async {
        raft_net::write_frame(&mut stream, &Request::Control(request.clone())).await?;
        raft_net::read_frame::<Response>(&mut stream).await
    };
    match tokio::time::timeout(answer_within, exchange).await {
        Ok(Ok(Response::Control(r))) => r,
        Ok(Ok(_)) => Err(ControlError::Unavailable(format!(
            "{addr} answered another RPC"
        ))),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(unavailable(std::io::ErrorKind::TimedOut.into())),
    }
}

/// The address this node's Raft listener should bind: its own entry in the voters, or
/// The record that registers `reg` as it is now (address, listeners, incarnation), unfenced.
fn register(reg: &Registration) -> MetadataRecord {
    MetadataRecord::RegisterBroker {
        node_id: reg.node_id,
        host: reg.host.clone(),
        port: reg.port,
        rack: reg.rack.clone(),
        endpoints: reg.endpoints.clone(),
        incarnation: reg.incarnation,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MetadataRecord as R;

    fn image_with(
        brokers: &[(i32, bool)],
        replicas: Vec<i32>,
        leader: i32,
        isr: Vec<i32>,
    ) -> (MetadataImage, Uuid) {
        let mut image = MetadataImage::default();
        for &(id, fenced) in brokers {
            image.apply(&R::RegisterBroker {
                node_id: id,
                host: "h".into(),
                port: 1,
                rack: None,
                endpoints: Vec::new(),
                incarnation: 0,
            });
            image.apply(&R::FenceBroker {
                node_id: id,
                fenced,
            });
        }
        let topic_id = Uuid::new_v4();
        image.apply(&R::Topic {
            name: "t".into(),
            topic_id,
            configs: BTreeMap::new(),
        });
        image.apply(&R::Partition {
            topic_id,
            partition: 0,
            replicas,
            leader,
            leader_epoch: 4,
            isr: Some(isr),
        });
        (image, topic_id)
    }

    fn decided(records: &[MetadataRecord]) -> Option<(i32, i32, Vec<i32>)> {
        records.iter().find_map(|r| match r {
            R::Partition {
                leader,
                leader_epoch,
                isr,
                ..
            } => Some((*leader, *leader_epoch, isr.clone().unwrap_or_default())),
            _ => None,
        })
    }

    #[test]
    fn a_fenced_leader_is_replaced_by_the_first_live_in_sync_replica() {
        let (image, _) = image_with(
            &[(1, true), (2, false), (3, false)],
            vec![1, 2, 3],
            1,
            vec![1, 3],
        );
        assert_eq!(
            decided(&elect(&image, false, false, &[])),
            Some((3, 5, vec![3]))
        );
    }

    #[test]
    fn a_broker_back_from_a_crash_is_not_elected_from_a_stale_isr() {
        // Every replica was fenced at once (the partition kept its ISR, leaderless); the
        // one that crashed comes back first: it leaves the ISR, and a replica that did not
        // crash is elected when it returns.
        let (image, _) = image_with(
            &[(1, false), (2, true), (3, true)],
            vec![1, 2, 3],
            -1,
            vec![1, 2, 3],
        );
        let mut after = image.clone();
        for r in leave_isrs(&image, 1) {
            after.apply(&r);
        }
        assert_eq!(decided(&leave_isrs(&image, 1)), Some((-1, 4, vec![2, 3])));
        assert_eq!(
            decided(&elect(&after, false, false, &[])),
            None,
            "nobody in sync is alive yet"
        );
        after.apply(&R::FenceBroker {
            node_id: 2,
            fenced: false,
        });
        assert_eq!(
            decided(&elect(&after, false, false, &[])),
            Some((2, 5, vec![2]))
        );
        // The last member of an ISR stays: the partition waits for it.
        let (alone, _) = image_with(&[(1, false)], vec![1, 2], -1, vec![1]);
        assert!(leave_isrs(&alone, 1).is_empty());
    }

    #[test]
    fn no_unclean_election_unless_allowed() {
        let (image, _) = image_with(&[(1, true), (2, false)], vec![1, 2], 1, vec![1]);
        assert_eq!(
            decided(&elect(&image, false, false, &[])),
            Some((-1, 5, vec![1]))
        );
        assert_eq!(
            decided(&elect(&image, true, false, &[])),
            Some((2, 5, vec![2]))
        );
    }

    #[test]
    fn the_preferred_leader_comes_back_only_when_in_sync() {
        let (image, _) = image_with(&[(1, false), (2, false)], vec![1, 2], 2, vec![2]);
        assert_eq!(decided(&elect(&image, false, true, &[])), None);
        let (image, _) = image_with(&[(1, false), (2, false)], vec![1, 2], 2, vec![2, 1]);
        assert_eq!(
            decided(&elect(&image, false, true, &[])),
            Some((1, 5, vec![2, 1]))
        );
        assert_eq!(decided(&elect(&image, false, false, &[])), None);
    }

    #[test]
    fn a_stopping_broker_hands_its_leadership_over() {
        let (image, _) = image_with(&[(1, false), (2, false)], vec![1, 2], 1, vec![1, 2]);
        assert_eq!(
            decided(&elect(&image, false, false, &[1])),
            Some((2, 5, vec![1, 2]))
        );
        let (image, _) = image_with(&[(1, false), (2, false)], vec![1, 2], 1, vec![1]);
        assert_eq!(
            decided(&elect(&image, false, false, &[1])),
            None,
            "nobody else in sync"
        );
    }

    #[test]
    fn a_move_ends_once_every_target_replica_is_in_sync() {
        let (mut image, topic_id) = image_with(
            &[(1, false), (2, false), (3, false)],
            vec![3, 1, 2],
            1,
            vec![1, 2],
        );
        image.apply(&R::Reassign {
            topic_id,
            partition: 0,
            target: Some(vec![3, 2]),
            original: vec![1, 2],
        });
        assert!(
            finish_reassignments(&image).is_empty(),
            "3 is not in sync yet"
        );
        image.apply(&R::Partition {
            topic_id,
            partition: 0,
            replicas: vec![3, 1, 2],
            leader: 1,
            leader_epoch: 4,
            isr: Some(vec![1, 2, 3]),
        });
        let records = finish_reassignments(&image);
        assert_eq!(
            decided(&records),
            Some((3, 5, vec![2, 3])),
            "leader 1 hands over to 3"
        );
        for r in &records {
            image.apply(r);
        }
        let p = &image.topic("t").expect("topic").partitions[0];
        assert_eq!(
            (p.replicas.clone(), p.reassignment.clone()),
            (vec![3, 2], None)
        );
    }

    #[test]
    fn controllers_parse_and_bad_specs_say_why() {
        let v = parse_voters("1@127.0.0.1:9001, 2@127.0.0.1:9002").expect("parses");
        assert_eq!(v.get(&2).map(String::as_str), Some("127.0.0.1:9002"));
        assert!(parse_voters("1@a:1,1@b:2")
            .expect_err("dup")
            .contains("twice"));
        assert!(parse_voters("x@a:1")
            .expect_err("id")
            .contains("not a node id"));
        assert!(parse_voters("1@a").expect_err("port").contains("no port"));
    }
}
