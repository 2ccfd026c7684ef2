//! TLS with rustls (TLS 1.2 and 1.3 only): the listeners' server side, with certificates
//! re-read when their files change, and the client side brokers use to reach each other.
//!
//! The key, certificate chain and trusted CAs come from PEM files (Kafka's
//! `ssl.keystore.type=PEM`). Before each handshake the files' modification times are
//! compared with those last loaded (at most once a second); changed files are loaded into
//! a new configuration for the handshakes that follow. A file that fails to load keeps the
//! previous configuration and logs why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::BrokerConfig;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(spec: &str) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut v = Vec::new();
    if spec.contains("TLSv1.3") {
        v.push(&rustls::version::TLS13);
    }
    if spec.contains("TLSv1.2") {
        v.push(&rustls::version::TLS12);
    }
    v
}

/// A certificate chain and its private key (`cert` and `key` may be the same PEM file).
/// An error names the file and ends with `hint`.
fn load_identity(
    cert: &Path,
    key: &Path,
    hint: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let what = |path: &Path| {
        let path = path.display().to_string();
        move |e: rustls::pki_types::pem::Error| format!("{path}: {e}; {hint}")
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(what(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(what(cert))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE in it; {hint}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(what(key))?;
    Ok((certs, key))
}

const KEYSTORE_HINT: &str =
    "ssl.keystore.location must be a PEM file with the private key and the certificate chain";

fn load_chain(
    path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    load_identity(path, path, KEYSTORE_HINT)
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let what = |e: rustls::pki_types::pem::Error| {
        format!(
            "ssl.truststore.location {}: {e}; it must be a PEM file of CA certificates",
            path.display()
        )
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(what)? {
        roots
            .add(cert.map_err(what)?)
            .map_err(|e| format!("ssl.truststore.location {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "ssl.truststore.location {}: no CA certificate in it",
            path.display()
        ));
    }
    Ok(roots)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The settings TLS is built from.
#[derive(Debug, Clone)]
struct TlsFiles {
    keystore: PathBuf,
    truststore: Option<PathBuf>,
    client_auth: String,
    protocols: String,
}

impl TlsFiles {
    fn from_config(c: &BrokerConfig) -> Result<Self, String> {
        let keystore = c.get("ssl.keystore.location").trim();
        if keystore.is_empty() {
            return Err("an SSL or SASL_SSL listener needs ssl.keystore.location: a PEM file with the broker's private key and certificate chain".into());
        }
        let truststore = c.get("ssl.truststore.location").trim();
        let client_auth = c.get("ssl.client.auth").to_string();
        if client_auth != "none" && truststore.is_empty() {
            return Err(format!("ssl.client.auth={client_auth} needs ssl.truststore.location: the PEM file of CAs client certificates must chain to"));
        }
        Ok(TlsFiles {
            keystore: PathBuf::from(keystore),
            truststore: (!truststore.is_empty()).then(|| PathBuf::from(truststore)),
            client_auth,
            protocols: c.get("ssl.enabled.protocols").to_string(),
        })
    }

    fn stamps(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        (
            mtime(&self.keystore),
            self.truststore.as_deref().and_then(mtime),
        )
    }

    /// The server configuration; `ask_client_cert` false never asks for a client
    /// certificate (SASL_SSL listeners: as in Kafka since KIP-684, `ssl.client.auth`
    /// applies to SSL listeners only, SASL authenticates the others).
    fn server_config(&self, ask_client_cert: bool) -> Result<Arc<ServerConfig>, String> {
        let (certs, key) = load_chain(&self.keystore)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions(&self.protocols))
            .map_err(|e| format!("ssl.enabled.protocols: {e}"))?;
        let builder = match (&self.truststore, self.client_auth.as_str()) {
            (Some(path), "required" | "requested") if ask_client_cert => {
                let roots = Arc::new(load_roots(path)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
                let verifier = if self.client_auth == "requested" {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| format!("ssl.truststore.location: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("ssl.keystore.location {}: {e}", self.keystore.display()))?;
        Ok(Arc::new(config))
    }

    fn mutual_config(&self) -> Result<Arc<ServerConfig>, String> {
        let mut files = self.clone();
        files.client_auth = "required".into();
        files.server_config(true)
    }

    /// Every configuration, loaded together so a reload changes all or none.
    fn load_all(&self) -> Result<Loaded, String> {
        let with_truststore = self.truststore.is_some();
        Ok(Loaded {
            stamps: self.stamps(),
            checked: Instant::now(),
            server: self.server_config(true)?,
            server_sasl: self.server_config(false)?,
            mutual: with_truststore.then(|| self.mutual_config()).transpose()?,
            client: with_truststore.then(|| self.client_config()).transpose()?,
        })
    }

    fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let path = self.truststore.as_ref().ok_or(
            "brokers reaching each other over SSL need ssl.truststore.location: the CA their certificates chain to",
        )?;
        let roots = load_roots(path)?;
        let (certs, key) = load_chain(&self.keystore)?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions(&self.protocols))
            .map_err(|e| format!("ssl.enabled.protocols: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("ssl.keystore.location: {e}"))?;
        Ok(Arc::new(config))
    }
}

struct Loaded {
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
    server: Arc<ServerConfig>,
    server_sasl: Arc<ServerConfig>,
    /// Requires a client certificate whatever `ssl.client.auth` says (the metadata log's
    /// port); there only when a truststore is set.
    mutual: Option<Arc<ServerConfig>>,
    client: Option<Arc<ClientConfig>>,
}

/// TLS for this broker's listeners and its connections to other brokers.
pub struct Tls {
    files: TlsFiles,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Loads the certificates; an error says which file and what to do.
    pub fn new(c: &BrokerConfig) -> Result<Self, String> {
        let files = TlsFiles::from_config(c)?;
        Ok(Tls {
            loaded: Mutex::new(files.load_all()?),
            files,
        })
    }

    /// The loaded configurations, re-read first if the files changed (checked at most
    /// once a second). Files that cannot be loaded leave the previous ones in use.
    fn refresh(&self) -> std::sync::MutexGuard<'_, Loaded> {
        let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if l.checked.elapsed() >= Duration::from_secs(1) {
            l.checked = Instant::now();
            let stamps = self.files.stamps();
            if stamps != l.stamps {
                l.stamps = stamps;
                match self.files.load_all() {
                    Ok(fresh) => {
                        *l = Loaded { stamps, ..fresh };
                        tracing::info!(keystore = %self.files.keystore.display(), "TLS certificates reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificates changed but cannot be loaded; still using the previous ones")
                    }
                }
            }
        }
        l
    }

    /// The server configuration for the next handshake.
    pub fn server(&self, sasl: bool) -> Arc<ServerConfig> {
        let l = self.refresh();
        if sasl {
            l.server_sasl.clone()
        } else {
            l.server.clone()
        }
    }

    /// A server configuration that requires a client certificate from the truststore's
    /// CAs, whatever `ssl.client.auth` says (for the metadata log's port).
    pub fn server_mutual(&self) -> Result<Arc<ServerConfig>, String> {
        self.refresh()
            .mutual
            .clone()
            .ok_or_else(|| "an SSL controller listener needs ssl.truststore.location".into())
    }

    /// The principal of this broker's own certificate (the keystore's first).
    pub fn own_principal(&self) -> Option<String> {
        let (certs, _) = load_chain(&self.files.keystore).ok()?;
        certs.first().and_then(principal_of)
    }

    /// The client configuration for connections to other brokers, if a truststore is set.
    pub fn client(&self) -> Option<Arc<ClientConfig>> {
        self.refresh().client.clone()
    }
}

/// A stream over TCP, with or without TLS.
pub use gregor_cluster::raft_net::{BoxStream, Stream};

/// Connects to another broker at `host:port`, over TLS when `tls` is given (the broker's
/// certificate must name `host`, as a DNS name or an IP address).
pub async fn connect(
    addr: &str,
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
) -> std::io::Result<BoxStream> {
    let tcp = tokio::time::timeout(timeout, gregor_cluster::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    let Some(config) = tls else {
        return Ok(Box::new(tcp));
    };
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    Ok(Box::new(stream))
}

/// The principal of a client certificate: `User:` and its subject as RFC 2253 writes it
/// (most specific part first: `CN=client,O=example`), as Kafka's default principal
/// builder does.
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut parts = Vec::new();
    for rdn in parsed.subject().iter_rdn() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|a| {
                let key = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                    .map(str::to_string)
                    .unwrap_or_else(|_| a.attr_type().to_id_string());
                let value = a.as_str().map(escape_dn).unwrap_or_default();
                format!("{key}={value}")
            })
            .collect();
        parts.push(attrs.join("+"));
    }
    parts.reverse();
    Some(format!("User:{}", parts.join(",")))
}

fn escape_dn(v: &str) -> String {
    let mut out = String::new();
    for (i, c) in v.chars().enumerate() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A client configuration for tools: trusts the CAs in `ca` and, with `identity` (a
/// certificate chain file and a key file, which may be the same PEM file), presents
/// that certificate.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    let roots = load_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions("TLSv1.2,TLSv1.3"))
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let (certs, key) = load_identity(
                cert,
                key,
                "ssl.keystore.location (or ssl.certificate.location and ssl.key.location) must hold the client's certificate and key in PEM",
            )?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("{}: {e}", cert.display()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The metadata log's connections over TLS: both ends present their certificates and
/// check the other's against the truststore (mutual TLS), and a peer is admitted only if
/// its certificate's principal is a broker's: `admit` decides (this broker's own
/// principal, `super.users`, or ClusterAction on the cluster), so that a client holding a
/// certificate from the same CA cannot write to the metadata log.
pub struct TlsTransport {
    pub tls: Arc<Tls>,
    pub admit: Admit,
}

/// Whether a peer's principal (at an address) may take part in the metadata log.
pub type Admit = Arc<dyn Fn(&str, std::net::IpAddr) -> bool + Send + Sync>;

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("tls", &self.tls)
            .finish()
    }
}

impl gregor_cluster::raft_net::Transport for TlsTransport {
    fn connect<'a>(
        &'a self,
        addr: &'a str,
        timeout: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<BoxStream>> + Send + 'a>>
    {
        Box::pin(async move {
            let client = self.tls.client().ok_or_else(|| {
                std::io::Error::other("an SSL controller listener needs ssl.truststore.location")
            })?;
            connect(addr, Some(client), timeout).await
        })
    }

    fn accept(
        &self,
        tcp: gregor_cluster::net::TcpStream,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<BoxStream>> + Send + 'static>,
    > {
        let config = self.tls.server_mutual();
        let admit = self.admit.clone();
        Box::pin(async move {
            let _ = tcp.set_nodelay(true);
            let peer = tcp.peer_addr()?;
            let config = config.map_err(std::io::Error::other)?;
            let stream = tokio_rustls::TlsAcceptor::from(config)
                .accept(tcp)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
            let principal = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(principal_of);
            match principal {
                Some(p) if admit(&p, peer.ip()) => Ok(Box::new(stream) as BoxStream),
                Some(p) => Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("certificate principal {p} is not a broker of this cluster; a broker's principal must be in super.users (or hold ClusterAction on the cluster)"),
                )),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the peer's certificate has no readable subject",
                )),
            }
        })
    }
}
