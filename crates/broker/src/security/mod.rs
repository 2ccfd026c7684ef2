//! Authentication and authorization: TLS on SSL listeners ([`tls`]), SASL PLAIN and SCRAM
//! on SASL listeners ([`scram`] and [`Session`]), and ACLs ([`acl`]).
//!
//! Every connection has a [`Session`]: the listener it came in on and, once known, its
//! principal. On a SASL listener nothing but ApiVersions, SaslHandshake and
//! SaslAuthenticate is served until the client has authenticated; a failed authentication
//! is answered with SASL_AUTHENTICATION_FAILED after a delay that grows with the failures
//! from the same address, logged, and the connection closed.

pub mod acl;
pub mod scram;
pub mod tls;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::config::{BrokerConfig, Listener, SecurityProtocol};
use acl::{Authorizer, Caller};
use scram::{Mechanism, ScramServer};

/// The principal of a connection that has not authenticated (PLAINTEXT, or SSL without a
/// client certificate).
pub const ANONYMOUS: &str = "User:ANONYMOUS";
/// Failures from one address within this window make the next delay longer.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
const FAILURE_DELAY_MAX: Duration = Duration::from_secs(5);

/// The broker-wide security state.
#[derive(Debug)]
pub struct Security {
    pub tls: Option<std::sync::Arc<tls::Tls>>,
    pub authorizer: Authorizer,
    mechanisms: Vec<String>,
    reauth_ms: i64,
    failure_delay: Duration,
    /// Recent authentication failures per client address: (count, last).
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Security {
    pub fn new(c: &BrokerConfig) -> Result<Self, String> {
        let needs_tls = c.listeners.iter().any(|l| l.protocol.tls())
            || c.controller_listener
                .as_ref()
                .is_some_and(|l| l.protocol.tls());
        let tls = if needs_tls {
            Some(std::sync::Arc::new(tls::Tls::new(c)?))
        } else {
            None
        };
        let mechanisms: Vec<String> = c
            .get("sasl.enabled.mechanisms")
            .split(',')
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
            .collect();
        for m in &mechanisms {
            if m != "PLAIN" && Mechanism::parse(m).is_none() {
                return Err(format!(
                    "sasl.enabled.mechanisms: {m} is not served; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                ));
            }
        }
        if mechanisms.is_empty() && c.listeners.iter().any(|l| l.protocol.sasl()) {
            return Err("a SASL listener needs at least one of sasl.enabled.mechanisms".into());
        }
        let super_users = c
            .get("super.users")
            .split(';')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Security {
            tls,
            authorizer: Authorizer {
                enabled: c.settings().authorizer_enabled,
                super_users,
                allow_if_no_acl: c.settings().allow_everyone_if_no_acl_found,
            },
            mechanisms,
            reauth_ms: c.settings().connections_max_reauth_ms.max(0),
            failure_delay: Duration::from_millis(
                c.settings()
                    .connection_failed_authentication_delay_ms
                    .max(0) as u64,
            ),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Notes a failed authentication from `host`; returns how long to wait before the
    /// answer and the close: the configured delay, doubled for each earlier failure from
    /// the same address within a minute, at most 5 s.
    pub fn failed(&self, host: IpAddr) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        f.retain(|_, (_, last)| now.duration_since(*last) < FAILURE_WINDOW);
        let entry = f.entry(host).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let factor = 1u32 << (entry.0 - 1).min(10);
        crate::metrics::error("sasl_authenticate", "failed");
        (self.failure_delay * factor).min(FAILURE_DELAY_MAX.max(self.failure_delay))
    }
}

#[derive(Debug)]
enum SaslState {
    /// No SaslHandshake yet.
    Start,
    /// A mechanism is chosen; the next SaslAuthenticate starts it.
    Chosen(String),
    /// A SCRAM exchange between its two messages.
    Scram(ScramServer),
    Authenticated,
}

/// One connection's listener, principal and authentication state.
#[derive(Debug)]
pub struct Session {
    pub listener: String,
    pub protocol: SecurityProtocol,
    pub caller: Caller,
    state: SaslState,
    /// When the SASL session ends (KIP-368); requests after it close the connection.
    expires: Option<Instant>,
    /// The principal the first authentication established; re-authentication keeps it.
    first_principal: Option<String>,
    /// The mechanism of the first authentication; re-authentication keeps it too (a
    /// SCRAM session is not renewed with a PLAIN password, as Kafka refuses).
    first_mechanism: Option<String>,
    /// The mechanism of the authentication under way.
    chosen: Option<String>,
}

/// What the connection does with a SASL request's answer.
pub enum SaslOutcome<T> {
    /// Send it and carry on.
    Reply(T),
    /// Wait, send it, and close the connection (a failed authentication; the connection
    /// logs why).
    Fail(T, Duration, String),
}

impl Session {
    pub fn new(listener: &Listener, host: IpAddr, principal: Option<String>) -> Self {
        Session {
            listener: listener.name.clone(),
            protocol: listener.protocol,
            caller: Caller {
                principal: principal.unwrap_or_else(|| ANONYMOUS.to_string()),
                host,
            },
            state: if listener.protocol.sasl() {
                SaslState::Start
            } else {
                SaslState::Authenticated
            },
            expires: None,
            first_principal: None,
            first_mechanism: None,
            chosen: None,
        }
    }

    /// Whether requests other than ApiVersions and the SASL ones may be served.
    pub fn authenticated(&self) -> bool {
        !self.protocol.sasl() || self.first_principal.is_some()
    }

    /// Whether the SASL session has run out (the client did not re-authenticate in time).
    pub fn expired(&self) -> bool {
        self.expires.is_some_and(|e| Instant::now() >= e)
    }

    pub fn handshake(
        &mut self,
        security: &Security,
        r: &SaslHandshakeRequest,
    ) -> SaslHandshakeResponse {
        let mut resp = SaslHandshakeResponse::default();
        resp.mechanisms = security
            .mechanisms
            .iter()
            .map(|m| StrBytes::from_string(m.clone()))
            .collect();
        let mechanism = r.mechanism.to_ascii_uppercase();
        if !self.protocol.sasl() || matches!(self.state, SaslState::Chosen(_) | SaslState::Scram(_))
        {
            resp.error_code = ResponseError::IllegalSaslState.code();
        } else if !security.mechanisms.contains(&mechanism) {
            resp.error_code = ResponseError::UnsupportedSaslMechanism.code();
        } else if let Some(first) = self.first_mechanism.as_ref().filter(|f| **f != mechanism) {
            tracing::warn!(host = %self.caller.host, listener = %self.listener, first = %first, asked = %mechanism, "re-authentication with another mechanism refused");
            resp.error_code = ResponseError::IllegalSaslState.code();
        } else {
            self.chosen = Some(mechanism.clone());
            self.state = SaslState::Chosen(mechanism);
        }
        resp
    }

    pub fn authenticate(
        &mut self,
        security: &Security,
        image: &gregor_cluster::MetadataImage,
        r: &SaslAuthenticateRequest,
    ) -> SaslOutcome<SaslAuthenticateResponse> {
        let mut resp = SaslAuthenticateResponse::default();
        let state = std::mem::replace(&mut self.state, SaslState::Start);
        let lookup = |m: Mechanism, user: &str| image.scram_credential(user, m.name()).cloned();
        let result: Result<Option<(Vec<u8>, String)>, String> = match state {
            SaslState::Chosen(m) if m == "PLAIN" => match scram::parse_plain(&r.auth_bytes) {
                None => Err("malformed SASL/PLAIN message".into()),
                Some((user, password)) => {
                    let ok = [Mechanism::Sha512, Mechanism::Sha256].iter().any(|&m| {
                        lookup(m, &user).is_some_and(|c| scram::password_matches(m, &c, &password))
                    });
                    if ok {
                        Ok(Some((Vec::new(), user)))
                    } else {
                        Err(format!("wrong user name or password for '{user}'"))
                    }
                }
            },
            SaslState::Chosen(m) => {
                let Some(mech) = Mechanism::parse(&m) else {
                    return self.fail(security, resp, "mechanism not served".into());
                };
                let mut server = ScramServer::new(mech);
                match server.client_first(&r.auth_bytes, |u| lookup(mech, u)) {
                    Ok(first) => {
                        self.state = SaslState::Scram(server);
                        resp.auth_bytes = Bytes::from(first);
                        return SaslOutcome::Reply(resp);
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            SaslState::Scram(mut server) => server
                .client_final(&r.auth_bytes)
                .map(Some)
                .map_err(|e| e.to_string()),
            SaslState::Start | SaslState::Authenticated => {
                Err("SaslAuthenticate without a SaslHandshake first".into())
            }
        };
        match result {
            Ok(Some((bytes, user))) => {
                let principal = format!("User:{user}");
                if let Some(first) = &self.first_principal {
                    if *first != principal {
                        return self.fail(
                            security,
                            resp,
                            format!("re-authentication as {principal} on a connection of {first}"),
                        );
                    }
                }
                tracing::debug!(principal, host = %self.caller.host, "authenticated");
                self.first_principal = Some(principal.clone());
                self.first_mechanism = self.first_mechanism.take().or(self.chosen.take());
                self.caller.principal = principal;
                self.state = SaslState::Authenticated;
                resp.auth_bytes = Bytes::from(bytes);
                if security.reauth_ms > 0 {
                    resp.session_lifetime_ms = security.reauth_ms;
                    self.expires =
                        Some(Instant::now() + Duration::from_millis(security.reauth_ms as u64));
                }
                SaslOutcome::Reply(resp)
            }
            Ok(None) => SaslOutcome::Reply(resp),
            Err(why) => self.fail(security, resp, why),
        }
    }

    fn fail(
        &mut self,
        security: &Security,
        mut resp: SaslAuthenticateResponse,
        why: String,
    ) -> SaslOutcome<SaslAuthenticateResponse> {
        let delay = security.failed(self.caller.host);
        self.state = SaslState::Start;
        resp.error_code = ResponseError::SaslAuthenticationFailed.code();
        // The client learns that it failed, not why (no hint whether the user exists).
        resp.error_message = Some(StrBytes::from_static_str(
            "Authentication failed: invalid credentials",
        ));
        SaslOutcome::Fail(resp, delay, why)
    }
}
