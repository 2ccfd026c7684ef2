//! The deterministic simulator: a cluster of real brokers (the broker's own code: its
//! listeners, Produce and Fetch handlers, replica fetchers, the metadata quorum over its
//! own transport) and a client in one process, on turmoil's simulated network and clock,
//! driven by one seed. A run writes through the faults below and then reads every
//! partition back; the checker reports acknowledged records lost or changed, idempotent
//! producers' records stored twice or out of order, and idempotent producers refused.
//!
//! # Fault model
//! - **Network partitions** between one broker and the other brokers (the client still
//!   reaches it), or between one broker and every other host. Messages sent across a
//!   partition are lost; the partition heals after a while. A connection attempt across a
//!   partition is refused at once (turmoil drops the SYN, which the connecting side sees
//!   as a refusal), as behind a firewall that rejects rather than drops: the controller's
//!   knock (`controller::Knocks`) therefore fences a cut-off broker early here, while its
//!   lease still runs, which is harsher than a partition that drops packets.
//! - **Held links**: every message to and from one broker is held, then delivered late
//!   and in a burst (a paused process whose peers' bytes wait in its socket buffers).
//! - **Crashes and restarts**: a broker's host stops at once (no clean shutdown, no
//!   controlled shutdown, connections dropped) and its files (its partitions' logs and its
//!   copy of the metadata log, votes included) lose every byte written since their last
//!   fsync (`FaultyDisk::crash`: a power cut of that machine); it starts again later on its
//!   data directory and recovers it; or, bounced, at once (within 300 ms, before any
//!   election timeout), so that a bounced controller is restored as the leader of its term.
//! - **Latency**: every message takes between the minimum and the maximum latency, drawn
//!   from the seed; messages between two hosts on one connection stay in order (TCP).
//! - At most one broker is faulty at a time, so a majority of the three is always up.
//!
//! Not modelled yet (say so when reading a green run): directory changes survive a crash,
//! disk errors and torn writes, a crash of two brokers at once, clock skew between
//! brokers, and the group and transaction coordinators (the workload has only producers).
//!
//! # Determinism
//! One seed fixes turmoil's network (latencies, which message goes first), the fault
//! schedule and the workload; what the brokers draw themselves (topic ids, incarnations)
//! comes from `getrandom`, which the test binary answers from the seed (`entropy.rs`), and
//! each seed runs in a process of its own, so a failing seed replays the same run
//! (`a_seed_replays_the_same_run`). `SIM_LOG=info` shows its log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use gregor_cluster::net::TcpStream;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod client;
pub mod entropy;

use client::Client;

/// The topic the workload writes.
const TOPIC: &str = "t";
/// The Kafka port of every simulated broker, and the metadata log's.
const KAFKA_PORT: u16 = 9092;
const RAFT_PORT: u16 = 9093;

/// Every partition read back: partition -> offset -> value.
type Logs = BTreeMap<i32, BTreeMap<i64, String>>;

/// What one run does.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub brokers: u32,
    pub partitions: i32,
    /// Writers, each writing one record at a time with `acks=all`, a pause between
    /// writes, for `writing` (simulated) time. Even-numbered writers are idempotent
    /// producers (a producer id, a sequence per partition, retries with the same
    /// sequence); the others retry as a plain producer does, possibly writing twice.
    pub writers: u32,
    pub writing: Duration,
    /// Inject faults (else the run only checks that a healthy cluster loses nothing).
    pub faults: bool,
}

impl Options {
    pub fn new(seed: u64) -> Self {
        Options {
            seed,
            brokers: 3,
            partitions: 2,
            writers: 4,
            writing: Duration::from_secs(60),
            faults: true,
        }
    }
}

/// An acknowledged write: the broker said `value` is at `offset` of `partition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub partition: i32,
    pub offset: i64,
    pub value: String,
    /// Simulated time of the acknowledgement, since the run began.
    pub at: Duration,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub seed: u64,
    pub acknowledged: usize,
    /// Acknowledged records missing from the log read back at the end.
    pub lost: Vec<Ack>,
    /// Acknowledged offsets that hold another record at the end.
    pub changed: Vec<(Ack, String)>,
    /// Records of an idempotent producer stored more than once: value, offsets.
    pub duplicated: Vec<(String, Vec<i64>)>,
    /// An idempotent producer's records of one partition stored out of their order.
    pub reordered: Vec<String>,
    /// Idempotent producers that stopped on an error a correct broker never gives them
    /// (an out-of-order sequence, an unknown producer id).
    pub fatal: Vec<String>,
    /// Every fault injected, with its simulated time.
    pub faults: Vec<String>,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// The longest simulated time in which no write was acknowledged, while writing, and
    /// when it began.
    pub longest_gap: (Duration, Duration),
    /// A hash of every acknowledgement (partition, offset, value, time) and every fault
    /// with its time: two runs of a seed are the same run when their fingerprints are.
    pub fingerprint: u64,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.changed.is_empty()
            && self.duplicated.is_empty()
            && self.reordered.is_empty()
            && self.fatal.is_empty()
    }
}

/// splitmix64: the run's own randomness, from the seed alone.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

fn host(id: u32) -> String {
    format!("b{id}")
}

/// One fault, from start to end.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The broker cannot reach the other brokers (nor they it); the client reaches it.
    IsolateFromBrokers(u32),
    /// The broker cannot reach anyone.
    Isolate(u32),
    /// Everything to and from the broker is held, then delivered.
    Hold(u32),
    /// The broker crashes, and restarts at the end.
    Crash(u32),
    /// The broker crashes and restarts within a moment, sooner than any election timeout:
    /// a controller so bounced comes back as the leader of its term (openraft restores
    /// it), with its state machine rebuilt from its snapshot.
    Bounce(u32),
}

/// The fault schedule: (start, end, fault), one at a time with quiet gaps between.
fn schedule(rng: &mut Rng, brokers: u32, until: Duration) -> Vec<(Duration, Duration, Fault)> {
    let mut out = Vec::new();
    let mut t = Duration::from_millis(rng.range(2_000, 6_000));
    while t < until {
        let broker = rng.range(1, u64::from(brokers) + 1) as u32;
        let mut length = Duration::from_millis(rng.range(500, 12_000));
        let fault = match rng.range(0, 5) {
            0 => Fault::IsolateFromBrokers(broker),
            1 => Fault::Isolate(broker),
            2 => Fault::Hold(broker),
            3 => Fault::Crash(broker),
            _ => {
                length = Duration::from_millis(rng.range(20, 300));
                Fault::Bounce(broker)
            }
        };
        out.push((t, t + length, fault));
        t += length + Duration::from_millis(rng.range(1_000, 8_000));
    }
    out
}

fn broker_config(
    id: u32,
    brokers: u32,
    dir: &std::path::Path,
) -> Result<gregor_broker::BrokerConfig, String> {
    let voters: Vec<String> = (1..=brokers)
        .map(|i| format!("{i}@{}:{RAFT_PORT}", host(i)))
        .collect();
    let flags: Vec<(&str, String, &str)> = vec![
        ("log.dirs", dir.display().to_string(), "simulator"),
        ("listeners", format!("0.0.0.0:{KAFKA_PORT}"), "simulator"),
        (
            "advertised.listeners",
            format!("{}:{KAFKA_PORT}", host(id)),
            "simulator",
        ),
        ("node.id", id.to_string(), "simulator"),
        ("controller.quorum.voters", voters.join(","), "simulator"),
        ("broker.session.timeout.ms", "3000".into(), "simulator"),
        ("broker.heartbeat.interval.ms", "500".into(), "simulator"),
        (
            "default.replication.factor",
            brokers.min(3).to_string(),
            "simulator",
        ),
        ("min.insync.replicas", "2".into(), "simulator"),
        ("metrics.listener", "off".into(), "simulator"),
        // Few segment files open at once (the budget is the process's, shared by every
        // broker here): files are closed and opened again all through the run.
        ("log.open.files.max", "4".into(), "simulator"),
    ];
    gregor_broker::BrokerConfig::from_layers(None, &[], &flags)
}

/// Runs one seed, on a fresh thread with the process's randomness reseeded from it (see
/// [`entropy`]). `Err` is a run that could not be judged (the cluster never formed, the
/// simulation itself failed); a judged run returns its [`Outcome`].
pub fn run(opts: &Options) -> Result<Outcome, String> {
    let opts = opts.clone();
    entropy::reseed(opts.seed);
    std::thread::Builder::new()
        .name(format!("seed-{}", opts.seed))
        .spawn(move || run_here(&opts))
        .map_err(|e| format!("cannot start the run's thread: {e}"))?
        .join()
        .map_err(|p| {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("the run panicked: {why}")
        })?
}

/// What the client task shares with the driver: every acknowledgement, the writers'
/// fatal errors, the logs read back, and whether writing goes on.
#[derive(Default, Clone)]
struct Shared {
    acks: Arc<Mutex<Vec<Ack>>>,
    fatal: Arc<Mutex<Vec<String>>>,
    read_back: Arc<Mutex<Option<Logs>>>,
    writing: Arc<std::sync::atomic::AtomicBool>,
}

impl Shared {
    fn writing(&self) -> bool {
        self.writing.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn run_here(opts: &Options) -> Result<Outcome, String> {
    let root = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let mut rng = Rng::new(opts.seed);
    let mut sim = turmoil::Builder::new()
        .rng_seed(opts.seed)
        .simulation_duration(Duration::from_secs(600))
        .tick_duration(Duration::from_millis(2))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(Duration::from_millis(rng.range(1, 30)))
        // Deep enough for the connection attempts a held link gathers (turmoil stops the
        // run when a listen backlog overflows; an OS would drop the SYNs).
        .tcp_capacity(1 << 16)
        .build();
    let disks = add_brokers(&mut sim, opts, root.path());
    let shared = Shared::default();
    shared
        .writing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    add_client(&mut sim, opts, &shared);
    let until = opts.writing + Duration::from_secs(20);
    let plan = if opts.faults {
        schedule(&mut rng, opts.brokers, until)
    } else {
        Vec::new()
    };
    let faults = drive(&mut sim, opts, &plan, &disks, &shared)?;
    let simulated = sim.elapsed();
    let acks = std::mem::take(&mut *shared.acks.lock().unwrap_or_else(|p| p.into_inner()));
    let logs = shared
        .read_back
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| format!("seed {}: the client ended without reading back", opts.seed))?;
    let fatal = std::mem::take(&mut *shared.fatal.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(judge(opts.seed, acks, &logs, faults, fatal, simulated))
}

/// Starts every broker on its own host, each on a faulty disk of its own (returned, so
/// that a crash can lose what it did not fsync).
fn add_brokers(
    sim: &mut turmoil::Sim<'_>,
    opts: &Options,
    root: &std::path::Path,
) -> HashMap<u32, gregor_storage::FaultyDisk> {
    let mut disks = HashMap::new();
    for id in 1..=opts.brokers {
        let dir = root.join(host(id));
        let brokers = opts.brokers;
        let disk = gregor_storage::FaultyDisk::new();
        disk.set(|f| f.track_unsynced = true);
        disks.insert(id, disk.clone());
        sim.host(host(id), move || {
            let dir = dir.clone();
            let disk = disk.clone();
            async move {
                let config = broker_config(id, brokers, &dir)?;
                gregor_broker::server::run_on(config, Arc::new(disk), std::future::pending())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
        });
    }
    disks
}

/// The client host: creates the topic, runs the writers until `opts.writing` ends, then
/// (once the driver has healed every fault) reads every partition back.
fn add_client(sim: &mut turmoil::Sim<'_>, opts: &Options, shared: &Shared) {
    let opts = opts.clone();
    let shared = shared.clone();
    let mut rng = Rng::new(opts.seed.wrapping_mul(31).wrapping_add(7));
    sim.client("client", async move {
        let bootstrap: Vec<String> = (1..=opts.brokers).map(host).collect();
        let mut admin = Client::new(bootstrap.clone());
        admin.await_cluster(opts.brokers).await?;
        admin
            .create_topic(opts.partitions, opts.brokers.min(3) as i16)
            .await?;
        let mut writers = Vec::new();
        for w in 0..opts.writers {
            let client = Client::new(bootstrap.clone());
            let seed = rng.next_u64();
            writers.push(tokio::task::spawn_local(write(
                w,
                client,
                Rng::new(seed),
                opts.clone(),
                shared.clone(),
            )));
        }
        for w in writers {
            w.await.map_err(|e| format!("writer: {e}"))??;
        }
        shared
            .writing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        // The driver heals every fault once writing ends; then read everything back
        // from each partition's leader, once the leaders have settled.
        tokio::time::sleep(Duration::from_secs(15)).await;
        let mut reader = Client::new(bootstrap);
        let mut all = BTreeMap::new();
        for p in 0..opts.partitions {
            all.insert(p, reader.read_partition(p).await?);
        }
        *shared.read_back.lock().unwrap_or_else(|p| p.into_inner()) = Some(all);
        Ok(())
    });
}

/// Writer `w`: random partitions at random intervals until `opts.writing` ends, each
/// write retried until acknowledged or its deadline; even writers are idempotent.
async fn write(
    w: u32,
    mut client: Client,
    mut rng: Rng,
    opts: Options,
    shared: Shared,
) -> Result<(), String> {
    let end = tokio::time::Instant::now() + opts.writing;
    let mut producer = if w.is_multiple_of(2) {
        Some(client.init_producer_id().await?)
    } else {
        None
    };
    for i in 0.. {
        if tokio::time::Instant::now() >= end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.range(10, 300))).await;
        let partition = rng.range(0, opts.partitions as u64) as i32;
        let value = format!("w{w}-{i}");
        let written = client
            .produce_until_acked(partition, &value, producer.as_mut(), end)
            .await;
        let offset = match written {
            Ok(offset) => offset,
            Err(e) => {
                shared
                    .fatal
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("writer {w}: {e}"));
                break;
            }
        };
        if let Some(offset) = offset {
            shared
                .acks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Ack {
                    partition,
                    offset,
                    value,
                    at: turmoil::elapsed(),
                });
        }
    }
    Ok(())
}

/// Steps the simulation to its end, starting each planned fault in turn (one at a time)
/// and healing it at its end or once writing ends; returns what happened, for the report.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    opts: &Options,
    plan: &[(Duration, Duration, Fault)],
    disks: &HashMap<u32, gregor_storage::FaultyDisk>,
    shared: &Shared,
) -> Result<Vec<String>, String> {
    let mut faults = Vec::new();
    let mut active: Option<(Duration, Fault)> = None;
    let mut next = 0;
    loop {
        let done = sim
            .step()
            .map_err(|e| format!("seed {}: the simulation failed: {e}", opts.seed))?;
        if done {
            return Ok(faults);
        }
        let now = sim.elapsed();
        let still_writing = shared.writing();
        if let Some((end, fault)) = active {
            if now >= end || !still_writing {
                set_fault(sim, &fault, opts.brokers, false);
                faults.push(format!("{:>7.3}s healed {fault:?}", now.as_secs_f64()));
                active = None;
            }
        } else if still_writing && next < plan.len() && now >= plan[next].0 {
            let (_, end, fault) = plan[next];
            next += 1;
            set_fault(sim, &fault, opts.brokers, true);
            let mut note = String::new();
            if let Fault::Crash(b) | Fault::Bounce(b) = fault {
                let lost = disks[&b]
                    .crash()
                    .map_err(|e| format!("seed {}: crashing b{b}'s disk: {e}", opts.seed))?;
                note = format!(" ({lost} files lost unsynced bytes)");
            }
            faults.push(format!("{:>7.3}s {fault:?}{note}", now.as_secs_f64()));
            active = Some((end, fault));
        }
    }
}

/// The checker: every acknowledged record at its offset with its value; each idempotent
/// writer's records stored once and in the order written.
fn judge(
    seed: u64,
    acks: Vec<Ack>,
    logs: &Logs,
    faults: Vec<String>,
    fatal: Vec<String>,
    simulated: Duration,
) -> Outcome {
    let mut times: Vec<Duration> = acks.iter().map(|a| a.at).collect();
    times.sort();
    let longest_gap = times
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or_default();
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same in every process.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for a in &acks {
            (a.partition, a.offset, &a.value, a.at.as_nanos()).hash(&mut h);
        }
        faults.hash(&mut h);
        h.finish()
    };
    let mut outcome = Outcome {
        seed,
        acknowledged: acks.len(),
        longest_gap,
        fingerprint,
        faults,
        simulated,
        fatal,
        ..Outcome::default()
    };
    for ack in acks {
        match logs.get(&ack.partition).and_then(|l| l.get(&ack.offset)) {
            None => outcome.lost.push(ack),
            Some(v) if *v != ack.value => outcome.changed.push((ack.clone(), v.clone())),
            Some(_) => {}
        }
    }
    for (partition, log) in logs {
        let mut seen: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        let mut last: HashMap<u32, (u64, i64)> = HashMap::new();
        for (offset, value) in log {
            let Some((w, i)) = writer_and_index(value) else {
                continue;
            };
            if w % 2 != 0 {
                continue;
            }
            seen.entry(value).or_default().push(*offset);
            if let Some(&(before, at)) = last.get(&w) {
                if i < before {
                    outcome.reordered.push(format!(
                        "partition {partition}: w{w}-{i} at offset {offset} after w{w}-{before} at {at}"
                    ));
                }
            }
            last.insert(w, (i, *offset));
        }
        outcome.duplicated.extend(
            seen.into_iter()
                .filter(|(_, at)| at.len() > 1)
                .map(|(v, at)| (v.to_string(), at)),
        );
    }
    outcome
}

/// "w3-17" -> (3, 17).
fn writer_and_index(value: &str) -> Option<(u32, u64)> {
    let (w, i) = value.strip_prefix('w')?.split_once('-')?;
    Some((w.parse().ok()?, i.parse().ok()?))
}

/// The links a network fault cuts or holds: the broker's to every other broker, and to
/// the client unless the fault leaves the client reaching it.
fn links(fault: &Fault, brokers: u32) -> Vec<(String, String)> {
    let (b, client) = match *fault {
        Fault::IsolateFromBrokers(b) => (b, false),
        Fault::Isolate(b) | Fault::Hold(b) => (b, true),
        Fault::Crash(_) | Fault::Bounce(_) => return Vec::new(),
    };
    let mut out: Vec<(String, String)> = (1..=brokers)
        .filter(|&o| o != b)
        .map(|o| (host(b), host(o)))
        .collect();
    if client {
        out.push((host(b), "client".into()));
    }
    out
}

/// Starts (`on`) or ends a fault: links cut or held, then repaired or released; a host
/// crashed, then started again.
fn set_fault(sim: &mut turmoil::Sim<'_>, fault: &Fault, brokers: u32, on: bool) {
    for (a, b) in links(fault, brokers) {
        match (fault, on) {
            (Fault::Hold(_), true) => sim.hold(a, b),
            (Fault::Hold(_), false) => sim.release(a, b),
            (_, true) => sim.partition(a, b),
            (_, false) => sim.repair(a, b),
        }
    }
    match (*fault, on) {
        (Fault::Crash(b) | Fault::Bounce(b), true) => sim.crash(host(b)),
        (Fault::Crash(b) | Fault::Bounce(b), false) => sim.bounce(host(b)),
        _ => {}
    }
}

/// Sends the brokers' logs to standard error when `SIM_LOG` is set (`SIM_LOG=info`), each
/// line stamped with the simulated time and the host (`node{name=...}`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(SimulatedTime)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// The simulated time, for log lines.
struct SimulatedTime;

impl tracing_subscriber::fmt::time::FormatTime for SimulatedTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(t) => write!(w, "{:>9.3}s", t.as_secs_f64()),
            None => write!(w, "{:>10}", "-"),
        }
    }
}
