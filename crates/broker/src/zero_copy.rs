//! Fetch responses sent from the page cache to the socket without passing through the
//! broker's memory (`sendfile`), as Kafka does with `FileRecords.transferTo`.
//!
//! The Fetch handler does not read the stored batches: it puts a 16-byte placeholder where
//! each partition's records go and registers the file range ([`Deferred`]). The response is
//! encoded by `kafka-protocol` as usual, with the placeholders as records; [`splice`] then
//! cuts the encoded frame at each placeholder, fixing the length before it and the frame
//! size, into parts that are either bytes or file ranges. On a plain TCP connection the
//! ranges go out with `sendfile`; anywhere else (TLS) [`materialize`] reads them into the
//! response before it is encoded, as before, and so does `"fetch.sendfile" = false`.
//!
//! The batches of a file range never change while the segment exists, and the range keeps
//! the file open. A range cut short under the send (a follower's log truncated meanwhile)
//! closes the connection: its size was already announced.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use gregor_storage::FileRegion;
use kafka_protocol::messages::ResponseKind;

pub const PLACEHOLDER_LEN: usize = 16;

/// Random per process, so no stored or client-chosen bytes can pass for a placeholder.
fn magic() -> [u8; 8] {
    static MAGIC: OnceLock<[u8; 8]> = OnceLock::new();
    *MAGIC.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write(b"gregor zero-copy placeholder");
        h.finish().to_be_bytes()
    })
}

/// The file ranges a response refers to, by placeholder.
#[derive(Debug, Default)]
pub struct Deferred {
    regions: Mutex<Vec<FileRegion>>,
}

impl Deferred {
    /// The placeholder to put where `region`'s bytes go.
    pub fn placeholder(&self, region: FileRegion) -> Bytes {
        let mut regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        let mut p = Vec::with_capacity(PLACEHOLDER_LEN);
        p.extend_from_slice(&magic());
        p.extend_from_slice(&(regions.len() as u64).to_be_bytes());
        regions.push(region);
        Bytes::from(p)
    }

    pub fn take(&self) -> Vec<FileRegion> {
        std::mem::take(&mut *self.regions.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Which region a placeholder stands for, if `bytes` is one.
fn placeholder_index(bytes: &[u8], regions: usize) -> Option<usize> {
    if bytes.len() != PLACEHOLDER_LEN || bytes[..8] != magic() {
        return None;
    }
    let mut k = [0u8; 8];
    k.copy_from_slice(&bytes[8..]);
    let k = u64::from_be_bytes(k) as usize;
    (k < regions).then_some(k)
}

/// One piece of a response on the wire.
#[derive(Debug, Clone)]
pub enum Part {
    Bytes(Bytes),
    File(FileRegion),
}

impl Part {
    /// Its length on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            Part::Bytes(b) => b.len(),
            Part::File(r) => r.len,
        }
    }
}

fn unsigned_varint(mut v: u32, out: &mut BytesMut) {
    while v >= 0x80 {
        out.extend_from_slice(&[(v as u8 & 0x7f) | 0x80]);
        v >>= 7;
    }
    out.extend_from_slice(&[v as u8]);
}

/// Cuts an encoded response `frame` (size prefix included) at each placeholder into
/// bytes and file ranges. `flexible`: the records' length is an unsigned varint (Fetch
/// v12+), else an INT32. Fails if a placeholder is not where the encoding puts one.
pub fn splice(frame: Bytes, regions: &[FileRegion], flexible: bool) -> Result<Vec<Part>, String> {
    let magic = magic();
    let mut parts = Vec::new();
    let mut head = BytesMut::new();
    let mut last = 0usize;
    let mut at = 4usize;
    let mut size = frame.len() as i64 - 4;
    while let Some(found) = frame[at..]
        .windows(magic.len())
        .position(|w| w == magic)
        .map(|i| i + at)
    {
        let end = found + PLACEHOLDER_LEN;
        let k = frame
            .get(found..end)
            .and_then(|p| placeholder_index(p, regions.len()))
            .ok_or("a placeholder names no file range")?;
        let prefix = if flexible { 1 } else { 4 };
        let expected: &[u8] = if flexible { &[17] } else { &[0, 0, 0, 16] };
        if found < last + prefix || &frame[found - prefix..found] != expected {
            return Err("a placeholder without its length before it".into());
        }
        let region = &regions[k];
        let mut length = BytesMut::new();
        if flexible {
            let len = u32::try_from(region.len + 1).map_err(|_| "records too long")?;
            unsigned_varint(len, &mut length);
        } else {
            let len = i32::try_from(region.len).map_err(|_| "records too long")?;
            length.extend_from_slice(&len.to_be_bytes());
        }
        size += length.len() as i64 - prefix as i64 + region.len as i64 - PLACEHOLDER_LEN as i64;
        if parts.is_empty() {
            // The first piece carries the frame size, fixed below.
            head.extend_from_slice(&frame[..found - prefix]);
            head.extend_from_slice(&length);
        } else {
            // What lies between two ranges is small (the next partition's fields): one
            // write rather than two.
            let mut between = BytesMut::with_capacity(found - prefix - last + length.len());
            between.extend_from_slice(&frame[last..found - prefix]);
            between.extend_from_slice(&length);
            parts.push(Part::Bytes(between.freeze()));
        }
        parts.push(Part::File(region.clone()));
        last = end;
        at = end;
    }
    if parts.is_empty() {
        return Ok(vec![Part::Bytes(frame)]);
    }
    let size = i32::try_from(size).map_err(|_| "response too large")?;
    head[..4].copy_from_slice(&size.to_be_bytes());
    parts.insert(0, Part::Bytes(head.freeze()));
    if last < frame.len() {
        parts.push(Part::Bytes(frame.slice(last..)));
    }
    Ok(parts)
}

/// Puts the bytes of each file range in place of its placeholder in a Fetch response.
pub fn materialize(
    body: &mut ResponseKind,
    regions: &[FileRegion],
) -> Result<(), gregor_storage::StorageError> {
    let ResponseKind::Fetch(r) = body else {
        return Ok(());
    };
    for t in &mut r.responses {
        for p in &mut t.partitions {
            let Some(k) = p
                .records
                .as_ref()
                .and_then(|b| placeholder_index(b, regions.len()))
            else {
                continue;
            };
            p.records = Some(Bytes::from(regions[k].read()?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_storage::{Disk, OsDisk};
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    fn response(records: &[Option<Bytes>]) -> ResponseKind {
        let mut t = FetchableTopicResponse::default();
        t.topic = TopicName(StrBytes::from_static_str("events"));
        t.partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut p = PartitionData::default();
                p.partition_index = i as i32;
                p.high_watermark = 1_000_000 + i as i64;
                p.records = r.clone();
                p
            })
            .collect();
        let mut r = FetchResponse::default();
        r.responses = vec![t];
        ResponseKind::Fetch(r)
    }

    fn wire(parts: &[Part]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            match p {
                Part::Bytes(b) => out.extend_from_slice(b),
                Part::File(r) => out.extend_from_slice(&r.read().expect("read")),
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Spliced parts, with the file ranges read, are byte for byte the encoding of the
        /// same response with the records in it, at every served Fetch version.
        #[test]
        fn spliced_responses_equal_the_ordinary_encoding(
            sizes in proptest::collection::vec(proptest::option::of(0usize..300), 1..6),
            version in 4i16..=16,
            fill in any::<u8>(),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("segment.log");
            let file = OsDisk.open(&path, true).expect("open");
            let total: usize = sizes.iter().flatten().sum();
            let content: Vec<u8> = (0..total + 7).map(|i| (i as u8).wrapping_mul(31) ^ fill).collect();
            file.write_all_at(&content, 0).expect("write");
            let deferred = Deferred::default();
            let mut pos = 7usize;
            let mut real = Vec::new();
            let mut with_placeholders = Vec::new();
            for s in &sizes {
                match s {
                    Some(n) if *n > 0 => {
                        real.push(Some(Bytes::copy_from_slice(&content[pos..pos + n])));
                        with_placeholders.push(Some(deferred.placeholder(FileRegion {
                            file: file.clone(),
                            path: path.clone(),
                            position: pos as u64,
                            len: *n,
                        })));
                        pos += n;
                    }
                    Some(_) => {
                        real.push(Some(Bytes::new()));
                        with_placeholders.push(Some(Bytes::new()));
                    }
                    None => {
                        real.push(None);
                        with_placeholders.push(None);
                    }
                }
            }
            let regions = deferred.take();
            let expected = gregor_protocol::frame::encode_response(ApiKey::Fetch, version, 9, &response(&real)).expect("encode");
            let placeheld = gregor_protocol::frame::encode_response(ApiKey::Fetch, version, 9, &response(&with_placeholders)).expect("encode");
            let parts = splice(placeheld, &regions, version >= 12).expect("splice");
            prop_assert_eq!(wire(&parts), expected.to_vec());
            prop_assert_eq!(parts.iter().map(Part::wire_len).sum::<usize>(), expected.len());

            let mut body = response(&with_placeholders);
            materialize(&mut body, &regions).expect("materialize");
            let again = gregor_protocol::frame::encode_response(ApiKey::Fetch, version, 9, &body).expect("encode");
            prop_assert_eq!(again, expected);
        }
    }

    #[test]
    fn a_long_record_set_gets_a_longer_varint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.log");
        let file = OsDisk.open(&path, true).expect("open");
        let content = vec![5u8; 300_000];
        file.write_all_at(&content, 0).expect("write");
        let deferred = Deferred::default();
        let p = deferred.placeholder(FileRegion {
            file,
            path,
            position: 0,
            len: content.len(),
        });
        let regions = deferred.take();
        let expected = gregor_protocol::frame::encode_response(
            ApiKey::Fetch,
            16,
            1,
            &response(&[Some(Bytes::from(content))]),
        )
        .expect("encode");
        let placeheld =
            gregor_protocol::frame::encode_response(ApiKey::Fetch, 16, 1, &response(&[Some(p)]))
                .expect("encode");
        let parts = splice(placeheld, &regions, true).expect("splice");
        assert_eq!(wire(&parts), expected.to_vec());
    }

    #[test]
    fn bytes_that_only_look_like_a_placeholder_are_refused() {
        let mut frame = vec![0, 0, 0, 20, 0, 0, 0, 9];
        frame.extend_from_slice(&magic());
        frame.extend_from_slice(&[0; 8]);
        assert!(splice(Bytes::from(frame), &[], false).is_err());
    }
}
