//! Prometheus metrics, served as text on `--metrics HOST:PORT` (default 127.0.0.1:9644).
//!
//! Counters move on the request path through handles registered once (per partition, per
//! API), so no label is formatted per request. Gauges (log sizes, group lag, memory) are
//! set by a periodic task every [`GAUGE_INTERVAL`]. `docs/metrics.md` lists every name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use metrics::{Counter, Gauge, Histogram, Unit};

/// How often gauges are recomputed.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Request latency buckets, in seconds: 100 µs to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Describes every metric to the recorder (its HELP line).
pub fn describe() {
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
    describe_counter!(
        "gregor_connections_closed_total",
        Unit::Count,
        "Connections the broker closed or refused, by reason: bad input (frame_too_large, undecodable, unknown_api, ...), limits (too_many_connections, too_many_connections_per_ip, idle, receive_timeout), authentication_failed."
    );
    describe_counter!(
        "gregor_client_throttle_milliseconds_total",
        Unit::Milliseconds,
        "Milliseconds clients were throttled for going over a quota, by quota (produce, fetch, request) and the user and client id the quota is measured for (empty when the quota's entity does not name that part)."
    );
    describe_counter!(
        "gregor_client_throttled_responses_total",
        Unit::Count,
        "Responses that carried a throttle time, by quota, user and client id."
    );
    describe_gauge!(
        "gregor_fetch_sessions",
        Unit::Count,
        "Incremental fetch sessions open (KIP-227), set when one opens."
    );
    describe_gauge!(
        "gregor_fetch_session_partitions",
        Unit::Count,
        "Partitions of all fetch sessions, set when one opens."
    );
    describe_gauge!(
        "gregor_request_memory_bytes",
        Unit::Bytes,
        "Bytes of requests being read and handled (bounded by queued.max.request.bytes)."
    );
    describe_counter!(
        "gregor_request_memory_waits_total",
        Unit::Count,
        "Requests that waited for queued.max.request.bytes to have room before they were read."
    );
    describe_gauge!(
        "gregor_log_open_files",
        Unit::Count,
        "Segment files holding a descriptor now, under log.open.files.max."
    );
    describe_gauge!(
        "gregor_log_open_files_max",
        Unit::Count,
        "Segment files that may hold a descriptor at once (log.open.files.max, or half the open-file limit)."
    );
    describe_counter!(
        "gregor_log_files_closed_total",
        Unit::Count,
        "Segment files closed to stay under log.open.files.max (least recently used first)."
    );
    describe_counter!(
        "gregor_log_files_reopened_total",
        Unit::Count,
        "Closed segment files opened again for a read or write. Climbing fast: the partitions in use need more files than log.open.files.max allows; raise it (and ulimit -n)."
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "The broker's resident memory."
    );
}

/// How finely partition series are labelled (`metrics.partition.series`): every
/// partition, summed per topic, or summed over the broker. A scrape's cost grows with
/// the series, so a broker of tens of thousands of partitions can keep it small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesLevel {
    Partition,
    Topic,
    Broker,
}

impl SeriesLevel {
    pub fn parse(s: &str) -> Option<SeriesLevel> {
        match s {
            "partition" => Some(SeriesLevel::Partition),
            "topic" => Some(SeriesLevel::Topic),
            "broker" => Some(SeriesLevel::Broker),
            _ => None,
        }
    }

    /// The labels of a series about `topic` and `partition` (after `first`) at this level.
    pub fn labels(
        self,
        first: &[(&'static str, String)],
        topic: &str,
        partition: i32,
    ) -> Vec<(&'static str, String)> {
        let mut labels = first.to_vec();
        if self != SeriesLevel::Broker {
            labels.push(("topic", topic.to_string()));
        }
        if self == SeriesLevel::Partition {
            labels.push(("partition", partition.to_string()));
        }
        labels
    }
}

static SERIES_LEVEL: AtomicU8 = AtomicU8::new(0);

/// Sets the level of partition series registered from now on (at start).
pub fn set_series_level(level: SeriesLevel) {
    SERIES_LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn series_level() -> SeriesLevel {
    match SERIES_LEVEL.load(Ordering::Relaxed) {
        0 => SeriesLevel::Partition,
        1 => SeriesLevel::Topic,
        _ => SeriesLevel::Broker,
    }
}

/// A partition's metric handles, registered once when it opens. Below the partition
/// level, partitions with the same labels share their counters (which so add up), and
/// the log gauges are moved by each partition's change (and its share taken back when
/// the partition goes); offsets are per partition only.
#[derive(Clone)]
pub struct PartitionMetrics {
    pub produce_records: Counter,
    pub produce_bytes: Counter,
    pub fetch_records: Counter,
    pub fetch_bytes: Counter,
    log: Arc<LogGauges>,
}

struct LogGauges {
    level: SeriesLevel,
    size_bytes: Gauge,
    segments: Gauge,
    start_offset: Gauge,
    end_offset: Gauge,
    /// This partition's share of the summed gauges: size and segments last set.
    share: Mutex<(f64, f64)>,
}

impl Drop for LogGauges {
    fn drop(&mut self) {
        if self.level != SeriesLevel::Partition {
            let share = self.share.get_mut().unwrap_or_else(|p| p.into_inner());
            self.size_bytes.decrement(share.0);
            self.segments.decrement(share.1);
        }
    }
}

impl std::fmt::Debug for PartitionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PartitionMetrics")
    }
}

impl PartitionMetrics {
    /// Sets the log's gauges: its size, segment count, start and end offsets.
    pub fn set_log(&self, size_bytes: u64, segments: usize, log_start: i64, log_end: i64) {
        let g = &self.log;
        if g.level == SeriesLevel::Partition {
            g.size_bytes.set(size_bytes as f64);
            g.segments.set(segments as f64);
            g.start_offset.set(log_start as f64);
            g.end_offset.set(log_end as f64);
            return;
        }
        let mut share = g.share.lock().unwrap_or_else(|p| p.into_inner());
        let now = (size_bytes as f64, segments as f64);
        g.size_bytes.increment(now.0 - share.0);
        g.segments.increment(now.1 - share.1);
        *share = now;
    }

    pub fn new(topic: &str, partition: i32) -> Self {
        let level = series_level();
        let labels = level.labels(&[], topic, partition);
        let offsets = |name: &'static str| {
            if level == SeriesLevel::Partition {
                metrics::gauge!(name, &labels)
            } else {
                Gauge::noop()
            }
        };
        PartitionMetrics {
            produce_records: metrics::counter!("gregor_produce_records_total", &labels),
            produce_bytes: metrics::counter!("gregor_produce_bytes_total", &labels),
            fetch_records: metrics::counter!("gregor_fetch_records_total", &labels),
            fetch_bytes: metrics::counter!("gregor_fetch_bytes_total", &labels),
            log: Arc::new(LogGauges {
                level,
                size_bytes: metrics::gauge!("gregor_log_size_bytes", &labels),
                segments: metrics::gauge!("gregor_log_segments", &labels),
                start_offset: offsets("gregor_log_start_offset"),
                end_offset: offsets("gregor_log_end_offset"),
                share: Mutex::new((0.0, 0.0)),
            }),
        }
    }
}

/// Per-API request counter and latency histogram.
struct ApiMetrics {
    requests: Counter,
    duration: Histogram,
}

static API_METRICS: OnceLock<HashMap<i16, ApiMetrics>> = OnceLock::new();

/// Registers the request counter and latency histogram of every API in `apis` (the
/// registry the server serves); requests of other APIs are not counted.
pub fn register_apis(apis: impl IntoIterator<Item = ApiKey>) {
    let _ = API_METRICS.set(
        apis.into_iter()
            .map(|key| {
                let name = format!("{key:?}");
                (
                    key as i16,
                    ApiMetrics {
                        requests: metrics::counter!("gregor_requests_total", "api" => name.clone()),
                        duration: metrics::histogram!("gregor_request_duration_seconds", "api" => name),
                    },
                )
            })
            .collect(),
    );
}

/// Counts one answered request and its latency.
pub fn request_done(api: ApiKey, elapsed: Duration) {
    if let Some(m) = API_METRICS.get().and_then(|m| m.get(&(api as i16))) {
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

/// Counts a connection the broker closed or refused, by reason.
pub fn connection_refused(reason: &'static str) {
    metrics::counter!("gregor_connections_closed_total", "reason" => reason).increment(1);
}

/// Counts a client's throttle (a quota it went over): the time, and the responses.
pub fn client_throttled(quota: &'static str, user: &str, client_id: &str, throttle: Duration) {
    let labels = [
        ("quota", quota.to_string()),
        ("user", user.to_string()),
        ("client_id", client_id.to_string()),
    ];
    metrics::counter!("gregor_client_throttle_milliseconds_total", &labels)
        .increment(throttle.as_millis() as u64);
    metrics::counter!("gregor_client_throttled_responses_total", &labels).increment(1);
}

/// Sets the fetch sessions' gauges: sessions open, and their partitions.
pub fn fetch_sessions(sessions: usize, partitions: usize) {
    metrics::gauge!("gregor_fetch_sessions").set(sessions as f64);
    metrics::gauge!("gregor_fetch_session_partitions").set(partitions as f64);
}

/// Sets the open-file budget's gauges and counters (`log.open.files.max`).
pub fn open_files(s: gregor_storage::handles::FileStats) {
    metrics::gauge!("gregor_log_open_files").set(s.open as f64);
    metrics::gauge!("gregor_log_open_files_max").set(gregor_storage::handles::budget() as f64);
    metrics::counter!("gregor_log_files_closed_total").absolute(s.closed);
    metrics::counter!("gregor_log_files_reopened_total").absolute(s.reopened);
}

/// Moves the bytes of requests being read and handled by `delta`.
pub fn request_memory(delta: f64) {
    metrics::gauge!("gregor_request_memory_bytes").increment(delta);
}

/// Counts a request that waited for room under `queued.max.request.bytes`.
pub fn request_memory_wait() {
    metrics::counter!("gregor_request_memory_waits_total").increment(1);
}

pub fn connection_closed() {
    metrics::gauge!("gregor_connections").decrement(1.0);
}

/// VmRSS from `/proc/self/status`, where there is one.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
