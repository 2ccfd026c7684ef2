//! A small Kafka client for the command-line tools: one connection, one request at a time,
//! messages from `kafka-protocol`. Speaks to any Kafka-compatible broker.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response the tools accept.
const RESPONSE_MAX_BYTES: usize = 256 << 20;

pub struct Client {
    stream: TcpStream,
    bootstrap: String,
    correlation_id: i32,
}

impl Client {
    pub async fn connect(bootstrap: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(bootstrap)
            .await
            .map_err(|e| format!("cannot connect to {bootstrap}: {e}; is a broker running there? pass --bootstrap HOST:PORT"))?;
        Ok(Client {
            stream,
            bootstrap: bootstrap.to_string(),
            correlation_id: 0,
        })
    }

    /// Sends `request` at `version` and reads its response.
    pub async fn send<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> Result<R::Response, String> {
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
        let io = |e: std::io::Error| format!("{}: {api:?} failed: {e}", self.bootstrap);
        self.stream.write_all(&buf).await.map_err(io)?;
        let size = self.stream.read_i32().await.map_err(io)?;
        if size < 0 || size as usize > RESPONSE_MAX_BYTES {
            return Err(format!(
                "{}: response of {size} bytes to {api:?} refused",
                self.bootstrap
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
