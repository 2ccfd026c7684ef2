//! The broker's process: starting it (on one node, or joining a cluster: `cluster.rs`),
//! its periodic tasks (flusher, retention and cleaner, gauges), and stopping it cleanly.
//! Connections are served in `connection.rs`.

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

mod cluster;
mod connection;
mod limits;

use cluster::start_cluster;
use connection::{accept_loop, log_refusal, serve_connection};
use limits::Limits;

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
    let _dir_lock = lock_data_dir(&config)?;
    let limits = Limits::new(&config).map_err(BrokerError::Config)?;
    crate::alloc::configure();
    let file_limit = limits::raise_open_file_limit();
    let segment_files = match config.settings().log_open_files_max {
        n if n > 0 => n as usize,
        _ => file_limit.map_or(4096, |l| (l / 2) as usize),
    };
    gregor_storage::handles::set_budget(segment_files);
    if let Some(level) = crate::metrics::SeriesLevel::parse(config.get("metrics.partition.series"))
    {
        crate::metrics::set_series_level(level);
    }
    tracing::info!(
        open_file_limit = file_limit,
        segment_files = gregor_storage::handles::budget(),
        "open-file limit (ulimit -n), and segment files kept open at most (log.open.files.max); each connection is a file too"
    );
    if let Some(addr) = config.metrics {
        // Before the partitions open, so their metric handles register with the recorder.
        // Its security is the operator's explicit choice: a setting that cannot be met
        // stops the broker rather than serving the metrics open.
        let security =
            crate::metrics_http::Security::from_config(&config).map_err(BrokerError::Config)?;
        if let Err(e) =
            crate::metrics_http::start(addr, security, api::APIS.iter().map(|spec| spec.key))
        {
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
    let (acceptors, mut accepted_rx) = listen(&broker).await?;
    tracing::info!(
        listen = %broker.config.listen,
        advertised = %format!("{}:{}", broker.config.advertised_host, broker.config.advertised_port),
        node_id = broker.config.node_id,
        data_dir = %broker.config.data_dir.display(),
        cluster_id = %broker.cluster_id(),
        "broker ready"
    );
    let mut background = spawn_background(&broker, &stop_rx);
    background.push(tokio::spawn(limits_loop(limits.clone(), stop_rx.clone())));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Some((stream, peer, listener)) = accepted_rx.recv() => {
                match limits.admit(peer.ip(), &listener) {
                    Ok(slot) => {
                        connections.spawn(serve_connection(broker.clone(), limits.clone(), slot, stream, peer, listener, stop_rx.clone()));
                    }
                    // Closed at once: the client sees the close and retries after its
                    // reconnect backoff.
                    Err(refusal) => {
                        log_refusal(&limits, peer, &listener.name, &refusal);
                        drop(stream);
                    }
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    stop(
        &broker,
        acceptors,
        connections,
        &stop_tx,
        background,
        cluster_tasks,
    )
    .await
}

/// Locks the data directory for this process, and makes it private: it holds every
/// record and every user's salted SCRAM keys.
fn lock_data_dir(config: &BrokerConfig) -> Result<gregor_storage::DataDirLock, BrokerError> {
    let lock =
        gregor_storage::DataDirLock::acquire(&config.data_dir).map_err(BrokerError::Config)?;
    match lock.make_private() {
        Ok(0) => {}
        Ok(n) => {
            tracing::warn!(data_dir = %config.data_dir.display(), changed = n, "the data directory was readable by other users; made it and its credential files private (0700 directories, 0600 files)")
        }
        Err(e) => return Err(BrokerError::Config(e)),
    }
    Ok(lock)
}

/// Binds every listener, with one accepting task each; accepted connections come back on
/// one channel.
async fn listen(
    broker: &Arc<Broker>,
) -> Result<
    (
        JoinSet<()>,
        tokio::sync::mpsc::Receiver<(TcpStream, SocketAddr, Arc<Listener>)>,
    ),
    BrokerError,
> {
    let (accepted_tx, accepted_rx) = tokio::sync::mpsc::channel(64);
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
    Ok((acceptors, accepted_rx))
}

/// The broker's periodic tasks: gauges, the flusher, the group and transaction
/// coordinators' ticks, retention, compaction, and the scrubber.
fn spawn_background(
    broker: &Arc<Broker>,
    stop_rx: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(flush_loop(broker.clone(), stop_rx.clone())),
        // Group session and rebalance timeouts; retention; compaction.
        tokio::spawn(periodic(
            broker.clone(),
            |s| s.group_coordinator_tick_ms,
            stop_rx.clone(),
            |b| b.groups.tick(b, crate::group::Now::current()),
        )),
        tokio::spawn(gauge_loop(broker.clone(), stop_rx.clone())),
        tokio::spawn(periodic(
            broker.clone(),
            |s| s.transaction_abort_timed_out_transaction_cleanup_interval_ms,
            stop_rx.clone(),
            |b| b.txns.tick(b, crate::state::now_ms()),
        )),
        tokio::spawn(periodic(
            broker.clone(),
            |s| s.log_retention_check_interval_ms,
            stop_rx.clone(),
            |b| {
                b.partitions
                    .apply_retention(b.config.settings().producer_id_expiration_ms)
            },
        )),
        tokio::spawn(periodic(
            broker.clone(),
            |s| s.log_cleaner_backoff_ms,
            stop_rx.clone(),
            |b| {
                b.partitions
                    .clean_compacted_paced(b.config.settings().log_cleaner_io_max_bytes_per_second)
            },
        )),
        tokio::spawn(crate::scrub::run(broker.clone(), stop_rx.clone())),
    ]
}

/// The clean stop: the controlled shutdown, in-flight requests answered (up to
/// `shutdown.timeout.ms`), the background and cluster tasks ended (each bounded), the
/// metadata quorum stopped, and the logs closed with the clean-shutdown marker.
async fn stop(
    broker: &Arc<Broker>,
    mut acceptors: JoinSet<()>,
    mut connections: JoinSet<()>,
    stop_tx: &watch::Sender<bool>,
    background: Vec<tokio::task::JoinHandle<()>>,
    cluster_tasks: Vec<tokio::task::JoinHandle<()>>,
) -> Result<(), BrokerError> {
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
    let timeout = Duration::from_millis(broker.config.settings().shutdown_timeout_ms.max(0) as u64);
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
    for task in background {
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

async fn flush_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut every = Duration::from_millis(
        broker
            .config
            .settings()
            .log_flush_scheduler_interval_ms
            .max(1) as u64,
    );
    if broker.config.settings().log_writeback_bytes > 0 {
        // Writeback is checked more often than flush.ms usually needs.
        every = every.min(Duration::from_millis(100));
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => broker.partitions.flush_due(broker.config.settings().log_writeback_bytes).await,
            _ = stop.changed() => return,
        }
    }
}

/// Runs `tick` on the blocking pool every `interval_key` milliseconds (a broker setting)
/// until the broker stops.
async fn periodic(
    broker: Arc<Broker>,
    interval: fn(&crate::config::Settings) -> i64,
    mut stop: watch::Receiver<bool>,
    tick: fn(&Broker),
) {
    let every = Duration::from_millis(interval(broker.config.settings()).max(1) as u64);
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

/// Once per `log.refusals.interval.ms`, one line on the refusals that were not logged one
/// by one; every 10 s, memory freed by closed connections is given back to the system
/// once enough of them closed.
async fn limits_loop(limits: Arc<Limits>, mut stop: watch::Receiver<bool>) {
    let mut summary = tokio::time::interval(limits.refusals.interval());
    let mut trim = tokio::time::interval(Duration::from_secs(10));
    summary.tick().await;
    trim.tick().await;
    loop {
        tokio::select! {
            _ = summary.tick() => {
                if let Some(line) = limits.refusals.summary() {
                    tracing::warn!("{line} (counted by reason in gregor_connections_closed_total)");
                }
            }
            _ = trim.tick() => {
                if limits.trim_due() {
                    let _ = crate::blocking::offload(crate::alloc::trim).await;
                }
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
                let _ = crate::blocking::offload(move || b.update_gauges()).await;
            }
            _ = stop.changed() => return,
        }
    }
}
