//! Listeners: their security protocols, the `listeners` list syntax, and addresses.

use super::*;

/// A listener's security protocol (Kafka's `SecurityProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PLAINTEXT" => Self::Plaintext,
            "SSL" => Self::Ssl,
            "SASL_PLAINTEXT" => Self::SaslPlaintext,
            "SASL_SSL" => Self::SaslSsl,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// One named listener: where it binds, what it advertises, how it is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// Parses `NAME://HOST:PORT,...` (a bare `HOST:PORT` is `PLAINTEXT://HOST:PORT`) into
/// (name, host, port) entries.
pub fn parse_listener_list(key: &str, value: &str) -> Result<Vec<(String, String, u16)>, String> {
    let mut out: Vec<(String, String, u16)> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, addr) = entry.split_once("://").unwrap_or(("PLAINTEXT", entry));
        let name = name.to_ascii_uppercase();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "{key} = {value}: '{name}' is not a listener name; use letters, digits and _"
            ));
        }
        if out.iter().any(|(n, _, _)| *n == name) {
            return Err(format!(
                "{key} = {value}: listener {name} appears twice; give each its own name"
            ));
        }
        let (host, port) = split_host_port(key, addr)?;
        out.push((name, host, port));
    }
    Ok(out)
}

pub(super) fn split_host_port(key: &str, value: &str) -> Result<(String, u16), String> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("{key} = {value}: expected HOST:PORT, e.g. 127.0.0.1:9092"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{key} = {value}: '{port}' is not a port number"))?;
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

pub(super) fn resolve_addr(key: &str, value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    split_host_port(key, value)?;
    value
        .to_socket_addrs()
        .map_err(|e| format!("{key} = {value}: cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("{key} = {value}: resolves to no address"))
}
