//! Record batches (message format v2) in their wire form.
//!
//! Gregor never re-encodes a client's batch: it reads the 61-byte header, checks the CRC,
//! writes the offsets it assigns into the (CRC-free) base-offset field, and stores and serves
//! the bytes as they came. Only the timestamp stamping of `LogAppendTime` touches CRC-covered
//! bytes, and it recomputes the CRC.

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use crate::varint::{read_varint, read_varlong, write_varlong};

/// Bytes before the batch-length field counts: base offset (8) and batch length (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 batch header.
pub const HEADER_BYTES: usize = 61;
/// The only message format Gregor stores and serves.
pub const MAGIC_V2: i8 = 2;
/// Where the CRC-covered part of a batch starts (the attributes field).
const CRC_START: usize = 21;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is truncated: {have} bytes where {need} are needed")]
    Truncated { have: usize, need: usize },
    #[error("batch length {0} is below the v2 header size")]
    BadLength(i32),
    #[error("unsupported magic {0}: only message format v2 is stored")]
    BadMagic(i8),
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("records inside the batch are malformed: {0}")]
    BadRecords(&'static str),
    #[error("compressed records could not be decoded: {0}")]
    Decode(String),
}

/// The fixed header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// The batch-length field: bytes after it, so the whole batch is `LOG_OVERHEAD + batch_length`.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Checks the size fields and the magic byte
    /// only; the CRC is checked by [`verify_crc`].
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        // The magic byte sits at 16; read it first so an old-format batch is named as such.
        if buf.len() >= 17 && buf[16] as i8 != MAGIC_V2 {
            return Err(BatchError::BadMagic(buf[16] as i8));
        }
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                have: buf.len(),
                need: HEADER_BYTES,
            });
        }
        let batch_length = be_i32(buf, 8);
        if batch_length < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return Err(BatchError::BadLength(batch_length));
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, 12),
            magic: buf[16] as i8,
            crc: be_i32(buf, 17) as u32,
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Total bytes of the batch on the wire and on disk.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }
    /// Offset of the batch's last record (saturating: header fields read off a damaged
    /// disk must not overflow).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// Whether the offset fields can describe a stored batch: a non-negative base offset
    /// and a last offset at or after it, with room to count on.
    pub fn offsets_sane(&self) -> bool {
        self.base_offset >= 0 && self.last_offset_delta >= 0 && self.last_offset() < i64::MAX
    }
    /// Compression codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// Checks the CRC-32C of a whole batch (`batch` is exactly one batch).
pub fn verify_crc(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    let computed = crc32c::crc32c(&batch[CRC_START..]);
    if computed != header.crc {
        return Err(BatchError::BadCrc {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// Parses the header of the batch at the start of `buf` and checks that the whole batch is
/// present and its CRC matches. Returns the header; the batch is `&buf[..header.total_bytes()]`.
pub fn check_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_bytes();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            have: buf.len(),
            need: total,
        });
    }
    verify_crc(&header, &buf[..total])?;
    Ok(header)
}

/// Validates a batch sent by a producer: the checks of [`check_batch`], plus a record count
/// that agrees with the last offset delta and, for uncompressed batches, records whose
/// lengths and offset deltas walk exactly to the end of the batch.
pub fn validate_produce_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = check_batch(buf)?;
    if header.records_count <= 0 || header.last_offset_delta != header.records_count - 1 {
        return Err(BatchError::CountMismatch {
            count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    if header.compression() == 0 {
        walk_uncompressed_records(
            &buf[HEADER_BYTES..header.total_bytes()],
            header.records_count,
        )?;
    }
    Ok(header)
}

/// Walks `count` records in an uncompressed records section, checking that each record's
/// length is sane, its offset delta is its index, and that the records fill the section.
fn walk_uncompressed_records(records: &[u8], count: i32) -> Result<(), BatchError> {
    let mut pos = 0usize;
    for index in 0..count {
        let len = read_varint(records, &mut pos).ok_or(BatchError::BadRecords("record length"))?;
        if len <= 0 {
            return Err(BatchError::BadRecords("record length is not positive"));
        }
        let end = pos
            .checked_add(len as usize)
            .filter(|&end| end <= records.len())
            .ok_or(BatchError::BadRecords(
                "record runs past the end of the batch",
            ))?;
        let mut p = pos + 1; // attributes
        read_varlong(&records[..end], &mut p).ok_or(BatchError::BadRecords("timestamp delta"))?;
        let offset_delta =
            read_varint(&records[..end], &mut p).ok_or(BatchError::BadRecords("offset delta"))?;
        if offset_delta != index {
            return Err(BatchError::BadRecords("offset deltas are not consecutive"));
        }
        pos = end;
    }
    if pos != records.len() {
        return Err(BatchError::BadRecords(
            "bytes left over after the last record",
        ));
    }
    Ok(())
}

/// Writes the broker-assigned base offset into a batch (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch into a batch (not covered by the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks a batch as `LogAppendTime` with the given time as its max timestamp, and recomputes
/// the CRC. Records keep their deltas; readers take every record's timestamp from the header.
pub fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, 21) | TIMESTAMP_TYPE_BIT;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Every record's (offset, timestamp) in one batch, decompressing if needed. Off the hot
/// path: used by timestamp look-ups only.
pub fn record_timestamps(batch: &[u8]) -> Result<Vec<(i64, i64)>, BatchError> {
    let header = check_batch(batch)?;
    if header.is_log_append_time() {
        return Ok((header.base_offset..=header.last_offset())
            .map(|o| (o, header.max_timestamp))
            .collect());
    }
    let mut bytes = Bytes::copy_from_slice(&batch[..header.total_bytes()]);
    let set =
        RecordBatchDecoder::decode(&mut bytes).map_err(|e| BatchError::Decode(e.to_string()))?;
    Ok(set
        .records
        .iter()
        .map(|r| (r.offset, r.timestamp))
        .collect())
}

/// Iterates over the whole batches at the start of `buf`, stopping at the first incomplete
/// or unparsable one. Yields each header with the batch's byte position in `buf`.
pub fn batches(buf: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(&buf[pos..]).ok()?;
        let start = pos;
        let end = start.checked_add(header.total_bytes())?;
        if end > buf.len() {
            return None;
        }
        pos = end;
        Some((start, header))
    })
}

/// A record to build: key and value, either of which may be null (a null value is a tombstone).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A decoded record: offset, timestamp, key, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// Builds an uncompressed v2 batch: `values` become records with a null key and no headers,
/// timestamps `base_ts + i`. For tests, fuzz seeds and benchmarks.
pub fn build_batch(base_offset: i64, base_ts: i64, values: &[Vec<u8>]) -> Vec<u8> {
    let records: Vec<KeyValue> = values.iter().map(|v| (None, Some(v.as_slice()))).collect();
    let mut b = build_record_batch(base_ts, &records, true);
    set_base_offset(&mut b, base_offset);
    b
}

/// Builds an uncompressed v2 batch of (key, value) records without headers; a `None` value
/// is a tombstone. With `spread_timestamps` record i is stamped `base_ts + i`, otherwise all
/// carry `base_ts`. The broker uses it for its own internal records (group state).
pub fn build_record_batch(base_ts: i64, records: &[KeyValue], spread_timestamps: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut r = vec![0u8]; // attributes
        write_varlong(&mut r, if spread_timestamps { i as i64 } else { 0 });
        write_varlong(&mut r, i as i64); // offset delta
        for field in [key, value] {
            match field {
                Some(bytes) => {
                    write_varlong(&mut r, bytes.len() as i64);
                    r.extend_from_slice(bytes);
                }
                None => write_varlong(&mut r, -1),
            }
        }
        write_varlong(&mut r, 0); // no headers
        write_varlong(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let n = records.len() as i32;
    let max_ts = if spread_timestamps {
        base_ts + i64::from(n.max(1)) - 1
    } else {
        base_ts
    };
    let mut b = Vec::with_capacity(HEADER_BYTES + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_BYTES - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(n - 1).to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Sets a built batch's producer fields and its transactional bit, and recomputes the CRC.
/// The broker uses it for the records it writes on a producer's behalf (transactional
/// offset commits).
pub fn set_producer(batch: &mut [u8], producer_id: i64, epoch: i16, transactional: bool) {
    let mut attributes = be_i16(batch, 21) & !TRANSACTIONAL_BIT;
    if transactional {
        attributes |= TRANSACTIONAL_BIT;
    }
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A transaction marker (control batch): one record whose key is (version 0, type: 0 abort,
/// 1 commit) and whose value is (version 0, coordinator epoch), as Kafka writes them.
pub fn build_control_batch(
    timestamp: i64,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut b = build_record_batch(timestamp, &[(Some(&key), Some(&value))], false);
    let attributes = TRANSACTIONAL_BIT | CONTROL_BIT;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The kind of a control batch: `Some(true)` for a commit marker, `Some(false)` for an
/// abort, `None` when the batch is no transaction marker (or cannot be read).
pub fn marker_kind(batch: &[u8]) -> Option<bool> {
    let header = BatchHeader::parse(batch).ok()?;
    if !header.is_control() {
        return None;
    }
    let records = decode_records(batch).ok()?;
    let key = records.first()?.key.as_ref()?;
    match key.get(2..4)? {
        [0, 0] => Some(false),
        [0, 1] => Some(true),
        _ => None,
    }
}

/// Every record of one batch as (offset, timestamp, key, value), decompressing if needed.
/// Off the hot path: used to replay the broker's internal topics.
pub fn decode_records(batch: &[u8]) -> Result<Vec<DecodedRecord>, BatchError> {
    let header = check_batch(batch)?;
    let mut bytes = Bytes::copy_from_slice(&batch[..header.total_bytes()]);
    let set =
        RecordBatchDecoder::decode(&mut bytes).map_err(|e| BatchError::Decode(e.to_string()))?;
    Ok(set
        .records
        .into_iter()
        .map(|r| DecodedRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key,
            value: r.value,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn built_batch_validates_and_reports_its_fields() {
        let b = build_batch(0, 1000, &[b"a".to_vec(), b"bc".to_vec(), b"def".to_vec()]);
        let h = validate_produce_batch(&b).expect("valid batch");
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.total_bytes(), b.len());
        assert_eq!(h.max_timestamp, 1002);
        assert_eq!(
            record_timestamps(&b).expect("decodes"),
            vec![(0, 1000), (1, 1001), (2, 1002)]
        );
    }

    #[test]
    fn markers_and_producer_fields_round_trip() {
        for commit in [true, false] {
            let b = build_control_batch(5, 42, 3, commit, 7);
            let h = check_batch(&b).expect("valid marker");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch), (42, 3));
            assert_eq!(marker_kind(&b), Some(commit));
        }
        let mut b = build_record_batch(1, &[(Some(b"k"), Some(b"v"))], false);
        assert_eq!(marker_kind(&b), None);
        set_producer(&mut b, 9, 2, true);
        let h = check_batch(&b).expect("CRC recomputed");
        assert!(h.is_transactional() && !h.is_control());
        assert_eq!((h.producer_id, h.producer_epoch), (9, 2));
    }

    #[test]
    fn keyed_records_and_tombstones_round_trip() {
        let b = build_record_batch(7, &[(Some(b"k1"), Some(b"v1")), (Some(b"k2"), None)], false);
        let h = validate_produce_batch(&b).expect("valid");
        assert_eq!((h.records_count, h.max_timestamp), (2, 7));
        let records = decode_records(&b).expect("decodes");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[0].value.as_deref(), Some(&b"v1"[..]));
        assert_eq!(
            (records[1].timestamp, records[1].value.is_none()),
            (7, true)
        );
    }

    #[test]
    fn offsets_and_epoch_do_not_touch_the_crc() {
        let mut b = build_batch(0, 1, &[b"x".to_vec()]);
        set_base_offset(&mut b, 42);
        set_partition_leader_epoch(&mut b, 7);
        let h = check_batch(&b).expect("crc still valid");
        assert_eq!((h.base_offset, h.partition_leader_epoch), (42, 7));
    }

    #[test]
    fn log_append_time_restamps_and_keeps_crc_valid() {
        let mut b = build_batch(5, 1, &[b"x".to_vec(), b"y".to_vec()]);
        stamp_log_append_time(&mut b, 99_000);
        let h = check_batch(&b).expect("crc recomputed");
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99_000);
        assert_eq!(
            record_timestamps(&b).expect("decodes"),
            vec![(5, 99_000), (6, 99_000)]
        );
    }

    #[test]
    fn count_mismatch_and_bad_magic_are_refused() {
        let mut b = build_batch(0, 1, &[b"x".to_vec(), b"y".to_vec()]);
        b[57..61].copy_from_slice(&3i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_produce_batch(&b),
            Err(BatchError::CountMismatch { .. })
        ));
        b[16] = 1;
        assert_eq!(validate_produce_batch(&b), Err(BatchError::BadMagic(1)));
    }

    proptest! {
        #[test]
        fn any_flipped_byte_after_the_crc_is_caught(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut b = build_batch(0, 1, &values);
            let i = CRC_START + at.index(b.len() - CRC_START);
            b[i] ^= flip;
            let caught = matches!(validate_produce_batch(&b), Err(BatchError::BadCrc { .. }));
            prop_assert!(caught);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = validate_produce_batch(&bytes);
            let _ = record_timestamps(&bytes);
            prop_assert!(batches(&bytes).count() <= bytes.len() / HEADER_BYTES);
        }
    }
}
