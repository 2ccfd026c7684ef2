//! Transaction state as records of the internal compacted topic `__transaction_state`, in
//! Kafka's own schemas (TransactionLogKey v0, TransactionLogValue v0), so the topic reads
//! the same as Kafka's:
//!
//! - key: `(version 0, transactional id)`;
//! - value: `(version 0, producer id, producer epoch, timeout ms, status, partitions
//!   [(topic, [partition])], last update ms, start ms)`;
//! - a null value (tombstone) forgets the transactional id.
//!
//! A transactional id lives in partition `abs(java_hash(id)) %
//! transaction.state.log.num.partitions`, as in Kafka.

use std::collections::{BTreeMap, BTreeSet};

pub const TXN_TOPIC: &str = "__transaction_state";

/// Kafka's transaction states, with their stored status bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnState {
    pub fn from_byte(b: i8) -> Option<Self> {
        use TxnState::*;
        Some(match b {
            0 => Empty,
            1 => Ongoing,
            2 => PrepareCommit,
            3 => PrepareAbort,
            4 => CompleteCommit,
            5 => CompleteAbort,
            6 => Dead,
            7 => PrepareEpochFence,
            _ => return None,
        })
    }
    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        use TxnState::*;
        match self {
            Empty => "Empty",
            Ongoing => "Ongoing",
            PrepareCommit => "PrepareCommit",
            PrepareAbort => "PrepareAbort",
            CompleteCommit => "CompleteCommit",
            CompleteAbort => "CompleteAbort",
            Dead => "Dead",
            PrepareEpochFence => "PrepareEpochFence",
        }
    }
}

/// One transactional id's state as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    /// When the current transaction began; -1 when none is open.
    pub start_ms: i64,
}

pub fn key(transactional_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.extend_from_slice(&0i16.to_be_bytes());
    put_string(&mut out, transactional_id);
    out
}

pub fn value(m: &TxnMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&m.producer_id.to_be_bytes());
    out.extend_from_slice(&m.epoch.to_be_bytes());
    out.extend_from_slice(&m.timeout_ms.to_be_bytes());
    out.push(m.state as u8);
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &m.partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    out.extend_from_slice(&(by_topic.len() as i32).to_be_bytes());
    for (topic, parts) in by_topic {
        put_string(&mut out, topic);
        out.extend_from_slice(&(parts.len() as i32).to_be_bytes());
        for p in parts {
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
    out.extend_from_slice(&m.last_update_ms.to_be_bytes());
    out.extend_from_slice(&m.start_ms.to_be_bytes());
    out
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn i8(&mut self) -> Option<i8> {
        Some(self.take(1)?[0] as i8)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// Decodes one record: the transactional id and its state (`None` for a tombstone).
/// Returns `None` for a record that is not one of these.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<(String, Option<TxnMeta>)> {
    let mut k = Reader { buf: key, pos: 0 };
    if k.i16()? != 0 {
        return None;
    }
    let id = k.string()?;
    let Some(value) = value else {
        return Some((id, None));
    };
    let mut v = Reader { buf: value, pos: 0 };
    // v1 adds tagged fields after the same fixed fields; both read the same way here.
    if !(0..=1).contains(&v.i16()?) {
        return None;
    }
    let producer_id = v.i64()?;
    let epoch = v.i16()?;
    let timeout_ms = v.i32()?;
    let state = TxnState::from_byte(v.i8()?)?;
    let mut partitions = BTreeSet::new();
    let topics = v.i32()?;
    for _ in 0..topics.max(0) {
        let topic = v.string()?;
        let n = v.i32()?;
        for _ in 0..n.max(0) {
            partitions.insert((topic.clone(), v.i32()?));
        }
    }
    let last_update_ms = v.i64()?;
    let start_ms = v.i64()?;
    Some((
        id,
        Some(TxnMeta {
            producer_id,
            epoch,
            timeout_ms,
            state,
            partitions,
            last_update_ms,
            start_ms,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let m = TxnMeta {
            producer_id: 7,
            epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: BTreeSet::from([("a".into(), 0), ("a".into(), 2), ("b".into(), 1)]),
            last_update_ms: 5,
            start_ms: 4,
        };
        let k = key("tx-1");
        assert_eq!(
            decode(&k, Some(&value(&m))),
            Some(("tx-1".to_string(), Some(m.clone())))
        );
        assert_eq!(decode(&k, None), Some(("tx-1".to_string(), None)));
        let v = value(&m);
        for cut in 0..v.len() {
            assert_eq!(decode(&k, Some(&v[..cut])), None, "cut at {cut}");
        }
        assert_eq!(decode(&[0, 9], None), None);
    }
}
