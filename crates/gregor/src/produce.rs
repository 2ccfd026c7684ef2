//! `gregor produce TOPIC`: lines from stdin or a file, as records, to any Kafka-compatible
//! broker. Keys (with `--key-separator`) choose the partition as the Java client does
//! (murmur2), so the same key lands where a Java or kafka-python producer would put it.

use std::collections::BTreeMap;
use std::io::BufRead;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde::Serialize;

use crate::client::{code, Cluster};
use crate::progress::Progress;

/// A request is sent when this many bytes of records are pending.
const REQUEST_BYTES: usize = 1 << 20;
const REQUEST_RECORDS: usize = 50_000;

pub struct ProduceArgs {
    pub topic: String,
    pub file: Option<std::path::PathBuf>,
    pub key_separator: Option<String>,
    pub headers: Vec<(String, String)>,
    pub partition: Option<i32>,
    pub compression: String,
    pub acks: String,
}

#[derive(Debug, Serialize)]
pub struct PartitionRange {
    pub partition: i32,
    pub records: u64,
    pub first_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Serialize)]
pub struct Produced {
    pub topic: String,
    pub records: u64,
    pub bytes: u64,
    pub partitions: Vec<PartitionRange>,
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), for key placement.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const SEED: u32 = 0x9747_b28c;
    let len = data.len() as u32;
    let mut h = SEED ^ len;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

pub fn compression(name: &str) -> Result<Compression, String> {
    Ok(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => {
            return Err(format!(
                "--compression {other}: expected none, gzip, snappy, lz4 or zstd"
            ))
        }
    })
}

pub fn acks(name: &str) -> Result<i16, String> {
    match name {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        other => Err(format!("--acks {other}: expected 0, 1 or all")),
    }
}

struct Pending {
    records: BTreeMap<i32, Vec<Record>>,
    bytes: usize,
    count: usize,
}

pub async fn run(cluster: &mut Cluster, args: &ProduceArgs) -> Result<Produced, String> {
    let comp = compression(&args.compression)?;
    let acks = acks(&args.acks)?;
    let t = cluster.topic(&args.topic, "produce to").await?;
    let leaders: BTreeMap<i32, i32> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    let n = leaders.len() as i32;
    if let Some(p) = args.partition {
        if !leaders.contains_key(&p) {
            return Err(format!(
                "--partition {p}: '{}' has partitions 0 to {}",
                args.topic,
                n - 1
            ));
        }
    }
    let (reader, total_bytes) = open_input(args.file.as_deref())?;
    let progress = Progress::new("produce", total_bytes);
    let headers = header_map(&args.headers);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut pending = Pending {
        records: BTreeMap::new(),
        bytes: 0,
        count: 0,
    };
    let mut result = Produced {
        topic: args.topic.clone(),
        records: 0,
        bytes: 0,
        partitions: Vec::new(),
    };
    let mut ranges: BTreeMap<i32, PartitionRange> = BTreeMap::new();
    let mut sticky = 0i32;
    let mut read_bytes = 0u64;
    for (i, line) in reader.split(b'\n').enumerate() {
        let mut line = line.map_err(|e| format!("cannot read input: {e}"))?;
        read_bytes += line.len() as u64 + 1;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let (key, value) = match &args.key_separator {
            Some(sep) => split_key(line, sep.as_bytes(), i + 1)?,
            None => (None, Bytes::from(line)),
        };
        let partition = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, n),
            (None, None) => sticky,
        };
        let size = value.len() + key.as_ref().map_or(0, |k| k.len()) + 16;
        pending.bytes += size;
        pending.count += 1;
        pending.records.entry(partition).or_default().push(Record {
            timestamp: now,
            key,
            value: Some(value),
            headers: headers.clone(),
            ..plain_record()
        });
        if pending.bytes >= REQUEST_BYTES || pending.count >= REQUEST_RECORDS {
            send(
                cluster,
                args,
                &leaders,
                comp,
                acks,
                &mut pending,
                &mut ranges,
                &mut result,
            )
            .await?;
            sticky = (sticky + 1) % n.max(1);
            progress.set(read_bytes, result.records);
        }
    }
    send(
        cluster,
        args,
        &leaders,
        comp,
        acks,
        &mut pending,
        &mut ranges,
        &mut result,
    )
    .await?;
    progress.finish(read_bytes, result.records);
    result.partitions = ranges.into_values().collect();
    Ok(result)
}

/// The input: the file given (with its size, for the progress line), or standard input.
fn open_input(file: Option<&std::path::Path>) -> Result<(Box<dyn BufRead>, Option<u64>), String> {
    Ok(match file {
        Some(path) => {
            let f = std::fs::File::open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let size = f.metadata().ok().map(|m| m.len());
            (
                Box::new(std::io::BufReader::with_capacity(1 << 16, f)),
                size,
            )
        }
        None => (Box::new(std::io::stdin().lock()), None),
    })
}

/// Line `number` as KEY`sep`VALUE.
fn split_key(
    mut line: Vec<u8>,
    sep: &[u8],
    number: usize,
) -> Result<(Option<Bytes>, Bytes), String> {
    let at = line
        .windows(sep.len().max(1))
        .position(|w| w == sep)
        .ok_or_else(|| {
            format!(
                "line {number}: no key separator '{}' in it; every line must be KEY{}VALUE",
                String::from_utf8_lossy(sep),
                String::from_utf8_lossy(sep)
            )
        })?;
    let value = line.split_off(at + sep.len());
    line.truncate(at);
    Ok((Some(Bytes::from(line)), Bytes::from(value)))
}

/// `--header` pairs as record headers.
fn header_map(pairs: &[(String, String)]) -> IndexMap<StrBytes, Option<Bytes>> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                StrBytes::from_string(k.clone()),
                Some(Bytes::from(v.clone().into_bytes())),
            )
        })
        .collect()
}

/// A record of no producer and no transaction, with no key, value or headers yet.
fn plain_record() -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: None,
        value: None,
        headers: IndexMap::new(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn send(
    cluster: &mut Cluster,
    args: &ProduceArgs,
    leaders: &BTreeMap<i32, i32>,
    comp: Compression,
    acks: i16,
    pending: &mut Pending,
    ranges: &mut BTreeMap<i32, PartitionRange>,
    result: &mut Produced,
) -> Result<(), String> {
    let mut by_leader: BTreeMap<i32, Vec<(i32, Vec<Record>)>> = BTreeMap::new();
    for (p, records) in std::mem::take(&mut pending.records) {
        let leader = leaders.get(&p).copied().unwrap_or(-1);
        if leader < 0 {
            return Err(format!(
                "partition {p} of '{}' has no leader; `gregor cluster status` shows why",
                args.topic
            ));
        }
        by_leader.entry(leader).or_default().push((p, records));
    }
    pending.bytes = 0;
    pending.count = 0;
    for (leader, mut parts) in by_leader {
        let mut data = TopicProduceData::default();
        data.name = kafka_protocol::messages::TopicName(StrBytes::from_string(args.topic.clone()));
        let mut counts = Vec::new();
        for (p, records) in &mut parts {
            let (pd, value_bytes) = encode_partition(*p, records, comp)?;
            result.bytes += value_bytes;
            counts.push((*p, records.len() as u64));
            data.partition_data.push(pd);
        }
        let mut req = ProduceRequest::default();
        req.acks = acks;
        req.timeout_ms = 30_000;
        req.topic_data = vec![data];
        let client = cluster.broker(leader).await?;
        if acks == 0 {
            // No response comes for acks=0: send it and count the records as sent.
            let v = client.version::<ProduceRequest>(3, 9)?;
            client.send_no_response(req, v).await?;
            for (p, c) in counts {
                result.records += c;
                let r = ranges.entry(p).or_insert(PartitionRange {
                    partition: p,
                    records: 0,
                    first_offset: -1,
                    last_offset: -1,
                });
                r.records += c;
            }
            continue;
        }
        let resp = client.call(req, 3, 9).await?;
        for t in resp.responses {
            for pr in t.partition_responses {
                if pr.error_code != 0 {
                    return Err(format!(
                        "the broker refused records for {}-{}: {}{}",
                        args.topic,
                        pr.index,
                        code(pr.error_code),
                        pr.error_message
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ));
                }
                let c = counts
                    .iter()
                    .find(|(p, _)| *p == pr.index)
                    .map_or(0, |x| x.1);
                result.records += c;
                let r = ranges.entry(pr.index).or_insert(PartitionRange {
                    partition: pr.index,
                    records: 0,
                    first_offset: pr.base_offset,
                    last_offset: pr.base_offset,
                });
                r.records += c;
                r.last_offset = pr.base_offset + c as i64 - 1;
            }
        }
    }
    Ok(())
}

/// One partition's records as one batch of a Produce request, and the bytes of their
/// values.
fn encode_partition(
    p: i32,
    records: &mut [Record],
    comp: Compression,
) -> Result<(PartitionProduceData, u64), String> {
    // Offsets within the batch; the broker assigns the real ones.
    for (i, r) in records.iter_mut().enumerate() {
        r.offset = i as i64;
    }
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: comp,
        },
    )
    .map_err(|e| format!("cannot encode records for partition {p}: {e}"))?;
    let value_bytes = records
        .iter()
        .map(|r| r.value.as_ref().map_or(0, |v| v.len()) as u64)
        .sum::<u64>();
    let mut pd = PartitionProduceData::default();
    pd.index = p;
    pd.records = Some(buf.freeze());
    Ok((pd, value_bytes))
}

pub fn print(p: &Produced) {
    println!(
        "produced {} record{} ({} bytes of values) to {}",
        p.records,
        if p.records == 1 { "" } else { "s" },
        p.bytes,
        p.topic
    );
    let rows: Vec<Vec<String>> = p
        .partitions
        .iter()
        .map(|r| {
            vec![
                r.partition.to_string(),
                r.records.to_string(),
                if r.first_offset < 0 {
                    "-".into()
                } else {
                    r.first_offset.to_string()
                },
                if r.last_offset < 0 {
                    "-".into()
                } else {
                    r.last_offset.to_string()
                },
            ]
        })
        .collect();
    if !rows.is_empty() {
        println!(
            "{}",
            crate::table::table(
                &["PARTITION", "RECORDS", "FIRST-OFFSET", "LAST-OFFSET"],
                &rows
            )
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's UtilsTest.testMurmur2 (the Java client's own test vectors).
        let cases: [(&[u8], i32); 4] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
        ];
        for (input, want) in cases {
            assert_eq!(murmur2(input), want, "{}", String::from_utf8_lossy(input));
        }
    }
}
