//! The metadata log's Raft RPCs between controllers over TCP: each message is a frame
//! `[length u32][JSON]`, one request then its response, on a connection the sender keeps
//! open. Input from the network is bounded and checked: a bad frame closes the connection
//! with a log line, and the node keeps serving.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::net::{TcpListener, TcpStream};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::sync::Arc;

use crate::control::{ControlError, ControlRequest, ControlService};
use crate::raft::{NodeId, Raft, TypeConfig};

/// Largest frame accepted either way (snapshots of the metadata image included).
const FRAME_MAX_BYTES: usize = 64 << 20;

#[derive(Serialize, Deserialize)]
pub(crate) enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A request to the active controller (see `controller/client.rs`).
    Control(ControlRequest),
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Response {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The committed log index, or why not (`NotLeader` and the leader to ask instead).
    Control(Result<u64, ControlError>),
}

/// A byte stream to a peer: plain TCP, or TLS over it.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync> Stream for T {}

pub type BoxStream = Box<dyn Stream>;
type IoFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<BoxStream>> + Send + 'a>>;

/// How the metadata log's connections are made and accepted: plain TCP by default; the
/// broker supplies TLS when its controller listener is SSL.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Connects to `addr` (HOST:PORT) within `timeout`.
    fn connect<'a>(&'a self, addr: &'a str, timeout: Duration) -> IoFuture<'a>;
    /// Finishes accepting `tcp` (a TLS handshake, or nothing).
    fn accept(&self, tcp: TcpStream) -> IoFuture<'static>;
}

/// Plain TCP.
#[derive(Debug, Default)]
pub struct PlainTcp;

impl Transport for PlainTcp {
    fn connect<'a>(&'a self, addr: &'a str, timeout: Duration) -> IoFuture<'a> {
        Box::pin(async move {
            let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream) as BoxStream)
        })
    }
    fn accept(&self, tcp: TcpStream) -> IoFuture<'static> {
        Box::pin(async move {
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp) as BoxStream)
        })
    }
}

pub(crate) async fn write_frame<T: Serialize>(
    stream: &mut BoxStream,
    value: &T,
) -> std::io::Result<()> {
    let json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    if json.len() > FRAME_MAX_BYTES {
        return Err(std::io::Error::other(format!(
            "frame of {} bytes is too large",
            json.len()
        )));
    }
    let mut buf = Vec::with_capacity(json.len() + 4);
    buf.extend_from_slice(&(json.len() as u32).to_be_bytes());
    buf.extend_from_slice(&json);
    stream.write_all(&buf).await
}

pub(crate) async fn read_frame<T: for<'de> Deserialize<'de>>(
    stream: &mut BoxStream,
) -> std::io::Result<T> {
    let len = stream.read_u32().await? as usize;
    if len > FRAME_MAX_BYTES {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes refused"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| std::io::Error::other(format!("bad frame: {e}")))
}

/// Decodes one request frame's body as the server does; for the fuzz target.
pub fn decode_request(body: &[u8]) -> bool {
    serde_json::from_slice::<Request>(body).is_ok()
}

/// Serves Raft RPCs for `raft` on `listener` until the task is dropped, and, with `node`,
/// the requests brokers send the active controller.
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    node: Option<Arc<dyn ControlService>>,
    transport: Arc<dyn Transport>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "raft listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let raft = raft.clone();
        let node = node.clone();
        let accepting = transport.accept(tcp);
        tokio::spawn(async move {
            let mut stream = match tokio::time::timeout(Duration::from_secs(10), accepting).await {
                Ok(Ok(s)) => s,
                // Closed before a byte of its handshake: the active controller knocking
                // (see `controller::Knocks`) or a port check, not a refused peer.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    tracing::debug!(%peer, "metadata-log connection closed before its handshake");
                    return;
                }
                Ok(Err(e)) => {
                    let kind = if e.kind() == std::io::ErrorKind::PermissionDenied {
                        "not a broker"
                    } else {
                        "handshake"
                    };
                    refused(peer, kind, &e.to_string());
                    return;
                }
                Err(_) => {
                    refused(peer, "handshake", "the handshake timed out");
                    return;
                }
            };
            loop {
                let request: Request = match read_frame(&mut stream).await {
                    Ok(r) => r,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "raft connection closed");
                        return;
                    }
                };
                // Raft's own RPCs come from the leader or a candidate, which must be a
                // voter: a peer claiming anything else is refused and the connection closed.
                let sender = match &request {
                    Request::Append(r) => Some(r.vote.leader_id().voted_for()),
                    Request::Vote(r) => Some(r.vote.leader_id().voted_for()),
                    Request::Snapshot(r) => Some(r.vote.leader_id().voted_for()),
                    Request::Control(_) => None,
                };
                if let Some(sender) = sender {
                    if !is_voter(&raft, node.as_deref(), sender) {
                        refused(peer, "not a voter", &format!(
                            "a Raft request from node {sender:?}, which is not a voter of the metadata log"
                        ));
                        return;
                    }
                }
                let response = match request {
                    Request::Append(r) => Response::Append(raft.append_entries(r).await),
                    Request::Vote(r) => Response::Vote(raft.vote(r).await),
                    Request::Snapshot(r) => Response::Snapshot(raft.install_snapshot(r).await),
                    Request::Control(r) => match &node {
                        Some(node) => Response::Control(node.serve_control(r).await),
                        None => {
                            tracing::warn!(%peer, "control request on a node without a controller; closing");
                            return;
                        }
                    },
                };
                if let Err(e) = write_frame(&mut stream, &response).await {
                    tracing::debug!(%peer, error = %e, "raft connection closed");
                    return;
                }
            }
        });
    }
}

/// Whether node `id` is a voter of the metadata log: in its membership, or (before the
/// membership is initialized) among the configured voters.
fn is_voter(raft: &Raft, node: Option<&dyn ControlService>, id: Option<NodeId>) -> bool {
    let Some(id) = id else {
        return false;
    };
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == id)
        || node.is_some_and(|n| n.is_configured_voter(id))
}

/// Logs a refused metadata-log peer: the first refusal of a kind from an address at once,
/// then at most one line every 10 s with how many were refused meanwhile, so that a flood
/// cannot fill the log (the table is emptied when it reaches 1,024 entries).
fn refused(peer: SocketAddr, kind: &'static str, why: &str) {
    type Seen = HashMap<(std::net::IpAddr, &'static str), (tokio::time::Instant, u64)>;
    static SEEN: std::sync::Mutex<Option<Seen>> = std::sync::Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let seen = seen.get_or_insert_with(HashMap::new);
    if seen.len() >= 1024 {
        seen.clear();
    }
    let now = tokio::time::Instant::now();
    match seen.get_mut(&(peer.ip(), kind)) {
        Some((at, quiet)) if now.duration_since(*at) < Duration::from_secs(10) => *quiet += 1,
        entry => {
            let suppressed = entry.map_or(0, |(_, n)| *n);
            tracing::warn!(%peer, suppressed_since_last_line = suppressed, "metadata-log connection refused: {why}");
            seen.insert((peer.ip(), kind), (now, 0));
        }
    }
}

/// Opens connections to the other controllers, at the address in their [`BasicNode`].
#[derive(Debug, Clone)]
pub struct TcpNetwork {
    pub transport: Arc<dyn Transport>,
}

impl Default for TcpNetwork {
    fn default() -> Self {
        TcpNetwork {
            transport: Arc::new(PlainTcp),
        }
    }
}

pub struct TcpConn {
    target: NodeId,
    address: String,
    /// The connection, held by the exchange in progress (see [`TcpConn::call`]).
    link: Arc<tokio::sync::Mutex<Link>>,
    transport: Arc<dyn Transport>,
}

impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = TcpConn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> TcpConn {
        TcpConn {
            target,
            address: node.addr.clone(),
            link: Default::default(),
            transport: self.transport.clone(),
        }
    }
}

/// A connection to a peer, and the answer to its last request if that came after its
/// caller had left.
#[derive(Default)]
struct Link {
    stream: Option<BoxStream>,
    late: Option<(Vec<u8>, Response)>,
}

/// Why a call failed before the peer answered.
#[derive(Debug)]
enum CallError {
    Unreachable(std::io::Error),
    Network(std::io::Error),
}

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, BasicNode, E> {
        match self {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

/// How long an exchange may take once its request has started out, whether or not its
/// caller still waits; past it the connection is dropped (a peer cut off by a network
/// partition never answers, and its connection would hold every later call).
const EXCHANGE_LIMIT: Duration = Duration::from_secs(2);

impl TcpConn {
    /// One request and its answer, as an exchange of its own that runs to its end even
    /// when the caller stops waiting. openraft drops a call when its time is up (for an
    /// append, the heartbeat interval): had the call written on the connection itself, a
    /// frame half written would be followed by the next request, glued to it, and an
    /// answer that came late would be read as the next call's. Instead the exchange
    /// finishes on its own and the next one waits for it, so each connection carries
    /// whole frames, one request in flight, each answer read by the exchange that sent its
    /// request; and an exchange whose caller left before its turn sends nothing. A late
    /// answer is kept for the same request sent again, which openraft does with an append
    /// that timed out: a follower slower than the timeout (decoding megabytes of entries
    /// on a busy machine) then still gets each append acknowledged, once, instead of
    /// decoding it again and again. A failed or overlong exchange drops the connection;
    /// the next one connects again.
    async fn call(&mut self, request: &Request, ttl: Duration) -> Result<Response, CallError> {
        let json = serde_json::to_vec(request)
            .map_err(|e| CallError::Network(std::io::Error::other(e)))?;
        if json.len() > FRAME_MAX_BYTES {
            return Err(CallError::Network(std::io::Error::other(format!(
                "frame of {} bytes is too large",
                json.len()
            ))));
        }
        let mut frame = Vec::with_capacity(json.len() + 4);
        frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
        frame.extend_from_slice(&json);
        let (answer, answered) = tokio::sync::oneshot::channel();
        let link = self.link.clone();
        let transport = self.transport.clone();
        let address = self.address.clone();
        let connect_within = ttl.min(EXCHANGE_LIMIT);
        tokio::spawn(async move {
            let mut link = link.lock().await;
            if answer.is_closed() {
                return;
            }
            // The same request again (openraft sends a timed-out append again as it was):
            // the answer that came late is its answer, as if the network had delayed it.
            match link.late.take() {
                Some((sent, late)) if sent == frame => {
                    if let Err(Ok(late)) = answer.send(Ok(late)) {
                        link.late = Some((sent, late));
                    }
                    return;
                }
                _ => {}
            }
            if link.stream.is_none() {
                match transport.connect(&address, connect_within).await {
                    Ok(stream) => link.stream = Some(stream),
                    Err(e) => {
                        let _ = answer.send(Err(CallError::Unreachable(e)));
                        return;
                    }
                }
            }
            let Some(stream) = link.stream.as_mut() else {
                return;
            };
            let exchange = async {
                stream.write_all(&frame).await?;
                read_frame::<Response>(stream).await
            };
            let outcome = match tokio::time::timeout(EXCHANGE_LIMIT, exchange).await {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(CallError::Network(e)),
                Err(_) => Err(CallError::Network(std::io::ErrorKind::TimedOut.into())),
            };
            if outcome.is_err() {
                link.stream = None;
            }
            if let Err(Ok(late)) = answer.send(outcome) {
                link.late = Some((frame, late));
            }
        });
        match tokio::time::timeout(ttl, answered).await {
            Ok(Ok(outcome)) => outcome,
            // The exchange's task ended without a word: its runtime is stopping.
            Ok(Err(_)) => Err(CallError::Network(std::io::ErrorKind::Interrupted.into())),
            Err(_) => Err(CallError::Network(std::io::ErrorKind::TimedOut.into())),
        }
    }

    fn mismatch<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
            "controller {} at {} answered another RPC",
            self.target, self.address
        ))))
    }
}

impl RaftNetwork<TypeConfig> for TcpConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(&Request::Append(rpc), option.hard_ttl()).await {
            Ok(Response::Append(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(&Request::Snapshot(rpc), option.hard_ttl()).await {
            Ok(Response::Snapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Response::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.mismatch()),
            Err(e) => Err(e.into_rpc()),
        }
    }
}

/// The address a controller's Raft listener is bound to, for its [`BasicNode`].
pub fn node(addr: SocketAddr) -> BasicNode {
    BasicNode::new(addr.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    use gregor_storage::{Disk, OsDisk};

    use super::*;
    use crate::image::MetadataRecord;
    use crate::raft::{LogStore, StateMachine};

    struct Controller {
        raft: Raft,
        machine: StateMachine,
        server: tokio::task::JoinHandle<()>,
    }

    async fn start(id: NodeId, dir: &Path, listener: TcpListener) -> Controller {
        let config = openraft::Config {
            heartbeat_interval: 50,
            election_timeout_min: 300,
            election_timeout_max: 600,
            ..Default::default()
        };
        let disk: Arc<dyn Disk> = Arc::new(OsDisk);
        let log = LogStore::open(disk.clone(), dir).expect("log opens");
        let machine = StateMachine::open(disk, dir).expect("state machine opens");
        let raft = Raft::new(
            id,
            Arc::new(config.validate().expect("valid")),
            TcpNetwork::default(),
            log,
            machine.clone(),
        )
        .await
        .expect("raft starts");
        let server = tokio::spawn(serve(listener, raft.clone(), None, Arc::new(PlainTcp)));
        Controller {
            raft,
            machine,
            server,
        }
    }

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.to_string(),
            topic_id: uuid::Uuid::new_v4(),
            configs: BTreeMap::new(),
        }
    }

    /// Commits `record` through whichever node leads (an election may still be settling:
    /// a node that just lost its leadership answers ForwardToLeader, and the write is tried
    /// again); returns that leader and the record's index.
    async fn commit(nodes: &BTreeMap<u64, Controller>, record: MetadataRecord) -> (u64, u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            for (&id, n) in nodes {
                if n.raft.metrics().borrow().current_leader != Some(id) {
                    continue;
                }
                if let Ok(r) = n.raft.client_write(record.clone()).await {
                    return (id, r.log_id.index);
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader committed {record:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_controllers_over_loopback_tcp_agree_and_fail_over() {
        let dirs: Vec<tempfile::TempDir> =
            (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
        let mut listeners = Vec::new();
        let mut members = BTreeMap::new();
        for id in 1..=3u64 {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            members.insert(id, node(l.local_addr().expect("addr")));
            listeners.push(l);
        }
        let mut nodes = BTreeMap::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            nodes.insert(id, start(id, dirs[i].path(), l).await);
        }
        // Every voter initializes with the same members, as `ClusterNode::start` does: a
        // node refuses Raft requests from a sender it does not know as a voter.
        for n in nodes.values() {
            n.raft
                .initialize(members.clone())
                .await
                .expect("initialize");
        }
        let wait = |n: &Controller| n.raft.wait(Some(Duration::from_secs(15)));
        let mut last = 0;
        let mut leader = 0;
        for i in 0..3 {
            (leader, last) = commit(&nodes, topic(&format!("t{i}"))).await;
        }
        for n in nodes.values() {
            wait(n)
                .applied_index_at_least(Some(last), "applied")
                .await
                .expect("applied");
            assert_eq!(n.machine.image().topics().count(), 3);
        }

        // The leader's process goes away: listener and Raft both.
        let old = nodes.remove(&leader).expect("leader");
        old.server.abort();
        old.raft.shutdown().await.expect("shut down");
        let any = nodes.values().next().expect("a survivor");
        wait(any)
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != leader),
                "a new leader",
            )
            .await
            .expect("failover");
        (_, last) = commit(&nodes, topic("after")).await;
        for n in nodes.values() {
            wait(n)
                .applied_index_at_least(Some(last), "applied")
                .await
                .expect("applied");
            assert_eq!(n.machine.image().topics().count(), 4);
        }
        for n in nodes.values() {
            n.server.abort();
            n.raft.shutdown().await.expect("shut down");
        }
    }

    #[tokio::test]
    async fn garbage_and_non_voters_on_the_raft_port_close_that_connection_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let c = start(1, dir.path(), l).await;
        c.raft
            .initialize(BTreeMap::from([(1, node(addr))]))
            .await
            .expect("initialize");
        for garbage in [&b"\xff\xff\xff\xff"[..], &b"\x00\x00\x00\x05nope!"[..]] {
            let mut s = TcpStream::connect(&addr.to_string())
                .await
                .expect("connect");
            s.write_all(garbage).await.expect("write");
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("closed in time")
                .unwrap_or(0);
            assert_eq!(n, 0, "the connection is closed");
        }
        // Still serving: a well-formed vote request from a voter gets an answer; one from
        // node 2, which is not a voter, is refused.
        let mut conn = TcpNetwork::default().new_client(1, &node(addr)).await;
        let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
        let r = conn
            .vote(vote, RPCOption::new(Duration::from_secs(5)))
            .await;
        assert!(r.is_ok(), "{:?}", r.err());
        let mut stranger = TcpNetwork::default().new_client(1, &node(addr)).await;
        let vote = VoteRequest::new(openraft::Vote::new(2, 2), None);
        let r = stranger
            .vote(vote, RPCOption::new(Duration::from_secs(5)))
            .await;
        assert!(r.is_err(), "a vote from a non-voter was answered: {r:?}");
        c.server.abort();
        c.raft.shutdown().await.expect("shut down");
    }
}

#[cfg(test)]
mod frame_tests {
    use super::*;

    fn snapshot_request(len: u32) -> Request {
        Request::Snapshot(InstallSnapshotRequest::<crate::raft::TypeConfig> {
            vote: openraft::Vote::new(1, 1),
            meta: Default::default(),
            offset: 0,
            data: (0..len)
                .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
                .collect(),
            done: true,
        })
    }

    #[tokio::test]
    async fn a_snapshot_chunk_of_megabytes_round_trips_through_a_frame() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut a: BoxStream = Box::new(a);
        let mut b: BoxStream = Box::new(b);
        let sent = snapshot_request(3 << 20);
        let want = serde_json::to_vec(&sent).expect("json");
        let writer = tokio::spawn(async move { write_frame(&mut a, &sent).await });
        let got: Request = read_frame(&mut b).await.expect("a whole frame");
        writer.await.expect("join").expect("written");
        assert_eq!(serde_json::to_vec(&got).expect("json"), want);
    }

    /// A peer over in-memory pipes: every connection is served in turn, each request (an
    /// install-snapshot chunk of `n` bytes) answered with `n`, after `answer_after(n)`;
    /// the first connection is read only after `first_read_after`. A frame that does not
    /// parse ends its connection and is counted.
    #[derive(Debug)]
    struct Peer {
        first_read_after: Duration,
        answer_after: fn(usize) -> Duration,
        connections: std::sync::atomic::AtomicUsize,
        bad_frames: std::sync::atomic::AtomicUsize,
        /// The sizes of the requests read, in order.
        received: std::sync::Mutex<Vec<usize>>,
    }

    impl Peer {
        fn new(first_read_after: Duration, answer_after: fn(usize) -> Duration) -> Arc<Peer> {
            Arc::new(Peer {
                first_read_after,
                answer_after,
                connections: Default::default(),
                bad_frames: Default::default(),
                received: Default::default(),
            })
        }

        async fn serve(self: Arc<Self>, mut theirs: BoxStream, first: bool) {
            if first {
                tokio::time::sleep(self.first_read_after).await;
            }
            loop {
                let request = match read_frame::<Request>(&mut theirs).await {
                    Ok(r) => r,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
                    Err(_) => {
                        self.bad_frames
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                };
                let Request::Snapshot(r) = request else {
                    return;
                };
                self.received.lock().expect("received").push(r.data.len());
                tokio::time::sleep((self.answer_after)(r.data.len())).await;
                let answer = Response::Control(Ok(r.data.len() as u64));
                if write_frame(&mut theirs, &answer).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Connects to the [`Peer`].
    #[derive(Debug)]
    struct ToPeer(Arc<Peer>);

    impl Transport for ToPeer {
        fn connect<'a>(&'a self, _addr: &'a str, _timeout: Duration) -> IoFuture<'a> {
            Box::pin(async move {
                // Small enough that a large frame cannot be written without a reader.
                let (ours, theirs) = tokio::io::duplex(4096);
                let n = self
                    .0
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(self.0.clone().serve(Box::new(theirs), n == 0));
                Ok(Box::new(ours) as BoxStream)
            })
        }
        fn accept(&self, _tcp: TcpStream) -> IoFuture<'static> {
            Box::pin(async { Err(std::io::ErrorKind::Unsupported.into()) })
        }
    }

    fn conn_to(peer: &Arc<Peer>) -> TcpConn {
        TcpConn {
            target: 2,
            address: "peer".into(),
            link: Default::default(),
            transport: Arc::new(ToPeer(peer.clone())),
        }
    }

    /// What a call got: the size the peer says it received, or the error's kind.
    async fn answer(conn: &mut TcpConn, len: u32, wait: Duration) -> Result<u64, String> {
        let request = snapshot_request(len);
        match tokio::time::timeout(wait, conn.call(&request, Duration::from_secs(60))).await {
            Ok(Ok(Response::Control(Ok(n)))) => Ok(n),
            Ok(Ok(_)) => Err("another answer".into()),
            Ok(Err(e)) => Err(format!("{e:?}")),
            Err(_) => Err("no answer in time".into()),
        }
    }

    #[tokio::test]
    async fn a_call_dropped_mid_frame_never_sends_the_next_request_glued_to_it() {
        // The peer reads nothing for 200 ms: a 1 MB request cannot be written whole before
        // openraft's own timeout drops the call.
        let peer = Peer::new(Duration::from_millis(200), |_| Duration::ZERO);
        let mut conn = conn_to(&peer);
        assert_eq!(
            answer(&mut conn, 1 << 20, Duration::from_millis(50)).await,
            Err("no answer in time".into())
        );
        // The next call gets its own answer, from frames the peer could read.
        assert_eq!(answer(&mut conn, 8, Duration::from_secs(5)).await, Ok(8));
        assert_eq!(
            peer.bad_frames.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the peer read a frame that does not parse"
        );
    }

    #[tokio::test]
    async fn a_call_dropped_while_waiting_for_its_answer_never_hands_that_answer_to_the_next() {
        // The first request's answer comes after 300 ms, long after its caller left.
        let peer = Peer::new(Duration::ZERO, |n| {
            Duration::from_millis(if n == 16 { 300 } else { 0 })
        });
        let mut conn = conn_to(&peer);
        assert_eq!(
            answer(&mut conn, 16, Duration::from_millis(50)).await,
            Err("no answer in time".into())
        );
        assert_eq!(answer(&mut conn, 8, Duration::from_secs(5)).await, Ok(8));
        // One connection did for both: the first exchange was let finish.
        assert_eq!(
            peer.connections.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }

    #[tokio::test]
    async fn a_peer_slower_than_every_call_still_gets_a_request_through_once() {
        // Every answer takes 300 ms; openraft gives each call 100 ms and sends the same
        // append again when it runs out.
        let peer = Peer::new(Duration::ZERO, |_| Duration::from_millis(300));
        let mut conn = conn_to(&peer);
        let mut answers = Vec::new();
        for _ in 0..8 {
            answers.push(answer(&mut conn, 16, Duration::from_millis(100)).await);
            if answers.last() == Some(&Ok(16)) {
                break;
            }
        }
        assert_eq!(answers.last(), Some(&Ok(16)), "{answers:?}");
        assert_eq!(*peer.received.lock().expect("received"), vec![16]);
    }

    #[tokio::test]
    async fn a_call_whose_caller_left_before_its_turn_sends_nothing() {
        let peer = Peer::new(Duration::ZERO, |n| {
            Duration::from_millis(if n == 16 { 300 } else { 0 })
        });
        let mut conn = conn_to(&peer);
        // The first exchange holds the connection for 300 ms; the second caller leaves
        // while it waits its turn, so its request is never sent.
        for len in [16, 24] {
            assert_eq!(
                answer(&mut conn, len, Duration::from_millis(50)).await,
                Err("no answer in time".into())
            );
        }
        assert_eq!(answer(&mut conn, 8, Duration::from_secs(5)).await, Ok(8));
        assert_eq!(*peer.received.lock().expect("received"), vec![16, 8]);
    }
}
