//! Listener and connections.
//!
//! A connection reads one request frame at a time and answers in request order. Produce
//! requests are pipelined: each is appended as soon as it is read, and the connection
//! reads on (up to `PIPELINE_MAX` waiting) while earlier ones wait for fsyncs or replicas;
//! any other request is handled only once every earlier one has been answered. A frame over `socket.request.max.bytes`, a
//! truncated or undecodable frame, or an unknown API key closes that connection with one
//! log line; the broker keeps serving everyone else. A request at a version Gregor does not
//! serve gets Kafka's answer: ApiVersions replies v0 with `UNSUPPORTED_VERSION` and the
//! supported ranges (KIP-511); any other API closes the connection, as Kafka does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gregor_cluster::net::{TcpListener, TcpStream};
use gregor_cluster::MetadataImage;
use gregor_protocol::frame::{self, RawHeader};
use gregor_storage::OsDisk;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::{self, api_versions, RequestContext};
use crate::config::{BrokerConfig, Listener};
use crate::error::BrokerError;
use crate::security::{SaslOutcome, Session};
use crate::state::Broker;
use crate::zero_copy;

/// Runs the broker until `shutdown` resolves, then stops cleanly: no new connections,
/// in-flight requests answered, logs flushed and closed.
pub async fn run(
    config: BrokerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BrokerError> {
    run_on(config, Arc::new(OsDisk), shutdown).await
}

/// [`run`] with the partitions' logs on `disk` (the simulator's, which can lose what was
/// not fsynced when its host crashes).
pub async fn run_on(
    config: BrokerConfig,
    disk: Arc<dyn gregor_storage::Disk>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BrokerError> {
    // Before anything in the data directory is opened: one process per directory.
    let _dir_lock =
        gregor_storage::DataDirLock::acquire(&config.data_dir).map_err(BrokerError::Config)?;
    // It holds every record and every user's salted SCRAM keys: the broker's user alone.
    match _dir_lock.make_private() {
        Ok(0) => {}
        Ok(n) => {
            tracing::warn!(data_dir = %config.data_dir.display(), changed = n, "the data directory was readable by other users; made it and its credential files private (0700 directories, 0600 files)")
        }
        Err(e) => return Err(BrokerError::Config(e)),
    }
    if let Some(addr) = config.metrics {
        // Before the partitions open, so their metric handles register with the recorder.
        // Its security is the operator's explicit choice: a setting that cannot be met
        // stops the broker rather than serving the metrics open.
        let security =
            crate::metrics_http::Security::from_config(&config).map_err(BrokerError::Config)?;
        if let Err(e) = crate::metrics::start(addr, security) {
            tracing::warn!("metrics are off: {e}");
        }
    }
    let broker = crate::blocking::offload(move || Broker::open(config, disk))
        .await
        .map_err(|e| BrokerError::Metadata(format!("start-up task failed: {e}")))??;
    tokio::pin!(shutdown);
    let (stop_tx, stop_rx) = watch::channel(false);
    // In a cluster, clients are served only once this broker is registered and has the
    // cluster's metadata, as a Kafka broker waits to be unfenced.
    let cluster_tasks = tokio::select! {
        r = start_cluster(&broker, stop_rx.clone()) => r?,
        _ = &mut shutdown => {
            let _ = stop_tx.send(true);
            if let Some(node) = broker.clustered() {
                node.shutdown().await;
            }
            let b = broker.clone();
            let _ = crate::blocking::offload(move || b.close()).await;
            tracing::info!("stopped before joining the cluster");
            return Ok(());
        }
    };
    // One accepting task per listener; accepted connections come back on one channel.
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::channel(64);
    let mut acceptors = JoinSet::new();
    for l in &broker.config.listeners {
        let listen = l.addr;
        let socket = TcpListener::bind(&listen.to_string())
            .await
            .map_err(|e| BrokerError::Config(format!("cannot listen on {listen} (listener {}): {e}; is another broker running there? choose another with --listen", l.name)))?;
        tracing::info!(listener = %l.name, protocol = l.protocol.name(), listen = %listen, advertised = %format!("{}:{}", l.advertised_host, l.advertised_port), "listening");
        acceptors.spawn(accept_loop(
            socket,
            Arc::new(l.clone()),
            accepted_tx.clone(),
        ));
    }
    drop(accepted_tx);
    tracing::info!(
        listen = %broker.config.listen,
        advertised = %format!("{}:{}", broker.config.advertised_host, broker.config.advertised_port),
        node_id = broker.config.node_id,
        data_dir = %broker.config.data_dir.display(),
        cluster_id = %broker.cluster_id(),
        "broker ready"
    );
    let gauges = tokio::spawn(gauge_loop(broker.clone(), stop_rx.clone()));
    let flusher = tokio::spawn(flush_loop(broker.clone(), stop_rx.clone()));
    // Group session and rebalance timeouts; retention; compaction.
    let coordinator = tokio::spawn(periodic(
        broker.clone(),
        "group.coordinator.tick.ms",
        stop_rx.clone(),
        |b| b.groups.tick(b),
    ));
    let transactions = tokio::spawn(periodic(
        broker.clone(),
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        stop_rx.clone(),
        |b| b.txns.tick(b, crate::state::now_ms()),
    ));
    let retention = tokio::spawn(periodic(
        broker.clone(),
        "log.retention.check.interval.ms",
        stop_rx.clone(),
        Broker::apply_retention,
    ));
    let cleaner = tokio::spawn(periodic(
        broker.clone(),
        "log.cleaner.backoff.ms",
        stop_rx.clone(),
        Broker::clean_compacted_paced,
    ));
    let scrubber = tokio::spawn(crate::scrub::run(broker.clone(), stop_rx.clone()));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Some((stream, peer, listener)) = accepted_rx.recv() => {
                connections.spawn(serve_connection(broker.clone(), stream, peer, listener, stop_rx.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    if let Some(node) = broker.clustered() {
        // Kafka's controlled shutdown: leaderships move to other in-sync replicas before
        // this broker stops answering, so producers see one quick NOT_LEADER_OR_FOLLOWER.
        match tokio::time::timeout(Duration::from_secs(5), node.controlled_shutdown()).await {
            Ok(Ok(())) => tracing::info!("leaderships moved to other replicas"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "controlled shutdown refused; stopping anyway")
            }
            Err(_) => tracing::warn!("controlled shutdown timed out; stopping anyway"),
        }
    }
    tracing::info!(
        connections = connections.len(),
        "shutting down: answering in-flight requests"
    );
    acceptors.abort_all();
    let _ = stop_tx.send(true);
    let timeout = Duration::from_millis(broker.config.get_i64("shutdown.timeout.ms").max(0) as u64);
    if tokio::time::timeout(timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            remaining = connections.len(),
            "connections still busy at the shutdown timeout; closing them"
        );
        connections.abort_all();
    }
    // The periodic tasks end at their next tick once told to stop; a tick in progress
    // (blocking work: a cleaning, a retention pass, a scrub step) is waited for, not
    // aborted, because the logs must not be closed under it.
    for task in [
        flusher,
        coordinator,
        gauges,
        transactions,
        retention,
        cleaner,
        scrubber,
    ] {
        let _ = task.await;
    }
    // The cluster's tasks may wait for a quorum that is gone: each has a bound, and a
    // task that does not end in time is aborted, so the logs are always closed and the
    // clean-shutdown marker written.
    let deadline = tokio::time::Instant::now() + TASK_STOP_TIMEOUT;
    for task in cluster_tasks {
        let abort = task.abort_handle();
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::warn!("a background task did not stop within 5 s; aborting it");
            abort.abort();
        }
    }
    if let Some(node) = broker.clustered() {
        if tokio::time::timeout(TASK_STOP_TIMEOUT, node.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("the metadata quorum did not stop within 5 s; going on");
        }
    }
    let b = broker.clone();
    crate::blocking::offload(move || b.close())
        .await
        .map_err(|e| BrokerError::Metadata(format!("close task failed: {e}")))?;
    tracing::info!("broker stopped cleanly");
    Ok(())
}

/// How long a clean stop waits for the background tasks (all together), and then for the
/// metadata quorum. With the controlled shutdown's 5 s and `shutdown.timeout.ms` for the
/// connections, a stop ends within `shutdown.timeout.ms` + 15 s plus the final fsyncs.
const TASK_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Joins the cluster when `controller.quorum.voters` is set: starts this node's part of the
/// metadata quorum, applies its images to the partitions, heartbeats, and replicates.
async fn start_cluster(
    broker: &Arc<Broker>,
    stop: watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, BrokerError> {
    use gregor_cluster::controller::{parse_voters, raft_listen_addr};
    use gregor_cluster::{ClusterNode, ControllerSettings, Registration};
    let c = &broker.config;
    let spec = c.get("controller.quorum.voters").trim().to_string();
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    let voters = parse_voters(&spec).map_err(|e| {
        BrokerError::Config(format!(
            "controller.quorum.voters '{spec}': {e}; write it as 1@HOST:PORT,2@HOST:PORT,3@HOST:PORT"
        ))
    })?;
    let named = c.controller_listener.as_ref().map(|l| l.addr.to_string());
    let configured = c.get("controller.listener").trim();
    let configured = named
        .as_deref()
        .filter(|_| configured.is_empty())
        .unwrap_or(configured);
    let configured = if configured.is_empty() {
        None
    } else {
        Some(configured.parse().map_err(|_| {
            BrokerError::Config(format!(
                "controller.listener '{configured}' is not HOST:PORT with an IP address"
            ))
        })?)
    };
    let addr = raft_listen_addr(c.node_id, &voters, configured).map_err(BrokerError::Config)?;
    let listener = TcpListener::bind(&addr).await.map_err(|e| {
        BrokerError::Config(format!(
            "cannot listen for the metadata log on {addr}: {e}; is another broker using it? check --controllers and --controller-listener"
        ))
    })?;
    let settings = ControllerSettings {
        session_timeout_ms: c.get_i64("broker.session.timeout.ms").max(1) as u64,
        heartbeat_interval_ms: c.get_i64("broker.heartbeat.interval.ms").max(1) as u64,
        auto_leader_rebalance: c.get_bool("auto.leader.rebalance.enable"),
        leader_imbalance_check_ms: (c.get_i64("leader.imbalance.check.interval.seconds").max(1)
            as u64)
            .saturating_mul(1000),
        unclean_leader_election: c.get_bool("unclean.leader.election.enable"),
    };
    let transport = metadata_transport(broker, &addr)?;
    let node = ClusterNode::start(
        Arc::new(OsDisk),
        &c.data_dir,
        c.node_id,
        listener,
        voters,
        settings,
        transport,
    )
    .await
    .map_err(|e| BrokerError::Metadata(format!("starting the metadata quorum: {e}")))?;
    broker.attach_cluster(node.clone());
    let rack = c.get("broker.rack").trim().to_string();
    let registration = Registration {
        node_id: c.node_id,
        host: c.advertised_host.clone(),
        port: i32::from(c.advertised_port),
        rack: (!rack.is_empty()).then_some(rack),
        endpoints: c.endpoints(),
        raft_addr: addr,
        incarnation: node.incarnation(),
        unclean_start: !broker.clean_start,
    };
    let mut tasks = vec![tokio::spawn(node.clone().run(registration, stop.clone()))];
    let started = tokio::time::Instant::now();
    let mut waiting = JoinWait {
        node: &node,
        images: node.subscribe(),
        started,
        next_note: Duration::from_secs(5),
    };
    let registered = |image: &MetadataImage| {
        image.cluster_id().is_some()
            && image
                .broker(c.node_id)
                .is_some_and(|b| !b.fenced && b.incarnation == node.incarnation())
    };
    // No partition role is taken from the metadata log replayed at start: it may still
    // name this broker the leader of what it led before a crash, with a log that lost its
    // unflushed tail since, and followers would truncate to it. Roles come once the
    // controller has registered this incarnation, unfenced: a restart within the session
    // is fenced first (its leaderships move, it leaves the ISRs), so this broker starts
    // every partition as a follower that must catch up.
    waiting.until(|| registered(&node.image())).await;
    tasks.extend([
        tokio::spawn(follow_images(broker.clone(), node.clone(), stop.clone())),
        tokio::spawn(crate::replica::run_fetchers(broker.clone(), stop.clone())),
        tokio::spawn(crate::replica::run_isr_upkeep(broker.clone(), stop)),
    ]);
    // Ready once the image that registers this broker has been applied to the partitions
    // (not only received): only then do Metadata answers carry the cluster's id and the
    // leaderships this broker holds.
    waiting.until(|| registered(&broker.image())).await;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "registered with the cluster"
    );
    // Users created offline for this data directory (`gregor user create --data-dir`).
    broker.apply_bootstrap_records().await?;
    Ok(tasks)
}

/// Waiting to join the cluster, with a warning every 10 s while it lasts.
struct JoinWait<'a> {
    node: &'a gregor_cluster::ClusterNode,
    images: watch::Receiver<Arc<MetadataImage>>,
    started: tokio::time::Instant,
    next_note: Duration,
}

impl JoinWait<'_> {
    /// Returns once `ready` holds, looking again at every new image and every 50 ms (an
    /// image is applied to the partitions a moment after it arrives).
    async fn until(&mut self, mut ready: impl FnMut() -> bool) {
        loop {
            self.images.borrow_and_update();
            if ready() {
                return;
            }
            if self.started.elapsed() >= self.next_note {
                tracing::warn!(
                    waited_s = self.started.elapsed().as_secs(),
                    active_controller = ?self.node.leader(),
                    "waiting to join the cluster: a majority of --controllers must be running and reachable"
                );
                self.next_note += Duration::from_secs(10);
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), self.images.changed()).await;
        }
    }
}

/// How the metadata log's port is secured. Every frame on it must come from a broker of
/// this cluster: over mutual TLS, a peer is admitted by its certificate's principal (this
/// broker's own, `super.users`, or an explicit ClusterAction ACL on the cluster), never by
/// the CA alone. When a listener is secured or the authorizer is on, the port is never
/// left open: without an SSL controller listener it runs over mutual TLS with the
/// brokers' own certificates, and without certificates the broker refuses to start. A
/// cluster with no security at all is told, once at start, that the port is open.
fn metadata_transport(
    broker: &Arc<Broker>,
    addr: &str,
) -> Result<Arc<dyn gregor_cluster::raft_net::Transport>, BrokerError> {
    use crate::config::SecurityProtocol;
    use crate::security::acl::{self, Caller};
    let c = &broker.config;
    let secured = c
        .listeners
        .iter()
        .any(|l| l.protocol != SecurityProtocol::Plaintext)
        || broker.security.authorizer.enabled;
    let tls_listener = c.controller_listener.as_ref().filter(|l| l.protocol.tls());
    let tls = broker.security.tls.clone().filter(|t| t.client().is_some());
    let tls = match (tls_listener, tls) {
        (Some(l), Some(tls)) => {
            tracing::info!(listener = %l.name, %addr, "the metadata log runs over mutual TLS; peers are admitted by their certificate's principal");
            tls
        }
        (Some(l), None) => {
            return Err(BrokerError::Config(format!(
                "controller listener {} is SSL but the brokers have no certificates to use on it: set ssl.keystore.location and ssl.truststore.location",
                l.name
            )))
        }
        (None, Some(tls)) if secured => {
            tracing::info!(%addr, "the metadata log runs over mutual TLS with this broker's certificate (ssl.keystore.location), as the cluster is secured; peers are admitted by their certificate's principal. Name an SSL listener in controller.listener.names to choose its port's listener yourself");
            tls
        }
        (None, None) if secured => {
            return Err(BrokerError::Config(format!(
                "the cluster is secured (a SASL or SSL listener, or authorizer.enabled) but its metadata-log port {addr} would take unauthenticated frames from anyone who can reach it; give the brokers certificates (ssl.keystore.location and ssl.truststore.location, the CA that signs every broker's certificate) so that the port runs over mutual TLS, with each broker's principal in super.users"
            )))
        }
        (None, _) => {
            tracing::warn!(%addr, "the metadata log's port is unauthenticated (no listener is secured): anyone who can reach it can change the cluster. Bind --controller-listener to a private address, or secure the cluster (docs/security.md)");
            return Ok(Arc::new(gregor_cluster::raft_net::PlainTcp));
        }
    };
    let own = tls.own_principal();
    let weak = Arc::downgrade(broker);
    let admit: crate::security::tls::Admit = Arc::new(move |principal: &str, host| {
        if own.as_deref() == Some(principal) {
            return true;
        }
        let Some(broker) = weak.upgrade() else {
            return false;
        };
        let a = &broker.security.authorizer;
        if a.super_users.iter().any(|u| u == principal) {
            return true;
        }
        // An explicit ALLOW of ClusterAction: "no ACL found" admits nobody here.
        let explicit = acl::Authorizer {
            enabled: true,
            super_users: Vec::new(),
            allow_if_no_acl: false,
        };
        let caller = Caller {
            principal: principal.to_string(),
            host,
        };
        a.enabled
            && explicit.authorize(
                &broker.image(),
                &caller,
                acl::op::CLUSTER_ACTION,
                acl::res::CLUSTER,
                acl::CLUSTER_NAME,
            )
    });
    Ok(Arc::new(crate::security::tls::TlsTransport { tls, admit }))
}

/// Applies every new metadata image to the partitions, until the broker stops.
async fn follow_images(
    broker: Arc<Broker>,
    node: Arc<gregor_cluster::ClusterNode>,
    mut stop: watch::Receiver<bool>,
) {
    let mut images = node.subscribe();
    loop {
        // Past states replayed from the log after a restart are not acted on (they could
        // move or delete replicas the current state keeps): images apply once this node
        // has caught up with the active controller.
        let caught_up = node.caught_up();
        if caught_up {
            let image = images.borrow_and_update().clone();
            let b = broker.clone();
            let _ = crate::blocking::offload(move || b.reconcile(image)).await;
        }
        let recheck = Duration::from_millis(if caught_up { 3_600_000 } else { 50 });
        tokio::select! {
            changed = images.changed() => if changed.is_err() { return; },
            _ = tokio::time::sleep(recheck) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn flush_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut every = Duration::from_millis(
        broker
            .config
            .get_i64("log.flush.scheduler.interval.ms")
            .max(1) as u64,
    );
    if broker.config.get_i64("log.writeback.bytes") > 0 {
        // Writeback is checked more often than flush.ms usually needs.
        every = every.min(Duration::from_millis(100));
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => broker.flush_due_partitions().await,
            _ = stop.changed() => return,
        }
    }
}

/// Runs `tick` on the blocking pool every `interval_key` milliseconds (a broker setting)
/// until the broker stops.
async fn periodic(
    broker: Arc<Broker>,
    interval_key: &'static str,
    mut stop: watch::Receiver<bool>,
    tick: fn(&Broker),
) {
    let every = Duration::from_millis(broker.config.get_i64(interval_key).max(1) as u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {
                let b = broker.clone();
                let _ = crate::blocking::offload(move || tick(&b)).await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// Recomputes the metrics gauges until the broker stops.
async fn gauge_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(crate::metrics::GAUGE_INTERVAL) => {
                let b = broker.clone();
                let _ = crate::blocking::offload(move || crate::metrics::update_gauges(&b)).await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// Why a connection ended.
enum Close {
    /// The client closed it, or the broker is stopping.
    Normal,
    /// The client sent something the broker will not serve; logged once.
    Refused(String),
    Io(std::io::Error),
}

/// Accepts connections on one listener until the task is aborted.
async fn accept_loop(
    socket: TcpListener,
    listener: Arc<Listener>,
    out: tokio::sync::mpsc::Sender<(TcpStream, SocketAddr, Arc<Listener>)>,
) {
    loop {
        match socket.accept().await {
            Ok((stream, peer)) => {
                if out.send((stream, peer, listener.clone())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(listener = %listener.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How long a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    crate::metrics::connection_opened();
    let outcome = match (listener.protocol.tls(), &broker.security.tls) {
        (true, Some(tls)) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server(listener.protocol.sasl()));
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    let principal = tls_stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(crate::security::tls::principal_of);
                    let session = Session::new(&listener, peer.ip(), principal);
                    serve_stream(&broker, tls_stream, peer, session, stop).await
                }
                Ok(Err(e)) => Close::Refused(format!("TLS handshake failed: {e}")),
                Err(_) => Close::Refused("TLS handshake timed out".into()),
            }
        }
        (true, None) => Close::Refused("TLS listener without TLS settings".into()),
        (false, _) => {
            let session = Session::new(&listener, peer.ip(), None);
            serve_stream(&broker, stream, peer, session, stop).await
        }
    };
    crate::metrics::connection_closed();
    match outcome {
        Close::Normal => tracing::debug!(%peer, "connection closed"),
        Close::Refused(reason) => {
            crate::metrics::error("connection", "refused");
            tracing::warn!(%peer, listener = %listener.name, reason, "closing connection")
        }
        Close::Io(e) => tracing::debug!(%peer, error = %e, "connection error"),
    }
}

/// A client connection's transport. Plain TCP can send file ranges itself (`sendfile`).
trait Socket: AsyncRead + AsyncWrite + Unpin {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        None
    }
}

impl Socket for TcpStream {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        self.os()
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {}

async fn serve_stream<S: Socket>(
    broker: &Arc<Broker>,
    stream: S,
    peer: SocketAddr,
    mut session: Session,
    stop: watch::Receiver<bool>,
) -> Close {
    let mut stream = BufReader::with_capacity(64 * 1024, stream);
    let max_frame = broker.config.get_i64("socket.request.max.bytes").max(1) as usize;
    let outcome = connection_loop(broker, &mut stream, max_frame, peer, &mut session, stop).await;
    let _ = stream.shutdown().await;
    outcome
}

/// What to do with the answer to one request.
enum Reply {
    /// Nothing is due (acks=0).
    None,
    Send(Bytes),
    /// Bytes and file ranges, in order (a Fetch response sent from the page cache).
    SendParts(Vec<zero_copy::Part>),
    /// A failed authentication: wait, answer, close.
    SendAndClose(Bytes, Duration),
    /// A Produce appended, whose answer waits for fsyncs or replicas in its own task; the
    /// connection reads on meanwhile and sends answers in request order.
    Later(tokio::task::JoinHandle<Result<Reply, String>>),
}

/// How many Produce requests of one connection may wait for their answers at once while
/// the connection reads on (librdkafka sends up to 5 at a time by default when
/// idempotent). A bound, so that a client cannot make the broker hold more.
const PIPELINE_MAX: usize = 16;

/// What a connection waits for between requests.
enum Next {
    /// The oldest pipelined Produce has its answer.
    Answer(Result<Result<Reply, String>, tokio::task::JoinError>),
    /// Bytes of the next request arrived (`true`: the peer closed its side instead).
    Input(std::io::Result<bool>),
}

/// Sends one answer. `Err`: the connection closes.
async fn send_reply<S: Socket>(stream: &mut BufReader<S>, reply: Reply) -> Result<(), Close> {
    match reply {
        Reply::None => Ok(()),
        Reply::Send(bytes) => {
            stream.write_all(&bytes).await.map_err(Close::Io)?;
            stream.flush().await.map_err(Close::Io)
        }
        Reply::SendParts(parts) => send_parts(stream.get_mut(), &parts)
            .await
            .map_err(Close::Io),
        Reply::SendAndClose(bytes, delay) => {
            tokio::time::sleep(delay).await;
            let _ = stream.write_all(&bytes).await;
            let _ = stream.flush().await;
            Err(Close::Refused("authentication failed".into()))
        }
        Reply::Later(task) => match task.await {
            Ok(Ok(reply)) => Box::pin(send_reply(stream, reply)).await,
            Ok(Err(reason)) => Err(Close::Refused(reason)),
            Err(e) => Err(Close::Refused(format!("a produce task failed: {e}"))),
        },
    }
}

/// Sends every pipelined answer, oldest first.
async fn drain<S: Socket>(
    stream: &mut BufReader<S>,
    inflight: &mut std::collections::VecDeque<tokio::task::JoinHandle<Result<Reply, String>>>,
) -> Result<(), Close> {
    while let Some(task) = inflight.pop_front() {
        send_reply(stream, Reply::Later(task)).await?;
    }
    Ok(())
}

async fn connection_loop<S: Socket>(
    broker: &Arc<Broker>,
    stream: &mut BufReader<S>,
    max_frame: usize,
    peer: SocketAddr,
    session: &mut Session,
    mut stop: watch::Receiver<bool>,
) -> Close {
    // Whether Fetch responses may be sent from the files (plain TCP), decided once.
    let zero_copy = stream.get_ref().tcp().is_some() && broker.config.get_bool("fetch.sendfile");
    let mut inflight = std::collections::VecDeque::new();
    loop {
        // Between requests is the only place a connection stops for shutdown (after the
        // answers it owes).
        if *stop.borrow() {
            // Stopping: no new request is read; the answers owed go out first.
            return match drain(stream, &mut inflight).await {
                Ok(()) => Close::Normal,
                Err(close) => close,
            };
        }
        let next = tokio::select! {
            biased;
            changed = stop.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return Close::Normal,
            },
            done = async { inflight.front_mut().expect("checked non-empty").await }, if !inflight.is_empty() => Next::Answer(done),
            r = stream.fill_buf(), if inflight.len() < PIPELINE_MAX => Next::Input(r.map(|b| b.is_empty())),
        };
        match next {
            Next::Answer(done) => {
                inflight.pop_front();
                let reply = match done {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(reason)) => return Close::Refused(reason),
                    Err(e) => return Close::Refused(format!("a produce task failed: {e}")),
                };
                if let Err(close) = send_reply(stream, reply).await {
                    return close;
                }
                continue;
            }
            Next::Input(Ok(true)) => {
                return match drain(stream, &mut inflight).await {
                    Ok(()) => Close::Normal,
                    Err(close) => close,
                };
            }
            Next::Input(Err(e)) => return Close::Io(e),
            Next::Input(Ok(false)) => {}
        }
        let size = match stream.read_i32().await {
            Ok(size) => size,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Close::Refused("truncated frame: peer closed inside a frame's size".into())
            }
            Err(e) => return Close::Io(e),
        };
        // Before authentication, a frame may hold only a SASL or ApiVersions request.
        let limit = if session.authenticated() {
            max_frame
        } else {
            max_frame.min(UNAUTHENTICATED_FRAME_MAX_BYTES)
        };
        let size = match frame::check_frame_size(size, limit) {
            Ok(s) => s,
            Err(reason) => return Close::Refused(reason),
        };
        // Read into uninitialised capacity: zeroing a buffer the read overwrites cost 2% of
        // the broker's CPU under produce load (perf, bench/profiles/README.md).
        let mut buf = BytesMut::with_capacity(size);
        while buf.len() < size {
            let want = size - buf.len();
            match (&mut *stream).take(want as u64).read_buf(&mut buf).await {
                Ok(0) => {
                    return Close::Refused(format!(
                        "truncated frame: peer closed before sending the {size} bytes it announced"
                    ))
                }
                Ok(_) => {}
                Err(e) => return Close::Io(e),
            }
        }
        let frame = buf.freeze();
        let raw = match frame::peek_header(&frame) {
            Ok(raw) => raw,
            Err(e) => return Close::Refused(e.to_string()),
        };
        // Only Produce requests overlap; anything else is handled once every earlier
        // request has been answered, as Kafka handles a connection's requests in order.
        if raw.api_key != ApiKey::Produce as i16 {
            if let Err(close) = drain(stream, &mut inflight).await {
                return close;
            }
        }
        match handle_frame(broker, raw, frame, peer, session, stop.clone(), zero_copy).await {
            Ok(Reply::Later(task)) => inflight.push_back(task),
            Ok(reply) => {
                if let Err(close) = drain(stream, &mut inflight).await {
                    return close;
                }
                if let Err(close) = send_reply(stream, reply).await {
                    return close;
                }
            }
            Err(reason) => return Close::Refused(reason),
        }
    }
}

/// Writes bytes and file ranges in order; file ranges go with `sendfile` on plain TCP
/// (and are read and written elsewhere, which `handle_frame` avoids).
async fn send_parts<S: Socket>(stream: &mut S, parts: &[zero_copy::Part]) -> std::io::Result<()> {
    for part in parts {
        match part {
            zero_copy::Part::Bytes(b) => stream.write_all(b).await?,
            zero_copy::Part::File(region) => match (stream.tcp(), region.file.fd()) {
                (Some(tcp), Some(fd)) => send_file(tcp, fd, region).await?,
                _ => {
                    stream
                        .write_all(&region.read().map_err(std::io::Error::other)?)
                        .await?
                }
            },
        }
    }
    stream.flush().await
}

/// Sends a file range on a socket with `sendfile`, waiting whenever the socket is full.
async fn send_file(
    tcp: &tokio::net::TcpStream,
    fd: std::os::fd::BorrowedFd<'_>,
    region: &gregor_storage::FileRegion,
) -> std::io::Result<()> {
    let mut offset = region.position;
    let end = region.position + region.len as u64;
    while offset < end {
        tcp.writable().await?;
        let want = (end - offset).min(1 << 30) as usize;
        match tcp.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::fs::sendfile(tcp, fd, Some(&mut offset), want).map_err(std::io::Error::from)
        }) {
            Ok(0) => {
                // The size was announced: a range cut short cannot be answered any more.
                tracing::warn!(path = %region.path.display(), at = offset, end, "a segment was cut while its range was being sent; closing the connection");
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment cut short during sendfile",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The largest frame read before a SASL client has authenticated.
const UNAUTHENTICATED_FRAME_MAX_BYTES: usize = 512 * 1024;

/// Decodes, dispatches and encodes one request. `Ok(None)`: no response is due (acks=0).
async fn handle_frame(
    broker: &Arc<Broker>,
    raw: RawHeader,
    frame: Bytes,
    peer: SocketAddr,
    session: &mut Session,
    stop: watch::Receiver<bool>,
    zero_copy: bool,
) -> Result<Reply, String> {
    let Ok(api) = ApiKey::try_from(raw.api_key) else {
        return Err(format!("unknown API key {}", raw.api_key));
    };
    let Some(spec) = api::spec(raw.api_key) else {
        return Err(format!(
            "API {api:?} (key {}) is not served by Gregor",
            raw.api_key
        ));
    };
    if raw.api_version < spec.min || raw.api_version > spec.max {
        if api == ApiKey::ApiVersions {
            let body = ResponseKind::ApiVersions(api_versions::unsupported_version());
            return frame::encode_response(api, 0, raw.correlation_id, &body)
                .map(Reply::Send)
                .map_err(|e| e.to_string());
        }
        return Err(format!(
            "{api:?} v{} is not supported (Gregor serves v{}-v{})",
            raw.api_version, spec.min, spec.max
        ));
    }
    let is_sasl = matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
    if !is_sasl && api != ApiKey::ApiVersions {
        if !session.authenticated() {
            return Err(format!(
                "{api:?} before SASL authentication on listener {}; configure the client with security.protocol={} and a sasl.mechanism",
                session.listener,
                session.protocol.name()
            ));
        }
        if session.expired() {
            return Err("the SASL session expired (connections.max.reauth.ms) and the client did not re-authenticate".into());
        }
    }
    let started = tokio::time::Instant::now();
    let (header, request) = frame::decode_request(frame).map_err(|e| e.to_string())?;
    let version = header.request_api_version;
    let security = &broker.security;
    // SaslHandshake and SaslAuthenticate change the connection's state, so the connection
    // answers them itself; everything else goes to the handlers.
    let ctx = |header, deferred| RequestContext {
        broker: broker.clone(),
        header,
        version,
        shutdown: stop.clone(),
        peer,
        caller: session.caller.clone(),
        listener: session.listener.clone(),
        deferred,
    };
    let (body, close_after) = match request {
        kafka_protocol::messages::RequestKind::SaslHandshake(r) => (
            ResponseKind::SaslHandshake(session.handshake(security, &r)),
            None,
        ),
        kafka_protocol::messages::RequestKind::SaslAuthenticate(r) => {
            match session.authenticate(security, &broker.image(), &r) {
                SaslOutcome::Reply(resp) => (ResponseKind::SaslAuthenticate(resp), None),
                SaslOutcome::Fail(resp, delay) => {
                    (ResponseKind::SaslAuthenticate(resp), Some(delay))
                }
            }
        }
        kafka_protocol::messages::RequestKind::Produce(r) => {
            let answer = api::produce_pipelined(ctx(header, None), r).await;
            let correlation_id = raw.correlation_id;
            return Ok(Reply::Later(tokio::spawn(async move {
                let Some(body) = answer.await else {
                    crate::metrics::request_done(api, started.elapsed());
                    return Ok(Reply::None);
                };
                let bytes = encode(api, version, correlation_id, &body)?;
                crate::metrics::request_done(api, started.elapsed());
                Ok(Reply::Send(bytes))
            })));
        }
        request => {
            let ctx = ctx(
                header,
                (zero_copy && api == ApiKey::Fetch).then(Default::default),
            );
            let Some(body) = api::dispatch(&ctx, request).await else {
                crate::metrics::request_done(api, started.elapsed());
                return Ok(Reply::None);
            };
            let regions = ctx.deferred.map(|d| d.take()).unwrap_or_default();
            if !regions.is_empty() {
                return encode_parts(api, version, raw.correlation_id, body, &regions, started);
            }
            (body, None)
        }
    };
    let bytes = encode(api, version, raw.correlation_id, &body)?;
    crate::metrics::request_done(api, started.elapsed());
    Ok(match close_after {
        Some(delay) => Reply::SendAndClose(bytes, delay),
        None => Reply::Send(bytes),
    })
}

/// Encodes a response with placeholders and cuts it into bytes and file ranges. Should
/// the cut fail, the ranges are read into the response instead (logged: a bug).
fn encode_parts(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    mut body: ResponseKind,
    regions: &[gregor_storage::FileRegion],
    started: tokio::time::Instant,
) -> Result<Reply, String> {
    let placeheld = encode(api, version, correlation_id, &body)?;
    crate::metrics::request_done(api, started.elapsed());
    match zero_copy::splice(placeheld, regions, version >= 12) {
        Ok(parts) => Ok(Reply::SendParts(parts)),
        Err(e) => {
            tracing::error!(api = ?api, version, error = %e, "could not cut a response at its file ranges; reading them instead");
            zero_copy::materialize(&mut body, regions).map_err(|e| {
                tracing::error!(error = %e, "could not read a fetched segment range");
                format!("reading a fetched range failed: {e}")
            })?;
            encode(api, version, correlation_id, &body).map(Reply::Send)
        }
    }
}

/// Encodes a response frame (the caller counts the request, once).
fn encode(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, String> {
    match frame::encode_response(api, version, correlation_id, body) {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            tracing::error!(api = ?api, version, error = %e, "could not encode a response");
            Err(e.to_string())
        }
    }
}
