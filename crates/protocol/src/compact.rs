//! Record-level access for the log cleaner: walk a batch's records as raw bytes (after
//! decompression), and rebuild a batch from the records kept, byte for byte, so compaction
//! never re-encodes a record (repeated header keys survive).

use bytes::Buf;
use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{check_batch, BatchError, BatchHeader, HEADER_BYTES, LOG_OVERHEAD};
use crate::varint::{read_varint, read_varlong};

/// One record of a batch, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The record's bytes, length prefix included.
    pub bytes: Bytes,
    pub offset: i64,
    pub key: Option<Bytes>,
    /// A null value: a tombstone on compacted topics.
    pub is_tombstone: bool,
}

fn decode_err(e: impl std::fmt::Display) -> BatchError {
    BatchError::Decode(e.to_string())
}

/// The uncompressed records section of a batch.
pub fn records_section(header: &BatchHeader, batch: &[u8]) -> Result<Bytes, BatchError> {
    let raw = Bytes::copy_from_slice(&batch[HEADER_BYTES..header.total_bytes()]);
    let take = |b: &mut Bytes| -> anyhow::Result<Bytes> { Ok(b.copy_to_bytes(b.remaining())) };
    let mut buf = raw.clone();
    match header.compression() {
        0 => Ok(raw),
        1 => Gzip::decompress(&mut buf, take).map_err(decode_err),
        2 => Snappy::decompress(&mut buf, take).map_err(decode_err),
        3 => Lz4::decompress(&mut buf, take).map_err(decode_err),
        4 => Zstd::decompress(&mut buf, take).map_err(decode_err),
        c => Err(BatchError::Decode(format!("unknown compression codec {c}"))),
    }
}

/// Every record of one batch, in order.
pub fn raw_records(batch: &[u8]) -> Result<(BatchHeader, Vec<RawRecord>), BatchError> {
    let header = check_batch(batch)?;
    let section = records_section(&header, batch)?;
    let mut out = Vec::with_capacity(header.records_count.max(0) as usize);
    let mut pos = 0usize;
    while pos < section.len() {
        let start = pos;
        let len = read_varint(&section, &mut pos).ok_or(BatchError::BadRecords("record length"))?;
        let end = pos
            .checked_add(
                usize::try_from(len)
                    .map_err(|_| BatchError::BadRecords("negative record length"))?,
            )
            .filter(|&e| e <= section.len())
            .ok_or(BatchError::BadRecords("record runs past the batch"))?;
        let body = &section[..end];
        let mut p = pos + 1; // attributes
        read_varlong(body, &mut p).ok_or(BatchError::BadRecords("timestamp delta"))?;
        let offset_delta =
            read_varint(body, &mut p).ok_or(BatchError::BadRecords("offset delta"))?;
        let key_len = read_varint(body, &mut p).ok_or(BatchError::BadRecords("key length"))?;
        let key = if key_len < 0 {
            None
        } else {
            let k = body
                .get(p..p + key_len as usize)
                .ok_or(BatchError::BadRecords("key runs past the record"))?;
            p += key_len as usize;
            Some(Bytes::copy_from_slice(k))
        };
        let value_len = read_varint(body, &mut p).ok_or(BatchError::BadRecords("value length"))?;
        out.push(RawRecord {
            bytes: section.slice(start..end),
            offset: header.base_offset + i64::from(offset_delta),
            key,
            is_tombstone: value_len < 0,
        });
        pos = end;
    }
    Ok((header, out))
}

/// Whether every record of a batch has a key (compacted topics refuse keyless records).
pub fn all_records_keyed(batch: &[u8]) -> Result<bool, BatchError> {
    Ok(raw_records(batch)?.1.iter().all(|r| r.key.is_some()))
}

/// A batch like `original` (same base offset, last offset delta, timestamps, producer
/// fields and codec) holding only `kept` of its records, bytes unchanged; the record count,
/// length and CRC are recomputed.
pub fn rebuild_batch(original: &[u8], kept: &[RawRecord]) -> Result<Vec<u8>, BatchError> {
    let header = check_batch(original)?;
    let mut plain = Vec::new();
    for r in kept {
        plain.extend_from_slice(&r.bytes);
    }
    let section: Vec<u8> = match header.compression() {
        0 => plain,
        c => {
            let mut out = BytesMut::new();
            let fill = |b: &mut BytesMut| -> anyhow::Result<()> {
                b.extend_from_slice(&plain);
                Ok(())
            };
            match c {
                1 => Gzip::compress(&mut out, fill),
                2 => Snappy::compress(&mut out, fill),
                3 => Lz4::compress(&mut out, fill),
                4 => Zstd::compress(&mut out, fill),
                other => {
                    return Err(BatchError::Decode(format!(
                        "unknown compression codec {other}"
                    )))
                }
            }
            .map_err(decode_err)?;
            out.to_vec()
        }
    };
    let mut b = Vec::with_capacity(HEADER_BYTES + section.len());
    b.extend_from_slice(&original[..HEADER_BYTES]);
    b.extend_from_slice(&section);
    let batch_length = (b.len() - LOG_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&batch_length.to_be_bytes());
    b[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::build_record_batch;

    #[test]
    fn filtered_batch_keeps_offsets_and_record_bytes() {
        let b = build_record_batch(
            5,
            &[
                (Some(b"a"), Some(b"1")),
                (Some(b"b"), Some(b"2")),
                (Some(b"a"), None),
            ],
            false,
        );
        let (h, records) = raw_records(&b).expect("records");
        assert_eq!(h.records_count, 3);
        assert_eq!(
            records
                .iter()
                .map(|r| (r.offset, r.key.as_deref(), r.is_tombstone))
                .collect::<Vec<_>>(),
            vec![
                (0, Some(&b"a"[..]), false),
                (1, Some(&b"b"[..]), false),
                (2, Some(&b"a"[..]), true)
            ]
        );
        let kept = vec![records[1].clone()];
        let rebuilt = rebuild_batch(&b, &kept).expect("rebuild");
        let (h2, again) = raw_records(&rebuilt).expect("valid");
        assert_eq!(
            (h2.base_offset, h2.last_offset_delta, h2.records_count),
            (0, 2, 1)
        );
        assert_eq!(again, kept);
        assert!(
            !all_records_keyed(&crate::batch::build_batch(0, 1, &[b"x".to_vec()])).expect("walk")
        );
        assert!(all_records_keyed(&b).expect("walk"));
    }
}
