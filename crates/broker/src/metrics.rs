//! Prometheus metrics, served as text on `--metrics HOST:PORT` (default 127.0.0.1:9644).
//!
//! Counters move on the request path through handles registered once (per partition, per
//! API), so no label is formatted per request. Gauges (log sizes, group lag, memory) are
//! set by a periodic task every [`GAUGE_INTERVAL`]. `docs/metrics.md` lists every name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::state::Broker;

/// How often gauges are recomputed.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Request latency buckets, in seconds: 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder and starts its endpoint (see `metrics_http.rs`). Call
/// before partitions are opened, so their handles register with it.
pub fn start(addr: SocketAddr, security: crate::metrics_http::Security) -> Result<(), String> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("gregor_request_duration_seconds".into()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(
            Matcher::Full("gregor_log_flush_duration_seconds".into()),
            LATENCY_BUCKETS,
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
    tokio::spawn(crate::metrics_http::serve(listener, handle, security));
    describe();
    tracing::info!(metrics = %addr, scheme, authenticated, "serving Prometheus metrics");
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "gregor_produce_records_total",
        Unit::Count,
        "Records appended by Produce requests."
    );
    describe_counter!(
        "gregor_produce_bytes_total",
        Unit::Bytes,
        "Record-batch bytes appended by Produce requests."
    );
    describe_counter!(
        "gregor_fetch_records_total",
        Unit::Count,
        "Records served by Fetch requests (whole batches)."
    );
    describe_counter!(
        "gregor_fetch_bytes_total",
        Unit::Bytes,
        "Record-batch bytes served by Fetch requests."
    );
    describe_counter!(
        "gregor_requests_total",
        Unit::Count,
        "Requests answered, by API."
    );
    describe_counter!(
        "gregor_request_errors_total",
        Unit::Count,
        "Requests or partitions answered with an error, by API and Kafka error name."
    );
    describe_histogram!(
        "gregor_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's arrival to its response being encoded, by API."
    );
    describe_histogram!(
        "gregor_log_flush_duration_seconds",
        Unit::Seconds,
        "Time of each fsync of a partition's log (flush.messages, flush.ms, log.writeback.bytes)."
    );
    describe_gauge!(
        "gregor_log_size_bytes",
        Unit::Bytes,
        "Bytes in a partition's segments."
    );
    describe_gauge!(
        "gregor_log_segments",
        Unit::Count,
        "Segments of a partition."
    );
    describe_gauge!(
        "gregor_log_start_offset",
        Unit::Count,
        "A partition's log start offset."
    );
    describe_gauge!(
        "gregor_log_end_offset",
        Unit::Count,
        "A partition's log end offset."
    );
    describe_gauge!(
        "gregor_consumer_group_members",
        Unit::Count,
        "Members of a consumer group."
    );
    describe_gauge!(
        "gregor_consumer_group_committed_offset",
        Unit::Count,
        "A group's committed offset for a partition."
    );
    describe_gauge!(
        "gregor_consumer_group_lag",
        Unit::Count,
        "Log end offset minus the group's committed offset."
    );
    describe_gauge!(
        "gregor_connections",
        Unit::Count,
        "Open client connections."
    );
    describe_counter!(
        "gregor_connections_accepted_total",
        Unit::Count,
        "Client connections accepted."
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "The broker's resident memory."
    );
}

/// A partition's metric handles, registered once when it opens.
#[derive(Clone)]
pub struct PartitionMetrics {
    pub produce_records: Counter,
    pub produce_bytes: Counter,
    pub fetch_records: Counter,
    pub fetch_bytes: Counter,
    size_bytes: Gauge,
    segments: Gauge,
    start_offset: Gauge,
    end_offset: Gauge,
}

impl std::fmt::Debug for PartitionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PartitionMetrics")
    }
}

impl PartitionMetrics {
    pub fn new(topic: &str, partition: i32) -> Self {
        let labels = [
            ("topic", topic.to_string()),
            ("partition", partition.to_string()),
        ];
        PartitionMetrics {
            produce_records: metrics::counter!("gregor_produce_records_total", &labels),
            produce_bytes: metrics::counter!("gregor_produce_bytes_total", &labels),
            fetch_records: metrics::counter!("gregor_fetch_records_total", &labels),
            fetch_bytes: metrics::counter!("gregor_fetch_bytes_total", &labels),
            size_bytes: metrics::gauge!("gregor_log_size_bytes", &labels),
            segments: metrics::gauge!("gregor_log_segments", &labels),
            start_offset: metrics::gauge!("gregor_log_start_offset", &labels),
            end_offset: metrics::gauge!("gregor_log_end_offset", &labels),
        }
    }
}

/// Per-API request counter and latency histogram.
struct ApiMetrics {
    requests: Counter,
    duration: Histogram,
}

fn api_metrics() -> &'static HashMap<i16, ApiMetrics> {
    static CELL: OnceLock<HashMap<i16, ApiMetrics>> = OnceLock::new();
    CELL.get_or_init(|| {
        crate::api::APIS
            .iter()
            .map(|spec| {
                let name = format!("{:?}", spec.key);
                (
                    spec.key as i16,
                    ApiMetrics {
                        requests: metrics::counter!("gregor_requests_total", "api" => name.clone()),
                        duration: metrics::histogram!("gregor_request_duration_seconds", "api" => name),
                    },
                )
            })
            .collect()
    })
}

/// Counts one answered request and its latency.
pub fn request_done(api: ApiKey, elapsed: Duration) {
    if let Some(m) = api_metrics().get(&(api as i16)) {
        m.requests.increment(1);
        m.duration.record(elapsed.as_secs_f64());
    }
}

/// Counts an error answered for `api` (a Kafka error code, or a reason the request was
/// refused).
pub fn error(api: &str, error: &str) {
    metrics::counter!("gregor_request_errors_total", "api" => api.to_string(), "error" => error.to_string())
        .increment(1);
}

/// Counts an error code answered for one partition (or a whole request) of `api`.
pub fn error_code(api: ApiKey, code: i16) {
    if code == 0 {
        return;
    }
    let name = kafka_protocol::error::ResponseError::try_from_code(code)
        .map_or_else(|| format!("code_{code}"), |e| format!("{e:?}"));
    error(&format!("{api:?}"), &name);
}

/// Records one fsync of a partition's log.
pub fn log_flushed(elapsed: Duration) {
    metrics::histogram!("gregor_log_flush_duration_seconds").record(elapsed.as_secs_f64());
}

/// Counts one damaged batch found (at start-up or by the scrubber).
pub fn damaged_batch() {
    metrics::counter!("gregor_damaged_batches_total").increment(1);
}

/// Counts one partition's write refused because this broker's controller lease expired.
pub fn self_fenced_write() {
    metrics::counter!("gregor_self_fenced_writes_total").increment(1);
}

pub fn connection_opened() {
    metrics::counter!("gregor_connections_accepted_total").increment(1);
    metrics::gauge!("gregor_connections").increment(1.0);
}

pub fn connection_closed() {
    metrics::gauge!("gregor_connections").decrement(1.0);
}

/// Recomputes the gauges: partition sizes and offsets, group members, committed offsets
/// and lag, and the process's resident memory.
pub fn update_gauges(broker: &Broker) {
    let mut log_ends = HashMap::new();
    for p in broker.all_partitions() {
        let (size, segments, offsets) = {
            let log = p.log();
            (log.size_bytes(), log.segment_count(), log.offsets())
        };
        p.metrics.size_bytes.set(size as f64);
        p.metrics.segments.set(segments as f64);
        p.metrics.start_offset.set(offsets.log_start as f64);
        p.metrics.end_offset.set(offsets.log_end as f64);
        log_ends.insert((p.topic.clone(), p.index), offsets.high_watermark);
    }
    // Groups (and their partitions) reported last time but gone now read 0, not their last
    // value: the exporter keeps a gauge once it exists.
    static REPORTED: std::sync::Mutex<Vec<[(&str, String); 3]>> = std::sync::Mutex::new(Vec::new());
    static GROUPS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut reported = Vec::new();
    let mut groups_now = Vec::new();
    for (group, _, _) in broker.groups.list() {
        let members = broker
            .groups
            .describe(&group)
            .map_or(0, |g| g.members.len());
        metrics::gauge!("gregor_consumer_group_members", "group" => group.clone())
            .set(members as f64);
        groups_now.push(group.clone());
        for (topic, partition, committed) in broker.groups.fetch_offsets(&group, None) {
            let (Some(committed), Some(&end)) =
                (committed, log_ends.get(&(topic.clone(), partition)))
            else {
                continue;
            };
            let labels = [
                ("group", group.clone()),
                ("topic", topic),
                ("partition", partition.to_string()),
            ];
            metrics::gauge!("gregor_consumer_group_committed_offset", &labels)
                .set(committed.offset as f64);
            metrics::gauge!("gregor_consumer_group_lag", &labels)
                .set((end - committed.offset).max(0) as f64);
            reported.push(labels);
        }
    }
    let mut previous = GROUPS.lock().unwrap_or_else(|p| p.into_inner());
    for gone in previous.iter().filter(|g| !groups_now.contains(g)) {
        metrics::gauge!("gregor_consumer_group_members", "group" => gone.clone()).set(0.0);
    }
    *previous = groups_now;
    let mut previous = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
    for gone in previous.iter().filter(|l| !reported.contains(l)) {
        metrics::gauge!("gregor_consumer_group_lag", gone).set(0.0);
    }
    *previous = reported;
    if let Some(rss) = resident_memory_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    }
}

/// VmRSS from `/proc/self/status`, where there is one.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
