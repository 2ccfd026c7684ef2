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
    stream.write_all(&encode_frame(value)?).await
}

/// A frame: the JSON of `value`, after its length.
fn encode_frame<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
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
    Ok(buf)
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
        let frame = encode_frame(request).map_err(CallError::Network)?;
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
mod frame_tests;
#[cfg(test)]
mod tests;
