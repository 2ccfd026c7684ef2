//! What bounds the load clients can put on a broker: the bytes of requests being read and
//! handled at once (`queued.max.request.bytes`), the connections open
//! (`max.connections`, `max.connections.per.ip` and its overrides), and the log lines that
//! refused connections and requests write (at most one per peer, reason and
//! `log.refusals.interval.ms`, then one summary line for the rest).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{BrokerConfig, Listener};

/// Why the broker closed a connection, or refused one: the label of
/// `gregor_connections_closed_total` and of the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Reason {
    /// A frame over `socket.request.max.bytes` (or over 512 KiB before SASL).
    FrameTooLarge,
    /// A negative frame size.
    BadFrameSize,
    /// The peer closed inside a frame.
    Truncated,
    /// A frame that does not decode as the request its header names.
    Undecodable,
    UnknownApi,
    UnsupportedVersion,
    /// A request before SASL authentication.
    Unauthenticated,
    /// A request after the SASL session ended (`connections.max.reauth.ms`).
    SessionExpired,
    TlsHandshake,
    AuthenticationFailed,
    /// No request for `connections.max.idle.ms`.
    Idle,
    /// A request not received whole within `request.receive.timeout.ms`.
    ReceiveTimeout,
    /// `max.connections` reached.
    TooManyConnections,
    /// `max.connections.per.ip` (or the peer's override) reached.
    TooManyConnectionsPerIp,
    /// The broker failed (a response it could not encode, a task that failed).
    Internal,
}

impl Reason {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::FrameTooLarge => "frame_too_large",
            Reason::BadFrameSize => "bad_frame_size",
            Reason::Truncated => "truncated",
            Reason::Undecodable => "undecodable",
            Reason::UnknownApi => "unknown_api",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::Unauthenticated => "unauthenticated",
            Reason::SessionExpired => "session_expired",
            Reason::TlsHandshake => "tls_handshake",
            Reason::AuthenticationFailed => "authentication_failed",
            Reason::Idle => "idle",
            Reason::ReceiveTimeout => "receive_timeout",
            Reason::TooManyConnections => "too_many_connections",
            Reason::TooManyConnectionsPerIp => "too_many_connections_per_ip",
            Reason::Internal => "internal",
        }
    }
}

/// A connection the broker closes (or does not take), and why.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub reason: Reason,
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }
}

/// The broker-wide limits, read once at start.
pub(crate) struct Limits {
    pub memory: RequestMemory,
    open: Mutex<Open>,
    max_connections: usize,
    per_ip: usize,
    per_ip_overrides: HashMap<IpAddr, usize>,
    /// The inter-broker listener, when it is not the only one: its connections do not
    /// count against `max.connections` (as Kafka protects it), so clients cannot starve
    /// replication.
    protected_listener: Option<String>,
    pub idle: Option<Duration>,
    pub receive_timeout: Duration,
    pub refusals: RefusalLog,
    /// Connections closed since the allocator last gave memory back.
    closed_since_trim: AtomicU64,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Limits {
    pub(crate) fn new(config: &BrokerConfig) -> Result<Arc<Limits>, String> {
        let s = config.settings();
        let frame_max = s.socket_request_max_bytes.max(1) as u64;
        let memory = match s.queued_max_request_bytes {
            -1 => None,
            cap if cap > 0 && (cap as u64) < frame_max => return Err(format!(
                "queued.max.request.bytes ({cap}) is below socket.request.max.bytes ({frame_max}): a request of the largest size could never be read; raise queued.max.request.bytes or lower socket.request.max.bytes"
            )),
            cap if cap > 0 => Some(cap as u64),
            cap => return Err(format!(
                "queued.max.request.bytes = {cap}: give a number of bytes, or -1 for no cap"
            )),
        };
        let per_ip_overrides = parse_overrides(config.get("max.connections.per.ip.overrides"))?;
        let protected_listener =
            (config.listeners.len() > 1).then(|| config.inter_broker_listener.clone());
        let idle = (s.connections_max_idle_ms > 0)
            .then(|| Duration::from_millis(s.connections_max_idle_ms as u64));
        Ok(Arc::new(Limits {
            memory: RequestMemory::new(memory),
            open: Mutex::new(Open::default()),
            max_connections: count(s.max_connections),
            per_ip: count(s.max_connections_per_ip),
            per_ip_overrides,
            protected_listener,
            idle,
            receive_timeout: Duration::from_millis(s.request_receive_timeout_ms.max(1) as u64),
            refusals: RefusalLog::new(Duration::from_millis(
                s.log_refusals_interval_ms.max(1) as u64
            )),
            closed_since_trim: AtomicU64::new(0),
        }))
    }

    /// Takes a connection slot for a peer on a listener, or says why not.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        listener: &Listener,
    ) -> Result<ConnectionSlot, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let protected = self.protected_listener.as_deref() == Some(listener.name.as_str());
        if !protected && open.total >= self.max_connections {
            return Err(Refusal::new(
                Reason::TooManyConnections,
                format!(
                    "{} connections are open, max.connections = {}; raise it, or find the client that opens so many (gregor_connections_accepted_total)",
                    open.total, self.max_connections
                ),
            ));
        }
        let limit = self
            .per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.per_ip);
        let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= limit {
            return Err(Refusal::new(
                Reason::TooManyConnectionsPerIp,
                format!("{from_ip} connections from {ip} are open, the most one address may have (max.connections.per.ip, or its entry in max.connections.per.ip.overrides)"),
            ));
        }
        open.total += 1;
        *open.per_ip.entry(ip).or_insert(0) += 1;
        // The gauge counts slots, so that it reads 0 only when every slot is free.
        crate::metrics::connection_opened();
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Whether enough connections closed since the last time to ask the allocator to give
    /// memory back to the system; resets the count when it says yes. (Request frames of
    /// 1 MiB or more need no trim: the allocator maps and unmaps them on their own,
    /// `alloc.rs`.)
    pub(crate) fn trim_due(&self) -> bool {
        if self.closed_since_trim.load(Ordering::Relaxed) < TRIM_AFTER_CLOSED {
            return false;
        }
        self.closed_since_trim.store(0, Ordering::Relaxed);
        true
    }
}

/// Connections closed (about 16 KB each, 16 MB in all) after which the allocator is asked
/// to give memory back.
const TRIM_AFTER_CLOSED: u64 = 1024;

fn count(setting: i64) -> usize {
    usize::try_from(setting.max(0)).unwrap_or(usize::MAX)
}

/// `max.connections.per.ip.overrides`: `IP:N` entries separated by commas (an IPv6
/// address in brackets, `[::1]:5`).
fn parse_overrides(text: &str) -> Result<HashMap<IpAddr, usize>, String> {
    let mut out = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || {
            format!(
                "max.connections.per.ip.overrides: '{entry}' is not IP:COUNT (for example 127.0.0.1:100,[::1]:100)"
            )
        };
        let (ip, n) = entry.rsplit_once(':').ok_or_else(bad)?;
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        out.insert(ip, n);
    }
    Ok(out)
}

/// One open connection's place in the counts; given back when dropped.
pub(crate) struct ConnectionSlot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
        self.limits
            .closed_since_trim
            .fetch_add(1, Ordering::Relaxed);
        crate::metrics::connection_closed();
    }
}

/// The bytes of requests being read and handled, across all connections, under a cap. A
/// request takes its share when its size has been read, before its body is buffered, and
/// gives it back when it has been handled; a connection whose request does not fit waits
/// (reading nothing) until it does, in arrival order.
pub(crate) struct RequestMemory {
    /// Permits in KiB, so that a cap over 4 GiB fits a semaphore's `u32` request.
    pool: Option<Arc<Semaphore>>,
}

/// A request's share of [`RequestMemory`], given back when dropped.
pub(crate) struct MemoryPermit {
    _permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Drop for MemoryPermit {
    fn drop(&mut self) {
        crate::metrics::request_memory(-(self.bytes as f64));
    }
}

impl RequestMemory {
    fn new(cap_bytes: Option<u64>) -> Self {
        RequestMemory {
            pool: cap_bytes.map(|cap| Arc::new(Semaphore::new(kib(cap as usize) as usize))),
        }
    }

    /// Waits until a request of `bytes` fits under the cap (at once when there is none).
    pub(crate) async fn acquire(&self, bytes: usize) -> MemoryPermit {
        let permit = match &self.pool {
            None => None,
            Some(pool) => {
                let n = kib(bytes);
                match pool.clone().try_acquire_many_owned(n) {
                    Ok(p) => Some(p),
                    // A small request never waits: behind a large one that waits for
                    // room, heartbeats and followers' fetches (which acks=all produces
                    // hold room waiting for) would wait too. It may pass the cap, by at
                    // most SMALL_REQUEST_BYTES per connection at a time.
                    Err(_) if bytes <= SMALL_REQUEST_BYTES => None,
                    Err(_) => {
                        crate::metrics::request_memory_wait();
                        // The pool is never closed; should it be, the request goes on
                        // uncounted rather than failing.
                        pool.clone().acquire_many_owned(n).await.ok()
                    }
                }
            }
        };
        crate::metrics::request_memory(bytes as f64);
        MemoryPermit {
            _permit: permit,
            bytes,
        }
    }
}

/// Requests up to this size are read at once even when the cap is reached.
const SMALL_REQUEST_BYTES: usize = 64 * 1024;

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Raises this process's open-file limit to its hard limit (segment files and
/// connections are files); returns the limit now in force.
pub(crate) fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the open-file limit to its maximum");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The log lines of refusals: the first of each (peer, reason) in an interval is logged,
/// the others are counted and summed up in one line per interval. The peers it remembers
/// are bounded: past [`PEERS_MAX`], new ones share one entry.
pub(crate) struct RefusalLog {
    interval: Duration,
    seen: Mutex<HashMap<(IpAddr, Reason), Seen>>,
}

struct Seen {
    logged: Instant,
    suppressed: u64,
}

/// Peers (with a reason) remembered between summaries.
const PEERS_MAX: usize = 4096;

impl RefusalLog {
    fn new(interval: Duration) -> Self {
        RefusalLog {
            interval,
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Counts one refusal; `true` when it is to be logged.
    pub(crate) fn note(&self, ip: IpAddr, reason: Reason) -> bool {
        crate::metrics::connection_refused(reason.label());
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = if seen.len() >= PEERS_MAX && !seen.contains_key(&(ip, reason)) {
            (IpAddr::from([0, 0, 0, 0]), reason)
        } else {
            (ip, reason)
        };
        match seen.get_mut(&key) {
            Some(s) if now.duration_since(s.logged) < self.interval => {
                s.suppressed += 1;
                false
            }
            Some(s) => {
                s.logged = now;
                true
            }
            None => {
                seen.insert(
                    key,
                    Seen {
                        logged: now,
                        suppressed: 0,
                    },
                );
                true
            }
        }
    }

    /// One line on the refusals not logged since the last summary (the five peers with
    /// the most first), or `None` when there were none; forgets the peers whose last line
    /// is older than the interval.
    pub(crate) fn summary(&self) -> Option<String> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<(u64, IpAddr, Reason)> = seen
            .iter()
            .filter(|(_, s)| s.suppressed > 0)
            .map(|((ip, reason), s)| (s.suppressed, *ip, *reason))
            .collect();
        for s in seen.values_mut() {
            s.suppressed = 0;
        }
        seen.retain(|_, s| now.duration_since(s.logged) < self.interval);
        if rows.is_empty() {
            return None;
        }
        rows.sort_by(|a, b| b.cmp(a));
        let total: u64 = rows.iter().map(|r| r.0).sum();
        let top: Vec<String> = rows
            .iter()
            .take(5)
            .map(|(n, ip, reason)| {
                let who = if ip.is_unspecified() {
                    "other peers".to_string()
                } else {
                    ip.to_string()
                };
                format!("{n} {} from {who}", reason.label())
            })
            .collect();
        let more = rows.len().saturating_sub(5);
        Some(format!(
            "{total} refused connections or requests were not logged one by one in the last {} s: {}{}",
            self.interval.as_secs(),
            top.join(", "),
            if more > 0 {
                format!(", and {more} more peers or reasons")
            } else {
                String::new()
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_bad_entries_are_named() {
        let o = parse_overrides(" 127.0.0.2:5, [::1]:7 ,").expect("parses");
        assert_eq!(
            o.get(&"127.0.0.2".parse::<IpAddr>().expect("an address")),
            Some(&5)
        );
        assert_eq!(
            o.get(&"::1".parse::<IpAddr>().expect("an address")),
            Some(&7)
        );
        let e = parse_overrides("localhost:5").expect_err("refused");
        assert!(e.contains("'localhost:5'"), "{e}");
        assert!(parse_overrides("127.0.0.1:many").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_is_logged_once_per_interval_and_the_rest_summed_up() {
        let log = RefusalLog::new(Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().expect("an address");
        let b: IpAddr = "10.0.0.2".parse().expect("an address");
        assert!(log.note(a, Reason::Undecodable));
        for _ in 0..99 {
            assert!(!log.note(a, Reason::Undecodable));
        }
        assert!(
            log.note(a, Reason::UnknownApi),
            "another reason is its own line"
        );
        assert!(
            log.note(b, Reason::Undecodable),
            "another peer is its own line"
        );
        let summary = log.summary().expect("suppressed lines are summed up");
        assert!(summary.starts_with("99 refused"), "{summary}");
        assert!(
            summary.contains("99 undecodable from 10.0.0.1"),
            "{summary}"
        );
        assert_eq!(log.summary(), None, "a summary is given once");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            log.note(a, Reason::Undecodable),
            "logged again after the interval"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_peers_remembered_are_bounded() {
        let log = RefusalLog::new(Duration::from_secs(60));
        for i in 0..(PEERS_MAX as u32 + 1000) {
            log.note(IpAddr::from(i.to_be_bytes()), Reason::Undecodable);
        }
        assert!(log.seen.lock().expect("lock").len() <= PEERS_MAX + 1);
        let summary = log.summary().expect("the overflow is summed up");
        assert!(summary.contains("from other peers"), "{summary}");
        tokio::time::advance(Duration::from_secs(61)).await;
        log.summary();
        assert!(
            log.seen.lock().expect("lock").is_empty(),
            "old peers are forgotten"
        );
    }

    #[tokio::test]
    async fn a_small_request_never_waits_behind_a_full_pool() {
        let memory = RequestMemory::new(Some(128 * 1024));
        let _big = memory.acquire(128 * 1024).await;
        tokio::time::timeout(Duration::from_secs(1), memory.acquire(4 * 1024))
            .await
            .expect("a 4 KiB request waited for a full pool");
    }

    #[tokio::test]
    async fn a_request_waits_until_its_bytes_fit_under_the_cap() {
        let memory = RequestMemory::new(Some(1000 * 1024));
        let first = memory.acquire(800 * 1024).await;
        let waiting = tokio::spawn({
            let pool = memory.pool.clone().expect("capped");
            async move {
                let m = RequestMemory { pool: Some(pool) };
                m.acquire(400 * 1024).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "1,200 KiB do not fit under a 1,000 KiB cap"
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the second request goes on once the first is handled")
            .expect("task");
    }
}
