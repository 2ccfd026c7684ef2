//! The metrics endpoint: Prometheus text over HTTP/1, or over HTTPS with the broker's own
//! certificate (`metrics.ssl.enable`), with optional HTTP basic authentication
//! (`metrics.basic.auth.user` and `metrics.basic.auth.password.file`).
//!
//! What it serves names every topic, partition, group and transactional state with its
//! offsets and lag, so it is bound to loopback by default; a broker that serves it on any
//! other address without authentication says so at start. Bounded like the Kafka port: at
//! most [`CONNECTIONS_MAX`] connections at once, a request's headers within
//! [`HEADER_TIMEOUT`], a TLS handshake within the same time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::config::BrokerConfig;
use crate::security::tls::Tls;

const CONNECTIONS_MAX: usize = 64;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may read the metrics: the `Authorization` header a scrape must send.
#[derive(Clone)]
pub struct BasicAuth {
    expected: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicAuth(..)")
    }
}

impl BasicAuth {
    pub fn new(user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        BasicAuth {
            expected: format!("Basic {token}"),
        }
    }

    /// Whether `header` carries the configured user and password (compared in time that
    /// does not depend on where they differ).
    pub fn admits(&self, header: Option<&[u8]>) -> bool {
        let Some(got) = header else {
            return false;
        };
        let want = self.expected.as_bytes();
        got.len() == want.len() && got.iter().zip(want).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
    }
}

/// How the endpoint is secured, from the settings.
#[derive(Debug, Default)]
pub struct Security {
    pub tls: Option<Arc<Tls>>,
    pub auth: Option<BasicAuth>,
}

impl Security {
    pub fn from_config(c: &BrokerConfig) -> Result<Self, String> {
        let user = c.get("metrics.basic.auth.user").trim().to_string();
        let file = c.get("metrics.basic.auth.password.file").trim().to_string();
        let auth = match (user.is_empty(), file.is_empty()) {
            (true, true) => None,
            (false, false) => {
                let password = std::fs::read_to_string(&file).map_err(|e| {
                    format!("metrics.basic.auth.password.file {file}: {e}; it must hold the password on its first line")
                })?;
                let password = password.lines().next().unwrap_or("").to_string();
                if password.is_empty() {
                    return Err(format!(
                        "metrics.basic.auth.password.file {file} is empty; put the password on its first line"
                    ));
                }
                Some(BasicAuth::new(&user, &password))
            }
            _ => return Err("metrics.basic.auth.user and metrics.basic.auth.password.file go together: set both, or neither".into()),
        };
        let tls = if c.settings().metrics_ssl_enable {
            Some(Arc::new(Tls::new(c).map_err(|e| {
                format!("metrics.ssl.enable needs the broker's certificate: {e}")
            })?))
        } else {
            None
        };
        Ok(Security { tls, auth })
    }
}

/// Installs the Prometheus recorder, registers the handles of `apis`, and starts the
/// endpoint. Call before partitions are opened, so their handles register with it.
pub fn start(
    addr: SocketAddr,
    security: Security,
    apis: impl IntoIterator<Item = kafka_protocol::messages::ApiKey>,
) -> Result<(), String> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("gregor_request_duration_seconds".into()),
            crate::metrics::LATENCY_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(
            Matcher::Full("gregor_log_flush_duration_seconds".into()),
            crate::metrics::LATENCY_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .build_recorder();
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}; choose another address with --metrics HOST:PORT, or --metrics off"))?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("a metrics recorder is already installed: {e}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let scheme = if security.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let authenticated = security.auth.is_some();
    if !addr.ip().is_loopback() && !authenticated {
        tracing::warn!(metrics = %addr, "the metrics endpoint is served without authentication on an address other hosts may reach: it names every topic, partition and group with offsets and lag. Set metrics.basic.auth.user and metrics.basic.auth.password.file (and metrics.ssl.enable), or keep it on 127.0.0.1");
    }
    tokio::spawn(serve(listener, handle, security));
    crate::metrics::describe();
    crate::metrics::register_apis(apis);
    tracing::info!(metrics = %addr, scheme, authenticated, "serving Prometheus metrics");
    Ok(())
}

/// Serves `handle`'s metrics on `listener` for the life of the process.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, security: Security) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    let security = Arc::new(security);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the limit, the connection is closed at once rather than queued.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let handle = handle.clone();
        let security = security.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match &security.tls {
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server(true));
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(stream, peer, handle, &security).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "metrics endpoint: TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "metrics endpoint: TLS handshake timed out")
                        }
                    }
                }
                None => connection(tcp, peer, handle, &security).await,
            }
        });
    }
}

async fn connection<S>(stream: S, peer: SocketAddr, handle: PrometheusHandle, security: &Security)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let auth = security.auth.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let response = answer(&request, &handle, auth.as_ref());
        if response.status() == StatusCode::UNAUTHORIZED {
            tracing::debug!(%peer, "metrics endpoint: a request without the right credentials");
        }
        async move { Ok::<_, Infallible>(response) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "metrics endpoint: connection ended");
    }
}

fn answer(
    request: &Request<Incoming>,
    handle: &PrometheusHandle,
    auth: Option<&BasicAuth>,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if let Some(auth) = auth {
        let header = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !auth.admits(header) {
            let mut r = reply(
                StatusCode::UNAUTHORIZED,
                "the metrics need a user and password (HTTP basic authentication)\n".into(),
            );
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"gregor metrics\""),
            );
            return r;
        }
    }
    if request.method() != hyper::Method::GET && request.method() != hyper::Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served\n".into(),
        );
    }
    let mut r = reply(StatusCode::OK, handle.render());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_admits_only_the_exact_credentials() {
        let auth = BasicAuth::new("prometheus", "s3cret");
        let header = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(auth.admits(Some(header("prometheus", "s3cret").as_bytes())));
        assert!(!auth.admits(Some(header("prometheus", "s3cre").as_bytes())));
        assert!(!auth.admits(Some(header("prometheus", "s3cret!").as_bytes())));
        assert!(!auth.admits(Some(header("other", "s3cret").as_bytes())));
        assert!(!auth.admits(Some(b"Bearer x")));
        assert!(!auth.admits(None));
    }
}
