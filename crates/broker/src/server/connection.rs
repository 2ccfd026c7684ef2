//! Listener and connections.
//!
//! A connection reads one request frame at a time and answers in request order. Produce
//! requests are pipelined: each is appended as soon as it is read, and the connection
//! reads on (up to `PIPELINE_MAX` waiting) while earlier ones wait for fsyncs or replicas;
//! any other request is handled only once every earlier one has been answered. A frame over `socket.request.max.bytes`, a
//! truncated or undecodable frame, or an unknown API key closes that connection with one
//! log line (at most one per peer and reason in `log.refusals.interval.ms`: `limits.rs`); the
//! broker keeps serving everyone else. A request at a version Gregor does not
//! serve gets Kafka's answer: ApiVersions replies v0 with `UNSUPPORTED_VERSION` and the
//! supported ranges (KIP-511); any other API closes the connection, as Kafka does.
//!
//! What a connection may hold is bounded: a request's bytes are counted against
//! `queued.max.request.bytes` before its body is read, a request must arrive whole within
//! `request.receive.timeout.ms`, a connection without requests closes after
//! `connections.max.idle.ms`, and between requests a connection holds a 4 KiB read buffer
//! and no request's state.

use super::limits::{ConnectionSlot, Limits, MemoryPermit, Reason, Refusal};
use super::*;
use crate::quota::{Client, Kind};

/// Why a connection ended.
enum Close {
    /// The client closed it, or the broker is stopping.
    Normal,
    /// The broker closed it: bad input, a limit, a failed authentication; counted and
    /// logged (at most once per peer and reason in an interval).
    Refused(Refusal),
    Io(std::io::Error),
}

impl Close {
    fn refused(reason: Reason, detail: impl Into<String>) -> Close {
        Close::Refused(Refusal::new(reason, detail))
    }
}

/// Accepts connections on one listener until the task is aborted.
pub(super) async fn accept_loop(
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

/// Logs and counts a connection the broker closes or does not take: the first of each
/// peer and reason in an interval at WARN (idle connections at DEBUG), the rest summed up
/// by `refusal_summaries`.
pub(super) fn log_refusal(limits: &Limits, peer: SocketAddr, listener: &str, refusal: &Refusal) {
    let logged = limits.refusals.note(peer.ip(), refusal.reason);
    if refusal.reason == Reason::Idle {
        tracing::debug!(%peer, listener, detail = %refusal.detail, "closing idle connection");
    } else if logged {
        tracing::warn!(%peer, listener, reason = refusal.reason.label(), detail = %refusal.detail, "closing connection (further ones from this peer for this reason are summed up once per log.refusals.interval.ms)");
    }
}

pub(super) async fn serve_connection(
    broker: Arc<Broker>,
    limits: Arc<Limits>,
    slot: ConnectionSlot,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let outcome = match (listener.protocol.tls(), &broker.security.tls) {
        (true, Some(tls)) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server(listener.protocol.sasl()));
            match Box::pin(tokio::time::timeout(
                TLS_HANDSHAKE_TIMEOUT,
                acceptor.accept(stream),
            ))
            .await
            {
                Ok(Ok(tls_stream)) => {
                    let principal = tls_stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(crate::security::tls::principal_of);
                    let session = Session::new(&listener, peer.ip(), principal);
                    Box::pin(serve_stream(
                        &broker, &limits, tls_stream, peer, session, stop,
                    ))
                    .await
                }
                Ok(Err(e)) => {
                    Close::refused(Reason::TlsHandshake, format!("TLS handshake failed: {e}"))
                }
                Err(_) => Close::refused(Reason::TlsHandshake, "TLS handshake timed out"),
            }
        }
        (true, None) => Close::refused(Reason::Internal, "TLS listener without TLS settings"),
        (false, _) => {
            let session = Session::new(&listener, peer.ip(), None);
            Box::pin(serve_stream(&broker, &limits, stream, peer, session, stop)).await
        }
    };
    // The gauge of open connections goes down with the slot.
    drop(slot);
    match outcome {
        Close::Normal => tracing::debug!(%peer, "connection closed"),
        Close::Refused(refusal) => log_refusal(&limits, peer, &listener.name, &refusal),
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

/// A connection's read buffer: enough for the small requests a client sends back to back
/// in one read; a larger request's body bypasses it, read straight into its own buffer.
const READ_BUFFER_BYTES: usize = 4 * 1024;

async fn serve_stream<S: Socket>(
    broker: &Arc<Broker>,
    limits: &Limits,
    stream: S,
    peer: SocketAddr,
    mut session: Session,
    stop: watch::Receiver<bool>,
) -> Close {
    let mut stream = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    let max_frame = broker.config.settings().socket_request_max_bytes.max(1) as usize;
    let io = ConnectionIo {
        limits,
        max_frame,
        peer,
    };
    let outcome = connection_loop(broker, &mut stream, io, &mut session, stop).await;
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
    /// A failed authentication: wait, answer, close (with why, for the log).
    SendAndClose(Bytes, Duration, String),
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
        Reply::SendAndClose(bytes, delay, why) => {
            tokio::time::sleep(delay).await;
            let _ = stream.write_all(&bytes).await;
            let _ = stream.flush().await;
            Err(Close::refused(
                Reason::AuthenticationFailed,
                format!("authentication failed: {why}"),
            ))
        }
        Reply::Later(task) => Box::pin(send_reply(stream, produced(task.await)?)).await,
    }
}

/// A pipelined Produce's answer, or why the connection closes (the broker failed).
fn produced(done: Result<Result<Reply, String>, tokio::task::JoinError>) -> Result<Reply, Close> {
    match done {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(reason)) => Err(Close::refused(Reason::Internal, reason)),
        Err(e) => Err(Close::refused(
            Reason::Internal,
            format!("a produce task failed: {e}"),
        )),
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

/// What a connection reads under: the broker's limits, its largest frame, its peer.
struct ConnectionIo<'a> {
    limits: &'a Limits,
    max_frame: usize,
    peer: SocketAddr,
}

async fn connection_loop<S: Socket>(
    broker: &Arc<Broker>,
    stream: &mut BufReader<S>,
    io: ConnectionIo<'_>,
    session: &mut Session,
    mut stop: watch::Receiver<bool>,
) -> Close {
    // Whether Fetch responses may be sent from the files (plain TCP), decided once.
    let zero_copy = stream.get_ref().tcp().is_some() && broker.config.settings().fetch_sendfile;
    let mut inflight = std::collections::VecDeque::new();
    // When the connection closes for idleness, unless a request comes (or is still owed
    // an answer) before.
    let idle_after = io.limits.idle;
    let idle_from_now = || idle_after.map(|d| tokio::time::Instant::now() + d);
    let mut idle_at = idle_from_now();
    // A client over a quota: nothing more is read until then (its answers still go out).
    let mut muted_until: Option<tokio::time::Instant> = None;
    loop {
        // Between requests is the only place a connection stops for shutdown (after the
        // answers it owes).
        if *stop.borrow() {
            // Stopping: no new request is read; the answers owed go out first.
            return match Box::pin(drain(stream, &mut inflight)).await {
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
            r = stream.fill_buf(), if inflight.len() < PIPELINE_MAX && muted_until.is_none() => Next::Input(r.map(|b| b.is_empty())),
            () = sleep_until_some(muted_until), if muted_until.is_some() => {
                muted_until = None;
                idle_at = idle_from_now();
                continue;
            }
            () = sleep_until_some(idle_at), if inflight.is_empty() && muted_until.is_none() => {
                return Close::refused(Reason::Idle, format!(
                    "no request for {} ms (connections.max.idle.ms)",
                    idle_after.unwrap_or_default().as_millis()
                ));
            }
        };
        match next {
            Next::Answer(done) => {
                inflight.pop_front();
                let reply = match produced(done) {
                    Ok(reply) => reply,
                    Err(close) => return close,
                };
                if let Err(close) = Box::pin(send_reply(stream, reply)).await {
                    return close;
                }
                idle_at = idle_from_now();
                continue;
            }
            Next::Input(Ok(true)) => {
                return match Box::pin(drain(stream, &mut inflight)).await {
                    Ok(()) => Close::Normal,
                    Err(close) => close,
                };
            }
            Next::Input(Err(e)) => return Close::Io(e),
            Next::Input(Ok(false)) => {}
        }
        // Before authentication, a frame may hold only a SASL or ApiVersions request.
        let limit = if session.authenticated() {
            io.max_frame
        } else {
            io.max_frame.min(UNAUTHENTICATED_FRAME_MAX_BYTES)
        };
        let (frame, permit) = match Box::pin(read_frame(stream, limit, io.limits)).await {
            Ok(frame) => frame,
            Err(close) => return close,
        };
        let raw = match frame::peek_header(&frame) {
            Ok(raw) => raw,
            Err(e) => return Close::refused(Reason::Undecodable, e.to_string()),
        };
        // Only Produce requests overlap; anything else is handled once every earlier
        // request has been answered, as Kafka handles a connection's requests in order.
        if raw.api_key != ApiKey::Produce as i16 {
            if let Err(close) = Box::pin(drain(stream, &mut inflight)).await {
                return close;
            }
        }
        // Boxed: the state of a request being handled is allocated only while it is.
        let handled = Box::pin(handle_frame(
            broker,
            raw,
            frame,
            io.peer,
            session,
            stop.clone(),
            zero_copy,
        ))
        .await;
        // The request's bytes were handled (a Produce appended): they leave the count.
        drop(permit);
        let handled = handled.map(|(reply, throttle)| {
            if !throttle.is_zero() {
                muted_until = Some(tokio::time::Instant::now() + throttle);
            }
            reply
        });
        match handled {
            Ok(Reply::Later(task)) => inflight.push_back(task),
            Ok(reply) => {
                if let Err(close) = Box::pin(drain(stream, &mut inflight)).await {
                    return close;
                }
                if let Err(close) = Box::pin(send_reply(stream, reply)).await {
                    return close;
                }
            }
            Err(refusal) => return Close::Refused(refusal),
        }
        idle_at = idle_from_now();
    }
}

/// Sleeps until `at`, or for ever when there is none.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads one request frame of at most `limit` bytes (its size first), with its share of
/// `queued.max.request.bytes`, taken before the body is read. The frame must arrive within
/// `request.receive.timeout.ms` of its first byte, not counting the wait for memory.
async fn read_frame<S: Socket>(
    stream: &mut BufReader<S>,
    limit: usize,
    limits: &Limits,
) -> Result<(Bytes, MemoryPermit), Close> {
    let budget = limits.receive_timeout;
    let started = tokio::time::Instant::now();
    let too_slow = |got: usize, size: Option<usize>| {
        Close::refused(
            Reason::ReceiveTimeout,
            match size {
                Some(size) => format!("{got} of the {size} bytes of a request arrived in {} ms (request.receive.timeout.ms); the client is too slow or stalled", budget.as_millis()),
                None => format!("a request's size did not arrive within {} ms (request.receive.timeout.ms)", budget.as_millis()),
            },
        )
    };
    let size = match tokio::time::timeout(budget, stream.read_i32()).await {
        Err(_) => return Err(too_slow(0, None)),
        Ok(Ok(size)) => size,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(Close::refused(
                Reason::Truncated,
                "truncated frame: peer closed inside a frame's size",
            ))
        }
        Ok(Err(e)) => return Err(Close::Io(e)),
    };
    let size = match frame::check_frame_size(size, limit) {
        Ok(s) => s,
        Err(reason) if size < 0 => return Err(Close::refused(Reason::BadFrameSize, reason)),
        Err(reason) => return Err(Close::refused(Reason::FrameTooLarge, reason)),
    };
    let spent = started.elapsed();
    let permit = limits.memory.acquire(size).await;
    let deadline = tokio::time::Instant::now() + budget.saturating_sub(spent);
    // Read into uninitialised capacity: zeroing a buffer the read overwrites cost 2% of
    // the broker's CPU under produce load (perf, bench/profiles/README.md).
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        let want = size - buf.len();
        let mut body = (&mut *stream).take(want as u64);
        match tokio::time::timeout_at(deadline, body.read_buf(&mut buf)).await {
            Err(_) => return Err(too_slow(buf.len(), Some(size))),
            Ok(Ok(0)) => {
                return Err(Close::refused(
                    Reason::Truncated,
                    format!(
                        "truncated frame: peer closed before sending the {size} bytes it announced"
                    ),
                ))
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Close::Io(e)),
        }
    }
    Ok((buf.freeze(), permit))
}

/// Writes bytes and file ranges in order; file ranges go with `sendfile` on plain TCP
/// (and are read and written elsewhere, which `handle_frame` avoids).
async fn send_parts<S: Socket>(stream: &mut S, parts: &[zero_copy::Part]) -> std::io::Result<()> {
    for part in parts {
        match part {
            zero_copy::Part::Bytes(b) => stream.write_all(b).await?,
            zero_copy::Part::File(region) => match (stream.tcp(), region.file.fd()) {
                (Some(tcp), Some(file)) => {
                    send_file(tcp, std::os::fd::AsFd::as_fd(&*file), region).await?
                }
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

/// Decodes, dispatches and encodes one request, with how long the client is to be
/// throttled for going over a quota (`quota.rs`).
async fn handle_frame(
    broker: &Arc<Broker>,
    raw: RawHeader,
    frame: Bytes,
    peer: SocketAddr,
    session: &mut Session,
    stop: watch::Receiver<bool>,
    zero_copy: bool,
) -> Result<(Reply, Duration), Refusal> {
    let api = match admit(&raw, session)? {
        Ok(api) => api,
        Err(reply) => return Ok((reply, Duration::ZERO)),
    };
    let started = tokio::time::Instant::now();
    let request_bytes = frame.len();
    let (header, request) = frame::decode_request(frame)
        .map_err(|e| Refusal::new(Reason::Undecodable, e.to_string()))?;
    let metered = Metered::new(broker, session, &header, &request);
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
    // How long the client is to be throttled, set by the requests quotas measure.
    let mut throttle = Duration::ZERO;
    let (body, close_after) = match request {
        kafka_protocol::messages::RequestKind::SaslHandshake(r) => (
            ResponseKind::SaslHandshake(session.handshake(security, &r)),
            None,
        ),
        kafka_protocol::messages::RequestKind::SaslAuthenticate(r) => {
            match session.authenticate(security, &broker.image(), &r) {
                SaslOutcome::Reply(resp) => (ResponseKind::SaslAuthenticate(resp), None),
                SaslOutcome::Fail(resp, delay, why) => {
                    (ResponseKind::SaslAuthenticate(resp), Some((delay, why)))
                }
            }
        }
        kafka_protocol::messages::RequestKind::Produce(r) => {
            let answer = api::produce_pipelined(ctx(header, None), r).await;
            let throttle = metered
                .record(Kind::Produce, request_bytes as f64, false)
                .max(metered.record_time(started));
            let correlation_id = raw.correlation_id;
            let task = tokio::spawn(async move {
                let Some(mut body) = answer.await else {
                    crate::metrics::request_done(api, started.elapsed());
                    return Ok(Reply::None);
                };
                if let ResponseKind::Produce(r) = &mut body {
                    r.throttle_time_ms = throttle_ms(throttle);
                }
                let bytes = encode(api, version, correlation_id, &body)?;
                crate::metrics::request_done(api, started.elapsed());
                Ok(Reply::Send(bytes))
            });
            return Ok((Reply::Later(task), throttle));
        }
        request => {
            let ctx = ctx(
                header,
                (zero_copy && api == ApiKey::Fetch).then(Default::default),
            );
            let Some(mut body) = api::dispatch(&ctx, request).await else {
                crate::metrics::request_done(api, started.elapsed());
                return Ok((Reply::None, metered.record_time(started)));
            };
            let mut regions = ctx.deferred.map(|d| d.take()).unwrap_or_default();
            // A Fetch's time is mostly its long poll, which is waiting, not work: it is not
            // counted against request_percentage.
            if api != ApiKey::Fetch {
                throttle = metered.record_time(started);
            }
            if let ResponseKind::Fetch(r) = &mut body {
                let fetched = metered.record(Kind::Fetch, fetched_bytes(r, &regions), true);
                if !fetched.is_zero() {
                    // Over the fetch quota: answered without records, as Kafka does.
                    r.responses.clear();
                    regions.clear();
                }
                throttle = throttle.max(fetched);
                r.throttle_time_ms = throttle_ms(throttle);
            }
            if !regions.is_empty() {
                return encode_parts(api, version, raw.correlation_id, body, &regions, started)
                    .map(|reply| (reply, throttle))
                    .map_err(|e| Refusal::new(Reason::Internal, e));
            }
            (body, None)
        }
    };
    let bytes = encode(api, version, raw.correlation_id, &body)
        .map_err(|e| Refusal::new(Reason::Internal, e))?;
    crate::metrics::request_done(api, started.elapsed());
    Ok((
        match close_after {
            Some((delay, why)) => Reply::SendAndClose(bytes, delay, why),
            None => Reply::Send(bytes),
        },
        throttle,
    ))
}

/// A request's client, for its quotas.
struct Metered<'a> {
    broker: &'a Arc<Broker>,
    /// The image with the quotas, the user and the client id; `None` when no quota can
    /// apply: the cluster has none, or the request is another broker's (Kafka bounds
    /// replication with its own throttle).
    client: Option<(Arc<MetadataImage>, String, String)>,
}

impl<'a> Metered<'a> {
    fn new(
        broker: &'a Arc<Broker>,
        session: &Session,
        header: &kafka_protocol::messages::RequestHeader,
        request: &kafka_protocol::messages::RequestKind,
    ) -> Self {
        let image = broker.image();
        let client =
            (crate::quota::Quotas::any(&image) && !exempt_from_quotas(request)).then(|| {
                let user = crate::quota::user_of(&session.caller.principal).to_string();
                let client_id = header.client_id.as_ref().map(|c| c.to_string());
                (image, user, client_id.unwrap_or_default())
            });
        Metered { broker, client }
    }

    fn record(&self, kind: Kind, amount: f64, unrecord_if_throttled: bool) -> Duration {
        let Some((image, user, client_id)) = &self.client else {
            return Duration::ZERO;
        };
        self.broker.quotas.record(
            image,
            kind,
            &Client { user, client_id },
            amount,
            tokio::time::Instant::now(),
            unrecord_if_throttled,
        )
    }

    /// Records the time spent handling the request (`request_percentage`: percent of one
    /// thread, so a second of handling counts 100).
    fn record_time(&self, started: tokio::time::Instant) -> Duration {
        self.record(
            Kind::Request,
            started.elapsed().as_secs_f64() * 100.0,
            false,
        )
    }
}

/// Whether a request is another broker's: a follower's Fetch, or an API only brokers send.
fn exempt_from_quotas(request: &kafka_protocol::messages::RequestKind) -> bool {
    use kafka_protocol::messages::RequestKind;
    match request {
        RequestKind::Fetch(f) => f.replica_id.0 >= 0 || f.replica_state.replica_id.0 >= 0,
        RequestKind::WriteTxnMarkers(_) => true,
        _ => false,
    }
}

/// The record bytes a Fetch response carries: the records in it, and the file ranges
/// its placeholders stand for.
fn fetched_bytes(
    r: &kafka_protocol::messages::FetchResponse,
    regions: &[gregor_storage::FileRegion],
) -> f64 {
    let inline: usize = r
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.as_ref().map(|b| b.len()))
        .sum();
    let deferred: usize = regions.iter().map(|r| r.len).sum();
    (inline + deferred).saturating_sub(regions.len() * zero_copy::PLACEHOLDER_LEN) as f64
}

fn throttle_ms(throttle: Duration) -> i32 {
    i32::try_from(throttle.as_millis()).unwrap_or(i32::MAX)
}

/// Whether a request with header `raw` may be handled on this connection now: its API
/// (`Ok(Ok(api))`), an answer to send instead (ApiVersions at a version not served), or
/// why the connection is closed (an API or version not served, a request before SASL
/// authentication or after the session expired).
fn admit(raw: &RawHeader, session: &Session) -> Result<Result<ApiKey, Reply>, Refusal> {
    let Ok(api) = ApiKey::try_from(raw.api_key) else {
        return Err(Refusal::new(
            Reason::UnknownApi,
            format!("unknown API key {}", raw.api_key),
        ));
    };
    let Some(spec) = api::spec(raw.api_key) else {
        return Err(Refusal::new(
            Reason::UnknownApi,
            format!("API {api:?} (key {}) is not served by Gregor", raw.api_key),
        ));
    };
    if raw.api_version < spec.min || raw.api_version > spec.max {
        if api == ApiKey::ApiVersions {
            let body = ResponseKind::ApiVersions(api_versions::unsupported_version());
            return frame::encode_response(api, 0, raw.correlation_id, &body)
                .map(|bytes| Err(Reply::Send(bytes)))
                .map_err(|e| Refusal::new(Reason::Internal, e.to_string()));
        }
        return Err(Refusal::new(
            Reason::UnsupportedVersion,
            format!(
                "{api:?} v{} is not supported (Gregor serves v{}-v{})",
                raw.api_version, spec.min, spec.max
            ),
        ));
    }
    let is_sasl = matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
    if !is_sasl && api != ApiKey::ApiVersions {
        if !session.authenticated() {
            return Err(Refusal::new(Reason::Unauthenticated, format!(
                "{api:?} before SASL authentication on listener {}; configure the client with security.protocol={} and a sasl.mechanism",
                session.listener,
                session.protocol.name()
            )));
        }
        if session.expired() {
            return Err(Refusal::new(Reason::SessionExpired, "the SASL session expired (connections.max.reauth.ms) and the client did not re-authenticate"));
        }
    }
    Ok(Ok(api))
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
