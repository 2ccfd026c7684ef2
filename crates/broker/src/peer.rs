//! Connections to other brokers (replica fetchers, transaction markers, Produce's
//! verification): one request at a time on the inter-broker listener, and a pool of idle
//! ones. Depends on the configuration and security only, so every part of the broker
//! can use it.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::BrokerConfig;
use crate::security::Security;

/// Largest response a follower accepts from a leader.
const RESPONSE_MAX_BYTES: usize = 128 << 20;

/// One connection to another broker, one request at a time.
pub(crate) struct Conn {
    stream: Box<dyn crate::security::tls::Stream>,
    correlation_id: i32,
    client_id: StrBytes,
}

/// Idle inter-broker connections kept for reuse: at most one per peer broker, dropped when
/// the peer's address changes.
#[derive(Default)]
pub struct ConnPool {
    idle: std::sync::Mutex<HashMap<i32, (String, Conn)>>,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnPool")
    }
}

impl ConnPool {
    fn address(peer: &gregor_cluster::BrokerMeta) -> String {
        format!("{}:{}", peer.host, peer.port)
    }

    /// The idle connection to `peer`, if one is kept.
    pub(crate) fn take(&self, node: i32, peer: &gregor_cluster::BrokerMeta) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        match idle.remove(&node) {
            Some((addr, conn)) if addr == Self::address(peer) => Some(conn),
            _ => None,
        }
    }

    /// Keeps `conn` for the next call to `peer`.
    pub(crate) fn put(&self, node: i32, peer: &gregor_cluster::BrokerMeta, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, (Self::address(peer), conn));
    }
}

impl Conn {
    /// Connects to `peer` on the inter-broker listener, over TLS if that listener is SSL.
    pub(crate) async fn connect(
        config: &BrokerConfig,
        security: &Security,
        peer: &gregor_cluster::BrokerMeta,
        client_id: String,
    ) -> std::io::Result<Conn> {
        let name = &config.inter_broker_listener;
        let (host, port) = peer.endpoint(name);
        let addr = format!("{host}:{port}");
        let tls = match config.listener(name) {
            Some(l) if l.protocol.tls() => Some(
                security
                    .tls
                    .as_ref()
                    .and_then(|t| t.client())
                    .ok_or_else(|| {
                        std::io::Error::other(
                            "the inter-broker listener is SSL but ssl.truststore.location is not set",
                        )
                    })?,
            ),
            _ => None,
        };
        let stream = crate::security::tls::connect(&addr, tls, Duration::from_secs(2)).await?;
        Ok(Conn {
            stream,
            correlation_id: 0,
            client_id: StrBytes::from_string(client_id),
        })
    }

    pub(crate) async fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
        timeout: Duration,
    ) -> std::io::Result<Resp> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, Req::header_version(version))
            .and_then(|_| request.encode(&mut body, version))
            .map_err(std::io::Error::other)?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_u32(body.len() as u32);
        frame.extend_from_slice(&body);
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let len = self.stream.read_u32().await? as usize;
            if len > RESPONSE_MAX_BYTES {
                return Err(std::io::Error::other(format!(
                    "response of {len} bytes refused"
                )));
            }
            let mut buf = vec![0u8; len];
            self.stream.read_exact(&mut buf).await?;
            Ok(Bytes::from(buf))
        };
        let mut bytes = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let header = ResponseHeader::decode(&mut bytes, Resp::header_version(version))
            .map_err(std::io::Error::other)?;
        if header.correlation_id != self.correlation_id {
            return Err(std::io::Error::other("response out of step"));
        }
        let response = Resp::decode(&mut bytes, version).map_err(std::io::Error::other)?;
        if bytes.has_remaining() {
            tracing::debug!(remaining = bytes.remaining(), "response had trailing bytes");
        }
        Ok(response)
    }
}
