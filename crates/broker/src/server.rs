//! Listener and connections.
//!
//! A connection reads one request frame at a time and answers it before reading the next,
//! so responses go out in request order. A frame over `socket.request.max.bytes`, a
//! truncated or undecodable frame, or an unknown API key closes that connection with one
//! log line; the broker keeps serving everyone else. A request at a version Gregor does not
//! serve gets Kafka's answer: ApiVersions replies v0 with `UNSUPPORTED_VERSION` and the
//! supported ranges (KIP-511); any other API closes the connection, as Kafka does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gregor_protocol::frame::{self, RawHeader};
use gregor_storage::OsDisk;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::{self, api_versions, RequestContext};
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::state::Broker;

/// Runs the broker until `shutdown` resolves, then stops cleanly: no new connections,
/// in-flight requests answered, logs flushed and closed.
pub async fn run(
    config: BrokerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BrokerError> {
    let listen = config.listen;
    if let Some(addr) = config.metrics {
        // Before the partitions open, so their metric handles register with the recorder.
        if let Err(e) = crate::metrics::start(addr) {
            tracing::warn!("metrics are off: {e}");
        }
    }
    let broker = tokio::task::spawn_blocking(move || Broker::open(config, Arc::new(OsDisk)))
        .await
        .map_err(|e| BrokerError::Metadata(format!("start-up task failed: {e}")))??;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| BrokerError::Config(format!("cannot listen on {listen}: {e}; is another broker running there? choose another with --listen")))?;
    tracing::info!(
        listen = %listen,
        advertised = %format!("{}:{}", broker.config.advertised_host, broker.config.advertised_port),
        node_id = broker.config.node_id,
        data_dir = %broker.config.data_dir.display(),
        cluster_id = %broker.cluster_id,
        "broker ready"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
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
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(broker.clone(), stream, peer, stop_rx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    tracing::info!(
        connections = connections.len(),
        "shutting down: answering in-flight requests"
    );
    drop(listener);
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
    let _ = flusher.await;
    let _ = coordinator.await;
    let _ = gauges.await;
    let _ = transactions.await;
    let _ = retention.await;
    let _ = cleaner.await;
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.close())
        .await
        .map_err(|e| BrokerError::Metadata(format!("close task failed: {e}")))?;
    tracing::info!("broker stopped cleanly");
    Ok(())
}

async fn flush_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_millis(
        broker
            .config
            .get_i64("log.flush.scheduler.interval.ms")
            .max(1) as u64,
    );
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
                let _ = tokio::task::spawn_blocking(move || tick(&b)).await;
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
                let _ = tokio::task::spawn_blocking(move || crate::metrics::update_gauges(&b)).await;
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

async fn serve_connection(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(64 * 1024, read);
    let max_frame = broker.config.get_i64("socket.request.max.bytes").max(1) as usize;
    crate::metrics::connection_opened();
    let outcome = connection_loop(&broker, &mut read, &mut write, max_frame, peer, stop).await;
    crate::metrics::connection_closed();
    match outcome {
        Close::Normal => tracing::debug!(%peer, "connection closed"),
        Close::Refused(reason) => {
            crate::metrics::error("connection", "refused");
            tracing::warn!(%peer, reason, "closing connection")
        }
        Close::Io(e) => tracing::debug!(%peer, error = %e, "connection error"),
    }
    let _ = write.shutdown().await;
}

async fn connection_loop(
    broker: &Arc<Broker>,
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    max_frame: usize,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Close {
    loop {
        // Between requests is the only place a connection stops for shutdown.
        let size = tokio::select! {
            r = read.read_i32() => match r {
                Ok(size) => size,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Close::Normal,
                Err(e) => return Close::Io(e),
            },
            _ = stop.changed() => return Close::Normal,
        };
        let size = match frame::check_frame_size(size, max_frame) {
            Ok(s) => s,
            Err(reason) => return Close::Refused(reason),
        };
        // Read into uninitialised capacity: zeroing a buffer the read overwrites cost 2% of
        // the broker's CPU under produce load (perf, bench/profiles/README.md).
        let mut buf = BytesMut::with_capacity(size);
        while buf.len() < size {
            let want = size - buf.len();
            match (&mut *read).take(want as u64).read_buf(&mut buf).await {
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
        let response = match handle_frame(broker, raw, frame, peer, stop.clone()).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(reason) => return Close::Refused(reason),
        };
        if let Err(e) = write.write_all(&response).await {
            return Close::Io(e);
        }
    }
}

/// Decodes, dispatches and encodes one request. `Ok(None)`: no response is due (acks=0).
async fn handle_frame(
    broker: &Arc<Broker>,
    raw: RawHeader,
    frame: Bytes,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) -> Result<Option<Bytes>, String> {
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
                .map(Some)
                .map_err(|e| e.to_string());
        }
        return Err(format!(
            "{api:?} v{} is not supported (Gregor serves v{}-v{})",
            raw.api_version, spec.min, spec.max
        ));
    }
    let started = std::time::Instant::now();
    let (header, request) = frame::decode_request(frame).map_err(|e| e.to_string())?;
    let version = header.request_api_version;
    let ctx = RequestContext {
        broker: broker.clone(),
        header,
        version,
        shutdown: stop,
        peer,
    };
    let Some(body) = api::dispatch(&ctx, request).await else {
        crate::metrics::request_done(api, started.elapsed());
        return Ok(None);
    };
    match frame::encode_response(api, version, raw.correlation_id, &body) {
        Ok(bytes) => {
            crate::metrics::request_done(api, started.elapsed());
            Ok(Some(bytes))
        }
        Err(e) => {
            tracing::error!(api = ?api, version, error = %e, "could not encode a response");
            Err(e.to_string())
        }
    }
}
