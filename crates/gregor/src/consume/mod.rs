//! `gregor consume TOPIC`: records from any Kafka-compatible broker, printed in a format in
//! the style of `kcat -f`, or as JSON lines. Without `--group` it reads the partitions
//! directly; with `--group` it joins the group as a consumer (range assignment), starts
//! from the group's committed offsets and commits what it printed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    BrokerId, ConsumerProtocolAssignment, ConsumerProtocolSubscription, FetchRequest, GroupId,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Record, RecordBatchDecoder};
use serde::Serialize;

use crate::client::{code, Cluster};
use crate::group;

mod membership;

use membership::{heartbeat, join, leave, Membership};

pub struct ConsumeArgs {
    pub topic: String,
    pub from_beginning: bool,
    pub group: Option<String>,
    pub partitions: Vec<i32>,
    /// `beginning`, `end`, an offset, or -N for N before the end.
    pub offset: Option<String>,
    pub count: Option<u64>,
    pub format: Option<String>,
    pub read_committed: bool,
    pub exit_at_end: bool,
    pub json: bool,
    /// Stop after this long without a record.
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Serialize)]
struct JsonRecord<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
    headers: BTreeMap<String, Option<String>>,
}

/// Where to start a partition.
#[derive(Debug, Clone, Copy)]
enum Start {
    Earliest,
    Latest,
    Offset(i64),
    FromEnd(i64),
}

fn parse_start(args: &ConsumeArgs) -> Result<Start, String> {
    Ok(match args.offset.as_deref() {
        None if args.from_beginning => Start::Earliest,
        None => Start::Latest,
        Some("beginning") | Some("earliest") => Start::Earliest,
        Some("end") | Some("latest") => Start::Latest,
        Some(s) => {
            let v: i64 = s.parse().map_err(|_| {
                format!("--offset {s}: expected beginning, end, an offset, or -N for N records before the end")
            })?;
            if v < 0 {
                Start::FromEnd(-v)
            } else {
                Start::Offset(v)
            }
        }
    })
}

/// Renders `fmt` for one record: %t topic, %p partition, %o offset, %k key, %s value,
/// %K key length, %S value length, %T timestamp (ms), %h headers (k=v,...), %% a percent;
/// \n, \t, \r and \\ escapes.
pub fn render(fmt: &str, topic: &str, partition: i32, r: &Record, out: &mut Vec<u8>) {
    let mut chars = fmt.bytes().peekable();
    while let Some(c) = chars.next() {
        match c {
            b'%' => match chars.next() {
                Some(b't') => out.extend_from_slice(topic.as_bytes()),
                Some(b'p') => out.extend_from_slice(partition.to_string().as_bytes()),
                Some(b'o') => out.extend_from_slice(r.offset.to_string().as_bytes()),
                Some(b'k') => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
                Some(b's') => out.extend_from_slice(r.value.as_deref().unwrap_or_default()),
                Some(b'K') => out.extend_from_slice(
                    r.key
                        .as_ref()
                        .map_or(-1, |k| k.len() as i64)
                        .to_string()
                        .as_bytes(),
                ),
                Some(b'S') => out.extend_from_slice(
                    r.value
                        .as_ref()
                        .map_or(-1, |v| v.len() as i64)
                        .to_string()
                        .as_bytes(),
                ),
                Some(b'T') => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
                Some(b'h') => {
                    let mut first = true;
                    for (k, v) in &r.headers {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        out.extend_from_slice(k.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(v.as_deref().unwrap_or_default());
                    }
                }
                Some(b'%') => out.push(b'%'),
                Some(other) => {
                    out.push(b'%');
                    out.push(other);
                }
                None => out.push(b'%'),
            },
            b'\\' => match chars.next() {
                Some(b'n') => out.push(b'\n'),
                Some(b't') => out.push(b'\t'),
                Some(b'r') => out.push(b'\r'),
                Some(b'\\') => out.push(b'\\'),
                Some(other) => {
                    out.push(b'\\');
                    out.push(other);
                }
                None => out.push(b'\\'),
            },
            c => out.push(c),
        }
    }
}

fn json_line(topic: &str, partition: i32, r: &Record, out: &mut Vec<u8>) {
    let s = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let rec = JsonRecord {
        topic,
        partition,
        offset: r.offset,
        timestamp: r.timestamp,
        key: s(&r.key),
        value: s(&r.value),
        headers: r
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), s(v)))
            .collect(),
    };
    if serde_json::to_writer(&mut *out, &rec).is_ok() {
        out.push(b'\n');
    }
}

/// Resolves each partition's starting offset.
async fn start_offsets(
    cluster: &mut Cluster,
    topic: &str,
    leaders: &BTreeMap<i32, i32>,
    partitions: &[i32],
    start: Start,
    committed: &BTreeMap<i32, i64>,
) -> Result<BTreeMap<i32, i64>, String> {
    let mut out = BTreeMap::new();
    let mut need: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for &p in partitions {
        if let Some(&o) = committed.get(&p) {
            out.insert(p, o);
        } else if let Start::Offset(o) = start {
            out.insert(p, o);
        } else {
            need.entry(leaders.get(&p).copied().unwrap_or(-1))
                .or_default()
                .push(p);
        }
    }
    for (leader, ps) in need {
        if leader < 0 {
            return Err(format!(
                "partitions {ps:?} of '{topic}' have no leader; `gregor cluster status` shows why"
            ));
        }
        let client = cluster.broker(leader).await?;
        match start {
            Start::Earliest => {
                out.extend(crate::topic::list_offsets(client, topic, &ps, -2).await?);
            }
            Start::Latest | Start::Offset(_) => {
                out.extend(crate::topic::list_offsets(client, topic, &ps, -1).await?);
            }
            Start::FromEnd(n) => {
                let ends = crate::topic::list_offsets(client, topic, &ps, -1).await?;
                let starts: BTreeMap<i32, i64> = crate::topic::list_offsets(client, topic, &ps, -2)
                    .await?
                    .into_iter()
                    .collect();
                for (p, end) in ends {
                    out.insert(p, (end - n).max(starts.get(&p).copied().unwrap_or(0)));
                }
            }
        }
    }
    Ok(out)
}

/// Consumes until `--count` records, the end with `--exit`, the idle timeout, or Ctrl-C.
/// Returns the number of records printed.
pub async fn run(cluster: &mut Cluster, args: &ConsumeArgs) -> Result<u64, String> {
    let mut reading = Reading::open(cluster, args).await?;
    let stdout = std::io::stdout();
    let mut printer = Printer {
        out: std::io::BufWriter::new(stdout.lock()),
        buf: Vec::with_capacity(1 << 16),
        format: args.format.clone().unwrap_or_else(|| "%s\\n".to_string()),
        json: args.json,
        topic: args.topic.clone(),
        count: args.count,
        printed: 0,
        printed_bytes: 0,
        last_record: Instant::now(),
    };
    // Counts and rate on stderr when the records go to a file or a pipe (a terminal shows
    // the records themselves).
    let progress = (!std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .then(|| crate::progress::Progress::new("consume", None));
    let mut ctrl_c: CtrlC = Box::pin(tokio::signal::ctrl_c());
    loop {
        reading.follow_group(cluster).await?;
        if reading.finished(&printer) {
            break;
        }
        if reading.assigned.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = &mut ctrl_c => break,
            }
            continue;
        }
        let refresh = match reading
            .fetch_round(cluster, &mut printer, &mut ctrl_c)
            .await?
        {
            Round::Stop => break,
            Round::Next { refresh } => refresh,
        };
        if let Some(p) = &progress {
            p.set(printer.printed_bytes, printer.printed);
        }
        if let Err(e) = printer.out.flush() {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                break;
            }
            return Err(format!("cannot write output: {e}"));
        }
        reading.commit(cluster).await?;
        if refresh {
            reading.refresh_leaders(cluster).await?;
        }
    }
    let _ = printer.out.flush();
    if let Some(p) = &progress {
        p.finish(printer.printed_bytes, printer.printed);
    }
    reading.commit(cluster).await?;
    if let Some(m) = &reading.membership {
        leave(cluster, m).await?;
    }
    Ok(printer.printed)
}

/// Ctrl-C, awaited across the loop's rounds.
type CtrlC = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

/// What a fetch round ends with.
enum Round {
    /// Go on; `refresh`: some partition's leader changed (or is unknown).
    Next { refresh: bool },
    /// Ctrl-C, `--count` reached, or the output closed.
    Stop,
}

/// Where consuming stands: the partitions read and the position in each.
struct Reading<'a> {
    args: &'a ConsumeArgs,
    start: Start,
    isolation: i8,
    /// Partition → the broker leading it.
    leaders: BTreeMap<i32, i32>,
    assigned: Vec<i32>,
    positions: BTreeMap<i32, i64>,
    last_committed: BTreeMap<i32, i64>,
    /// Partitions read up to their end (high watermark, or last stable offset).
    at_end: BTreeSet<i32>,
    /// With a group and no --partition: this member.
    membership: Option<Membership>,
}

impl<'a> Reading<'a> {
    /// Checks the partitions asked for, joins the group if there is one, and finds where
    /// to start in each partition.
    async fn open(cluster: &mut Cluster, args: &'a ConsumeArgs) -> Result<Reading<'a>, String> {
        let start = parse_start(args)?;
        let t = cluster.topic(&args.topic, "consume").await?;
        let leaders: BTreeMap<i32, i32> = t
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect();
        for p in &args.partitions {
            if !leaders.contains_key(p) {
                return Err(format!(
                    "--partition {p}: '{}' has partitions 0 to {}",
                    args.topic,
                    leaders.len() as i32 - 1
                ));
            }
        }
        // With a group and no --partition, join it; else read the partitions given (or all).
        let mut membership = None;
        let mut assigned: Vec<i32> = if args.partitions.is_empty() {
            leaders.keys().copied().collect()
        } else {
            args.partitions.clone()
        };
        if let (Some(g), true) = (&args.group, args.partitions.is_empty()) {
            let (m, parts) = join(cluster, g, &args.topic, String::new()).await?;
            membership = Some(m);
            assigned = parts;
        }
        let committed = match &args.group {
            Some(g) if args.offset.is_none() => {
                group::committed(cluster, g, &args.topic, &assigned).await?
            }
            _ => BTreeMap::new(),
        };
        let positions =
            start_offsets(cluster, &args.topic, &leaders, &assigned, start, &committed).await?;
        Ok(Reading {
            args,
            start,
            isolation: i8::from(args.read_committed),
            leaders,
            assigned,
            positions,
            last_committed: committed,
            at_end: BTreeSet::new(),
            membership,
        })
    }

    /// Heartbeats a group member; on a rebalance commits what was printed and joins again.
    async fn follow_group(&mut self, cluster: &mut Cluster) -> Result<(), String> {
        let Some(m) = self.membership.as_mut() else {
            return Ok(());
        };
        if heartbeat(cluster, m).await? {
            return Ok(());
        }
        self.commit(cluster).await?;
        let Some(m) = self.membership.as_mut() else {
            return Ok(());
        };
        let topic = &self.args.topic;
        let (nm, parts) = join(cluster, &m.group.clone(), topic, m.member_id.clone()).await?;
        *m = nm;
        self.assigned = parts;
        let committed = group::committed(cluster, &m.group, topic, &self.assigned).await?;
        self.positions = start_offsets(
            cluster,
            topic,
            &self.leaders,
            &self.assigned,
            self.start,
            &committed,
        )
        .await?;
        self.at_end.clear();
        Ok(())
    }

    /// Whether to stop: every partition read to its end with `--exit` (or nothing
    /// assigned), or no record for `--idle-timeout`.
    fn finished(&self, printer: &Printer<'_>) -> bool {
        let all_read = self.assigned.is_empty() || self.at_end.len() >= self.assigned.len();
        (self.args.exit_at_end && all_read)
            || self
                .args
                .idle_timeout
                .is_some_and(|limit| printer.last_record.elapsed() >= limit)
    }

    /// One Fetch to each leader of the partitions read, its records printed.
    async fn fetch_round(
        &mut self,
        cluster: &mut Cluster,
        printer: &mut Printer<'_>,
        ctrl_c: &mut CtrlC,
    ) -> Result<Round, String> {
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in &self.assigned {
            by_leader
                .entry(self.leaders.get(p).copied().unwrap_or(-1))
                .or_default()
                .push(*p);
        }
        let mut refresh = false;
        for (leader, parts) in by_leader {
            if leader < 0 {
                refresh = true;
                continue;
            }
            let req = fetch_request(&self.args.topic, &parts, &self.positions, self.isolation);
            let client = cluster.broker(leader).await?;
            let resp = tokio::select! {
                r = client.call(req, 4, 12) => r?,
                _ = &mut *ctrl_c => return Ok(Round::Stop),
            };
            if resp.error_code != 0 {
                return Err(format!(
                    "fetch from broker {leader} failed: {}",
                    code(resp.error_code)
                ));
            }
            for pd in resp.responses.into_iter().flat_map(|t| t.partitions) {
                match self.take(cluster, printer, pd).await? {
                    Round::Next { refresh: r } => refresh |= r,
                    Round::Stop => return Ok(Round::Stop),
                }
            }
        }
        Ok(Round::Next { refresh })
    }

    /// One partition's part of a Fetch answer: its records printed and its position moved,
    /// or its error handled.
    async fn take(
        &mut self,
        cluster: &mut Cluster,
        printer: &mut Printer<'_>,
        pd: kafka_protocol::messages::fetch_response::PartitionData,
    ) -> Result<Round, String> {
        let p = pd.partition_index;
        match pd.error_code {
            0 => {}
            1 => {
                // OFFSET_OUT_OF_RANGE: the records were deleted (retention); start again
                // from the earliest (or the end).
                let reset = if self.args.from_beginning {
                    Start::Earliest
                } else {
                    Start::Latest
                };
                let topic = &self.args.topic;
                let none = BTreeMap::new();
                let fresh =
                    start_offsets(cluster, topic, &self.leaders, &[p], reset, &none).await?;
                eprintln!(
                    "gregor: offset {} of {topic}-{p} is out of range; continuing from {}",
                    self.positions.get(&p).copied().unwrap_or(0),
                    fresh.get(&p).copied().unwrap_or(0)
                );
                self.positions.extend(fresh);
                return Ok(Round::Next { refresh: false });
            }
            3 | 6 | 5 | 74 | 75 => return Ok(Round::Next { refresh: true }),
            e => {
                return Err(format!(
                    "fetch of {}-{p} failed: {}",
                    self.args.topic,
                    code(e)
                ))
            }
        }
        let position = self.positions.get(&p).copied().unwrap_or(0);
        let end = if self.args.read_committed && pd.last_stable_offset >= 0 {
            pd.last_stable_offset
        } else {
            pd.high_watermark
        };
        let (position, more) =
            printer.partition(p, position, pd.records, pd.aborted_transactions)?;
        match more {
            More::Yes => {}
            More::CountReached => {
                self.positions.insert(p, position);
                return Ok(Round::Stop);
            }
            // Not moved: what was not printed must not be committed.
            More::OutputClosed => return Ok(Round::Stop),
        }
        self.positions.insert(p, position);
        if position >= end {
            self.at_end.insert(p);
        } else {
            self.at_end.remove(&p);
        }
        Ok(Round::Next { refresh: false })
    }

    /// Commits the positions that moved, when consuming for a group.
    async fn commit(&mut self, cluster: &mut Cluster) -> Result<(), String> {
        let Some(g) = &self.args.group else {
            return Ok(());
        };
        commit(
            cluster,
            g,
            &self.args.topic,
            &self.positions,
            &mut self.last_committed,
            self.membership.as_ref(),
        )
        .await
    }

    /// Asks for the topic's leaders again, after a moment.
    async fn refresh_leaders(&mut self, cluster: &mut Cluster) -> Result<(), String> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let md = cluster
            .metadata(Some(std::slice::from_ref(&self.args.topic)))
            .await?;
        if let Some(t) = md.topics.into_iter().next() {
            self.leaders = t
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.leader_id.0))
                .collect();
        }
        Ok(())
    }
}

/// One Fetch of `parts` of `topic` from their positions, waiting up to 500 ms for data.
fn fetch_request(
    topic: &str,
    parts: &[i32],
    positions: &BTreeMap<i32, i64>,
    isolation: i8,
) -> FetchRequest {
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_string(topic.to_string()));
    ft.partitions = parts
        .iter()
        .map(|p| {
            let mut fp = FetchPartition::default();
            fp.partition = *p;
            fp.fetch_offset = positions.get(p).copied().unwrap_or(0);
            fp.partition_max_bytes = 1 << 20;
            fp.log_start_offset = -1;
            fp.current_leader_epoch = -1;
            fp
        })
        .collect();
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 500;
    req.min_bytes = 1;
    req.max_bytes = 16 << 20;
    req.isolation_level = isolation;
    req.session_epoch = -1;
    req.topics = vec![ft];
    req
}

/// Where consumed records go: the output in its format, and what was printed.
struct Printer<'a> {
    out: std::io::BufWriter<std::io::StdoutLock<'a>>,
    buf: Vec<u8>,
    format: String,
    json: bool,
    topic: String,
    /// `--count`: stop after this many records.
    count: Option<u64>,
    printed: u64,
    printed_bytes: u64,
    last_record: Instant,
}

/// Whether consuming goes on after a partition's records.
enum More {
    Yes,
    CountReached,
    OutputClosed,
}

impl Printer<'_> {
    /// Prints one fetched partition's records from `position` on, skipping the records of
    /// the aborted transactions `aborted` lists (a `read_committed` fetch) and control
    /// records; returns the next position, and whether to go on.
    fn partition(
        &mut self,
        p: i32,
        mut position: i64,
        records: Option<Bytes>,
        aborted: Option<Vec<kafka_protocol::messages::fetch_response::AbortedTransaction>>,
    ) -> Result<(i64, More), String> {
        let mut aborted: Vec<(i64, i64)> = aborted
            .unwrap_or_default()
            .iter()
            .map(|a| (a.first_offset, a.producer_id.0))
            .collect();
        aborted.sort_unstable();
        let mut aborted = aborted.into_iter().peekable();
        let mut aborting: BTreeSet<i64> = BTreeSet::new();
        if let Some(mut records) = records {
            let sets = RecordBatchDecoder::decode_all(&mut records)
                .map_err(|e| format!("bad records from {}-{p}: {e}", self.topic))?;
            for set in sets {
                for r in set.records {
                    while let Some(&(first, pid)) = aborted.peek() {
                        if first > r.offset {
                            break;
                        }
                        aborting.insert(pid);
                        aborted.next();
                    }
                    if r.offset < position {
                        continue;
                    }
                    position = r.offset + 1;
                    if r.control {
                        aborting.remove(&r.producer_id);
                        continue;
                    }
                    if r.transactional && aborting.contains(&r.producer_id) {
                        continue;
                    }
                    self.buf.clear();
                    if self.json {
                        json_line(&self.topic, p, &r, &mut self.buf);
                    } else {
                        render(&self.format, &self.topic, p, &r, &mut self.buf);
                    }
                    if let Err(e) = self.out.write_all(&self.buf) {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            return Ok((position, More::OutputClosed));
                        }
                        return Err(format!("cannot write output: {e}"));
                    }
                    self.printed += 1;
                    self.printed_bytes += self.buf.len() as u64;
                    self.last_record = Instant::now();
                    if self.count.is_some_and(|c| self.printed >= c) {
                        return Ok((position, More::CountReached));
                    }
                }
            }
        }
        Ok((position, More::Yes))
    }
}

/// Commits the positions that moved since the last commit.
async fn commit(
    cluster: &mut Cluster,
    group: &str,
    topic: &str,
    positions: &BTreeMap<i32, i64>,
    last: &mut BTreeMap<i32, i64>,
    membership: Option<&Membership>,
) -> Result<(), String> {
    let moved: BTreeMap<i32, i64> = positions
        .iter()
        .filter(|(p, o)| last.get(p) != Some(o))
        .map(|(p, o)| (*p, *o))
        .collect();
    if moved.is_empty() {
        return Ok(());
    }
    let (generation, member) =
        membership.map_or((-1, String::new()), |m| (m.generation, m.member_id.clone()));
    let offsets: BTreeMap<(String, i32), i64> = moved
        .iter()
        .map(|(p, o)| ((topic.to_string(), *p), *o))
        .collect();
    group::commit(cluster, group, generation, &member, &offsets).await?;
    last.extend(moved);
    Ok(())
}
