//! `gregor bench produce|consume|e2e`: a load generator that talks to any Kafka-compatible
//! broker through librdkafka (the `rdkafka` crate), so its figures are the ones users of
//! librdkafka-based clients see. Latencies go into HdrHistograms (microseconds).
//!
//! - `produce`: P producer threads send records of B bytes (optionally paced to a total
//!   rate); latency is from `send` to the delivery report.
//! - `consume`: one consumer reads every partition from the beginning.
//! - `e2e`: producers and a consumer at once; each payload carries its send time, and the
//!   end-to-end latency is from `send` to the consumer seeing the record.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Produce,
    Consume,
    E2e,
}

/// Workloads named after the OpenMessaging Benchmark's: (name, partitions, record bytes).
pub const WORKLOADS: &[(&str, i32, usize)] = &[
    ("1-topic-1-partition-100b", 1, 100),
    ("1-topic-1-partition-1kb", 1, 1024),
    ("1-topic-16-partitions-100b", 16, 100),
    ("1-topic-16-partitions-1kb", 16, 1024),
    ("1-topic-100-partitions-1kb", 100, 1024),
    ("1-topic-1000-partitions-1kb", 1000, 1024),
];

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub mode: Mode,
    /// A named workload (sets --partitions and --record-bytes): 1-topic-1-partition-100b,
    /// 1-topic-1-partition-1kb, 1-topic-16-partitions-100b, 1-topic-16-partitions-1kb,
    /// 1-topic-100-partitions-1kb, 1-topic-1000-partitions-1kb.
    #[arg(long)]
    pub workload: Option<String>,
    /// A broker to load (any Kafka-compatible broker).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic to use; created with --partitions if missing. Default: a fresh one per run.
    #[arg(long)]
    pub topic: Option<String>,
    #[arg(long, default_value_t = 16)]
    pub partitions: i32,
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records to send (or read); the run ends at whichever of --records and --seconds
    /// comes first.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// 0, 1 or all.
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Producer threads (each its own librdkafka producer).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Total records per second to offer; 0 for as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// librdkafka's linger.ms (the OpenMessaging Benchmark's Kafka driver uses 1).
    #[arg(long, default_value_t = 1.0)]
    pub linger_ms: f64,
    /// librdkafka's fetch sizes for consume and e2e (fetch.max.bytes and
    /// max.partition.fetch.bytes).
    #[arg(long, default_value_t = 1 << 20)]
    pub fetch_bytes: usize,
    /// A config for the topic when it is created, e.g. `flush.messages=1` (repeatable).
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    pub topic_configs: Vec<String>,
    /// A librdkafka setting for every client of the run (repeatable), e.g.
    /// -X security.protocol=SSL -X ssl.ca.location=ca.pem.
    #[arg(short = 'X', long = "client-config", value_name = "KEY=VALUE")]
    pub client_configs: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize, Clone)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            samples: h.len(),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub mode: String,
    pub workload: Option<String>,
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub record_bytes: usize,
    pub acks: String,
    pub compression: String,
    pub producers: usize,
    pub offered_rate: u64,
    pub records: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    /// Produce: send to delivery report.
    pub produce_latency: Option<Latency>,
    /// e2e: send to the consumer seeing the record.
    pub e2e_latency: Option<Latency>,
    /// End-to-end only: records the consumer received per second, from its first record
    /// to its last: the rate the whole pipeline sustained (the consumer keeping up).
    pub consumed_records_per_sec: Option<f64>,
    pub errors: u64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("static histogram bounds are valid")
}

fn micros_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Collects delivery reports: latency from the send time carried as the opaque.
struct Reports {
    start: Instant,
    latency: Mutex<Histogram<u64>>,
    delivered: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, sent_us: usize) {
        match result {
            Ok(_) => {
                let now = self.start.elapsed().as_micros() as u64;
                let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
                h.saturating_record(now.saturating_sub(sent_us as u64).max(1));
                drop(h);
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn base_config(args: &BenchArgs) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.bootstrap);
    c.set("log_level", "3");
    for kv in &args.client_configs {
        if let Some((k, v)) = kv.split_once('=') {
            c.set(k.trim(), v.trim());
        }
    }
    c
}

fn create_topic(args: &BenchArgs, topic: &str) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = base_config(args)
        .create()
        .map_err(|e| format!("cannot create an admin client for {}: {e}", args.bootstrap))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut new = NewTopic::new(topic, args.partitions, TopicReplication::Fixed(1));
    for kv in &args.topic_configs {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--topic-config {kv}: expected KEY=VALUE"))?;
        new = new.set(k, v);
    }
    let results = runtime
        .block_on(admin.create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .map_err(|e| {
            format!(
                "cannot create topic {topic} on {}: {e}; is a broker running there?",
                args.bootstrap
            )
        })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(format!("cannot create topic {t}: {e}")),
        }
    }
    Ok(())
}

/// Sets `stop` when dropped, so the progress thread ends on every path out of a run.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Live counters shown while the run goes.
struct Progress {
    sent: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// Shows a progress bar on a terminal, else a line every two seconds, until `stop`.
fn show_progress(p: Progress, total: u64, seconds: f64, record_bytes: usize, label: &'static str) {
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let start = Instant::now();
    let mut last = (start, 0u64);
    let mut last_line = start;
    while !p.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let done = p.done.load(Ordering::Relaxed);
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64();
        if dt < 0.9 {
            continue;
        }
        let rate = (done - last.1) as f64 / dt;
        last = (now, done);
        let msg = format!(
            "{label} {:>10.0} rec/s {:>8.1} MB/s (sent {})",
            rate,
            rate * record_bytes as f64 / 1e6,
            p.sent.load(Ordering::Relaxed)
        );
        if let Some(b) = &bar {
            b.set_position(done.min(total));
            b.set_message(msg);
        } else if now.duration_since(last_line) >= Duration::from_secs(2) {
            last_line = now;
            eprintln!(
                "[{:>5.1}s / {seconds:.0}s] {done}/{total} {msg}",
                start.elapsed().as_secs_f64()
            );
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// One producer thread: sends until its share of records is sent or the deadline passes,
/// then waits for the outstanding deliveries. Returns its latency histogram.
#[allow(clippy::too_many_arguments)]
fn produce_thread(
    args: &BenchArgs,
    topic: &str,
    share: u64,
    rate: u64,
    limit: Duration,
    sent: Arc<AtomicU64>,
    delivered: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stamp_time: bool,
) -> Result<(Histogram<u64>, Option<String>, Duration), String> {
    let start = Instant::now();
    let deadline = start + limit;
    let reports = Reports {
        start,
        latency: Mutex::new(new_histogram()),
        delivered,
        errors,
        first_error: Mutex::new(None),
    };
    let mut config = base_config(args);
    config
        .set("acks", &args.acks)
        .set("compression.type", &args.compression)
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", (1 << 20).to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", (1 << 21).to_string());
    // A threaded producer serves delivery reports as they arrive, so the latency measured
    // is the broker's and the network's, not how often this loop polls.
    let producer: ThreadedProducer<Reports> = config
        .create_with_context(reports)
        .map_err(|e| format!("cannot create a producer for {}: {e}", args.bootstrap))?;
    let mut payload = vec![b'x'; args.record_bytes.max(8)];
    payload.truncate(args.record_bytes.max(if stamp_time { 8 } else { 0 }));
    let mut n = 0u64;
    while n < share && Instant::now() < deadline {
        if rate > 0 {
            // Pace: the n-th record is due at n / rate seconds.
            let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(Duration::from_millis(1)));
                continue;
            }
        }
        if stamp_time {
            payload[..8].copy_from_slice(&micros_since_epoch().to_be_bytes());
        }
        let sent_us = start.elapsed().as_micros() as usize;
        let record = BaseRecord::with_opaque_to(topic, sent_us).payload(payload.as_slice());
        match producer.send::<(), [u8]>(record) {
            Ok(()) => {
                n += 1;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(format!("send failed: {e}")),
        }
    }
    // Wait for every delivery report. (rdkafka's `flush` charges its timeout per poll,
    // not per elapsed time, so with many reports queued it gives up early.)
    let flush_deadline = Instant::now() + Duration::from_secs(120);
    while producer.in_flight_count() > 0 {
        if Instant::now() >= flush_deadline {
            return Err(format!(
                "{} records still undelivered after 120 s; is the broker at {} answering?",
                producer.in_flight_count(),
                args.bootstrap
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let ctx = producer.context();
    let h = ctx
        .latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let first = ctx
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok((h, first, start.elapsed()))
}

/// Reads until `expected` records or the deadline; with `e2e`, records the latency from
/// the send time in each payload. Returns (records, bytes, e2e histogram).
fn consume_loop(
    args: &BenchArgs,
    topic: &str,
    expected: &dyn Fn() -> u64,
    deadline: Instant,
    done: Arc<AtomicU64>,
    ready: Option<&AtomicBool>,
) -> Result<(u64, u64, Histogram<u64>, Duration), String> {
    let e2e = ready.is_some();
    let mut config = base_config(args);
    config
        .set("group.id", format!("gregor-bench-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set(
            "fetch.max.bytes",
            (args.fetch_bytes.max(1) * 16).to_string(),
        )
        .set("max.partition.fetch.bytes", args.fetch_bytes.to_string())
        .set("fetch.wait.max.ms", "100");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| format!("cannot create a consumer for {}: {e}", args.bootstrap))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..args.partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("assign failed: {e}"))?;
    if let Some(ready) = ready {
        // Let the consumer connect and start fetching before anything is sent, so the
        // end-to-end figures do not include its start-up.
        let warm = Instant::now() + Duration::from_secs(1);
        while Instant::now() < warm {
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(50)) {
                return Err(format!("consume failed: {e}"));
            }
        }
        ready.store(true, Ordering::Release);
    }
    let mut h = new_histogram();
    let (mut records, mut bytes) = (0u64, 0u64);
    // Timed from the first record to the last, so connecting is not counted.
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    while Instant::now() < deadline {
        let want = expected();
        if want > 0 && records >= want {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                first.get_or_insert(last);
                records += 1;
                done.fetch_add(1, Ordering::Relaxed);
                let payload = m.payload().unwrap_or_default();
                bytes += payload.len() as u64;
                if e2e && payload.len() >= 8 {
                    let sent = u64::from_be_bytes(payload[..8].try_into().unwrap_or_default());
                    h.saturating_record(micros_since_epoch().saturating_sub(sent).max(1));
                }
            }
            Some(Err(e)) => return Err(format!("consume failed: {e}")),
            None => {}
        }
    }
    let took = first.map_or(Duration::ZERO, |f| last.duration_since(f));
    Ok((records, bytes, h, took))
}

pub fn run(mut args: BenchArgs) -> Result<BenchResult, String> {
    apply_workload(&mut args)?;
    let topic = args.topic.clone().unwrap_or_else(|| {
        format!(
            "gregor-bench-{}-{}",
            args.workload.as_deref().unwrap_or("custom"),
            micros_since_epoch()
        )
    });
    create_topic(&args, &topic)?;
    let limit = Duration::from_secs_f64(args.seconds.max(0.1));
    let counters = Counters::default();
    let m = match args.mode {
        Mode::Produce | Mode::E2e => run_producers(&args, &topic, limit, &counters)?,
        Mode::Consume => run_consumer(&args, &topic, limit, &counters)?,
    };
    let secs = m.elapsed.as_secs_f64().max(1e-9);
    let errors = counters.errors.load(Ordering::Relaxed);
    if let Some(e) = m.first_error {
        eprintln!("gregor bench: {errors} records failed; the first: {e}");
    }
    Ok(BenchResult {
        mode: format!("{:?}", args.mode).to_lowercase(),
        workload: args.workload.clone(),
        bootstrap: args.bootstrap.clone(),
        topic,
        partitions: args.partitions,
        record_bytes: args.record_bytes,
        acks: args.acks.clone(),
        compression: args.compression.clone(),
        producers: args.producers,
        offered_rate: args.rate,
        records: m.records,
        seconds: secs,
        records_per_sec: m.records as f64 / secs,
        mb_per_sec: m.bytes as f64 / secs / 1e6,
        produce_latency: m.produce_h.as_ref().and_then(Latency::of),
        e2e_latency: m.e2e_h.as_ref().and_then(|(h, _, _)| Latency::of(h)),
        consumed_records_per_sec: m
            .e2e_h
            .as_ref()
            .map(|(_, got, took)| *got as f64 / took.as_secs_f64().max(1e-9)),
        errors,
    })
}

/// `--workload` sets the partitions and record size; the other flags are checked.
fn apply_workload(args: &mut BenchArgs) -> Result<(), String> {
    if let Some(name) = &args.workload {
        let (_, partitions, bytes) =
            WORKLOADS
                .iter()
                .find(|(n, _, _)| n == name)
                .ok_or_else(|| {
                    format!(
                        "unknown workload {name}; known: {}",
                        WORKLOADS.iter().map(|w| w.0).collect::<Vec<_>>().join(", ")
                    )
                })?;
        args.partitions = *partitions;
        args.record_bytes = *bytes;
    }
    if !["0", "1", "all", "-1"].contains(&args.acks.as_str()) {
        return Err(format!("--acks {}: use 0, 1 or all", args.acks));
    }
    if args.producers == 0 {
        return Err("--producers must be at least 1".into());
    }
    Ok(())
}

/// The counts the threads of a run share: records sent, done (acknowledged or
/// consumed), failed, and the flag that stops the progress line.
#[derive(Default)]
struct Counters {
    sent: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// What a run measured.
struct Measured {
    records: u64,
    bytes: u64,
    elapsed: Duration,
    produce_h: Option<Histogram<u64>>,
    /// End-to-end latencies, with the records consumed and the time it took.
    e2e_h: Option<(Histogram<u64>, u64, Duration)>,
    first_error: Option<String>,
}

/// `--mode produce` and `--mode e2e`: the producer threads (and the consumer).
fn run_producers(
    args: &BenchArgs,
    topic: &str,
    limit: Duration,
    c: &Counters,
) -> Result<Measured, String> {
    let (sent, done, errors, stop) = (&c.sent, &c.done, &c.errors, &c.stop);
    let e2e = args.mode == Mode::E2e;
    // Without a consumer to wait for, producers start at once.
    let ready = AtomicBool::new(!e2e);
    let producing = Arc::new(AtomicBool::new(true));
    let progress = Progress {
        sent: c.sent.clone(),
        done: c.done.clone(),
        stop: c.stop.clone(),
    };
    std::thread::scope(|s| -> Result<_, String> {
        let _stop = StopOnDrop(stop.clone());
        let label = if e2e { "e2e" } else { "produce" };
        let total = args.records;
        let seconds = args.seconds;
        let rb = args.record_bytes;
        s.spawn(move || show_progress(progress, total, seconds, rb, label));
        let delivered = if e2e {
            Arc::new(AtomicU64::new(0))
        } else {
            done.clone()
        };
        let mut handles = Vec::new();
        let ready = &ready;
        for i in 0..args.producers {
            let share = args.records / args.producers as u64
                + u64::from((i as u64) < args.records % args.producers as u64);
            let rate = args.rate / args.producers as u64;
            let (args, topic) = (&args, &topic);
            let (sent, delivered, errors) = (sent.clone(), delivered.clone(), errors.clone());
            handles.push(s.spawn(move || {
                while !ready.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                produce_thread(
                    args, topic, share, rate, limit, sent, delivered, errors, e2e,
                )
            }));
        }
        let consumer = e2e.then(|| {
            let (args, topic, done) = (&args, &topic, done.clone());
            let sent = sent.clone();
            let producing = producing.clone();
            s.spawn(move || {
                // Read until every record sent has arrived (after the producers
                // finish), or 30 s past the deadline.
                let expected = move || {
                    if producing.load(Ordering::Relaxed) {
                        0
                    } else {
                        sent.load(Ordering::Relaxed)
                    }
                };
                consume_loop(
                    args,
                    topic,
                    &expected,
                    Instant::now() + limit + Duration::from_secs(31),
                    done,
                    Some(ready),
                )
            })
        });
        let mut produce_h = new_histogram();
        let mut first_error = None;
        let mut produced_elapsed = Duration::ZERO;
        for h in handles {
            let (hist, err, took) = h
                .join()
                .map_err(|_| "a producer thread panicked".to_string())??;
            produce_h.add(&hist).map_err(|e| e.to_string())?;
            first_error = first_error.or(err);
            produced_elapsed = produced_elapsed.max(took);
        }
        producing.store(false, Ordering::Relaxed);
        let mut e2e_h = None;
        if let Some(c) = consumer {
            let (got, _, h, took) = c
                .join()
                .map_err(|_| "the consumer thread panicked".to_string())??;
            e2e_h = Some((h, got, took));
        }
        stop.store(true, Ordering::Relaxed);
        let records = sent.load(Ordering::Relaxed);
        Ok(Measured {
            records,
            bytes: records * args.record_bytes as u64,
            elapsed: produced_elapsed,
            produce_h: Some(produce_h),
            e2e_h,
            first_error,
        })
    })
}

/// `--mode consume`: one consumer reading what is there.
fn run_consumer(
    args: &BenchArgs,
    topic: &str,
    limit: Duration,
    c: &Counters,
) -> Result<Measured, String> {
    let (done, stop) = (c.done.clone(), &c.stop);
    let start = Instant::now();
    let progress = Progress {
        sent: c.sent.clone(),
        done: c.done.clone(),
        stop: c.stop.clone(),
    };
    let (total, seconds, rb) = (args.records, args.seconds, args.record_bytes);
    let (records, bytes, took) = std::thread::scope(|s| -> Result<_, String> {
        let _stop = StopOnDrop(stop.clone());
        s.spawn(move || show_progress(progress, total, seconds, rb, "consume"));
        let want = args.records;
        let r = consume_loop(args, topic, &move || want, start + limit, done, None);
        stop.store(true, Ordering::Relaxed);
        let (records, bytes, _, took) = r?;
        Ok((records, bytes, took))
    })?;
    let took = if records > 1 { took } else { start.elapsed() };
    Ok(Measured {
        records,
        bytes,
        elapsed: took,
        produce_h: None,
        e2e_h: None,
        first_error: None,
    })
}

pub fn print(r: &BenchResult) {
    println!(
        "{} {} on {} ({} partitions, {} B records, acks={}, compression={}, {} producer(s){}):",
        r.mode,
        r.workload.as_deref().unwrap_or(&r.topic),
        r.bootstrap,
        r.partitions,
        r.record_bytes,
        r.acks,
        r.compression,
        r.producers,
        if r.offered_rate > 0 {
            format!(", offered {} rec/s", r.offered_rate)
        } else {
            String::new()
        }
    );
    println!(
        "  {} records in {:.2} s: {:.0} records/s, {:.1} MB/s{}",
        r.records,
        r.seconds,
        r.records_per_sec,
        r.mb_per_sec,
        if r.errors > 0 {
            format!(", {} failed", r.errors)
        } else {
            String::new()
        }
    );
    if let Some(c) = r.consumed_records_per_sec {
        println!("  consumed {c:.0} records/s (first to last record seen)");
    }
    for (name, l) in [
        ("produce latency", &r.produce_latency),
        ("end-to-end latency", &r.e2e_latency),
    ] {
        if let Some(l) = l {
            println!(
                "  {name}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
                l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        }
    }
}
