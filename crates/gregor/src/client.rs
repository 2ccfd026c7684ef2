//! A small Kafka client for the command-line tools, with messages from `kafka-protocol`.
//!
//! [`Client`] is one connection, one request at a time, that negotiates each API's version
//! with the broker (ApiVersions) so the tools work against any Kafka-compatible broker,
//! Apache Kafka included. [`Cluster`] adds the rest of a client's routing: the brokers from
//! Metadata, a connection per broker, partition leaders and group coordinators.

use std::collections::{BTreeMap, HashMap};

use bytes::{BufMut, Bytes, BytesMut};
use gregor_broker::security::scram::{Mechanism, ScramClient};
use gregor_broker::security::tls::BoxStream;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FindCoordinatorRequest, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response the tools accept.
const RESPONSE_MAX_BYTES: usize = 256 << 20;

/// A Kafka error code as its name and number, e.g. `UnknownTopicOrPartition (3)`.
pub fn code(c: i16) -> String {
    kafka_protocol::error::ResponseError::try_from_code(c)
        .map_or_else(|| format!("error code {c}"), |e| format!("{e:?} ({c})"))
}

/// How the tools reach brokers: Kafka client properties from `--command-config FILE`.
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    pub protocol: String,
    pub mechanism: String,
    pub username: String,
    pub password: String,
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

static SECURITY: std::sync::OnceLock<ClientSecurity> = std::sync::OnceLock::new();

/// A value of `sasl.jaas.config`'s `key="value"`.
fn jaas_value(jaas: &str, key: &str) -> Option<String> {
    let start = jaas.find(&format!("{key}="))? + key.len() + 1;
    let rest = jaas[start..].trim_start_matches('"');
    let end = rest.find('"').unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// Reads Kafka client properties (`key=value` lines, as Kafka's `--command-config`):
/// `security.protocol`, `sasl.mechanism`, `sasl.username` and `sasl.password` (or
/// `sasl.jaas.config`), `ssl.ca.location` (or `ssl.truststore.location`), and for a
/// client certificate `ssl.keystore.location` (key and chain in one PEM file) or
/// `ssl.certificate.location` with `ssl.key.location`.
pub fn configure(path: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --command-config {}: {e}", path.display()))?;
    let mut props = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| {
            format!(
                "--command-config {}: '{line}' is not key=value",
                path.display()
            )
        })?;
        props.insert(k.trim().to_string(), v.trim().to_string());
    }
    let get = |k: &str| props.get(k).cloned().unwrap_or_default();
    let protocol = props
        .get("security.protocol")
        .cloned()
        .unwrap_or_else(|| "PLAINTEXT".into())
        .to_ascii_uppercase();
    let jaas = get("sasl.jaas.config");
    let mut sec = ClientSecurity {
        mechanism: props
            .get("sasl.mechanism")
            .or_else(|| props.get("sasl.mechanisms"))
            .cloned()
            .unwrap_or_else(|| "PLAIN".into())
            .to_ascii_uppercase(),
        username: props
            .get("sasl.username")
            .cloned()
            .or_else(|| jaas_value(&jaas, "username"))
            .unwrap_or_default(),
        password: props
            .get("sasl.password")
            .cloned()
            .or_else(|| jaas_value(&jaas, "password"))
            .unwrap_or_default(),
        tls: None,
        protocol: protocol.clone(),
    };
    if !matches!(
        protocol.as_str(),
        "PLAINTEXT" | "SSL" | "SASL_PLAINTEXT" | "SASL_SSL"
    ) {
        return Err(format!(
            "security.protocol={protocol}: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
        ));
    }
    if protocol.contains("SSL") {
        let ca = props
            .get("ssl.ca.location")
            .or_else(|| props.get("ssl.truststore.location"))
            .ok_or("SSL needs ssl.ca.location: the PEM file of the CA the brokers' certificates chain to")?;
        let identity = match (
            props.get("ssl.keystore.location"),
            props.get("ssl.certificate.location"),
            props.get("ssl.key.location"),
        ) {
            (Some(both), _, _) => Some((both.clone(), both.clone())),
            (None, Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => None,
        };
        sec.tls = Some(gregor_broker::security::tls::client_config(
            std::path::Path::new(ca),
            identity.as_ref().map(|(c, k)| {
                (
                    std::path::Path::new(c.as_str()),
                    std::path::Path::new(k.as_str()),
                )
            }),
        )?);
    }
    if protocol.starts_with("SASL") && sec.username.is_empty() {
        return Err("SASL needs sasl.username and sasl.password".into());
    }
    let _ = SECURITY.set(sec);
    Ok(())
}

fn security() -> ClientSecurity {
    SECURITY.get().cloned().unwrap_or_default()
}

async fn open(address: &str) -> Result<BoxStream, String> {
    gregor_broker::security::tls::connect(address, security().tls, std::time::Duration::from_secs(10))
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}; is a broker running there? pass --bootstrap HOST:PORT (and --command-config for SSL)"))
}

pub struct Client {
    stream: BoxStream,
    address: String,
    correlation_id: i32,
    /// A request was sent and its response not (wholly) read: the call was cancelled (for
    /// example by Ctrl-C during a long-poll Fetch), so the stream is out of step and the
    /// next request opens a fresh connection.
    in_flight: bool,
    /// The broker's (min, max) version per API key.
    versions: HashMap<i16, (i16, i16)>,
}

impl Client {
    pub async fn connect(address: &str) -> Result<Self, String> {
        let stream = open(address).await?;
        let mut client = Client {
            stream,
            address: address.to_string(),
            correlation_id: 0,
            in_flight: false,
            versions: HashMap::new(),
        };
        // v0 is the version every broker answers (and answers in) whatever it supports.
        let versions = client.send(ApiVersionsRequest::default(), 0).await?;
        if versions.error_code != 0 {
            return Err(format!(
                "{address}: ApiVersions failed: {}",
                code(versions.error_code)
            ));
        }
        client.versions = versions
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        client.authenticate().await?;
        Ok(client)
    }

    /// SASL authentication, on a SASL protocol (SaslHandshake v1, then SaslAuthenticate).
    async fn authenticate(&mut self) -> Result<(), String> {
        let sec = security();
        if !sec.protocol.starts_with("SASL") {
            return Ok(());
        }
        let mut hs = SaslHandshakeRequest::default();
        hs.mechanism = StrBytes::from_string(sec.mechanism.clone());
        let r = self.send(hs, 1).await?;
        if r.error_code != 0 {
            let offered: Vec<String> = r.mechanisms.iter().map(|m| m.to_string()).collect();
            return Err(format!(
                "{}: the broker does not take SASL mechanism {} ({}); it offers {}",
                self.address,
                sec.mechanism,
                code(r.error_code),
                offered.join(", ")
            ));
        }
        let v = self.version::<SaslAuthenticateRequest>(0, 2)?;
        let address = self.address.clone();
        let fail = |code_: i16, msg: Option<StrBytes>| {
            format!(
                "{}: authentication as {} failed: {} {}; check sasl.username and sasl.password",
                address,
                sec.username,
                code(code_),
                msg.map(|m| m.to_string()).unwrap_or_default()
            )
        };
        if sec.mechanism == "PLAIN" {
            let mut a = SaslAuthenticateRequest::default();
            a.auth_bytes = Bytes::from(format!("\0{}\0{}", sec.username, sec.password));
            let r = self.send(a, v).await?;
            if r.error_code != 0 {
                return Err(fail(r.error_code, r.error_message));
            }
            return Ok(());
        }
        let m = Mechanism::parse(&sec.mechanism).ok_or_else(|| {
            format!(
                "sasl.mechanism={}: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                sec.mechanism
            )
        })?;
        let mut scram = ScramClient::new(m, &sec.username, &sec.password)?;
        let mut a = SaslAuthenticateRequest::default();
        a.auth_bytes = Bytes::from(scram.client_first());
        let r = self.send(a, v).await?;
        if r.error_code != 0 {
            return Err(fail(r.error_code, r.error_message));
        }
        let mut a = SaslAuthenticateRequest::default();
        a.auth_bytes = Bytes::from(scram.client_final(&r.auth_bytes)?);
        let r = self.send(a, v).await?;
        if r.error_code != 0 {
            return Err(fail(r.error_code, r.error_message));
        }
        scram
            .server_final(&r.auth_bytes)
            .map_err(|e| format!("{}: {e}", self.address))
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The highest version of `R` both sides speak, up to `max` (what the tool was written
    /// against), and at least `min`.
    pub fn version<R: Request>(&self, min: i16, max: i16) -> Result<i16, String> {
        let api =
            ApiKey::try_from(R::KEY).map_or_else(|_| format!("{}", R::KEY), |a| format!("{a:?}"));
        let Some(&(lo, hi)) = self.versions.get(&R::KEY) else {
            return Err(format!(
                "the broker at {} does not support {api}; this command needs it",
                self.address
            ));
        };
        let v = hi.min(max);
        if v < min || v < lo {
            return Err(format!(
                "the broker at {} speaks {api} v{lo}-v{hi}; this command needs v{min}-v{max}: upgrade the broker or use a matching gregor",
                self.address
            ));
        }
        Ok(v)
    }

    /// Sends `request` at the best common version in `min..=max` and reads its response.
    pub async fn call<R: Request>(
        &mut self,
        request: R,
        min: i16,
        max: i16,
    ) -> Result<R::Response, String> {
        let v = self.version::<R>(min, max)?;
        self.send(request, v).await
    }

    /// Sends `request` at `version` and reads its response.
    pub async fn send<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> Result<R::Response, String> {
        let api = self.write(&request, version).await?;
        self.in_flight = true;
        let response = self.read::<R>(api, version).await;
        self.in_flight = false;
        response
    }

    /// Sends a request the broker does not answer (Produce with acks=0).
    pub async fn send_no_response<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> Result<(), String> {
        self.write(&request, version).await.map(|_| ())
    }

    async fn write<R: Request>(&mut self, request: &R, version: i16) -> Result<ApiKey, String> {
        if self.in_flight {
            self.stream = open(&self.address).await?;
            self.in_flight = false;
            Box::pin(self.authenticate()).await?;
        }
        self.correlation_id += 1;
        let api = ApiKey::try_from(R::KEY).map_err(|_| format!("unknown API key {}", R::KEY))?;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("gregor-cli")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| format!("cannot encode {api:?} v{version}: {e}"))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| format!("cannot encode {api:?} v{version}: {e}"))?;
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        let io = |e: std::io::Error| {
            format!(
                "{}: {api:?} failed: {e}; check the broker's log",
                self.address
            )
        };
        self.stream.write_all(&buf).await.map_err(io)?;
        Ok(api)
    }

    async fn read<R: Request>(&mut self, api: ApiKey, version: i16) -> Result<R::Response, String> {
        let io = |e: std::io::Error| {
            format!(
                "{}: {api:?} failed: {e}; check the broker's log",
                self.address
            )
        };
        let size = self.stream.read_i32().await.map_err(io)?;
        if size < 0 || size as usize > RESPONSE_MAX_BYTES {
            return Err(format!(
                "{}: response of {size} bytes to {api:?} refused",
                self.address
            ));
        }
        let mut body = vec![0u8; size as usize];
        self.stream.read_exact(&mut body).await.map_err(io)?;
        let mut body = Bytes::from(body);
        let response_header =
            ResponseHeader::decode(&mut body, api.response_header_version(version))
                .map_err(|e| format!("bad {api:?} response header: {e}"))?;
        if response_header.correlation_id != self.correlation_id {
            return Err(format!(
                "{api:?}: response for request {} arrived for {}",
                response_header.correlation_id, self.correlation_id
            ));
        }
        let response = R::Response::decode(&mut body, version)
            .map_err(|e| format!("bad {api:?} v{version} response: {e}"))?;
        Ok(response)
    }
}

/// A connection to a cluster: the bootstrap broker, and the others as they are needed.
pub struct Cluster {
    bootstrap: Client,
    /// Broker id -> "host:port", from the last Metadata.
    pub brokers: BTreeMap<i32, String>,
    pub controller: i32,
    pub cluster_id: Option<String>,
    conns: HashMap<i32, Client>,
}

impl Cluster {
    pub async fn connect(bootstrap: &str) -> Result<Self, String> {
        let client = Client::connect(bootstrap).await?;
        let mut cluster = Cluster {
            bootstrap: client,
            brokers: BTreeMap::new(),
            controller: -1,
            cluster_id: None,
            conns: HashMap::new(),
        };
        cluster.metadata(Some(&[])).await?;
        Ok(cluster)
    }

    /// The bootstrap broker's connection, for requests any broker answers.
    pub fn any(&mut self) -> &mut Client {
        &mut self.bootstrap
    }

    /// Metadata for `topics` (all of them with `None`); also refreshes the broker list.
    pub async fn metadata(
        &mut self,
        topics: Option<&[String]>,
    ) -> Result<MetadataResponse, String> {
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut mt = MetadataRequestTopic::default();
                    mt.name = Some(TopicName(StrBytes::from_string(t.clone())));
                    mt
                })
                .collect()
        });
        req.allow_auto_topic_creation = false;
        let resp = self.bootstrap.call(req, 4, 12).await?;
        self.brokers = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        self.controller = resp.controller_id.0;
        self.cluster_id = resp.cluster_id.as_ref().map(|c| c.to_string());
        Ok(resp)
    }

    /// One topic's metadata; `doing` names the command in the error ("cannot {doing} 'T'").
    pub async fn topic(
        &mut self,
        topic: &str,
        doing: &str,
    ) -> Result<kafka_protocol::messages::metadata_response::MetadataResponseTopic, String> {
        let md = self.metadata(Some(&[topic.to_string()])).await?;
        let t = md
            .topics
            .into_iter()
            .next()
            .ok_or("Metadata returned no topic")?;
        if t.error_code != 0 {
            let hint = if t.error_code == 3 {
                "; `gregor topic list` shows the topics there are, `gregor topic create` makes one"
            } else {
                ""
            };
            return Err(format!(
                "cannot {doing} '{topic}': {}{hint}",
                code(t.error_code)
            ));
        }
        Ok(t)
    }

    /// The connection to broker `node`, opened on first use.
    pub async fn broker(&mut self, node: i32) -> Result<&mut Client, String> {
        if !self.conns.contains_key(&node) {
            let address = self.brokers.get(&node).cloned().ok_or_else(|| {
                format!(
                    "broker {node} is not in the cluster's metadata; run `gregor cluster status`"
                )
            })?;
            let client = Client::connect(&address).await?;
            self.conns.insert(node, client);
        }
        Ok(self.conns.get_mut(&node).expect("inserted above"))
    }

    /// The broker coordinating `group` (key type 0) or a transactional id (key type 1).
    pub async fn coordinator(&mut self, key: &str, key_type: i8) -> Result<&mut Client, String> {
        let mut req = FindCoordinatorRequest::default();
        let v = self.bootstrap.version::<FindCoordinatorRequest>(1, 4)?;
        if v >= 4 {
            req.coordinator_keys = vec![StrBytes::from_string(key.to_string())];
        } else {
            req.key = StrBytes::from_string(key.to_string());
        }
        req.key_type = key_type;
        let mut last = String::new();
        for attempt in 0..20 {
            let resp = self.bootstrap.send(req.clone(), v).await?;
            let (err, node) = match resp.coordinators.first() {
                Some(c) if v >= 4 => (c.error_code, c.node_id.0),
                _ => (resp.error_code, resp.node_id.0),
            };
            if err == 0 {
                return self.broker(node).await;
            }
            last = code(err);
            // COORDINATOR_NOT_AVAILABLE / COORDINATOR_LOAD_IN_PROGRESS: it is being elected.
            if err != 15 && err != 14 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100 * (attempt + 1).min(5))).await;
        }
        Err(format!("cannot find the coordinator of '{key}': {last}"))
    }
}
