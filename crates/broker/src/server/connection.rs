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

use super::*;

/// Why a connection ended.
enum Close {
    /// The client closed it, or the broker is stopping.
    Normal,
    /// The client sent something the broker will not serve; logged once.
    Refused(String),
    Io(std::io::Error),
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

pub(super) async fn serve_connection(
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
    let max_frame = broker.config.settings().socket_request_max_bytes.max(1) as usize;
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
    let zero_copy = stream.get_ref().tcp().is_some() && broker.config.settings().fetch_sendfile;
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
        // Before authentication, a frame may hold only a SASL or ApiVersions request.
        let limit = if session.authenticated() {
            max_frame
        } else {
            max_frame.min(UNAUTHENTICATED_FRAME_MAX_BYTES)
        };
        let frame = match read_frame(stream, limit).await {
            Ok(frame) => frame,
            Err(close) => return close,
        };
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

/// Reads one request frame of at most `limit` bytes (its size first).
async fn read_frame<S: Socket>(stream: &mut BufReader<S>, limit: usize) -> Result<Bytes, Close> {
    let size = match stream.read_i32().await {
        Ok(size) => size,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(Close::Refused(
                "truncated frame: peer closed inside a frame's size".into(),
            ))
        }
        Err(e) => return Err(Close::Io(e)),
    };
    let size = match frame::check_frame_size(size, limit) {
        Ok(s) => s,
        Err(reason) => return Err(Close::Refused(reason)),
    };
    // Read into uninitialised capacity: zeroing a buffer the read overwrites cost 2% of
    // the broker's CPU under produce load (perf, bench/profiles/README.md).
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        let want = size - buf.len();
        match (&mut *stream).take(want as u64).read_buf(&mut buf).await {
            Ok(0) => {
                return Err(Close::Refused(format!(
                    "truncated frame: peer closed before sending the {size} bytes it announced"
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(Close::Io(e)),
        }
    }
    Ok(buf.freeze())
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
    let api = match admit(&raw, session)? {
        Ok(api) => api,
        Err(reply) => return Ok(reply),
    };
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

/// Whether a request with header `raw` may be handled on this connection now: its API
/// (`Ok(Ok(api))`), an answer to send instead (ApiVersions at a version not served), or
/// why the connection is closed (an API or version not served, a request before SASL
/// authentication or after the session expired).
fn admit(raw: &RawHeader, session: &Session) -> Result<Result<ApiKey, Reply>, String> {
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
                .map(|bytes| Err(Reply::Send(bytes)))
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
